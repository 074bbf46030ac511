//! Ban lists for `ban JAIL --file` and `unban JAIL --file`: read a file of addresses and networks
//! line by line and send it to the daemon in chunks, each one request under the control
//! socket's [`MAX_REQUEST_BYTES`], so a blocklist of any length keeps the daemon's bound.

use std::io::BufRead;
use std::path::Path;

use super::client::{call, ClientError};
use super::proto::{LineNote, ListLine, ListSummary, Reply, Request, Response, MAX_REQUEST_BYTES};

/// The JSON a chunk may take, well under the daemon's bound (room for the envelope).
const CHUNK_BYTES: usize = MAX_REQUEST_BYTES - 4096;
/// The longest line kept; anything longer is no address and is sent cut, to be reported
/// invalid by its number.
const MAX_LINE: usize = 256;

/// Why a list was not (fully) applied.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file could not be read; chunks sent before it were applied.
    #[error("{path}: {source}")]
    Read {
        /// The list file.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The daemon could not be reached or answered badly.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon refused a chunk (no such jail, a bad bantime).
    #[error("{0}")]
    Refused(String),
}

/// What to do with the list.
#[derive(Debug, Clone)]
pub enum ListOrder {
    /// Ban every line; `bantime` as for `ban`.
    Ban {
        /// `--bantime`, as typed.
        bantime: Option<String>,
    },
    /// Lift every line's ban.
    Unban,
}

/// Reads `path` (`-` is stdin) and applies it to `jail` chunk by chunk; returns the summed
/// summary, line numbers from 1.
pub fn apply_file(
    socket: &Path,
    jail: &str,
    path: &Path,
    order: &ListOrder,
) -> Result<ListSummary, ListError> {
    let read_error = |source| ListError::Read {
        path: path.display().to_string(),
        source,
    };
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).map_err(read_error)?,
        ))
    };
    let mut summary = ListSummary::default();
    let mut chunk = Vec::new();
    let mut size = 0;
    let mut send = |lines: Vec<ListLine>| -> Result<(), ListError> {
        let request = match order {
            ListOrder::Ban { bantime } => Request::BanList {
                jail: jail.to_string(),
                lines,
                bantime: bantime.clone(),
            },
            ListOrder::Unban => Request::UnbanList {
                jail: jail.to_string(),
                lines,
            },
        };
        match call(socket, &request)? {
            Response::Ok {
                reply: Reply::Applied(part),
            } => {
                summary.merge(part);
                Ok(())
            }
            Response::Ok { reply } => {
                Err(ListError::Refused(format!("unexpected answer: {reply:?}")))
            }
            Response::Error { message } => Err(ListError::Refused(message)),
        }
    };
    for line in Lines::new(reader) {
        let line = line.map_err(read_error)?;
        // Quotes and escapes at most double a line this short; 16 bytes hold the number.
        let cost = serde_json::to_string(&line.text).map_or(MAX_LINE * 2, |t| t.len()) + 32;
        if size + cost > CHUNK_BYTES && !chunk.is_empty() {
            send(std::mem::take(&mut chunk))?;
            size = 0;
        }
        size += cost;
        chunk.push(line);
    }
    if !chunk.is_empty() {
        send(chunk)?;
    }
    Ok(summary)
}

/// Most lines `render` lists one by one; `--json` lists them all.
const SHOWN_NOTES: usize = 100;

/// The summary for the operator: one line of counts, then each line that was not applied, by
/// number (the first [`SHOWN_NOTES`]).
pub fn render(jail: &str, order: &ListOrder, summary: &ListSummary) -> String {
    let (done, unchanged) = match order {
        ListOrder::Ban { .. } => ("banned", "already banned"),
        ListOrder::Unban => ("unbanned", "not banned"),
    };
    let total = summary.done as usize
        + summary.unchanged.len()
        + summary.ignored.len()
        + summary.invalid.len();
    let mut out = format!(
        "[{jail}] {done} {} of {total} lines; {unchanged} {}, ignored {}, invalid {}\n",
        summary.done,
        summary.unchanged.len(),
        summary.ignored.len(),
        summary.invalid.len()
    );
    let mut notes: Vec<(&str, &LineNote)> = summary
        .unchanged
        .iter()
        .map(|n| (unchanged, n))
        .chain(summary.ignored.iter().map(|n| ("ignored", n)))
        .chain(summary.invalid.iter().map(|n| ("invalid", n)))
        .collect();
    notes.sort_by_key(|(_, n)| n.line);
    for (kind, note) in notes.iter().take(SHOWN_NOTES) {
        out.push_str(&format!("line {}: {kind}: {}\n", note.line, note.reason));
    }
    if notes.len() > SHOWN_NOTES {
        out.push_str(&format!(
            "... and {} more lines not applied (--json lists them all)\n",
            notes.len() - SHOWN_NOTES
        ));
    }
    out
}

/// The lines of a list that say something: comments (`#` or `;` to the end of the line) and
/// blank lines are skipped, each line keeps its number, and a line is cut at [`MAX_LINE`]
/// bytes so a binary file cannot make one huge request.
struct Lines<R> {
    reader: R,
    number: u32,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            number: 0,
            buf: Vec::new(),
        }
    }

    /// Reads one line into `buf`, keeping at most MAX_LINE bytes; false at the end.
    fn read_line(&mut self) -> std::io::Result<bool> {
        self.buf.clear();
        let mut any = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Ok(any);
            }
            any = true;
            let (taken, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            let room = MAX_LINE.saturating_sub(self.buf.len());
            let keep = &available[..taken.min(room)];
            self.buf.extend_from_slice(keep);
            self.reader.consume(taken);
            if done {
                return Ok(true);
            }
        }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = std::io::Result<ListLine>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.read_line() {
                Err(e) => return Some(Err(e)),
                Ok(false) => return None,
                Ok(true) => {}
            }
            self.number = self.number.saturating_add(1);
            let text = String::from_utf8_lossy(&self.buf);
            let text = text.split(['#', ';']).next().unwrap_or_default().trim();
            if !text.is_empty() {
                return Some(Ok(ListLine {
                    line: self.number,
                    text: text.to_string(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_blank_lines_are_skipped_and_numbers_kept() {
        let text = "# blocklist\n\n192.0.2.1\n  198.51.100.0/24 ; SBL123\r\nnot an address # why\n2001:db8::/32";
        let lines: Vec<ListLine> = Lines::new(text.as_bytes()).map(|l| l.unwrap()).collect();
        let got: Vec<(u32, &str)> = lines.iter().map(|l| (l.line, l.text.as_str())).collect();
        assert_eq!(
            got,
            [
                (3, "192.0.2.1"),
                (4, "198.51.100.0/24"),
                (5, "not an address"),
                (6, "2001:db8::/32")
            ]
        );
    }

    #[test]
    fn a_huge_line_is_cut_and_the_next_keeps_its_number() {
        let text = format!("{}\n192.0.2.1\n", "9".repeat(1 << 20));
        let lines: Vec<ListLine> = Lines::new(text.as_bytes()).map(|l| l.unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].text.len(), MAX_LINE);
        assert_eq!((lines[1].line, lines[1].text.as_str()), (2, "192.0.2.1"));
    }
}
