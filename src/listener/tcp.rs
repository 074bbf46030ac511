//! Syslog over TCP (RFC 6587): a connection limit (and one per sender address) taken before a
//! connection is served, the
//! sender ACL checked at accept, an idle timeout, and one tracing span per connection.
//! Failures are sent with backpressure: a full jail queue slows the sender, nothing is lost.
//! Each connection's messages are parsed and matched on every core ([`super::parallel`]).
//! The loop is generic over an [`Upgrade`] of the accepted socket, so TLS (RFC 5425, in
//! [`super::tls`]) is served by the same code after its handshake.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{parallel, SharedPipeline};
use crate::jail::Failure;
use crate::metrics::{messages_dropped, tcp_connections, DropReason};

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Most connections at once; more are refused and counted.
    pub max_connections: usize,
    /// Most connections of one sender address at once; more are refused and counted.
    pub per_sender: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
}

/// Binds a TCP listener (syslog, TLS, metrics). An IPv6 address is IPv6 only, as UDP's are: `[::]` then
/// takes no IPv4 connections, and `0.0.0.0` and `[::]` on one port can both be listened on (a
/// dual-stack `[::]` made the second bind fail with "address in use").
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // As tokio's own bind: a restart need not wait for the old connections' TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// What an accepted TCP socket becomes before frames are read from it.
pub(crate) trait Upgrade: Clone + Send + Sync + 'static {
    /// The stream read for frames.
    type Stream: AsyncRead + Unpin + Send;
    /// The `transport` label of `jailsink_messages_received_total` and the span name.
    const TRANSPORT: &'static str;
    /// The stream to read, or None when the connection is to be closed (a failed handshake,
    /// counted and logged by the implementation).
    fn upgrade(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<Self::Stream>> + Send;
}

/// Plain TCP: the socket as accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plain;

impl Upgrade for Plain {
    type Stream = TcpStream;
    const TRANSPORT: &'static str = "tcp";

    async fn upgrade(&self, stream: TcpStream, _peer: SocketAddr) -> Option<TcpStream> {
        Some(stream)
    }
}

/// Accepts connections until `shutdown`; returns once every connection has ended.
pub(crate) async fn serve<U: Upgrade>(
    listener: TcpListener,
    upgrade: U,
    limits: TcpLimits,
    shared: SharedPipeline,
    pool: Arc<parallel::Pool>,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let senders = Arc::new(Senders::default());
    let refused = messages_dropped(DropReason::ConnectionLimit);
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, transport = U::TRANSPORT, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !shared.load().admit(peer.ip()) {
            continue;
        }
        let Some(sender) = Senders::admit(&senders, peer.ip(), limits.per_sender) else {
            refused.increment(1);
            tracing::debug!(%peer, "connection refused: max_tcp_connections_per_sender reached");
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.increment(1);
            tracing::debug!(%peer, "connection refused: max_tcp_connections reached");
            continue;
        };
        let span = tracing::info_span!("connection", transport = U::TRANSPORT, %peer);
        let (shared, failures, shutdown) = (shared.clone(), failures.clone(), shutdown.clone());
        let (upgrade, pool) = (upgrade.clone(), pool.clone());
        connections.spawn(
            async move {
                let _open = Open::new();
                // Dropped before `_open` (reverse order): the slots are free again by the time
                // the gauge shows the connection gone.
                let _slots = (permit, sender);
                let stream = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    s = upgrade.upgrade(stream, peer) => match s {
                        Some(stream) => stream,
                        None => return,
                    },
                };
                parallel::connection::<U::Stream>(
                    stream,
                    U::TRANSPORT,
                    peer,
                    limits.idle_timeout,
                    shared,
                    pool,
                    failures,
                    shutdown,
                )
                .await;
            }
            .instrument(span),
        );
    }
    connections.close();
    connections.wait().await;
}

/// Connections open per sender address: one host cannot take every slot of
/// `max_tcp_connections` from the others.
#[derive(Default)]
struct Senders(std::sync::Mutex<HashMap<IpAddr, usize>>);

impl Senders {
    /// A slot of `ip`'s, unless it holds `most` already; the slot is given back when dropped.
    fn admit(senders: &Arc<Senders>, ip: IpAddr, most: usize) -> Option<SenderSlot> {
        let mut open = senders.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= most {
            return None;
        }
        *n += 1;
        Some(SenderSlot {
            senders: senders.clone(),
            ip,
        })
    }
}

/// One connection's place in its sender's count.
struct SenderSlot {
    senders: Arc<Senders>,
    ip: IpAddr,
}

impl Drop for SenderSlot {
    fn drop(&mut self) {
        let mut open = self.senders.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Keeps the connection gauge true however a connection ends.
struct Open;

impl Open {
    fn new() -> Self {
        tcp_connections().increment(1.0);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        tcp_connections().decrement(1.0);
    }
}
