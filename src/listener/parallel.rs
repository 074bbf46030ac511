//! One TCP connection's messages parsed and matched on every core.
//!
//! The connection's task reads and frames; batches of up to [`BATCH`] frames go to a small
//! pool of match workers (one per runtime worker) through bounded queues, at most
//! [`IN_FLIGHT_PER_WORKER`] batches per worker in flight, so a slow pool makes the reader wait
//! (and TCP slow the sender), nothing is dropped. Workers do the stateless part (decode,
//! parse, every native filter's regexes: [`Pipeline::matches`]). The connection's ordered
//! side, a task of its own once the connection first hands a batch to the pool, fed through
//! a bounded queue of pending batches, takes the results back in the order the batches were
//! read and does the ordered part for the frames that hit (held failures, fail2ban jails'
//! multi-line state, building the failures: [`Pipeline::apply`]) before handing the failures
//! to the jail task; meanwhile the reader reads and frames the next bytes. A slow jail task
//! fills that queue and so slows the reader. So the jail task and the held-failure tables see
//! one connection's events in stream order, exactly as when one task did everything, and a
//! message is counted in `jailsink_messages_received_total` only once its batch has been
//! applied; a connection that ends (or a daemon that stops) applies every batch it read.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::framing::{Found, FrameDecoder};
use super::spares::{self, FreeList};
use super::{Origin, Pipeline, Prepared, Receipt, SharedPipeline};
use crate::evidence::tail;
use crate::filter::router::Matched;
use crate::jail::Failure;
use crate::metrics::{messages_dropped, messages_received, DropReason};

/// Frames handed to a worker at once: the queue and wake-up cost spread over many messages.
/// A batch goes on into the next read while the socket has bytes at once, and is handed over
/// part-full as soon as it has none (a lone message never waits for more), or once its frames
/// take [`READ_CHUNK`] bytes (long frames keep a batch's memory bounded).
pub(crate) const BATCH: usize = 1024;

/// Batches each worker may have queued or in hand for the connections.
const IN_FLIGHT_PER_WORKER: usize = 2;

/// Bytes asked of the socket per read once a connection has filled a whole [`FIRST_READ_CHUNK`]
/// read: at ~120 bytes a message, two full batches and more.
const READ_CHUNK: usize = 256 * 1024;

/// Bytes asked per read until then: a connection that never sends that much at once (most of
/// up to `max_tcp_connections`) keeps a buffer of this size, not [`READ_CHUNK`].
const FIRST_READ_CHUNK: usize = 64 * 1024;

/// Bytes of a read buffer allocated once a connection reads [`READ_CHUNK`] at a time: room
/// for a read and a batch's bytes carried over, so the buffer can be read into again once
/// every batch split off it is done ([`spares::refill`]).
const READ_BUFFER: usize = READ_CHUNK + READ_CHUNK / 2;

/// Spare read buffers one connection keeps (each [`READ_BUFFER`] bytes or more).
const SPARE_BUFFERS: usize = 4;

/// One batch for a worker.
struct Job {
    pipeline: Arc<Pipeline>,
    frames: Frames,
    receipt: Receipt,
    peer: IpAddr,
    /// Empty vectors for the results (a previous batch's, handed back).
    results: Results,
    done: oneshot::Sender<Matches>,
}

/// A batch's result vectors: the hits and the verdicts of [`Matches`].
type Results = (Vec<(u32, Prepared)>, Vec<Matched>);

/// What one connection's batches are done with, for its next batches: the reader takes
/// from these lists, the ordered side hands back to them, so a batch's memory is allocated
/// and freed on one thread once, not per batch across threads (see [`spares`]).
struct Spares {
    /// Read buffers whose every batch is applied.
    buffers: FreeList<BytesMut>,
    /// Frame tables ([`Frames::at`]), emptied.
    tables: FreeList<Vec<Range<usize>>>,
    /// Result vectors, emptied.
    results: FreeList<Results>,
}

impl Spares {
    /// Drops every spare and keeps none until [`Spares::open`]: read buffers, frame tables and
    /// result vectors alike (a quiet connection holds no batch memory).
    fn close(&self) {
        self.buffers.close();
        self.tables.close();
        self.results.close();
    }

    /// Keeps spares again, once bytes come.
    fn open(&self) {
        self.buffers.open();
        self.tables.open();
        self.results.open();
    }

    /// Lists bounded by what one connection can have in hand at once: `in_flight` batches
    /// at the pool and as many queued for the ordered side, one applied, one filling.
    fn new(in_flight: usize) -> Spares {
        let batches = 2 * in_flight + 2;
        Spares {
            buffers: FreeList::new(SPARE_BUFFERS),
            tables: FreeList::new(batches),
            results: FreeList::new(batches),
        }
    }

    /// An empty frame table.
    fn table(&self) -> Vec<Range<usize>> {
        self.tables
            .take()
            .unwrap_or_else(|| Vec::with_capacity(BATCH))
    }

    /// Takes back what a done batch held: its frame table, its read buffer when no other
    /// batch reads it, and its result vectors.
    fn recycle(&self, frames: Frames, results: Option<Results>) {
        let Frames { chunk, mut at } = frames;
        at.clear();
        self.tables.put(at);
        if let Some(buffer) = spares::reclaim(chunk, READ_BUFFER) {
            self.buffers.put(buffer);
        }
        if let Some((mut hits, mut verdicts)) = results {
            hits.clear();
            verdicts.clear();
            self.results.put((hits, verdicts));
        }
    }
}

