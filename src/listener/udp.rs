//! Syslog over UDP (RFC 5426): one message per datagram.
//!
//! Several receiver tasks share one socket so parsing spreads over the cores; the kernel buffer
//! is enlarged for bursts; a datagram longer than the limit is detected by reading into a buffer
//! one byte larger, and dropped. Failures are handed over without waiting: when the jail queue
//! is full the message is dropped and counted, since waiting would only overflow the kernel.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Receipt, SharedPipeline};
use crate::jail::Failure;
use crate::metrics::{messages_dropped, messages_received, DropReason};

/// Receive buffer asked of the kernel (it may grant less; see net.core.rmem_max).
const RECEIVE_BUFFER: usize = 8 << 20;

/// Binds a UDP socket with a large receive buffer.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if let Err(error) = socket.set_recv_buffer_size(RECEIVE_BUFFER) {
        tracing::warn!(%error, "could not enlarge the UDP receive buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Runs `receivers` tasks on `socket` until `shutdown`.
pub(crate) async fn serve(
    socket: UdpSocket,
    receivers: usize,
    pipeline: SharedPipeline,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..receivers.max(1) {
        tasks.spawn(receive(
            socket.clone(),
            pipeline.clone(),
            failures.clone(),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn receive(
    socket: Arc<UdpSocket>,
    shared: SharedPipeline,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    let received = messages_received("udp");
    let queue_full = messages_dropped(DropReason::QueueFull);
    let mut buf = Vec::new();
    let mut found = Vec::new();
    loop {
        let pipeline = shared.load_full();
        // max+1 bytes: a datagram that fills the buffer was longer than the limit.
        buf.resize(pipeline.max_message_bytes() + 1, 0);
        let (len, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "UDP receive failed");
                    continue;
                }
            },
        };
        if !pipeline.admit(peer.ip()) {
            continue;
        }
        received.increment(1);
        if len > pipeline.max_message_bytes() {
            pipeline.drop_too_large();
            continue;
        }
        pipeline.process(&buf[..len], Receipt::now(), &mut found);
        for failure in found.drain(..) {
            if failures.try_send(failure).is_err() {
                queue_full.increment(1);
            }
        }
    }
}
