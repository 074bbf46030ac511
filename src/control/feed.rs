//! The ban feed, `GET /bans` (one address or network per line, what routers' URL tables and
//! `ipset restore` scripts read) and `GET /bans.json`, served on the metrics listener. The bans
//! come from the jail task page by page over its bounded command channel, and each page is
//! written as one HTTP chunk, so 100,000 bans never become one string and a slow reader only
//! slows itself. An HTTP/1.0 client, which may not read chunks, gets the same pages as a body
//! that ends when the connection closes.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::translate::entry;
use crate::address::show_target;
use crate::jail::query::{Answer, Query};
use crate::jail::set::Command;

/// Bans asked of the jail task at a time (and written as one chunk).
const PAGE: usize = 1_000;

/// What the feed needs: the way to the jail task and the optional bearer token.
#[derive(Clone)]
pub(crate) struct Feed {
    commands: mpsc::Sender<Command>,
    token: Option<String>,
    node: String,
}

/// The two shapes of the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

impl Feed {
    /// A feed over the jail task's command channel; with `token`, requests must carry
    /// `Authorization: Bearer TOKEN`; `node` (this node's fleet name) is each ban's origin.
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        token: Option<String>,
        node: String,
    ) -> Self {
        Feed {
            commands,
            token,
            node,
        }
    }

    /// The feed as a route of the metrics listener.
    pub(crate) fn route(self) -> crate::metrics::Route {
        crate::metrics::Route {
            serves: Feed::serves,
            respond: std::sync::Arc::new(move |get, mut stream| {
                let feed = self.clone();
                Box::pin(async move {
                    let answered = feed.respond(&get, &mut stream).await;
                    if answered.is_err() {
                        // Cut short (the jail task gone, a write stuck past its deadline): a
                        // reset, so that no client takes part of the list for all of it.
                        stream.reset();
                    }
                    answered
                })
            }),
        }
    }

    /// Whether `path` (with its query) is the feed's.
    pub(crate) fn serves(path: &str) -> bool {
        let route = path.split('?').next().unwrap_or_default();
        route == "/bans" || route == "/bans.json"
    }

    /// Answers one GET of a path [`Feed::serves`]: chunked to HTTP/1.1, delimited by the
    /// connection's close to HTTP/1.0.
    pub(crate) async fn respond(
        &self,
        get: &crate::metrics::Get,
        out: &mut crate::metrics::Answering,
    ) -> std::io::Result<()> {
        let path = get.path.as_str();
        let chunked = !get.http_1_0;
        if let Some(token) = &self.token {
            let given = get
                .authorization
                .as_deref()
                .and_then(|v| v.trim().strip_prefix("Bearer "))
                .map(str::trim);
            if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
                return plain(
                    out,
                    "401 Unauthorized",
                    "WWW-Authenticate: Bearer\r\n",
                    "a bearer token is required ([metrics] bans_token)\n",
                )
                .await;
            }
        }
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let format = if route == "/bans.json" {
            Format::Json
        } else {
            Format::Text
        };
        let jail = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("jail="))
            .map(str::to_string);
        let mut after = None;
        let mut first = true;
        loop {
            let page = match self.page(jail.clone(), after.clone()).await {
                Ok(page) => page,
                // Refused before anything was sent: an unknown jail, or the daemon stopping.
                Err(message) if first => {
                    return plain(out, "404 Not Found", "", &format!("{message}\n")).await
                }
                // The body is cut: the caller resets the connection, so an HTTP/1.0 client,
                // whose body ends at the close, sees an error, not a shorter list (and an
                // HTTP/1.1 one a missing last chunk).
                Err(message) => {
                    return Err(std::io::Error::other(format!("bans feed cut: {message}")))
                }
            };
            if first {
                let content_type = match format {
                    Format::Text => "text/plain; charset=utf-8",
                    Format::Json => "application/json",
                };
                // HTTP/1.0 has no chunks (RFC 9112 7.1: never sent to it): its body ends where
                // the connection closes.
                let encoding = if chunked {
                    "Transfer-Encoding: chunked\r\n"
                } else {
                    ""
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{encoding}Cache-Control: no-store\r\nConnection: close\r\n\r\n"
                );
                out.write_all(head.as_bytes()).await?;
                if get.head {
                    // HEAD: the status and headers a GET gets, which the first page decided.
                    return out.shutdown().await;
                }
                // From here until the body's end, however the answer stops, it ends in a reset.
                out.reset_on_close(true);
            }
            let last = page.len() < PAGE;
            after = page.last().map(|b| (b.jail.clone(), b.target));
            let mut text = String::new();
            for ban in page {
                match format {
                    Format::Text => {
                        text.push_str(&show_target(ban.target));
                        text.push('\n');
                    }
                    Format::Json => {
                        text.push(if first && text.is_empty() { '[' } else { ',' });
                        text.push_str(
                            &serde_json::to_string(&entry(ban, &self.node)).unwrap_or_default(),
                        );
                    }
                }
            }
            if format == Format::Json && last {
                if first && text.is_empty() {
                    text.push('[');
                }
                text.push_str("]\n");
            }
            first = false;
            if !chunked {
                out.write_all(text.as_bytes()).await?;
                if last {
                    out.reset_on_close(false);
                    return out.shutdown().await;
                }
                continue;
            }
            // An empty text is no chunk: the empty chunk ends the body, once.
            if !text.is_empty() {
                chunk(out, &text).await?;
            }
            if last {
                chunk(out, "").await?;
                out.reset_on_close(false);
                return out.shutdown().await;
            }
        }
    }

    /// One page from the jail task, through its bounded command channel.
    async fn page(
        &self,
        jail: Option<String>,
        after: Option<(String, ipnetwork::IpNetwork)>,
    ) -> Result<Vec<crate::jail::query::BanInfo>, String> {
        let (tx, rx) = oneshot::channel();
        let query = Query::BanPage {
            jail,
            after,
            limit: PAGE,
        };
        self.commands
            .send(Command::Query(query, tx))
            .await
            .map_err(|_| "the daemon is shutting down".to_string())?;
        match rx.await {
            Ok(Ok(Answer::Bans(bans))) => Ok(bans),
            Ok(Err(refused)) => Err(refused.0),
            Ok(Ok(_)) | Err(_) => Err("the jail task gave no bans".into()),
        }
    }
}

