//! The `<F-USER>` of a failregex match, kept inline when short: the names attackers try
//! (`root`, `admin`, `postgres`) fit, so a failure's user costs no `malloc` on the match
//! worker's thread and no `free` on the connection's ordered side (one of each per failure
//! before, across threads; see BENCHMARKS.md, eighth round).

use std::fmt;
use std::ops::Deref;

/// Bytes a name may have and still be kept inline.
const INLINE: usize = 22;

/// A user name as a failregex captured it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserName(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    /// Up to [`INLINE`] bytes of UTF-8, the first `len` of `bytes`.
    Inline { len: u8, bytes: [u8; INLINE] },
    /// A longer name.
    Heap(Box<str>),
}

impl UserName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied from a `&str` whole, so valid UTF-8; checked anyway (a few bytes).
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(bytes.get(..usize::from(*len)).unwrap_or_default())
                    .unwrap_or_default()
            }
            Repr::Heap(name) => name,
        }
    }
}

impl From<&str> for UserName {
    fn from(name: &str) -> Self {
        if name.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            UserName(Repr::Inline {
                len: name.len() as u8,
                bytes,
            })
        } else {
            UserName(Repr::Heap(name.into()))
        }
    }
}

impl From<UserName> for String {
    fn from(name: UserName) -> String {
        match name.0 {
            Repr::Heap(name) => name.into(),
            Repr::Inline { .. } => name.as_str().to_string(),
        }
    }
}

impl Deref for UserName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_reads_back_as_given() {
        let long = "x".repeat(300);
        for name in [
            "",
            "root",
            "postgres",
            "a name with spaces",
            "exactly-twenty-two-byt",
            "twenty-three-bytes-long",
            "é日本語ユーザー",
            "\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}",
            long.as_str(),
        ] {
            let user = UserName::from(name);
            assert_eq!(&*user, name);
            assert_eq!(format!("{user:?}"), format!("{name:?}"));
            assert_eq!(user.to_string(), name);
            assert_eq!(String::from(user.clone()), name);
            assert_eq!(user, UserName::from(name));
            let inline = matches!(user.0, Repr::Inline { .. });
            assert_eq!(inline, name.len() <= INLINE, "{name}");
        }
        assert_ne!(UserName::from("root"), UserName::from("roo"));
    }
}
