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

use super::proto::{Request, Response, MAX_REQUEST_BYTES};

/// A slow or silent client is dropped after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for the daemon's answer before the server gives up on it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A request on its way to the daemon's supervisor, with where to put the answer.
pub(crate) struct Question {
    /// What was asked.
    pub request: Request,
    /// Where the answer goes.
    pub answer: oneshot::Sender<Response>,
}

/// Binds the socket: its directory made, a stale socket replaced, mode 0600, or 0660 and
/// owned by `group` when one is configured.
pub(crate) fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
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
        tokio::spawn(async move {
            if let Err(error) = answer(stream, group, questions).await {
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
) -> std::io::Result<()> {
    let permitted = allowed(&stream, group);
    let (read, mut write) = stream.into_split();
    let response = if !permitted {
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
                Ok(request) => ask(request, &questions).await,
            },
        }
    };
    let mut text = serde_json::to_string(&response)
        .unwrap_or_else(|_| r#"{"status":"error","message":"unencodable answer"}"#.into());
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

async fn ask(request: Request, questions: &mpsc::Sender<Question>) -> Response {
    let (tx, rx) = oneshot::channel();
    if questions
        .send(Question {
            request,
            answer: tx,
        })
        .await
        .is_err()
    {
        return Response::Error {
            message: "the daemon is shutting down".into(),
        };
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(response)) => response,
        _ => Response::Error {
            message: "no answer from the daemon".into(),
        },
    }
}
