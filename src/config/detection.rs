//! The decision keys of a jail beyond maxretry: `spray`, `prefix_escalation`, and the allowlist
//! that changes at run time (`ignoreip` DNS names, `ignoreip_files`, `ignore_refresh`).
//! Errors come back as (key, reason) for [`super::compile`] to add the file to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::compile::{duration, in_range, BadValue};
use super::raw::{RawDuration, RawJailSettings};
use crate::jail::allow::{expand, parse_entry, Entry};
use crate::jail::escalate::Escalation;
use crate::jail::settings::Detection;
use crate::jail::spray::SpraySettings;

/// Collected (key, reason) errors.
pub(super) type Found = Vec<(String, String)>;

/// `ignoreip` split into addresses/networks and DNS names; a value that is neither is an error.
pub(super) fn ignore_entries(
    key: &str,
    list: &[String],
    found: &mut Found,
) -> (Vec<IpNetwork>, Vec<String>) {
    let mut networks = Vec::new();
    let mut names = Vec::new();
    for (i, text) in list.iter().enumerate() {
        match parse_entry(text.trim()) {
            Ok(Entry::Network(n)) => networks.push(n),
            Ok(Entry::Name(name)) => names.push(name),
            Err(reason) => found.push((format!("{key}[{i}]"), reason.to_string())),
        }
    }
    (networks, names)
}

