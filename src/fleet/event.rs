//! The stream entry: one ban or unban decided by a sink, encoded as Redis stream fields, and
//! decoded with strict validation, because an entry is input like any syslog line: a malformed
//! or hostile one is refused (and counted by the caller), never a ban of something that is
//! not an address or network.
//!
//! Two encodings, both read by every agent ([`FleetEvent::from_entry`]): version 1, one stream
//! field per attribute (`op`, `jail`, ...; no `v` field), and version 2 (`v=2`, the default
//! written since), the same attributes packed into one field `e`, separated by spaces, which
//! no attribute may contain. An agent decodes every entry of the stream, so two fields instead
//! of eleven or twelve is most of what it pays per event (Redis's reply parsing included).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::config::valid_name;

/// Most ports (or ranges) one event may carry: iptables multiport's limit.
const MAX_PORTS: usize = 15;
/// Most syslog host names one event carries.
pub const MAX_HOSTS: usize = 16;
/// Longest host name accepted.
const MAX_HOST_LEN: usize = 255;
/// Shortest IPv4 prefix a fleet ban may cover (as `ipv4_prefix` allows).
const MIN_V4_PREFIX: u8 = 8;
/// Shortest IPv6 prefix a fleet ban may cover (as `ipv6_prefix` allows).
const MIN_V6_PREFIX: u8 = 16;
/// Wall-clock milliseconds beyond which a time is nonsense (year 2200).
const MAX_MS: u64 = 7_258_118_400_000;

/// Longest packed event accepted (16 host names of 255 bytes fit with room to spare).
const MAX_PACKED: usize = 8 * 1024;
/// The `v` value of packed entries.
pub const PACKED_VERSION: &str = "2";

/// How a sink writes stream entries (`[fleet] event_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFormat {
    /// Version 2: `v=2` and the event packed into the field `e` (cheapest for agents).
    Packed,
    /// Version 1: one field per attribute, for fleets whose agents predate version 2 (they
    /// count a packed entry as malformed and skip it).
    Fields,
}

/// Ban or unban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Apply a ban until `expires_at`.
    Ban,
    /// Lift it now.
    Unban,
}

impl Op {
    /// The `op` field and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Ban => "ban",
            Op::Unban => "unban",
        }
    }
}

/// One fleet event. Times are wall-clock Unix milliseconds, since they cross hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEvent {
    /// Ban or unban.
    pub op: Op,
    /// The jail that decided it.
    pub jail: String,
    /// An address (/32, /128) or network.
    pub target: IpNetwork,
    /// When the ban was decided (for an unban: when it was lifted).
    pub banned_at: u64,
    /// When the ban ends; None is permanent.
    pub expires_at: Option<u64>,
    /// Offence number, fleet-wide with shared windows.
    pub ban_count: u32,
    /// Failures that led to it.
    pub failures: u32,
    /// The jail's ports (numbers or `a:b` ranges); empty means every port.
    pub ports: Vec<String>,
    /// tcp, udp or all.
    pub protocol: String,
    /// The node that decided it.
    pub origin: String,
    /// Syslog host names the failures came from.
    pub hosts: Vec<String>,
    /// An unban: the `banned_at` of the ban it lifts, so an agent keeps a newer ban of the
    /// same target. None from sinks that predate the field (and for bans): lifts any.
    pub lifts: Option<u64>,
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Malformed {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> Malformed {
    Malformed {
        field,
        reason: reason.into(),
    }
}

/// Appends `parts` separated by commas.
fn join_into(out: &mut String, parts: &[String]) {
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(part);
    }
}

