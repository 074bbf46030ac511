//! Configuration: TOML read into [`raw`] types, then [`compile`]d into checked values, with every
//! error reported at once and each naming its file, key and reason.
//!
//! How to add a key:
//! 1. [`raw`]: the field, as an `Option` with a doc comment. A key a jail may set and
//!    `[defaults]` may give to every jail goes into the `shared` list of `jail_keys!` (once: it
//!    lands in `RawJailSettings`, `RawJail` and the overlay); a key only a jail has goes into
//!    `jail_only`; a section key goes into that section's struct.
//! 2. [`compile`]: check it and turn it into the compiled value the module that uses it takes
//!    (e.g. `JailSettings` for the jail, an `ActionSpec` for actions), pushing an error that
//!    names the key (`jails.NAME.key`) instead of stopping at the first.
//! 3. Tests: a unit test in `compile.rs` for its default, a good value and a bad one (the error
//!    must name the file and key); an end-to-end test under `tests/` when it changes behaviour.
//! 4. Documentation in the same commit: README's configuration reference, the shipped
//!    `conf/jailsink.toml` (commented, with the default), and `jailsink import-fail2ban` when
//!    fail2ban has the same setting.

pub mod compile;
mod detection;
pub mod filter_file;
pub mod raw;
pub mod tls;

use std::fmt;
use std::path::{Path, PathBuf};

pub use compile::{Config, JailConfig, JailSettings, ServerConfig};

/// Where filters are looked up by name when `filter_dirs` is not set.
pub(crate) const DEFAULT_FILTER_DIRS: [&str; 2] = ["filter.d", "/etc/fail2ban/filter.d"];

/// The filter directories to search, relative ones read from the config file's directory.
pub fn filter_dirs(configured: Option<&[String]>, base: &Path) -> Vec<PathBuf> {
    match configured {
        Some(dirs) => dirs.iter().map(|d| base.join(d)).collect(),
        None => DEFAULT_FILTER_DIRS.iter().map(|d| base.join(d)).collect(),
    }
}

/// Where the daemon looks when `-c` is not given.
pub const DEFAULT_PATH: &str = "/etc/jailsink/jailsink.toml";

/// One problem in a config or filter file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The dotted key, such as `jails.sshd.maxretry`; empty for the file as a whole.
    pub key: String,
    /// What is wrong, in words an operator can act on.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.reason)
        }
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads and compiles the config at `path` and every filter it names.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let raw: raw::RawConfig = read_toml(path)?;
    compile::compile(path, raw)
}

/// Reads a TOML file into `T`, naming the key of a type or unknown-key error.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigErrors> {
    let error = |key: String, reason: String| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            key,
            reason,
        }])
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(String::new(), format!("cannot read: {e}")))?;
    // A syntax error has no key yet, so it names the line instead.
    let at_line = |span: Option<std::ops::Range<usize>>, message: &str| match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message.to_string(),
    };
    let deserializer = toml::Deserializer::parse(&text)
        .map_err(|e| error(String::new(), at_line(e.span(), e.message())))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        let inner = e.into_inner();
        error(key, inner.message().to_string())
    })
}
