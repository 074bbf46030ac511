//! fail2ban's INI dialect (Python `configparser` as fail2ban configures it), files and includes.
//!
//! Semantics kept from Python: option names are lower-cased, `=` or `:` separate name and value,
//! indented lines continue a value, `#`/`;` start a comment line, ` ;` starts an inline comment,
//! later files override earlier ones option by option, and an overridden value stays reachable
//! as `%(known/NAME)s` (fail2ban's `KNOWN/section`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::Fail2banError;

/// Most files one filter may pull in through `[INCLUDES]` (guards against include loops).
const MAX_FILES: usize = 32;
/// Most files a jail configuration (jail.conf, jail.d/*, their includes) may be made of.
const MAX_JAIL_FILES: usize = 256;
/// Largest filter file read, in bytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One section: option name (lower-case) to raw value, in file order.
pub(crate) type Section = BTreeMap<String, String>;

/// One parsed file: `[DEFAULT]` apart, other sections by name, in the order they appear.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IniFile {
    /// `[DEFAULT]`.
    pub defaults: Section,
    /// Every other section.
    pub sections: Vec<(String, Section)>,
}

/// Parses one file's text the way Python's `configparser` does for fail2ban.
pub fn parse(text: &str, file: &Path) -> Result<IniFile, Fail2banError> {
    let mut out = IniFile::default();
    // (section index or None for DEFAULT, option name, value lines, indent of the name line)
    let mut current: Option<Option<usize>> = None;
    let mut option: Option<(String, Vec<String>, usize)> = None;
    let flush = |out: &mut IniFile,
                 current: Option<Option<usize>>,
                 option: &mut Option<(String, Vec<String>, usize)>| {
        if let (Some(target), Some((name, lines, _))) = (current, option.take()) {
            let value = lines.join("\n").trim_end().to_string();
            match target {
                None => out.defaults.insert(name, value),
                Some(i) => out.sections[i].1.insert(name, value),
            };
        }
    };
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let stripped = line.trim();
        let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
        let value = if is_comment {
            ""
        } else {
            strip_inline_comment(line).trim()
        };
        let indent = line.len() - line.trim_start().len();
        if value.is_empty() {
            // An empty line inside a value is kept; a comment line is skipped.
            if !is_comment && stripped.is_empty() {
                if let Some((_, lines, _)) = option.as_mut() {
                    lines.push(String::new());
                }
            }
            continue;
        }
        if let Some((_, lines, name_indent)) = option.as_mut() {
            if indent > *name_indent {
                lines.push(value.to_string());
                continue;
            }
        }
        if value.starts_with('[') && value.ends_with(']') && indent == 0 {
            flush(&mut out, current, &mut option);
            let name = value[1..value.len() - 1].to_string();
            current = Some(if name == "DEFAULT" {
                None
            } else if let Some(i) = out.sections.iter().position(|(n, _)| *n == name) {
                Some(i)
            } else {
                out.sections.push((name, Section::new()));
                Some(out.sections.len() - 1)
            });
            continue;
        }
        let Some(split) = value.find(['=', ':']) else {
            return Err(Fail2banError::Syntax {
                file: file.to_path_buf(),
                line: number + 1,
                reason: format!("`{value}` is neither `[section]` nor `name = value`"),
            });
        };
        if current.is_none() {
            return Err(Fail2banError::Syntax {
                file: file.to_path_buf(),
                line: number + 1,
                reason: "option before the first [section]".into(),
            });
        }
        flush(&mut out, current, &mut option);
        let name = value[..split].trim().to_lowercase();
        let first = value[split + 1..].trim().to_string();
        option = Some((name, vec![first], indent));
    }
    flush(&mut out, current, &mut option);
    Ok(out)
}

/// Cuts an inline comment: `;` preceded by white space.
fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b';' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

/// Every file of a filter merged: what fail2ban's `SafeConfigParserWithIncludes` holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Merged {
    /// `[DEFAULT]` of every file.
    pub defaults: Section,
    /// Sections by name; `KNOWN/name` holds values a later file overrode.
    pub sections: HashMap<String, Section>,
    /// The files read, in merge order.
    pub files: Vec<PathBuf>,
}

impl Merged {
    /// A section's own options (without `[DEFAULT]`).
    pub(crate) fn section(&self, name: &str) -> Option<&Section> {
        self.sections.get(name)
    }

