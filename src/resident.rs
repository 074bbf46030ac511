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
//! a uprobe) is swapped out or stays, never silently replaced by the file's. It assumes what
//! every local file system enforces: a running executable is not rewritten in place (a write
//! fails with ETXTBSY; an upgrade replaces the file, and the old inode stays mapped). Done
//! once, at ready: a reload's pages (config compilation) stay, rather than making every reload
//! read the code of the receive path from the file again.

use std::io;

/// One mapping of `/proc/self/smaps`: its address range, whether it can be written, the file
/// it maps (device and inode), what of it is resident, and how much of that is private copies
/// (written since it was mapped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    writable: bool,
    file: (u64, u64, u64),
    resident_kib: u64,
    anonymous_kib: u64,
}

/// Parses the first line of a mapping (`start-end perms offset major:minor inode [path]`).
fn mapping(line: &str) -> Option<Mapping> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode = fields.next()?.parse().ok()?;
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        writable: perms.as_bytes().get(1) == Some(&b'w'),
        file: (
            u64::from_str_radix(major, 16).ok()?,
            u64::from_str_radix(minor, 16).ok()?,
            inode,
        ),
        resident_kib: 0,
        anonymous_kib: 0,
    })
}

/// A `Rss:` or `Anonymous:` value in KiB; unreadable counts as `u64::MAX` (left alone).
fn kib(value: &str) -> u64 {
    value
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or(u64::MAX)
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`).
fn mappings(smaps: &str) -> Vec<Mapping> {
    let mut all: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        if let Some(m) = mapping(line) {
            all.push(m);
        } else if let Some(m) = all.last_mut() {
            if let Some(value) = line.strip_prefix("Rss:") {
                m.resident_kib = kib(value);
            } else if let Some(value) = line.strip_prefix("Anonymous:") {
                m.anonymous_kib = kib(value);
            }
        }
    }
    all
}

/// The mappings worth reclaiming: those of `file` (major, minor, inode) that cannot be written
/// and hold no private copies. The relocated read-only data (written by the loader, then made
/// read-only) is private copies: pageout would send it to swap, so it is left out.
fn clean_read_only_of(smaps: &str, file: (u64, u64, u64)) -> Vec<Mapping> {
    mappings(smaps)
        .into_iter()
        .filter(|m| m.file == file && !m.writable && m.anonymous_kib == 0 && m.end > m.start)
        .collect()
}

/// The file mapped at `code` (an address of this binary's own code) as `smaps` names it:
/// (major, minor, inode). Taken from the mappings themselves rather than from a `stat` of
/// `/proc/self/exe`, whose device differs from the one the maps print on btrfs subvolumes and
/// overlay file systems (containers).
fn file_at(smaps: &str, code: usize) -> Option<(u64, u64, u64)> {
    mappings(smaps)
        .into_iter()
        .find(|m| m.start <= code && code < m.end)
        .map(|m| m.file)
        .filter(|&(_, _, inode)| inode != 0)
}

/// Resident KiB of the clean read-only mappings of `file` (a sum saturating at unreadable).
fn resident_of(smaps: &str, file: (u64, u64, u64)) -> u64 {
    clean_read_only_of(smaps, file)
        .iter()
        .fold(0u64, |sum, m| sum.saturating_add(m.resident_kib))
}

/// What [`page_out_binary`] did.
#[derive(Debug)]
pub struct PagedOut {
    /// Bytes of mappings advised.
    pub advised: usize,
    /// Resident KiB of those mappings before and after (the kernel skips pages another
    /// process maps, and a file this process may not write: after can stay near before).
    pub resident_kib: (u64, u64),
    /// Why a mapping was refused while others were advised (a locked one, say).
    pub refused: Option<io::Error>,
}

/// Asks the kernel to reclaim the read-only pages of the running binary (its code, read-only
/// data and unwind tables), once the daemon is ready and what start-up ran is no longer
/// needed. An error means nothing was advised (no /proc, or a kernel before 5.4 for every
/// mapping); the daemon runs on unchanged either way, and the caller logs it.
pub fn page_out_binary() -> io::Result<PagedOut> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let Some(file) = file_at(
        &smaps,
        page_out_binary as fn() -> io::Result<PagedOut> as usize,
    ) else {
        return Err(io::Error::other("no file mapping holds this code"));
    };
    let before = resident_of(&smaps, file);
    let mut advised = 0;
    let mut refused = None;
    for m in clean_read_only_of(&smaps, file) {
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
        match rc {
            0 => advised += m.end - m.start,
            // One refused (a locked mapping, say): the others are still worth advising.
            _ => refused = Some(io::Error::last_os_error()),
        }
    }
    match (advised, refused) {
        (0, Some(error)) => Err(error),
        (advised, refused) => {
            let smaps = std::fs::read_to_string("/proc/self/smaps")?;
            Ok(PagedOut {
                advised,
                resident_kib: (before, resident_of(&smaps, file)),
                refused,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon's smaps, abridged: its binary's four mappings, the heap, libc's code, and a
    /// file of another device with the binary's inode number.
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
7fddadc00000-7fddadc10000 r--p 00000000 103:02 5948397                   /mnt/other
Rss:                  64 kB
Anonymous:             0 kB
";

    const BINARY: (u64, u64, u64) = (0xfe, 0, 5948397);

    #[test]
    fn only_the_binarys_clean_read_only_mappings_are_chosen() {
        let chosen = clean_read_only_of(SMAPS, BINARY);
        let ranges: Vec<(usize, usize)> = chosen.iter().map(|m| (m.start, m.end)).collect();
        // Not the relocated data (read-only but written at load), the writable data, the heap,
        // another file's code, nor another device's file with the same inode number.
        assert_eq!(
            ranges,
            vec![
                (0x5581_1079_c000, 0x5581_109f_c000),
                (0x5581_109f_c000, 0x5581_1132_9000),
            ]
        );
        assert_eq!(resident_of(SMAPS, BINARY), 1148 + 7028);
        assert!(clean_read_only_of(SMAPS, (0xfe, 0, 1)).is_empty());
        assert_eq!(clean_read_only_of(SMAPS, (0x103, 2, 5948397)).len(), 1);
        assert_eq!(mapping("Rss:  4 kB"), None);
        // An unreadable private-copy count leaves the mapping alone.
        let odd = SMAPS.replacen("Anonymous:             0 kB", "Anonymous: ? kB", 1);
        assert_eq!(clean_read_only_of(&odd, BINARY).len(), 1);
    }

    #[test]
    fn the_executable_is_found_in_its_own_maps() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let file = file_at(
            &smaps,
            page_out_binary as fn() -> io::Result<PagedOut> as usize,
        )
        .expect("the mapping of this code");
        assert!(
            !clean_read_only_of(&smaps, file).is_empty(),
            "no clean read-only mapping of {file:?} in /proc/self/smaps"
        );
        // Found by a code address, whatever device a stat of the executable reports.
        assert_eq!(file_at(SMAPS, 0x5581_1100_0000), Some(BINARY));
        assert_eq!(
            file_at(SMAPS, 0x5581_1300_0000),
            None,
            "the heap is no file"
        );
        assert_eq!(file_at(SMAPS, 0x1000), None);
    }

    #[test]
    fn the_binarys_start_up_pages_leave_the_process() {
        // This test binary is mapped by this process alone, so the kernel can reclaim what no
        // other test thread touches meanwhile; those threads may bring some back at once, so
        // only a drop is asserted.
        let out = match page_out_binary() {
            Ok(out) => out,
            Err(e) => panic!("MADV_PAGEOUT needs Linux 5.4 or later: {e}"),
        };
        let (before, after) = out.resident_kib;
        assert!(
            out.advised > 0,
            "no clean read-only mapping of the test binary found"
        );
        assert!(
            after < before,
            "resident read-only pages of the binary: {before} KiB before, {after} KiB after"
        );
    }
}
