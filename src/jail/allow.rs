//! Allowlists: the addresses and networks a jail never bans, as a prefix trie ([`IgnoreTable`],
//! lookups O(prefix length) however many entries), and the background task ([`watch`]) that
//! keeps the run-time parts current: `ignoreip` DNS names resolved every `ignore_refresh`
//! (the last good answer kept when DNS fails) and `ignoreip_files` re-read when they change.
//! Nothing here runs on the hot path: the jail task only swaps in the tables this task sends.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use prefix_trie::PrefixSet;
use tokio::sync::{mpsc, watch as channel};
use tokio::time::Instant;

/// How often `ignoreip_files` are checked for changes (one stat per file).
const FILE_POLL: Duration = Duration::from_secs(1);

/// How long one DNS name may take to resolve before its last good answer is kept.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// Most entries one allowlist file contributes; the rest are logged and skipped.
const MAX_FILE_ENTRIES: usize = 1_000_000;

/// Never banned: every entry as a prefix, IPv4 and IPv6 apart.
#[derive(Clone, Default)]
pub struct IgnoreTable {
    v4: PrefixSet<Ipv4Network>,
    v6: PrefixSet<Ipv6Network>,
    /// Every entry, shortest prefix first, when there are at most [`SCANNED`] (the shipped
    /// `127.0.0.0/8` and `::1`): the jail task asks about every failure's address, and a
    /// scan of a few entries is several times cheaper than two walks of the trie. None
    /// otherwise (the trie answers).
    few: Option<Vec<IpNetwork>>,
}

/// Most entries a table answers by a scan ([`IgnoreTable::overlapping`]).
const SCANNED: usize = 8;

impl fmt::Debug for IgnoreTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IgnoreTable")
            .field("v4", &self.v4.len())
            .field("v6", &self.v6.len())
            .finish()
    }
}

impl IgnoreTable {
    /// A table of `entries` (host bits ignored; IPv4-mapped networks as their IPv4 networks,
    /// as failures are counted).
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a IpNetwork>) -> Self {
        let mut table = IgnoreTable::default();
        let mut few = Vec::new();
        for net in entries {
            let net = crate::address::normalise_network(crate::address::network_of(
                net.ip(),
                net.prefix(),
            ));
            match net {
                IpNetwork::V4(n) => table.v4.insert(n),
                IpNetwork::V6(n) => table.v6.insert(n),
            };
            if few.len() <= SCANNED && !few.contains(&net) {
                few.push(net);
            }
        }
        if few.len() <= SCANNED {
            few.sort_by_key(|n| n.prefix());
            table.few = Some(few);
        }
        table
    }

    /// The entry `target` overlaps: one that holds it, else one inside it (a network ban
    /// never takes an allowlisted address with it). O(prefix length), plus one step down.
    pub fn overlapping(&self, target: IpNetwork) -> Option<IpNetwork> {
        let host = match target {
            IpNetwork::V4(t) => t.prefix() == 32,
            IpNetwork::V6(t) => t.prefix() == 128,
        };
        // A host address: only an entry that holds it can overlap it (one inside it is the
        // address itself, which holds it), and the first that does, shortest prefix first,
        // is the entry the trie finds (its shortest match).
        if let (true, Some(few)) = (host, &self.few) {
            let ip = target.ip();
            return few.iter().find(|n| n.contains(ip)).copied();
        }
        match crate::address::network_of(target.ip(), target.prefix()) {
            IpNetwork::V4(t) => self
                .v4
                .get_spm(&t)
                .or_else(|| self.v4.children(&t).next())
                .map(IpNetwork::V4),
            IpNetwork::V6(t) => self
                .v6
                .get_spm(&t)
                .or_else(|| self.v6.children(&t).next())
                .map(IpNetwork::V6),
        }
    }

    /// Entries in the table.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Every jail's whole allowlist by jail name (ignoreip, ignoreself, and the names and files the
/// watcher keeps current), as the jail task last built it. The fleet's agents and shared
/// windows read it, so they never ban or count what the jail itself would not, and they follow
/// its reloads and run-time updates.
pub type Allowlists = Arc<HashMap<Arc<str>, Arc<IgnoreTable>>>;

/// What one jail's allowlist watcher looks after.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Watched {
    /// The jail.
    pub jail: Arc<str>,
    /// DNS names of `ignoreip`.
    pub names: Vec<String>,
    /// `ignoreip_files` patterns.
    pub files: Vec<PathBuf>,
    /// How often names are resolved again.
    pub refresh: Duration,
}

