//! Jails decide: failures per address inside findtime, a ban at maxretry, an unban when bantime
//! runs out. [`Jail`] is one jail's state and rules; [`set`] is the task that owns every jail,
//! so nothing here needs a lock.

pub mod allow;
mod batch;
pub(crate) mod escalate;
mod evidence;
mod page;
pub(crate) mod query;
pub(crate) mod set;
pub(crate) mod settings;
pub(crate) mod spray;
#[cfg(test)]
pub(crate) mod test_rng;
mod why;
pub(crate) mod window;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnetwork::IpNetwork;
use lru::LruCache;
use tokio::time::Instant;

use crate::action::BanOrder;
use crate::address::{show_target, Named};
use crate::evidence::{Evidence, Line, Seen};
use crate::metrics::JailMetrics;
use allow::IgnoreTable;
pub(crate) use settings::{JailSettings, JailSpec};
use spray::Spray;
use window::{Outcome, Window, NIL};

pub use batch::{schedule, Keyed, Schedule};

/// The window the ban storm guard counts bans in.
const STORM_WINDOW: Duration = Duration::from_secs(60);

/// Networks whose escalation an ignored address refused, remembered so the refusal is logged
/// once per network (cleared when full).
const MAX_REFUSED_NETWORKS: usize = 1024;

/// A failure found by a filter, on its way to the jail task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The jail's name (a name, not an index, so a reload cannot misdirect failures in flight).
    pub jail: Arc<str>,
    /// The address that failed.
    pub ip: IpAddr,
    /// How many failures the message stands for (rsyslog repeat summaries).
    pub count: u32,
    /// A successful login (successregex), not a failure: the address's failures are forgiven.
    pub success: bool,
    /// When the message arrived (monotonic; senders' clocks are never trusted).
    pub received_at: Instant,
    /// The syslog host name of the message, when it had one (fleet events carry it).
    pub host: Option<Arc<str>>,
    /// Receipt time, program and message: the evidence this failure adds to a ban.
    pub seen: Seen,
    /// The failregex that matched (index, text), filled only while a `tail` client watches.
    pub matched: Option<Box<(usize, String)>>,
    /// The `<F-USER>` the failure named, when the filter captures one (spray detection).
    pub user: Option<Arc<str>>,
}

/// An active ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveBan {
    /// Wall-clock time of the ban, for display.
    pub banned_at: SystemTime,
    /// When it ends; None is permanent.
    pub expires: Option<Instant>,
    /// The same end on the wall clock, `banned_at + bantime`, so what `banned` and `why` list
    /// is exactly the bantime (and what the state stores), never off by a clock reading.
    pub expires_at: Option<SystemTime>,
    /// Failures that led to it.
    pub failures: u32,
    /// How many times this address has been banned in this jail (1 = first).
    pub ban_count: u32,
    /// Syslog host names the deciding failures came from.
    pub hosts: Vec<String>,
}

/// What one failure led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The address is in ignoreip or is this host's.
    Ignored,
    /// Counted, no ban yet.
    Counted(u32),
    /// The address is already banned; nothing more to do.
    AlreadyBanned,
    /// maxretry was reached, but the ban storm guard withheld the ban.
    Withheld,
    /// Ban it.
    Ban(BanOrder),
}

/// Why a ban by hand was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BanRefused {
    /// The target is, or lies in, an ignored network (or is one of this host's addresses).
    #[error("{} is in ignoreip {} (or is this host's)", show_target(*target), show_target(*ignored))]
    Ignored {
        /// The address or network.
        target: IpNetwork,
        /// The ignored network it lies in.
        ignored: IpNetwork,
    },
    /// The target is a network that holds an ignored address or network.
    #[error("{} contains {} of ignoreip (or this host's addresses); ban the networks around it instead", show_target(*target), show_target(*ignored))]
    HoldsIgnored {
        /// The network.
        target: IpNetwork,
        /// The ignored address or network inside it.
        ignored: IpNetwork,
    },
    /// The target is banned already.
    #[error("{} is already banned in {jail}", show_target(*target))]
    AlreadyBanned {
        /// The address or network.
        target: IpNetwork,
        /// The jail it is banned in.
        jail: String,
    },
}

/// One jail's state.
pub struct Jail {
    name: String,
    settings: JailSettings,
    window: Window,
    bans: HashMap<IpNetwork, ActiveBan>,
    /// The keys of `bans` in order, for the ban feed's pages ([`Jail::bans_after`]): a page
    /// starts with one O(log N) seek instead of a scan of every ban. Kept with `bans` in
    /// [`Jail::ban`], [`Jail::restore`] and [`Jail::unban`], the only places it changes.
    ordered: BTreeSet<IpNetwork>,
    ban_counts: LruCache<IpNetwork, u32>,
    ban_counts_cap: usize,
    metrics: JailMetrics,
    /// What the `tracked` gauge was last set to: a gauge update is two locked read-modify-writes
    /// (about 10% of a cached decision's time with the daemon's recorder, perf), and most
    /// failures (an address's second to last before its ban) leave the count as it was.
    reported_tracked: usize,
    reported_evictions: u64,
    jitter: RandomState,
    total_failed: u64,
    /// `total_failed` as `jailsink_failures_total` last had it ([`Jail::publish_counts`]): the
    /// batched path adds a batch's failures once, not one atomic update each.
    reported_failed: u64,
    total_banned: u64,
    recent_bans: VecDeque<Instant>,
    in_storm: bool,
    /// Recent failure lines, the evidence of the next bans.
    ring: evidence::Ring,
    /// settings.ignore plus the run-time entries (`extra`) as one prefix trie.
    ignore: Arc<IgnoreTable>,
    /// Addresses of ignoreip names and entries of ignoreip_files, as the watcher last sent.
    extra: Arc<[IpNetwork]>,
    spray: Option<Spray>,
    reported_spray_evictions: u64,
    refused_networks: HashSet<IpNetwork>,
    /// Addresses a success forgave within findtime, and when: a success forgives an address
    /// once per findtime, so a login anyone can get (a `git@` account on a forge) cannot wipe
    /// an attack's count again and again.
    forgiven: HashMap<IpNetwork, Instant>,
}

/// Most addresses remembered as forgiven within findtime; past it a success forgives nothing
/// (fail2ban's behaviour: it never forgives), so memory stays bounded under a flood of logins.
const FORGIVEN_CAP: usize = 10_000;

/// A network ban that folded single bans: the order, and the bans it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Escalated {
    /// The network's ban.
    pub order: BanOrder,
    /// The single bans now inside it, to lift once it is committed.
    pub folded: Vec<IpNetwork>,
}

