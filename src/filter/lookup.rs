//! Finding a filter file for a name or path: `NAME.toml` (jailsink) before `NAME.conf`
//! (fail2ban) in the configured directories, or a path, with fail2ban's `[key=value]` options.

use std::path::{Path, PathBuf};

use super::fail2ban;

/// A filter file found for a name: which format, where, and (fail2ban) with which options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FilterFile {
    /// A jailsink `.toml` filter.
    Toml(PathBuf),
    /// A fail2ban `.conf` filter with its options (`mode`, `logtype`, ...).
    Fail2ban(PathBuf, fail2ban::interpolate::Vars),
}

/// Why no filter file was found for a name or path.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LocateError {
    /// The `[key=value, ...]` options are malformed.
    #[error(transparent)]
    Options(#[from] fail2ban::Fail2banError),
    /// A path was given and there is no such file.
    #[error("filter file {} does not exist", .0.display())]
    Missing(PathBuf),
    /// Options were given with the path of a jailsink filter (the whole spec, as written).
    #[error("`{0}`: [options] apply to fail2ban .conf filters only")]
    OptionsOnToml(String),
    /// A name was given and no directory has a file for it.
    #[error("no filter `{name}.toml` or `{name}.conf` in {}", show_dirs(.dirs))]
    NotFound {
        /// The name looked up.
        name: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
}

fn show_dirs(dirs: &[PathBuf]) -> String {
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    searched.join(", ")
}

/// Finds the file for `wanted`: a path (relative to `base`, `.conf` paths may carry
/// `[key=value, ...]` options), or a name looked up as `NAME.toml` in every dir, then as
/// `NAME.conf` (fail2ban format) in every dir, so a native filter always wins.
pub(crate) fn locate(
    wanted: &str,
    dirs: &[PathBuf],
    base: &Path,
) -> Result<FilterFile, LocateError> {
    let (name, options) = fail2ban::split_options(wanted)?;
    let exists = |path: PathBuf| {
        if path.is_file() {
            Ok(path)
        } else {
            Err(LocateError::Missing(path))
        }
    };
    if name.ends_with(".conf") || name.ends_with(".local") {
        return Ok(FilterFile::Fail2ban(exists(base.join(&name))?, options));
    }
    if name.contains('/') || name.ends_with(".toml") {
        if !options.is_empty() {
            return Err(LocateError::OptionsOnToml(wanted.to_string()));
        }
        return Ok(FilterFile::Toml(exists(base.join(&name))?));
    }
    if options.is_empty() {
        if let Some(path) = dirs
            .iter()
            .map(|d| d.join(format!("{name}.toml")))
            .find(|p| p.is_file())
        {
            return Ok(FilterFile::Toml(path));
        }
    }
    if let Some(path) = dirs
        .iter()
        .map(|d| d.join(format!("{name}.conf")))
        .find(|p| p.is_file())
    {
        return Ok(FilterFile::Fail2ban(path, options));
    }
    Err(LocateError::NotFound {
        name,
        dirs: dirs.to_vec(),
    })
}
