//! The live comparison: the corpus pushed over TCP into jailsink and into a private rsyslogd
//! (msg/s until every message is counted, peak RSS). UDP is in [`super::udp`].

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::corpus::read_lines;
use super::load::send_tcp_from;
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

/// Whether every byte sent to TCP `port` has left the kernel for the receiver: no connection
/// to or from `port` (the listening socket aside) holds bytes unsent or unread
/// (`/proc/net/tcp`; true when it cannot be read). The cheap half of a live run's end check,
/// asked before the exact count: reading it costs the receiver nothing, where each scrape has
/// jailsink render its whole `/metrics` page, and it is asked alike for every receiver.
pub(crate) fn drained(port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let port_of = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    table.lines().skip(1).all(|line| {
        // sl, local address, remote address, state, tx_queue:rx_queue, ...
        let fields: Vec<&str> = line.split_whitespace().take(5).collect();
        let [_, local, remote, state, queues] = fields[..] else {
            return true;
        };
        let ours = port_of(local) == Some(port) || port_of(remote) == Some(port);
        const LISTEN: &str = "0A";
        !ours
            || state == LISTEN
            || queues
                .split(':')
                .all(|q| u64::from_str_radix(q, 16).is_ok_and(|n| n == 0))
    })
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

/// The end check of one live run: when the receiver's sockets drained, and how many exact
/// counts (scrapes, for jailsink) it took after that.
#[derive(Debug, Default)]
pub(crate) struct End {
    drained: Option<f64>,
    counts: u32,
}

impl End {
    /// Whether the kernel holds nothing more for `port` ([`drained`]), noting when it first
    /// did not.
    pub(crate) fn drained(&mut self, sent: &super::load::Sent, port: u16) -> bool {
        if self.drained.is_none() && drained(port) {
            self.drained = Some(sent.started.elapsed().as_secs_f64());
        }
        self.drained.is_some()
    }

    /// `counted`, the exact check's answer, counted.
    pub(crate) fn scraped(&mut self, counted: bool) -> bool {
        self.counts += 1;
        counted
    }

    /// One line: when the sender finished, when the sockets drained and when everything was
    /// counted (seconds from the first byte).
    pub(crate) fn print(&self, receiver: &str, sent: &super::load::Sent, secs: f64) {
        println!(
            "{receiver}: sender done at {:.3} s, sockets drained at {:.3} s, all counted at {secs:.3} s, {} exact check(s)",
            sent.seconds,
            self.drained.unwrap_or(f64::NAN),
            self.counts
        );
    }
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
                let mut cpu_before = 0.0;
                let peak = Arc::new(AtomicU64::new(0));
                let sent = send_tcp_from(daemon.tcp, &lines, connections, octet, 0, || {
                    cpu_before = cpu_seconds(pid)
                })?;
                // Scraped only once the kernel holds nothing more for it: a scrape renders
                // the whole page, on the cores the run is measuring.
                let mut end = End::default();
                let counted = support::poll(timeout, POLL, || {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    end.drained(&sent, daemon.tcp.port())
                        && end.scraped(received(&daemon, "tcp") >= sent.messages as f64)
                });
                let secs = sent.started.elapsed().as_secs_f64();
                let cpu = cpu_seconds(pid) - cpu_before;
                end.print("jailsink", &sent, secs);
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
            let mut cpu_before = 0.0;
            let sent = send_tcp_from(
                SocketAddr::from(([127, 0, 0, 1], port)),
                &lines,
                connections,
                octet,
                0,
                || cpu_before = cpu_seconds(pid),
            )?;
            let mut peak = 0;
            // The same schedule as jailsink's: its file's size (a stat) once the kernel holds
            // nothing more for it.
            let mut end = End::default();
            let done = support::poll(timeout, POLL, || {
                peak = peak.max(rss_kib(pid));
                end.drained(&sent, port) && end.scraped(written(&r) >= expected_bytes)
            });
            let secs = sent.started.elapsed().as_secs_f64();
            let cpu = cpu_seconds(pid) - cpu_before;
            end.print("rsyslogd", &sent, secs);
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

#[cfg(test)]
mod tests {
    /// Bytes the receiver has not read keep its port undrained; read, it is drained.
    #[test]
    fn a_port_is_drained_once_its_receiver_read_everything() {
        use std::io::{Read, Write};
        use std::net::TcpListener;

        use super::drained;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(drained(port), "a listener alone holds nothing");
        let mut sender = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        sender.write_all(&[b'x'; 10_000]).unwrap();
        sender.flush().unwrap();
        // Loopback delivers at once; give a slow machine a moment all the same.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while drained(port) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!drained(port), "10,000 unread bytes");
        let mut buf = vec![0; 10_000];
        receiver.read_exact(&mut buf).unwrap();
        assert!(drained(port), "everything read");
    }
}