/// The run-time part of one jail's allowlist, whenever it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowUpdate {
    /// The jail.
    pub jail: Arc<str>,
    /// Addresses of its names and the entries of its files, sorted.
    pub extra: Arc<[IpNetwork]>,
}

/// One line of an allowlist file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// An address or network.
    Network(IpNetwork),
    /// A DNS name, resolved like those of `ignoreip`.
    Name(String),
}

/// Why an allowlist line or file is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadAllow {
    /// Neither an address, a network nor a host name.
    #[error("`{0}` is not an address, a CIDR network or a host name")]
    Line(String),
    /// A file (or the directory of a pattern) cannot be read.
    #[error("{}: {reason}", path.display())]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// What the system said.
        reason: std::io::Error,
    },
}

/// An `ignoreip` entry or file line as an address/network, or a host name.
pub(crate) fn parse_entry(text: &str) -> Result<Entry, BadAllow> {
    if let Ok(net) = text.parse::<IpNetwork>() {
        return Ok(Entry::Network(net));
    }
    if is_host_name(text) {
        return Ok(Entry::Name(text.to_ascii_lowercase()));
    }
    Err(BadAllow::Line(text.to_string()))
}

/// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens, not all
/// digits (so a mistyped address is an error, not a name).
fn is_host_name(text: &str) -> bool {
    let text = text.strip_suffix('.').unwrap_or(text);
    !text.is_empty()
        && text.len() <= 253
        && text.bytes().any(|b| b.is_ascii_alphabetic())
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The entries of an allowlist file's text (`#` comments), with the bad lines as
/// (line number, reason).
pub(crate) fn parse_file(text: &str) -> (Vec<Entry>, Vec<(usize, BadAllow)>) {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if entries.len() >= MAX_FILE_ENTRIES {
            bad.push((
                i + 1,
                BadAllow::Line(format!("{line} (past {MAX_FILE_ENTRIES} entries)")),
            ));
            continue;
        }
        match parse_entry(line) {
            Ok(entry) => entries.push(entry),
            Err(reason) => bad.push((i + 1, reason)),
        }
    }
    (entries, bad)
}

/// True when `pattern`'s file name has `*` or `?`.
fn is_glob(pattern: &Path) -> bool {
    pattern
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(['*', '?']))
}

/// The file-name part of a pattern, as [`wildcard`] takes it.
fn name_pattern(pattern: &Path) -> Vec<char> {
    pattern
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .chars()
        .collect()
}