impl Jail {
    /// A jail with empty state.
    pub fn new(name: &str, settings: JailSettings, metrics: JailMetrics) -> Self {
        let cap = NonZeroUsize::new(settings.max_tracked).unwrap_or(NonZeroUsize::MIN);
        // Nothing tracked yet, whatever the handles showed before (see `reported_tracked`).
        metrics.tracked.set(0.0);
        Jail {
            name: name.to_string(),
            window: Window::new(settings.findtime, settings.maxretry, settings.max_tracked),
            bans: HashMap::new(),
            ordered: BTreeSet::new(),
            // Unbounded and capped by hand: LruCache::new(cap) reserves its whole table up front,
            // megabytes per jail at the default cap before any attacker shows up.
            ban_counts: LruCache::unbounded(),
            ban_counts_cap: cap.get(),
            metrics,
            reported_tracked: 0,
            reported_evictions: 0,
            jitter: RandomState::new(),
            total_failed: 0,
            reported_failed: 0,
            total_banned: 0,
            recent_bans: VecDeque::new(),
            in_storm: false,
            ring: evidence::Ring::default(),
            ignore: Arc::new(IgnoreTable::new(&settings.ignore)),
            extra: Arc::from([]),
            spray: settings
                .detection
                .spray
                .clone()
                .map(|s| Spray::new(s, settings.max_tracked)),
            reported_spray_evictions: 0,
            refused_networks: HashSet::new(),
            forgiven: HashMap::new(),
            settings,
        }
    }

    /// Active bans, keyed by what is banned (an address, or its network with prefix bans).
    pub(crate) fn bans(&self) -> &HashMap<IpNetwork, ActiveBan> {
        &self.bans
    }

