//! Datagrams taken from the kernel in batches (`recvmmsg`), with each one's sender and the
//! socket's kernel drop count (`SO_RXQ_OVFL`).
//!
//! One system call hands over up to [`BATCH`] datagrams, so at 300k msg/s the receiver spends
//! its time parsing rather than entering the kernel. The buffers are allocated once per
//! receiver task, zeroed lazily by the allocator: only the pages datagrams actually fill become
//! resident, so a 64 KiB message limit costs a page per slot, not 64 KiB.
//!
//! `libc` directly rather than `nix` or `socket2`: socket2 has no `recvmmsg`, and nix's wrapper
//! allocates its result vector and parses control messages into owned enums on every call;
//! libc is already a dependency, and the unsafe part is the few lines below.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use metrics::Counter;

/// Datagrams one `recvmmsg` call may return.
pub(crate) const BATCH: usize = 32;

/// Room for one control message: `SO_RXQ_OVFL`'s u32 (CMSG_SPACE(4) is 16 bytes on Linux);
/// u64 words keep it aligned for `cmsghdr`.
const CONTROL_WORDS: usize = 4;

/// Receive buffers, senders and lengths of one batch; owned by one receiver task.
pub(crate) struct Batch {
    slot: usize,
    data: Vec<u8>,
    senders: Vec<libc::sockaddr_storage>,
    control: Vec<[u64; CONTROL_WORDS]>,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    overflow: Option<u32>,
}

impl Batch {
    /// An empty batch; [`Batch::fit`] sizes it before the first receive.
    pub(crate) fn new() -> Self {
        Batch {
            slot: 0,
            data: Vec::new(),
            senders: Vec::new(),
            control: vec![[0; CONTROL_WORDS]; BATCH],
            lens: Vec::with_capacity(BATCH),
            truncated: Vec::with_capacity(BATCH),
            overflow: None,
        }
    }

    /// Makes every slot `slot` bytes long (a no-op when it already is).
    pub(crate) fn fit(&mut self, slot: usize) {
        if self.slot != slot {
            self.slot = slot;
            // vec! of zeroes is calloc: untouched pages never become resident.
            self.data = vec![0; slot * BATCH];
            // SAFETY: an all-zero sockaddr_storage is a valid (AF_UNSPEC) value.
            self.senders = vec![unsafe { std::mem::zeroed() }; BATCH];
        }
    }

    /// Datagram `i`; `truncated` when it was longer than a slot.
    pub(crate) fn datagram(&self, i: usize) -> (&[u8], bool) {
        let start = i * self.slot;
        (&self.data[start..start + self.lens[i]], self.truncated[i])
    }

    /// The IP address datagram `i` came from; None for a Unix socket's sender.
    pub(crate) fn sender(&self, i: usize) -> Option<IpAddr> {
        ip_of(&self.senders[i])
    }

    /// The highest kernel drop count (`SO_RXQ_OVFL`) the last batch carried.
    pub(crate) fn overflow(&self) -> Option<u32> {
        self.overflow
    }

    /// One non-blocking `recvmmsg` on `fd`: how many datagrams arrived (WouldBlock when none).
    pub(crate) fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        self.lens.clear();
        self.truncated.clear();
        self.overflow = None;
        let slot = self.slot;
        if slot == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "batch not sized",
            ));
        }
        let base = self.data.as_mut_ptr();
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            // SAFETY: i * slot is inside `data`, which holds BATCH slots.
            iov_base: unsafe { base.add(i * slot) }.cast(),
            iov_len: slot,
        });
        let senders = self.senders.as_mut_ptr();
        let control = self.control.as_mut_ptr();
        let mut headers: [libc::mmsghdr; BATCH] = std::array::from_fn(|i| {
            // SAFETY: an all-zero mmsghdr is valid; the pointers set below outlive the call.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = unsafe { senders.add(i) }.cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            m.msg_hdr.msg_iov = &mut iovs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = unsafe { control.add(i) }.cast();
            m.msg_hdr.msg_controllen = CONTROL_WORDS * 8;
            m
        });
        // SAFETY: every header points at buffers owned by `self` or this frame, valid for the
        // lengths given; MSG_DONTWAIT keeps the call from blocking the runtime.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        for header in &headers[..n as usize] {
            self.lens.push((header.msg_len as usize).min(slot));
            self.truncated
                .push(header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0);
            if let Some(drops) = rxq_overflow(&header.msg_hdr) {
                self.overflow = Some(self.overflow.map_or(drops, |d| d.max(drops)));
            }
        }
        Ok(n as usize)
    }
}

