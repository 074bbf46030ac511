//! WAL checkpoints on a thread of their own, so a ban never waits for one.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the WAL's size limit and
//! fsyncs the WAL and the database there: 3.5-5 ms on this machine's disk, which every ban
//! decided meanwhile waited for before its action (the tail of the ban latency). The writer turns
//! the automatic checkpoint off and wakes this thread after its commits instead; a passive
//! checkpoint copies pages while the writer goes on appending.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// At most one checkpoint this often: commits meanwhile are copied by the next one, so the WAL
/// holds about this long of writes (the automatic checkpoint's 1,000 pages are ~4 MB).
pub(crate) const PAUSE: Duration = Duration::from_secs(1);

/// The writer's side: wakes the thread after a commit and stops it when dropped.
pub(crate) struct Checkpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second connection to `path` and starts the thread; `errors` counts checkpoints
    /// that failed. On error the caller keeps SQLite's automatic checkpoint.
    pub(crate) fn start(
        path: &Path,
        pause: Duration,
        errors: metrics::Counter,
    ) -> Result<Checkpointer, Box<dyn std::error::Error>> {
        let db = Connection::open(path)?;
        db.busy_timeout(Duration::from_secs(5))?;
        // One pending wake is enough: a checkpoint copies every commit before it.
        let (wake, woken) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("jailsink-checkpoint".into())
            .spawn(move || run(&db, &woken, pause, &errors))?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Called after a commit; never blocks.
    pub(crate) fn committed(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Checkpointer {
    /// Stops the thread and closes its connection, so the writer's connection closes last and
    /// SQLite checkpoints and removes the WAL as it does without this thread.
    fn drop(&mut self) {
        self.wake = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Checkpoints after each wake, at most once per `pause`. What is left when the writer stops is
/// checkpointed by the writer's connection as it closes (the last one, so SQLite does it).
fn run(db: &Connection, woken: &mpsc::Receiver<()>, pause: Duration, errors: &metrics::Counter) {
    let mut last: Option<Instant> = None;
    while woken.recv().is_ok() {
        if let Some(last) = last {
            if !wait_until(woken, last + pause) {
                return;
            }
        }
        checkpoint(db, errors);
        last = Some(Instant::now());
    }
}

/// Waits until `deadline`, taking wakes as they come (one checkpoint covers them); false if the
/// writer stopped meanwhile.
fn wait_until(woken: &mpsc::Receiver<()>, deadline: Instant) -> bool {
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return true;
        };
        match woken.recv_timeout(left) {
            Ok(()) => continue,
            Err(RecvTimeoutError::Timeout) => return true,
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
}

/// A passive checkpoint: copies what it can without waiting for the writer or readers.
fn checkpoint(db: &Connection, errors: &metrics::Counter) {
    let result = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(0)
    });
    if let Err(error) = result {
        errors.increment(1);
        tracing::error!(%error, "cannot checkpoint the state database");
    }
}
