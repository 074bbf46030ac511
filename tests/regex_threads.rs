//! `jailsink regex --threads N`: the report and the `--json` lines are the same bytes whatever
//! the thread count, for a file and for stdin, with lines across the megabyte chunks' edges.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const FILTER: &str =
    r"^Failed password for (?:invalid user )?<F-USER>\S+</F-USER> from <HOST> port \d+";

/// A log of a few megabytes (several read chunks, so lines straddle their edges): failures from
/// many addresses in an order that repeats them across chunks, other sshd lines, lines without
/// a syslog header, invalid UTF-8, one line longer than a chunk, and a last line without `\n`.
fn log() -> Vec<u8> {
    let mut log = Vec::new();
    for i in 0..60_000u32 {
        let (a, b) = (i % 251, i % 7);
        let line = match i % 9 {
            0 | 3 | 5 => format!(
                "Nov 29 18:{:02}:{:02} vm sshd[{i}]: Failed password for invalid user u{b} from 192.0.2.{a} port {} ssh2\n",
                i / 60 % 60,
                i % 60,
                1000 + i % 5000
            ),
            1 => format!(
                "Nov 29 18:52:53 vm sshd[{i}]: Accepted publickey for root from 198.51.100.{a} port 22 ssh2\n"
            ),
            2 => format!("Failed password for root from 2001:db8::{a:x} port 22 ssh2\n"),
            4 => "\n".to_string(),
            6 => format!("Nov 29 18:52:53 vm kernel: [{i}] noise \u{e9}\u{2603}\n"),
            _ => format!("Nov 30 01:02:03 vm sshd[{i}]: Connection closed by 203.0.113.{a}\n"),
        };
        log.extend_from_slice(line.as_bytes());
        if i % 4099 == 0 {
            log.extend_from_slice(b"Nov 29 18:52:53 vm sshd[1]: Failed password for \xff\xfe from 192.0.2.9 port 1 ssh2\n");
        }
        if i == 30_000 {
            log.extend(std::iter::repeat_n(b'x', 1_300_000));
            log.push(b'\n');
        }
    }
    log.extend_from_slice(
        b"Nov 29 18:59:59 vm sshd[9]: Failed password for root from 192.0.2.250 port 9 ssh2",
    );
    log
}

/// `jailsink regex [args] LOG FILTER`, LOG a path or `-` with `stdin` fed in.
fn regex(args: &[&str], log: &str, stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(crate::support::binary())
        .args(["-c", "/nonexistent", "regex"])
        .args(args)
        .args([log, FILTER])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let feed = stdin.map(|data| {
        let mut pipe = child.stdin.take().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || pipe.write_all(&data).unwrap())
    });
    let out = child.wait_with_output().unwrap();
    if let Some(feed) = feed {
        feed.join().unwrap();
    }
    out
}

/// The output without the timing on the report's last line.
fn untimed(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    match text.rfind(" [processed in ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

#[test]
fn regex_output_is_the_same_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.log");
    let data = log();
    std::fs::write(&path, &data).unwrap();
    let path = path.to_str().unwrap();
    let modes: [&[&str]; 3] = [
        &[],
        &["--json"],
        &["--print-all-matched", "--print-all-missed"],
    ];
    for mode in modes {
        let one = untimed(&regex(&[mode, &["--threads", "1"]].concat(), path, None));
        for threads in ["2", "7"] {
            let args = [mode, &["--threads", threads]].concat();
            let file = untimed(&regex(&args, path, None));
            assert!(file == one, "{mode:?} on {threads} threads differs");
            let stdin = untimed(&regex(&args, "-", Some(&data)));
            assert!(
                stdin == one.replace(path, "stdin"),
                "{mode:?} on {threads} threads from stdin differs"
            );
        }
        // The default (every core) too.
        assert!(untimed(&regex(mode, path, None)) == one, "{mode:?}");
        if mode == ["--json"] {
            let lines: Vec<&str> = one.lines().collect();
            let last: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
            assert_eq!(last["line"], lines.len());
            assert_eq!(last["host"], "192.0.2.250");
        } else if mode.is_empty() {
            assert!(one.contains("Addresses found: "), "{one}");
            // The last line's failure is the last time of its address.
            let host = one.lines().find(|l| l.starts_with("|  192.0.2.250 ("));
            assert!(
                host.is_some_and(|l| l.ends_with("-11-29T18:59:59)")),
                "{one}"
            );
        }
    }
}

#[test]
fn regex_with_threads_takes_a_literal_line_and_reports_read_errors() {
    let line = "Nov 29 18:52:53 vm sshd[1]: Failed password for root from 192.0.2.1 port 22 ssh2";
    let out = regex(&["--threads", "2"], line, None);
    let text = untimed(&out);
    assert!(
        text.contains("Lines: 1 lines, 0 ignored, 1 matched, 0 missed"),
        "{text}"
    );
    // stdin that cannot be read (a directory): an error, not a panic or a hang.
    let dir = tempfile::tempdir().unwrap();
    for threads in ["1", "2"] {
        let out = Command::new(crate::support::binary())
            .args([
                "-c",
                "/nonexistent",
                "regex",
                "--threads",
                threads,
                "-",
                FILTER,
            ])
            .stdin(std::fs::File::open(dir.path()).unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("reading the log"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = regex(&["--threads", "0"], line, None);
    assert!(!out.status.success());
}
