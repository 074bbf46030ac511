//! The binary's start-up pages handed back to the kernel once the daemon is up.
//!
//! Start-up runs code an idle daemon never runs again (config and filter compilation, clap,
//! the state's schema and restore, TLS set-up) and reads read-only data it never reads again,
//! and the kernel maps 64 KiB around every page touched (fault-around): an idle daemon kept 8-9
//! MB of its ~12 MB binary resident, two thirds of its RSS, of which the idle loop uses a few
//! hundred KiB. `MADV_PAGEOUT` asks the kernel to reclaim the binary's read-only mappings: a
//! page only this process maps leaves its page tables and the page cache and is read from the
//! file again at its next use (the first messages after start-up or a reload pay those reads
//! once); a page another process maps (a `jailsink` command running) is left alone. Unlike
//! `MADV_DONTNEED` it never discards data: a private copy of a page (a debugger's breakpoint,
//! a uprobe) is swapped out or stays, never silently replaced by the file's.

use std::io;
use std::os::unix::fs::MetadataExt;

/// One mapping of `/proc/self/smaps`: its address range, whether it can be written, the file
/// it maps, and how much of it is private copies (written since it was mapped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    inode: u64,
    anonymous_kib: u64,
}

/// Parses the first line of a mapping (`start-end perms offset dev inode [path]`).
fn mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?.parse().ok()?;
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        inode,
        anonymous_kib: 0,
    })
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`), with their private copies.
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut all: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        if let Some(m) = mapping(line) {
            all.push(m);
        } else if let (Some(kib), Some(m)) = (line.strip_prefix("Anonymous:"), all.last_mut()) {
            let kib = kib.trim().trim_end_matches("kB").trim();
            // Unreadable: counted as written, so the mapping is left alone.
            m.anonymous_kib = kib.parse().unwrap_or(u64::MAX);
        }
    }
    all
}

/// The mappings worth reclaiming: those of the file with `inode` that cannot be written and
/// hold no private copies. The relocated read-only data (written by the loader, then made
/// read-only) is private copies: pageout would send it to swap, so it is left out.
fn clean_read_only_of(smaps: &str, inode: u64) -> Vec<Mapping> {
    mappings(smaps)
        .into_iter()
        .filter(|m| m.inode == inode && !m.writable && m.anonymous_kib == 0 && m.end > m.start)
        .collect()
}

/// Asks the kernel to reclaim the read-only pages of the running binary (its code, read-only
/// data and unwind tables); returns the bytes of mappings advised. Called once the daemon is
/// ready and after each reload, when what start-up ran is no longer needed. An error means
/// nothing (or not all) was advised, and the daemon runs on unchanged: the caller logs it.
pub fn page_out_binary() -> io::Result<usize> {
    // The executable's inode, even if the file was replaced (an upgrade) since it started.
    let inode = std::fs::metadata("/proc/self/exe")?.ino();
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut advised = 0;
    for m in clean_read_only_of(&smaps, inode) {
        // SAFETY: the range is a whole mapping of this process (page-aligned, as the kernel
        // lists it), and MADV_PAGEOUT changes no contents: a reclaimed page reads back the
        // same bytes at its next touch.
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_PAGEOUT,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        advised += m.end - m.start;
    }
    Ok(advised)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon's smaps, abridged: its binary's four mappings, the heap and libc's code.
    const SMAPS: &str = "\
55811079c000-5581109fc000 r--p 00000000 fe:00 5948397                    /usr/sbin/jailsink
Rss:                1148 kB
Anonymous:             0 kB
5581109fc000-558111329000 r-xp 0025f000 fe:00 5948397                    /usr/sbin/jailsink
Rss:                7028 kB
Anonymous:             0 kB
558111329000-55811146f000 r--p 00b8b000 fe:00 5948397                    /usr/sbin/jailsink
Rss:                1288 kB
Anonymous:          1288 kB
55811146f000-558111476000 rw-p 00cd0000 fe:00 5948397                    /usr/sbin/jailsink
Rss:                  28 kB
Anonymous:            28 kB
558113000000-558113400000 rw-p 00000000 00:00 0                          [heap]
Rss:                2932 kB
Anonymous:          2932 kB
7fddadaa7000-7fddadbfd000 r-xp 00028000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1060 kB
Anonymous:             0 kB
";

    #[test]
    fn only_the_binarys_clean_read_only_mappings_are_chosen() {
        let chosen = clean_read_only_of(SMAPS, 5948397);
        let ranges: Vec<(usize, usize)> = chosen.iter().map(|m| (m.start, m.end)).collect();
        // Not the relocated data (read-only but written at load), the writable data, the heap,
        // nor another file's code.
        assert_eq!(
            ranges,
            vec![
                (0x5581_1079_c000, 0x5581_109f_c000),
                (0x5581_109f_c000, 0x5581_1132_9000),
            ]
        );
        assert!(clean_read_only_of(SMAPS, 1).is_empty());
        assert_eq!(mapping("Rss:  4 kB"), None);
        // An unreadable private-copy count leaves the mapping alone.
        let odd = SMAPS.replacen("Anonymous:             0 kB", "Anonymous: ? kB", 1);
        assert_eq!(clean_read_only_of(&odd, 5948397).len(), 1);
    }

    /// Resident KiB of this process's clean read-only mappings of its own binary.
    fn resident_kib(inode: u64) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let chosen = clean_read_only_of(&smaps, inode);
        let mut kib = 0;
        let mut ours = false;
        for line in smaps.lines() {
            if let Some(m) = mapping(line) {
                ours = chosen.iter().any(|c| c.start == m.start);
            } else if let (true, Some(rss)) = (ours, line.strip_prefix("Rss:")) {
                kib += rss
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
        kib
    }

    #[test]
    fn the_binarys_start_up_pages_leave_the_process() {
        // This test binary is mapped by this process alone, so the kernel can reclaim what no
        // other test thread touches meanwhile (a small part of a debug binary's code).
        let inode = std::fs::metadata("/proc/self/exe").expect("exe").ino();
        let before = resident_kib(inode);
        let advised = match page_out_binary() {
            Ok(advised) => advised,
            Err(e) => panic!("MADV_PAGEOUT needs Linux 5.4 or later: {e}"),
        };
        let after = resident_kib(inode);
        assert!(
            advised > 0,
            "no clean read-only mapping of the test binary found"
        );
        assert!(
            after * 2 < before,
            "resident read-only pages of the binary: {before} KiB before, {after} KiB after"
        );
    }
}