/// What a worker found in a batch: for each frame the ordered part has work for, in order,
/// its number in the batch and where its event is; the verdicts of them all, in the same
/// order; and the batch's frames, which the events are read from.
struct Matches {
    hits: Vec<(u32, Prepared)>,
    verdicts: Vec<Matched>,
    frames: Frames,
}

/// The match workers every connection of every TCP and TLS listener shares (one pool per daemon).
pub(crate) struct Pool {
    /// Worker threads the pool runs (as many as runtime workers).
    workers: usize,
    /// Their queues, made with the threads when a connection first hands a batch over: an
    /// idle daemon, or one whose connections never need the pool, starts no thread (idle RSS).
    queues: std::sync::OnceLock<Vec<mpsc::Sender<Job>>>,
    next: AtomicUsize,
    /// Connections being served: with as many as there are workers, the connections
    /// themselves keep every core busy, and each matches its own frames (no hand-over cost).
    connections: AtomicUsize,
}

impl Pool {
    /// A pool of one worker per runtime worker thread, each on a thread of its own (not a
    /// runtime task: the runtime ran a connection's reader and its workers mostly one at a
    /// time, see BENCHMARKS.md, sixth round), started on first use; they end when the pool is
    /// dropped.
    pub(crate) fn new() -> Arc<Pool> {
        let workers = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        Arc::new(Pool {
            workers,
            queues: std::sync::OnceLock::new(),
            next: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        })
    }

    /// The workers' queues, their threads started on the first call (none when no thread
    /// could start: then every connection matches its own frames, see [`Pool::saturated`]).
    fn queues(&self) -> &[mpsc::Sender<Job>] {
        self.queues.get_or_init(|| {
            (0..self.workers)
                .filter_map(|n| {
                    let (tx, mut rx) = mpsc::channel::<Job>(IN_FLIGHT_PER_WORKER);
                    let spawned = std::thread::Builder::new()
                        .name(format!("jailsink-match-{n}"))
                        .spawn(move || {
                            while let Some(job) = rx.blocking_recv() {
                                // A bug that panics on some input must cost that batch, not the
                                // worker: a dead worker's queue would refuse every batch sent to
                                // it, and each connection handed one would end. The batch's
                                // connection sees its result gone, logs it and counts its
                                // messages (`Sink::apply`).
                                let batch = std::panic::AssertUnwindSafe(|| work(job));
                                if std::panic::catch_unwind(batch).is_err() {
                                    tracing::error!(
                                        worker = n,
                                        "a match worker panicked on a batch; the worker goes on"
                                    );
                                }
                            }
                        });
                    match spawned {
                        Ok(_) => Some(tx),
                        Err(error) => {
                            tracing::error!(%error, "cannot start a match worker thread");
                            None
                        }
                    }
                })
                .collect()
        })
    }

    /// True when enough connections are open to keep every worker thread busy on their own
    /// (or no worker thread could start; the first call starts them).
    fn saturated(&self) -> bool {
        self.connections.load(Ordering::Relaxed) >= self.workers || self.queues().is_empty()
    }

    /// Most batches one connection keeps in flight.
    fn in_flight(&self) -> usize {
        self.workers * IN_FLIGHT_PER_WORKER
    }

    /// Queues `job` on the next worker in turn, waiting while its queue is full; false when
    /// the workers are gone (shutdown).
    async fn submit(&self, job: Job) -> bool {
        let queues = self.queues();
        if queues.is_empty() {
            return false;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % queues.len();
        queues[i].send(job).await.is_ok()
    }
}

/// A frame that makes [`work`] panic in tests.
#[cfg(test)]
const TEST_PANIC: &[u8] = b"<test: panic in the match worker>";

/// Matches one batch and hands the results back to its connection.
fn work(job: Job) {
    let Job {
        pipeline,
        frames,
        receipt,
        peer,
        results: (mut hits, mut verdicts),
        done,
    } = job;
    // Tests stand in for a matching bug with this frame: the worker must outlive the panic.
    #[cfg(test)]
    if frames.iter().any(|f| f == TEST_PANIC) {
        panic!("a match worker's test panic");
    }
    let local = thread_copy(&pipeline);
    drop(pipeline);
    hits.extend(frames.iter().enumerate().filter_map(|(i, f)| {
        local
            .matches(f, receipt, Origin::Peer(peer), &mut verdicts)
            .map(|hit| (i as u32, hit))
    }));
    // The connection is gone: nothing to hand back.
    let _ = done.send(Matches {
        hits,
        verdicts,
        frames,
    });
}

thread_local! {
    /// This thread's copy of the pipeline it last matched for, with regexes whose scratch
    /// space this thread owns ([`Pipeline::matcher_copy`]): worker tasks move between the
    /// runtime's threads, so the copy belongs to the thread, not the task.
    static COPY: RefCell<Option<(Weak<Pipeline>, Arc<Pipeline>)>> = const { RefCell::new(None) };
}

/// The calling thread's matcher copy of `pipeline`, made on first use and after a reload.
fn thread_copy(pipeline: &Arc<Pipeline>) -> Arc<Pipeline> {
    COPY.with(|copy| {
        let mut copy = copy.borrow_mut();
        if let Some((of, local)) = copy.as_ref() {
            if Weak::ptr_eq(of, &Arc::downgrade(pipeline)) {
                return local.clone();
            }
        }
        let local = Arc::new(pipeline.matcher_copy());
        *copy = Some((Arc::downgrade(pipeline), local.clone()));
        local
    })
}

/// A batch sent to the pool, waiting to be applied in its turn.
struct Pending {
    pipeline: Arc<Pipeline>,
    receipt: Receipt,
    /// Messages the batch stands for (its frames and the oversized ones counted as dropped).
    messages: u64,
    result: oneshot::Receiver<Matches>,
}

/// What the reader hands the ordered side, in stream order.
enum Batch {
    /// Matched by the pool: applied once its result is back.
    Matched(Pending),
    /// Processed whole by the ordered side (a `tail` client watches, or the pool is saturated).
    Whole {
        pipeline: Arc<Pipeline>,
        frames: Frames,
        receipt: Receipt,
        messages: u64,
    },
    /// Only oversized frames: nothing to match, counted in order.
    Counted(u64),
}

/// Where one connection's failures and counts go.
struct Sink {
    peer: SocketAddr,
    received: metrics::Counter,
    failures: mpsc::Sender<Failure>,
    found: Vec<Failure>,
    /// Where each applied batch's memory goes back to the reader.
    spares: Arc<Spares>,
}

impl Sink {
    /// Sends what `found` holds to the jail task, in order; false when it is gone. Room is
    /// reserved for many at once (one wait on the channel's semaphore, not one per failure).
    async fn flush(&mut self) -> bool {
        let most = self.failures.max_capacity().max(1);
        while !self.found.is_empty() {
            let n = self.found.len().min(most);
            let Ok(permits) = self.failures.reserve_many(n).await else {
                // The jail task is gone (the daemon is stopping): counted, as UDP counts it.
                messages_dropped(DropReason::QueueFull).increment(self.found.len() as u64);
                self.found.clear();
                return false;
            };
            for (permit, failure) in permits.zip(self.found.drain(..n)) {
                permit.send(failure);
            }
        }
        true
    }

