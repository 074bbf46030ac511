//! Python `re` patterns (fail2ban's failregex) into Rust: the `regex` crate when the meaning can
//! be kept, `fancy-regex` only for lookaround, backreferences and conditionals.
//!
//! fail2ban's tags are expanded first, exactly as its `Regex._resolveHostTag` does, except that
//! the IPv6 lookbehind `(?<=:):` is written `:` (the repetition before it always ends in `:`).

use std::collections::BTreeMap;

/// Compiled regexes may use this much memory each.
const SIZE_LIMIT: usize = 16 << 20;
/// Backtracking steps fancy-regex may take on one line before giving up on it.
pub(crate) const BACKTRACK_LIMIT: usize = 200_000;

const IP4: &str = r"(?:\d{1,3}\.){3}\d{1,3}";
const IP6: &str = r"(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|:)";

/// fail2ban's tag table (`R_HOST`, `RH4TAG`), in Python syntax.
fn tag_regex(tag: &str) -> Option<String> {
    let ip4 = format!(r"(?:::f{{4,6}}:)?(?P<ip4>{IP4})");
    let ip6 = format!(r"(?P<ip6>{IP6})");
    let dns = r"(?P<dns>[\w\-.^_]*\w)".to_string();
    let addr = format!(r"\[?(?:{ip4}|{ip6})\]?");
    Some(match tag {
        "HOST" => format!("(?:{addr}|{dns})"),
        "IP4" | "F-IP4/" => ip4,
        "IP6" | "F-IP6/" => ip6,
        "ADDR" | "F-ADDR/" => addr,
        "CIDR" | "F-CIDR/" => r"(?P<cidr>\d+)".into(),
        "SUBNET" | "F-SUBNET/" => format!(r"\[?(?:{ip4}|{ip6})(?:/(?P<cidr>\d+))?\]?"),
        "DNS" | "F-DNS/" => dns,
        "F-ID/" => r"(?P<fid>\S+)".into(),
        "F-PORT/" => r"(?P<fport>\w+)".into(),
        _ => return None,
    })
}

/// `<F-ID>` names the group `fid`, `<F-PORT>` `fport`; other names are lower-cased.
fn group_name(tag: &str) -> String {
    match tag.to_lowercase().as_str() {
        "id" => "fid".into(),
        "port" => "fport".into(),
        other => other.replace('-', "_"),
    }
}

/// Replaces fail2ban's tags (`<HOST>`, `<F-USER>`...`</F-USER>`, `<SKIPLINES>`, ...) in a
/// Python pattern; unknown tags stay literal text, as in fail2ban.
pub(crate) fn resolve_tags(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 256);
    let mut open: BTreeMap<String, bool> = BTreeMap::new();
    let mut skiplines = 0;
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            // FTAG_CRE: </?[\w\-]+/?>
            let mut j = i + 1;
            if j < bytes.len() && bytes[j] == b'/' {
                j += 1;
            }
            let name_start = j;
            while j < bytes.len()
                && (bytes[j].is_ascii_alphanumeric() || matches!(bytes[j], b'_' | b'-'))
            {
                j += 1;
            }
            if j > name_start {
                let mut end = j;
                if end < bytes.len() && bytes[end] == b'/' {
                    end += 1;
                }
                if end < bytes.len() && bytes[end] == b'>' {
                    let tag = &pattern[i + 1..end];
                    out.push_str(&replace_tag(tag, &mut open, &mut skiplines));
                    i = end + 1;
                    continue;
                }
            }
        }
        let ch = pattern[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

fn replace_tag(tag: &str, open: &mut BTreeMap<String, bool>, skiplines: &mut usize) -> String {
    if tag == "SKIPLINES" {
        let n = *skiplines;
        *skiplines += 1;
        return format!(r"\n(?P<skiplines{n}>(?:(?:.*\n)*?))");
    }
    if let Some(re) = tag_regex(tag) {
        return re;
    }
    let (closing, name) = match tag.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let Some(custom) = name.strip_prefix("F-").filter(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    }) else {
        return format!("<{tag}>");
    };
    if closing {
        return if open.get(custom).copied().unwrap_or(false) {
            ")".into()
        } else {
            format!("<{tag}>")
        };
    }
    open.insert(custom.to_string(), true);
    format!("(?P<{}>", group_name(custom))
}

