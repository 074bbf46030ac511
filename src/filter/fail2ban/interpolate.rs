//! fail2ban's two substitution passes: Python's `%(name)s` at read time, then `<name>` tags.
//!
//! `%(name)s` looks in the caller's options, then the section, then `[DEFAULT]`;
//! `%(section/name)s` and `%(known/name)s` reach other sections as fail2ban's reader allows.
//! `<name>` tags are then replaced from the combined options (or any `[Definition]` option),
//! innermost first, so `<mdre-<mode>>` becomes `<mdre-normal>` and then its value. Unknown tags
//! (`<HOST>`, `<F-USER>`) stay for the regex stage.

use std::collections::BTreeMap;

use super::ini::Merged;

/// Python's `MAX_INTERPOLATION_DEPTH`.
const MAX_DEPTH: usize = 10;
/// fail2ban's `MAX_TAG_REPLACE_COUNT`: one tag replaced more often than this is a loop.
const MAX_TAG_REPLACE: usize = 25;
/// Values longer than this after substitution are refused (a runaway expansion).
const MAX_VALUE_BYTES: usize = 256 << 10;

/// Why an option's value could not be substituted; each names the option (or tag) it was in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// `%(a)s` refers to `%(b)s` ... more than Python allows.
    #[error("`{option}`: %(...)s nested more than {max} deep", max = MAX_DEPTH)]
    TooDeep {
        /// The option being read.
        option: String,
    },
    /// `%(` with no `)s`.
    #[error("`{option}`: unterminated %( in `{value}`")]
    Unterminated {
        /// The option being read.
        option: String,
        /// Its raw value.
        value: String,
    },
    /// `%(name)s` names nothing in the options, the section or `[DEFAULT]`.
    #[error("`{option}`: %({name})s is not defined")]
    Undefined {
        /// The option being read.
        option: String,
        /// The name it refers to.
        name: String,
    },
    /// A `%` that starts neither `%%` nor `%(`.
    #[error("`{option}`: a lone % (write %% for a percent sign) in `{value}`")]
    LonePercent {
        /// The option being read.
        option: String,
        /// Its raw value.
        value: String,
    },
    /// `%(name)s` substitution grew the value past [`MAX_VALUE_BYTES`].
    #[error("`{option}`: expands beyond {max} bytes", max = MAX_VALUE_BYTES)]
    TooLong {
        /// The option being read.
        option: String,
    },
    /// A `<tag>` that leads back to itself.
    #[error("`{tag}` refers to itself through <{name}> and cannot be resolved")]
    SelfReference {
        /// The option whose tags were being replaced.
        tag: String,
        /// The tag that loops.
        name: String,
    },
    /// `<tag>` substitution grew the value past [`MAX_VALUE_BYTES`].
    #[error("`{tag}` expands beyond {max} bytes", max = MAX_VALUE_BYTES)]
    TagTooLong {
        /// The option whose tags were being replaced.
        tag: String,
    },
}

/// Options given by the caller (`sshd[mode=aggressive]`), lower-cased names.
pub(crate) type Vars = BTreeMap<String, String>;

/// Reads `section`/`option` with `%(name)s` interpolated. `None` when the option is absent.
pub(crate) fn get(
    conf: &Merged,
    section: &str,
    option: &str,
    vars: &Vars,
) -> Result<Option<String>, InterpolateError> {
    let option = option.to_lowercase();
    let Some(raw) = lookup(conf, section, &option, vars) else {
        return Ok(None);
    };
    interpolate(conf, section, &option, &raw, vars, 1).map(Some)
}

/// fail2ban's `get_ex`: `name` may be `section/name` (or `default/name`, `known/name`).
pub(crate) fn get_ex(conf: &Merged, section: &str, option: &str, vars: &Vars) -> Option<String> {
    if let Some((sec, opt)) = split_section_option(option) {
        let candidates: Vec<String> = match sec.to_lowercase().as_str() {
            "known" => vec![format!("KNOWN/{section}"), section.to_string()],
            "default" => vec!["DEFAULT".into()],
            _ => vec![sec.to_string()],
        };
        for sec in candidates {
            let found = if sec == "DEFAULT" {
                conf.defaults.contains_key(&opt.to_lowercase())
            } else {
                conf.section(&sec).is_some()
            };
            if found {
                if let Ok(Some(v)) = get(conf, &sec, opt, &Vars::new()) {
                    return Some(v);
                }
            }
        }
    }
    get(conf, section, option, vars).ok().flatten()
}

fn split_section_option(option: &str) -> Option<(&str, &str)> {
    let (sec, opt) = option.split_once('/')?;
    let valid_sec = !sec.is_empty()
        && sec
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let valid_opt = !opt.is_empty() && !opt.contains(|c: char| c.is_whitespace() || c == '>');
    (valid_sec && valid_opt).then_some((sec, opt))
}

fn lookup(conf: &Merged, section: &str, option: &str, vars: &Vars) -> Option<String> {
    if let Some(v) = vars.get(option) {
        return Some(v.clone());
    }
    if section != "DEFAULT" {
        if let Some(v) = conf.section(section).and_then(|s| s.get(option)) {
            return Some(v.clone());
        }
    }
    conf.defaults.get(option).cloned()
}

