//! Syslog over TCP (RFC 6587): a connection limit taken before a connection is served, the
//! sender ACL checked at accept, an idle timeout, and one tracing span per connection.
//! Failures are sent with backpressure: a full jail queue slows the sender, nothing is lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::framing::{Frame, FrameDecoder};
use super::{Receipt, SharedPipeline};
use crate::jail::Failure;
use crate::metrics::{messages_dropped, messages_received, tcp_connections, DropReason};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    /// Most connections at once; more are refused and counted.
    pub max_connections: usize,
    /// A connection silent this long is closed.
    pub idle_timeout: Duration,
}

/// Accepts connections until `shutdown`; returns once every connection has ended.
pub(crate) async fn serve(
    listener: TcpListener,
    limits: TcpLimits,
    shared: SharedPipeline,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refused = messages_dropped(DropReason::ConnectionLimit);
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !shared.load().admit(peer.ip()) {
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused.increment(1);
            tracing::debug!(%peer, "connection refused: max_tcp_connections reached");
            continue;
        };
        let span = tracing::info_span!("tcp", %peer);
        let (shared, failures, shutdown) = (shared.clone(), failures.clone(), shutdown.clone());
        connections.spawn(
            async move {
                let _permit = permit;
                connection(
                    stream,
                    peer,
                    limits.idle_timeout,
                    shared,
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

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    idle: Duration,
    shared: SharedPipeline,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    let _open = Open::new();
    tracing::debug!(%peer, "connected");
    let received = messages_received("tcp");
    let mut decoder = FrameDecoder::new(shared.load().max_message_bytes());
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut found = Vec::new();
    loop {
        buf.reserve(READ_CHUNK);
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(idle, stream.read_buf(&mut buf)) => r,
        };
        let n = match read {
            Err(_) => {
                tracing::debug!(%peer, "idle timeout");
                break;
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "read failed");
                break;
            }
            Ok(Ok(n)) => n,
        };
        let receipt = Receipt::now();
        let pipeline = shared.load_full();
        let at_end = n == 0;
        loop {
            let frame = if at_end {
                decoder.finish(&mut buf)
            } else {
                match decoder.decode(&mut buf) {
                    Ok(frame) => frame,
                    Err(error) => {
                        pipeline.drop_unparseable();
                        tracing::warn!(%peer, %error, "closing connection");
                        return;
                    }
                }
            };
            match frame {
                None => break,
                Some(Frame::Oversized) => {
                    received.increment(1);
                    pipeline.drop_too_large();
                }
                Some(Frame::Message(bytes)) => {
                    received.increment(1);
                    pipeline.process(&bytes, receipt, &mut found);
                }
            }
            if at_end {
                break;
            }
        }
        for failure in found.drain(..) {
            if failures.send(failure).await.is_err() {
                return;
            }
        }
        if at_end {
            break;
        }
    }
    tracing::debug!(%peer, "disconnected");
}
