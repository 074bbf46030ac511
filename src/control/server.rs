//! The daemon side of the control socket: mode 0600 (0660 with a group), peer credentials
//! checked on every connection, one request per connection, malformed input answered with an
//! error, never a panic.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::proto::{Reply, Request, Response, TailEvent, MAX_REQUEST_BYTES};
use crate::evidence::tail::{Kind, Next, Watch};

/// A slow or silent client is dropped after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may take to be read by its client before the server drops it.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client waits for the daemon's answer before the server gives up on it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `tail` event may wait for its client to read before the client counts as
/// stalled and is disconnected: a stalled client's watch would otherwise keep intake in its
/// watched (slower) mode until the daemon stops.
const TAIL_SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// `tail` clients served at once; one more is refused.
pub(crate) const MAX_TAILS: usize = 16;

/// A request on its way to the daemon's supervisor, with where to put the answer.
pub(crate) struct Question {
    /// What was asked.
    pub request: Request,
    /// Where the answer goes.
    pub answer: oneshot::Sender<Response>,
}

impl Question {
    /// True when nobody waits for the answer any more: the client was already told "no answer
    /// from the daemon" (or the daemon is shutting down), so the supervisor must not run it (a
    /// `ban` or `reload` happening after the operator was told it failed).
    pub(crate) fn abandoned(&self) -> bool {
        self.answer.is_closed()
    }
}

/// Binds the socket: its directory made, a stale socket replaced, mode 0600, or 0660 and
/// owned by `group` when one is configured. A socket another daemon still serves is an error,
/// not taken over: the second daemon would delete it when it stops, and leave the first one
/// running with no way to reach it.
pub(crate) fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "{} is served by another jailsink (or another process)",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(listener)
}

/// Serves the socket until `shutdown`.
pub(crate) async fn serve(
    listener: UnixListener,
    group: Option<u32>,
    questions: mpsc::Sender<Question>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let questions = questions.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = answer(stream, group, questions, shutdown).await {
                tracing::debug!(%error, "control connection failed");
            }
        });
    }
}

/// root, the daemon's own user, or a member of the configured group.
fn allowed(stream: &UnixStream, group: Option<u32>) -> bool {
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    if cred.uid() == 0 || cred.uid() == own {
        return true;
    }
    let Some(gid) = group else {
        return false;
    };
    cred.gid() == gid
        || cred
            .pid()
            .is_some_and(|pid| supplementary_groups(pid).contains(&gid))
}

/// The peer process's supplementary groups, from /proc.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
        })
        .unwrap_or_default()
}

async fn answer(
    stream: UnixStream,
    group: Option<u32>,
    questions: mpsc::Sender<Question>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permitted = allowed(&stream, group);
    let (read, mut write) = stream.into_split();
    let response = if shutdown.is_cancelled() {
        shutting_down()
    } else if !permitted {
        tracing::warn!("control request refused: peer is not root and not in the control group");
        Response::Error {
            message: "permission denied: root or the [control] group only".into(),
        }
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES as u64 + 1));
        match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
            Err(_) => Response::Error {
                message: "request timed out".into(),
            },
            Ok(Err(error)) => Response::Error {
                message: format!("cannot read request: {error}"),
            },
            Ok(Ok(_)) if line.len() > MAX_REQUEST_BYTES => Response::Error {
                message: "request too large".into(),
            },
            Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                Err(error) => Response::Error {
                    message: format!("malformed request: {error}"),
                },
                Ok(Request::Tail { jail }) => {
                    let read = reader.into_inner().into_inner();
                    return tail(read, write, jail, &questions, shutdown).await;
                }
                Ok(request) => ask(request, &questions, &shutdown).await,
            },
        }
    };
    let mut text = serde_json::to_string(&response)
        .unwrap_or_else(|_| r#"{"status":"error","message":"unencodable answer"}"#.into());
    text.push('\n');
    send_answer(&mut write, text.as_bytes(), SEND_TIMEOUT).await
}

