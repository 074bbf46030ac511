//! A connection's spare batch memory: the read buffers, frame tables and result vectors its
//! batches are done with, handed back by the ordered side to the reader (and through the
//! reader to the match workers) instead of freed on the ordered side's thread and allocated
//! again on the reader's. In the profile of the build before this (BENCHMARKS.md, eighth
//! round) the ordered side's thread spent 31% of its time in `malloc`/`free` (batches
//! allocated on another thread, and the fastbin consolidation a large free starts), the
//! runtime threads 4-8% in page faults of fresh read buffers.
//!
//! Each list is bounded ([`FreeList::new`]): a connection keeps at most that many spares, drops
//! its spares while it waits for bytes ([`FreeList::close`]), and drops every spare when it
//! ends (an idle daemon, or an open connection with nothing to read, holds none).

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

/// Spares taken from any list, for tests that must see reuse happen.
#[cfg(test)]
pub(crate) static TAKEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A bounded list of spare `T`s shared by a connection's threads.
pub(crate) struct FreeList<T> {
    most: usize,
    items: Mutex<Spare<T>>,
}

/// The spares, and whether the list takes more.
struct Spare<T> {
    items: Vec<T>,
    /// False while the connection waits for bytes ([`FreeList::close`]).
    open: bool,
}

impl<T> FreeList<T> {
    /// A list that keeps at most `most` spares (more handed back are dropped).
    pub(crate) fn new(most: usize) -> Self {
        FreeList {
            most,
            items: Mutex::new(Spare {
                items: Vec::with_capacity(most),
                open: true,
            }),
        }
    }

    /// A spare, if any.
    pub(crate) fn take(&self) -> Option<T> {
        let spare = self.items.lock().ok()?.items.pop();
        #[cfg(test)]
        if spare.is_some() {
            TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        spare
    }

    /// Keeps `item` for reuse when the list has room; else it is dropped here.
    pub(crate) fn put(&self, item: T) {
        if let Ok(mut spare) = self.items.lock() {
            if spare.open && spare.items.len() < self.most {
                spare.items.push(item);
                return;
            }
        }
        drop(item);
    }

    /// Drops every spare and takes no more until [`FreeList::open`]: a connection that waits
    /// for bytes (and may stay idle for long) keeps no spare memory.
    pub(crate) fn close(&self) {
        let dropped = match self.items.lock() {
            Ok(mut spare) => {
                spare.open = false;
                std::mem::take(&mut spare.items)
            }
            Err(_) => Vec::new(),
        };
        drop(dropped);
    }

    /// Takes spares again (after [`FreeList::close`]).
    pub(crate) fn open(&self) {
        if let Ok(mut spare) = self.items.lock() {
            spare.open = true;
        }
    }

    /// Spares held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.lock().map_or(0, |spare| spare.items.len())
    }
}

/// The read buffer of a chunk whose every frame has been applied, emptied, when the chunk
/// holds the last reference to it and it can take `at_least` bytes from its start: only
/// such a buffer can be read into again without copying what another batch still reads.
pub(crate) fn reclaim(chunk: Bytes, at_least: usize) -> Option<BytesMut> {
    let mut buf = chunk.try_into_mut().ok()?;
    buf.clear();
    // Back to the allocation's start (nothing is copied: the buffer is empty).
    (buf.try_reclaim(at_least) && buf.capacity() >= at_least).then_some(buf)
}