/// The jail's [`Detection`]: `key` makes a jail key's full name, `base` is the config's
/// directory (relative `ignoreip_files` are taken from there), `prefixes` the jail's
/// ipv4_prefix and ipv6_prefix (escalation must be wider).
pub(super) fn compile(
    merged: &RawJailSettings,
    key: &dyn Fn(&str) -> String,
    base: &Path,
    names: Vec<String>,
    prefixes: (Option<u8>, Option<u8>),
    found: &mut Found,
) -> Detection {
    let mut take = |k: &str, result: Result<(), String>| {
        if let Err(reason) = result {
            found.push((key(k), reason));
        }
    };
    let mut detection = Detection {
        ignore_names: names,
        ..Detection::default()
    };
    if let Some(raw) = &merged.spray {
        let maxaddresses = in_range::<u32>(raw.maxaddresses.unwrap_or(10), 0, 100_000);
        let findtime = positive(raw.findtime.as_ref(), "1h");
        let m_ok = match &maxaddresses {
            Ok(1) => Err("must be 2 or more (or 0 to turn spray off)".to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        let f_ok = findtime.as_ref().map(drop).map_err(|e| e.to_string());
        let all_ok = m_ok.is_ok() && f_ok.is_ok();
        take("spray.maxaddresses", m_ok);
        take("spray.findtime", f_ok);
        if let (true, Ok(maxaddresses), Ok(findtime)) = (all_ok, maxaddresses, findtime) {
            if maxaddresses > 0 {
                detection.spray = Some(SpraySettings {
                    maxaddresses,
                    findtime,
                });
            }
        }
    }
    if let Some(raw) = &merged.prefix_escalation {
        let ipv4 = in_range::<u8>(raw.ipv4.unwrap_or(24), 8, 32);
        let ipv6 = in_range::<u8>(raw.ipv6.unwrap_or(64), 16, 128);
        let after = in_range::<u32>(raw.after.unwrap_or(3), 0, 65_536);
        let wider = |net: &Result<u8, BadValue>, own: Option<u8>, name: &str| {
            match (net, own) {
            (Ok(n), Some(own)) if *n >= own => Err(format!(
                "must be shorter than the jail's {name}_prefix ({own}): a network of what is already banned whole"
            )),
            (Err(e), _) => Err(e.to_string()),
            _ => Ok(()),
        }
        };
        let v4_ok = wider(&ipv4, prefixes.0, "ipv4");
        let v6_ok = wider(&ipv6, prefixes.1, "ipv6");
        let after_ok = match &after {
            Ok(1) => Err("must be 2 or more (or 0 to turn escalation off)".to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        let all_ok = v4_ok.is_ok() && v6_ok.is_ok() && after_ok.is_ok();
        take("prefix_escalation.ipv4", v4_ok);
        take("prefix_escalation.ipv6", v6_ok);
        take("prefix_escalation.after", after_ok);
        if let (true, Ok(ipv4), Ok(ipv6), Ok(after)) = (all_ok, ipv4, ipv6, after) {
            if after > 0 {
                detection.escalation = Some(Escalation { ipv4, ipv6, after });
            }
        }
    }
    let (files, refresh) = allow_files(merged, key, base, found);
    detection.ignore_files = files;
    if let Some(refresh) = refresh {
        detection.ignore_refresh = refresh;
    }
    detection
}

/// `ignoreip_files` (relative ones taken from `base`, each file or a pattern's directory
/// existing) and `ignore_refresh` (None when refused, an error in `found`).
pub(super) fn allow_files(
    merged: &RawJailSettings,
    key: &dyn Fn(&str) -> String,
    base: &Path,
    found: &mut Found,
) -> (Vec<PathBuf>, Option<Duration>) {
    let mut files = Vec::new();
    for (i, pattern) in merged.ignoreip_files.iter().flatten().enumerate() {
        let path = base.join(pattern);
        match expand(&path) {
            Ok(_) => files.push(path),
            Err(reason) => found.push((
                key(&format!("ignoreip_files[{i}]")),
                format!("{reason} (a file must exist; a pattern's directory must exist)"),
            )),
        }
    }
    let refresh = match positive(merged.ignore_refresh.as_ref(), "5m") {
        Ok(d) if d >= Duration::from_secs(1) => Some(d),
        Ok(_) => {
            found.push((key("ignore_refresh"), "must be 1s or more".into()));
            None
        }
        Err(e) => {
            found.push((key("ignore_refresh"), e.to_string()));
            None
        }
    };
    (files, refresh)
}

/// A finite, positive duration with a default.
fn positive(raw: Option<&RawDuration>, default: &str) -> Result<Duration, BadValue> {
    match duration(raw, default)? {
        None => Err(BadValue::Infinite),
        Some(d) if d.is_zero() => Err(BadValue::NotPositive),
        Some(d) => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, jail: &str) -> Result<crate::config::Config, Vec<(String, String)>> {
        let path = dir.join("jailsink.toml");
        let text = format!(
            "[defaults]\naction = \"log\"\nignoreself = false\n[jails.sshd]\nfailregex = ['^bad <HOST>$']\n{jail}\n"
        );
        std::fs::write(&path, text).unwrap();
        crate::config::load(&path).map_err(|e| {
            e.0.into_iter()
                .map(|e| {
                    assert_eq!(e.file, path, "errors name the config file");
                    (e.key, e.reason)
                })
                .collect()
        })
    }

    #[test]
    fn the_keys_compile_with_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("allow.d")).unwrap();
        std::fs::write(dir.path().join("one.txt"), "192.0.2.1\n").unwrap();
        let config = load(
            dir.path(),
            r#"ignoreip = ["127.0.0.0/8", "Gateway.example.org"]
ignoreip_files = ["allow.d/*.txt", "one.txt"]
spray = {}
prefix_escalation = { after = 4 }"#,
        )
        .unwrap();
        let d = &config.jails[0].settings.detection;
        assert_eq!(
            d.spray,
            Some(SpraySettings {
                maxaddresses: 10,
                findtime: Duration::from_secs(3600)
            })
        );
        assert_eq!(
            d.escalation,
            Some(Escalation {
                ipv4: 24,
                ipv6: 64,
                after: 4
            })
        );
        assert_eq!(d.ignore_names, ["gateway.example.org"]);
        assert_eq!(
            d.ignore_files,
            [dir.path().join("allow.d/*.txt"), dir.path().join("one.txt")]
        );
        assert_eq!(d.ignore_refresh, Duration::from_secs(300));
        assert_eq!(config.jails[0].settings.ignore.len(), 1);
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let errors = load(
            dir.path(),
            r#"ignoreip = ["192.0.2.300", "not a host"]
ipv4_prefix = 24
ignoreip_files = ["missing.txt", "nodir/*.txt"]
ignore_refresh = "0s"
spray = { maxaddresses = 1, findtime = "forever" }
prefix_escalation = { ipv4 = 24, after = 1 }"#,
        )
        .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "jails.sshd.ignoreip[0]",
                "jails.sshd.ignoreip[1]",
                "jails.sshd.spray.maxaddresses",
                "jails.sshd.spray.findtime",
                "jails.sshd.prefix_escalation.ipv4",
                "jails.sshd.prefix_escalation.after",
                "jails.sshd.ignoreip_files[0]",
                "jails.sshd.ignoreip_files[1]",
                "jails.sshd.ignore_refresh",
            ],
            "{errors:?}"
        );
        assert!(errors[6].1.contains("missing.txt"), "{:?}", errors[6]);
    }
}