/// Which engine a pattern needs (tests check the choice).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    /// The `regex` crate: linear time.
    Regex,
    /// `fancy-regex`: backtracking, bounded by [`BACKTRACK_LIMIT`].
    Fancy,
}

/// A compiled pattern on either engine, with its group names.
#[derive(Debug, Clone)]
pub enum Compiled {
    /// Linear-time engine.
    Regex(regex::Regex),
    /// Backtracking engine for what `regex` cannot express.
    Fancy(fancy_regex::Regex),
}

/// Capture spans of one match: group index to byte range.
pub(crate) type Spans = Vec<Option<(usize, usize)>>;

/// Matching stopped at the backtrack limit: the line counts as not matched, and is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacktrackLimit;

impl Compiled {
    /// Which engine this is.
    #[cfg(test)]
    pub(crate) fn engine(&self) -> Engine {
        match self {
            Compiled::Regex(_) => Engine::Regex,
            Compiled::Fancy(_) => Engine::Fancy,
        }
    }

    /// Group names by index (index 0 is the whole match and has none).
    pub(crate) fn names(&self) -> Vec<Option<String>> {
        match self {
            Compiled::Regex(r) => r.capture_names().map(|n| n.map(str::to_string)).collect(),
            Compiled::Fancy(r) => r.capture_names().map(|n| n.map(str::to_string)).collect(),
        }
    }

    /// The first match's spans, searching from the start of `text`.
    pub fn captures(&self, text: &str) -> Result<Option<Spans>, BacktrackLimit> {
        match self {
            Compiled::Regex(r) => Ok(r.captures(text).map(|c| {
                (0..c.len())
                    .map(|i| c.get(i).map(|m| (m.start(), m.end())))
                    .collect()
            })),
            Compiled::Fancy(r) => match r.captures(text) {
                Ok(found) => Ok(found.map(|c| {
                    (0..c.len())
                        .map(|i| c.get(i).map(|m| (m.start(), m.end())))
                        .collect()
                })),
                Err(_) => Err(BacktrackLimit),
            },
        }
    }

    /// True when the pattern matches somewhere in `text`.
    pub(crate) fn is_match(&self, text: &str) -> Result<bool, BacktrackLimit> {
        match self {
            Compiled::Regex(r) => Ok(r.is_match(text)),
            Compiled::Fancy(r) => r.is_match(text).map_err(|_| BacktrackLimit),
        }
    }
}

/// Why a Python pattern could not be translated or compiled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TranslateError {
    /// A `\` with nothing after it.
    #[error("pattern ends with a lone backslash")]
    LoneBackslash,
    /// `(?P=name` with no `)`.
    #[error("unterminated (?P=")]
    UnterminatedBackref,
    /// `(?(name` with no `)`.
    #[error("unterminated (?(")]
    UnterminatedCondition,
    /// A `\` last inside `[...]`.
    #[error("class ends with a backslash")]
    ClassBackslash,
    /// `[` with no `]`.
    #[error("unterminated character class")]
    UnterminatedClass,
    /// Neither engine takes the translated pattern; both say why.
    #[error("{fancy} (regex crate: {plain}) in `{rust}`")]
    Compile {
        /// fancy-regex's reason.
        fancy: fancy_regex::Error,
        /// The regex crate's reason.
        plain: regex::Error,
        /// The translated pattern.
        rust: String,
    },
}

/// Translates a Python pattern (tags already resolved) and compiles it on the simplest engine.
pub fn compile(python: &str) -> Result<Compiled, TranslateError> {
    let rust = translate(python)?;
    match regex::RegexBuilder::new(&rust)
        .size_limit(SIZE_LIMIT)
        .build()
    {
        Ok(r) => Ok(Compiled::Regex(r)),
        Err(plain) => fancy_regex::RegexBuilder::new(&rust)
            .backtrack_limit(BACKTRACK_LIMIT)
            .delegate_size_limit(SIZE_LIMIT)
            .build()
            .map(Compiled::Fancy)
            .map_err(|fancy| TranslateError::Compile { fancy, plain, rust }),
    }
}

