//! A log judged on several threads, its results put back in line order.
//!
//! The calling thread reads megabyte chunks cut at newlines and hands them to `threads` workers;
//! each worker turns a chunk into a partial result, and the calling thread merges the partials
//! strictly in chunk order, so whatever the merge writes comes out as one thread would have
//! written it. At most `2 * threads + 1` chunks are read ahead of the merge, so memory stays
//! bounded whatever the log's size; chunk buffers go back to the reader once merged.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

/// The most threads `--threads` takes: each keeps two megabyte chunks in flight.
pub const MAX_THREADS: usize = 128;

/// A chunk on its way to a worker.
struct Job {
    /// Its place among the chunks.
    seq: u64,
    /// Lines before it in the log (its first line is number `first_line + 1`).
    first_line: u64,
    /// The buffer; `len` bytes of it are the chunk.
    buf: Vec<u8>,
    len: usize,
}

/// A worker's result, with the buffer for the reader to reuse.
struct Done<T> {
    seq: u64,
    result: std::io::Result<T>,
    buf: Vec<u8>,
}

/// What a worker runs on each chunk: `(its own state, lines before the chunk, chunk)`.
pub type Work<'a, S, T> = &'a (dyn Fn(&mut S, u64, &[u8]) -> std::io::Result<T> + Sync);

/// Reads `reader` to its end in chunks of whole lines (the last one may end without a newline),
/// runs `work(state, lines before the chunk, chunk)` on `threads` threads, each with its own
/// `state()` (a filter's regexes cloned: threads sharing one regex contend for its cache pool),
/// and calls `merge` on the results in chunk order on this thread. The first error (reading,
/// working or merging) stops the run and is returned, after every thread has stopped.
pub fn in_order<S, T: Send>(
    reader: &mut dyn Read,
    threads: usize,
    chunk: usize,
    state: &(dyn Fn() -> S + Sync),
    work: Work<'_, S, T>,
    merge: &mut dyn FnMut(T) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let threads = threads.clamp(1, MAX_THREADS);
    let (job_tx, job_rx) = channel::<Job>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = channel::<Done<T>>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            scope.spawn(move || worker(job_rx, &done_tx, &mut state(), work));
        }
        drop(done_tx);
        let mut feed = Feed {
            job_tx,
            done_rx,
            pending: BTreeMap::new(),
            spare: Vec::new(),
            sent: 0,
            merged: 0,
            ahead: 2 * threads as u64 + 1,
        };
        // Dropping `feed` on the way out (an error included) closes both channels: the workers
        // see no more jobs, or fail to hand a result over, and return; the scope joins them.
        feed.run(reader, chunk.max(1), merge)
    })
}

/// One worker: judges chunks until the jobs end or the results are no longer wanted.
fn worker<S, T>(
    jobs: &Mutex<Receiver<Job>>,
    done: &Sender<Done<T>>,
    state: &mut S,
    work: Work<'_, S, T>,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panic is turned into an error here, or the reader would wait for this chunk forever.
        let result = catch_unwind(AssertUnwindSafe(|| {
            work(state, job.first_line, &job.buf[..job.len])
        }))
        .unwrap_or_else(|_| Err(std::io::Error::other("a judging thread panicked")));
        let done_one = Done {
            seq: job.seq,
            result,
            buf: job.buf,
        };
        if done.send(done_one).is_err() {
            return;
        }
    }
}

/// The reading and merging side.
struct Feed<T> {
    job_tx: Sender<Job>,
    done_rx: Receiver<Done<T>>,
    /// Results that came back before an earlier chunk's.
    pending: BTreeMap<u64, Done<T>>,
    /// Buffers merged, for the next reads.
    spare: Vec<Vec<u8>>,
    sent: u64,
    merged: u64,
    /// Chunks read ahead of the merge at most.
    ahead: u64,
}

