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
    /// Options (`filter_options`) were given for a jailsink filter.
    #[error("{} is a jailsink filter; filter_options apply to fail2ban .conf filters", .0.display())]
    OptionsOnNative(PathBuf),
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
            if options.is_some() {
                return Err(FilterFileError::OptionsOnNative(path));
            }
            let raw: RawFilter = read_toml(&path).map_err(FilterFileError::Toml)?;
            Ok(FilterFileContents::Native {
                path,
                source: FilterSource {
                    failregex: raw.failregex,
                    ignoreregex: raw.ignoreregex,
                    prefregex: raw.prefregex,
                },
            })
        }
    }
}
