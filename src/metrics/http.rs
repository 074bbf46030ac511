//! The small HTTP responder of the metrics listener (`GET /metrics`, and the ban feed's
//! routes), hardened for a port that routers and scrapers reach from other hosts: bounded
//! connections in all and per peer, one deadline for a whole request head, and a deadline on
//! every write, so no client can hold descriptors or tasks for long, and none can starve the
//! syslog listeners and firewall calls of file descriptors.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::render;

/// The most a scraper may send before we answer; a GET needs a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 8192;
/// The whole request head must arrive within this (not each read: a client dripping a byte at
/// a time would otherwise hold its connection for hours).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that makes no progress for this long ends the connection (a client that stopped
/// reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one address; more are closed at once.
const MAX_PER_PEER: usize = 8;

/// The future a [`Route`] answers with.
pub(crate) type Responding = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// The stream a [`Route`] writes its answer to.
pub(crate) type Answering = Deadlined<TcpStream>;

/// A GET a [`Route`] answers: what it needs of the request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Get {
    /// The path, with its query.
    pub path: String,
    /// The Authorization header's value, if sent.
    pub authorization: Option<String>,
    /// The request is HTTP/1.0 (or has no version): its client may not read a chunked
    /// body, so a body of unknown length is delimited by closing the connection.
    pub http_1_0: bool,
    /// A HEAD request: the answer's head as a GET's, and no body (the stream drops it anyway;
    /// a route may stop early rather than produce it).
    pub head: bool,
}

/// A resource served on the metrics listener besides /metrics (the ban feed). Its owner hands
/// it in, so this module stays a leaf that imports nothing upstream.
#[derive(Clone)]
pub(crate) struct Route {
    /// Whether a path (with its query) is this route's.
    pub serves: fn(&str) -> bool,
    /// Answers a GET on the stream.
    pub respond: Arc<dyn Fn(Get, Answering) -> Responding + Send + Sync>,
}

/// Serves `GET /metrics` (and `route`) on an already bound listener until `shutdown` fires.
///
/// Our own small responder instead of the exporter's: we bind it ourselves, after every syslog
/// listener, so a scrape that answers proves readiness, and tests can bind port 0.
pub(crate) async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    route: Option<Route>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let peers = Peers::default();
    loop {
        // A free slot first: past the cap, connections wait in the backlog, not as tasks.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = peers.admit(peer.ip()) else {
            tracing::debug!(peer = %peer.ip(), "metrics: too many connections from one address; closed");
            continue;
        };
        let handle = handle.clone();
        let route = route.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, &handle, route).await {
                tracing::debug!(%error, "metrics request failed");
            }
            drop((slot, admitted));
        });
    }
}

/// Connections open per peer address.
#[derive(Clone, Default)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One admitted connection of a peer; counted out when dropped.
struct Admitted {
    peers: Peers,
    ip: IpAddr,
}

