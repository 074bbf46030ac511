//! Syslog over UDP (RFC 5426): one message per datagram; the receiver loop also serves Unix
//! datagram sockets (see [`Datagrams`]).
//!
//! Several receiver tasks share one socket so parsing spreads over the cores; the kernel buffer
//! is enlarged for bursts; a datagram longer than the limit is detected by reading into a buffer
//! one byte larger, and dropped. Failures are handed over without waiting: when the jail queue
//! is full the message is dropped and counted, since waiting would only overflow the kernel.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Origin, Receipt, SharedPipeline};
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

/// A datagram socket the receiver tasks read: UDP here, a Unix socket in [`super::unix`].
pub(crate) trait Datagrams: Send + Sync + 'static {
    /// The `transport` label of `jailsink_messages_received_total`.
    const TRANSPORT: &'static str;
    /// Receives one datagram into `buf`: its length and where it came from.
    fn receive<'s>(
        &'s self,
        buf: &mut [u8],
    ) -> impl Future<Output = std::io::Result<(usize, Origin<'s>)>> + Send;
}

impl Datagrams for UdpSocket {
    const TRANSPORT: &'static str = "udp";

    async fn receive<'s>(&'s self, buf: &mut [u8]) -> std::io::Result<(usize, Origin<'s>)> {
        let (len, peer) = self.recv_from(buf).await?;
        Ok((len, Origin::Peer(peer.ip())))
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

async fn receive<S: Datagrams>(
    socket: Arc<S>,
    shared: SharedPipeline,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    let received = messages_received(S::TRANSPORT);
    let queue_full = messages_dropped(DropReason::QueueFull);
    let mut buf = Vec::new();
    let mut found = Vec::new();
    loop {
        let pipeline = shared.load_full();
        // max+1 bytes: a datagram that fills the buffer was longer than the limit.
        buf.resize(pipeline.max_message_bytes() + 1, 0);
        let (len, origin) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.receive(&mut buf) => match r {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, transport = S::TRANSPORT, "receive failed");
                    continue;
                }
            },
        };
        if let Origin::Peer(ip) = origin {
            if !pipeline.admit(ip) {
                continue;
            }
        }
        received.increment(1);
        if len > pipeline.max_message_bytes() {
            pipeline.drop_too_large();
            continue;
        }
        pipeline.process(&buf[..len], Receipt::now(), origin, &mut found);
        for failure in found.drain(..) {
            if failures.try_send(failure).is_err() {
                queue_full.increment(1);
            }
        }
    }
}