/// `%(name)s` in the context of `section`; a `%(sec/name)s` reads another section.
fn interpolate(
    conf: &Merged,
    section: &str,
    option: &str,
    value: &str,
    vars: &Vars,
    depth: usize,
) -> Result<String, InterpolateError> {
    if depth > MAX_DEPTH {
        return Err(InterpolateError::TooDeep {
            option: option.to_string(),
        });
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(tail) = after.strip_prefix("%%") {
            out.push('%');
            rest = tail;
        } else if let Some(body) = after.strip_prefix("%(") {
            let end = body
                .find(")s")
                .ok_or_else(|| InterpolateError::Unterminated {
                    option: option.to_string(),
                    value: value.to_string(),
                })?;
            let name = body[..end].to_lowercase();
            let raw = lookup(conf, section, &name, vars)
                .or_else(|| {
                    let (sec, opt) = split_section_option(&name)?;
                    let from = match sec {
                        "known" => conf
                            .section(&format!("KNOWN/{section}"))
                            .and_then(|s| s.get(opt)),
                        "default" => None,
                        _ => conf
                            .sections
                            .iter()
                            .find(|(n, _)| n.eq_ignore_ascii_case(sec))
                            .and_then(|(_, s)| s.get(opt)),
                    };
                    from.or_else(|| conf.defaults.get(opt)).cloned()
                })
                .ok_or_else(|| InterpolateError::Undefined {
                    option: option.to_string(),
                    name: name.clone(),
                })?;
            let resolved = if raw.contains('%') {
                interpolate(conf, section, &name, &raw, vars, depth + 1)?
            } else {
                raw
            };
            out.push_str(&resolved);
            rest = &body[end + 2..];
        } else {
            return Err(InterpolateError::LonePercent {
                option: option.to_string(),
                value: value.to_string(),
            });
        }
        if out.len() > MAX_VALUE_BYTES {
            return Err(InterpolateError::TooLong {
                option: option.to_string(),
            });
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Finds the first `<tag>` (no space, `<` or `>` inside) at or after `from`.
fn find_tag(value: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = value.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            let mut j = i + 1;
            while j < bytes.len() && !matches!(bytes[j], b' ' | b'<' | b'>') {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'>' && j > i + 1 {
                return Some((i, j + 1));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    None
}

/// fail2ban's `substituteRecursiveTags`: replaces `<name>` in every value with the value of
/// option `name` (from `tags`, else from `fallback`) until nothing changes.
pub(crate) fn substitute_tags(
    tags: &mut BTreeMap<String, String>,
    fallback: &dyn Fn(&str) -> Option<String>,
) -> Result<(), InterpolateError> {
    let mut done: std::collections::BTreeSet<String> = Default::default();
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    loop {
        let mut again = false;
        let keys: Vec<String> = tags.keys().cloned().collect();
        for tag in keys {
            if done.contains(&tag) {
                continue;
            }
            let original = tags[&tag].clone();
            let mut value = original.clone();
            let counted = counts.entry(tag.clone()).or_default();
            let mut pos = 0;
            while let Some((start, end)) = find_tag(&value, pos) {
                let name = value[start + 1..end - 1].to_string();
                if name == tag || counted.get(&name).copied().unwrap_or(1) > MAX_TAG_REPLACE {
                    return Err(InterpolateError::SelfReference { tag, name });
                }
                let replacement = tags.get(&name).cloned().or_else(|| fallback(&name));
                let Some(replacement) = replacement else {
                    pos = end;
                    continue;
                };
                value = value.replace(&format!("<{name}>"), &replacement);
                if value.len() > MAX_VALUE_BYTES {
                    return Err(InterpolateError::TagTooLong { tag });
                }
                *counted.entry(name).or_insert(0) += 1;
                pos = start;
            }
            if value != original {
                if find_tag(&value, 0).is_some() {
                    again = true;
                }
                tags.insert(tag.clone(), value.clone());
            }
            if !value.contains('<') {
                done.insert(tag);
            }
        }
        if !again {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ini;
    use super::*;
    use std::path::Path;

    fn merged(text: &str) -> Merged {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.conf");
        std::fs::write(&path, text).unwrap();
        ini::load(Path::new(&path)).unwrap()
    }

    #[test]
    fn percent_names_resolve_through_section_default_and_vars() {
        let m = merged(
            "[DEFAULT]\n_daemon = sshd\nprefix = %(_daemon)s\\[\\d+\\]\n[Definition]\nre = ^%(prefix)s: %(mode)s 100%%\nmode = normal\n[lt_file]\nx = from-lt\n[Other]\ny = %(lt_file/x)s\n",
        );
        let none = Vars::new();
        assert_eq!(
            get(&m, "Definition", "re", &none).unwrap().unwrap(),
            r"^sshd\[\d+\]: normal 100%"
        );
        let vars: Vars = [("mode".to_string(), "ddos".to_string())].into();
        assert!(get(&m, "Definition", "re", &vars)
            .unwrap()
            .unwrap()
            .ends_with("ddos 100%"));
        assert_eq!(get(&m, "Other", "y", &none).unwrap().unwrap(), "from-lt");
        assert_eq!(
            get_ex(&m, "Definition", "lt_file/x", &none).unwrap(),
            "from-lt"
        );
        assert!(get(&m, "Definition", "missing", &none).unwrap().is_none());
    }

    #[test]
    fn nested_tags_resolve_innermost_first() {
        let mut tags: BTreeMap<String, String> = [
            (
                "failregex".to_string(),
                "<mdre-<mode>> from <HOST>".to_string(),
            ),
            ("mode".to_string(), "aggressive".to_string()),
        ]
        .into();
        let fallback = |name: &str| (name == "mdre-aggressive").then(|| "^aggr".to_string());
        substitute_tags(&mut tags, &fallback).unwrap();
        assert_eq!(tags["failregex"], "^aggr from <HOST>");
    }

    #[test]
    fn self_reference_is_an_error() {
        let mut tags: BTreeMap<String, String> = [("a".to_string(), "x<a>".to_string())].into();
        assert!(substitute_tags(&mut tags, &|_| None).is_err());
    }
}
