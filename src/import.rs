//! `jailsink import-fail2ban`: a fail2ban jail configuration (jail.conf, jail.local, jail.d)
//! turned into jailsink TOML, with a comment wherever jailsink has no equivalent.
//!
//! Files are read in fail2ban's order (jail.conf, jail.d/*.conf, jail.local, jail.d/*.local,
//! each with its `[INCLUDES]` such as paths-debian.conf) and merged as fail2ban merges them.
//! Each enabled jail's options are read with fail2ban's `%(name)s` interpolation (section, then
//! `[DEFAULT]`, `%(__name__)s` as the jail's name, `%(default/x)s`, `%(known/x)s`), so values
//! such as `port = %(sshd_port)s` or the default `filter = %(__name__)s[mode=%(mode)s]` come out
//! as fail2ban would use them. Every value is written per jail: the output reads without
//! fail2ban's inheritance rules in mind.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::action::ActionKind;
use crate::filter::fail2ban::ini::{self, Merged};
use crate::filter::fail2ban::interpolate::{self, InterpolateError, Vars};
use crate::filter::fail2ban::{split_options, Fail2banError};

/// Where fail2ban keeps its configuration when no directory is given.
pub const DEFAULT_DIR: &str = "/etc/fail2ban";

/// Why a fail2ban configuration could not be imported at all. Problems of one jail are not
/// errors: they become comments in the output, so one odd jail never hides the others.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImportError {
    /// The directory has no jail.conf or jail.local.
    #[error("{}: no jail.conf or jail.local (is this a fail2ban configuration directory?)", dir.display())]
    NoJailConf {
        /// The directory given.
        dir: PathBuf,
    },
    /// A file could not be read or is not fail2ban's INI.
    #[error(transparent)]
    Read(#[from] Fail2banError),
}

/// Syslog program names the lines of common fail2ban filters carry, so that an imported jail
/// only sees its service's messages. A filter not listed gets no `programs` (every event), which
/// is always correct, only slower.
fn programs_for(filter: &str) -> Option<&'static [&'static str]> {
    Some(match filter {
        "sshd" => &["sshd", "sshd-session"],
        "dropbear" => &["dropbear"],
        "dovecot" => &["dovecot"],
        "proftpd" => &["proftpd"],
        "pure-ftpd" => &["pure-ftpd"],
        "vsftpd" => &["vsftpd"],
        "named-refused" => &["named"],
        "asterisk" => &["asterisk"],
        f if f.starts_with("postfix") => &[
            "postfix/smtpd",
            "postfix/submission/smtpd",
            "postfix/smtps/smtpd",
            "postfix/postscreen",
        ],
        f if f.starts_with("nginx") => &["nginx"],
        f if f.starts_with("sendmail") => &["sendmail", "sm-mta"],
        f if f.starts_with("exim") => &["exim", "exim4"],
        "courier-auth" => &[
            "imapd",
            "imapd-ssl",
            "pop3d",
            "pop3d-ssl",
            "courierpop3login",
        ],
        "cyrus-imap" => &[
            "cyrus/imap",
            "cyrus/imaps",
            "cyrus/pop3",
            "cyrus/pop3s",
            "imapd",
            "imap",
            "pop3d",
        ],
        "mysqld-auth" => &["mysqld", "mariadbd"],
        "apache-auth" => &["apache2", "httpd", "apache"],
        "haproxy-http-auth" => &["haproxy"],
        "roundcube-auth" => &["roundcube"],
        "grafana" => &["grafana", "grafana-server"],
        _ => return None,
    })
}

/// fail2ban filters, with the modes a jail uses them in, that a shipped native filter
/// (conf/filter.d, installed in /etc/jailsink/filter.d) replaces: it catches the same lines,
/// anchored against address injection and without translating Python regexes. fail2ban's
/// `postfix` filter is three native ones, by mode. Not mapped: sshd (fail2ban's modes are
/// not the native filter's), nginx-botsearch (fail2ban reads the error log, the native filter
/// the access log), and every mode not listed (aggressive and extra modes catch more).
const NATIVE: &[(&str, &[&str], &str)] = &[
    ("postfix", &["auth"], "postfix-sasl"),
    ("postfix", &["rbl"], "postfix-rbl"),
    ("postfix", &["normal", "more"], "postfix-reject"),
    ("dovecot", &["normal"], "dovecot"),
    ("exim", &["normal"], "exim"),
    ("courier-auth", &["normal"], "courier-auth"),
    ("cyrus-imap", &["normal"], "cyrus-imap"),
    ("sendmail-auth", &["normal"], "sendmail-auth"),
    ("sendmail-reject", &["normal"], "sendmail-reject"),
    ("proftpd", &["normal"], "proftpd"),
    ("vsftpd", &["normal"], "vsftpd"),
    ("pure-ftpd", &["normal"], "pure-ftpd"),
    ("asterisk", &["normal"], "asterisk"),
    ("mysqld-auth", &["normal"], "mysqld-auth"),
    ("nginx-http-auth", &["normal"], "nginx-http-auth"),
    ("nginx-limit-req", &["normal"], "nginx-limit-req"),
    ("apache-auth", &["normal"], "apache-auth"),
    ("haproxy-http-auth", &["normal"], "haproxy-http-auth"),
    ("roundcube-auth", &["normal"], "roundcube-auth"),
    ("named-refused", &["normal"], "named-refused"),
    ("grafana", &["normal"], "grafana"),
    ("sshd", &["normal", "aggressive"], "sshd"),
];

/// Native filters with modes of fail2ban's names: the jail keeps the mode as its
/// `filter_options` (fail2ban's `sshd[mode=aggressive]` is the native sshd in mode aggressive).
const NATIVE_WITH_MODES: &[&str] = &["sshd"];

/// Where the native filters are looked up in an imported config: beside the config file
/// (`/etc/jailsink/filter.d` for `/etc/jailsink/jailsink.toml`, where the package puts them).
const NATIVE_DIR: &str = "filter.d";

/// The native filter replacing fail2ban's `filter` with `options`, if one does. A filter
/// without options runs in fail2ban's `normal` mode; any option but `mode` keeps fail2ban's.
fn native_for(filter: &str, options: &Vars) -> Option<&'static str> {
    let mode = match options.len() {
        0 => "normal",
        1 => options.get("mode")?.as_str(),
        _ => return None,
    };
    NATIVE
        .iter()
        .find(|(f, modes, _)| *f == filter && modes.contains(&mode))
        .map(|(_, _, native)| *native)
}

