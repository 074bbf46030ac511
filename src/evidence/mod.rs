//! Why a ban happened: the lines that decided it ([`Line`], cut to [`MAX_MESSAGE_BYTES`]) and
//! the live explain stream ([`tail`]). A leaf: the listener, the jail, the state, the actions
//! and the control socket all speak these types, and it imports none of them.

pub mod tail;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Longest message kept as evidence (bytes, cut back to a character boundary): enough for
/// every sshd or web server failure line, and a bound on what one ban can store.
pub const MAX_MESSAGE_BYTES: usize = 512;

/// What a failure brings from its message for the evidence: receipt time and the message's
/// program and text. Small: it travels with every failure from the listener to the jail, so
/// the program and the message share one allocation (a failure costs one `malloc` on the
/// listener's core and one `free` on the jail task's, not two of each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Wall-clock receipt time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The program (if any), then the message, cut at [`MAX_MESSAGE_BYTES`].
    text: Box<str>,
    /// How many bytes of `text` are the program; None when the message named none.
    program: Option<usize>,
}

impl Seen {
    /// Evidence of a message received at `at`.
    pub fn new(at: SystemTime, program: Option<&str>, message: &str) -> Self {
        let message = cut(message, MAX_MESSAGE_BYTES);
        let mut text = String::with_capacity(program.map_or(0, str::len) + message.len());
        text.push_str(program.unwrap_or_default());
        text.push_str(message);
        Seen {
            at_ms: millis(at),
            text: text.into_boxed_str(),
            program: program.map(str::len),
        }
    }

    /// The syslog program (tag), if any.
    pub fn program(&self) -> Option<&str> {
        self.program
            .map(|end| self.text.get(..end).unwrap_or_default())
    }

    /// The message, cut at [`MAX_MESSAGE_BYTES`].
    pub fn message(&self) -> &str {
        self.text
            .get(self.program.unwrap_or(0)..)
            .unwrap_or_default()
    }

    /// Bytes the program and the message take on the heap.
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }
}

/// One line that counted towards a ban, as stored in the history and shown by `why`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Receipt time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The syslog host name the line came from (the attacked server on a central sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The syslog program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The message (at most [`MAX_MESSAGE_BYTES`]).
    pub message: String,
    /// Failures it stood for (an rsyslog repeat summary stands for several).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The evidence of one ban, oldest line first; shared, since the state writer, the actions and
/// the jail's memory of the ban all hold it.
pub type Evidence = Arc<[Line]>;

/// The distinct host names of `lines`, in first-seen order.
pub fn hosts(lines: &[Line]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for host in lines.iter().filter_map(|l| l.host.as_deref()) {
        if !out.iter().any(|h| h == host) {
            out.push(host.to_string());
        }
    }
    out
}

/// `t` as milliseconds since the Unix epoch (0 before it).
pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The first `max` bytes of `text`, cut back to a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` made safe to paste into a shell command, quoted or not: characters a shell gives a
/// meaning (`$`, backquote, quotes, backslash, `;`, `&`, `|`, redirections, globs, control
/// characters, ...) become `_`; letters, digits, spaces and `.,:/@=+-_%^` stay, except a `-`
/// or `+` that starts a word, which becomes `_` too: unquoted, the words are arguments, and
/// an attacker's user name `-x proxy:3128 -T /etc/shadow` would be options to the program.
/// Attackers write these lines, so `<matches>` and `<hosts>` pass through this before any
/// template.
pub fn shell_safe(text: &str) -> String {
    let mut word_start = true;
    text.chars()
        .map(|c| {
            // Not `[` `]`: with `*` and `?` they make a glob (`/[e]tc/[s]hadow` would expand to
            // a file name in an unquoted `sh -c` argument).
            let kept = c.is_ascii_alphanumeric() || " .,:/@=+-_%^".contains(c);
            let option = word_start && (c == '-' || c == '+');
            word_start = c == ' ';
            if kept && !option {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("aéb", 3), "aé");
        let long = "é".repeat(400);
        let seen = Seen::new(UNIX_EPOCH, Some("sshd"), &long);
        assert!(seen.message().len() <= MAX_MESSAGE_BYTES);
        assert_eq!(seen.message().len(), 512);
        assert_eq!(seen.program(), Some("sshd"));
    }

    /// The program and the message come back as given, with or without a program, empty or
    /// not, and a program is never confused with the start of the message.
    #[test]
    fn program_and_message_share_one_text_and_come_back_apart() {
        for (program, message) in [
            (Some("sshd"), "Failed password for root from 192.0.2.1"),
            (None, "sshdFailed password"),
            (Some(""), "x"),
            (Some("postfix/smtpd"), ""),
            (None, ""),
            (Some("é"), "ü"),
        ] {
            let seen = Seen::new(UNIX_EPOCH, program, message);
            assert_eq!(seen.program(), program);
            assert_eq!(seen.message(), message);
            assert_eq!(
                seen.text_bytes(),
                program.map_or(0, str::len) + message.len()
            );
        }
        assert_ne!(
            Seen::new(UNIX_EPOCH, Some("ab"), "c"),
            Seen::new(UNIX_EPOCH, Some("a"), "bc")
        );
    }

    #[test]
    fn shell_metacharacters_are_neutralised() {
        assert_eq!(
            shell_safe("Invalid user $(reboot) from 192.0.2.1; `id` 'x' \"y\" \\ | & > <\n"),
            "Invalid user __reboot_ from 192.0.2.1_ _id_ _x_ _y_ _ _ _ _ __"
        );
        assert_eq!(shell_safe("web-1.example.org"), "web-1.example.org");
        // Words that would be options to the program when the template leaves them unquoted.
        assert_eq!(
            shell_safe("Invalid user -x evil.example:3128 -T /etc/shadow from 192.0.2.1"),
            "Invalid user _x evil.example:3128 _T /etc/shadow from 192.0.2.1"
        );
        assert_eq!(
            shell_safe("--output=/tmp/x +x a-b c+d"),
            "_-output=/tmp/x _x a-b c+d"
        );
        assert_eq!(
            shell_safe("Invalid user /[e]tc/[s]hadow* from 2001:db8::1?"),
            "Invalid user /_e_tc/_s_hadow_ from 2001:db8::1_"
        );
    }

    #[test]
    fn hosts_are_distinct_in_order() {
        let line = |h: &str| Line {
            at_ms: 0,
            host: Some(h.into()),
            program: None,
            message: String::new(),
            count: 1,
        };
        assert_eq!(
            hosts(&[line("b"), line("a"), line("b")]),
            ["b".to_string(), "a".to_string()]
        );
    }
}
