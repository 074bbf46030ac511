//! The live comparison: the corpus pushed over TCP into jailsink and into a private rsyslogd
//! (msg/s until every message is counted, peak RSS). UDP is in [`super::udp`].

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::corpus::read_lines;
use super::load::send_tcp;
use super::support::{self, rss_kib, Rsyslog};
use super::{fresh_daemon, LIVE_JAILS, POLL};

/// `live-tcp --corpus DIR --jailsink BIN [--rsyslogd PATH] [--connections 1,4] [--repeat N]`.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpArgs {
    /// A directory `corpus` wrote (its corpus.pri is sent).
    #[arg(long, default_value = "bench/out/corpus")]
    pub corpus: PathBuf,
    #[command(flatten)]
    pub jailsink: super::Jailsink,
    /// rsyslogd binary to compare with; without it only jailsink is measured.
    #[arg(long)]
    pub rsyslogd: Option<PathBuf>,
    /// Connection counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4", value_parser = super::count)]
    pub connections: Vec<usize>,
    /// Send the corpus this many times over.
    #[arg(long, default_value = "1", value_parser = super::count)]
    pub repeat: usize,
    /// Seconds to wait for a receiver to count everything.
    #[arg(long, default_value = "300", value_parser = super::count)]
    pub timeout: usize,
    /// Also measure jailsink with a `tail` client connected (reading every event as fast as it
    /// can), to show what watching costs; without one, publishing is one atomic load.
    #[arg(long)]
    pub tail: bool,
    /// Also measure jailsink pinned to one core (`taskset -a -p -c 0`, every thread), next to
    /// the same run on every core, to show how the connections scale.
    #[arg(long)]
    pub one_core: bool,
}

/// CPU time a process (all its threads) has used so far, seconds (0 once it is gone).
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After the `(comm)` field: state is field 3, utime 14 and stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Pins every thread of `pid` to CPU 0 (taskset from util-linux).
fn pin_to_one_core(pid: u32) -> Result<(), String> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "taskset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Connects a `tail` client to `daemon` and reads (and discards) its stream on a thread until
/// the daemon goes; returns once the daemon has confirmed it is watching.
fn watch(daemon: &support::Daemon) -> Result<std::thread::JoinHandle<u64>, String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let socket = daemon
        .config
        .parent()
        .ok_or("config has no directory")?
        .join("jailsink.sock");
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).map_err(|e| e.to_string())?;
    stream
        .write_all(b"{\"command\":\"tail\",\"jail\":null}\n")
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut ok = String::new();
    reader.read_line(&mut ok).map_err(|e| e.to_string())?;
    if !ok.contains("\"ok\"") {
        return Err(format!("tail refused: {ok}"));
    }
    Ok(std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    }))
}

/// One live TCP measurement.
#[derive(Debug, Clone)]
pub struct LiveRow {
    /// Receiver.
    pub receiver: String,
    /// Connections.
    pub connections: usize,
    /// Framing.
    pub framing: &'static str,
    /// Messages sent (and counted).
    pub messages: u64,
    /// Messages/s from the first byte until every message was counted.
    pub rate: f64,
    /// Peak RSS seen, KiB.
    pub rss_kib: u64,
    /// CPU seconds the receiver used per million messages (all threads, user + system).
    pub cpu_per_million: f64,
    /// CPU seconds jailbench's sending threads used per million messages: on loopback the
    /// sender shares the cores with the receiver, so the two together bound the rate.
    pub sender_cpu_per_million: f64,
    /// Cores the receiver and the sender kept busy on average, from the first byte until
    /// every message was counted ((receiver + sender CPU s) / wall s): 2.0 on two cores
    /// means neither ever waited for the other.
    pub cores_busy: f64,
}

/// Messages jailsink has counted on `transport`.
pub fn received(daemon: &support::Daemon, transport: &str) -> f64 {
    let series = format!("jailsink_messages_received_total{{transport=\"{transport}\"}}");
    daemon.metric(&series).unwrap_or(0.0)
}

/// rsyslogd receiving on TCP `port` into `out.log` in its directory (raw messages, one a line).
const RSYSLOG_TCP: &str = r#"global(workDirectory="@DIR@/work" maxMessageSize="64k")
module(load="imtcp" MaxSessions="64")
input(type="imtcp" address="127.0.0.1" port="@PORT@")
template(name="raw" type="string" string="%rawmsg%\n")
main_queue(queue.size="1000000" queue.dequeueBatchSize="1024")
*.* action(type="omfile" file="@DIR@/out.log" template="raw" asyncWriting="on" ioBufferSize="4m" flushInterval="1")
"#;

/// Starts rsyslogd on `port` and waits until it accepts connections.
fn rsyslog(rsyslogd: &Path, port: u16) -> Result<Rsyslog, String> {
    let r = Rsyslog::start(rsyslogd, &RSYSLOG_TCP.replace("@PORT@", &port.to_string()));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if !support::wait_for(Duration::from_secs(10), || TcpStream::connect(addr).is_ok()) {
        return Err(format!("rsyslogd did not listen: {}", r.output()));
    }
    Ok(r)
}

/// Bytes rsyslogd has written so far.
fn written(r: &Rsyslog) -> u64 {
    std::fs::metadata(r.dir().join("out.log")).map_or(0, |m| m.len())
}