/// A jail name as the config allows it (it names firewall objects on the agent).
pub fn valid_jail(name: &str) -> bool {
    (1..=19).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_port(text: &str) -> bool {
    let number = |t: &str| t.parse::<u16>().is_ok_and(|p| p > 0);
    match text.split_once(':') {
        Some((a, b)) => number(a) && number(b),
        None => number(text),
    }
}

/// A syslog host name as an event may carry it: 1 to 255 printable ASCII characters, no
/// comma (the list separator).
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

/// Parses and checks a target: an address or a network whose host bits are zero, not wider
/// than the shortest prefix a jail may ban, and never unspecified, multicast or broadcast.
pub fn parse_target(text: &str) -> Result<IpNetwork, Malformed> {
    if text.len() > 64 {
        return Err(bad("target", "too long"));
    }
    let net: IpNetwork = text
        .parse()
        .map_err(|_| bad("target", format!("`{text}` is not an address or network")))?;
    let (min, ip) = match net {
        IpNetwork::V4(n) => (MIN_V4_PREFIX, IpAddr::V4(n.ip())),
        IpNetwork::V6(n) => (MIN_V6_PREFIX, IpAddr::V6(n.ip())),
    };
    if net.prefix() < min {
        return Err(bad(
            "target",
            format!("/{} is wider than a ban may be (/{min})", net.prefix()),
        ));
    }
    if ip != net.network() {
        return Err(bad("target", "host bits set in a network"));
    }
    if ip.is_unspecified() || ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        return Err(bad("target", format!("{ip} cannot be banned")));
    }
    Ok(net)
}

/// The packed text of a version 2 entry (`v=2`, field `e`), the text
/// [`FleetEvent::from_entry`] reads the event from; None for other versions.
pub fn packed_text<'a>(pairs: &[(&'a str, &'a str)]) -> Option<&'a str> {
    let field = |name: &str| pairs.iter().rev().find(|(k, _)| *k == name).map(|p| p.1);
    match field("v") {
        Some(PACKED_VERSION) => field("e"),
        _ => None,
    }
}

impl FleetEvent {
    /// The active-set member naming this ban: `jail|target`.
    pub fn member(&self) -> String {
        member(&self.jail, self.target)
    }