/// Python `re` syntax into syntax both Rust engines read with the same meaning.
///
/// - `$` matches before the trailing newline fail2ban appends, as Python's `$` does: `(?m:$)`.
/// - `\Z` is `\z`; `\<` and `\>` are literal angle brackets (word boundaries in Rust).
/// - `[` inside a class, `&&`/`~~`/`--` operators and a literal `{` are escaped; `{,n}` is `{0,n}`.
/// - `(?P=name)` is `\k<name>`; the conditional `(?(name)` is `(?(<name>)` for fancy-regex.
/// - `(?#...)` comments are dropped.
pub(crate) fn translate(python: &str) -> Result<String, TranslateError> {
    let chars: Vec<char> = python.chars().collect();
    let mut out = String::with_capacity(python.len() + 32);
    let mut i = 0;
    // Whether the previous item can take a quantifier.
    let mut quantifiable = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return Err(TranslateError::LoneBackslash);
                };
                i += 2;
                quantifiable = true;
                match n {
                    'Z' => {
                        out.push_str(r"\z");
                        quantifiable = false;
                    }
                    '<' | '>' => out.push(n),
                    'A' | 'b' | 'B' => {
                        out.push('\\');
                        out.push(n);
                        quantifiable = false;
                    }
                    c if c.is_ascii_alphanumeric() => {
                        out.push('\\');
                        out.push(c);
                        // \x41 and \u0041 carry their digits with them.
                        let digits = match c {
                            'x' => 2,
                            'u' => 4,
                            'U' => 8,
                            _ => 0,
                        };
                        for _ in 0..digits {
                            if let Some(&d) = chars.get(i) {
                                out.push(d);
                                i += 1;
                            }
                        }
                    }
                    c => push_literal(&mut out, c),
                }
            }
            '[' => {
                i = translate_class(&chars, i, &mut out)?;
                quantifiable = true;
            }
            '{' => {
                // A quantifier only when it reads {n}, {n,}, {n,m} or {,m} after something.
                let rest: String = chars[i..chars.len().min(i + 24)].iter().collect();
                match quantifier(&rest) {
                    Some((len, text)) if quantifiable => {
                        out.push_str(&text);
                        i += len;
                        // A lazy/possessive mark may follow; still not quantifiable again.
                        quantifiable = false;
                    }
                    _ => {
                        out.push_str(r"\{");
                        i += 1;
                        quantifiable = true;
                    }
                }
            }
            '}' => {
                out.push_str(r"\}");
                i += 1;
                quantifiable = true;
            }
            '$' => {
                out.push_str("(?m:$)");
                i += 1;
                quantifiable = false;
            }
            '(' => {
                let rest: String = chars[i..chars.len().min(i + 64)].iter().collect();
                if rest.starts_with("(?#") {
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                    i += 1;
                    continue;
                }
                if let Some(body) = rest.strip_prefix("(?P=") {
                    let end = body.find(')').ok_or(TranslateError::UnterminatedBackref)?;
                    out.push_str(&format!(r"\k<{}>", &body[..end]));
                    i += 4 + body[..end].chars().count() + 1;
                    quantifiable = true;
                    continue;
                }
                if let Some(body) = rest.strip_prefix("(?(") {
                    let end = body
                        .find(')')
                        .ok_or(TranslateError::UnterminatedCondition)?;
                    let cond = &body[..end];
                    if cond.chars().all(|c| c.is_ascii_digit()) {
                        out.push_str(&format!("(?({cond})"));
                    } else {
                        out.push_str(&format!("(?(<{cond}>)"));
                    }
                    i += 3 + cond.chars().count() + 1;
                    quantifiable = false;
                    continue;
                }
                out.push('(');
                i += 1;
                quantifiable = false;
            }
            ')' => {
                out.push(')');
                i += 1;
                quantifiable = true;
            }
            '*' | '+' | '?' => {
                out.push(c);
                i += 1;
                // `a*?` is lazy: `?` after a quantifier never quantifies again.
                quantifiable = false;
            }
            '|' | '^' => {
                out.push(c);
                i += 1;
                quantifiable = false;
            }
            _ => {
                out.push(c);
                i += 1;
                quantifiable = true;
            }
        }
    }
    Ok(out)
}

/// A literal character written so Rust reads it as that character.
fn push_literal(out: &mut String, c: char) {
    if regex_syntax_meta(c) {
        out.push('\\');
    }
    out.push(c);
}

fn regex_syntax_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