    /// Active bans in target order, from the first target after `after` (from the first when
    /// None): where a page of the ban feed starts, found in O(log N), each ban then O(1).
    pub(crate) fn bans_after(
        &self,
        after: Option<IpNetwork>,
    ) -> impl Iterator<Item = (&IpNetwork, &ActiveBan)> + '_ {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.ordered
            .range((from, Unbounded))
            .filter_map(|target| self.bans.get_key_value(target))
    }

    /// What a failure of `ip` counts against here: [`crate::address::counting_key`] with the
    /// jail's prefixes and its whole allowlist (run-time entries included).
    pub(crate) fn key_of(&self, ip: IpAddr) -> IpNetwork {
        crate::address::counting_key(
            ip,
            self.settings.ipv4_prefix,
            self.settings.ipv6_prefix,
            |key| self.ignored_by(key).is_some(),
        )
    }

    /// [`Jail::key_of`] and, for a prefix jail, whether the allowlist ignores that key, from
    /// the lookup the key took ([`crate::address::counting_key_allowlisted`]): one lookup a
    /// failure (two when its network is allowlisted and its address is not), where the key and
    /// then [`Jail::admit`] took two. A jail counting single addresses needs no lookup for the
    /// key: None, and [`Jail::admit`] looks the address up (once, as before: asked here, the
    /// lookup cost the batched loop 50 instructions a failure more than in `admit`, callgrind
    /// of `jailbench attackers`).
    pub(crate) fn admitted_key(&self, ip: IpAddr) -> (IpNetwork, Option<bool>) {
        crate::address::counting_key_allowlisted(
            ip,
            self.settings.ipv4_prefix,
            self.settings.ipv6_prefix,
            |key| self.is_ignored(key),
        )
    }

    /// What every failure goes through first, with the key it counts against and whether the
    /// allowlist ignores it ([`Jail::admitted_key`]): the key again, or Ignored (not counted) or
    /// AlreadyBanned (counted, nothing more to do).
    fn admit(
        &mut self,
        key: IpNetwork,
        ignored: Option<bool>,
        count: u32,
    ) -> Result<IpNetwork, Decision> {
        if ignored.unwrap_or_else(|| self.is_ignored(key)) {
            return Err(Decision::Ignored);
        }
        self.total_failed += u64::from(count);
        if self.covering_ban(key).is_some() {
            return Err(Decision::AlreadyBanned);
        }
        Ok(key)
    }

    /// The ban that covers `key`: its own, or that of the network escalation banned around it.
    fn covering_ban(&self, key: IpNetwork) -> Option<&ActiveBan> {
        self.bans.get(&key).or_else(|| {
            let network = self
                .settings
                .detection
                .escalation
                .as_ref()?
                .network_of(key)?;
            self.bans.get(&network)
        })
    }

    /// The spray bans a failure completed: none when the jail ignored it or it named no user.
    pub(crate) fn spray_after(
        &mut self,
        decision: &Decision,
        ip: IpAddr,
        user: Option<&str>,
        at: Instant,
    ) -> Vec<BanOrder> {
        match (decision, user) {
            (Decision::Ignored, _) | (_, None) => Vec::new(),
            (_, Some(user)) => self.on_spray(ip, user, at),
        }
    }

    /// Records that `user` failed from `ip` (a failure the jail did not ignore) for spray
    /// detection; when it completes a spray, bans every address of it that is not banned yet
    /// (each ban logged with the reason).
    pub(crate) fn on_spray(&mut self, ip: IpAddr, user: &str, at: Instant) -> Vec<BanOrder> {
        let (key, ignored) = self.admitted_key(ip);
        if ignored.unwrap_or_else(|| self.is_ignored(key)) {
            return Vec::new();
        }
        let Some(spray) = self.spray.as_mut() else {
            return Vec::new();
        };
        let found = spray.record(user, ip, at);
        let (maxaddresses, findtime) = (spray.settings().maxaddresses, spray.settings().findtime);
        let evicted = spray.evicted();
        if evicted > self.reported_spray_evictions {
            // Counted with the tracked addresses: both are the jail's memory bounded by
            // max_tracked.
            self.metrics
                .evicted
                .increment(evicted - self.reported_spray_evictions);
            self.reported_spray_evictions = evicted;
        }
        match found {
            Some(addresses) => {
                let addresses = addresses.into_iter().map(|ip| (ip, None)).collect();
                self.ban_sprayers(user, addresses, at, maxaddresses, findtime)
            }
            None => Vec::new(),
        }
    }

    /// Bans the addresses of a spray that failed as `user` (found by this jail, or by the fleet's
    /// shared count, [`Jail::on_shared_spray`]): every one not banned yet and not ignored, each
    /// ban logged with the reason. An address with a fleet-wide ban count (shared windows)
    /// escalates by it, as a ban by maxretry there does, instead of by this jail's own.
    fn ban_sprayers(
        &mut self,
        user: &str,
        addresses: Vec<(IpAddr, Option<u32>)>,
        at: Instant,
        maxaddresses: u32,
        findtime: Duration,
    ) -> Vec<BanOrder> {
        tracing::warn!(
            jail = %self.name,
            user,
            addresses = addresses.len(),
            findtime = %humantime::format_duration(findtime),
            "[{}] password spraying: user {user:?} failed from {} addresses within {}",
            self.name,
            addresses.len(),
            humantime::format_duration(findtime),
        );
        let mut orders = Vec::new();
        for (address, fleet_count) in addresses {
            let key = self.key_of(address);
            if self.covering_ban(key).is_some() || self.is_ignored(key) {
                continue;
            }
            if self.storm_guard(at) {
                continue;
            }
            let (failures, lines) = self.current(key, at).unwrap_or_default();
            self.window.forget(&key);
            if let Some(count) = fleet_count {
                self.count_ban(key, count.saturating_sub(1));
            }
            let shown = show_target(key);
            tracing::info!(
                jail = %self.name,
                ip = %shown,
                user,
                reason = "spray",
                "[{}] {} banned for password spraying: one of {} addresses failing as user {user:?} within {} (maxaddresses {maxaddresses})",
                self.name,
                shown,
                maxaddresses,
                humantime::format_duration(findtime),
            );
            orders.push(self.ban(key, failures.max(1), at, None, lines.into()));
        }
        self.update_gauges();
        orders
    }

    /// The spray bans of a failure counted in the fleet's shared windows: the spray is counted in
    /// Redis, across every sink, and `sprayed` holds its addresses when this failure completed it.
    pub(crate) fn on_shared_spray(
        &mut self,
        decision: &Decision,
        user: Option<&str>,
        sprayed: Vec<(IpAddr, Option<u32>)>,
        at: Instant,
    ) -> Vec<BanOrder> {
        if sprayed.is_empty() || matches!(decision, Decision::Ignored) {
            return Vec::new();
        }
        let spray = self.settings.detection.spray.as_ref();
        let (Some(user), Some((maxaddresses, findtime))) =
            (user, spray.map(|s| (s.maxaddresses, s.findtime)))
        else {
            return Vec::new();
        };
        self.ban_sprayers(user, sprayed, at, maxaddresses, findtime)
    }

    /// After `banned` was banned: when `prefix_escalation` is on and its network now holds
    /// `after` bans, bans the network for the longest of their remaining times and returns the
    /// bans to fold into it. A network holding an ignored address is never banned (logged once).
    pub(crate) fn escalate(&mut self, banned: IpNetwork, at: Instant) -> Option<Escalated> {
        let escalation = self.settings.detection.escalation.clone()?;
        let network = escalation.network_of(banned)?;
        if self.bans.contains_key(&network) {
            return None;
        }
        let fold = escalate::fold(network, escalation.after, &self.bans)?;
        if let Some(ignored) = self.ignore.overlapping(network) {
            if self.refused_networks.len() >= MAX_REFUSED_NETWORKS {
                self.refused_networks.clear();
            }
            if self.refused_networks.insert(network) {
                tracing::warn!(
                    jail = %self.name,
                    network = %network,
                    ignored = %show_target(ignored),
                    banned = fold.members.len(),
                    "[{}] not escalating to {network}: it holds {} of ignoreip (or this host's addresses); its {} addresses stay banned one by one",
                    self.name,
                    show_target(ignored),
                    fold.members.len(),
                );
            }
            return None;
        }
        let bantime = fold.expires.map(|end| {
            end.saturating_duration_since(at)
                .max(Duration::from_secs(1))
        });
        tracing::info!(
            jail = %self.name,
            network = %network,
            folded = fold.members.len(),
            reason = "prefix_escalation",
            "[{}] {network} banned: {} of its addresses are banned (prefix_escalation after {})",
            self.name,
            fold.members.len(),
            escalation.after,
        );
        // The network's evidence is its members' bans (why shows them), not lines of its own.
        let order = self.ban(
            network,
            fold.failures,
            at,
            Some(bantime),
            Default::default(),
        );
        Some(Escalated {
            order,
            folded: fold.members,
        })
    }

    /// Takes the run-time allowlist entries; returns the bans they now cover, to lift.
    pub(crate) fn set_extra(&mut self, extra: Arc<[IpNetwork]>) -> Vec<IpNetwork> {
        self.extra = extra;
        self.rebuild_ignore();
        self.allowlisted_bans()
    }

    /// Bans the allowlist covers (an entry added since they were decided), in order: they are
    /// lifted, since an allowlisted address is never banned.
    pub(crate) fn allowlisted_bans(&self) -> Vec<IpNetwork> {
        let mut covered: Vec<IpNetwork> = self
            .bans
            .keys()
            .filter(|t| self.ignored_by(**t).is_some())
            .copied()
            .collect();
        covered.sort();
        covered
    }

    /// The allowlist entry `target` overlaps, if any: a stored ban of it is not restored.
    pub(crate) fn allowlisted(&self, target: IpNetwork) -> Option<IpNetwork> {
        self.ignored_by(target)
    }

    fn rebuild_ignore(&mut self) {
        self.ignore = Arc::new(IgnoreTable::new(
            self.settings.ignore.iter().chain(self.extra.iter()),
        ));
    }

    /// How long a shared window's decided marker of `key` should hold from `now`: while the
    /// ban that covers it (its own, or its escalated network's) lasts.
    pub(crate) fn marker_hold(&self, key: IpNetwork, now: Instant) -> set::MarkerHold {
        match self.covering_ban(key).map(|b| b.expires) {
            None => set::MarkerHold::Clear,
            Some(None) => set::MarkerHold::Forever,
            Some(Some(end)) if end > now => set::MarkerHold::Until(end),
            Some(Some(_)) => set::MarkerHold::Clear,
        }
    }

    /// The whole allowlist as the jail judges by it now (ignoreip, ignoreself, and the
    /// run-time entries): fleet agents and shared windows take it, so they never ban or count
    /// what this jail would not.
    pub(crate) fn allowlist(&self) -> Arc<IgnoreTable> {
        self.ignore.clone()
    }

    /// Adds the failures counted since the last call to `jailsink_failures_total`: once per
    /// batch on the batched path ([`Jail::on_failure_keyed`]); the one-failure paths call it
    /// themselves.
    pub fn publish_counts(&mut self) {
        if self.total_failed > self.reported_failed {
            self.metrics
                .failures
                .increment(self.total_failed - self.reported_failed);
            self.reported_failed = self.total_failed;
        }
    }

    /// Counts a failure (with no evidence line) and decides. A ban is recorded as active
    /// before it is returned.
    pub fn on_failure(&mut self, ip: IpAddr, count: u32, at: Instant) -> Decision {
        self.on_failure_seen(ip, count, at, None, None)
    }

    /// Counts a failure seen in a message from `host` and decides; the message joins the
    /// jail's evidence ring, and a ban carries the lines that decided it.
    pub fn on_failure_seen(
        &mut self,
        ip: IpAddr,
        count: u32,
        at: Instant,
        host: Option<Arc<str>>,
        seen: Option<Seen>,
    ) -> Decision {
        let (key, ignored) = self.admitted_key(ip);
        let decision = self.decide(key, ignored, None, count, at, host, seen);
        self.publish_counts();
        decision
    }

    /// [`Jail::on_failure_seen`] of a failure whose key is `key`, `ignored` by the allowlist or
    /// not ([`Jail::admitted_key`]), and whose hash in the window is `hash` when a batch
    /// computed it already.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        key: IpNetwork,
        ignored: Option<bool>,
        hash: Option<u64>,
        count: u32,
        at: Instant,
        host: Option<Arc<str>>,
        seen: Option<Seen>,
    ) -> Decision {
        let key = match self.admit(key, ignored, count) {
            Ok(key) => key,
            Err(decision) => return decision,
        };
        let link = match seen {
            Some(_) => self.ring.next_seq(),
            None => NIL,
        };
        let hash = hash.unwrap_or_else(|| self.window.hash(&key));
        let (outcome, previous) = self.window.record_hashed(key, hash, count, at, link);
        if let Some(seen) = seen {
            self.ring.push(key, previous, count, host, seen);
        }
        self.update_gauges();
        match outcome {
            Outcome::Counting(n) => Decision::Counted(n),
            Outcome::Reached(_) if self.storm_guard(at) => Decision::Withheld,
            Outcome::Reached(failures) => {
                let evidence = self.ring.chain(key, link, failures);
                Decision::Ban(self.ban(key, failures, at, None, evidence.into()))
            }
        }
    }

    /// The failures of `key` inside findtime now, with the lines the ring still holds.
    pub(crate) fn current(&self, key: IpNetwork, now: Instant) -> Option<(u32, Vec<Line>)> {
        let (failures, last) = self.window.lookup(&key, now)?;
        Some((failures, self.ring.chain(key, last, failures)))
    }

    /// The jail's maxretry.
    pub(crate) fn maxretry(&self) -> u32 {
        self.settings.maxretry
    }

    /// The ignored network `ip` (as the jail counts it) overlaps, if any: why a failure of it
    /// was not counted.
    pub(crate) fn ignored_network(&self, ip: IpAddr) -> Option<IpNetwork> {
        self.ignored_by(self.key_of(ip))
    }

    /// A successful login from `ip` at `at` (successregex): its failures in the window are
    /// forgiven, unless a success forgave them already within findtime. Returns whether they
    /// were.
    pub fn forgive(&mut self, ip: IpAddr, at: Instant) -> bool {
        let key = self.key_of(ip);
        let findtime = self.settings.findtime;
        let recent = |t: &Instant| at.saturating_duration_since(*t) < findtime;
        if self.forgiven.get(&key).is_some_and(recent) {
            return false;
        }
        // Nothing to forgive: the forgiveness is kept for when there is (a user who logs in
        // often must not have used it up on logins that followed no failure).
        if self.window.lookup(&key, at).is_none() {
            return false;
        }
        if self.forgiven.len() >= FORGIVEN_CAP {
            self.forgiven.retain(|_, t| recent(t));
            if self.forgiven.len() >= FORGIVEN_CAP {
                return false;
            }
        }
        self.forgiven.insert(key, at);
        self.window.forget(&key);
        self.update_gauges();
        true
    }

    /// A failure already counted in the fleet's shared window: metrics here, and the ban when
    /// the shared count decided it (`decided` = failures and the fleet-wide ban count, which
    /// escalation uses instead of this jail's own).
    pub fn on_shared(
        &mut self,
        ip: IpAddr,
        count: u32,
        decided: Option<(u32, u32)>,
        at: Instant,
    ) -> Decision {
        self.on_shared_seen(ip, count, decided, at, None)
    }

    /// [`Jail::on_shared`] with the failure's line: the earlier failures were counted across
    /// the fleet, so a ban it decides keeps this line, the one seen here, as its evidence.
    pub(crate) fn on_shared_seen(
        &mut self,
        ip: IpAddr,
        count: u32,
        decided: Option<(u32, u32)>,
        at: Instant,
        line: Option<Line>,
    ) -> Decision {
        let (key, ignored) = self.admitted_key(ip);
        let admitted = self.admit(key, ignored, count);
        self.publish_counts();
        let key = match admitted {
            Ok(key) => key,
            Err(decision) => return decision,
        };
        match decided {
            None => Decision::Counted(0),
            Some(_) if self.storm_guard(at) => Decision::Withheld,
            Some((failures, ban_count)) => {
                self.window.forget(&key);
                self.count_ban(key, ban_count.saturating_sub(1));
                let evidence: Evidence = line.into_iter().collect();
                Decision::Ban(self.ban(key, failures, at, None, evidence))
            }
        }
    }

    /// True when this jail already banned max_bans_per_minute targets in the last minute: a
    /// poisoned log must not ban the world. Withheld bans are counted and the storm is logged
    /// once when it starts and once when it ends.
    fn storm_guard(&mut self, at: Instant) -> bool {
        if self.settings.max_bans_per_minute.is_none() {
            return false;
        }
        let storm = self.storm_at(at);
        if storm {
            self.metrics.withheld.increment(1);
        } else {
            self.recent_bans.push_back(at);
        }
        storm
    }

    /// Whether the jail banned max_bans_per_minute targets in the minute before `at`; the
    /// gauge and the log follow when that changes. [`Jail::prune`] asks too, so the storm is
    /// over (gauge 0, logged) a minute after its last ban, not at the next ban decided.
    fn storm_at(&mut self, at: Instant) -> bool {
        let Some(max) = self.settings.max_bans_per_minute else {
            return false;
        };
        while self
            .recent_bans
            .front()
            .is_some_and(|&t| at.saturating_duration_since(t) >= STORM_WINDOW)
        {
            self.recent_bans.pop_front();
        }
        let storm = self.recent_bans.len() >= max as usize;
        if storm != self.in_storm {
            self.in_storm = storm;
            self.metrics.storm.set(if storm { 1.0 } else { 0.0 });
            if storm {
                tracing::error!(jail = %self.name, max_bans_per_minute = max, "[{}] ban storm guard engaged: bans withheld (an attack from many addresses, or a poisoned log)", self.name);
            } else {
                tracing::warn!(jail = %self.name, "[{}] ban storm over: banning again", self.name);
            }
        }
        storm
    }

    /// Ignored when the target overlaps an ignored network: a prefix ban never takes an
    /// ignored or own address with it.
    fn is_ignored(&self, target: IpNetwork) -> bool {
        self.ignored_by(target).is_some()
    }

    /// The ignored network `target` overlaps, if any (a prefix-trie lookup).
    fn ignored_by(&self, target: IpNetwork) -> Option<IpNetwork> {
        self.ignore.overlapping(target)
    }

    /// What a ban or unban by hand of `named` acts on: an address widens to the jail's prefix
    /// as a failure would; a network is taken as written (aligned to its prefix), a /32 or
    /// /128 included.
    pub(crate) fn manual_key(&self, named: Named) -> IpNetwork {
        let Named { target, as_network } = named;
        if as_network {
            crate::address::network_of(target.ip(), target.prefix())
        } else {
            self.key_of(target.ip())
        }
    }

    /// `fixed` replaces the jail's (escalated) bantime: Some(None) is permanent.
    fn ban(
        &mut self,
        target: IpNetwork,
        failures: u32,
        at: Instant,
        fixed: Option<Option<Duration>>,
        evidence: Evidence,
    ) -> BanOrder {
        let ban_count = self.ban_counts.get(&target).copied().unwrap_or(0) + 1;
        self.count_ban(target, ban_count);
        let bantime = fixed.unwrap_or_else(|| self.bantime_for(target, ban_count));
        let banned_at = SystemTime::now();
        self.ordered.insert(target);
        self.bans.insert(
            target,
            ActiveBan {
                banned_at,
                expires: bantime.map(|d| at + d),
                expires_at: bantime.map(|d| banned_at + d),
                failures,
                ban_count,
                hosts: crate::evidence::hosts(&evidence),
            },
        );
        // jailsink_bans_total moves with the `[jail] Ban` line, once the ban is committed.
        self.total_banned += 1;
        self.metrics.banned.set(self.bans.len() as f64);
        // The `[jail] Ban ADDR` line is written by the state writer once the ban is committed,
        // so a ban an operator has seen reported survives a crash.
        BanOrder {
            target,
            failures,
            bantime,
            decided_at: at.into_std(),
            from_state: false,
            evidence,
        }
    }

    /// A ban by hand (`jailsink ban`) of an address or a network: same escalation (unless
    /// `bantime` fixes the length: Some(None) is permanent), log line, metrics and action path
    /// as an automatic one, with the failures the jail was tracking for it as evidence.
    /// Refused for ignored and already banned targets.
    pub(crate) fn manual_ban(
        &mut self,
        target: Named,
        bantime: Option<Option<Duration>>,
        at: Instant,
    ) -> Result<BanOrder, BanRefused> {
        let key = self.manual_key(target);
        if let Some(ignored) = self.ignored_by(key) {
            // A smaller ignored network inside the target is held by it; otherwise the target
            // lies in the ignored one.
            return Err(if ignored.prefix() > key.prefix() {
                BanRefused::HoldsIgnored {
                    target: key,
                    ignored,
                }
            } else {
                BanRefused::Ignored {
                    target: key,
                    ignored,
                }
            });
        }
        if self.bans.contains_key(&key) {
            return Err(BanRefused::AlreadyBanned {
                target: key,
                jail: self.name.clone(),
            });
        }
        // An address the jail is tracking keeps what it failed with: `<failures>`, `<hosts>`
        // and `<matches>` of the command action, and the ban's evidence.
        let (failures, lines) = self.current(key, at).unwrap_or_default();
        self.window.forget(&key);
        Ok(self.ban(key, failures, at, bantime, lines.into()))
    }

    /// Puts back a ban read from the state at start.
    pub(crate) fn restore(&mut self, target: IpNetwork, ban: ActiveBan) {
        self.count_ban(target, ban.ban_count);
        self.ordered.insert(target);
        self.bans.insert(target, ban);
        self.metrics.banned.set(self.bans.len() as f64);
    }

    /// Tells the jail how often `target` was banned before (from the state's history).
    pub(crate) fn seed_ban_count(&mut self, target: IpNetwork, count: u32) {
        self.count_ban(target, count);
    }

    /// Remembers how often `target` was banned, forgetting the least recent beyond the cap.
    fn count_ban(&mut self, target: IpNetwork, count: u32) {
        if self.ban_counts.len() >= self.ban_counts_cap && !self.ban_counts.contains(&target) {
            self.ban_counts.pop_lru();
        }
        self.ban_counts.put(target, count);
    }

    /// The jail's metric series, shared with its action runner.
    pub(crate) fn metrics(&self) -> &JailMetrics {
        &self.metrics
    }

    /// New settings from a reload; failure windows restart only if their shape changed.
    pub(crate) fn reconfigure(&mut self, settings: JailSettings) {
        let old = &self.settings;
        if old.findtime != settings.findtime
            || old.maxretry != settings.maxretry
            || old.max_tracked != settings.max_tracked
            || old.ipv4_prefix != settings.ipv4_prefix
            || old.ipv6_prefix != settings.ipv6_prefix
        {
            self.window = Window::new(settings.findtime, settings.maxretry, settings.max_tracked);
            // The new window counts its evictions from zero.
            self.reported_evictions = 0;
        }
        if settings.max_bans_per_minute.is_none() && self.in_storm {
            // The guard is off now: no storm to report, nor to end later.
            self.in_storm = false;
            self.recent_bans.clear();
            self.metrics.storm.set(0.0);
            tracing::warn!(jail = %self.name, "[{}] ban storm guard turned off: banning again", self.name);
        }
        if old.detection.spray != settings.detection.spray
            || old.max_tracked != settings.max_tracked
        {
            self.spray = settings
                .detection
                .spray
                .clone()
                .map(|s| Spray::new(s, settings.max_tracked));
        }
        if !settings.detection.watches() {
            // No watcher sends this jail entries any more.
            self.extra = Arc::from([]);
        }
        self.settings = settings;
        self.rebuild_ignore();
        self.update_gauges();
    }

    /// Failures since start (or since the jail was created by a reload).
    pub(crate) fn total_failed(&self) -> u64 {
        self.total_failed
    }

    /// Bans since start.
    pub(crate) fn total_banned(&self) -> u64 {
        self.total_banned
    }

    /// bantime, escalated for repeat offenders when bantime_increment is on.
    fn bantime_for(&self, ip: IpNetwork, ban_count: u32) -> Option<Duration> {
        let base = self.settings.bantime?;
        let inc = &self.settings.increment;
        if !inc.enabled {
            return Some(base);
        }
        let factor = inc.factor.powi(ban_count.saturating_sub(1).min(64) as i32);
        let scaled = base.as_secs_f64() * factor;
        let longest = crate::duration::LONGEST;
        // A permanent maxtime lets escalation grow without end: past a century it is permanent.
        if inc.maxtime > longest && scaled >= longest.as_secs_f64() {
            return None;
        }
        let cap = inc.maxtime.min(longest);
        let mut time = if scaled >= cap.as_secs_f64() {
            cap
        } else {
            Duration::from_secs_f64(scaled)
        };
        if !inc.rndtime.is_zero() {
            let roll = self.jitter.hash_one((ip, ban_count)) % 1_000_000;
            let jitter = inc.rndtime.mul_f64(roll as f64 / 1_000_000.0);
            time = time.saturating_add(jitter).min(longest);
        }
        Some(time)
    }

    /// Lifts the ban on `ip` if it is active; returns it for the log and the action.
    pub(crate) fn unban(&mut self, ip: IpNetwork) -> Option<ActiveBan> {
        let ban = self.bans.remove(&ip)?;
        self.ordered.remove(&ip);
        self.metrics.unbans.increment(1);
        self.metrics.banned.set(self.bans.len() as f64);
        let lasted = SystemTime::now()
            .duration_since(ban.banned_at)
            .unwrap_or_default();
        let shown = show_target(ip);
        tracing::info!(
            jail = %self.name,
            ip = %shown,
            failures = ban.failures,
            banned_for = %humantime::format_duration(Duration::from_secs(lasted.as_secs())),
            "[{}] Unban {}",
            self.name,
            shown
        );
        Some(ban)
    }

    /// Drops expired failure windows and refreshes the gauges.
    pub(crate) fn prune(&mut self, now: Instant) {
        self.window.prune(now);
        self.storm_at(now);
        let findtime = self.settings.findtime;
        self.forgiven
            .retain(|_, t| now.saturating_duration_since(*t) < findtime);
        self.update_gauges();
    }

    fn update_gauges(&mut self) {
        let tracked = self.window.len();
        if tracked != self.reported_tracked {
            self.metrics.tracked.set(tracked as f64);
            self.reported_tracked = tracked;
        }
        let evicted = self.window.evicted();
        if evicted > self.reported_evictions {
            self.metrics
                .evicted
                .increment(evicted - self.reported_evictions);
            self.reported_evictions = evicted;
        }
    }

    /// Addresses tracked inside findtime.
    pub fn tracked(&self) -> usize {
        self.window.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::jail::settings::Increment;

    pub(super) fn settings(maxretry: u32, bantime: u64) -> JailSettings {
        JailSettings {
            bantime: Some(Duration::from_secs(bantime)),
            findtime: Duration::from_secs(600),
            maxretry,
            ignore: vec![
                "127.0.0.0/8".parse().unwrap(),
                "198.51.100.0/24".parse().unwrap(),
            ],
            max_tracked: 1000,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            max_bans_per_minute: None,
            increment: Increment {
                enabled: false,
                factor: 2.0,
                maxtime: Duration::from_secs(3600),
                rndtime: Duration::ZERO,
            },
            detection: Default::default(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_prefix_holding_an_allowlisted_address_counts_its_other_addresses_one_by_one() {
        let mut s = settings(3, 600);
        s.ipv6_prefix = 64;
        s.ignore.push("2001:db8::5/128".parse().unwrap());
        let mut jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
        let now = Instant::now();
        assert_eq!(
            jail.on_failure(ip("2001:db8::5"), 1, now),
            Decision::Ignored
        );
        assert_eq!(
            jail.on_failure(ip("2001:db8::99"), 1, now),
            Decision::Counted(1)
        );
        assert_eq!(
            jail.on_failure(ip("2001:db8::99"), 1, now),
            Decision::Counted(2)
        );
        // Another address of the same /64 counts apart.
        assert_eq!(
            jail.on_failure(ip("2001:db8::98"), 1, now),
            Decision::Counted(1)
        );
        let Decision::Ban(order) = jail.on_failure(ip("2001:db8::99"), 1, now) else {
            panic!("the third failure bans")
        };
        assert_eq!(
            order.target,
            "2001:db8::99/128".parse::<IpNetwork>().unwrap()
        );
        // A /64 without allowlisted addresses is still counted as one.
        assert_eq!(
            jail.on_failure(ip("2001:db8:1::1"), 1, now),
            Decision::Counted(1)
        );
        assert_eq!(
            jail.on_failure(ip("2001:db8:1::2"), 1, now),
            Decision::Counted(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_forgives_an_address_once_per_findtime() {
        let mut jail = Jail::new("sshd", settings(5, 600), JailMetrics::new("sshd"));
        let attacker = ip("203.0.113.9");
        let fail4 = |jail: &mut Jail| {
            for _ in 0..4 {
                assert!(matches!(
                    jail.on_failure(attacker, 1, Instant::now()),
                    Decision::Counted(_)
                ));
            }
        };
        // A user who mistyped, then got it right, is forgiven.
        fail4(&mut jail);
        assert!(jail.forgive(attacker, Instant::now()));
        assert_eq!(jail.tracked(), 0);
        // A second login within findtime forgives nothing: the fifth failure bans.
        fail4(&mut jail);
        assert!(!jail.forgive(attacker, Instant::now()));
        assert!(matches!(
            jail.on_failure(attacker, 1, Instant::now()),
            Decision::Ban(_)
        ));
        // A login that follows no failure forgives nothing, and keeps the forgiveness.
        let other = ip("203.0.113.10");
        assert!(!jail.forgive(other, Instant::now()));
        jail.on_failure(other, 1, Instant::now());
        assert!(jail.forgive(other, Instant::now()));
        // Once findtime has passed since the last forgiveness, a login forgives again.
        tokio::time::advance(Duration::from_secs(601)).await;
        jail.prune(Instant::now());
        assert!(jail.forgiven.is_empty(), "pruned with the windows");
        jail.on_failure(other, 1, Instant::now());
        assert!(jail.forgive(other, Instant::now()));
        assert_eq!(jail.tracked(), 0);
    }

    /// `jailsink_tracked_addresses` of `jail` in a rendered scrape.
    fn tracked_gauge(scrape: &str, jail: &str) -> f64 {
        series_value(
            scrape,
            &format!("jailsink_tracked_addresses{{jail=\"{jail}\"}}"),
        )
    }

    /// The value of `series` (name and labels) in a rendered scrape.
    fn series_value(scrape: &str, series: &str) -> f64 {
        let series = format!("{series} ");
        let line = scrape.lines().find_map(|l| l.strip_prefix(series.as_str()));
        line.unwrap_or_else(|| panic!("no {series} in {scrape}"))
            .parse()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn failures_reach_the_counter_once_a_batch_and_at_once_one_by_one() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let metrics = metrics::with_local_recorder(&recorder, || JailMetrics::new("count"));
        let mut jail = Jail::new("count", settings(1000, 600), metrics);
        let failures = |scrape: &metrics_exporter_prometheus::PrometheusHandle| {
            series_value(&scrape.render(), "jailsink_failures_total{jail=\"count\"}")
        };
        // One by one: counted as decided.
        jail.on_failure(ip("203.0.113.200"), 2, Instant::now());
        assert_eq!(failures(&scrape), 2.0);
        // The batched path: the batch's failures at once, when the batch is done.
        for n in 0..5u32 {
            let keyed = jail.keyed(IpAddr::from(std::net::Ipv4Addr::from(0xCB00_7100 + n)));
            jail.on_failure_keyed(keyed, 1, Instant::now(), None, None);
        }
        assert_eq!(failures(&scrape), 2.0);
        jail.publish_counts();
        assert_eq!(failures(&scrape), 7.0);
        jail.publish_counts();
        assert_eq!(failures(&scrape), 7.0);
        assert_eq!(jail.total_failed(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn the_tracked_gauge_follows_every_change_though_set_only_on_one() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        // Handles of this recorder alone, not the process's global one.
        let metrics = metrics::with_local_recorder(&recorder, || JailMetrics::new("gauge"));
        let mut jail = Jail::new("gauge", settings(3, 600), metrics);
        assert_eq!(tracked_gauge(&scrape.render(), "gauge"), 0.0);
        let (mut changes, mut unchanged) = (0, 0);
        for step in 0..200u32 {
            let before = jail.tracked();
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0xCB00_7100 + step % 13));
            match step % 50 {
                // Forgiven (a successful login), and failures expiring.
                17 => {
                    jail.forgive(addr, Instant::now());
                }
                33 => {
                    tokio::time::advance(Duration::from_secs(601)).await;
                    jail.prune(Instant::now());
                }
                _ => {
                    jail.on_failure(addr, 1, Instant::now());
                }
            }
            if jail.tracked() == before {
                unchanged += 1;
            } else {
                changes += 1;
            }
            assert_eq!(
                tracked_gauge(&scrape.render(), "gauge"),
                jail.tracked() as f64,
                "step {step}"
            );
        }
        assert!(
            changes > 20 && unchanged > 20 && jail.total_banned() > 0,
            "{changes} changes, {unchanged} not"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ignoreip_is_never_counted_or_banned() {
        let mut jail = Jail::new("sshd", settings(1, 600), JailMetrics::new("sshd"));
        assert_eq!(
            jail.on_failure(ip("198.51.100.7"), 1, Instant::now()),
            Decision::Ignored
        );
        assert_eq!(
            jail.on_failure(ip("127.0.0.1"), 1, Instant::now()),
            Decision::Ignored
        );
        assert!(jail.bans().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn shared_failures_ban_only_when_decided_with_the_fleet_count() {
        let mut s = settings(3, 600);
        s.increment.enabled = true;
        s.increment.maxtime = Duration::from_secs(100_000);
        let mut jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
        let a = ip("192.0.2.9");
        // Counted elsewhere: no decision, no ban, however many.
        assert_eq!(
            jail.on_shared(a, 5, None, Instant::now()),
            Decision::Counted(0)
        );
        assert_eq!(jail.total_failed(), 5);
        // Decided in Redis as the fleet's third offence: bantime x 2^2.
        let Decision::Ban(order) = jail.on_shared(a, 1, Some((3, 3)), Instant::now()) else {
            panic!("a decided shared failure bans");
        };
        assert_eq!(order.bantime, Some(Duration::from_secs(2400)));
        assert_eq!(jail.bans()[&order.target].ban_count, 3);
        assert_eq!(
            jail.on_shared(a, 1, Some((3, 4)), Instant::now()),
            Decision::AlreadyBanned
        );
        assert_eq!(
            jail.on_shared(ip("198.51.100.1"), 1, Some((3, 1)), Instant::now()),
            Decision::Ignored
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_spray_escalates_each_address_by_its_fleet_count() {
        let mut s = settings(5, 600);
        s.increment.enabled = true;
        s.increment.maxtime = Duration::from_secs(100_000);
        s.detection.spray = Some(spray::SpraySettings {
            maxaddresses: 3,
            findtime: Duration::from_secs(3600),
        });
        let mut jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        // This jail banned b and c once before; the fleet counts a's ban as its third and b's
        // as its first, and has no count for c (a bare member an older sink added).
        jail.seed_ban_count(IpNetwork::from(b), 1);
        jail.seed_ban_count(IpNetwork::from(c), 1);
        let decision = jail.on_shared(c, 1, None, Instant::now());
        let sprayed = vec![(a, Some(3)), (b, Some(1)), (c, None)];
        let orders = jail.on_shared_spray(&decision, Some("root"), sprayed, Instant::now());
        let bantime = |ip: IpAddr| {
            orders
                .iter()
                .find(|o| o.target == IpNetwork::from(ip))
                .and_then(|o| o.bantime)
        };
        // bantime x 2^(count - 1): the fleet's count where it has one, else the jail's own.
        assert_eq!(bantime(a), Some(Duration::from_secs(2400)));
        assert_eq!(bantime(b), Some(Duration::from_secs(600)));
        assert_eq!(bantime(c), Some(Duration::from_secs(1200)));
        assert_eq!(jail.bans()[&IpNetwork::from(a)].ban_count, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ban_carries_the_lines_that_decided_it() {
        let mut jail = Jail::new("sshd", settings(3, 600), JailMetrics::new("sshd"));
        let seen = |n: u32| {
            Some(Seen::new(
                SystemTime::now(),
                Some("sshd"),
                &format!("fail {n}"),
            ))
        };
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        jail.on_failure_seen(a, 1, Instant::now(), Some("web-1".into()), seen(1));
        jail.on_failure_seen(b, 1, Instant::now(), Some("web-9".into()), seen(9));
        jail.on_failure_seen(a, 1, Instant::now(), Some("web-2".into()), seen(2));
        let (n, lines) = jail.current(IpNetwork::from(a), Instant::now()).unwrap();
        assert_eq!((n, lines.len()), (2, 2));
        let Decision::Ban(order) =
            jail.on_failure_seen(a, 1, Instant::now(), Some("web-1".into()), seen(3))
        else {
            panic!("the third failure bans")
        };
        let texts: Vec<&str> = order.evidence.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(texts, ["fail 1", "fail 2", "fail 3"]);
        assert_eq!(jail.bans()[&order.target].hosts, ["web-1", "web-2"]);
        assert!(jail.current(IpNetwork::from(a), Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_banned_address_is_not_banned_twice() {
        let mut jail = Jail::new("sshd", settings(2, 600), JailMetrics::new("sshd"));
        let a = ip("192.0.2.1");
        assert_eq!(jail.on_failure(a, 1, Instant::now()), Decision::Counted(1));
        assert!(matches!(
            jail.on_failure(a, 1, Instant::now()),
            Decision::Ban(_)
        ));
        assert_eq!(
            jail.on_failure(a, 1, Instant::now()),
            Decision::AlreadyBanned
        );
        assert_eq!(
            jail.on_failure(a, 5, Instant::now()),
            Decision::AlreadyBanned
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_prefix_jail_ignores_an_allowlisted_address_and_counts_its_neighbour() {
        let mut s = settings(3, 600);
        s.ipv4_prefix = 24;
        s.ignore.push("203.0.113.7/32".parse().unwrap());
        let mut jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
        let now = Instant::now();
        let (allowed, neighbour) = (ip("203.0.113.7"), ip("203.0.113.8"));
        assert_eq!(jail.on_failure(allowed, 1, now), Decision::Ignored);
        assert_eq!(jail.on_failure(neighbour, 1, now), Decision::Counted(1));
        // The batched path decides from the key and answer it found once.
        let (a, n) = (jail.keyed(allowed), jail.keyed(neighbour));
        assert_eq!(
            jail.on_failure_keyed(a, 1, now, None, None),
            Decision::Ignored
        );
        assert_eq!(
            jail.on_failure_keyed(n, 1, now, None, None),
            Decision::Counted(2)
        );
        assert_eq!(jail.key_of(neighbour), "203.0.113.8/32".parse().unwrap());
        assert_eq!(
            jail.total_failed(),
            2,
            "the allowlisted failures were not counted"
        );
    }

    #[test]
    fn the_admitted_key_answers_what_the_key_and_a_second_lookup_did() {
        // Allowlists that hold a whole prefix, an address inside one, and nothing near.
        let extra: [&[&str]; 3] = [
            &["203.0.113.0/24", "2001:db8:5::/64"],
            &["203.0.113.7/32", "2001:db8:5::7/128", "203.0.113.64/26"],
            &[],
        ];
        for (v4, v6) in [(32, 128), (24, 64), (16, 48), (0, 0), (31, 127)] {
            for entries in extra {
                let mut s = settings(3, 600);
                (s.ipv4_prefix, s.ipv6_prefix) = (v4, v6);
                s.ignore
                    .extend(entries.iter().map(|e| e.parse::<IpNetwork>().unwrap()));
                let jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
                let addresses = (0..=255u8)
                    .map(|n| IpAddr::from([203, 0, 113, n]))
                    .chain(
                        (0..64u16)
                            .map(|n| IpAddr::from([0x2001, 0xdb8, 5 + n % 2, 0, 0, 0, 0, n % 9])),
                    )
                    .chain([ip("127.0.0.1"), ip("198.51.100.4"), ip("192.0.2.1")]);
                for address in addresses {
                    let key = jail.key_of(address);
                    let (admitted, ignored) = jail.admitted_key(address);
                    assert_eq!(
                        (
                            admitted,
                            ignored.unwrap_or_else(|| jail.is_ignored(admitted))
                        ),
                        (key, jail.is_ignored(key)),
                        "{address} under /{v4} /{v6} with {entries:?}"
                    );
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prefix_bans_count_the_network_and_spare_ignored_ones() {
        let mut s = settings(2, 600);
        s.ipv4_prefix = 24;
        let mut jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
        assert_eq!(
            jail.on_failure(ip("2001:db8:1::1"), 1, Instant::now()),
            Decision::Counted(1)
        );
        let Decision::Ban(order) = jail.on_failure(ip("2001:db8:1::2"), 1, Instant::now()) else {
            panic!("two addresses of one /64 are one attacker")
        };
        assert_eq!(
            order.target,
            "2001:db8:1::/64".parse::<IpNetwork>().unwrap()
        );
        assert_eq!(show_target(order.target), "2001:db8:1::/64");
        // 198.51.100.0/24 holds ignored addresses: its /24 is never counted.
        assert_eq!(
            jail.on_failure(ip("198.51.100.200"), 1, Instant::now()),
            Decision::Ignored
        );
        let Decision::Ban(order) = jail.on_failure(ip("192.0.2.1"), 2, Instant::now()) else {
            panic!()
        };
        assert_eq!(show_target(order.target), "192.0.2.0/24");
    }

    #[tokio::test(start_paused = true)]
    async fn the_storm_guard_withholds_bans_past_the_limit_for_a_minute() {
        let mut s = settings(1, 600);
        s.max_bans_per_minute = Some(3);
        let mut jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
        let decisions: Vec<_> = (1..=5)
            .map(|n| jail.on_failure(ip(&format!("192.0.2.{n}")), 1, Instant::now()))
            .collect();
        assert!(decisions[..3].iter().all(|d| matches!(d, Decision::Ban(_))));
        assert_eq!(decisions[3..], [Decision::Withheld, Decision::Withheld]);
        assert!(jail.in_storm);
        tokio::time::advance(Duration::from_secs(60)).await;
        // The minute passed: pruning ends the storm (gauge and log) before any other ban.
        jail.prune(Instant::now());
        assert!(!jail.in_storm);
        assert!(matches!(
            jail.on_failure(ip("192.0.2.9"), 1, Instant::now()),
            Decision::Ban(_)
        ));
        assert!(!jail.in_storm);
    }

    #[tokio::test(start_paused = true)]
    async fn repeat_bans_escalate_up_to_maxtime() {
        let mut s = settings(1, 600);
        s.increment.enabled = true;
        let mut jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
        let a = ip("192.0.2.9");
        let mut times = Vec::new();
        for _ in 0..4 {
            let Decision::Ban(order) = jail.on_failure(a, 1, Instant::now()) else {
                panic!()
            };
            times.push(order.bantime.unwrap().as_secs());
            jail.unban(IpNetwork::from(a));
        }
        assert_eq!(times, [600, 1200, 2400, 3600]);
    }

    #[tokio::test(start_paused = true)]
    async fn escalation_stops_at_a_century_and_never_overflows() {
        let longest = crate::duration::LONGEST;
        for (maxtime, rndtime) in [(Duration::MAX, longest), (longest, longest)] {
            let mut s = settings(1, 3600);
            s.increment.enabled = true;
            s.increment.factor = 1000.0;
            s.increment.maxtime = maxtime;
            s.increment.rndtime = rndtime;
            let mut jail = Jail::new("sshd", s, JailMetrics::new("sshd"));
            let a = ip("192.0.2.9");
            let mut times = Vec::new();
            for _ in 0..70 {
                let Decision::Ban(order) = jail.on_failure(a, 1, Instant::now()) else {
                    panic!()
                };
                times.push(order.bantime);
                jail.unban(IpNetwork::from(a));
            }
            assert!(times.iter().flatten().all(|t| *t <= longest), "{times:?}");
            if maxtime > longest {
                // Escalated past a century with a permanent maxtime: permanent from then on.
                assert!(times[0].is_some() && times[69].is_none(), "{times:?}");
            } else {
                assert!(times.iter().all(Option::is_some), "{times:?}");
            }
        }
    }
}
