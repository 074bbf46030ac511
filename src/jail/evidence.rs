//! A jail's recent failure lines, for the evidence of its bans: one bounded ring per jail, each
//! line linked to the same address's previous one, so a tracked address costs only the link in
//! its window entry (which fits in the entry's padding) and the memory of evidence is bounded
//! by the ring, not by the number of attackers. Under a flood wider than the ring, the oldest
//! lines go first and a ban shows the deciding lines the ring still holds.

use std::collections::VecDeque;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::window::NIL;
use crate::evidence::{Line, Seen};

/// Most lines a jail's ring holds.
pub(crate) const RING_LINES: usize = 32_768;
/// Most bytes (records and their text) a jail's ring holds: 4 MiB.
pub(crate) const RING_BYTES: usize = 4 << 20;

/// One failure line in the ring.
#[derive(Debug)]
struct Record {
    key: IpNetwork,
    /// Sequence number of the same key's previous line, or NIL.
    prev: u32,
    count: u32,
    host: Option<Arc<str>>,
    seen: Seen,
}

impl Record {
    /// What the record holds in memory, allocation overhead included (approximately).
    fn bytes(&self) -> usize {
        std::mem::size_of::<Record>() + self.seen.text_bytes() + 16
    }
}

/// The ring: sequence numbers wrap (u32), a record is found by its distance from the first.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    records: VecDeque<Record>,
    /// Sequence number of `records[0]`.
    first: u32,
    bytes: usize,
}

impl Ring {
    /// The sequence number the next pushed line will get.
    pub(crate) fn next_seq(&self) -> u32 {
        self.first.wrapping_add(self.records.len() as u32)
    }

    /// Adds a line of `key` (which stands for `count` failures), linked to the key's previous
    /// line `prev`; drops the oldest lines beyond the bounds. Returns its sequence number.
    pub(crate) fn push(
        &mut self,
        key: IpNetwork,
        prev: u32,
        count: u32,
        host: Option<Arc<str>>,
        seen: Seen,
    ) -> u32 {
        let record = Record {
            key,
            prev,
            count,
            host,
            seen,
        };
        let size = record.bytes();
        while !self.records.is_empty()
            && (self.records.len() >= RING_LINES || self.bytes + size > RING_BYTES)
        {
            if let Some(old) = self.records.pop_front() {
                self.bytes -= old.bytes();
            }
            self.first = self.first.wrapping_add(1);
        }
        let seq = self.next_seq();
        self.bytes += size;
        self.records.push_back(record);
        seq
    }

    fn get(&self, seq: u32) -> Option<&Record> {
        if seq == NIL {
            return None;
        }
        self.records.get(seq.wrapping_sub(self.first) as usize)
    }

    /// The lines of `key` ending at `last`, oldest first, covering at most `failures` failures
    /// (those still held; a line overwritten or of another key ends the chain).
    pub(crate) fn chain(&self, key: IpNetwork, last: u32, failures: u32) -> Vec<Line> {
        let mut lines = Vec::new();
        let (mut seq, mut counted) = (last, 0u32);
        while counted < failures {
            let Some(record) = self.get(seq).filter(|r| r.key == key) else {
                break;
            };
            lines.push(Line {
                at_ms: record.seen.at_ms,
                host: record.host.as_deref().map(str::to_string),
                program: record.seen.program().map(str::to_string),
                message: record.seen.message().to_string(),
                count: record.count,
            });
            counted = counted.saturating_add(record.count.max(1));
            if record.prev == seq {
                break;
            }
            seq = record.prev;
        }
        lines.reverse();
        lines
    }

    /// Lines held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn seen(text: &str) -> Seen {
        Seen::new(UNIX_EPOCH, Some("sshd"), text)
    }

    #[test]
    fn chains_follow_one_key_and_stop_at_the_count() {
        let mut ring = Ring::default();
        let a: IpNetwork = "192.0.2.1/32".parse().unwrap();
        let b: IpNetwork = "192.0.2.2/32".parse().unwrap();
        let a1 = ring.push(a, NIL, 1, Some("web-1".into()), seen("a1"));
        let b1 = ring.push(b, NIL, 1, None, seen("b1"));
        let a2 = ring.push(a, a1, 1, Some("web-2".into()), seen("a2"));
        let a3 = ring.push(a, a2, 1, None, seen("a3"));
        let texts = |lines: Vec<Line>| lines.into_iter().map(|l| l.message).collect::<Vec<_>>();
        assert_eq!(texts(ring.chain(a, a3, 3)), ["a1", "a2", "a3"]);
        assert_eq!(texts(ring.chain(a, a3, 2)), ["a2", "a3"]);
        assert_eq!(texts(ring.chain(b, b1, 5)), ["b1"]);
        assert_eq!(ring.chain(a, a3, 3)[1].host.as_deref(), Some("web-2"));
        // A link to another key's line ends the chain.
        assert!(ring.chain(a, b1, 3).is_empty());
    }

    #[test]
    fn the_ring_is_bounded_and_forgets_the_oldest() {
        let mut ring = Ring::default();
        let a: IpNetwork = "192.0.2.1/32".parse().unwrap();
        let long = "x".repeat(crate::evidence::MAX_MESSAGE_BYTES);
        let mut prev = NIL;
        for _ in 0..(RING_LINES + 100) {
            prev = ring.push(a, prev, 1, None, seen(&long));
        }
        assert!(ring.len() < RING_LINES);
        assert!(ring.bytes <= RING_BYTES);
        let lines = ring.chain(a, prev, u32::MAX);
        assert_eq!(
            lines.len(),
            ring.len(),
            "the chain ends where the ring does"
        );
    }
}