impl<T> Feed<T> {
    fn run(
        &mut self,
        reader: &mut dyn Read,
        chunk: usize,
        merge: &mut dyn FnMut(T) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut lines = 0u64;
        let mut buf = vec![0u8; chunk];
        let mut filled = 0;
        loop {
            let mut eof = false;
            while filled < buf.len() {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if eof {
                if filled > 0 {
                    self.send(buf, filled, lines, merge)?;
                }
                while self.merged < self.sent {
                    self.take(merge)?;
                }
                return Ok(());
            }
            // A full buffer: the chunk ends after its last newline; the rest starts the next.
            let Some(nl) = memchr::memrchr(b'\n', &buf[..filled]) else {
                // One line longer than the buffer: read on into a bigger one.
                buf.resize(buf.len() * 2, 0);
                continue;
            };
            let len = nl + 1;
            let mut next = self.spare.pop().unwrap_or_default();
            let tail = filled - len;
            if next.len() < chunk.max(tail + 1) {
                next.resize(chunk.max(tail * 2), 0);
            }
            next[..tail].copy_from_slice(&buf[len..filled]);
            let before = lines;
            lines += memchr::memchr_iter(b'\n', &buf[..len]).count() as u64;
            self.send(buf, len, before, merge)?;
            buf = next;
            filled = tail;
        }
    }

    /// Hands a chunk to the workers, first merging until fewer than `ahead` are out.
    fn send(
        &mut self,
        buf: Vec<u8>,
        len: usize,
        first_line: u64,
        merge: &mut dyn FnMut(T) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        while self.sent - self.merged >= self.ahead {
            self.take(merge)?;
        }
        let job = Job {
            seq: self.sent,
            first_line,
            buf,
            len,
        };
        self.job_tx
            .send(job)
            .map_err(|_| std::io::Error::other("the judging threads stopped"))?;
        self.sent += 1;
        Ok(())
    }

    /// Waits for one result, then merges every result that is next in order.
    fn take(&mut self, merge: &mut dyn FnMut(T) -> std::io::Result<()>) -> std::io::Result<()> {
        let done = self
            .done_rx
            .recv()
            .map_err(|_| std::io::Error::other("the judging threads stopped"))?;
        self.pending.insert(done.seq, done);
        while let Some(done) = self.pending.remove(&self.merged) {
            self.merged += 1;
            self.spare.push(done.buf);
            merge(done.result?)?;
        }
        Ok(())
    }
}

/// Calls `f` with every line of a chunk (without its `\n`; bytes after the last newline are a
/// line too), as [`super::for_each_line`] splits a whole log.
pub fn lines_of(
    bytes: &[u8],
    mut f: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', bytes) {
        f(&bytes[start..nl])?;
        start = nl + 1;
    }
    if start < bytes.len() {
        f(&bytes[start..])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes per read, then fails if `fail` is set.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
        fail: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.data.is_empty() && self.fail {
                return Err(std::io::Error::other("disk gone"));
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Every line with its number, on `threads` threads with `chunk`-byte buffers.
    fn numbered(text: &[u8], threads: usize, chunk: usize, step: usize) -> Vec<(u64, Vec<u8>)> {
        let mut got = Vec::new();
        let work = |_: &mut (), first: u64, bytes: &[u8]| {
            let mut lines = Vec::new();
            lines_of(bytes, |l| {
                lines.push((first + lines.len() as u64 + 1, l.to_vec()));
                Ok(())
            })?;
            Ok(lines)
        };
        let mut reader = Trickle {
            data: text,
            step,
            fail: false,
        };
        in_order(&mut reader, threads, chunk, &|| (), &work, &mut |lines| {
            got.extend(lines);
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn lines_come_back_numbered_and_in_order_whatever_the_chunks() {
        let long = "y".repeat(100);
        let texts = [
            String::new(),
            "\n".into(),
            "a".into(),
            "a\n\nb".into(),
            "a\r\nb\n\n".into(),
            (0..500).map(|i| format!("line {i}\n")).collect::<String>(),
            format!("one\n{long}\ntwo\n{long}{long}"),
        ];
        for text in &texts {
            let want = numbered(text.as_bytes(), 1, 1 << 20, usize::MAX);
            let split: Vec<_> = text.split('\n').collect();
            let n = split.len() - usize::from(text.is_empty() || text.ends_with('\n'));
            assert_eq!(want.len(), n, "{text:?}");
            for threads in [1, 2, 7] {
                for chunk in [1, 3, 16, 64] {
                    for step in [1, 5, usize::MAX] {
                        let got = numbered(text.as_bytes(), threads, chunk, step);
                        assert_eq!(got, want, "{threads} threads, chunk {chunk}, step {step}");
                    }
                }
            }
        }
    }

    #[test]
    fn errors_stop_the_run_without_hanging() {
        let text = "a\nb\nc\n".repeat(1000);
        // A read error after some chunks went out.
        let mut reader = Trickle {
            data: text.as_bytes(),
            step: 100,
            fail: true,
        };
        let work = |_: &mut (), _: u64, _: &[u8]| Ok(());
        let e = in_order(&mut reader, 3, 16, &|| (), &work, &mut |_| Ok(())).unwrap_err();
        assert_eq!(e.to_string(), "disk gone");
        // A worker's error, and a worker's panic, at one chunk of many.
        let failing = |_: &mut (), first: u64, _: &[u8]| -> std::io::Result<()> {
            match first {
                300 => Err(std::io::Error::other("bad chunk")),
                _ => Ok(()),
            }
        };
        let panicking = |_: &mut (), first: u64, _: &[u8]| -> std::io::Result<()> {
            assert!(first != 300, "boom");
            Ok(())
        };
        let works: [Work<'_, (), ()>; 2] = [&failing, &panicking];
        for (work, want) in works
            .into_iter()
            .zip(["bad chunk", "a judging thread panicked"])
        {
            let mut reader = text.as_bytes();
            let e = in_order(&mut reader, 2, 6, &|| (), work, &mut |_| Ok(())).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        // A merge error (the output closed).
        let mut reader = text.as_bytes();
        let mut merged = 0;
        let e = in_order(&mut reader, 2, 6, &|| (), &work, &mut |_| {
            merged += 1;
            if merged == 10 {
                return Err(std::io::Error::other("broken pipe"));
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "broken pipe");
        assert_eq!(merged, 10);
    }
}
