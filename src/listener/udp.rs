//! Syslog over UDP (RFC 5426): one message per datagram; the receiver loop also serves Unix
//! datagram sockets (see [`Datagrams`]).
//!
//! Several receiver tasks share one socket so parsing spreads over the cores, each taking
//! datagrams in batches ([`super::batch`], `recvmmsg`). The kernel buffer is enlarged for
//! bursts, past `net.core.rmem_max` when jailsink may (`SO_RCVBUFFORCE`, CAP_NET_ADMIN), and
//! what the kernel still dropped is counted from `SO_RXQ_OVFL` into
//! `jailsink_udp_kernel_drops_total`. A datagram longer than the limit is detected by reading
//! into a slot one byte larger, and dropped. A full jail queue holds the receiver back, as on
//! TCP: datagrams wait in the kernel's buffer meanwhile, and only what overflows it is lost
//! (and counted as kernel drops), never a failure already read.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, KernelDrops};
use super::{Origin, Receipt, SharedPipeline};
use crate::jail::Failure;
use crate::metrics::{messages_dropped, messages_received, udp_kernel_drops, DropReason};

/// After a failed receive, the loop waits this long before the next (as TCP's accept does).
const RECEIVE_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// Binds a UDP socket with a receive buffer of `receive_buffer` bytes and drop reporting on.
pub(crate) fn bind(addr: SocketAddr, receive_buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_receive_buffer(&socket, receive_buffer, addr);
    if let Err(error) = set_int(socket.as_raw_fd(), libc::SO_RXQ_OVFL, 1) {
        tracing::warn!(%error, %addr, "SO_RXQ_OVFL refused: kernel drops will not be counted");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Asks for `bytes` of receive buffer: forced past `net.core.rmem_max` with SO_RCVBUFFORCE
/// when the process has CAP_NET_ADMIN, else SO_RCVBUF, which the kernel silently caps; a cap
/// is logged with what was granted, so an operator knows to raise rmem_max or the capability.
fn set_receive_buffer(socket: &Socket, bytes: usize, addr: SocketAddr) {
    let value = bytes.min(i32::MAX as usize / 2);
    let forced = set_int(
        socket.as_raw_fd(),
        libc::SO_RCVBUFFORCE,
        value as libc::c_int,
    );
    if let Err(error) = &forced {
        if let Err(error) = socket.set_recv_buffer_size(value) {
            tracing::warn!(%error, %addr, "could not enlarge the UDP receive buffer");
        }
        tracing::debug!(%error, %addr, "SO_RCVBUFFORCE refused, SO_RCVBUF used");
    }
    // The kernel doubles the value for its bookkeeping and reports the doubled figure.
    let granted = socket.recv_buffer_size().map_or(0, |b| b / 2);
    if granted < value {
        tracing::warn!(
            %addr,
            requested = value,
            granted,
            "UDP receive buffer capped by net.core.rmem_max (SO_RCVBUFFORCE needs CAP_NET_ADMIN)"
        );
    } else {
        tracing::info!(%addr, granted, forced = forced.is_ok(), "UDP receive buffer");
    }
}

/// setsockopt(SOL_SOCKET, `option`, `value`).
fn set_int(fd: RawFd, option: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: fd is an open socket; the value is a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A datagram socket the receiver tasks read: UDP here, a Unix socket in [`super::unix`].
pub(crate) trait Datagrams: Send + Sync + 'static {
    /// The `transport` label of `jailsink_messages_received_total`.
    const TRANSPORT: &'static str;
    /// Waits for datagrams and takes a batch of them into `batch`: how many.
    fn receive(&self, batch: &mut Batch) -> impl Future<Output = std::io::Result<usize>> + Send;
    /// Where datagram `i` of the last batch came from.
    fn origin<'s>(&'s self, batch: &Batch, i: usize) -> Origin<'s>;
}

impl Datagrams for UdpSocket {
    const TRANSPORT: &'static str = "udp";

    async fn receive(&self, batch: &mut Batch) -> std::io::Result<usize> {
        let fd = self.as_raw_fd();
        self.async_io(Interest::READABLE, || batch.receive(fd))
            .await
    }

    fn origin<'s>(&'s self, batch: &Batch, i: usize) -> Origin<'s> {
        // A UDP socket only hears IP senders; unspecified never passes allowed_senders.
        Origin::Peer(
            batch
                .sender(i)
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        )
    }
}