/// Makes room for `additional` more bytes in `buf` (what `BytesMut::reserve` does) from
/// `spares` when `buf` cannot take them without a new allocation: the bytes `buf` holds are
/// copied to the start of a spare big enough, else of a new buffer of at least
/// `fresh_bytes`, so that buffer too can be reused once its batches are done.
pub(crate) fn refill(
    buf: &mut BytesMut,
    additional: usize,
    fresh_bytes: usize,
    spares: &FreeList<BytesMut>,
) {
    if buf.capacity() - buf.len() >= additional || buf.try_reclaim(additional) {
        return;
    }
    let need = buf.len() + additional;
    let mut next = loop {
        match spares.take() {
            Some(mut spare) => {
                spare.clear();
                if spare.try_reclaim(need) {
                    break spare;
                }
                // Too small for these bytes: freed here, where reads allocate.
            }
            // A frame longer than a fresh buffer (a large max_message_bytes) grows it by
            // doubling, as BytesMut::reserve does: growing to just fit would copy the whole
            // frame again at every read (quadratic in its length).
            None if need > fresh_bytes => {
                break BytesMut::with_capacity(need.max(2 * buf.capacity()))
            }
            None => break BytesMut::with_capacity(fresh_bytes),
        }
    };
    next.extend_from_slice(buf);
    *buf = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16 MiB frame read 64 KiB at a time moves its buffer a handful of times (doubling),
    /// not once per read.
    #[test]
    fn refill_grows_a_long_frames_buffer_by_doubling() {
        let (chunk, fresh) = (64 * 1024, 384 * 1024);
        let spares = FreeList::new(4);
        let mut buf = BytesMut::with_capacity(fresh);
        let mut moves = 0;
        while buf.len() < 16 << 20 {
            let before = buf.as_ptr();
            refill(&mut buf, chunk, fresh, &spares);
            if buf.as_ptr() != before {
                moves += 1;
            }
            let filled = buf.len() % 251;
            buf.extend((0..chunk).map(|i| ((filled + i) % 251) as u8));
        }
        assert!(
            moves <= 8,
            "{moves} moves of the buffer for one 16 MiB frame"
        );
        // What was read stayed in order through every move.
        assert!(buf.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn a_list_keeps_at_most_its_bound() {
        let list = FreeList::new(2);
        for i in 0..5 {
            list.put(vec![i]);
        }
        assert_eq!(list.len(), 2);
        assert!(list.take().is_some() && list.take().is_some());
        assert!(list.take().is_none());
        // Closed (the connection waits for bytes): what it held is gone, nothing is kept.
        list.put(vec![1]);
        list.close();
        assert_eq!(list.len(), 0);
        list.put(vec![2]);
        assert_eq!(list.len(), 0);
        assert!(list.take().is_none());
        list.open();
        list.put(vec![3]);
        assert_eq!(list.take(), Some(vec![3]));
    }

    #[test]
    fn only_the_last_reference_to_a_buffer_is_reclaimed() {
        let mut buf = BytesMut::with_capacity(1000);
        buf.extend_from_slice(&[7u8; 600]);
        let a = buf.split_to(300).freeze();
        let b = buf.split_to(300).freeze();
        drop(buf);
        // `b` still reads the same allocation: `a` cannot be reused.
        assert!(reclaim(a, 1000).is_none());
        let spare = reclaim(b, 1000).expect("the last reference");
        assert_eq!(spare.len(), 0);
        assert!(spare.capacity() >= 1000, "from the allocation's start");
        // Not big enough for what is asked: not kept.
        let mut small = BytesMut::with_capacity(100);
        small.extend_from_slice(b"x");
        let chunk = small.split().freeze();
        drop(small);
        assert!(reclaim(chunk, 1000).is_none());
    }

    /// A buffer of `capacity` that a batch filled with `len` bytes of `fill`, handed back by
    /// [`reclaim`] once the batch is done.
    fn recycled(fill: u8, capacity: usize, len: usize) -> BytesMut {
        let mut old = BytesMut::with_capacity(capacity);
        old.extend(std::iter::repeat_n(fill, len));
        let chunk = old.split().freeze();
        drop(old);
        reclaim(chunk, len).expect("unique")
    }

    /// A recycled buffer holds the previous batch's bytes in its allocation: what is read into
    /// it next, and the bytes carried over, are all a frame can see.
    #[test]
    fn a_recycled_buffer_never_shows_a_previous_batchs_bytes() {
        let spares = FreeList::new(4);
        spares.put(recycled(b'X', 4096, 4000));
        // The reader's buffer: a part frame carried over, no room for the next read.
        let mut buf = BytesMut::with_capacity(16);
        buf.extend_from_slice(b"<38>Nov 2");
        let before = buf.as_ptr();
        refill(&mut buf, 3000, 8192, &spares);
        assert_eq!(&buf[..], b"<38>Nov 2", "only the carried bytes");
        assert_ne!(buf.as_ptr(), before, "moved into the spare");
        assert_eq!(spares.len(), 0, "the spare was taken");
        assert!(buf.capacity() - buf.len() >= 3000);
        buf.extend_from_slice(b"0 host sshd[1]: x\n");
        assert_eq!(&buf[..], b"<38>Nov 20 host sshd[1]: x\n");
        assert!(!buf.contains(&b'X'));
        // No spare: a fresh buffer of at least the size asked for.
        let mut buf = BytesMut::from(&b"abc"[..]);
        refill(&mut buf, 100, 8192, &spares);
        assert_eq!(&buf[..], b"abc");
        assert!(buf.capacity() >= 8192);
        // A spare too small for what is carried and asked is dropped, not used.
        spares.put(recycled(b'Y', 64, 64));
        let mut full = BytesMut::with_capacity(3);
        full.extend_from_slice(b"abc");
        refill(&mut full, 1000, 2048, &spares);
        assert_eq!(&full[..], b"abc");
        assert!(full.capacity() >= 2048);
        assert_eq!(spares.len(), 0);
    }
}