/// The `SO_RXQ_OVFL` count a received message carries, if any.
fn rxq_overflow(header: &libc::msghdr) -> Option<u32> {
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG macros stay inside.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SO_RXQ_OVFL {
                return Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg).cast::<u32>(),
                ));
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// The address in a sockaddr the kernel wrote; None for other families.
fn ip_of(storage: &libc::sockaddr_storage) -> Option<IpAddr> {
    let ptr: *const libc::sockaddr_storage = storage;
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The kernel's drop count of one socket turned into increments of a counter: `SO_RXQ_OVFL`
/// reports the socket's running total (a u32 that wraps), shared by every receiver task.
pub(crate) struct KernelDrops {
    seen: AtomicU32,
    counter: Counter,
}

impl KernelDrops {
    /// Drops of a new socket (the kernel starts it at zero) added to `counter`.
    pub(crate) fn new(counter: Counter) -> Self {
        KernelDrops {
            seen: AtomicU32::new(0),
            counter,
        }
    }

    /// Takes a running total the kernel reported; counts what is new since the highest seen.
    pub(crate) fn observe(&self, total: u32) {
        let mut seen = self.seen.load(Ordering::Relaxed);
        loop {
            let new = total.wrapping_sub(seen);
            // Zero, or a stale total another task already passed (a "negative" step).
            if new == 0 || new > u32::MAX / 2 {
                return;
            }
            match self
                .seen
                .compare_exchange(seen, total, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.counter.increment(u64::from(new));
                    return;
                }
                Err(now) => seen = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_holds_every_datagram_with_its_sender_and_flags_the_long_one() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = receiver.local_addr().unwrap();
        for text in ["one", "two", "three-is-long"] {
            sender.send_to(text.as_bytes(), to).unwrap();
        }
        let mut batch = Batch::new();
        batch.fit(6);
        let mut got = Vec::new();
        while got.len() < 3 {
            match batch.receive(receiver.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (bytes, truncated) = batch.datagram(i);
                        got.push((bytes.to_vec(), truncated, batch.sender(i)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        let from = Some(sender.local_addr().unwrap().ip());
        assert_eq!(got[0], (b"one".to_vec(), false, from));
        assert_eq!(got[1], (b"two".to_vec(), false, from));
        assert_eq!(got[2], (b"three-".to_vec(), true, from));
        let empty = batch.receive(receiver.as_raw_fd()).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn kernel_totals_count_once_and_survive_wrapping() {
        let recorder = metrics_util_free::Recorded::default();
        let drops = KernelDrops::new(recorder.counter());
        drops.observe(5);
        drops.observe(3); // stale: another task saw 5 first
        drops.observe(5);
        drops.observe(9);
        assert_eq!(recorder.total(), 9);
        let wrapping = KernelDrops::new(recorder.counter());
        wrapping.seen.store(u32::MAX - 1, Ordering::Relaxed);
        wrapping.observe(2);
        assert_eq!(recorder.total(), 9 + 4);
    }

    /// A counter whose increments land in a shared total (no global recorder needed).
    mod metrics_util_free {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;

        #[derive(Default)]
        pub struct Recorded(Arc<Total>);

        #[derive(Default)]
        pub struct Total(AtomicU64);

        impl metrics::CounterFn for Total {
            fn increment(&self, value: u64) {
                self.0.fetch_add(value, Ordering::Relaxed);
            }
            fn absolute(&self, value: u64) {
                self.0.store(value, Ordering::Relaxed);
            }
        }

        impl Recorded {
            pub fn counter(&self) -> metrics::Counter {
                metrics::Counter::from_arc(self.0.clone())
            }
            pub fn total(&self) -> u64 {
                self.0 .0.load(Ordering::Relaxed)
            }
        }
    }
}