    /// The stream fields, in a fixed order.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("op", self.op.as_str().to_string()),
            ("jail", self.jail.clone()),
            ("target", self.target.to_string()),
            ("banned_at", self.banned_at.to_string()),
            (
                "expires_at",
                self.expires_at.map_or(String::new(), |e| e.to_string()),
            ),
            ("ban_count", self.ban_count.to_string()),
            ("failures", self.failures.to_string()),
            ("ports", self.ports.join(",")),
            ("protocol", self.protocol.clone()),
            ("origin", self.origin.clone()),
            ("hosts", self.hosts.join(",")),
        ];
        if let Some(lifts) = self.lifts {
            fields.push(("lifts", lifts.to_string()));
        }
        fields
    }

    /// The stream entry's fields in `format`.
    pub fn to_entry(&self, format: EventFormat) -> Vec<(&'static str, String)> {
        match format {
            EventFormat::Fields => self.to_fields(),
            EventFormat::Packed => vec![("v", PACKED_VERSION.to_string()), ("e", self.to_packed())],
        }
    }

    /// The attributes in [`FIELDS`] order, separated by single spaces (an absent one is
    /// empty): `ban sshd 192.0.2.7/32 1700000000000 1700000600000 2 5 22,2222:2223 tcp
    /// central-1 web-1,web-2 ` (no `lifts`, so it ends in a space).
    pub fn to_packed(&self) -> String {
        let mut out = String::with_capacity(96);
        self.write_packed(&mut out);
        out
    }

    /// Appends [`FleetEvent::to_packed`]'s text to `out`, with no allocation of its own (an
    /// agent's store writes one per ban it holds, into one buffer).
    pub fn write_packed(&self, out: &mut String) {
        use std::fmt::Write;
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{} {} {} {} ",
            self.op.as_str(),
            self.jail,
            self.target,
            self.banned_at
        );
        if let Some(e) = self.expires_at {
            let _ = write!(out, "{e}");
        }
        let _ = write!(out, " {} {} ", self.ban_count, self.failures);
        join_into(out, &self.ports);
        let _ = write!(out, " {} {} ", self.protocol, self.origin);
        join_into(out, &self.hosts);
        out.push(' ');
        if let Some(l) = self.lifts {
            let _ = write!(out, "{l}");
        }
    }

    /// Reads a packed event (version 2). Parts past the twelfth are ignored, so a later
    /// writer of version 2 may append attributes; fewer than twelve is malformed.
    pub fn from_packed(text: &str) -> Result<FleetEvent, Malformed> {
        if text.len() > MAX_PACKED {
            return Err(bad("e", "too long"));
        }
        let mut found: [Option<&str>; FIELDS.len()] = [None; FIELDS.len()];
        // As `text.split(' ')`, by memchr (a space is one byte): every agent splits every
        // entry, and the char searcher showed in the profile.
        let mut rest = Some(text);
        for slot in &mut found {
            let part = rest.ok_or_else(|| {
                bad(
                    "e",
                    format!("`{}` has fewer than {} parts", short(text), FIELDS.len()),
                )
            })?;
            match memchr::memchr(b' ', part.as_bytes()) {
                Some(i) => {
                    *slot = Some(&part[..i]);
                    rest = Some(&part[i + 1..]);
                }
                None => {
                    *slot = Some(part);
                    rest = None;
                }
            }
        }
        FleetEvent::from_found(&found)
    }

    /// Reads a stream entry of either version: `v=2` is packed in `e`, no `v` is one field per
    /// attribute, any other `v` (a newer format) is refused.
    pub fn from_entry(pairs: &[(&str, &str)]) -> Result<FleetEvent, Malformed> {
        if let Some(text) = packed_text(pairs) {
            return FleetEvent::from_packed(text);
        }
        match pairs.iter().rev().find(|(k, _)| *k == "v").map(|p| p.1) {
            None => FleetEvent::from_pairs(pairs.iter().copied()),
            Some(PACKED_VERSION) => Err(bad("e", "missing")),
            Some(other) => Err(bad(
                "v",
                format!("version `{}` is not known (1 or 2)", short(other)),
            )),
        }
    }

    /// Reads and validates stream fields. Unknown fields are ignored (a newer sink may add
    /// some); every known one must be well formed.
    pub fn from_fields(fields: &HashMap<String, String>) -> Result<FleetEvent, Malformed> {
        FleetEvent::from_pairs(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// As [`FleetEvent::from_fields`], from (field, value) pairs as a stream entry lists them
    /// (a later duplicate wins), borrowed from the reply: an agent decodes every entry, so no
    /// map and no copy of the names is made.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<FleetEvent, Malformed> {
        let mut found: [Option<&str>; FIELDS.len()] = [None; FIELDS.len()];
        for (name, value) in pairs {
            if let Some(i) = FIELDS.iter().position(|f| *f == name) {
                found[i] = Some(value);
            }
        }
        FleetEvent::from_found(&found)
    }

    /// Validates the attributes, found in [`FIELDS`] order.
    fn from_found(found: &[Option<&str>; FIELDS.len()]) -> Result<FleetEvent, Malformed> {
        let field = |name: &'static str| {
            FIELDS
                .iter()
                .position(|f| *f == name)
                .and_then(|i| found[i])
        };
        let get = |name: &'static str| field(name).ok_or_else(|| bad(name, "missing"));
        let number = |name: &'static str, text: &str| -> Result<u64, Malformed> {
            text.parse::<u64>()
                .map_err(|_| bad(name, format!("`{}` is not a number", short(text))))
        };
        let op = match get("op")? {
            "ban" => Op::Ban,
            "unban" => Op::Unban,
            other => return Err(bad("op", format!("`{}` is not ban or unban", short(other)))),
        };
        let jail = get("jail")?;
        if !valid_jail(jail) {
            return Err(bad("jail", format!("`{}` is not a jail name", short(jail))));
        }
        let target = parse_target(get("target")?)?;
        let banned_at = number("banned_at", get("banned_at")?)?;
        if banned_at > MAX_MS {
            return Err(bad("banned_at", "out of range"));
        }
        let expires_at = match get("expires_at")? {
            "" => None,
            text => {
                let e = number("expires_at", text)?;
                if e > MAX_MS || e < banned_at {
                    return Err(bad("expires_at", "before banned_at or out of range"));
                }
                Some(e)
            }
        };
        let small = |name: &'static str| -> Result<u32, Malformed> {
            u32::try_from(number(name, get(name)?)?).map_err(|_| bad(name, "out of range"))
        };
        let ban_count = small("ban_count")?;
        let failures = small("failures")?;
        let ports: Vec<String> = match get("ports")? {
            "" => Vec::new(),
            text => text.split(',').map(str::to_string).collect(),
        };
        if ports.len() > MAX_PORTS || !ports.iter().all(|p| valid_port(p)) {
            return Err(bad(
                "ports",
                format!("`{}` is not a port list", short(get("ports")?)),
            ));
        }
        let protocol = get("protocol")?;
        if !matches!(protocol, "tcp" | "udp" | "all") {
            return Err(bad(
                "protocol",
                format!("`{}` is not tcp, udp or all", short(protocol)),
            ));
        }
        let origin = get("origin")?;
        if !valid_name(origin) {
            return Err(bad(
                "origin",
                format!("`{}` is not a node name", short(origin)),
            ));
        }
        let hosts: Vec<String> = match get("hosts")? {
            "" => Vec::new(),
            text => text.split(',').map(str::to_string).collect(),
        };
        if hosts.len() > MAX_HOSTS || !hosts.iter().all(|h| valid_host(h)) {
            return Err(bad("hosts", "not a list of host names"));
        }
        let lifts = match field("lifts") {
            None | Some("") => None,
            Some(text) => {
                let at = number("lifts", text)?;
                if at > MAX_MS {
                    return Err(bad("lifts", "out of range"));
                }
                Some(at)
            }
        };
        Ok(FleetEvent {
            lifts,
            op,
            jail: jail.to_string(),
            target,
            banned_at,
            expires_at,
            ban_count,
            failures,
            ports,
            protocol: protocol.to_string(),
            origin: origin.to_string(),
            hosts,
        })
    }

    /// The details kept beside the active set (JSON), validated like stream fields on read.
    pub fn to_json(&self) -> String {
        let fields: HashMap<&str, String> = self.to_fields().into_iter().collect();
        serde_json::to_string(&fields).unwrap_or_default()
    }

    /// Reads details written by [`FleetEvent::to_json`].
    pub fn from_json(text: &str) -> Result<FleetEvent, Malformed> {
        if text.len() > 16 * 1024 {
            return Err(bad("details", "too long"));
        }
        let fields: HashMap<String, String> =
            serde_json::from_str(text).map_err(|e| bad("details", e.to_string()))?;
        FleetEvent::from_fields(&fields)
    }
}

