//! The CLI's side of `why` and `tail`: the `why` answer as text, and the `tail` stream read
//! line by line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::client::ClientError;
use super::proto::{EvidenceLine, Request, Response, TailEvent, WhyBan, WhyJail};
use crate::evidence::tail::printable;

/// `why ADDR` as text: per jail, failures counted now with their lines, active bans and past
/// bans with their evidence.
pub fn show_why(addr: &str, jails: &[WhyJail]) -> String {
    let mut out = String::new();
    if jails.is_empty() {
        out.push_str(&format!(
            "{addr}: no failures counted, no active ban and no ban in the history\n"
        ));
        return out;
    }
    for j in jails {
        out.push_str(&format!("[{}] {addr}", j.jail));
        if j.counted_as != addr {
            out.push_str(&format!(" (counted as {})", j.counted_as));
        }
        out.push('\n');
        out.push_str(&format!("  failures now: {}/{}\n", j.failures, j.maxretry));
        for line in &j.recent {
            out.push_str(&show_line(line));
        }
        for ban in &j.active {
            let until = ban.expires_at.as_deref().unwrap_or("permanent");
            let head = format!(
                "banned: {} since {} until {until} (ban #{}",
                ban.ip,
                ban.banned_at,
                ban.ban_count.unwrap_or_default()
            );
            show_ban(&mut out, &head, ban);
        }
        for ban in &j.past {
            let bantime = ban.bantime.as_deref().unwrap_or("?");
            let head = format!("past ban: {} at {} for {bantime} (", ban.ip, ban.banned_at);
            show_ban(&mut out, &head, ban);
        }
    }
    out
}

/// One ban: `head`, its failures and hosts, then its evidence lines.
fn show_ban(out: &mut String, head: &str, ban: &WhyBan) {
    let sep = if head.ends_with('(') { "" } else { ", " };
    out.push_str(&format!("  {head}{sep}{} failures", ban.failures));
    if !ban.hosts.is_empty() {
        out.push_str(&format!(", from {}", printable(&ban.hosts.join(", "))));
    }
    out.push_str(")\n");
    for line in &ban.evidence {
        out.push_str(&show_line(line));
    }
}

fn show_line(line: &EvidenceLine) -> String {
    let repeat = if line.count > 1 {
        format!(" (x{})", line.count)
    } else {
        String::new()
    };
    format!(
        "    {} {} {}: {}{repeat}\n",
        line.at,
        printable(line.host.as_deref().unwrap_or("-")),
        printable(line.program.as_deref().unwrap_or("-")),
        printable(&line.message)
    )
}

/// Streams `tail` (of `jail`, or every jail) from the daemon at `socket`, calling `each` for
/// every event until `each` returns false (Ok) or the daemon ends the stream
/// ([`ClientError::Ended`]).
pub fn tail(
    socket: &Path,
    jail: Option<String>,
    mut each: impl FnMut(&TailEvent) -> bool,
) -> Result<(), ClientError> {
    let unreachable = |os_error| ClientError::Unreachable {
        path: socket.display().to_string(),
        os_error,
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    let mut request = serde_json::to_string(&Request::Tail { jail })
        .map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    request.push('\n');
    stream.write_all(request.as_bytes()).map_err(unreachable)?;
    let mut lines = BufReader::new(stream).lines();
    let bad = |e: String| ClientError::BadAnswer(e);
    let first = lines
        .next()
        .ok_or_else(|| bad("connection closed (permission denied?)".into()))?
        .map_err(|e| bad(e.to_string()))?;
    match serde_json::from_str::<Response>(&first).map_err(|e| bad(e.to_string()))? {
        Response::Error { message } => return Err(ClientError::Refused(message)),
        Response::Ok { .. } => {}
    }
    for line in lines {
        let line = line.map_err(|e| bad(e.to_string()))?;
        let event: TailEvent = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        if !each(&event) {
            return Ok(());
        }
    }
    Err(ClientError::Ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream the daemon ends (it stops, or disconnected this client as stalled) is
    /// reported, not taken for a normal end; events before it are all handed over.
    #[test]
    fn a_stream_the_daemon_ends_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let daemon = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&stream).read_line(&mut request).unwrap();
            let event =
                serde_json::to_string(&TailEvent::new(crate::evidence::tail::Kind::Unban, "sshd"))
                    .unwrap();
            let ok = serde_json::to_string(&Response::Ok {
                reply: super::super::proto::Reply::Done {
                    message: "tailing".into(),
                },
            })
            .unwrap();
            write!(stream, "{ok}\n{event}\n").unwrap();
        });
        let mut seen = 0;
        let ended = tail(&path, None, |_| {
            seen += 1;
            true
        });
        daemon.join().unwrap();
        assert!(matches!(ended, Err(ClientError::Ended)), "{ended:?}");
        assert_eq!(seen, 1);
    }

    /// `why` prints stored evidence, written by whoever reached the sink: its escape
    /// sequences are shown escaped, not run by the operator's terminal.
    #[test]
    fn why_escapes_control_characters() {
        let line = EvidenceLine {
            at: "2026-12-07 07:00:00".into(),
            host: Some("web\u{1b}]0;x\u{7}".into()),
            program: Some("sshd".into()),
            message: "Failed password for r\u{f6}\u{f6}t \u{1b}[2J".into(),
            count: 1,
        };
        let text = show_line(&line);
        assert_eq!(
            text,
            "    2026-12-07 07:00:00 web\\x1b]0;x\\x07 sshd: Failed password for r\u{f6}\u{f6}t \\x1b[2J\n"
        );
    }
}
