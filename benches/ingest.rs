//! Live TCP ingest rate: the release daemon on loopback, N connections pushing M syslog lines
//! (20% sshd failures from 1,000 documentation addresses), timed until /metrics has counted every message.
//!
//! `cargo bench --bench ingest -- --connections 4 --messages 2000000 [--octet]`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let connections = value("--connections", 4);
    let messages = value("--messages", 1_000_000);
    let octet = args.iter().any(|a| a == "--octet");

    let dir = std::env::temp_dir().join(format!("jailsink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("jailsink.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
udp = []
tcp = ["127.0.0.1:0"]
[metrics]
listen = "127.0.0.1:0"
[defaults]
filter_dirs = ["{}/conf/filter.d"]
action = "log"
ignoreself = false
[jails.sshd]
programs = ["sshd"]
"#,
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jailsink"))
        .args([
            "--log-format",
            "json",
            "-c",
            config.to_str().unwrap(),
            "run",
        ])
        .env("RUST_LOG", "warn,jailsink=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jailsink");
    let (mut tcp, mut metrics) = (None, None);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "listening" {
            let addr: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
            match v["transport"].as_str() {
                Some("tcp") => tcp = Some(addr),
                _ => metrics = Some(addr),
            }
        }
        if v["message"] == "ready" {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let (tcp, metrics) = (tcp.expect("tcp address"), metrics.expect("metrics address"));

    let per = messages / connections;
    let payloads: Vec<Vec<u8>> = (0..connections).map(|c| corpus(c, per, octet)).collect();
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let start = Instant::now();
    let senders: Vec<_> = payloads
        .into_iter()
        .map(|payload| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(tcp).unwrap();
                s.write_all(&payload).unwrap();
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let total = (per * connections) as f64;
    loop {
        if received(metrics) >= total {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "not every message was counted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ingest tcp framing={} connections={connections} messages={} seconds={secs:.3} msg/s={:.0} MB/s={:.1}",
        if octet { "octet" } else { "lf" },
        total,
        total / secs,
        bytes as f64 / secs / 1e6
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// `count` RFC 3164 lines: every fifth an sshd failure from one of 1,000 addresses.
fn corpus(connection: usize, count: usize, octet: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * 110);
    for i in 0..count {
        let n = connection * count + i;
        let line = if n % 5 == 0 {
            // Documentation addresses only: the log action bans nothing, but keep them inert.
            let a = n / 5 % 1000;
            let ip = if a < 256 {
                format!("198.51.100.{a}")
            } else {
                format!("2001:db8::{a:x}")
            };
            format!("<38>Nov 29 18:52:53 vm sshd[{n}]: Failed password for invalid user admin from {ip} port 4242 ssh2")
        } else {
            format!("<30>Nov 29 18:52:53 vm systemd[1]: Started session {n} of user www-data.")
        };
        if octet {
            out.extend_from_slice(format!("{} ", line.len()).as_bytes());
            out.extend_from_slice(line.as_bytes());
        } else {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

fn received(metrics: SocketAddr) -> f64 {
    let Ok(mut s) = TcpStream::connect(metrics) else {
        return 0.0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("jailsink_messages_received_total{transport=\"tcp\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