/// Every field an event may have (unknown ones are ignored).
const FIELDS: [&str; 12] = [
    "op",
    "jail",
    "target",
    "banned_at",
    "expires_at",
    "ban_count",
    "failures",
    "ports",
    "protocol",
    "origin",
    "hosts",
    "lifts",
];

/// The active-set member of a ban of `target` in `jail`.
pub fn member(jail: &str, target: IpNetwork) -> String {
    format!("{jail}|{target}")
}

/// At most 40 characters of hostile text, for error messages.
fn short(text: &str) -> String {
    text.chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_text_is_the_field_from_entry_reads() {
        let e = "ban sshd 192.0.2.1/32 1 2 1 5 22 tcp n  ";
        assert_eq!(packed_text(&[("v", "2"), ("e", e)]), Some(e));
        assert_eq!(packed_text(&[("e", "x"), ("v", "2"), ("e", e)]), Some(e));
        assert_eq!(packed_text(&[("v", "3"), ("e", e)]), None);
        assert_eq!(packed_text(&[("op", "ban"), ("e", e)]), None);
        assert_eq!(
            FleetEvent::from_entry(&[("v", "2"), ("e", e)]),
            FleetEvent::from_packed(e)
        );
    }

    /// `from_packed` as it split before (str::split), the reference for the memchr split.
    fn split_reference(text: &str) -> Result<FleetEvent, Malformed> {
        let mut found: [Option<&str>; FIELDS.len()] = [None; FIELDS.len()];
        let mut parts = text.split(' ');
        for slot in &mut found {
            *slot = Some(parts.next().ok_or_else(|| {
                bad(
                    "e",
                    format!("`{}` has fewer than {} parts", short(text), FIELDS.len()),
                )
            })?);
        }
        FleetEvent::from_found(&found)
    }

    #[test]
    fn packed_parts_split_as_str_split_did() {
        let mut texts = vec![String::new(), " ".into(), "  ".into(), "ban".into()];
        let mut unban = event();
        unban.op = Op::Unban;
        unban.lifts = Some(1_699_999_999_999);
        for e in [event(), unban] {
            let packed = e.to_packed();
            assert_eq!(FleetEvent::from_packed(&packed), Ok(e.clone()));
            let parts: Vec<&str> = packed.split(' ').collect();
            for n in 0..=parts.len() {
                texts.push(parts[..n].join(" "));
                texts.push(format!("{} ", parts[..n].join(" ")));
                texts.push(format!("{}  extra ü", parts[..n].join(" ")));
            }
            for (i, _) in packed.char_indices() {
                texts.push(format!("{} {}", &packed[..i], &packed[i..]));
                texts.push(format!("{}ü{}", &packed[..i], &packed[i..]));
            }
        }
        for text in &texts {
            assert_eq!(
                FleetEvent::from_packed(text),
                split_reference(text),
                "{text:?}"
            );
        }
    }

    fn event() -> FleetEvent {
        FleetEvent {
            op: Op::Ban,
            jail: "sshd".into(),
            target: "192.0.2.7/32".parse().unwrap(),
            banned_at: 1_700_000_000_000,
            expires_at: Some(1_700_000_600_000),
            ban_count: 2,
            failures: 5,
            ports: vec!["22".into(), "2222:2223".into()],
            protocol: "tcp".into(),
            origin: "central-1".into(),
            hosts: vec!["web-1".into(), "web-2".into()],
            lifts: None,
        }
    }

    fn fields(e: &FleetEvent) -> HashMap<String, String> {
        e.to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn round_trips_through_fields_and_json() {
        let e = event();
        assert_eq!(FleetEvent::from_fields(&fields(&e)).unwrap(), e);
        assert_eq!(FleetEvent::from_json(&e.to_json()).unwrap(), e);
        let mut permanent = e.clone();
        permanent.expires_at = None;
        permanent.ports.clear();
        permanent.hosts.clear();
        permanent.target = "2001:db8::/64".parse().unwrap();
        assert_eq!(
            FleetEvent::from_fields(&fields(&permanent)).unwrap(),
            permanent
        );
        let mut unban = e.clone();
        unban.op = Op::Unban;
        unban.lifts = Some(1_700_000_000_000);
        assert_eq!(FleetEvent::from_fields(&fields(&unban)).unwrap(), unban);
        assert_eq!(FleetEvent::from_json(&unban.to_json()).unwrap(), unban);
    }

    #[test]
    fn hostile_entries_are_refused_with_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("op", "drop-table", "op"),
            ("jail", "../../etc", "jail"),
            ("jail", "a;rm -rf", "jail"),
            ("target", "0.0.0.0/0", "target"),
            ("target", "10.0.0.0/4", "target"),
            ("target", "192.0.2.1/24", "target"),
            ("target", "0.0.0.0", "target"),
            ("target", "255.255.255.255", "target"),
            ("target", "ff02::1", "target"),
            ("target", "example.com", "target"),
            ("target", "::/0", "target"),
            ("banned_at", "-5", "banned_at"),
            ("banned_at", "99999999999999999999", "banned_at"),
            ("expires_at", "1", "expires_at"),
            ("ban_count", "4294967296", "ban_count"),
            ("ports", "22;reboot", "ports"),
            ("ports", "0", "ports"),
            ("protocol", "icmp", "protocol"),
            ("origin", "a b", "origin"),
            ("hosts", "web\n1", "hosts"),
            ("hosts", "web,", "hosts"),
            ("lifts", "yesterday", "lifts"),
            ("lifts", "99999999999999999", "lifts"),
        ];
        for (field, value, expected) in cases {
            let mut f = fields(&event());
            f.insert(field.to_string(), value.to_string());
            let err = FleetEvent::from_fields(&f).unwrap_err();
            assert_eq!(err.field, *expected, "{field}={value:?}: {err}");
        }
        let mut f = fields(&event());
        f.remove("target");
        assert_eq!(FleetEvent::from_fields(&f).unwrap_err().field, "target");
        assert!(FleetEvent::from_json("{\"op\": 5}").is_err());
        assert!(FleetEvent::from_json("not json").is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut f = fields(&event());
        f.insert("future".into(), "x".into());
        assert!(FleetEvent::from_fields(&f).is_ok());
    }

    fn decode(e: &FleetEvent, format: EventFormat) -> Result<FleetEvent, Malformed> {
        let entry = e.to_entry(format);
        let pairs: Vec<(&str, &str)> = entry.iter().map(|(k, v)| (*k, v.as_str())).collect();
        FleetEvent::from_entry(&pairs)
    }

    #[test]
    fn both_versions_round_trip_through_entries() {
        let mut unban = event();
        unban.op = Op::Unban;
        unban.lifts = Some(1_700_000_000_000);
        let mut bare = event();
        bare.expires_at = None;
        bare.ports.clear();
        bare.hosts.clear();
        bare.target = "2001:db8::/64".parse().unwrap();
        for e in [event(), unban, bare] {
            assert_eq!(decode(&e, EventFormat::Packed).unwrap(), e);
            assert_eq!(decode(&e, EventFormat::Fields).unwrap(), e);
        }
        let packed = event().to_entry(EventFormat::Packed);
        assert_eq!(packed.len(), 2);
        assert_eq!(packed[0], ("v", "2".to_string()));
        assert_eq!(
            packed[1].1,
            "ban sshd 192.0.2.7/32 1700000000000 1700000600000 2 5 22,2222:2223 tcp central-1 web-1,web-2 "
        );
        // Appended parts (a later writer of version 2) are ignored.
        let longer = format!("{}1700000000000 future", packed[1].1);
        let mut want = event();
        want.lifts = Some(1_700_000_000_000);
        assert_eq!(FleetEvent::from_packed(&longer).unwrap(), want);
    }

    #[test]
    fn hostile_packed_entries_are_refused_with_the_field() {
        let good = event().to_packed();
        let cases: Vec<(String, &str)> = vec![
            ("ban sshd 192.0.2.7/32".to_string(), "e"),
            (String::new(), "e"),
            (good.replace("192.0.2.7/32", "0.0.0.0/0"), "target"),
            (good.replace("sshd", "../x"), "jail"),
            (good.replace(" tcp ", " icmp "), "protocol"),
            (good.replace("22,2222", "22;reboot"), "ports"),
            (good.replacen("ban", "drop", 1), "op"),
            // A space inside an attribute shifts every later part: still refused.
            (good.replace("web-1", "web 1"), "lifts"),
            ("x ".repeat(5000), "e"),
        ];
        for (text, field) in cases {
            let err = FleetEvent::from_packed(&text).unwrap_err();
            assert_eq!(err.field, field, "{text:?}: {err}");
        }
        let err = FleetEvent::from_entry(&[("v", "3"), ("e", good.as_str())]).unwrap_err();
        assert_eq!(err.field, "v");
        let err = FleetEvent::from_entry(&[("v", "2")]).unwrap_err();
        assert_eq!(err.field, "e");
    }
}