    fn merge(&mut self, file: IniFile) {
        self.defaults.extend(file.defaults);
        for (name, section) in file.sections {
            match self.sections.get_mut(&name) {
                Some(existing) => {
                    let known: Section = existing
                        .iter()
                        .filter(|(k, _)| section.contains_key(*k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    existing.extend(section);
                    self.sections
                        .entry(format!("KNOWN/{name}"))
                        .or_default()
                        .extend(known);
                }
                None => {
                    self.sections.insert(name, section);
                }
            }
        }
    }
}

/// Reads `path` with its `.local` override and every `[INCLUDES] before/after`, recursively,
/// and merges them in fail2ban's order: before-includes, the file, its `.local`, after-includes.
pub(crate) fn load(path: &Path) -> Result<Merged, Fail2banError> {
    let mut order = Vec::new();
    let mut parsed = HashMap::new();
    collect_top(path, with_local(path), MAX_FILES, &mut order, &mut parsed)?;
    Ok(merge_in_order(order, &parsed))
}

/// Reads several files as fail2ban's `ConfigReader.read("jail")` does: each in the given order
/// (jail.conf, jail.d/*.conf, jail.local, jail.d/*.local) with its `[INCLUDES]`, whose own
/// `.local` files are read too; the listed files get no `.local` added, since the list holds
/// them already. Missing files are skipped.
pub(crate) fn load_list(paths: &[PathBuf]) -> Result<Merged, Fail2banError> {
    let mut order = Vec::new();
    let mut parsed = HashMap::new();
    for path in paths.iter().filter(|p| p.is_file()) {
        collect_top(
            path,
            vec![path.clone()],
            MAX_JAIL_FILES,
            &mut order,
            &mut parsed,
        )?;
    }
    Ok(merge_in_order(order, &parsed))
}

/// Reads `files` (the top file `top`, with or without its `.local`) and their includes, at most
/// `max` files in all.
fn collect_top(
    top: &Path,
    files: Vec<PathBuf>,
    max: usize,
    order: &mut Vec<PathBuf>,
    parsed: &mut HashMap<PathBuf, IniFile>,
) -> Result<(), Fail2banError> {
    let limits = Limits { files: max, top };
    collect(files, &limits, &mut Vec::new(), order, parsed)
}

fn merge_in_order(order: Vec<PathBuf>, parsed: &HashMap<PathBuf, IniFile>) -> Merged {
    let mut merged = Merged::default();
    for file in order {
        if let Some(ini) = parsed.get(&file) {
            merged.merge(ini.clone());
            merged.files.push(file);
        }
    }
    merged
}

/// Bounds of one [`collect`] walk.
struct Limits<'a> {
    /// Most files parsed.
    files: usize,
    /// The file asked for: it, unlike an include, must exist.
    top: &'a Path,
}

fn read(path: &Path) -> Result<IniFile, Fail2banError> {
    let io = |e: std::io::Error| Fail2banError::Io {
        file: path.to_path_buf(),
        reason: e.to_string(),
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(Fail2banError::Io {
            file: path.to_path_buf(),
            reason: format!("{size} bytes is more than the {MAX_FILE_BYTES} a filter may have"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse(&text, path)
}

/// `name.conf` also reads `name.local` beside it when present, as fail2ban does.
fn with_local(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    if path.extension().is_some_and(|e| e == "conf") {
        let local = path.with_extension("local");
        if local.is_file() {
            out.push(local);
        }
    }
    out
}

fn collect(
    files: Vec<PathBuf>,
    limits: &Limits,
    seen: &mut Vec<PathBuf>,
    order: &mut Vec<PathBuf>,
    parsed: &mut HashMap<PathBuf, IniFile>,
) -> Result<(), Fail2banError> {
    for file in files {
        if seen.contains(&file) {
            continue;
        }
        if parsed.len() >= limits.files {
            return Err(Fail2banError::Io {
                file,
                reason: format!("more than {} included files", limits.files),
            });
        }
        if !file.is_file() {
            // A missing include (common.local) is normal; a missing main file is not.
            if file == limits.top && seen.is_empty() {
                return Err(Fail2banError::Io {
                    file,
                    reason: "no such file".into(),
                });
            }
            continue;
        }
        let ini = read(&file)?;
        let includes = ini
            .sections
            .iter()
            .find(|(n, _)| n == "INCLUDES")
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        parsed.insert(file.clone(), ini);
        seen.push(file.clone());
        for key in ["before", "after"] {
            if key == "after" {
                order.push(file.clone());
            }
            for name in includes.get(key).map(|v| v.lines()).into_iter().flatten() {
                let name = name.trim();
                if name.is_empty() {
                    continue;
                }
                collect(with_local(&dir.join(name)), limits, seen, order, parsed)?;
            }
        }
        seen.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_continue_on_indented_lines_and_skip_comments() {
        let text = "[Definition]\nFailRegex = ^a <HOST>$\n            ^b <HOST>$\n# comment\n            ^c <HOST>$  ; inline\nempty =\nx: y\n";
        let ini = parse(text, Path::new("t.conf")).unwrap();
        let def = &ini.sections[0].1;
        assert_eq!(def["failregex"], "^a <HOST>$\n^b <HOST>$\n^c <HOST>$");
        assert_eq!(def["empty"], "");
        assert_eq!(def["x"], "y");
    }

    #[test]
    fn default_is_apart_and_errors_name_the_line() {
        let ini = parse("[DEFAULT]\na = 1\n[S]\nb = 2\n", Path::new("t")).unwrap();
        assert_eq!(ini.defaults["a"], "1");
        let err = parse("[S]\nnonsense\n", Path::new("t")).unwrap_err();
        assert!(err.to_string().contains(":2"), "{err}");
    }

    #[test]
    fn includes_and_local_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
        w(
            "common.conf",
            "[DEFAULT]\nd = common\n[Definition]\nv = common\n",
        );
        w(
            "f.conf",
            "[INCLUDES]\nbefore = common.conf\n[Definition]\nv = f\n",
        );
        w("f.local", "[Definition]\nv = local\n");
        let m = load(&dir.path().join("f.conf")).unwrap();
        assert_eq!(m.defaults["d"], "common");
        assert_eq!(m.sections["Definition"]["v"], "local");
        assert_eq!(m.sections["KNOWN/Definition"]["v"], "f");
        let names: Vec<_> = m
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["common.conf", "f.conf", "f.local"]);
    }
}
