//! Runs one external program (nft, ipset, an operator's ban command) with a deadline: stdin fed,
//! stdout kept up to a bound, the start of stderr kept for the error, and the whole process
//! group killed when the deadline passes, so a hung hook never stalls a jail's runner for ever.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Most stdout kept: `nft -j list set` of a million elements is well under this.
const MAX_STDOUT: usize = 256 << 20;
/// Most stderr kept for an error message; the rest is read and dropped.
const MAX_STDERR: usize = 2048;
/// How long the pipes are read after the child exited: what it wrote is already in them.
const PIPES_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Why a program did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    /// The program could not be started (missing binary, permissions).
    #[error("cannot run {program}: {os_error}")]
    Spawn {
        /// argv\[0\].
        program: String,
        /// The OS error.
        os_error: std::io::Error,
    },
    /// It ran past its deadline and was killed with its process group.
    #[error("{program} did not finish within {after:?} and was killed")]
    Timeout {
        /// argv\[0\].
        program: String,
        /// The deadline it had.
        after: Duration,
    },
    /// It exited unsuccessfully.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// argv\[0\].
        program: String,
        /// Its exit status.
        status: ExitStatus,
        /// The start of its stderr, trimmed.
        stderr: String,
    },
}

/// Runs `argv` (no shell), writing `input` to its stdin, and returns its stdout on success.
/// The child leads its own process group so a timeout kills whatever it started too.
pub(crate) fn run(
    argv: &[String],
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Vec<u8>, ExecError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ExecError::Spawn {
            program: String::new(),
            os_error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"),
        });
    };
    let spawn_error = |os_error| ExecError::Spawn {
        program: program.clone(),
        os_error,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(spawn_error)?;
    let deadline = Instant::now() + timeout;
    let pid = child.id();

    // Pipes are served by threads so a large input or output can never deadlock the child.
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let input = input.to_vec();
        thread::spawn(move || {
            // A child that exits early closes the pipe; its exit status tells the story.
            let _ = stdin.write_all(&input);
        });
    }
    let mut readers = 0;
    let stdout = child.stdout.take().map(|pipe| {
        readers += 1;
        read_pipe(pipe, MAX_STDOUT, true, eof_tx.clone())
    });
    let stderr = child.stderr.take().map(|pipe| {
        readers += 1;
        read_pipe(pipe, MAX_STDERR, false, eof_tx.clone())
    });
    drop(eof_tx);

    // The exit is noticed on a thread of its own the moment it happens (polling with a backoff
    // noticed a 26 ms `iptables-restore` at 45 ms, and a 46 ms one at 65 ms). The thread
    // waits without reaping, so the child's pid, and its group's, stay its own until it is
    // reaped here: a kill at the deadline can never reach a process that took the pid over.
    let (exited_tx, exited_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        wait_unreaped(pid);
        let _ = exited_tx.send(());
    });
    let exited = exited_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok();
    if !exited {
        kill_group(pid);
        let _ = child.kill();
        let _ = child.wait();
        return Err(ExecError::Timeout {
            program: program.clone(),
            after: timeout,
        });
    }
    let status = child.wait().map_err(spawn_error)?;
    // A grandchild (`cmd &` in an operator's command) may hold a pipe open after the child
    // exited: wait for the pipes' ends at most PIPES_AFTER_EXIT (and never past the deadline),
    // then go on with what was read; the reader threads end when the grandchild closes the pipe.
    let pipes_by = deadline.min(Instant::now() + PIPES_AFTER_EXIT);
    for _ in 0..readers {
        let wait = pipes_by
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        if eof_rx.recv_timeout(wait).is_err() {
            break;
        }
    }
    let [stdout, stderr] = [stdout, stderr].map(|read| {
        read.and_then(|buf| buf.lock().ok().map(|mut b| std::mem::take(&mut *b)))
            .unwrap_or_default()
    });
    if status.success() {
        Ok(stdout)
    } else {
        Err(ExecError::Failed {
            program: program.clone(),
            status,
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
        })
    }
}

/// Reads `pipe` on a thread of its own into the returned buffer, keeping the first `keep`
/// bytes: past them the rest is read and dropped, or with `stop` the pipe is closed (the child
/// then fails on its next write). Sends on `eof` when the pipe ends.
fn read_pipe(
    mut pipe: impl Read + Send + 'static,
    keep: usize,
    stop: bool,
    eof: mpsc::Sender<()>,
) -> Arc<Mutex<Vec<u8>>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let into = kept.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let Ok(mut kept) = into.lock() else { break };
            let room = keep.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
            if stop && n >= room {
                break;
            }
        }
        let _ = eof.send(());
    });
    kept
}

/// Returns once the child `pid` has exited (or cannot be waited for), leaving it unreaped:
/// `waitid` with `WNOWAIT`, so [`std::process::Child::wait`] still collects its status.
fn wait_unreaped(pid: u32) {
    let id: libc::id_t = pid;
    loop {
        // SAFETY: waitid writes only into the zeroed siginfo_t we own; P_PID with WNOWAIT
        // neither reaps nor changes the child.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// SIGKILL to the child's process group (the child's pid, as it was made a group leader).
fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) takes plain integers and touches no memory of ours; a group that
        // already exited makes it fail with ESRCH, which is fine.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stdin_goes_in_and_stdout_comes_back() {
        let out = run(&argv(&["cat"]), Some(b"hello"), Duration::from_secs(5)).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn failures_say_what_and_why() {
        let e = run(
            &argv(&["sh", "-c", "echo nope >&2; exit 3"]),
            None,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = run(&argv(&["/nonexistent/x"]), None, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(e, ExecError::Spawn { .. }), "{e}");
    }

    #[test]
    fn a_backgrounded_grandchild_does_not_hold_the_call_until_the_deadline() {
        // The grandchild keeps stdout and stderr open; the child itself is done at once.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(run(
                &argv(&["sh", "-c", "echo done; sleep 33.1415 &"]),
                None,
                Duration::from_secs(120),
            ));
        });
        let answer = rx.recv_timeout(Duration::from_secs(60));
        let _ = std::process::Command::new("pkill")
            .args(["-f", "sleep 33.1415"])
            .status();
        let out = answer
            .expect("the call waited for the grandchild's pipes")
            .unwrap();
        assert_eq!(out, b"done\n");
    }

    #[test]
    fn a_hung_child_and_its_children_are_killed_at_the_deadline() {
        // Odd durations name these sleeps, so the check below finds only ours.
        let e = run(
            &argv(&["sh", "-c", "sleep 31.4159 & sleep 32.7182"]),
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
        let alive = |pattern: &str| {
            std::process::Command::new("pgrep")
                .args(["-f", pattern])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false)
        };
        let mut gone = false;
        for _ in 0..250 {
            if !alive("sleep 31.4159") && !alive("sleep 32.7182") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "the child or the grandchild outlived the deadline");
    }
}
