//! UDP ingest past its limit: what the kernel drops on a full receive buffer is counted in
//! `jailsink_udp_kernel_drops_total`, so received + dropped accounts for every datagram sent.

use std::net::UdpSocket;
use std::time::Duration;

use crate::support::{config, wait_for, Daemon};

const RECEIVED: &str = "jailsink_messages_received_total{transport=\"udp\"}";
const KERNEL_DROPS: &str = "jailsink_udp_kernel_drops_total";

/// The drops column of /proc/net/udp for the socket bound to `port` on 127.0.0.1.
fn proc_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str())).then(|| fields.last()?.parse().ok())?
    })
}

/// Resumes a stopped process even when the test fails half-way.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

#[test]
fn kernel_drops_are_counted_and_account_for_every_lost_datagram() {
    // The smallest buffer the config takes: a few hundred datagrams.
    let d = Daemon::start(&config("udp_receive_buffer = 65536", ""));
    assert_eq!(d.metric(KERNEL_DROPS), Some(0.0), "{}", d.scrape());
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let line = b"<13>Jan  1 00:00:00 web sshd[1]: hello";
    let mut sent = 0u64;
    let mut send = |n: u64| {
        for _ in 0..n {
            sender.send_to(line, d.udp).unwrap();
        }
        sent += n;
        sent
    };
    let first = send(5);
    d.wait_metric(RECEIVED, first as f64);
    {
        // Stopped, the daemon reads nothing: the buffer fills and the kernel drops the rest.
        // SAFETY: plain kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGSTOP) }, 0);
        let _resume = Resume(d.pid());
        send(20_000);
    }
    // Datagrams queued after the drops carry the kernel's total: send a few until the books
    // balance (a bounded wait).
    let balanced = wait_for(Duration::from_secs(20), || {
        let total = send(1) as f64;
        let received = d.metric(RECEIVED).unwrap_or(0.0);
        let dropped = d.metric(KERNEL_DROPS).unwrap_or(0.0);
        received + dropped == total
    });
    let dropped = d.metric(KERNEL_DROPS).unwrap_or(0.0);
    assert!(
        balanced,
        "sent {sent}, received {:?}, kernel drops {dropped}",
        d.metric(RECEIVED)
    );
    assert!(dropped > 10_000.0, "only {dropped} dropped of 20,000");
    // The kernel's own table agrees.
    assert_eq!(proc_drops(d.udp.port()), Some(dropped as u64));
}