/// The files fail2ban's `ConfigReader.read("jail")` reads, in its order.
fn jail_files(dir: &Path) -> Vec<PathBuf> {
    let sorted = |ext: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("jail.d"))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == ext) && p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let mut files = vec![dir.join("jail.conf")];
    files.extend(sorted("conf"));
    files.push(dir.join("jail.local"));
    files.extend(sorted("local"));
    files.into_iter().filter(|p| p.is_file()).collect()
}

/// Reads the fail2ban configuration in `dir` and returns a jailsink configuration (TOML text)
/// for its enabled jails. The text compiles with `jailsink check` when the filters it names are
/// in `dir/filter.d`; what cannot be carried over is said in comments.
pub fn import_fail2ban(dir: &Path) -> Result<String, ImportError> {
    let files = jail_files(dir);
    if files.is_empty() {
        return Err(ImportError::NoJailConf {
            dir: dir.to_path_buf(),
        });
    }
    let conf = ini::load_list(&files)?;
    let filter_dir = absolute(&dir.join("filter.d"));
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    let mut names: Vec<&String> = conf
        .sections
        .keys()
        .filter(|n| *n != "INCLUDES" && !n.starts_with("KNOWN/"))
        .collect();
    names.sort();

    let mut out = String::new();
    let shown: Vec<String> = conf
        .files
        .iter()
        .map(|f| f.strip_prefix(dir).unwrap_or(f).display().to_string())
        .collect();
    let _ = writeln!(
        out,
        "# jailsink configuration imported from fail2ban's {}",
        dir.display()
    );
    let _ = writeln!(
        out,
        "# by `jailsink import-fail2ban`; files read: {}.",
        shown.join(", ")
    );
    out.push_str(
        "# jailsink reads syslog, not log files: forward syslog to it (rsyslog: `*.* @@127.0.0.1:5514`).\n\
         # [server], [metrics], [control] and [state] keep jailsink's defaults (see conf/jailsink.toml).\n\n",
    );
    out.push_str("[defaults]\n");
    let _ = writeln!(
        out,
        "# {NATIVE_DIR}: jailsink's native filters, beside this file (/etc/jailsink/filter.d)"
    );
    let _ = writeln!(
        out,
        "filter_dirs = [{}, {}]",
        quote(&filter_dir.display().to_string()),
        quote(NATIVE_DIR)
    );

    let mut enabled = 0;
    for name in names {
        let jail = Jail {
            conf: &conf,
            name,
            vars: [("__name__".to_string(), name.clone())].into(),
        };
        match jail.get("enabled") {
            Ok(Some(v)) if truthy(&v) => {}
            Ok(_) => continue,
            Err(reason) => {
                let _ = writeln!(
                    out,
                    "\n# [{name}]: `enabled` unreadable ({reason}); skipped"
                );
                continue;
            }
        }
        enabled += 1;
        out.push('\n');
        out.push_str(&jail.render(&filter_dir, &services));
    }
    if enabled == 0 {
        out.push_str(
            "\n# fail2ban enables no jail here (enabled = true in jail.local or jail.d/*.conf).\n",
        );
    }
    Ok(out)
}

/// `path` made absolute against the working directory, so the output works from anywhere.
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// fail2ban's `getboolean`.
fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_lowercase().as_str(),
        "true" | "yes" | "on" | "1"
    )
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key, bare when it may be.
fn key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        s.to_string()
    } else {
        quote(s)
    }
}

/// One enabled jail being read.
struct Jail<'a> {
    conf: &'a Merged,
    name: &'a str,
    vars: Vars,
}

/// The lines written for one jail: comments first, then keys.
#[derive(Default)]
struct Out {
    comments: Vec<String>,
    keys: Vec<(String, String)>,
    disabled: Option<String>,
}

impl Out {
    fn note(&mut self, text: impl Into<String>) {
        self.comments.push(text.into());
    }
    fn set(&mut self, k: &str, v: impl Into<String>) {
        self.keys.push((k.to_string(), v.into()));
    }
}

