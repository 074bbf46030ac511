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
}

/// Sends one request and waits (up to a minute) for its answer.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let unreachable = |os_error| ClientError::Unreachable {
        path: socket.display().to_string(),
        os_error,
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(unreachable)?;
    let mut line =
        serde_json::to_string(request).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    line.push('\n');
    // A refused peer is answered (and hung up on) before its request is read: a failed write
    // still leaves that answer to read.
    let sent = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(stream).read_line(&mut answer);
    if let (Err(error), true) = (read, answer.is_empty()) {
        return Err(match sent {
            Err(os_error) => unreachable(os_error),
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
