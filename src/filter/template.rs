//! fail2ban-style tags (`<HOST>`, `<F-USER>...</F-USER>`, ...) expanded into Rust regex syntax.
//!
//! `<HOST>` is strict on purpose: it matches one IPv4 or IPv6 address and never a DNS name, so
//! matching needs no lookup and the capture can be parsed into the address that gets banned.

/// Dotted quad; range-checked later when the capture is parsed.
pub(crate) const IP4: &str = r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}";
/// Colon-hex forms, including `::`, `::1` and IPv4-mapped tails; parsed and checked later.
pub(crate) const IP6: &str =
    r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f]{1,4})?";

/// An IPv6 zone index after an address (`fe80::1%eth0`): matched outside the address group, so
/// the address is banned without it.
pub(crate) const ZONE: &str = r"(?:%[0-9A-Za-z_.-]{1,32})?";

/// What a capture group of an expanded pattern holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupRole {
    /// An address to ban (`<HOST>`, `<ADDR>`, `<IP4>`, `<IP6>`).
    Address,
    /// An address with an optional prefix length (`<SUBNET>`).
    Subnet,
    /// The user name (`<F-USER>`).
    User,
    /// Any other `<F-NAME>` group, kept for display.
    Other,
    /// `<F-NOFAIL>`: the line is informative, not a failure.
    NoFail,
}

/// A pattern with its tags replaced, and which named group plays which role.
#[derive(Debug, Clone)]
pub(crate) struct Expanded {
    /// Rust `regex` syntax.
    pub regex: String,
    /// Group names in the order they appear, with their role.
    pub groups: Vec<(String, GroupRole)>,
}

impl Expanded {
    /// True when the pattern can name an address to ban.
    pub(crate) fn has_address(&self) -> bool {
        self.groups
            .iter()
            .any(|(_, role)| matches!(role, GroupRole::Address | GroupRole::Subnet))
    }
}

/// A `<F-NAME>` group tag that does not pair up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// `</F-NAME>` with no `<F-NAME>` open (the tag, without its brackets).
    #[error("<{0}> closes a group that is not open")]
    NotOpen(String),
    /// `<F-NAME>` with no `</F-NAME>`.
    #[error("<{0}> is never closed")]
    NeverClosed(String),
}

/// Replaces every known tag in `pattern`; unknown `<...>` text stays literal, as in fail2ban.
pub(crate) fn expand(pattern: &str) -> Result<Expanded, TagError> {
    let mut out = String::with_capacity(pattern.len() + 128);
    let mut groups: Vec<(String, GroupRole)> = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = pattern;
    while let Some(at) = rest.find('<') {
        // `\<` is an escaped bracket (or a word boundary in Rust syntax): never a tag.
        if rest[..at].ends_with('\\') && !rest[..at].ends_with("\\\\") {
            out.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            continue;
        }
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(end) = after.find('>') else {
            out.push_str(after);
            rest = "";
            break;
        };
        let tag = &after[1..end];
        let mut name_for = |prefix: &str, role: GroupRole| {
            let name = format!("{prefix}{}", groups.len());
            groups.push((name.clone(), role));
            name
        };
        match tag {
            "HOST" | "ADDR" => {
                let n = name_for("addr", GroupRole::Address);
                // An IPv6 zone index (`fe80::1%eth0`) is matched but left out of the address.
                out.push_str(&format!("(?P<{n}>{IP4}|{IP6}){ZONE}"));
            }
            "IP4" => {
                let n = name_for("addr", GroupRole::Address);
                out.push_str(&format!("(?P<{n}>{IP4})"));
            }
            "IP6" => {
                let n = name_for("addr", GroupRole::Address);
                out.push_str(&format!("(?P<{n}>{IP6}){ZONE}"));
            }
            "SUBNET" | "CIDR" => {
                let n = name_for("subnet", GroupRole::Subnet);
                out.push_str(&format!("(?P<{n}>(?:{IP4}|{IP6})(?:/[0-9]{{1,3}})?)"));
            }
            "F-NOFAIL" if !after[end..].contains("</F-NOFAIL>") => {
                let n = name_for("nofail", GroupRole::NoFail);
                out.push_str(&format!("(?P<{n}>)"));
            }
            t if t.starts_with("F-") && is_group_name(&t[2..]) => {
                let role = if t == "F-USER" || t.starts_with("F-ALT_USER") {
                    GroupRole::User
                } else if t == "F-NOFAIL" {
                    GroupRole::NoFail
                } else {
                    GroupRole::Other
                };
                let n = name_for(&format!("f_{}_", t[2..].to_ascii_lowercase()), role);
                open.push(t.to_string());
                out.push_str(&format!("(?P<{n}>"));
            }
            t if t.starts_with("/F-") => {
                if open.pop().as_deref() != Some(&t[1..]) {
                    return Err(TagError::NotOpen(t.to_string()));
                }
                out.push(')');
            }
            _ => out.push_str(&after[..=end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if let Some(unclosed) = open.pop() {
        return Err(TagError::NeverClosed(unclosed));
    }
    Ok(Expanded { regex: out, groups })
}

fn is_group_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_becomes_a_named_address_group() {
        let e = expand(r"^Failed password for .* from <HOST> port \d+").unwrap();
        assert!(e.regex.contains("(?P<addr0>"));
        assert!(e.has_address());
        let re = regex::Regex::new(&e.regex).unwrap();
        let caps = re
            .captures("Failed password for root from 2001:db8::1 port 22")
            .unwrap();
        assert_eq!(&caps["addr0"], "2001:db8::1");
    }

    #[test]
    fn user_groups_open_and_close() {
        let e = expand(r"user <F-USER>\S+</F-USER> from <HOST>").unwrap();
        assert_eq!(e.groups[0].1, GroupRole::User);
        let re = regex::Regex::new(&e.regex).unwrap();
        let caps = re.captures("user bob from 192.0.2.1").unwrap();
        assert_eq!(&caps[e.groups[0].0.as_str()], "bob");
    }

    #[test]
    fn unbalanced_groups_are_errors() {
        assert!(expand("<F-USER>x").is_err());
        assert!(expand("x</F-USER>").is_err());
    }

    #[test]
    fn unknown_tags_and_escapes_stay_literal() {
        let e = expand(r"<nope> \<HOST> <HOST>").unwrap();
        assert!(e.regex.starts_with(r"<nope> \<HOST> (?P<addr0>"));
        assert_eq!(e.groups.len(), 1);
    }
}
