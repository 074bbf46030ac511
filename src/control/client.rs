//! The CLI side of the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::proto::{Request, Response};

/// Why a command got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nobody listens on the socket.
    #[error("cannot reach the jailsink daemon at {path}: {os_error} (is it running? is this the socket of [control] in the config?)")]
    Unreachable {
        /// The socket path.
        path: String,
        /// What connect said.
        os_error: std::io::Error,
    },
    /// The daemon hung up or sent something unreadable.
    #[error("the daemon gave no valid answer: {0}")]
    BadAnswer(String),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
    /// The daemon said nothing within [`ANSWER_WAIT`] (it gives up on its own answer, and says
    /// so, before that).
    #[error("the daemon did not answer within {0}s (is it stuck? see its log); the request may or may not have run")]
    NoAnswer(u64),
    /// The daemon ended a `tail` stream: it is stopping, or the client read nothing for 10 s
    /// while an event waited (a paused pager or terminal) and was disconnected.
    #[error("the daemon ended the stream (it is stopping, or this tail read nothing for 10 s)")]
    Ended,
}

/// How long the CLI waits for an answer: longer than the daemon's own 60 s limit, so the
/// daemon's "no answer ... the request was not run" arrives first.
pub const ANSWER_WAIT: Duration = Duration::from_secs(70);

/// Sends one request and waits (up to [`ANSWER_WAIT`]) for its answer.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    call_within(socket, request, ANSWER_WAIT)
}

fn call_within(socket: &Path, request: &Request, wait: Duration) -> Result<Response, ClientError> {
    let unreachable = |os_error| ClientError::Unreachable {
        path: socket.display().to_string(),
        os_error,
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(wait)).map_err(unreachable)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    line.push('\n');
    // A refused peer is answered (and hung up on) before its request is read: a failed write
    // still leaves that answer to read.
    let sent = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    if let (Err(error), true) = (read, answer.is_empty()) {
        let timed_out = matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        );
        return Err(match sent {
            Err(os_error) => unreachable(os_error),
            Ok(()) if timed_out => ClientError::NoAnswer(wait.as_secs()),
            Ok(()) => ClientError::BadAnswer(error.to_string()),
        });
    }
    if answer.is_empty() {
        return Err(match sent {
            Err(os_error) => unreachable(os_error),
            Ok(()) => ClientError::BadAnswer("connection closed (permission denied?)".into()),
        });
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::BadAnswer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon that takes the request and never answers: the CLI says so plainly, not
    /// "Resource temporarily unavailable", and waits longer than the daemon's own 60 s.
    #[test]
    fn no_answer_is_said_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let held = std::thread::spawn(move || listener.accept().unwrap());
        let error = call_within(&path, &Request::Reload, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(error, ClientError::NoAnswer(_)), "{error}");
        assert!(error.to_string().contains("did not answer"), "{error}");
        assert!(ANSWER_WAIT > Duration::from_secs(60));
        drop(held.join());
    }
}