impl Jail<'_> {
    /// An option as fail2ban reads it for this jail (None: not set here nor in [DEFAULT]).
    fn get(&self, option: &str) -> Result<Option<String>, InterpolateError> {
        interpolate::get(self.conf, self.name, option, &self.vars)
            .map(|v| v.map(|v| v.trim().to_string()))
    }

    /// Reads `option`; a value that cannot be interpolated becomes a comment and None.
    fn read(&self, out: &mut Out, option: &str) -> Option<String> {
        match self.get(option) {
            Ok(v) => v.filter(|v| !v.is_empty()),
            Err(reason) => {
                out.note(format!("fail2ban's {option} cannot be read: {reason}"));
                None
            }
        }
    }

    fn render(&self, filter_dir: &Path, services: &str) -> String {
        let mut out = Out::default();
        if !valid_name(self.name) {
            return format!(
                "# [{}]: a jailsink jail name is 1 to 19 letters, digits, '-' or '_', starting with a\n# letter (it names firewall objects); rename this jail in fail2ban's files or add it by hand.\n",
                self.name
            );
        }
        let filter = self.filter(&mut out, filter_dir);
        self.source(&mut out, filter.as_ref());
        if let Some(filter) = &filter {
            if filter.0 == "recidive" || self.name == "recidive" {
                out.disabled = Some(
                    "recidive reads fail2ban's own log; jailsink's bantime_increment does its work"
                        .into(),
                );
            }
        }
        self.numbers(&mut out);
        self.ignore(&mut out);
        let ports = self.ports(&mut out, services);
        self.actions(&mut out, ports.as_deref(), services);
        self.increment(&mut out);

        let mut text = String::new();
        for c in &out.comments {
            for line in c.lines() {
                let _ = writeln!(text, "# {line}");
            }
        }
        let _ = writeln!(text, "[jails.{}]", key(self.name));
        if let Some(why) = &out.disabled {
            let _ = writeln!(text, "enabled = false  # {why}");
        }
        for (k, v) in &out.keys {
            let _ = writeln!(text, "{k} = {v}");
        }
        text
    }

    /// `filter` and `filter_options`; None when no usable filter exists.
    fn filter(&self, out: &mut Out, filter_dir: &Path) -> Option<(String, Vars)> {
        let spec = self.read(out, "filter")?;
        // fail2ban allows several filters on separate lines in newer versions; jailsink one.
        let first = spec.lines().next().unwrap_or_default().trim().to_string();
        let (name, options) = match split_options(&first) {
            Ok(v) => v,
            Err(e) => {
                out.note(format!("fail2ban filter `{first}`: {e}"));
                out.disabled = Some("no usable filter".into());
                return None;
            }
        };
        if spec.lines().filter(|l| !l.trim().is_empty()).count() > 1 {
            out.note(format!(
                "fail2ban names several filters; only `{first}` is imported"
            ));
        }
        if let Some(native) = native_for(&name, &options) {
            // A `NAME.local` customizes fail2ban's filter (more failregex, an ignoreregex): the
            // native filter would silently drop that, so the fail2ban filter is kept, read
            // with it.
            if filter_dir.join(format!("{name}.local")).is_file() {
                out.note(format!(
                    "filter.d/{name}.local customizes fail2ban's `{first}`: its own filter is \
                     kept (jailsink reads the .local with it) instead of the native {native}"
                ));
            } else {
                out.note(format!(
                    "fail2ban's `{first}` is jailsink's native filter {native} ({NATIVE_DIR}/{native}.toml)"
                ));
                if ["failregex", "ignoreregex"].iter().any(|extra| {
                    self.conf
                        .section(self.name)
                        .is_some_and(|s| s.contains_key(*extra))
                }) {
                    out.note(
                        "the fail2ban jail adds its own failregex/ignoreregex: add them to this jail \
                         in jailsink's syntax (failregex = ['^...<HOST>...$'], anchored)",
                    );
                }
                out.set("filter", quote(native));
                if NATIVE_WITH_MODES.contains(&native) {
                    let mode = options.get("mode").map_or("normal", String::as_str);
                    out.set("filter_options", format!("{{ mode = {} }}", quote(mode)));
                }
                return Some((native.to_string(), Vars::new()));
            }
        }
        let file = ["conf", "local"]
            .iter()
            .map(|ext| filter_dir.join(format!("{name}.{ext}")))
            .find(|p| p.is_file());
        if file.is_none() {
            out.note(format!(
                "filter {name}.conf is not in {}",
                filter_dir.display()
            ));
            out.disabled = Some("its filter is missing".into());
        }
        for extra in ["failregex", "ignoreregex"] {
            if self.read(out, extra).is_some()
                && self
                    .conf
                    .section(self.name)
                    .is_some_and(|s| s.contains_key(extra))
            {
                out.note(format!(
                    "the fail2ban jail adds its own {extra}: put it in filter.d/{name}.local \
                     ([Definition] {extra} = ...), jailsink reads that file"
                ));
            }
        }
        match &file {
            // By path: by name, a native filter of the same name (sshd.toml) would win.
            Some(file) => out.set("filter", quote(&file.display().to_string())),
            None => out.set("filter", quote(&name)),
        }
        if !options.is_empty() {
            let items: Vec<String> = options
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), quote(v)))
                .collect();
            out.set("filter_options", format!("{{ {} }}", items.join(", ")));
        }
        Some((name, options))
    }

    /// backend/logpath/journalmatch become comments; programs from the filter's name.
    fn source(&self, out: &mut Out, filter: Option<&(String, Vars)>) {
        let mut read_from = Vec::new();
        for option in ["backend", "logpath", "journalmatch"] {
            if let Some(v) = self.read(out, option) {
                let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
                read_from.push(format!("{option} = {v}"));
            }
        }
        if !read_from.is_empty() {
            out.note(format!(
                "fail2ban read {}; jailsink reads syslog instead\n\
                 (a service that logs only to a file needs rsyslog's imfile to forward it).",
                read_from.join(", ")
            ));
        }
        let filter_name = filter.map_or(self.name, |f| f.0.as_str());
        match programs_for(filter_name).or_else(|| programs_for(self.name)) {
            Some(programs) => {
                let list: Vec<String> = programs.iter().map(|p| quote(p)).collect();
                // First, as in jailsink's own examples: what feeds the jail, then how it judges.
                out.keys
                    .insert(0, ("programs".into(), format!("[{}]", list.join(", "))));
            }
            None => out.note(
                "no programs: this jail sees every syslog event; set programs = [\"TAG\"] to the\n\
                 syslog program name of the service so only its messages are matched.",
            ),
        }
        // fail2ban's default `warn` only resolves names when a filter matched one; `yes` is a
        // choice worth telling the operator jailsink does not follow.
        if let Some(v) = self.read(out, "usedns").filter(|v| v == "yes") {
            out.note(format!(
                "usedns = {v} is ignored: jailsink never resolves names"
            ));
        }
        if self.read(out, "ignorecommand").is_some() {
            out.note("ignorecommand has no equivalent: jailsink runs no command to decide");
        }
    }

    fn numbers(&self, out: &mut Out) {
        if let Some(v) = self.read(out, "maxretry") {
            match v.parse::<i64>() {
                Ok(n) => out.set("maxretry", n.to_string()),
                Err(_) => out.note(format!(
                    "maxretry = {v} is not a number; jailsink's default used"
                )),
            }
        }
        for option in ["findtime", "bantime"] {
            if let Some(v) = self.read(out, option) {
                match seconds(&v) {
                    Ok(s) if s < 0 && option == "bantime" => out.set(option, quote("permanent")),
                    Ok(s) if s > 0 => out.set(option, quote(&format_secs(s))),
                    Ok(_) | Err(_) => out.note(format!(
                        "{option} = {v} could not be converted; jailsink's default used"
                    )),
                }
            }
        }
    }

    fn ignore(&self, out: &mut Out) {
        if let Some(v) = self.read(out, "ignoreip") {
            let mut nets = Vec::new();
            let mut files = Vec::new();
            for item in v.split(|c: char| c.is_whitespace() || c == ',') {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                // fail2ban's `file:/path` entries are jailsink's ignoreip_files.
                if let Some(path) = item.strip_prefix("file:") {
                    files.push(quote(path));
                    continue;
                }
                match crate::jail::allow::parse_entry(item) {
                    // Names are resolved in the background every ignore_refresh, as
                    // fail2ban resolves them.
                    Ok(_) => nets.push(quote(item)),
                    Err(_) => out.note(format!(
                        "ignoreip `{item}` is not an address, network or host name; left out"
                    )),
                }
            }
            out.set("ignoreip", format!("[{}]", nets.join(", ")));
            if !files.is_empty() {
                out.set("ignoreip_files", format!("[{}]", files.join(", ")));
            }
        }
        if let Some(v) = self.read(out, "ignoreself") {
            out.set("ignoreself", truthy(&v).to_string());
        }
    }

    /// `port` and `protocol`; returns the port items kept (None: all ports).
    fn ports(&self, out: &mut Out, services: &str) -> Option<Vec<String>> {
        if let Some(p) = self.read(out, "protocol") {
            match p.to_lowercase().as_str() {
                "tcp" | "udp" | "all" => out.set("protocol", quote(&p.to_lowercase())),
                _ => out.note(format!(
                    "protocol = {p}: jailsink knows tcp, udp or all; tcp used"
                )),
            }
        }
        let raw = self.read(out, "port")?;
        let kept = match ports_kept(&raw, services, out, "", "jail") {
            PortsKept::All => return None,
            PortsKept::Items(kept) if kept.is_empty() => return None,
            PortsKept::Items(kept) => kept,
        };
        let list: Vec<String> = kept.iter().map(|p| port_value(p)).collect();
        out.set(
            "port",
            if list.len() == 1 {
                list[0].clone()
            } else {
                format!("[{}]", list.join(", "))
            },
        );
        Some(kept)
    }

    fn actions(&self, out: &mut Out, ports: Option<&[String]>, services: &str) {
        let Some(spec) = self.read(out, "action") else {
            out.set("action", quote(ActionKind::Log.name()));
            out.note("fail2ban names no action; the log action is used");
            return;
        };
        let mut mapped: Vec<String> = Vec::new();
        for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (name, options) = match split_options(line) {
                Ok(v) => v,
                Err(_) => (line.to_string(), Vars::new()),
            };
            let name = name.trim().to_string();
            match map_action(&name) {
                Some(kind) => {
                    let jail = JailSide {
                        ports,
                        port: self.get("port").ok().flatten(),
                        protocol: self.get("protocol").ok().flatten(),
                    };
                    mapped.push(action_value(kind, &name, &options, &jail, services, out))
                }
                None => out.note(format!("no equivalent for action {name}")),
            }
        }
        if mapped.is_empty() {
            out.note("the log action stands in: it logs each ban and bans nothing");
            mapped.push(quote(ActionKind::Log.name()));
        }
        mapped.dedup();
        out.set(
            "action",
            if mapped.len() == 1 {
                mapped.remove(0)
            } else {
                format!("[{}]", mapped.join(", "))
            },
        );
    }

    fn increment(&self, out: &mut Out) {
        let Some(enabled) = self.read(out, "bantime.increment") else {
            return;
        };
        let enabled = truthy(&enabled);
        let mut items = vec![format!("enabled = {enabled}")];
        // fail2ban's default formula doubles each repeat ban (bantime * 2^count * factor);
        // jailsink grows bantime * factor^(n-1), so its factor 2 is fail2ban's doubling.
        items.push("factor = 2.0".into());
        if let Some(f) = self.read(out, "bantime.factor") {
            if !f.parse::<f64>().is_ok_and(|f| f == 1.0) {
                out.note(format!(
                    "fail2ban's bantime.factor = {f} multiplies its doubling; jailsink doubles \
                     (factor = 2.0): adjust factor to taste"
                ));
            }
        }
        for (option, name) in [
            ("bantime.maxtime", "maxtime"),
            ("bantime.rndtime", "rndtime"),
        ] {
            if let Some(v) = self.read(out, option) {
                match seconds(&v) {
                    Ok(s) if s > 0 => items.push(format!("{name} = {}", quote(&format_secs(s)))),
                    _ => out.note(format!("{option} = {v} could not be converted")),
                }
            }
        }
        if enabled && matches!(self.get("bantime.maxtime"), Ok(None)) {
            let maxtime = self.uncapped_maxtime();
            out.note(format!(
                "fail2ban sets no bantime.maxtime: its repeat bans grow up to its formula's own \
                 limit, so maxtime = \"{maxtime}\" (jailsink's default would be 1w)"
            ));
            items.push(format!("maxtime = {}", quote(&maxtime)));
        }
        for option in [
            "bantime.formula",
            "bantime.multipliers",
            "bantime.overalljails",
        ] {
            if let Some(v) = self.read(out, option) {
                out.note(format!("{option} = {v} has no equivalent"));
            }
        }
        out.set("bantime_increment", format!("{{ {} }}", items.join(", ")));
    }
}