    /// Processes `frames` whole, here, in order; false when the jail task is gone.
    async fn process(
        &mut self,
        pipeline: &Pipeline,
        frames: Frames,
        receipt: Receipt,
        messages: u64,
    ) -> bool {
        let origin = Origin::Peer(self.peer.ip());
        for frame in frames.iter() {
            pipeline.process(frame, receipt, origin, &mut self.found);
        }
        self.spares.recycle(frames, None);
        self.received.increment(messages);
        self.flush().await
    }

    /// The ordered part of a batch the pool matched (None: its worker died, a bug; its
    /// messages are counted, not matched); false when the jail task is gone.
    async fn apply(&mut self, pending: Pending, matches: Option<Matches>) -> bool {
        let Pending {
            pipeline,
            receipt,
            messages,
            ..
        } = pending;
        match matches {
            Some(Matches {
                mut hits,
                mut verdicts,
                frames,
            }) => {
                let origin = Origin::Peer(self.peer.ip());
                let mut taken = verdicts.drain(..);
                for (i, prepared) in hits.drain(..) {
                    let frame = frames.get(i as usize).unwrap_or_default();
                    pipeline.apply(
                        prepared,
                        frame,
                        origin,
                        &mut taken,
                        receipt,
                        &mut self.found,
                    );
                }
                drop(taken);
                self.spares.recycle(frames, Some((hits, verdicts)));
            }
            None => {
                // Read, so received; lost to a bug, so also dropped, as a frame whose parse
                // panicked is (`Pipeline::process`).
                pipeline.drop_lost(messages);
                tracing::error!(peer = %self.peer, messages, "match worker lost a batch (a bug); its messages are counted as unparseable");
            }
        }
        self.received.increment(messages);
        self.flush().await
    }

    /// Applies one batch in its turn (waiting for the pool's result); false when the jail task
    /// is gone.
    async fn take(&mut self, batch: Batch) -> bool {
        match batch {
            Batch::Matched(mut pending) => {
                let matches = (&mut pending.result).await.ok();
                self.apply(pending, matches).await
            }
            Batch::Whole {
                pipeline,
                frames,
                receipt,
                messages,
            } => self.process(&pipeline, frames, receipt, messages).await,
            Batch::Counted(messages) => {
                self.received.increment(messages);
                true
            }
        }
    }

    /// The ordered side's loop: every batch the reader hands over, in order, until the reader
    /// is done and every batch it read is applied, or the jail task is gone (then the
    /// receiver is dropped and the reader stops at its next hand-over).
    async fn take_all(mut self, mut batches: mpsc::Receiver<Batch>) {
        while let Some(batch) = batches.recv().await {
            if !self.take(batch).await {
                return;
            }
        }
    }
}

/// A batch being filled: where its frames are in the read buffer.
struct Filling {
    frames: Vec<Range<usize>>,
    messages: u64,
}

/// The frames of a batch: the bytes they were read in, split off the read buffer once for
/// the batch (one reference count taken and dropped per batch, not per frame, and no count
/// shared between the reader's and a worker's core per frame), and where each one is.
struct Frames {
    chunk: Bytes,
    at: Vec<Range<usize>>,
}

impl Frames {
    /// Each frame's bytes, in stream order.
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.at.iter().map(|r| &self.chunk[r.clone()])
    }

    /// The bytes of frame number `i`.
    fn get(&self, i: usize) -> Option<&[u8]> {
        self.chunk.get(self.at.get(i)?.clone())
    }
}

impl Filling {
    /// An empty batch, its frame table a spare one when there is one.
    fn new(spares: &Spares) -> Self {
        Filling {
            frames: spares.table(),
            messages: 0,
        }
    }
}

/// Counts a connection in [`Pool::saturated`] while it is served.
struct Served(Arc<Pool>);

