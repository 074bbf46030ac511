//! Reading a filter file for a name or path: the one loader that a jail's config and
//! `jailsink regex` share, so both find, read and option the same file the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::raw::RawFilter;
use super::{read_toml, ConfigErrors};
use crate::filter::fail2ban::{Fail2banError, Fail2banFilter};
use crate::filter::lookup::LocateError;
use crate::filter::{locate, FilterFile, FilterSource};

/// A filter file, read.
#[derive(Debug)]
// Built once per jail at compile time: the size difference is harmless.
#[allow(clippy::large_enum_variant)]
pub(crate) enum FilterFileContents {
    /// A jailsink `.toml` filter's patterns, not compiled yet (a jail may add its own).
    Native {
        /// The file.
        path: PathBuf,
        /// Its patterns.
        source: FilterSource,
    },
    /// A fail2ban `.conf` filter, loaded with its options.
    Fail2ban {
        /// The file.
        path: PathBuf,
        /// The file with its options, `sshd.conf[mode=aggressive]`, for reports.
        origin: String,
        /// The loaded filter.
        filter: Fail2banFilter,
    },
}

/// Why a filter file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FilterFileError {
    /// No such file, or options given for a file that takes none.
    #[error(transparent)]
    NotFound(#[from] LocateError),
    /// The TOML filter file has errors (each names its key).
    #[error("{0}")]
    Toml(ConfigErrors),
    /// The fail2ban filter file could not be loaded.
    #[error(transparent)]
    Fail2ban(#[from] Fail2banError),
    /// A `filter_options` key or value that the jailsink filter does not take.
    #[error("{}: filter_options.{key}: {reason}", .path.display())]
    BadOption {
        /// The filter file.
        path: PathBuf,
        /// The option.
        key: String,
        /// Why it is refused.
        reason: String,
    },
}

/// Finds and reads the filter `wanted` (a name looked up in `dirs`, or a path relative to
/// `base`); `options` are laid over the ones written in `wanted` (`sshd.conf[mode=normal]`).
pub(crate) fn read_filter(
    wanted: &str,
    dirs: &[PathBuf],
    base: &Path,
    options: Option<&BTreeMap<String, String>>,
) -> Result<FilterFileContents, FilterFileError> {
    match locate(wanted, dirs, base)? {
        FilterFile::Fail2ban(path, mut written) => {
            for (k, v) in options.into_iter().flatten() {
                written.insert(k.to_lowercase(), v.clone());
            }
            let filter = Fail2banFilter::load(&path, &written)?;
            let mut origin = path.display().to_string();
            if !written.is_empty() {
                let opts: Vec<String> = written.iter().map(|(k, v)| format!("{k}={v}")).collect();
                origin = format!("{origin}[{}]", opts.join(", "));
            }
            Ok(FilterFileContents::Fail2ban {
                path,
                origin,
                filter,
            })
        }
        FilterFile::Toml(path) => {
            let raw: RawFilter = read_toml(&path).map_err(FilterFileError::Toml)?;
            let mode = native_mode(&path, &raw, options)?;
            let mut failregex = raw.failregex;
            if let Some(extra) = raw.modes.get(&mode) {
                failregex.extend(extra.failregex.iter().cloned());
            }
            let session_ttl = match &raw.session_ttl {
                None => None,
                // A key of the filter file itself: the error names that file and key.
                Some(d) => Some(ttl(d).map_err(|reason| {
                    FilterFileError::Toml(super::ConfigErrors(vec![super::ConfigError {
                        file: path.clone(),
                        key: "session_ttl".into(),
                        reason,
                    }]))
                })?),
            };
            Ok(FilterFileContents::Native {
                path,
                source: FilterSource {
                    failregex,
                    ignoreregex: raw.ignoreregex,
                    prefregex: raw.prefregex,
                    successregex: raw.successregex,
                    pendingregex: raw.pendingregex,
                    echoregex: raw.echoregex,
                    session_ttl,
                },
            })
        }
    }
}

/// The patterns of the jailsink filter file at `path` in `mode` (the file's default when None),
/// as a jail using it gets them: for tests and tools that judge a shipped filter as shipped.
pub fn read_native(path: &Path, mode: Option<&str>) -> Result<FilterSource, FilterFileError> {
    let options: Option<BTreeMap<String, String>> =
        mode.map(|m| BTreeMap::from([("mode".to_string(), m.to_string())]));
    let dir = path.parent().unwrap_or(Path::new("."));
    match read_filter(&path.display().to_string(), &[], dir, options.as_ref())? {
        FilterFileContents::Native { source, .. } => Ok(source),
        FilterFileContents::Fail2ban { path, .. } => Err(FilterFileError::BadOption {
            path,
            key: "mode".into(),
            reason: "a fail2ban filter, not a jailsink one".into(),
        }),
    }
}

/// The mode a native filter runs in: `filter_options.mode`, else the file's `mode`, else
/// `normal`; any other option, or a mode the file does not declare, is an error.
fn native_mode(
    path: &Path,
    raw: &RawFilter,
    options: Option<&BTreeMap<String, String>>,
) -> Result<String, FilterFileError> {
    let bad = |key: &str, reason: String| FilterFileError::BadOption {
        path: path.to_path_buf(),
        key: key.to_string(),
        reason,
    };
    let known = || {
        let mut names: Vec<&str> = vec!["normal"];
        names.extend(
            raw.modes
                .keys()
                .map(String::as_str)
                .filter(|m| *m != "normal"),
        );
        names.join(", ")
    };
    if let Some(file_mode) = &raw.mode {
        if file_mode != "normal" && !raw.modes.contains_key(file_mode) {
            return Err(bad(
                "mode",
                format!("the file's own mode `{file_mode}` is not declared ([modes.{file_mode}])"),
            ));
        }
    }
    let mut mode = raw.mode.clone().unwrap_or_else(|| "normal".into());
    for (key, value) in options.into_iter().flatten() {
        if key != "mode" {
            return Err(bad(
                key,
                "a jailsink filter takes only `mode` as an option".into(),
            ));
        }
        if value != "normal" && !raw.modes.contains_key(value) {
            return Err(bad(
                key,
                format!("unknown mode `{value}`; this filter has: {}", known()),
            ));
        }
        mode.clone_from(value);
    }
    Ok(mode)
}

/// A filter file's `session_ttl`.
fn ttl(raw: &super::raw::RawDuration) -> Result<std::time::Duration, String> {
    match raw {
        super::raw::RawDuration::Seconds(s) if *s > 0 => {
            crate::duration::at_most_longest(std::time::Duration::from_secs(*s as u64))
                .map_err(|e| format!("{s}: {e}"))
        }
        super::raw::RawDuration::Seconds(s) => Err(format!("{s}: must be a positive duration")),
        super::raw::RawDuration::Text(t) => match crate::duration::parse(t) {
            Ok(Some(d)) if !d.is_zero() => Ok(d),
            Ok(_) => Err(format!("`{t}`: must be a positive duration")),
            Err(e) => Err(format!("`{t}`: {e}")),
        },
    }
}