impl Peers {
    /// Counts a connection from `ip` in, unless it already has [`MAX_PER_PEER`].
    fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= MAX_PER_PEER {
            return None;
        }
        *n += 1;
        Some(Admitted {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.peers.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Reads a request head (up to the blank line, at most [`MAX_REQUEST_BYTES`]) within
/// [`REQUEST_TIMEOUT`] in all; None if the client closed first.
async fn read_head<R: AsyncRead + Unpin>(stream: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let reading = async {
        let mut request = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n")
            && !request.windows(2).any(|w| w == b"\n\n")
        {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            request.extend_from_slice(&chunk[..n]);
            if request.len() > MAX_REQUEST_BYTES {
                break;
            }
        }
        Ok(Some(request))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, reading)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))?
}

async fn answer(
    mut stream: TcpStream,
    handle: &PrometheusHandle,
    route: Option<Route>,
) -> std::io::Result<()> {
    let Some(request) = read_head(&mut stream).await? else {
        return Ok(());
    };
    let line = request.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    // HEAD (RFC 9110 9.3.2: `curl -I`, `wget --spider`) is answered as GET with the body
    // dropped by the stream, so every answer below is a HEAD answer too.
    let head = method == "HEAD";
    let method = if head { "GET" } else { method };
    let mut stream = Deadlined::new(stream, WRITE_TIMEOUT);
    if head {
        stream.drop_body();
    }
    if let Some(route) = route.filter(|r| method == "GET" && (r.serves)(path)) {
        let get = Get {
            path: path.to_string(),
            authorization: header(&request, "authorization"),
            http_1_0: !reads_chunks(words.next()),
            head,
        };
        return (route.respond)(get, stream).await;
    }
    let (status, content_type, body) =
        if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
            (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                render(handle),
            )
        } else {
            (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "GET /metrics\n".to_string(),
            )
        };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// True when a request line's `version` (`HTTP/1.1`) is HTTP/1.1 or later, whose clients
/// read chunked bodies; HTTP/1.0, none (0.9) and nonsense are not.
fn reads_chunks(version: Option<&str>) -> bool {
    let number = |n: &str| n.parse::<u32>().ok();
    version
        .and_then(|v| v.strip_prefix("HTTP/"))
        .and_then(|v| v.split_once('.'))
        .and_then(|(major, minor)| Some((number(major)?, number(minor)?)))
        .is_some_and(|version| version >= (1, 1))
}

/// The value of header `name` (lower case) in a request head.
fn header(request: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(request)
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
}

/// A writer whose every write, flush and shutdown must make progress within a deadline: a
/// client that stops reading ends its answer with a TimedOut error instead of holding its
/// task and socket until the daemon stops.
pub(crate) struct Deadlined<S> {
    inner: S,
    limit: Duration,
    /// Armed while an operation waits; reset whenever one makes progress.
    timer: Pin<Box<Sleep>>,
    waiting: bool,
    /// For a HEAD request: how much of the head's end (`\r\n\r\n`) the bytes written so far
    /// end with; once all 4, later bytes (the body) are taken and not sent. None: all are sent.
    head_end: Option<usize>,
}

impl<S> Deadlined<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Deadlined {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            waiting: false,
            head_end: None,
        }
    }

    /// Sends what is written up to the end of the response head, and drops the body: the
    /// answer to a HEAD request.
    fn drop_body(&mut self) {
        self.head_end = Some(0);
    }

    /// Reads `bytes` on from `matched` bytes of the head's end (`\r\n\r\n`) matched: how many
    /// of them are still the head (up to and including its end; none once it was whole), and
    /// how much of the end is matched after those.
    fn advance(mut matched: usize, bytes: &[u8]) -> (usize, usize) {
        const END: &[u8] = b"\r\n\r\n";
        for (i, &b) in bytes.iter().enumerate() {
            if matched == END.len() {
                return (i, matched);
            }
            matched = if b == END[matched] {
                matched + 1
            } else {
                usize::from(b == END[0])
            };
        }
        (bytes.len(), matched)
    }

    /// How many bytes of `buf` are still the response head: up to and including its end, all
    /// of them without a HEAD request, none once the head was sent.
    fn head_bytes(&self, buf: &[u8]) -> usize {
        self.head_end
            .map_or(buf.len(), |matched| Self::advance(matched, buf).0)
    }

    /// Notes that `written` went out (for a HEAD answer, how much of the head's end it holds).
    fn wrote(&mut self, written: &[u8]) {
        self.head_end = self
            .head_end
            .map(|matched| Self::advance(matched, written).1);
    }

    /// Passes a ready result through (disarming the timer); a pending one arms the timer and
    /// fails once it fires.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.waiting = false;
            return poll;
        }
        if !self.waiting {
            self.waiting = true;
            self.timer.as_mut().reset(Instant::now() + self.limit);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Deadlined<TcpStream> {
    /// Closes the connection with a reset instead of a close: for an answer cut after its
    /// head. A body delimited by the connection's close (the feed to HTTP/1.0) would otherwise
    /// end with an ordinary FIN, and its client could not tell a cut list from a whole one.
    pub(crate) fn reset(self) {
        self.reset_on_close(true);
    }

    /// Makes the connection's close a reset (`on`) or an ordinary close again: a body whose
    /// end is the close is armed once its head is sent and disarmed just before its last byte,
    /// so that however its answer stops in between (an error, its task dropped at shutdown, a
    /// panic) the client sees a reset, not a complete body.
    pub(crate) fn reset_on_close(&self, on: bool) {
        // SO_LINGER 0: the close that follows sends RST. If it cannot be set, the close is
        // ordinary (and the error is logged by the caller's answer).
        let _ = socket2::SockRef::from(&self.inner).set_linger(on.then_some(Duration::ZERO));
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let head = this.head_bytes(buf);
        if head == 0 && !buf.is_empty() {
            // The body of a HEAD answer: taken, not sent.
            return Poll::Ready(Ok(buf.len()));
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, &buf[..head]);
        let poll = this.watch(cx, poll);
        if let Poll::Ready(Ok(n)) = poll {
            this.wrote(&buf[..n]);
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_at_most_its_share_of_connections_and_them_back_when_closed() {
        let peers = Peers::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<Admitted> = (0..MAX_PER_PEER).map(|_| peers.admit(a).unwrap()).collect();
        assert!(peers.admit(a).is_none(), "one more than its share");
        let other = peers.admit(b);
        assert!(other.is_some(), "another address is still served");
        drop(held);
        assert!(
            peers.admit(a).is_some(),
            "closed connections are counted out"
        );
        drop(other);
        assert_eq!(
            peers.0.lock().unwrap().get(&b),
            None,
            "no entry kept for a gone peer"
        );
    }

    #[test]
    fn http_1_1_and_later_read_chunks() {
        for (version, chunks) in [
            (Some("HTTP/1.1"), true),
            (Some("HTTP/1.10"), true),
            (Some("HTTP/2.0"), true),
            (Some("HTTP/1.0"), false),
            (Some("HTTP/0.9"), false),
            (None, false),
            (Some("HTTP/1"), false),
            (Some("http/1.1"), false),
            (Some("HTTP/x.y"), false),
        ] {
            assert_eq!(reads_chunks(version), chunks, "{version:?}");
        }
    }

    /// HEAD gets GET's status and headers (`Content-Length` included) and no body, for
    /// /metrics and for an unknown path alike: `curl -I` and `wget --spider` see what is there.
    #[tokio::test]
    async fn head_gets_the_head_of_get_and_no_body() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, handle, None, shutdown.clone()));
        let ask = |request: &'static str| async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(request.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            String::from_utf8(got).unwrap()
        };
        let get = ask("GET /metrics HTTP/1.1\r\n\r\n").await;
        let head = ask("HEAD /metrics HTTP/1.1\r\n\r\n").await;
        let (get_head, get_body) = get.split_once("\r\n\r\n").unwrap();
        assert!(get_head.starts_with("HTTP/1.1 200 OK"), "{get}");
        assert_eq!(head, format!("{get_head}\r\n\r\n"), "GET's head, no body");
        assert!(get_head.contains(&format!("Content-Length: {}", get_body.len())));
        let missing = ask("HEAD /nowhere HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404 Not Found"), "{missing}");
        assert!(missing.ends_with("\r\n\r\n"), "no body: {missing:?}");
        shutdown.cancel();
    }

    /// A client dripping a byte at a time is cut at the deadline of the whole head, not kept
    /// alive read by read.
    #[tokio::test(start_paused = true)]
    async fn a_request_head_has_one_deadline_in_all() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let drip = tokio::spawn(async move {
            for byte in b"GET /metrics HTTP/1.1\r\n" {
                if client.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        // Each byte comes well within any per-read deadline: only one deadline for the whole
        // head can end it, and only a deadline says TimedOut.
        let error = read_head(&mut server).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        drip.abort();
        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut server).await.unwrap().unwrap();
        assert!(head.starts_with(b"GET /metrics"));
    }

    /// A client that stops reading ends the answer after the write deadline; one that reads,
    /// however slowly, keeps it going.
    #[tokio::test(start_paused = true)]
    async fn a_write_that_makes_no_progress_ends_at_its_deadline() {
        let (client, server) = tokio::io::duplex(16);
        let mut out = Deadlined::new(server, WRITE_TIMEOUT);
        let error = out.write_all(&[b'x'; 64]).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(16);
        let mut out = Deadlined::new(server, WRITE_TIMEOUT);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                tokio::time::sleep(WRITE_TIMEOUT / 2).await;
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        out.write_all(&[b'y'; 64]).await.unwrap();
        out.shutdown().await.unwrap();
        drop(out);
        assert_eq!(reader.await.unwrap(), vec![b'y'; 64]);
    }
}