impl Served {
    fn new(pool: &Arc<Pool>) -> Self {
        pool.connections.fetch_add(1, Ordering::Relaxed);
        Served(pool.clone())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The ordered side of one connection: the reader's own until the connection first hands a
/// batch to the pool, then a task of its own fed through a bounded queue, so the reader
/// reads and frames the next bytes while earlier batches are matched and applied.
enum Ordered {
    /// The reader applies (nothing handed to the pool yet).
    Here(Sink),
    /// The ordered side's own task, and the queue of batches it applies in order; at most
    /// [`Pool::in_flight`] wait in it (and one in hand), so a slow jail task slows the reader.
    Apart {
        batches: mpsc::Sender<Batch>,
        done: tokio::task::JoinHandle<()>,
    },
    /// The ordered side is gone (the jail task was gone): the connection ends.
    Gone,
}

impl Ordered {
    /// Hands the ordered side over to a task of its own: on a thread of the runtime's
    /// blocking pool, so the wake-ups between it, the reader and the match workers go
    /// through the kernel to whichever core is free (a runtime task woken by the reader would
    /// wait in the reader's thread's next-task slot until the reader blocks, see
    /// BENCHMARKS.md, seventh round).
    fn apart(&mut self, depth: usize) {
        let Ordered::Here(_) = self else { return };
        let Ordered::Here(sink) = std::mem::replace(self, Ordered::Gone) else {
            return;
        };
        let (batches, rx) = mpsc::channel(depth.max(1));
        let span = tracing::Span::current();
        let handle = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            handle.block_on(sink.take_all(rx))
        });
        *self = Ordered::Apart { batches, done };
    }

    /// Applies `batch` here or queues it for the ordered side's task (waiting while the
    /// queue is full); false when the jail task is gone.
    async fn take(&mut self, batch: Batch) -> bool {
        match self {
            Ordered::Here(sink) => sink.take(batch).await,
            Ordered::Apart { batches, .. } => batches.send(batch).await.is_ok(),
            Ordered::Gone => false,
        }
    }

    /// Waits until every batch handed over is applied.
    async fn finish(self) {
        if let Ordered::Apart { batches, done } = self {
            drop(batches);
            if let Err(error) = done.await {
                tracing::error!(%error, "the connection's ordered side failed");
            }
        }
    }
}

