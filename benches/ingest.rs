//! Live TCP ingest rate: the release daemon on loopback, N connections pushing M syslog lines
//! (20% sshd failures from 1,000 documentation addresses), timed until /metrics has counted every message.
//!
//! `cargo bench --bench ingest -- --connections 4 --messages 2000000 [--octet]`

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use clap::Parser;

#[path = "../tests/support.rs"]
mod support;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "ingest",
    about = "Live TCP ingest rate of the release daemon on loopback"
)]
struct Args {
    /// TCP connections pushing at once.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Messages in all (split evenly over the connections).
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Octet-counted framing (RFC 6587) instead of LF.
    #[arg(long)]
    octet: bool,
}

/// The sshd jail on the shipped filter; support's config gives it the log action, so bans are
/// only logged.
const JAILS: &str = r#"
[jails.sshd]
programs = ["sshd"]
"#;

fn main() {
    // `cargo bench` appends `--bench` to a harness-less bench's arguments.
    let Args {
        connections,
        messages,
        octet,
    } = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let daemon = support::Daemon::start_env(
        tempfile::tempdir().expect("temp dir"),
        &support::config("", JAILS),
        &[],
        &[("RUST_LOG", "warn,jailsink=info")],
    );
    let tcp = daemon.tcp;

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
    let series = "jailsink_messages_received_total{transport=\"tcp\"}";
    let counted = support::poll(Duration::from_secs(600), Duration::from_millis(5), || {
        daemon.metric(series).unwrap_or(0.0) >= total
    });
    assert!(counted, "not every message was counted");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ingest tcp framing={} connections={connections} messages={} seconds={secs:.3} msg/s={:.0} MB/s={:.1}",
        if octet { "octet" } else { "lf" },
        total,
        total / secs,
        bytes as f64 / secs / 1e6
    );
    daemon.stop();
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