/// Compares a token in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One HTTP/1.1 chunk; the empty one ends the body.
async fn chunk<W: AsyncWrite + Unpin>(out: &mut W, text: &str) -> std::io::Result<()> {
    if text.is_empty() {
        return out.write_all(b"0\r\n\r\n").await;
    }
    out.write_all(format!("{:x}\r\n", text.len()).as_bytes())
        .await?;
    out.write_all(text.as_bytes()).await?;
    out.write_all(b"\r\n").await
}

/// A short plain answer with its status.
async fn plain<W: AsyncWrite + Unpin>(
    out: &mut W,
    status: &str,
    extra_headers: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes()).await?;
    out.write_all(body.as_bytes()).await?;
    out.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first ban of `target` in `jail` at the epoch, permanent: what the test jail tasks
    /// answer page queries with.
    fn ban_info(jail: &str, target: ipnetwork::IpNetwork) -> crate::jail::query::BanInfo {
        crate::jail::query::BanInfo {
            jail: jail.into(),
            target,
            banned_at: std::time::SystemTime::UNIX_EPOCH,
            expires_at: None,
            ban_count: 1,
            hosts: Vec::new(),
        }
    }

    /// A metrics listener on 127.0.0.1 serving the feed; the receiver is the jail task's end,
    /// for the test to answer page queries on.
    async fn serve_feed() -> (
        std::net::SocketAddr,
        tokio_util::sync::CancellationToken,
        mpsc::Receiver<Command>,
    ) {
        let (commands, jail_task) = mpsc::channel(4);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let route = Feed::new(commands, None, "node".into()).route();
        tokio::spawn(crate::metrics::serve(
            listener,
            handle,
            Some(route),
            shutdown.clone(),
        ));
        (addr, shutdown, jail_task)
    }

    /// A metrics listener on 127.0.0.1 serving the feed, over a jail task that answers each
    /// page query with `pages` full pages of bans and then is gone (or, with `then_hang`, never
    /// answers again); the task's handle gives the page queries it saw.
    async fn feed_over(
        pages: usize,
        then_hang: bool,
    ) -> (
        std::net::SocketAddr,
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<usize>,
    ) {
        let (addr, shutdown, mut jail_task) = serve_feed().await;
        let task = tokio::spawn(async move {
            let mut asked = 0;
            while let Some(Command::Query(Query::BanPage { .. }, answer)) = jail_task.recv().await {
                asked += 1;
                if asked > pages {
                    if then_hang {
                        let _held = (answer, jail_task);
                        std::future::pending::<()>().await;
                    }
                    break;
                }
                let page = (0..PAGE as u32)
                    .map(|i| {
                        ban_info(
                            "sshd",
                            ipnetwork::IpNetwork::from(std::net::IpAddr::from(
                                std::net::Ipv4Addr::from(0xC000_0200 + i),
                            )),
                        )
                    })
                    .collect();
                let _ = answer.send(Ok(Answer::Bans(page)));
            }
            asked
        });
        (addr, shutdown, task)
    }

    /// Sends `request` and reads the answer to its end: what was read, and how it ended.
    async fn ask(addr: std::net::SocketAddr, request: &str) -> (String, std::io::Result<usize>) {
        use tokio::io::AsyncReadExt;
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let end = client.read_to_end(&mut got).await;
        (String::from_utf8_lossy(&got).into_owned(), end)
    }

    /// A feed cut after its first page (the jail task gone) ends in a reset, so an HTTP/1.0
    /// client, whose body would otherwise end at an ordinary close, sees an error and not a
    /// shorter list.
    #[tokio::test]
    async fn a_feed_cut_after_its_head_ends_with_a_reset() {
        let (addr, shutdown, _) = feed_over(1, false).await;
        let (text, end) = ask(addr, "GET /bans HTTP/1.0\r\n\r\n").await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:.200}");
        let error = end.expect_err("a cut feed must not end like a whole one");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
        shutdown.cancel();
    }

    /// A feed whose answer is dropped mid-body (the daemon stopping: its runtime drops the
    /// task before the write deadline) still ends in a reset, not in an ordinary close an
    /// HTTP/1.0 client would take for the end of the list (review-lead29 finding 1).
    #[test]
    fn a_feed_dropped_mid_body_at_shutdown_ends_with_a_reset() {
        use std::io::{Read, Write};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr, _shutdown, _) = runtime.block_on(feed_over(1, true));
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.write_all(b"GET /bans HTTP/1.0\r\n\r\n").unwrap();
        // The head and the whole first page: the answer then waits for a second page that
        // never comes.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.iter().filter(|&&b| b == b'\n').count() < 5 + PAGE {
            let n = client.read(&mut buf).unwrap();
            assert!(n > 0, "the feed ended before its first page");
            got.extend_from_slice(&buf[..n]);
        }
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        let end = client.read(&mut buf);
        let error = end.expect_err("a feed dropped mid-body must not end like a whole one");
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    }

    /// HEAD /bans gets the head a GET gets and no body, and reads no page past the first (the
    /// one that decides between 200 and 404).
    #[tokio::test]
    async fn head_of_the_feed_is_its_head_alone() {
        let (addr, shutdown, asked) = feed_over(usize::MAX, false).await;
        let (text, end) = ask(addr, "HEAD /bans HTTP/1.1\r\n\r\n").await;
        end.unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "no body: {text:?}");
        shutdown.cancel();
        drop(shutdown);
        assert_eq!(asked.await.unwrap(), 1, "one page asked");
    }

    /// A metrics listener serving the feed over a jail task holding `bans` (jail, target),
    /// which answers each page query as the daemon's does ([`crate::jail::page`]): in (jail,
    /// target) order after the cursor, at most the page's limit.
    async fn feed_of(
        mut bans: Vec<(String, ipnetwork::IpNetwork)>,
    ) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
        bans.sort();
        let (addr, shutdown, mut jail_task) = serve_feed().await;
        tokio::spawn(async move {
            while let Some(Command::Query(Query::BanPage { after, limit, .. }, answer)) =
                jail_task.recv().await
            {
                let page = bans
                    .iter()
                    .filter(|b| after.as_ref().is_none_or(|a| *b > a))
                    .take(limit)
                    .map(|(jail, target)| ban_info(jail, *target))
                    .collect();
                let _ = answer.send(Ok(Answer::Bans(page)));
            }
        });
        (addr, shutdown)
    }

    /// The body of a chunked answer, checked to end with the empty chunk.
    fn unchunked(mut body: &str) -> String {
        let mut out = String::new();
        loop {
            let (size, rest) = body.split_once("\r\n").expect("a chunk size");
            let size = usize::from_str_radix(size, 16).expect("hex size");
            if size == 0 {
                assert_eq!(rest, "\r\n", "nothing after the last chunk");
                return out;
            }
            out.push_str(&rest[..size]);
            body = rest[size..].strip_prefix("\r\n").expect("chunk end");
        }
    }

    /// A feed of exactly one or two pages of bans (the page size, 1,000, and twice it, over
    /// two jails with a page boundary inside the second): the last page asked is empty. Over
    /// HTTP/1.0 (the body ends at the close) and HTTP/1.1 (chunks), as text and as JSON, the
    /// body holds every ban once, and the connection closes normally (no reset: whole).
    #[tokio::test]
    async fn a_feed_of_an_exact_multiple_of_the_page_is_whole_once_and_ends_normally() {
        for n in [PAGE, 2 * PAGE] {
            let bans: Vec<(String, ipnetwork::IpNetwork)> = (0..n as u32)
                .map(|i| {
                    let jail = if i < 600 { "a" } else { "b" };
                    let ip = std::net::Ipv4Addr::from(0xC000_0000 + i * 7);
                    (jail.to_string(), std::net::IpAddr::from(ip).into())
                })
                .collect();
            let (addr, shutdown) = feed_of(bans.clone()).await;
            let want: std::collections::BTreeSet<String> =
                bans.iter().map(|(_, t)| show_target(*t)).collect();
            assert_eq!(want.len(), n);
            for (path, version) in [
                ("/bans", "1.0"),
                ("/bans", "1.1"),
                ("/bans.json", "1.0"),
                ("/bans.json", "1.1"),
            ] {
                let (text, end) = ask(addr, &format!("GET {path} HTTP/{version}\r\n\r\n")).await;
                let read = end.unwrap_or_else(|e| panic!("{path} HTTP/{version}: {e}"));
                assert_eq!(read, text.len());
                let (head, body) = text.split_once("\r\n\r\n").expect("a head");
                assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
                let body = if version == "1.1" {
                    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
                    unchunked(body)
                } else {
                    assert!(!head.contains("Transfer-Encoding"), "{head}");
                    body.to_string()
                };
                let got: Vec<String> = if path == "/bans" {
                    assert!(body.ends_with('\n'), "{path} HTTP/{version}");
                    body.lines().map(str::to_string).collect()
                } else {
                    let entries: Vec<serde_json::Value> = serde_json::from_str(&body)
                        .unwrap_or_else(|e| panic!("{path} HTTP/{version}: {e}"));
                    entries
                        .iter()
                        .map(|e| e["ip"].as_str().expect("ip").to_string())
                        .collect()
                };
                assert_eq!(got.len(), n, "{path} HTTP/{version}: every ban once");
                let unique: std::collections::BTreeSet<String> = got.into_iter().collect();
                assert_eq!(unique, want, "{path} HTTP/{version}");
            }
            shutdown.cancel();
        }
    }

    #[test]
    fn routes_and_tokens() {
        assert!(Feed::serves("/bans"));
        assert!(Feed::serves("/bans.json?jail=sshd"));
        assert!(!Feed::serves("/bansx"));
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"s3cret", b"s3cre"));
    }
}