/// Runs `receivers` tasks on `socket` until `shutdown`.
pub(crate) async fn serve<S: Datagrams>(
    socket: S,
    receivers: usize,
    pipeline: SharedPipeline,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let drops = Arc::new(KernelDrops::new(udp_kernel_drops()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..receivers.max(1) {
        tasks.spawn(receive(
            socket.clone(),
            drops.clone(),
            pipeline.clone(),
            failures.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn receive<S: Datagrams>(
    socket: Arc<S>,
    drops: Arc<KernelDrops>,
    shared: SharedPipeline,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    let received = messages_received(S::TRANSPORT);
    let queue_gone = messages_dropped(DropReason::QueueFull);
    let mut batch = Batch::new();
    let mut found = Vec::new();
    loop {
        let pipeline = shared.load_full();
        // max+1 bytes a slot: a datagram that fills it was longer than the limit.
        batch.fit(pipeline.max_message_bytes() + 1);
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.receive(&mut batch) => match r {
                Ok(n) => n,
                Err(error) => {
                    tracing::warn!(%error, transport = S::TRANSPORT, "receive failed");
                    // An error that persists (ENOMEM) must not spin a core and flood the log.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RECEIVE_ERROR_PAUSE) => {}
                    }
                    continue;
                }
            },
        };
        if let Some(total) = batch.overflow() {
            drops.observe(total);
        }
        // One clock reading a batch: its datagrams arrived together.
        let receipt = Receipt::now();
        let mut counted = 0;
        for i in 0..n {
            let origin = socket.origin(&batch, i);
            if let Origin::Peer(ip) = origin {
                if !pipeline.admit(ip) {
                    continue;
                }
            }
            counted += 1;
            let (datagram, truncated) = batch.datagram(i);
            if truncated || datagram.len() > pipeline.max_message_bytes() {
                pipeline.drop_too_large();
                continue;
            }
            pipeline.process(datagram, receipt, origin, &mut found);
            let mut pending = found.drain(..);
            while let Some(failure) = pending.next() {
                // Backpressure, as TCP has: while the jail task catches up (a botnet being
                // banned), this task stops reading and datagrams wait in the kernel's receive
                // buffer (`udp_receive_buffer`, tens of MiB), whose overflow is counted as
                // kernel drops. Dropping here instead lost failures, and so bans, while that
                // buffer stood empty.
                let sent = tokio::select! {
                    biased;
                    sent = failures.send(failure) => sent,
                    _ = shutdown.cancelled() => {
                        // Stopping: what was read is counted, what the jails did not take
                        // is a counted drop, as TCP counts it.
                        received.increment(counted);
                        queue_gone.increment(1 + pending.len() as u64);
                        return;
                    }
                };
                if sent.is_err() {
                    queue_gone.increment(1);
                }
            }
        }
        received.increment(counted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The pipeline of one jail matching `from <HOST> port`, and a socket on loopback (with
    /// its address) for it.
    fn one_jail_socket() -> (SharedPipeline, UdpSocket, std::net::SocketAddr) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.toml");
        std::fs::write(&path, "[jails.a]\nfailregex = ['from <HOST> port']\n").unwrap();
        let config = crate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let pipeline = crate::app::pipeline_for(&config).unwrap();
        let shared: SharedPipeline = Arc::new(arc_swap::ArcSwap::from_pointee(pipeline));
        let socket = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let to = socket.local_addr().unwrap();
        (shared, socket, to)
    }

    /// A datagram that makes the parse panic (a bug) costs that datagram only: the receiver
    /// lives on and the next datagram's failure arrives (with one receiver, a dead one would
    /// have stopped UDP intake for good).
    #[tokio::test(flavor = "current_thread")]
    async fn a_datagram_that_panics_the_parse_does_not_stop_the_receiver() {
        let (shared, socket, to) = one_jail_socket();
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(socket, 1, shared, tx, shutdown.clone()));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let line = "<38>Dec  6 06:00:00 web1 sshd[1]: Failed password for root from 192.0.2.7 port 22 ssh2";
        // Twice, in separate reads and in one.
        for _ in 0..2 {
            sender.send_to(super::super::TEST_PANIC, to).unwrap();
            sender.send_to(line.as_bytes(), to).unwrap();
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(failure)) => assert_eq!(failure.ip.to_string(), "192.0.2.7"),
                other => panic!("no failure after the panic datagram: {other:?}"),
            }
        }
        shutdown.cancel();
        server.await.unwrap();
    }

    /// A full jail queue holds the receiver back instead of costing failures: with room for one
    /// failure in the queue and nobody taking any while the receiver reads a whole batch of
    /// datagrams, every failure still arrives.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_jail_queue_holds_the_receiver_instead_of_dropping_failures() {
        let (shared, socket, to) = one_jail_socket();
        // All sent before the receiver starts: its first read takes a full batch at once.
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let n = 4 * super::super::batch::BATCH;
        for i in 0..n {
            let line = format!(
                "<38>Dec  6 06:00:00 web1 sshd[1]: Failed password for root from 192.0.2.{} port 22 ssh2",
                i + 1
            );
            sender.send_to(line.as_bytes(), to).unwrap();
        }
        let (tx, mut rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(socket, 1, shared, tx, shutdown.clone()));
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(failure)) => {
                    seen.insert(failure.ip);
                }
                _ => panic!("{} of {n} failures arrived", seen.len()),
            }
        }
        shutdown.cancel();
        server.await.unwrap();
    }
}