/// Writes the answer and closes the stream, giving up after `timeout`: a client that never
/// reads would otherwise pin this task and the answer (MBs for 100,000 bans) until the daemon
/// stops.
async fn send_answer(
    write: &mut (impl AsyncWriteExt + Unpin),
    answer: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    let sent = async {
        write.write_all(answer).await?;
        write.shutdown().await
    };
    tokio::time::timeout(timeout, sent)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read its answer",
            ))
        })
}

/// Streams `tail` events (of `jail`, or all) to the client until it hangs up or the daemon
/// stops: first an `ok` response once watching has begun (or an error for an unknown jail),
/// then one JSON event per line. A client that reads too slowly loses the oldest events and is
/// told how many in a `dropped` event; the daemon never waits for it. A client that reads
/// nothing for [`TAIL_SEND_TIMEOUT`] while an event waits is disconnected (its watch ends),
/// and at most [`MAX_TAILS`] clients are served at once.
async fn tail(
    mut read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    jail: Option<String>,
    questions: &mpsc::Sender<Question>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Some(name) = &jail {
        let known = match ask(Request::Status { jail: None }, questions, &shutdown).await {
            Response::Ok {
                reply: Reply::Jails { jails },
            } => jails.contains(name),
            _ => false,
        };
        if !known {
            let refused = Response::Error {
                message: format!("no jail `{name}`"),
            };
            return send(&mut write, &refused).await;
        }
    }
    let Some(mut watch) = Watch::at_most(MAX_TAILS) else {
        let refused = Response::Error {
            message: format!("too many tail clients (at most {MAX_TAILS} at once)"),
        };
        return send(&mut write, &refused).await;
    };
    let started = Response::Ok {
        reply: Reply::Done {
            message: "tailing".into(),
        },
    };
    send(&mut write, &started).await?;
    let mut scratch = [0u8; 64];
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Anything the client sends, or its hanging up, ends the stream.
            _ = read.read(&mut scratch) => break,
            next = watch.next() => next,
        };
        let event = match next {
            Next::Event(event) => {
                let wanted = jail.as_deref().is_none_or(|j| event.jail == j);
                if !wanted {
                    continue;
                }
                event
            }
            Next::Dropped(count) => {
                let mut dropped = TailEvent::new(Kind::Dropped, "");
                dropped.dropped = Some(count);
                Arc::new(dropped)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            sent = send(&mut write, &*event) => sent?,
        }
    }
    write.shutdown().await
}

/// Writes `value` as one JSON line, giving up after [`TAIL_SEND_TIMEOUT`] (a `TimedOut`
/// error, which ends the stream).
async fn send<T: serde::Serialize>(write: &mut OwnedWriteHalf, value: &T) -> std::io::Result<()> {
    let mut text = serde_json::to_string(value)
        .unwrap_or_else(|_| r#"{"status":"error","message":"unencodable answer"}"#.into());
    text.push('\n');
    match tokio::time::timeout(TAIL_SEND_TIMEOUT, write.write_all(text.as_bytes())).await {
        Ok(sent) => sent,
        Err(_) => {
            tracing::warn!(
                "a tail client read nothing for {}s; disconnected",
                TAIL_SEND_TIMEOUT.as_secs()
            );
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the tail client stopped reading",
            ))
        }
    }
}

/// The answer to a request that arrives, or is still waiting, when the daemon stops.
fn shutting_down() -> Response {
    Response::Error {
        message: "the daemon is shutting down".into(),
    }
}