impl Jail<'_> {
    /// The longest repeat ban fail2ban gives without `bantime.maxtime`: its default formula
    /// stops doubling at 2^20 (`1<<(ban.Count if ban.Count<20 else 20)`), multipliers at the
    /// last one, both times `bantime.factor`; a custom formula has no limit. Past jailsink's
    /// longest duration (100 years), or when unknown, `permanent`: escalation without a cap.
    fn uncapped_maxtime(&self) -> String {
        let get = |option: &str| self.get(option).ok().flatten();
        let Some(bantime) = get("bantime")
            .and_then(|b| seconds(&b).ok())
            .filter(|&b| b > 0)
        else {
            return "permanent".into();
        };
        let factor = match get("bantime.factor") {
            None => 1.0,
            Some(f) => match f.trim().parse::<f64>() {
                Ok(f) if f > 0.0 => f,
                _ => return "permanent".into(),
            },
        };
        let multiplier = match get("bantime.multipliers").filter(|m| !m.trim().is_empty()) {
            Some(m) => match m.split_whitespace().last().map(str::parse::<f64>) {
                Some(Ok(last)) if last > 0.0 => last,
                _ => return "permanent".into(),
            },
            None if get("bantime.formula").is_some() => return "permanent".into(),
            None => f64::from(1u32 << 20),
        };
        let longest = crate::duration::LONGEST.as_secs_f64();
        let most = bantime as f64 * multiplier * factor;
        if most >= longest {
            "permanent".into()
        } else {
            format_secs(most.round() as i64)
        }
    }
}

/// A name `check` takes for a jail or a firewall action (it names kernel objects).
fn valid_name(name: &str) -> bool {
    crate::config::compile::valid_jail_name(name)
}

/// Our action type for a fail2ban action name, if there is one.
fn map_action(name: &str) -> Option<ActionKind> {
    let n = name.to_lowercase();
    if n == "ipset" || n.starts_with("iptables-ipset") {
        Some(ActionKind::Ipset)
    } else if n.starts_with("nftables") {
        Some(ActionKind::Nftables)
    } else if n.starts_with("iptables") {
        Some(ActionKind::Iptables)
    } else {
        None
    }
}

/// What the jail itself says about the traffic it guards, next to which an action's options
/// are read.
struct JailSide<'a> {
    /// The port items kept for the jail (None: all ports).
    ports: Option<&'a [String]>,
    /// The jail's `port` as fail2ban has it.
    port: Option<String>,
    /// The jail's `protocol` as fail2ban has it.
    protocol: Option<String>,
}

