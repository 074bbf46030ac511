//! A stop reaches every open TCP connection at once, whatever its peer does: one that says
//! nothing (the select on the stop while waiting for bytes) and one that keeps the socket full
//! (the stop check at each read, since a batch may span reads without reaching that select).
//! The idle timeout is an hour, so only the stop can close them; what shows it is an event,
//! never a measured time: the daemon's shutdown warns when listeners outlive its grace period,
//! and a reload's closed connection reads as closed while the daemon runs on.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{config, Daemon, SSHD};

const CONNECTIONS: &str = "jailsink_tcp_connections";
const RECEIVED: &str = "jailsink_messages_received_total{transport=\"tcp\"}";
/// What `shut_down` logs when a connection outlived the listeners' grace period.
const OUTLIVED: &str = "listeners did not finish within the grace period";

fn daemon() -> Daemon {
    Daemon::start(&config("tcp_idle_timeout = \"1h\"", SSHD))
}

/// A connection that sent one line and then nothing; returned once the daemon counted the
/// line, so that the connection waits for its next byte (the select on the stop).
fn silent(d: &Daemon) -> TcpStream {
    let mut client = TcpStream::connect(d.tcp).expect("connect");
    client
        .write_all(b"<13>Jan  1 00:00:00 web app: hello\n")
        .expect("write");
    d.wait_metric(RECEIVED, 1.0);
    d.wait_metric(CONNECTIONS, 1.0);
    client
}

/// A connection whose thread writes lines as fast as the socket takes them until the daemon
/// closes it; returns the thread and how many bytes it wrote, once a write found the socket
/// full (the writer outpaces the daemon: there is always a byte to read, so the daemon's read
/// loop never waits in the select that watches the stop).
fn flooding(d: &Daemon) -> (std::thread::JoinHandle<std::io::Error>, Arc<AtomicU64>) {
    let mut client = TcpStream::connect(d.tcp).expect("connect");
    client.set_nonblocking(true).expect("nonblocking");
    let written = Arc::new(AtomicU64::new(0));
    let full = Arc::new(AtomicBool::new(false));
    let (counted, filled) = (written.clone(), full.clone());
    let thread = std::thread::spawn(move || {
        let line = b"<13>Jan  1 00:00:00 web app: a line that matches no jail at all\n";
        let block: Vec<u8> = line
            .iter()
            .copied()
            .cycle()
            .take(line.len() * 256)
            .collect();
        let mut at = 0;
        loop {
            match client.write(&block[at..]) {
                Ok(n) => {
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    at = (at + n) % block.len();
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    // Full: from here on the writes wait for the daemon to read.
                    filled.store(true, Ordering::Relaxed);
                    if let Err(error) = client.set_nonblocking(false) {
                        return error;
                    }
                }
                Err(error) => return error,
            }
        }
    });
    // The daemon reads this connection (a thousand of its lines counted; a socket still in the
    // accept queue fills too), and a write found it full. A bound for a failing run only:
    // nothing is timed.
    assert!(crate::support::wait_for(Duration::from_secs(120), || {
        full.load(Ordering::Relaxed) && d.metric(RECEIVED).is_some_and(|n| n > 1000.0)
    }));
    (thread, written)
}

/// True once `client` reads as closed by the daemon (end of stream or a reset).
fn reads_closed(client: &mut TcpStream) -> bool {
    // A bound for a failing run only (the idle timeout is an hour); nothing is timed.
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Stops `d` with SIGTERM and checks that it stopped without warning that a connection
/// (`what`) outlived the listeners' grace period.
fn stop_within_grace(d: Daemon, what: &str) {
    let logs = d.logs.clone();
    let status = d.stop();
    assert!(status.success(), "{status}");
    let logged = |m: &str| logs.lock().unwrap().iter().any(|e| e["message"] == m);
    assert!(logged("stopped"));
    assert!(!logged(OUTLIVED), "{what} held the stop back");
}

#[test]
fn a_silent_connection_ends_at_sigterm_within_the_grace() {
    let d = daemon();
    let mut client = silent(&d);
    stop_within_grace(d, "the silent connection");
    assert!(reads_closed(&mut client));
}

#[test]
fn a_flooding_connection_ends_at_sigterm_within_the_grace() {
    let d = daemon();
    let (writer, _) = flooding(&d);
    stop_within_grace(d, "the flooding connection");
    // Its writes fail now (reset or broken pipe): the connection is gone.
    let error = writer.join().expect("writer");
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{error}"
    );
}

/// A reload that removes the TCP listener closes its connections, the silent and the flooding
/// one, while the daemon runs on.
#[test]
fn a_reload_that_removes_the_listener_closes_its_silent_and_flooding_connections() {
    let d = daemon();
    let mut quiet = silent(&d);
    let (writer, written) = flooding(&d);
    d.wait_metric(CONNECTIONS, 2.0);
    let text = std::fs::read_to_string(&d.config).expect("config");
    let without = text.replace("tcp = [\"127.0.0.1:0\"]", "tcp = []");
    assert_ne!(text, without);
    std::fs::write(&d.config, without).expect("write config");
    d.cli_ok(&["reload"]);
    assert!(crate::support::wait_for(Duration::from_secs(30), || d
        .logged("listener closed by reload")));
    assert!(
        reads_closed(&mut quiet),
        "the silent connection is still open"
    );
    let error = writer.join().expect("writer");
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "{error} after {} bytes",
        written.load(Ordering::Relaxed)
    );
    d.wait_metric(CONNECTIONS, 0.0);
    assert!(d.logged("listener closed by reload"));
    d.assert_no_errors();
}
