//! Addresses and networks: parsing, normalising and showing them. A leaf that every stage
//! (filter, jail, state, action, control) may use, so none of them imports another for it.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// Why a text is not an address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address")]
pub struct NotAnAddress(pub String);

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`) becomes plain IPv4, so one attacker is one key.
pub fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Parses one address (no network), normalised: what a manual ban or a log line names.
pub fn parse_address(text: &str) -> Result<IpAddr, NotAnAddress> {
    text.trim()
        .parse::<IpAddr>()
        .map(normalise)
        .map_err(|_| NotAnAddress(text.to_string()))
}

/// Parses an address or a CIDR network, as the state, the CLI, ban lists and firewall listings
/// write them; an IPv4-mapped IPv6 address or network becomes plain IPv4 (as IPv6 it would
/// match no packet, and miss the IPv4 allowlist).
pub(crate) fn parse_target(text: &str) -> Result<IpNetwork, NotAnAddress> {
    let target = text
        .trim()
        .parse::<IpNetwork>()
        .map_err(|_| NotAnAddress(text.to_string()))?;
    Ok(normalise_network(target))
}

/// A target an operator names by hand (`ban`, `unban`, ban lists): an address, which a jail
/// widens to its prefix as it would a failure's, or a network written with its prefix, taken
/// as written (`192.0.2.5/32` is that one address even where the jail bans /24s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Named {
    /// The address (as a full-length network) or the network, normalised.
    pub target: IpNetwork,
    /// Written with a `/prefix`.
    pub as_network: bool,
}

/// Parses what an operator names by hand: [`parse_target`], remembering whether a prefix was
/// written.
pub(crate) fn parse_named(text: &str) -> Result<Named, NotAnAddress> {
    Ok(Named {
        target: parse_target(text)?,
        as_network: text.contains('/'),
    })
}

impl std::str::FromStr for Named {
    type Err = NotAnAddress;

    /// As [`parse_named`].
    fn from_str(text: &str) -> Result<Named, NotAnAddress> {
        parse_named(text)
    }
}

/// The network of `prefix` bits that holds `ip` (the address itself at /32 or /128): what a
/// failure counts against when a jail bans by prefix.
/// Every failure's key and allowlist lookup goes through here, so the mask is applied directly
/// (ipnetwork's new() + network() + new() cost more than the rest of a cached decision's
/// lookup).
pub(crate) fn network_of(ip: IpAddr, prefix: u8) -> IpNetwork {
    let bits = u32::from(prefix);
    match ip {
        IpAddr::V4(a) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            let net = std::net::Ipv4Addr::from(u32::from(a) & mask);
            ipnetwork::Ipv4Network::new(net, prefix).map_or(IpNetwork::from(ip), IpNetwork::V4)
        }
        IpAddr::V6(a) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            let net = std::net::Ipv6Addr::from(u128::from(a) & mask);
            ipnetwork::Ipv6Network::new(net, prefix).map_or(IpNetwork::from(ip), IpNetwork::V6)
        }
        // A prefix longer than the address: the address itself.
        _ => IpNetwork::from(ip),
    }
}

/// A single address as itself, a prefix ban as CIDR: how logs and the CLI name a target.
pub(crate) fn show_target(target: IpNetwork) -> String {
    let full = if target.is_ipv4() { 32 } else { 128 };
    if target.prefix() == full {
        target.ip().to_string()
    } else {
        target.to_string()
    }
}

/// What a failure of `ip` counts against under a jail's `ipv4_prefix` / `ipv6_prefix`: the
/// address, or its network, since one IPv6 attacker usually owns a whole prefix. A network that
/// `allowlisted` says overlaps the allowlist (the host's own /64 at a provider, say) is never
/// banned, so its other addresses count one by one instead of not at all. The jail and the
/// fleet's shared windows key failures by this one rule.
pub(crate) fn counting_key(
    ip: IpAddr,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    allowlisted: impl Fn(IpNetwork) -> bool,
) -> IpNetwork {
    counting_key_allowlisted(ip, ipv4_prefix, ipv6_prefix, allowlisted).0
}

/// [`counting_key`] with what `allowlisted` answered for the key on the way, so that a
/// failure's allowlist check need not ask again: None for a single-address key (no lookup was
/// needed to find it).
pub(crate) fn counting_key_allowlisted(
    ip: IpAddr,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    allowlisted: impl Fn(IpNetwork) -> bool,
) -> (IpNetwork, Option<bool>) {
    let (prefix, full) = if ip.is_ipv4() {
        (ipv4_prefix, 32)
    } else {
        (ipv6_prefix, 128)
    };
    let key = network_of(ip, prefix);
    if prefix >= full {
        return (key, None);
    }
    let listed = allowlisted(key);
    if listed {
        // The network holds an allowlisted address: its other addresses count one by one.
        let own = IpNetwork::from(ip);
        if !allowlisted(own) {
            return (own, Some(false));
        }
    }
    (key, Some(listed))
}

/// `net` as jailsink counts failures: an IPv4-mapped IPv6 network (`::ffff:192.0.2.0/120`,
/// copied from a dual-stack server's log) is the IPv4 network it maps (`192.0.2.0/24`), since
/// every failure's address is normalised to IPv4 ([`normalise`]); any other network is kept.
pub(crate) fn normalise_network(net: IpNetwork) -> IpNetwork {
    match net {
        IpNetwork::V6(n) if n.prefix() >= 96 => match n.ip().to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4), n.prefix() - 96),
            None => net,
        },
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_named_as_mapped_ipv6_are_ipv4() {
        let t = |s: &str| parse_target(s).unwrap();
        assert_eq!(t("::ffff:198.51.100.0/120"), t("198.51.100.0/24"));
        assert_eq!(t("::ffff:198.51.100.7"), t("198.51.100.7"));
        assert_eq!(t("2001:db8::/64").to_string(), "2001:db8::/64");
        assert!(parse_target("::ffff:1.2.3.4/200").is_err());
    }

    #[test]
    fn mapped_networks_are_their_ipv4_networks() {
        let n = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert_eq!(
            normalise_network(n("::ffff:192.0.2.7/128")),
            n("192.0.2.7/32")
        );
        assert_eq!(
            normalise_network(n("::ffff:192.0.2.0/120")),
            n("192.0.2.0/24")
        );
        assert_eq!(normalise_network(n("::ffff:0:0/96")), n("0.0.0.0/0"));
        // Wider than the mapped range, or not mapped at all: kept as IPv6.
        assert_eq!(normalise_network(n("::/64")), n("::/64"));
        assert_eq!(normalise_network(n("2001:db8::/64")), n("2001:db8::/64"));
        assert_eq!(normalise_network(n("192.0.2.0/24")), n("192.0.2.0/24"));
    }

    #[test]
    fn network_of_is_ipnetworks_network_at_every_prefix() {
        let slow = |ip: IpAddr, prefix: u8| {
            IpNetwork::new(ip, prefix)
                .and_then(|n| IpNetwork::new(n.network(), prefix))
                .unwrap_or_else(|_| IpNetwork::from(ip))
        };
        for text in [
            "192.0.2.77",
            "255.255.255.255",
            "0.0.0.0",
            "2001:db8:85a3::8a2e:370:7334",
            "::ffff:192.0.2.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            for prefix in 0..=255u8 {
                assert_eq!(network_of(ip, prefix), slow(ip, prefix), "{text}/{prefix}");
            }
        }
    }

    #[test]
    fn mapped_ipv4_is_plain_ipv4() {
        assert_eq!(
            parse_address("::ffff:192.0.2.1"),
            Ok("192.0.2.1".parse().unwrap())
        );
        assert!(parse_address("example.org").is_err());
    }

    #[test]
    fn networks_are_aligned_and_shown_as_operators_write_them() {
        let net = network_of("2001:db8::7".parse().unwrap(), 64);
        assert_eq!(show_target(net), "2001:db8::/64");
        let one = network_of("192.0.2.7".parse().unwrap(), 32);
        assert_eq!(show_target(one), "192.0.2.7");
        assert_eq!(parse_target(" 192.0.2.0/24 "), Ok(net_of("192.0.2.0/24")));
        assert_eq!(parse_target("::ffff:192.0.2.1"), Ok(net_of("192.0.2.1/32")));
    }

    fn net_of(text: &str) -> IpNetwork {
        text.parse().unwrap()
    }
}