/// One read the stream answers at once: None when it has nothing now (then nothing was
/// read: a pending read leaves the buffer as it was), so the caller never waits for bytes.
fn read_now<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Option<std::io::Result<usize>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let read = std::pin::pin!(stream.read_buf(buf));
    match std::future::Future::poll(read, &mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

/// Takes the filling batch and splits the bytes its frames are in (`buf[..at]`) off the read
/// buffer; framing goes on from the buffer's start.
fn take_batch(
    filling: &mut Filling,
    buf: &mut BytesMut,
    at: &mut usize,
    spares: &Spares,
) -> (Filling, Bytes) {
    let batch = std::mem::replace(filling, Filling::new(spares));
    let chunk = buf.split_to(*at).freeze();
    *at = 0;
    (batch, chunk)
}

/// Serves one connection: reads, frames, has the pool match, applies in order.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn connection<S: AsyncRead + Unpin>(
    mut stream: S,
    transport: &'static str,
    peer: SocketAddr,
    idle: Duration,
    shared: SharedPipeline,
    pool: Arc<Pool>,
    failures: mpsc::Sender<Failure>,
    shutdown: CancellationToken,
) {
    tracing::debug!(%peer, "connected");
    let _served = Served::new(&pool);
    let spares = Arc::new(Spares::new(pool.in_flight()));
    let mut ordered = Ordered::Here(Sink {
        peer,
        received: messages_received(transport),
        failures,
        found: Vec::new(),
        spares: spares.clone(),
    });
    let mut decoder = FrameDecoder::new(shared.load().max_message_bytes());
    let mut read_chunk = FIRST_READ_CHUNK;
    let mut buf = BytesMut::with_capacity(read_chunk);
    // The batch being filled; it may span reads while the socket has bytes at once.
    let mut filling = Filling::new(&spares);
    // Where framing stands in `buf`: the bytes before it are the filling batch's.
    let mut at = 0;
    // The last read's time and configuration, for the batches its frames end.
    let mut receipt = Receipt::now();
    let mut pipeline = shared.load_full();
    // Hands the filling batch over: its frames, and the bytes of `buf` they are in, with the
    // read's configuration and time.
    let send = async |(filling, buf, at): (&mut Filling, &mut BytesMut, &mut usize),
                      (pipeline, receipt): (&Arc<Pipeline>, Receipt),
                      ordered: &mut Ordered| {
        let (batch, chunk) = take_batch(filling, buf, at, &spares);
        let to = (&*pool, &*spares, ordered);
        hand_over(batch, chunk, pipeline, receipt, peer.ip(), to).await
    };
    loop {
        // A batch may span reads without passing the select below: a stop (or the listener's
        // removal by a reload) is seen here too, also while the peer keeps the socket full.
        if shutdown.is_cancelled() {
            break;
        }
        if read_chunk == READ_CHUNK {
            // A spare buffer rather than a new one, when the reads need one.
            spares.open();
            spares::refill(&mut buf, read_chunk, READ_BUFFER, &spares.buffers);
        }
        buf.reserve(read_chunk);
        let read = if filling.messages > 0 {
            // A part batch: more frames for it only if the socket has them now.
            match read_now(&mut stream, &mut buf) {
                Some(r) => Ok(r),
                None => {
                    let sent = send(
                        (&mut filling, &mut buf, &mut at),
                        (&pipeline, receipt),
                        &mut ordered,
                    );
                    if !sent.await {
                        return;
                    }
                    continue;
                }
            }
        } else if let Some(r) = read_now(&mut stream, &mut buf) {
            Ok(r)
        } else {
            // Nothing to read now: the connection may stay quiet for long, and keeps no spare
            // memory meanwhile (the batches still being applied free theirs).
            spares.close();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = tokio::time::timeout(idle, stream.read_buf(&mut buf)) => r,
            }
        };
        let n = match read {
            Err(_) => {
                tracing::debug!(%peer, "idle timeout");
                break;
            }
            // A TLS peer that closes its socket without close_notify (most do): the end of
            // its stream, whose last line is a message as on plain TCP.
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "read failed");
                break;
            }
            Ok(Ok(n)) => n,
        };
        if n >= read_chunk {
            // A stream that fills whole reads: larger ones, fewer hand-overs.
            read_chunk = READ_CHUNK;
        }
        receipt = Receipt::now();
        let next = shared.load_full();
        if !Arc::ptr_eq(&next, &pipeline) && !next.admit(peer.ip()) {
            // A reload took this sender out of allowed_senders: its open connection ends too
            // (rsyslog keeps one open for days), and what it sent since is not read.
            tracing::info!(%peer, "connection closed: the sender is no longer in allowed_senders");
            break;
        }
        pipeline = next;
        let at_end = n == 0;
        let mut failed = None;
        // Frames are found in place; the bytes they used are split off once per batch.
        loop {
            let found = match decoder.next_in(&buf, &mut at) {
                Ok(found) => found,
                Err(error) => {
                    failed = Some(error);
                    None
                }
            };
            match found {
                None => break,
                Some(Found::Oversized) => {
                    filling.messages += 1;
                    pipeline.drop_too_large();
                }
                Some(Found::Message(range)) => {
                    filling.messages += 1;
                    filling.frames.push(range);
                    // Full by frames, or by bytes (a batch of long frames stays bounded).
                    if filling.frames.len() == BATCH || at >= READ_CHUNK {
                        let sent = send(
                            (&mut filling, &mut buf, &mut at),
                            (&pipeline, receipt),
                            &mut ordered,
                        );
                        if !sent.await {
                            return;
                        }
                    }
                }
            }
        }
        if at_end && failed.is_none() {
            let cut = decoder.cuts_a_frame(&buf[at..]);
            match decoder.finish_in(&buf, at) {
                Some(range) => {
                    filling.messages += 1;
                    filling.frames.push(range);
                }
                // An octet-counted frame the stream ended inside.
                None if cut => pipeline.drop_unparseable(),
                None => {}
            }
            at = buf.len();
        }
        // The stream's end, a framing error, or a batch holding READ_CHUNK bytes already
        // (bytes of an oversized frame being skipped count too: they are let go here, not
        // kept while the socket has more).
        if at_end || failed.is_some() || at >= READ_CHUNK {
            let sent = send(
                (&mut filling, &mut buf, &mut at),
                (&pipeline, receipt),
                &mut ordered,
            );
            if !sent.await {
                return;
            }
        }
        if let Some(error) = failed {
            ordered.finish().await;
            pipeline.drop_unparseable();
            tracing::warn!(%peer, %error, "closing connection");
            return;
        }
        if at_end {
            break;
        }
    }
    // Ended by the idle timeout, a read error or the daemon's stop: a part batch held (a
    // read that failed at once) is applied, a frame begun is lost.
    if filling.messages > 0 {
        let sent = send(
            (&mut filling, &mut buf, &mut at),
            (&pipeline, receipt),
            &mut ordered,
        );
        if !sent.await {
            return;
        }
    }
    if decoder.cuts_a_frame(&buf[at..]) {
        shared.load().drop_unparseable();
    }
    ordered.finish().await;
    tracing::debug!(%peer, "disconnected");
}