/// `*` (any run) and `?` (one character) matching of a file name.
fn wildcard(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| wildcard(rest, &name[i..])),
        Some(('?', rest)) => !name.is_empty() && wildcard(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

/// The files `pattern` names now: itself, or the matching files of its directory, sorted.
pub(crate) fn expand(pattern: &Path) -> Result<Vec<PathBuf>, BadAllow> {
    if !is_glob(pattern) {
        std::fs::metadata(pattern).map_err(|reason| BadAllow::Unreadable {
            path: pattern.to_path_buf(),
            reason,
        })?;
        return Ok(vec![pattern.to_path_buf()]);
    }
    let dir = pattern.parent().unwrap_or(Path::new("/"));
    let wanted = name_pattern(pattern);
    let unreadable = |reason| BadAllow::Unreadable {
        path: dir.to_path_buf(),
        reason,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name: Vec<char> = entry.file_name().to_string_lossy().chars().collect();
        // Hidden files are editors' temporaries, never allowlists.
        if name.first() != Some(&'.') && wildcard(&wanted, &name) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// A file as last read: what identifies its version, and its entries.
struct FileState {
    /// mtime, size and inode: an editor's rename or a rewrite within one mtime tick shows too.
    stamp: Option<(SystemTime, u64, u64)>,
    entries: Vec<Entry>,
    gone: bool,
}

/// A name's last good answer and when it is due again.
struct NameState {
    addresses: Vec<IpAddr>,
    due: Instant,
}

/// The watcher's memory: kept across reloads, so a name or file keeps its last good answer.
#[derive(Default)]
struct Watcher {
    files: HashMap<PathBuf, FileState>,
    names: HashMap<String, NameState>,
    sent: HashMap<Arc<str>, Arc<[IpNetwork]>>,
}

/// Starts the allowlist task: it watches what `specs` holds (replaced on reload) and sends each
/// jail's run-time entries to `out` whenever they change; it ends when `specs` is dropped.
pub(crate) fn watch(
    specs: channel::Receiver<Vec<Watched>>,
    out: mpsc::Sender<AllowUpdate>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(specs, out))
}

async fn run(mut specs: channel::Receiver<Vec<Watched>>, out: mpsc::Sender<AllowUpdate>) {
    let mut watcher = Watcher::default();
    let mut tick = tokio::time::interval(FILE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = specs.changed() => match changed {
                // A reload: every jail gets its entries again, since a jail that was rebuilt
                // or stopped being watched dropped what it had.
                Ok(()) => watcher.sent.clear(),
                Err(_) => return,
            },
            _ = tick.tick() => {}
        }
        let current = specs.borrow_and_update().clone();
        for update in watcher.pass(&current).await {
            if out.send(update).await.is_err() {
                return;
            }
        }
    }
}

impl Watcher {
    /// Re-reads changed files, resolves due names, and returns the jails whose entries changed.
    async fn pass(&mut self, specs: &[Watched]) -> Vec<AllowUpdate> {
        let mut updates = Vec::new();
        for spec in specs {
            let mut names: BTreeSet<String> = spec.names.iter().cloned().collect();
            let mut extra: BTreeSet<IpNetwork> = BTreeSet::new();
            for pattern in &spec.files {
                for path in self.files_of(&spec.jail, pattern) {
                    self.refresh_file(&spec.jail, &path);
                    if let Some(state) = self.files.get(&path) {
                        for entry in &state.entries {
                            match entry {
                                Entry::Network(n) => {
                                    extra.insert(*n);
                                }
                                Entry::Name(name) => {
                                    names.insert(name.clone());
                                }
                            }
                        }
                    }
                }
            }
            for name in &names {
                self.resolve(&spec.jail, name, spec.refresh).await;
                if let Some(state) = self.names.get(name) {
                    extra.extend(state.addresses.iter().map(|a| IpNetwork::from(*a)));
                }
            }
            let extra: Arc<[IpNetwork]> = extra.into_iter().collect();
            if self.sent.get(&spec.jail) != Some(&extra) {
                self.sent.insert(spec.jail.clone(), extra.clone());
                updates.push(AllowUpdate {
                    jail: spec.jail.clone(),
                    extra,
                });
            }
        }
        updates
    }

    /// The files of `pattern` now, plus those it matched before (a file that disappears keeps
    /// its last good contents).
    fn files_of(&mut self, jail: &str, pattern: &Path) -> Vec<PathBuf> {
        let mut paths = match expand(pattern) {
            Ok(paths) => paths,
            Err(error) => {
                tracing::debug!(jail, pattern = %pattern.display(), %error, "allowlist pattern unreadable now");
                Vec::new()
            }
        };
        let dir = pattern.parent();
        let wanted = name_pattern(pattern);
        for known in self.files.keys() {
            let matches = known.parent() == dir
                && known
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| wildcard(&wanted, &n.chars().collect::<Vec<_>>()));
            if matches && !paths.contains(known) {
                paths.push(known.clone());
            }
        }
        paths
    }

    /// Reads `path` again if it changed since the last read.
    fn refresh_file(&mut self, jail: &str, path: &Path) {
        let stamp = std::fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                m.ino(),
            )
        });
        let known = self.files.get_mut(path);
        match (stamp, known) {
            (None, Some(state)) => {
                if !state.gone {
                    state.gone = true;
                    tracing::warn!(jail, file = %path.display(), entries = state.entries.len(), "allowlist file disappeared; keeping its last good contents");
                }
            }
            (Some(stamp), Some(state)) if state.stamp == Some(stamp) && !state.gone => {}
            (_, _) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    let (entries, bad) = parse_file(&text);
                    for (line, reason) in bad {
                        tracing::warn!(jail, file = %path.display(), line, %reason, "allowlist line skipped");
                    }
                    tracing::info!(jail, file = %path.display(), entries = entries.len(), "allowlist file read");
                    self.files.insert(
                        path.to_path_buf(),
                        FileState {
                            stamp,
                            entries,
                            gone: false,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(jail, file = %path.display(), %error, "allowlist file unreadable; keeping its last good contents");
                }
            },
        }
    }

    /// Resolves `name` when it is due, keeping the last good answer when DNS fails.
    async fn resolve(&mut self, jail: &str, name: &str, refresh: Duration) {
        let now = Instant::now();
        if self.names.get(name).is_some_and(|s| s.due > now) {
            return;
        }
        let looked_up = tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
        let state = self
            .names
            .entry(name.to_string())
            .or_insert_with(|| NameState {
                addresses: Vec::new(),
                due: now,
            });
        state.due = now + refresh;
        match looked_up {
            Ok(Ok(found)) => {
                let mut addresses: Vec<IpAddr> =
                    found.map(|a| crate::address::normalise(a.ip())).collect();
                addresses.sort();
                addresses.dedup();
                if addresses != state.addresses {
                    tracing::info!(jail, name, addresses = ?addresses, "allowlist name resolved");
                }
                state.addresses = addresses;
            }
            Ok(Err(error)) => {
                tracing::warn!(jail, name, %error, kept = ?state.addresses, "allowlist name did not resolve; keeping its last good answer");
            }
            Err(_) => {
                tracing::warn!(jail, name, kept = ?state.addresses, "allowlist name timed out; keeping its last good answer");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// A fleet ban (or an escalation) overlaps an entry either way: a network holding the
    /// entry, or the entry itself.
    #[test]
    fn overlap_both_ways() {
        let ignore: Vec<ipnetwork::IpNetwork> = vec!["10.0.0.5/32".parse().unwrap()];
        let table = super::IgnoreTable::new(&ignore);
        assert!(table.overlapping("10.0.0.0/8".parse().unwrap()).is_some());
        assert!(table.overlapping("10.0.0.5/32".parse().unwrap()).is_some());
        assert!(table.overlapping("10.0.0.6/32".parse().unwrap()).is_none());
    }

    use super::*;
    use crate::jail::test_rng::Rng;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn the_table_finds_holders_and_networks_inside() {
        let t = IgnoreTable::new(&[
            net("127.0.0.0/8"),
            net("198.51.100.7/32"),
            net("2001:db8::/32"),
        ]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.overlapping(net("127.1.2.3/32")), Some(net("127.0.0.0/8")));
        assert_eq!(
            t.overlapping(net("198.51.100.0/24")),
            Some(net("198.51.100.7/32"))
        );
        assert_eq!(t.overlapping(net("198.51.100.8/32")), None);
        assert_eq!(
            t.overlapping(net("2001:db8:5::1/128")),
            Some(net("2001:db8::/32"))
        );
        assert_eq!(t.overlapping(net("2001:db9::/64")), None);
    }

    #[test]
    fn ipv4_mapped_entries_allow_the_ipv4_addresses_failures_are_counted_as() {
        // Both the scanned table (few entries) and the trie (more than SCANNED).
        for extra in [0u32, 20] {
            let mut entries = vec![net("::ffff:192.0.2.0/120"), net("::ffff:203.0.113.9")];
            entries.extend((0..extra).map(|i| net(&format!("10.{i}.0.0/16"))));
            let t = IgnoreTable::new(&entries);
            assert_eq!(
                t.overlapping(net("192.0.2.5/32")),
                Some(net("192.0.2.0/24"))
            );
            assert_eq!(
                t.overlapping(net("203.0.113.9/32")),
                Some(net("203.0.113.9/32"))
            );
            assert_eq!(t.overlapping(net("203.0.113.10/32")), None);
        }
    }

    /// A reproducible sequence of 32-bit numbers from `seed` (the tests' [`Rng`], its low
    /// half: these tests hold the table to a reference, whatever the numbers).
    fn xorshift(seed: u64) -> impl FnMut() -> u32 {
        let mut rng = Rng(seed);
        move || rng.next() as u32
    }

    #[test]
    fn the_table_agrees_with_a_linear_scan() {
        // Deterministic entries of every size near each other, probed with addresses and
        // networks: the trie must answer what the old linear scan answered.
        let mut next = xorshift(0x9e37_79b9);
        let entries: Vec<IpNetwork> = (0..2000)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (next() & 0x00ff_ffff));
                let prefix = [32, 30, 24, 20, 16][i % 5];
                crate::address::network_of(IpAddr::V4(ip), prefix)
            })
            .collect();
        let table = IgnoreTable::new(&entries);
        for i in 0..5_000 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | (next() & 0x00ff_ffff));
            let target = crate::address::network_of(IpAddr::V4(ip), [32, 24, 12][i % 3]);
            let linear = entries
                .iter()
                .any(|n| n.contains(target.network()) || target.contains(n.network()));
            let found = table.overlapping(target);
            assert_eq!(found.is_some(), linear, "{target}");
            if let Some(n) = found {
                assert!(n.contains(target.network()) || target.contains(n.network()));
            }
        }
    }

    /// A small table answers a host address by its scan exactly as the trie does: tables of
    /// 0 to 9 entries (IPv4 and IPv6, /0 to host prefixes, nested and repeated), host
    /// addresses inside and outside them, IPv4-mapped IPv6 ones included.
    #[test]
    fn a_small_tables_scan_answers_as_the_trie() {
        let mut next = xorshift(0x1234_5678);
        let mut scanned = 0;
        for round in 0..400 {
            let entries: Vec<IpNetwork> = (0..round % 10)
                .map(|_| {
                    let r = next();
                    if r % 3 == 0 {
                        let ip = std::net::Ipv6Addr::from(
                            0x2001_0db8u128 << 96 | u128::from(r >> 4 & 0xff),
                        );
                        crate::address::network_of(
                            IpAddr::V6(ip),
                            [128, 120, 64, 0][(r >> 12) as usize % 4],
                        )
                    } else {
                        let ip = std::net::Ipv4Addr::from(0x7f00_0000 | (r >> 2 & 0x0000_ffff));
                        crate::address::network_of(
                            IpAddr::V4(ip),
                            [32, 24, 16, 8, 0][(r >> 20) as usize % 5],
                        )
                    }
                })
                .collect();
            let table = IgnoreTable::new(&entries);
            let trie = IgnoreTable {
                few: None,
                ..table.clone()
            };
            scanned += usize::from(table.few.is_some());
            for _ in 0..50 {
                let r = next();
                let ip = match r % 3 {
                    0 => IpAddr::V6(std::net::Ipv6Addr::from(
                        0x2001_0db8u128 << 96 | u128::from(r >> 4 & 0x1ff),
                    )),
                    1 => IpAddr::V6(
                        std::net::Ipv4Addr::from(0x7f00_0000 | (r >> 2 & 0xffff)).to_ipv6_mapped(),
                    ),
                    _ => IpAddr::V4(std::net::Ipv4Addr::from(
                        0x7f00_0000 | (r >> 2 & 0x0001_ffff),
                    )),
                };
                let target = IpNetwork::from(ip);
                assert_eq!(
                    table.overlapping(target),
                    trie.overlapping(target),
                    "{target} in {entries:?}"
                );
            }
        }
        assert!(scanned > 300, "{scanned}");
    }

    #[test]
    fn file_lines_are_addresses_networks_names_or_logged() {
        let (entries, bad) = parse_file(
            "# office\n192.0.2.1\n198.51.100.0/24   # lab\n\nvpn.Example.org\n2001:db8::1\n300.1.2.3\nnot a name\n",
        );
        assert_eq!(
            entries,
            [
                Entry::Network(net("192.0.2.1/32")),
                Entry::Network(net("198.51.100.0/24")),
                Entry::Name("vpn.example.org".into()),
                Entry::Network(net("2001:db8::1/128")),
            ]
        );
        let lines: Vec<usize> = bad.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [7, 8]);
    }

    #[test]
    fn patterns_match_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.txt", "b.txt", "c.conf", ".d.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let found = expand(&dir.path().join("*.txt")).unwrap();
        assert_eq!(found, [dir.path().join("a.txt"), dir.path().join("b.txt")]);
        assert!(expand(&dir.path().join("missing.txt")).is_err());
        assert!(expand(&dir.path().join("nodir/*.txt")).is_err());
    }

    #[tokio::test]
    async fn the_watcher_rereads_files_and_keeps_a_vanished_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "192.0.2.1\n").unwrap();
        let spec = Watched {
            jail: Arc::from("sshd"),
            names: vec!["localhost".into()],
            files: vec![dir.path().join("*.txt")],
            refresh: Duration::from_secs(300),
        };
        let mut w = Watcher::default();
        let first = w.pass(std::slice::from_ref(&spec)).await;
        assert_eq!(first.len(), 1);
        assert!(first[0].extra.contains(&net("192.0.2.1/32")));
        assert!(
            first[0].extra.contains(&net("127.0.0.1/32")),
            "localhost resolved"
        );
        assert!(
            w.pass(std::slice::from_ref(&spec)).await.is_empty(),
            "unchanged"
        );
        std::fs::write(&file, "192.0.2.1\n192.0.2.2 # new\n").unwrap();
        let second = w.pass(std::slice::from_ref(&spec)).await;
        assert!(second[0].extra.contains(&net("192.0.2.2/32")));
        std::fs::remove_file(&file).unwrap();
        assert!(w.pass(std::slice::from_ref(&spec)).await.is_empty(), "kept");
    }
}