/// One mapped action as TOML: the bare type, or a table when fail2ban's options change it:
/// `name`, `blocktype`, and what decides which traffic the ban stops, which must not be lost
/// (an imported jail would otherwise guard other traffic than fail2ban did): the action's own
/// `port` and `protocol`, `type=allports` (or an `-allports` action), and the chain (`chain`
/// of iptables and ipset actions, `chain_hook` of nftables ones).
fn action_value(
    kind: ActionKind,
    name: &str,
    options: &Vars,
    jail: &JailSide,
    services: &str,
    out: &mut Out,
) -> String {
    let ports = jail.ports;
    // jail.conf's default actions pass the jail's own port, protocol and chain on
    // (`port="%(port)s"`, `chain="%(chain)s"`, whose default is the action's `<known/chain>`):
    // only a value of the action's own says something the jail does not.
    let own = |key: &str, jails: Option<&str>| {
        options
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty() && !v.contains('<') && Some(*v) != jails.map(str::trim))
    };
    let mut table = Vec::new();
    let allports = name.to_lowercase().contains("allports")
        || options
            .get("type")
            .is_some_and(|t| t.eq_ignore_ascii_case("allports"));
    match own("port", jail.port.as_deref()).filter(|_| !allports) {
        Some(raw) => match ports_kept(raw, services, out, &format!("{name}: "), "action") {
            PortsKept::All => {
                if ports.is_some() {
                    table.push(format!("port = {}", quote("1:65535")));
                }
            }
            // Nothing usable: the jail's ports stand.
            PortsKept::Items(kept) if kept.is_empty() => {}
            PortsKept::Items(kept) => {
                let list: Vec<String> = kept.iter().map(|p| port_value(p)).collect();
                table.push(format!("port = [{}]", list.join(", ")));
            }
        },
        None if allports && ports.is_some() => {
            table.push(format!("port = {}", quote("1:65535")));
        }
        None => {}
    }
    if let Some(p) = own("protocol", jail.protocol.as_deref()) {
        match p.to_lowercase().as_str() {
            proto @ ("tcp" | "udp" | "all") => table.push(format!("protocol = {}", quote(proto))),
            _ => out.note(format!(
                "{name}: protocol = {p}: jailsink knows tcp, udp or all; the jail's is used"
            )),
        }
    }
    match kind {
        ActionKind::Iptables | ActionKind::Ipset => {
            if let Some(chain) = own("chain", None).filter(|c| !c.eq_ignore_ascii_case("INPUT")) {
                table.push(format!("chains = [{}]", quote(chain)));
            }
        }
        ActionKind::Nftables => {
            if let Some(hook) = own("chain_hook", None) {
                match hook.to_lowercase().as_str() {
                    "input" => {}
                    "forward" => table.push(format!("hooks = [{}]", quote("forward"))),
                    other => out.note(format!(
                        "{name}: chain_hook = {other}: jailsink hooks input or forward; input used"
                    )),
                }
            }
        }
        _ => {}
    }
    if kind == ActionKind::Iptables {
        if let Some(n) = options.get("name").filter(|n| valid_name(n)) {
            table.push(format!("name = {}", quote(n)));
        }
        let block = options.get("blocktype").map(|b| b.to_uppercase());
        match block.as_deref() {
            Some(b) if b.starts_with("DROP") => {
                table.push(format!("blocktype = {}", quote("DROP")))
            }
            Some(b) if b.starts_with("REJECT") => {
                table.push(format!("blocktype = {}", quote("REJECT")))
            }
            _ => {}
        }
    }
    if table.is_empty() {
        quote(kind.name())
    } else {
        format!("{{ type = {}, {} }}", quote(kind.name()), table.join(", "))
    }
}

/// What a fail2ban `port` value leaves for jailsink.
enum PortsKept {
    /// Every port: an "every port" spelling, or more items than one rule takes.
    All,
    /// The items jailsink can resolve (maybe none), in order.
    Items(Vec<String>),
}

/// Reads a jail's or an action's fail2ban `port` value (`what`, with `prefix` before each note
/// it leaves): items it cannot resolve are noted and left out, more than 15 guard all ports.
fn ports_kept(raw: &str, services: &str, out: &mut Out, prefix: &str, what: &str) -> PortsKept {
    let items = port_items(raw);
    if items.is_empty() || items.iter().any(|i| all_ports(i)) {
        return PortsKept::All;
    }
    let mut kept = Vec::new();
    for item in items {
        match crate::config::compile::resolve_port(&item, services) {
            Ok(_) => kept.push(item),
            Err(reason) => out.note(format!("{prefix}port {reason}; left out")),
        }
    }
    if kept.len() > 15 {
        out.note(format!(
            "{prefix}fail2ban guards {} ports; jailsink takes at most 15 per rule, so this {what} guards all ports",
            kept.len()
        ));
        return PortsKept::All;
    }
    PortsKept::Items(kept)
}

/// `http,https`, `smtp 465 submission` into items.
fn port_items(raw: &str) -> Vec<String> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// fail2ban's "every port" spellings.
fn all_ports(item: &str) -> bool {
    matches!(item, "0:65535" | "1:65535" | "all" | "any")
}

/// A port number as a TOML integer, anything else as a string.
fn port_value(item: &str) -> String {
    match item.parse::<u16>() {
        Ok(n) => n.to_string(),
        Err(_) => quote(item),
    }
}

/// A duration fail2ban's `MyTime.str2seconds` would not read (lower-cased and trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration fail2ban's way (10m, 1h, 600, -1)")]
struct NotADuration(String);

/// fail2ban's `MyTime.str2seconds` for sums of `N unit` terms ("10m", "1h 30m", "1d12h",
/// "600", "-1", "6 months"); arithmetic beyond `+`/`-` is refused.
fn seconds(text: &str) -> Result<i64, NotADuration> {
    const MONTH: f64 = (365.0 * 3.0 + 366.0) * 86400.0 / 4.0 / 12.0;
    let text = text.trim().to_lowercase();
    let bad = || NotADuration(text.clone());
    let mut total = 0.0f64;
    let mut chars = text.chars().peekable();
    let mut sign = 1.0;
    let mut any = false;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None => break,
            Some('+') => {
                chars.next();
                sign = 1.0;
                continue;
            }
            Some('-') => {
                chars.next();
                sign = -1.0;
                continue;
            }
            _ => {}
        }
        let mut number = String::new();
        while let Some(c) = chars.peek().filter(|c| c.is_ascii_digit() || **c == '.') {
            number.push(*c);
            chars.next();
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut unit = String::new();
        while let Some(c) = chars.peek().filter(|c| c.is_ascii_alphabetic()) {
            unit.push(*c);
            chars.next();
        }
        let factor = match unit.as_str() {
            "" | "s" | "ss" | "se" | "sec" | "second" | "seconds" => 1.0,
            "m" | "mm" | "mi" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hh" | "ho" | "hou" | "hour" | "hours" => 3600.0,
            "d" | "dd" | "da" | "day" | "days" => 86400.0,
            "w" | "ww" | "we" | "wee" | "week" | "weeks" => 7.0 * 86400.0,
            "mo" | "mon" | "month" | "months" => MONTH,
            "y" | "yy" | "ye" | "yea" | "year" | "years" => MONTH * 12.0,
            _ => return Err(bad()),
        };
        total += sign * value * factor;
        sign = 1.0;
        any = true;
    }
    if !any {
        return Err(bad());
    }
    Ok(total.round() as i64)
}