/// Sends `filling` to the pool and its place in the order to the ordered side, or has the
/// ordered side process it whole: while a `tail` client watches (so the events it publishes
/// stay in order), and while as many connections as worker threads are open (they keep the
/// cores busy without the hand-over); false when the jail task or the pool is gone.
async fn hand_over(
    filling: Filling,
    chunk: Bytes,
    pipeline: &Arc<Pipeline>,
    receipt: Receipt,
    peer: IpAddr,
    (pool, spares, ordered): (&Pool, &Spares, &mut Ordered),
) -> bool {
    if filling.messages == 0 {
        return true;
    }
    let frames = Frames {
        chunk,
        at: filling.frames,
    };
    if tail::watching() || pool.saturated() {
        let whole = Batch::Whole {
            pipeline: pipeline.clone(),
            frames,
            receipt,
            messages: filling.messages,
        };
        return ordered.take(whole).await;
    }
    if frames.at.is_empty() {
        spares.tables.put(frames.at);
        return ordered.take(Batch::Counted(filling.messages)).await;
    }
    ordered.apart(pool.in_flight());
    let (done, result) = oneshot::channel();
    let job = Job {
        pipeline: pipeline.clone(),
        frames,
        receipt,
        peer,
        results: spares.results.take().unwrap_or_default(),
        done,
    };
    if !pool.submit(job).await {
        return false;
    }
    let pending = Pending {
        pipeline: pipeline.clone(),
        receipt,
        messages: filling.messages,
        result,
    };
    ordered.take(Batch::Matched(pending)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection waiting for bytes keeps no batch memory of any kind: read buffers, frame
    /// tables and result vectors are all dropped, and none is kept until bytes come again.
    #[test]
    fn a_quiet_connection_keeps_no_spares() {
        let spares = Spares::new(2);
        spares.buffers.put(BytesMut::with_capacity(16));
        spares.tables.put(Vec::with_capacity(16));
        spares.results.put(Results::default());
        spares.close();
        spares.tables.put(Vec::with_capacity(16));
        spares.results.put(Results::default());
        assert_eq!(
            (
                spares.buffers.len(),
                spares.tables.len(),
                spares.results.len()
            ),
            (0, 0, 0)
        );
        spares.open();
        spares.tables.put(Vec::with_capacity(16));
        spares.results.put(Results::default());
        assert_eq!((spares.tables.len(), spares.results.len()), (1, 1));
    }

    #[test]
    fn failures_a_gone_jail_task_cannot_take_are_counted() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let (tx, rx) = mpsc::channel(4);
        drop(rx);
        let failure = |ip: &str| Failure {
            host: None,
            jail: Arc::from("sshd"),
            ip: ip.parse().unwrap(),
            count: 1,
            success: false,
            received_at: tokio::time::Instant::now(),
            seen: crate::evidence::Seen::new(std::time::SystemTime::now(), Some("sshd"), "x"),
            matched: None,
            user: None,
        };
        let mut sink = Sink {
            peer: "127.0.0.1:1".parse().unwrap(),
            received: metrics::Counter::noop(),
            failures: tx,
            found: ["192.0.2.1", "192.0.2.2", "192.0.2.3"].map(failure).into(),
            spares: Arc::new(Spares::new(4)),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let taken = metrics::with_local_recorder(&recorder, || rt.block_on(sink.flush()));
        assert!(!taken);
        let text = scrape.render();
        assert!(
            text.contains("jailsink_messages_dropped_total{reason=\"queue_full\"} 3"),
            "{text}"
        );
    }

    /// A batch its worker lost (a bug) is counted as received and as unparseable, not only
    /// logged.
    #[test]
    fn a_batch_a_worker_lost_is_counted_as_dropped() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let (tx, _rx) = mpsc::channel(4);
        let (received, pipeline) = metrics::with_local_recorder(&recorder, || {
            (messages_received("tcp"), Arc::new(pipeline()))
        });
        let mut sink = Sink {
            peer: "127.0.0.1:1".parse().unwrap(),
            received,
            failures: tx,
            found: Vec::new(),
            spares: Arc::new(Spares::new(4)),
        };
        let (_done, result) = oneshot::channel();
        let pending = Pending {
            pipeline,
            receipt: Receipt::now(),
            messages: 7,
            result,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert!(rt.block_on(sink.apply(pending, None)));
        let text = scrape.render();
        assert!(
            text.contains("jailsink_messages_dropped_total{reason=\"unparseable\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("jailsink_messages_received_total{transport=\"tcp\"} 7"),
            "{text}"
        );
    }

    /// The sshd jail and a jail for every program (so nothing is passed over as unwanted).
    fn pipeline() -> Pipeline {
        super::super::unwanted::tests::pipeline(crate::parse::Zone::Utc, true)
    }

    /// A stream where order decides: echo lines (PAM) before and after their `Failed
    /// password` of the same process, held `Failed publickey` lines ended by `Accepted` or by
    /// another failure, a few dozen processes and addresses reused, garbage and benign lines.
    fn stream() -> Vec<u8> {
        let kinds = [
            "Failed password for root from {a} port 22 ssh2",
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={a}  user=root",
            "Failed publickey for deploy from {a} port 22 ssh2: ED25519 SHA256:abc",
            "Accepted publickey for deploy from {a} port 22 ssh2: ED25519 SHA256:abc",
            "Invalid user admin from {a} port 22",
            "PAM: Authentication failure for root from {a}",
            "Connection closed by authenticating user root {a} port 22 [preauth]",
            "Received disconnect from {a} port 22:11: disconnected by user",
            "pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)",
        ];
        let mut out = Vec::new();
        let mut x: u64 = 7;
        for i in 0..20_000u64 {
            let pick = (crate::listener::next_random(&mut x) >> 33) as usize;
            let addr = format!("192.0.2.{}", pick % 40);
            let message = kinds[pick % kinds.len()].replace("{a}", &addr);
            let pid = 3000 + (pick / 7) % 31;
            let line = match i % 500 {
                0 => "not syslog at all".to_string(),
                1 => format!("<38>Nov 20 00:00:00 mx sendmail[1]: s1: AUTH failure (LOGIN): x, relay=[{addr}]"),
                _ => format!("<38>Nov 20 00:00:00 h{} sshd[{pid}]: {message}", pick % 2),
            };
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out
    }

    type Seen = (String, IpAddr, u32, bool, Option<String>, String);

    fn seen(f: &Failure) -> Seen {
        (
            f.jail.to_string(),
            f.ip,
            f.count,
            f.success,
            f.user.as_deref().map(str::to_string),
            f.seen.message().to_string(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_that_panics_on_a_batch_loses_that_batch_and_goes_on() {
        let pool = Pool::new();
        let shared = Arc::new(pipeline());
        let peer: SocketAddr = "127.0.0.1:514".parse().unwrap();
        let job = |text: &'static [u8]| {
            let (done, result) = oneshot::channel();
            let job = Job {
                pipeline: shared.clone(),
                frames: Frames {
                    chunk: Bytes::from_static(text),
                    at: std::iter::once(0..text.len()).collect(),
                },
                receipt: Receipt::now(),
                peer: peer.ip(),
                results: Default::default(),
                done,
            };
            (job, result)
        };
        for _ in 0..3 {
            let (poisoned, lost) = job(TEST_PANIC);
            assert!(pool.submit(poisoned).await);
            assert!(lost.await.is_err(), "the panicking batch's result is gone");
        }
        // Every worker is still there: one batch for each, and each is matched.
        for _ in 0..pool.workers * 2 {
            let line: &'static [u8] =
                b"<38>Nov 29 18:52:53 vm sshd[1]: Failed password for root from 192.0.2.9 port 22 ssh2";
            let (fine, result) = job(line);
            assert!(
                pool.submit(fine).await,
                "the worker's queue still takes batches"
            );
            let matches = result.await.expect("matched by a live worker");
            assert_eq!(matches.hits.len(), 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_connection_on_the_pool_finds_what_one_task_finds_in_the_same_order() {
        let bytes = stream();
        let sequential = pipeline();
        let receipt = Receipt::now();
        let peer: SocketAddr = "127.0.0.1:514".parse().unwrap();
        let mut expected = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            sequential.process(line, receipt, Origin::Peer(peer.ip()), &mut expected);
        }
        let expected: Vec<Seen> = expected.iter().map(seen).collect();
        assert!(expected.len() > 5_000, "{}", expected.len());
        assert!(expected.iter().any(|f| f.3), "successes too");
        // The stream is one where order decides: its batches taken pairwise swapped (what
        // two workers finishing out of turn would do) find something else.
        let lines: Vec<&[u8]> = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut swapped = Vec::new();
        let reordered = pipeline();
        for pair in lines.chunks(2 * BATCH) {
            let (a, b) = pair.split_at(pair.len().min(BATCH));
            for line in b.iter().chain(a) {
                reordered.process(line, receipt, Origin::Peer(peer.ip()), &mut swapped);
            }
        }
        let mut swapped: Vec<Seen> = swapped.iter().map(seen).collect();
        assert_ne!(swapped, expected);
        let mut sorted = expected.clone();
        sorted.sort();
        swapped.sort();
        assert_ne!(swapped, sorted, "not only the order: the counts differ");

        for round in 0..3 {
            let pool = Pool::new();
            // Round 1: another connection open, so this one matches its own frames.
            let _other = (round == 1).then(|| Served::new(&pool));
            let shared: SharedPipeline = Arc::new(arc_swap::ArcSwap::from_pointee(pipeline()));
            let (tx, mut rx) = mpsc::channel(16);
            let collect = tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(f) = rx.recv().await {
                    got.push(seen(&f));
                }
                got
            });
            connection(
                &bytes[..],
                "tcp",
                peer,
                Duration::from_secs(30),
                shared,
                pool,
                tx,
                CancellationToken::new(),
            )
            .await;
            let got = collect.await.unwrap();
            assert_eq!(got.len(), expected.len());
            assert!(
                got == expected,
                "the pool changed what was found or its order"
            );
        }
    }

    /// Every line a failure of its own user (its bytes differ from every other line's), sent
    /// in reads of [`READ_CHUNK`], so read buffers, frame tables and result vectors are reused
    /// many times over: a frame showing a byte of a previous batch would change a failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recycled_buffers_carry_no_previous_batchs_bytes_into_a_frame() {
        let mut bytes = Vec::new();
        for i in 0..60_000u32 {
            let line = format!(
                "<38>Nov 20 00:00:00 h{} sshd[{}]: Failed password for user{i:x}{} from 192.0.2.{} port 22 ssh2\n",
                i % 3,
                i % 97,
                "z".repeat((i % 13) as usize),
                i % 200
            );
            bytes.extend_from_slice(line.as_bytes());
            if i % 5_000 == 0 {
                bytes.extend_from_slice(b"<38>Nov 20 00:00:00 h sshd[1]: Accepted password for user from 192.0.2.3 port 22 ssh2\n");
            }
        }
        let expected = found_by_one_task(&bytes);
        assert!(expected.len() > 50_000, "{}", expected.len());
        let taken = super::spares::TAKEN.load(Ordering::Relaxed);
        let shared: SharedPipeline = Arc::new(arc_swap::ArcSwap::from_pointee(pipeline()));
        let (tx, mut rx) = mpsc::channel(1 << 17);
        connection(
            &bytes[..],
            "tcp",
            "127.0.0.1:514".parse().unwrap(),
            Duration::from_secs(30),
            shared,
            Pool::new(),
            tx,
            CancellationToken::new(),
        )
        .await;
        let got: Vec<Seen> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| seen(&f))
            .collect();
        assert!(
            super::spares::TAKEN.load(Ordering::Relaxed) > taken,
            "nothing was reused"
        );
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "a frame changed with reused memory");
    }

    /// What one task processing `bytes` line by line finds, in order.
    fn found_by_one_task(bytes: &[u8]) -> Vec<Seen> {
        let sequential = pipeline();
        let mut found = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            sequential.process(
                line,
                Receipt::now(),
                Origin::Peer("127.0.0.1".parse().unwrap()),
                &mut found,
            );
        }
        found.iter().map(seen).collect()
    }

    /// A stream that hands out `bytes` a few KB a read, counts what it handed out, and then
    /// ends (EOF) or, `hang`, has nothing more ever (a peer that stops sending).
    struct Trickle {
        bytes: Vec<u8>,
        sent: Arc<AtomicUsize>,
        hang: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let this = self.get_mut();
            let at = this.sent.load(Ordering::Relaxed);
            if at == this.bytes.len() && this.hang {
                return std::task::Poll::Pending;
            }
            let n = (this.bytes.len() - at).min(out.remaining()).min(7_000);
            out.put_slice(&this.bytes[at..at + n]);
            this.sent.fetch_add(n, Ordering::Relaxed);
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jail_task_that_stops_taking_stops_the_reader_and_loses_nothing() {
        let bytes = stream();
        let expected = found_by_one_task(&bytes);
        let pool = Pool::new();
        let shared: SharedPipeline = Arc::new(arc_swap::ArcSwap::from_pointee(pipeline()));
        let (tx, mut rx) = mpsc::channel(4);
        let sent = Arc::new(AtomicUsize::new(0));
        let trickle = Trickle {
            bytes: bytes.clone(),
            sent: sent.clone(),
            hang: false,
        };
        let peer: SocketAddr = "127.0.0.1:514".parse().unwrap();
        let reader = tokio::spawn(connection(
            trickle,
            "tcp",
            peer,
            Duration::from_secs(30),
            shared,
            pool.clone(),
            tx,
            CancellationToken::new(),
        ));
        // The jail task takes nothing for a while: the reader must stop reading after the
        // batches the queues hold (the ordered side's queue, one in hand, the filling one),
        // not read the whole stream into memory.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = sent.load(Ordering::Relaxed);
        let batch_bytes = 1024 * 130;
        let most = (pool.in_flight() + 3) * batch_bytes + READ_CHUNK;
        assert!(held < bytes.len(), "the whole stream was read ({held})");
        assert!(held <= most, "{held} bytes read ahead, more than {most}");
        let mut got = Vec::new();
        while let Some(f) = rx.recv().await {
            got.push(seen(&f));
        }
        reader.await.unwrap();
        assert_eq!(sent.load(Ordering::Relaxed), bytes.len());
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "what was found or its order changed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_ended_mid_pipeline_applies_every_batch_it_read_in_order() {
        let bytes = stream();
        // Cut at a line's end: the stream then has nothing more (a peer gone quiet), and the
        // daemon stops while the last batches are still being matched and applied.
        let cut = bytes[..bytes.len() * 2 / 3]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        let expected = found_by_one_task(&bytes[..cut]);
        for (hang, slow) in [(true, true), (false, true), (true, false)] {
            let pool = Pool::new();
            let shared: SharedPipeline = Arc::new(arc_swap::ArcSwap::from_pointee(pipeline()));
            // Not slow: room for every failure, taken only once the connection has returned,
            // so they must all be applied by then.
            let (tx, rx) = mpsc::channel(if slow { 16 } else { 1 << 16 });
            let mut rx = Some(rx);
            let collect = slow.then(|| {
                let mut rx = rx.take().unwrap();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(f) = rx.recv().await {
                        got.push(seen(&f));
                        if got.len() % 64 == 0 {
                            // A slow jail task, so batches queue up behind it.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                    got
                })
            });
            let sent = Arc::new(AtomicUsize::new(0));
            let trickle = Trickle {
                bytes: bytes[..cut].to_vec(),
                sent: sent.clone(),
                hang,
            };
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            let read_all = sent.clone();
            tokio::spawn(async move {
                while read_all.load(Ordering::Relaxed) < cut {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                stop.cancel();
            });
            connection(
                trickle,
                "tcp",
                "127.0.0.1:514".parse().unwrap(),
                Duration::from_secs(30),
                shared,
                pool,
                tx,
                shutdown,
            )
            .await;
            let got = match collect {
                Some(collect) => collect.await.unwrap(),
                None => std::iter::from_fn(|| rx.as_mut()?.try_recv().ok())
                    .map(|f| seen(&f))
                    .collect(),
            };
            assert_eq!(got.len(), expected.len(), "hang: {hang}, slow: {slow}");
            assert!(
                got == expected,
                "hang: {hang}: a batch lost or out of order"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_failure_is_applied_without_waiting_for_more_bytes() {
        // Many lines first, so the connection hands batches to the pool (its ordered side
        // apart), then a lone failure, then a peer that sends nothing more and stays open.
        let mut bytes = stream();
        let line = b"<38>Nov 20 00:00:00 h0 sshd[77]: Failed password for root from 198.51.100.7 port 22 ssh2\n";
        bytes.extend_from_slice(line);
        let expected = found_by_one_task(&bytes);
        let shared: SharedPipeline = Arc::new(arc_swap::ArcSwap::from_pointee(pipeline()));
        let (tx, mut rx) = mpsc::channel(1 << 16);
        let trickle = Trickle {
            bytes,
            sent: Arc::new(AtomicUsize::new(0)),
            hang: true,
        };
        let shutdown = CancellationToken::new();
        let reader = tokio::spawn(connection(
            trickle,
            "tcp",
            "127.0.0.1:514".parse().unwrap(),
            Duration::from_secs(3600),
            shared,
            Pool::new(),
            tx,
            shutdown.clone(),
        ));
        let mut got = Vec::new();
        while got.len() < expected.len() {
            // Generous: the failure must come while the connection is still open and idle.
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Some(f)) => got.push(seen(&f)),
                _ => break,
            }
        }
        assert_eq!(got.len(), expected.len(), "the last failure was held back");
        assert_eq!(
            got.last().map(|f| f.1.to_string()).as_deref(),
            Some("198.51.100.7")
        );
        assert!(!reader.is_finished(), "the connection is still open");
        shutdown.cancel();
        reader.await.unwrap();
        assert!(got == expected);
    }
}