/// Hands `request` to the supervisor and waits for its answer, up to [`ANSWER_TIMEOUT`] or
/// until `shutdown`. Giving up drops the answer's receiver, so a question still queued is
/// [`Question::abandoned`] and the supervisor skips it.
async fn ask(
    request: Request,
    questions: &mpsc::Sender<Question>,
    shutdown: &CancellationToken,
) -> Response {
    let (tx, rx) = oneshot::channel();
    let question = Question {
        request,
        answer: tx,
    };
    let answered = async {
        questions
            .send(question)
            .await
            .map_err(|_| shutting_down())?;
        rx.await.map_err(|_| shutting_down())
    };
    let no_answer = || Response::Error {
        message: format!(
            "no answer from the daemon within {}s; the request is dropped unless it had begun",
            ANSWER_TIMEOUT.as_secs()
        ),
    };
    // The wait for a place in the queue counts too: a full queue is a daemon that does not answer.
    let answered = async {
        tokio::time::timeout(ANSWER_TIMEOUT, answered)
            .await
            .unwrap_or_else(|_| Err(no_answer()))
    };
    tokio::select! {
        _ = shutdown.cancelled() => shutting_down(),
        answer = answered => answer.unwrap_or_else(|refused| refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_nobody_reads_is_given_up() {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        // Far more than the socket buffers hold, and the peer never reads.
        let answer = vec![b'x'; 16 << 20];
        let sent = send_answer(&mut ours, &answer, Duration::from_millis(200)).await;
        assert_eq!(
            sent.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut)
        );
        drop(theirs);
    }

    /// A `tail` client that takes the first line and then never reads again (a paused pager, a
    /// stopped CLI) is disconnected once an event has waited TAIL_SEND_TIMEOUT for it: the stream
    /// ends, and with it its Watch, so intake leaves its watched mode. The clock is paused and
    /// advances only when every task waits.
    #[tokio::test(start_paused = true)]
    async fn a_tail_client_that_stops_reading_is_disconnected() {
        use crate::evidence::tail::{publish, Event};
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (read, write) = ours.into_split();
        let (questions, _asked) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            tail(read, write, None, &questions, CancellationToken::new()).await
        });
        let mut client = BufReader::new(theirs);
        let mut first = String::new();
        client.read_line(&mut first).await.unwrap();
        assert!(first.contains("tailing"), "{first}");
        // 4 MiB of events, far more than the socket buffers hold; the client reads no more.
        for _ in 0..512 {
            let mut event = Event::new(Kind::Missed, "never-read");
            event.message = Some("x".repeat(8192));
            // Other tests' watchers may see these: a count as large as any they expect.
            event.count = Some(u32::MAX);
            publish(event);
        }
        let ended = tokio::time::timeout(Duration::from_secs(3600), task)
            .await
            .expect("the stalled client is disconnected, not waited for until shutdown")
            .unwrap();
        // TimedOut comes only from the send deadline: the cut was the deadline's, not a closed
        // stream or an error.
        assert_eq!(
            ended.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut)
        );
        drop(client);
    }

    /// A `tail` client that falls more than the ring's QUEUE events behind and reads again
    /// before TAIL_SEND_TIMEOUT is told how many it lost, and its stream goes on. One outcome
    /// by construction: the runtime has one thread, so the tail task takes no event while the
    /// test publishes QUEUE + 10 of them in a row (the ring keeps the last QUEUE, so it has lost
    /// at least 10); and the clock is paused, so the 10 s cut cannot come first (it would end
    /// the stream). Other tests' events may come in between; ours are told apart by their
    /// jail, and their counts start near `u32::MAX` so that a test counting its own small ones
    /// never takes one of ours for its own. Every wait for an event has a (paused-clock)
    /// timeout: a lost event fails the test instead of hanging it.
    #[tokio::test(start_paused = true)]
    async fn a_tail_client_that_falls_behind_is_told_what_it_lost() {
        use crate::evidence::tail::{publish, Event, QUEUE};
        const JAIL: &str = "fell-behind";
        const BASE: u32 = u32::MAX - 2 * QUEUE as u32;
        let _ring = crate::evidence::tail::RING_TESTS.lock().await;
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (read, write) = ours.into_split();
        let (questions, _asked) = mpsc::channel(1);
        let _task = tokio::spawn(async move {
            tail(read, write, None, &questions, CancellationToken::new()).await
        });
        let mut client = BufReader::new(theirs);
        let mut line = String::new();
        client.read_line(&mut line).await.unwrap();
        assert!(line.contains("tailing"), "{line}");
        for n in 0..QUEUE + 10 {
            let mut event = Event::new(Kind::Missed, JAIL);
            event.count = Some(BASE + n as u32);
            publish(event);
        }
        let mut next = async || {
            line.clear();
            let read = client.read_line(&mut line);
            tokio::time::timeout(TAIL_SEND_TIMEOUT / 2, read)
                .await
                .expect("the tail stream stopped before the events expected")
                .unwrap();
            serde_json::from_str::<TailEvent>(&line).unwrap()
        };
        let dropped = loop {
            let event = next().await;
            assert_ne!(event.jail, JAIL, "an event of ours came before the report");
            if event.event == Kind::Dropped {
                break event;
            }
        };
        assert!(dropped.dropped.unwrap() >= 10, "{dropped:?}");
        // The stream goes on with the events the ring still held.
        let after = loop {
            let event = next().await;
            if event.jail == JAIL {
                break event;
            }
        };
        // The stream went on: had the 10 s cut come first, it would have ended, and `next`
        // would have failed on the empty read.
        assert!(after.count.unwrap() >= BASE + 10, "{after:?}");
    }

    /// A request that arrives during shutdown is refused at once, and one waiting when the
    /// daemon begins to stop is answered at once: neither waits 60 s for a supervisor that has
    /// stopped answering (a wait would end in "no answer", not "shutting down").
    #[tokio::test(start_paused = true)]
    async fn requests_during_shutdown_are_refused_at_once() {
        let (questions, mut asked) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let waiting = {
            let (questions, shutdown) = (questions.clone(), shutdown.clone());
            tokio::spawn(async move { ask(Request::Reload, &questions, &shutdown).await })
        };
        let queued = asked.recv().await.unwrap();
        shutdown.cancel();
        let message = |r: Response| match r {
            Response::Error { message } => message,
            other => panic!("{other:?}"),
        };
        assert!(message(waiting.await.unwrap()).contains("shutting down"));
        assert!(queued.abandoned(), "the supervisor would skip it");
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut line = serde_json::to_string(&Request::Reload).unwrap();
        line.push('\n');
        theirs.write_all(line.as_bytes()).await.unwrap();
        answer(ours, None, questions, shutdown).await.unwrap();
        // The answer comes before the request is read (then a reset, as for a refused peer).
        let mut reply = String::new();
        BufReader::new(theirs).read_line(&mut reply).await.unwrap();
        let reply: Response = serde_json::from_str(&reply).unwrap();
        assert!(message(reply).contains("shutting down"));
        assert!(
            asked.try_recv().is_err(),
            "nothing was queued during shutdown"
        );
    }

    /// A question whose asker gave up (60 s) is abandoned: the supervisor skips it instead of
    /// running a `ban` or `reload` the operator was told had failed. One still awaited is not.
    #[tokio::test(start_paused = true)]
    async fn a_question_nobody_waits_for_is_abandoned() {
        let (questions, mut asked) = mpsc::channel(4);
        let shutdown = CancellationToken::new();
        let asking = {
            let questions = questions.clone();
            tokio::spawn(async move { ask(Request::Reload, &questions, &shutdown).await })
        };
        let queued = asked.recv().await.unwrap();
        assert!(!queued.abandoned());
        let Response::Error { message } = asking.await.unwrap() else {
            panic!("no answer came")
        };
        assert!(message.contains("no answer"), "{message}");
        assert!(queued.abandoned());
        // A queue that stays full is no answer either.
        let (full, _never_read) = mpsc::channel(1);
        let (tx, _rx) = oneshot::channel();
        full.try_send(Question {
            request: Request::Reload,
            answer: tx,
        })
        .unwrap_or_else(|_| panic!("room for one"));
        let Response::Error { message } =
            ask(Request::Reload, &full, &CancellationToken::new()).await
        else {
            panic!("no answer came")
        };
        assert!(message.contains("no answer"), "{message}");
    }

    #[tokio::test]
    async fn a_served_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/jailsink.sock");
        let first = bind(&path, None).unwrap();
        let err = bind(&path, None).err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(path.exists(), "the served socket is left alone");
        // The first daemon gone without removing its socket: the next one takes the path.
        drop(first);
        let second = bind(&path, None).unwrap();
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(second);
    }
}