/// `{n}`, `{n,}`, `{n,m}`, `{,m}` at the start of `text`: its length in chars and Rust form.
fn quantifier(text: &str) -> Option<(usize, String)> {
    let end = text.find('}')?;
    let body = &text[1..end];
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let rust = match body.split_once(',') {
        None if !body.is_empty() && digits(body) => format!("{{{body}}}"),
        Some((a, b)) if digits(a) && digits(b) && !(a.is_empty() && b.is_empty()) => {
            let a = if a.is_empty() { "0" } else { a };
            format!("{{{a},{b}}}")
        }
        _ => return None,
    };
    Some((end + 1, rust))
}

/// Copies a character class starting at `chars[start] == '['`; returns the index after it.
fn translate_class(
    chars: &[char],
    start: usize,
    out: &mut String,
) -> Result<usize, TranslateError> {
    let mut i = start + 1;
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // A `]` first in the class is literal in Python.
    if chars.get(i) == Some(&']') {
        out.push_str(r"\]");
        i += 1;
    }
    while i < chars.len() {
        let c = chars[i];
        match c {
            ']' => {
                out.push(']');
                return Ok(i + 1);
            }
            '\\' => {
                let n = *chars.get(i + 1).ok_or(TranslateError::ClassBackslash)?;
                match n {
                    '<' | '>' => out.push(n),
                    'Z' => out.push('Z'),
                    c if c.is_ascii_alphanumeric() => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => push_literal(out, c),
                }
                i += 2;
            }
            '[' | '&' | '~' => {
                out.push('\\');
                out.push(c);
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                out.push_str(r"\-");
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err(TranslateError::UnterminatedClass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rust(p: &str) -> String {
        translate(p).unwrap()
    }

    #[test]
    fn python_only_syntax_is_rewritten() {
        assert_eq!(rust(r"a\<b\>c"), "a<b>c");
        assert_eq!(rust(r"x{,3}"), "x{0,3}");
        assert_eq!(rust(r"{literal}"), r"\{literal\}");
        assert_eq!(rust(r"[[]x[^\[]"), r"[\[]x[^\[]");
        assert_eq!(rust(r"end$"), "end(?m:$)");
        assert_eq!(rust(r"(?P=sep)"), r"\k<sep>");
        assert_eq!(rust(r"(?(cond)a|b)"), "(?(<cond>)a|b)");
        assert_eq!(rust(r"a\Z"), r"a\z");
        assert_eq!(rust(r"a(?#note)b"), "ab");
    }

    #[test]
    fn dollar_matches_before_the_trailing_newline() {
        let re = compile(r"^a (\S+)$").unwrap();
        assert_eq!(re.engine(), Engine::Regex);
        assert!(re.is_match("a b\n").unwrap());
    }

    #[test]
    fn lookaround_and_conditionals_fall_back_to_fancy() {
        let re = compile(r"^(?P<inv>x )?(?(inv)a|b)(?!c)").unwrap();
        assert_eq!(re.engine(), Engine::Fancy);
        assert!(re.is_match("x a").unwrap());
        assert!(re.is_match("b").unwrap());
        assert!(!re.is_match("x b").unwrap());
        assert!(!re.is_match("bc").unwrap());
    }

    #[test]
    fn host_tag_matches_ipv4_ipv6_and_dns_like_fail2ban() {
        let re = compile(&resolve_tags(r"^from <HOST> port$")).unwrap();
        let names = re.names();
        let group = |line: &str, name: &str| {
            let spans = re.captures(line).unwrap().unwrap();
            let i = names
                .iter()
                .position(|n| n.as_deref() == Some(name))
                .unwrap();
            spans[i].map(|(a, b)| line[a..b].to_string())
        };
        assert_eq!(
            group("from 192.0.2.1 port", "ip4").as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(
            group("from ::ffff:192.0.2.1 port", "ip4").as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(
            group("from [2001:db8::1] port", "ip6").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            group("from 2001:db8:: port", "ip6").as_deref(),
            Some("2001:db8::")
        );
        assert_eq!(
            group("from example.com port", "dns").as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn custom_groups_open_and_close() {
        let p = resolve_tags(r"<F-USER>\S+</F-USER> <F-ALT_USER1>x</F-ALT_USER1> <F-NOFAIL></F-X>");
        assert_eq!(p, r"(?P<user>\S+) (?P<alt_user1>x) (?P<nofail></F-X>");
    }
}