/// Seconds as jailsink writes durations: "10m", "1h 30m", "1w".
fn format_secs(mut secs: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (604_800, "w"),
        (86_400, "d"),
        (3600, "h"),
        (60, "m"),
        (1, "s"),
    ];
    let mut parts = Vec::new();
    for (size, unit) in UNITS {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTER: &str =
        "[Definition]\nfailregex = ^Failed password for \\S+ from <HOST>\nmode = normal\n";

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = d.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        d
    }

    fn toml_of(text: &str) -> toml::Table {
        text.parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn jail<'a>(t: &'a toml::Table, name: &str) -> &'a toml::Table {
        t["jails"][name].as_table().unwrap()
    }

    const JAIL_CONF: &str = "[INCLUDES]\nbefore = paths.conf\n\n[DEFAULT]\nbantime = 10m\nfindtime = 10m\nmaxretry = 5\nenabled = false\nmode = normal\nfilter = %(__name__)s[mode=%(mode)s]\nprotocol = tcp\nport = 0:65535\nbanaction = iptables-multiport\naction_ = %(banaction)s[port=\"%(port)s\", protocol=\"%(protocol)s\", chain=\"<known/chain>\"]\naction = %(action_)s\n\n[sshd]\nport = %(sshd_port)s\nlogpath = %(sshd_log)s\nbackend = %(sshd_backend)s\n\n[postfix]\nmode = more\nport = smtp,465,submission\nlogpath = %(postfix_log)s\n\n[recidive]\nlogpath = /var/log/fail2ban.log\nbantime = 1w\n";
    const PATHS: &str = "[DEFAULT]\nsshd_port = ssh\nsshd_log = /var/log/auth.log\nsshd_backend = %(default/backend)s\nbackend = auto\npostfix_log = /var/log/mail.log\n";

    #[test]
    fn enabled_jails_with_interpolated_values() {
        let d = dir(&[
            ("jail.conf", JAIL_CONF),
            ("paths.conf", PATHS),
            ("jail.d/defaults-debian.conf", "[sshd]\nenabled = true\n"),
            (
                "jail.local",
                "[DEFAULT]\nignoreip = 127.0.0.1/8 ::1, 192.0.2.0/24 example.com\n[sshd]\nmode = aggressive\nbantime = -1\nmaxretry = 3\n[postfix]\nenabled = true\nbanaction = nftables-multiport\nfindtime = 1h30m\n",
            ),
            ("filter.d/sshd.conf", FILTER),
            ("filter.d/postfix.conf", FILTER),
        ]);
        let text = import_fail2ban(d.path()).unwrap();
        let t = toml_of(&text);
        let sshd = jail(&t, "sshd");
        // fail2ban's sshd[mode=aggressive] is the native sshd in its aggressive mode
        assert_eq!(sshd["filter"].as_str(), Some("sshd"));
        assert_eq!(sshd["filter_options"]["mode"].as_str(), Some("aggressive"));
        assert_eq!(sshd["port"].as_str(), Some("ssh"));
        assert_eq!(sshd["bantime"].as_str(), Some("permanent"));
        assert_eq!(sshd["findtime"].as_str(), Some("10m"));
        assert_eq!(sshd["maxretry"].as_integer(), Some(3));
        assert_eq!(sshd["action"].as_str(), Some("iptables"));
        assert_eq!(
            sshd["programs"].as_array().unwrap()[0].as_str(),
            Some("sshd")
        );
        let ignore: Vec<_> = sshd["ignoreip"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            ignore,
            ["127.0.0.1/8", "::1", "192.0.2.0/24", "example.com"]
        );
        assert!(
            text.contains("backend = auto, logpath = /var/log/auth.log"),
            "{text}"
        );

        // fail2ban's postfix in mode `more` is the native postfix-reject
        let postfix = jail(&t, "postfix");
        assert_eq!(postfix["filter"].as_str(), Some("postfix-reject"));
        assert!(postfix.get("filter_options").is_none(), "{text}");
        assert!(
            text.contains(
                "fail2ban's `postfix[mode=more]` is jailsink's native filter postfix-reject"
            ),
            "{text}"
        );
        assert_eq!(postfix["action"].as_str(), Some("nftables"));
        assert_eq!(postfix["findtime"].as_str(), Some("1h 30m"));
        let ports = postfix["port"].as_array().unwrap();
        assert_eq!(ports[0].as_str(), Some("smtp"));
        assert_eq!(ports[1].as_integer(), Some(465));
        assert!(t["jails"].get("recidive").is_none(), "not enabled");
        assert_eq!(
            t["defaults"]["filter_dirs"][0].as_str(),
            Some(d.path().join("filter.d").to_str().unwrap())
        );
        assert_eq!(t["defaults"]["filter_dirs"][1].as_str(), Some(NATIVE_DIR));
    }

    #[test]
    fn fail2ban_filters_map_to_native_ones_by_mode() {
        let opts = |pairs: &[(&str, &str)]| -> Vars {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            native_for("postfix", &opts(&[("mode", "auth")])),
            Some("postfix-sasl")
        );
        assert_eq!(
            native_for("postfix", &opts(&[("mode", "rbl")])),
            Some("postfix-rbl")
        );
        assert_eq!(
            native_for("postfix", &opts(&[("mode", "more")])),
            Some("postfix-reject")
        );
        assert_eq!(
            native_for("postfix", &opts(&[("mode", "aggressive")])),
            None
        );
        assert_eq!(native_for("dovecot", &opts(&[])), Some("dovecot"));
        assert_eq!(
            native_for("dovecot", &opts(&[("mode", "normal")])),
            Some("dovecot")
        );
        assert_eq!(
            native_for("dovecot", &opts(&[("mode", "aggressive")])),
            None
        );
        assert_eq!(
            native_for(
                "roundcube-auth",
                &opts(&[("mode", "normal"), ("logtype", "file")])
            ),
            None
        );
        assert_eq!(
            native_for("sshd", &opts(&[("mode", "normal")])),
            Some("sshd")
        );
        assert_eq!(native_for("sshd", &opts(&[("mode", "ddos")])), None);
        assert_eq!(native_for("nginx-botsearch", &opts(&[])), None);
        assert_eq!(native_for("gitlab", &opts(&[])), None);
        // every mapped name is a filter the repository ships
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/filter.d");
        for (_, _, native) in NATIVE {
            assert!(shipped.join(format!("{native}.toml")).is_file(), "{native}");
        }

        let d = dir(&[
            ("jail.conf", JAIL_CONF),
            ("paths.conf", PATHS),
            (
                "jail.local",
                "[postfix-sasl]\nenabled = true\nfilter = postfix[mode=auth]\nfailregex = ^x <HOST>$\n\
                 [dovecot]\nenabled = true\n[sshd]\nenabled = true\n[dropbear]\nenabled = true\nfilter = sshd[mode=ddos]\n\
                 [3proxy]\nenabled = true\nfilter = sshd\n[apache-fakegooglebot]\nenabled = true\nfilter = sshd\n",
            ),
            ("filter.d/sshd.conf", FILTER),
            ("filter.d/postfix.conf", FILTER),
            ("filter.d/dovecot.conf", FILTER),
            (
                "filter.d/postfix-sasl.toml",
                include_str!("../conf/filter.d/postfix-sasl.toml"),
            ),
            ("filter.d/dovecot.toml", include_str!("../conf/filter.d/dovecot.toml")),
            ("filter.d/sshd.toml", include_str!("../conf/filter.d/sshd.toml")),
        ]);
        let text = import_fail2ban(d.path()).unwrap();
        let t = toml_of(&text);
        assert_eq!(
            jail(&t, "postfix-sasl")["filter"].as_str(),
            Some("postfix-sasl")
        );
        assert!(text.contains("add them to this jail"), "{text}");
        assert_eq!(jail(&t, "dovecot")["filter"].as_str(), Some("dovecot"));
        assert_eq!(
            jail(&t, "dovecot")["programs"].as_array().unwrap()[0].as_str(),
            Some("dovecot")
        );
        // sshd in fail2ban's normal mode is the native sshd in its normal mode
        assert_eq!(jail(&t, "sshd")["filter"].as_str(), Some("sshd"));
        assert_eq!(
            jail(&t, "sshd")["filter_options"]["mode"].as_str(),
            Some("normal")
        );
        // not mapped (a mode the native filter lacks): fail2ban's file by its path, so that
        // the native sshd.toml of the same name does not take its place
        let path = d.path().join("filter.d/sshd.conf");
        assert_eq!(jail(&t, "dropbear")["filter"].as_str(), path.to_str());
        assert_eq!(
            jail(&t, "dropbear")["filter_options"]["mode"].as_str(),
            Some("ddos")
        );

        // Names check refuses are left out with a note, not written for check to fail on.
        for refused in ["3proxy", "apache-fakegooglebot"] {
            assert!(
                text.contains(&format!("# [{refused}]: a jailsink jail name")),
                "{text}"
            );
        }
        let config_path = d.path().join("jailsink.toml");
        std::fs::write(&config_path, &text).unwrap();
        let config = crate::config::load(&config_path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let origin = |name: &str| {
            config
                .jails
                .iter()
                .find(|j| j.name == name)
                .map(|j| j.filter_origin.clone())
                .unwrap()
        };
        assert!(origin("postfix-sasl").ends_with("postfix-sasl.toml"));
        assert!(origin("dovecot").ends_with("dovecot.toml"));
        assert!(origin("sshd").ends_with("sshd.toml"), "{}", origin("sshd"));
        assert!(
            origin("dropbear").ends_with("sshd.conf[mode=ddos]"),
            "{}",
            origin("dropbear")
        );
    }

    /// A `filter.d/NAME.local` (here an ignoreregex added to postfix) keeps fail2ban's filter,
    /// which jailsink reads with its .local, instead of the native filter that would drop it.
    #[test]
    fn a_filters_local_file_keeps_the_fail2ban_filter() {
        let d = dir(&[
            ("jail.conf", JAIL_CONF),
            ("paths.conf", PATHS),
            (
                "jail.local",
                "[postfix]\nenabled = true\n[sshd]\nenabled = true\n",
            ),
            ("filter.d/postfix.conf", FILTER),
            (
                "filter.d/postfix.local",
                "[Definition]\nignoreregex = from <HOST> .*trusted\n",
            ),
            ("filter.d/sshd.conf", FILTER),
        ]);
        let text = import_fail2ban(d.path()).unwrap();
        let t = toml_of(&text);
        let postfix = jail(&t, "postfix");
        let path = d.path().join("filter.d/postfix.conf");
        assert_eq!(
            postfix["filter"].as_str(),
            Some(path.display().to_string().as_str()),
            "{text}"
        );
        assert_eq!(postfix["filter_options"]["mode"].as_str(), Some("more"));
        assert!(
            text.contains("filter.d/postfix.local customizes fail2ban's"),
            "{text}"
        );
        // Without a .local, the native filter still stands in.
        assert_eq!(jail(&t, "sshd")["filter"].as_str(), Some("sshd"));
    }

    #[test]
    fn unknown_actions_become_comments_and_the_log_action() {
        let d = dir(&[
            ("jail.conf", JAIL_CONF),
            ("paths.conf", PATHS),
            (
                "jail.local",
                "[sshd]\nenabled = true\naction = shorewall\n          sendmail-whois[name=SSH]\n[dropbear]\nenabled = true\nfilter = sshd\naction = iptables-allports[name=DROP1]\n          iptables-ipset-proto6[name=x]\n          ufw\nbantime.increment = true\nbantime.maxtime = 5w\nbantime.factor = 1\n[recidive]\nenabled = true\nfilter = sshd\n",
            ),
            ("filter.d/sshd.conf", FILTER),
        ]);
        let text = import_fail2ban(d.path()).unwrap();
        let t = toml_of(&text);
        assert_eq!(jail(&t, "sshd")["action"].as_str(), Some("log"));
        assert!(
            text.contains("# no equivalent for action shorewall"),
            "{text}"
        );
        assert!(
            text.contains("# no equivalent for action sendmail-whois"),
            "{text}"
        );
        let dropbear = jail(&t, "dropbear");
        let actions = dropbear["action"].as_array().unwrap();
        assert_eq!(actions[0]["type"].as_str(), Some("iptables"));
        assert_eq!(actions[0]["name"].as_str(), Some("DROP1"));
        assert!(
            actions[0].get("port").is_none(),
            "all ports already: {text}"
        );
        assert_eq!(actions[1].as_str(), Some("ipset"));
        assert!(text.contains("# no equivalent for action ufw"), "{text}");
        assert_eq!(
            dropbear["bantime_increment"]["maxtime"].as_str(),
            Some("5w")
        );
        assert_eq!(
            dropbear["bantime_increment"]["enabled"].as_bool(),
            Some(true)
        );
        assert_eq!(jail(&t, "recidive")["enabled"].as_bool(), Some(false));
    }

    #[test]
    fn an_actions_port_protocol_chain_and_allports_are_kept() {
        let d = dir(&[
            ("jail.conf", JAIL_CONF),
            ("paths.conf", PATHS),
            (
                "jail.local",
                "[DEFAULT]\nbanaction_allports = nftables[type=allports]\n[named]\nenabled = true\nfilter = sshd\naction = iptables-multiport[name=named, port=\"domain,953\", protocol=udp]\n[sshd]\nenabled = true\naction = iptables[name=SSH, chain=DOCKER-USER]\n[dropbear]\nenabled = true\nfilter = sshd\nport = ssh\nbanaction = %(banaction_allports)s\naction = %(banaction)s\n[web]\nenabled = true\nfilter = sshd\naction = nftables[name=web, chain_hook=forward]\n",
            ),
            ("filter.d/sshd.conf", FILTER),
        ]);
        let text = import_fail2ban(d.path()).unwrap();
        let t = toml_of(&text);
        let named = &jail(&t, "named")["action"];
        assert_eq!(named["protocol"].as_str(), Some("udp"), "{text}");
        let ports: Vec<String> = named["port"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(ports, ["\"domain\"", "953"], "{text}");
        let sshd = &jail(&t, "sshd")["action"];
        assert_eq!(sshd["chains"][0].as_str(), Some("DOCKER-USER"), "{text}");
        let dropbear = &jail(&t, "dropbear")["action"];
        assert_eq!(dropbear["type"].as_str(), Some("nftables"), "{text}");
        assert_eq!(dropbear["port"].as_str(), Some("1:65535"), "{text}");
        let web = &jail(&t, "web")["action"];
        assert_eq!(web["hooks"][0].as_str(), Some("forward"), "{text}");
        // And jailsink takes what was written.
        let path = d.path().join("jailsink.toml");
        std::fs::write(&path, &text).unwrap();
        crate::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[test]
    fn output_compiles_with_jailsink_check() {
        let d = dir(&[
            ("jail.conf", JAIL_CONF),
            ("paths.conf", PATHS),
            (
                "jail.local",
                "[sshd]\nenabled = true\n[postfix]\nenabled = true\nmaxretry = 2\n[missing]\nenabled = true\n",
            ),
            ("filter.d/sshd.conf", FILTER),
            ("filter.d/postfix.conf", FILTER),
            (
                "filter.d/postfix-reject.toml",
                include_str!("../conf/filter.d/postfix-reject.toml"),
            ),
        ]);
        let text = import_fail2ban(d.path()).unwrap();
        let path = d.path().join("jailsink.toml");
        std::fs::write(&path, &text).unwrap();
        let config = crate::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let names: Vec<_> = config.jails.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["postfix", "sshd"], "{text}");
        assert!(text.contains("filter missing.conf is not in"), "{text}");
    }

    /// fail2ban puts no cap on repeat bans without bantime.maxtime but its formula's 2^20:
    /// the import writes that limit, or `permanent` past 100 years, never jailsink's 1w
    /// default; and a multipliers list stops at its last one.
    #[test]
    fn increment_without_maxtime_is_not_capped_at_a_week() {
        let d = dir(&[
            ("jail.conf", JAIL_CONF),
            ("paths.conf", PATHS),
            (
                "jail.local",
                "[DEFAULT]\nbantime.increment = true\n[sshd]\nenabled = true\n[postfix]\nenabled = true\nbantime = 1h\n[dropbear]\nenabled = true\nfilter = sshd\nbantime.multipliers = 1 5 30 60\n",
            ),
            ("filter.d/sshd.conf", FILTER),
            ("filter.d/postfix.conf", FILTER),
            (
                "filter.d/postfix-reject.toml",
                include_str!("../conf/filter.d/postfix-reject.toml"),
            ),
        ]);
        let text = import_fail2ban(d.path()).unwrap();
        let t = toml_of(&text);
        let maxtime = |name: &str| {
            jail(&t, name)["bantime_increment"]["maxtime"]
                .as_str()
                .map(str::to_string)
        };
        // 10m x 2^20 = 629,145,600 s.
        assert_eq!(
            maxtime("sshd").as_deref(),
            Some("1040w 1d 18h 40m"),
            "{text}"
        );
        // 1h x 2^20 is over 119 years.
        assert_eq!(maxtime("postfix").as_deref(), Some("permanent"), "{text}");
        assert_eq!(maxtime("dropbear").as_deref(), Some("10h"), "{text}");
        assert!(text.contains("fail2ban sets no bantime.maxtime"), "{text}");
        let path = d.path().join("jailsink.toml");
        std::fs::write(&path, &text).unwrap();
        let config = crate::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let sshd = config.jails.iter().find(|j| j.name == "sshd").unwrap();
        assert_eq!(
            sshd.settings.increment.maxtime,
            std::time::Duration::from_secs(600 << 20)
        );
    }

    #[test]
    fn fail2ban_durations() {
        assert_eq!(seconds("600"), Ok(600));
        assert_eq!(seconds("10m"), Ok(600));
        assert_eq!(seconds("1h 30m"), Ok(5400));
        assert_eq!(seconds("1d12h"), Ok(129_600));
        assert_eq!(seconds("-1"), Ok(-1));
        assert_eq!(seconds("1w"), Ok(604_800));
        assert_eq!(seconds("1year-6mo"), Ok(15_778_800));
        assert!(seconds("2*h").is_err());
        assert!(seconds("").is_err());
        assert_eq!(format_secs(5400), "1h 30m");
        assert_eq!(format_secs(604_800), "1w");
        assert_eq!(format_secs(48 * 3600), "2d");
    }

    #[test]
    fn no_jail_conf_is_an_error() {
        let d = dir(&[]);
        assert!(matches!(
            import_fail2ban(d.path()),
            Err(ImportError::NoJailConf { .. })
        ));
    }
}