/// Each connection count, LF then octet-counted framing: jailsink, then rsyslogd; prints a table.
pub fn live_tcp(args: &TcpArgs) -> Result<Vec<LiveRow>, String> {
    let mut lines = read_lines(&args.corpus.join("corpus.pri"))?;
    if args.repeat > 1 {
        let one = lines.clone();
        for _ in 1..args.repeat {
            lines.extend(one.iter().cloned());
        }
    }
    let expected_bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let jailsink = &args.jailsink.jailsink;
    let mut rows = Vec::new();
    let timeout = Duration::from_secs(args.timeout as u64);
    let watched: &[bool] = if args.tail { &[false, true] } else { &[false] };
    let pinnings: &[bool] = if args.one_core {
        &[false, true]
    } else {
        &[false]
    };
    for &connections in &args.connections {
        for octet in [false, true] {
            let framing = if octet { "octet" } else { "lf" };
            for (&tailing, &pinned) in watched
                .iter()
                .flat_map(|t| pinnings.iter().map(move |p| (t, p)))
                .filter(|(t, p)| !(**t && **p))
            {
                // jailsink
                let daemon = fresh_daemon(jailsink, LIVE_JAILS)?;
                let watcher = if tailing { Some(watch(&daemon)?) } else { None };
                let pid = daemon.pid();
                if pinned {
                    pin_to_one_core(pid)?;
                }
                let cpu_before = cpu_seconds(pid);
                let peak = Arc::new(AtomicU64::new(0));
                let sent = send_tcp(daemon.tcp, &lines, connections, octet, 0)?;
                let counted = support::poll(timeout, POLL, || {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    received(&daemon, "tcp") >= sent.messages as f64
                });
                let secs = sent.started.elapsed().as_secs_f64();
                let cpu = cpu_seconds(pid) - cpu_before;
                if !counted {
                    return Err(format!(
                        "jailsink counted {} of {}",
                        received(&daemon, "tcp"),
                        sent.messages
                    ));
                }
                rows.push(LiveRow {
                    receiver: match (tailing, pinned) {
                        (true, _) => "jailsink + tail client",
                        (false, true) => "jailsink, one core",
                        (false, false) => "jailsink",
                    }
                    .into(),
                    connections,
                    framing,
                    messages: sent.messages,
                    rate: sent.messages as f64 / secs,
                    rss_kib: peak.load(Ordering::Relaxed),
                    cpu_per_million: cpu / (sent.messages as f64 / 1e6),
                    sender_cpu_per_million: sent.cpu_seconds / (sent.messages as f64 / 1e6),
                    cores_busy: (cpu + sent.cpu_seconds) / secs,
                });
                drop(daemon);
                if let Some(watcher) = watcher {
                    let bytes = watcher.join().map_err(|_| "tail reader failed")?;
                    println!("tail client read {bytes} bytes of events");
                }
            }
            let Some(rsyslogd) = args.rsyslogd.as_ref().filter(|p| !p.as_os_str().is_empty())
            else {
                continue;
            };
            let port = support::free_port();
            let r = rsyslog(rsyslogd, port)?;
            let pid = r.pid();
            let cpu_before = cpu_seconds(pid);
            let sent = send_tcp(
                SocketAddr::from(([127, 0, 0, 1], port)),
                &lines,
                connections,
                octet,
                0,
            )?;
            let mut peak = 0;
            let done = support::poll(timeout, POLL, || {
                peak = peak.max(rss_kib(pid));
                written(&r) >= expected_bytes
            });
            let secs = sent.started.elapsed().as_secs_f64();
            let cpu = cpu_seconds(pid) - cpu_before;
            if !done {
                return Err(format!(
                    "rsyslogd wrote {} of {expected_bytes} bytes",
                    written(&r)
                ));
            }
            rows.push(LiveRow {
                receiver: "rsyslogd".into(),
                connections,
                framing,
                messages: sent.messages,
                rate: sent.messages as f64 / secs,
                rss_kib: peak,
                cpu_per_million: cpu / (sent.messages as f64 / 1e6),
                sender_cpu_per_million: sent.cpu_seconds / (sent.messages as f64 / 1e6),
                cores_busy: (cpu + sent.cpu_seconds) / secs,
            });
        }
    }
    println!(
        "| receiver | connections | framing | messages | msg/s (all counted) | CPU s per 1M msg | peak RSS | vs rsyslogd | sender CPU s per 1M msg | cores busy |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let rsyslogd = rows.iter().find(|o| {
            o.receiver == "rsyslogd" && o.connections == r.connections && o.framing == r.framing
        });
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.1} MB | {} | {:.2} | {:.2} |",
            r.receiver,
            r.connections,
            r.framing,
            r.messages,
            r.rate,
            r.cpu_per_million,
            r.rss_kib as f64 / 1024.0,
            rsyslogd.map_or("-".into(), |o| format!("{:.2}x", r.rate / o.rate)),
            r.sender_cpu_per_million,
            r.cores_busy
        );
    }
    for r in rows.iter().filter(|r| r.receiver == "jailsink") {
        if let Some(one) = rows.iter().find(|o| {
            o.receiver == "jailsink, one core"
                && o.connections == r.connections
                && o.framing == r.framing
        }) {
            println!(
                "scaling, {} connection(s), {}: every core {:.0} msg/s / one core {:.0} msg/s = {:.2}x",
                r.connections,
                r.framing,
                r.rate,
                one.rate,
                r.rate / one.rate
            );
        }
    }
    Ok(rows)
}
