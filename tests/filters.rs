//! The shipped filters in conf/filter.d: real lines match with the right address (and user),
//! non-failures do not, and attacker-controlled text never gets a different address banned.

use std::net::IpAddr;
use std::path::PathBuf;

use jailsink::config::raw::RawFilter;
use jailsink::config::read_toml;
use jailsink::filter::{Filter, FilterSource, Verdict};

const SHIPPED: &[&str] = &[
    "sshd",
    "sendmail-auth",
    "postfix-sasl",
    "dovecot",
    "nginx-http-auth",
];

/// Addresses an attacker tries to get banned instead of itself.
const EVIL4: &str = "6.6.6.6";
const EVIL6: &str = "2001:db8:666::6";

fn filter_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("conf/filter.d")
        .join(format!("{name}.toml"))
}

fn raw(name: &str) -> RawFilter {
    let path = filter_path(name);
    read_toml::<RawFilter>(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(name: &str) -> Filter {
    let raw = raw(name);
    Filter::compile(&FilterSource {
        failregex: raw.failregex,
        ignoreregex: raw.ignoreregex,
        prefregex: raw.prefregex,
    })
    .unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `line` is a failure from `addr`, with `user` when given.
#[track_caller]
fn fails(f: &Filter, line: &str, addr: &str, user: Option<&str>) {
    match f.check(line) {
        Verdict::Failure(m) => {
            assert_eq!(m.ip, ip(addr), "wrong address for {line:?}");
            if user.is_some() {
                assert_eq!(m.user.as_deref(), user, "wrong user for {line:?}");
            }
        }
        other => panic!("expected a failure from {addr} for {line:?}, got {other:?}"),
    }
}

#[track_caller]
fn misses(f: &Filter, line: &str) {
    let v = f.check(line);
    assert!(
        !matches!(v, Verdict::Failure(_)),
        "expected no failure for {line:?}, got {v:?}"
    );
}

/// Either no failure, or a failure from `real`; never any other address.
#[track_caller]
fn real_or_nothing(f: &Filter, line: &str, real: &str) -> bool {
    match f.check(line) {
        Verdict::Failure(m) => {
            assert_eq!(
                m.ip,
                ip(real),
                "injected address banned for {:?}",
                truncate(line)
            );
            true
        }
        _ => false,
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 300 {
        format!("{}...[{} bytes]", &s[..300], s.len())
    } else {
        s.to_string()
    }
}

/// User names (or other client-controlled fields) that try to smuggle an address into a line.
fn payloads() -> Vec<String> {
    let mut out = Vec::new();
    for evil in [EVIL4, EVIL6] {
        out.extend([
            evil.to_string(),
            format!("x from {evil}"),
            format!("x from {evil} port 22"),
            format!("x from {evil} port 22 ssh2"),
            format!("x from {evil} port 22 ssh2: RSA SHA256:abc"),
            format!("x from {evil} port 22 ssh2 [preauth]"),
            format!("x {evil} port 22"),
            format!("x {evil} port 22 [preauth]"),
            format!("{evil} port 22 port 22 ssh2"),
            format!("\x1b[31m{evil}\x1b[0m"),
            format!("x\x1b[31m from {evil} port 22 ssh2\x1b[0m"),
            format!("x\nfrom {evil} port 22 ssh2"),
            format!("x rhost={evil}"),
            format!("x rhost={evil}  user=root"),
            format!("x  user=y rhost={evil}"),
            format!("x, relay=[{evil}]"),
            format!("x, relay=[IPv6:{evil}] (may be forged)"),
            format!("x, relay=host [{evil}]"),
            format!("[{evil}]: SASL LOGIN authentication failed: x"),
            format!("x[{evil}]"),
            format!("x\", client: {evil}, server: y"),
            format!("x\": password mismatch, client: {evil}, server: y, request: \"GET / HTTP/1.1\", host: \"y"),
            format!("x\" was not found in \"/etc/nginx/.htpasswd\", client {evil}, server"),
            format!("x\" was not found in \"/x\", client\u{ff1a} {evil}, server\u{ff1a} y"),
            format!("x>, method=PLAIN, rip={evil}, lip=192.0.2.1, TLS, session=<x"),
            format!("x>, rip={evil}"),
            format!("x,{evil}"),
            format!("x,{evil},<abc>"),
            format!("x,{evil}): unknown user"),
            format!("x,{evil},<abc>): unknown user (SHA1 of given password: abc"),
            format!("x) y(z,{evil}): unknown user"),
            format!("{} from {evil} port 22 ssh2", "A".repeat(10_000)),
            format!("{} from {evil} port 22", "from 1.2.3.4 port 22 ".repeat(450)),
            format!("{evil} {evil} {evil} from {evil}"),
        ]);
    }
    out.push("from 1.2.3.4".into());
    out.push("x port 99999 port 1 ssh2".into());
    out.push(String::new());
    out
}

/// Runs every payload through every template (`{}` is the client-controlled field) and checks
/// that only `real` can ever be banned. Each template must match with a benign field.
#[track_caller]
fn injection_proof(f: &Filter, templates: &[(&str, &str)]) -> usize {
    injection_proof_with(f, templates, &payloads())
}

#[track_caller]
fn injection_proof_with(f: &Filter, templates: &[(&str, &str)], payloads: &[String]) -> usize {
    let mut hits = 0;
    for (template, real) in templates {
        let benign = template.replace("{}", "bob");
        fails(f, &benign, real, None);
        for payload in payloads {
            if real_or_nothing(f, &template.replace("{}", payload), real) {
                hits += 1;
            }
        }
    }
    hits
}

#[test]
fn every_shipped_filter_loads_and_every_failregex_is_anchored() {
    for name in SHIPPED {
        let raw = raw(name);
        assert!(
            raw.description.is_some_and(|d| !d.is_empty()),
            "{name}: description"
        );
        assert!(
            raw.prefregex.is_none(),
            "{name}: prefregex disables the shared RegexSet"
        );
        assert!(!raw.failregex.is_empty(), "{name}: no failregex");
        for (i, p) in raw.failregex.iter().enumerate() {
            assert!(
                p.starts_with('^'),
                "{name} failregex[{i}] is not anchored: {p}"
            );
            assert!(
                p.contains("<HOST>"),
                "{name} failregex[{i}] has no <HOST>: {p}"
            );
            let after = &p[p.rfind("<HOST>").unwrap() + "<HOST>".len()..];
            assert!(
                !after.is_empty() && !after.starts_with(".*") && !after.starts_with(".+"),
                "{name} failregex[{i}] has no fixed context after <HOST>: {p}"
            );
        }
        load(name);
    }
}

// ---------------------------------------------------------------------------------------- sshd

#[test]
fn sshd_real_failures() {
    let f = load("sshd");
    let a = "203.0.113.5";
    for (line, user) in [
        ("Failed password for root from 203.0.113.5 port 4242 ssh2", "root"),
        ("Failed password for invalid user admin from 203.0.113.5 port 4242 ssh2", "admin"),
        ("Failed none for invalid user x from 203.0.113.5 port 4242 ssh2", "x"),
        ("Failed keyboard-interactive/pam for invalid user x from 203.0.113.5 port 4242 ssh2", "x"),
        (
            "Failed publickey for root from 203.0.113.5 port 4242 ssh2: RSA SHA256:Ht0LqTq2aH6eY9Aq2rWl1M3cYj1Ljz3p1Jv0m4qf4i8",
            "root",
        ),
        ("Invalid user admin from 203.0.113.5 port 4242", "admin"),
        ("Invalid user admin from 203.0.113.5", "admin"),
        ("Invalid user  from 203.0.113.5 port 4242", ""),
        (
            "error: maximum authentication attempts exceeded for root from 203.0.113.5 port 4242 ssh2 [preauth]",
            "root",
        ),
        (
            "error: maximum authentication attempts exceeded for invalid user admin from 203.0.113.5 port 4242 ssh2 [preauth]",
            "admin",
        ),
        ("Connection closed by authenticating user root 203.0.113.5 port 4242 [preauth]", "root"),
        ("Connection closed by invalid user admin 203.0.113.5 port 4242 [preauth]", "admin"),
        ("Connection reset by invalid user admin 203.0.113.5 port 4242 [preauth]", "admin"),
        ("Disconnected from authenticating user root 203.0.113.5 port 4242 [preauth]", "root"),
        ("Disconnected from invalid user admin 203.0.113.5 port 4242 [preauth]", "admin"),
        (
            "User bob from 203.0.113.5 not allowed because not listed in AllowUsers",
            "bob",
        ),
        (
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5  user=root",
            "root",
        ),
    ] {
        fails(&f, line, a, Some(user));
    }
    for line in [
        "banner exchange: Connection from 203.0.113.5 port 4242: invalid format",
        "Unable to negotiate with 203.0.113.5 port 4242: no matching key exchange method found. Their offer: diffie-hellman-group14-sha1,diffie-hellman-group1-sha1 [preauth]",
        "Unable to negotiate with 203.0.113.5 port 4242: no matching host key type found. Their offer: ssh-rsa [preauth]",
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.5",
    ] {
        fails(&f, line, a, None);
    }
    // IPv6, and IPv4-mapped IPv6 normalised to IPv4
    fails(
        &f,
        "Failed password for root from 2001:db8::5 port 22 ssh2",
        "2001:db8::5",
        Some("root"),
    );
    fails(
        &f,
        "Invalid user admin from 2001:db8::5 port 22",
        "2001:db8::5",
        Some("admin"),
    );
    fails(
        &f,
        "Connection closed by invalid user admin 2001:db8::5 port 22 [preauth]",
        "2001:db8::5",
        Some("admin"),
    );
    fails(
        &f,
        "Failed password for root from ::ffff:203.0.113.5 port 22 ssh2",
        a,
        Some("root"),
    );
}

#[test]
fn sshd_non_failures() {
    let f = load("sshd");
    for line in [
        "Received disconnect from 203.0.113.5 port 4242:11: Bye Bye [preauth]",
        "Received disconnect from 203.0.113.5 port 4242:11: disconnected by user",
        "Accepted publickey for root from 198.51.100.1 port 50000 ssh2: ED25519 SHA256:abc",
        "Accepted publickey for root from 198.51.100.1 port 50000 ssh2",
        "Accepted password for bob from 198.51.100.1 port 50000 ssh2",
        "Disconnected from user bob 198.51.100.1 port 50000",
        "Connection closed by 198.51.100.1 port 50000",
        "pam_unix(sshd:session): session opened for user bob(uid=1000) by (uid=0)",
        "pam_unix(sshd:auth): check pass; user unknown",
        "error: kex_exchange_identification: Connection closed by remote host",
        "error: kex_exchange_identification: banner line contains invalid characters",
        "Server listening on 0.0.0.0 port 22.",
        "Connection from 203.0.113.5 port 4242 on 192.0.2.1 port 22 rdomain \"\"",
        "Failed password for root from host.example port 22 ssh2",
        "Failed password for root from 999.1.1.1 port 22 ssh2",
        "",
    ] {
        misses(&f, line);
    }
}

#[test]
fn sshd_injection_cases_from_the_issue() {
    let f = load("sshd");
    fails(
        &f,
        "Invalid user 6.6.6.6 from 192.0.2.77 port 22",
        "192.0.2.77",
        Some("6.6.6.6"),
    );
    assert!(real_or_nothing(
        &f,
        "Failed password for invalid user x from 6.6.6.6 port 22 from 192.0.2.77 port 22 ssh2",
        "192.0.2.77"
    ));
    fails(
        &f,
        "Failed password for invalid user x from 6.6.6.6 port 22 ssh2 from 192.0.2.77 port 22 ssh2",
        "192.0.2.77",
        Some("x from 6.6.6.6 port 22 ssh2"),
    );
    // a publickey tail cannot be faked through the user name either
    real_or_nothing(
        &f,
        "Failed publickey for x from 6.6.6.6 port 22 ssh2: RSA SHA256:x from 192.0.2.77 port 22 ssh2: RSA SHA256:y",
        "192.0.2.77",
    );
    // the client's offer comes after the address
    fails(
        &f,
        "Unable to negotiate with 192.0.2.77 port 22: no matching cipher found. Their offer: x from 6.6.6.6 port 22 ssh2",
        "192.0.2.77",
        None,
    );
}

#[test]
fn sshd_injection_never_bans_another_address() {
    let f = load("sshd");
    let hits = injection_proof(
        &f,
        &[
            ("Failed password for {} from 192.0.2.77 port 22 ssh2", "192.0.2.77"),
            ("Failed password for invalid user {} from 192.0.2.77 port 22 ssh2", "192.0.2.77"),
            (
                "Failed publickey for {} from 192.0.2.77 port 22 ssh2: RSA SHA256:abc",
                "192.0.2.77",
            ),
            ("Invalid user {} from 192.0.2.77 port 22", "192.0.2.77"),
            ("Invalid user {} from 2001:db8::77 port 22", "2001:db8::77"),
            (
                "error: maximum authentication attempts exceeded for invalid user {} from 192.0.2.77 port 22 ssh2 [preauth]",
                "192.0.2.77",
            ),
            (
                "Connection closed by invalid user {} 192.0.2.77 port 22 [preauth]",
                "192.0.2.77",
            ),
            (
                "Disconnected from authenticating user {} 192.0.2.77 port 22 [preauth]",
                "192.0.2.77",
            ),
            (
                "User {} from 192.0.2.77 not allowed because listed in DenyUsers",
                "192.0.2.77",
            ),
            (
                "Unable to negotiate with 192.0.2.77 port 22: no matching cipher found. Their offer: {} [preauth]",
                "192.0.2.77",
            ),
            (
                "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.77  user={}",
                "192.0.2.77",
            ),
        ],
    );
    assert!(hits > 100, "too few injected lines still matched: {hits}");
}

// ------------------------------------------------------------------------------- sendmail-auth

#[test]
fn sendmail_auth_real_failures() {
    let f = load("sendmail-auth");
    let a = "203.0.113.9";
    for prefix in ["", "s07EriLI028424: "] {
        for relay in [
            "relay=[203.0.113.9]",
            "relay=host.example [203.0.113.9]",
            "relay=host.example [203.0.113.9] (may be forged)",
            "relay=root@host.example [203.0.113.9]",
        ] {
            for body in [
                "AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed",
                "AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: Password verification failed",
                "AUTH failure (CRAM-MD5): user not found (-20) SASL(-13): user not found: unable to canonify user and get auxprops",
                "AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user=bob",
            ] {
                fails(&f, &format!("{prefix}{body}, {relay}"), a, None);
            }
        }
    }
    fails(
        &f,
        "s07EriLI028424: AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: Password verification failed, relay=[IPv6:2001:db8::9]",
        "2001:db8::9",
        None,
    );
    fails(
        &f,
        "AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, relay=mail.example [IPv6:2001:db8::9] (may be forged)",
        "2001:db8::9",
        None,
    );
    fails(
        &f,
        "u0CB32qX026592: [203.0.113.9]: possible SMTP attack: command=AUTH, count=5",
        a,
        None,
    );
    fails(
        &f,
        "u0CB32qX026592: host.example [203.0.113.9] (may be forged): possible SMTP attack: command=AUTH, count=5",
        a,
        None,
    );
}

#[test]
fn sendmail_auth_non_failures() {
    let f = load("sendmail-auth");
    for line in [
        "s07EriLI028424: AUTH=server, relay=host.example [198.51.100.2], authid=bob, mech=PLAIN, bits=0",
        "s07EriLI028424: from=<bob@example.com>, size=1234, class=0, nrcpts=1, msgid=<x@y>, proto=ESMTPA, daemon=MTA, relay=host.example [198.51.100.2]",
        "s07EriLI028424: host.example [198.51.100.2]: possible SMTP attack: command=RCPT, count=15",
        "STARTTLS=server, relay=host.example [198.51.100.2], version=TLSv1.3, verify=NO, cipher=TLS_AES_256_GCM_SHA384, bits=256/256",
        "AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, relay=host.example",
    ] {
        misses(&f, line);
    }
}

#[test]
fn sendmail_auth_injection_never_bans_another_address() {
    let f = load("sendmail-auth");
    let hits = injection_proof(
        &f,
        &[
            (
                "s07EriLI028424: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user={}, relay=[203.0.113.9]",
                "203.0.113.9",
            ),
            (
                "AUTH failure (PLAIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user={}, relay=host.example [203.0.113.9] (may be forged)",
                "203.0.113.9",
            ),
            (
                "AUTH failure (PLAIN): authentication failure (-13) SASL(-13): {}, relay=[IPv6:2001:db8::9]",
                "2001:db8::9",
            ),
        ],
    );
    assert!(hits > 50, "too few injected lines still matched: {hits}");
}

// -------------------------------------------------------------------------------- postfix-sasl

#[test]
fn postfix_sasl_real_failures() {
    let f = load("postfix-sasl");
    for (line, addr) in [
        ("warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: authentication failure", "203.0.113.7"),
        ("warning: mail.example.com[203.0.113.7]: SASL PLAIN authentication failed:", "203.0.113.7"),
        ("warning: mail.example.com[203.0.113.7]: SASL PLAIN authentication failed", "203.0.113.7"),
        ("warning: unknown[2001:db8::7]: SASL LOGIN authentication failed: UGFzc3dvcmQ6", "2001:db8::7"),
        ("warning: unknown[203.0.113.7]: SASL CRAM-MD5 authentication failed: authentication failure", "203.0.113.7"),
        (
            "warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: authentication failure, sasl_username=bob@example.com",
            "203.0.113.7",
        ),
        ("warning: unknown[203.0.113.7]:54321: SASL LOGIN authentication failed: authentication failure", "203.0.113.7"),
    ] {
        fails(&f, line, addr, None);
    }
}

#[test]
fn postfix_sasl_non_failures() {
    let f = load("postfix-sasl");
    for line in [
        "connect from unknown[203.0.113.7]",
        "disconnect from unknown[203.0.113.7] ehlo=1 auth=0/1 quit=1 commands=2/3",
        "lost connection after AUTH from unknown[203.0.113.7]",
        "warning: hostname host.example does not resolve to address 203.0.113.7: Name or service not known",
        "NOQUEUE: reject: RCPT from unknown[203.0.113.7]: 554 5.7.1 <x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<h>",
        "5E6A1234: client=unknown[203.0.113.7], sasl_method=PLAIN, sasl_username=bob",
    ] {
        misses(&f, line);
    }
}

#[test]
fn postfix_sasl_injection_never_bans_another_address() {
    let f = load("postfix-sasl");
    let hits = injection_proof(
        &f,
        &[
            (
                "warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: authentication failure, sasl_username={}",
                "203.0.113.7",
            ),
            ("warning: unknown[203.0.113.7]: SASL LOGIN authentication failed: {}", "203.0.113.7"),
        ],
    );
    assert!(hits > 50, "too few injected lines still matched: {hits}");
    // the client name cannot hold brackets
    misses(&f, "warning: x[6.6.6.6]y[203.0.113.7]: SASL LOGIN authentication failed: authentication failure");
}

// ------------------------------------------------------------------------------------- dovecot

#[test]
fn dovecot_real_failures() {
    let f = load("dovecot");
    let a = "203.0.113.8";
    for (line, user) in [
        (
            "auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=203.0.113.8",
            "bob",
        ),
        (
            "pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=bob rhost=203.0.113.8  user=bob",
            "bob",
        ),
        (
            "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, TLS, session=<abc>",
            "bob",
        ),
        (
            "pop3-login: Aborted login (auth failed, 3 attempts in 12 secs): user=<x>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, session=<Zx8Yb3JKn5LLqwAB>",
            "x",
        ),
        (
            "imap-login: Login aborted: Connection closed (auth failed, 1 attempts in 2 secs) (auth_failed): user=<bob>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, TLS, session=<x>",
            "bob",
        ),
        (
            "imap-login: Disconnected: Connection closed (auth failed, 2 attempts in 9 secs): user=<bob@example.com>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, TLS, session=<x>",
            "bob@example.com",
        ),
        (
            "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1",
            "",
        ),
        ("auth-worker(123): pam(bob,203.0.113.8,<sess>): unknown user", "bob"),
        (
            "auth-worker(123): pam(bob,203.0.113.8,<sess>): pam_authenticate() failed: Authentication failure (password mismatch?)",
            "bob",
        ),
        ("auth: passwd-file(bob,203.0.113.8): unknown user", "bob"),
        ("passwd-file(bob,203.0.113.8): unknown user", "bob"),
        ("auth: passwd-file(bob,203.0.113.8,<Abc+/12>): Password mismatch", "bob"),
        (
            "auth: sql(bob@example.com,203.0.113.8,<Abc>): Password mismatch (SHA1 of given password: 7c4a8d09)",
            "bob@example.com",
        ),
        (
            "auth-worker(4321): conn unix:auth-worker (pid=4310,uid=97): auth-worker<1>: pam(bob,203.0.113.8,<x>): unknown user",
            "bob",
        ),
    ] {
        fails(&f, line, a, Some(user));
    }
    fails(
        &f,
        "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<bob>, method=PLAIN, rip=2001:db8::8, lip=2001:db8::1, TLS, session=<x>",
        "2001:db8::8",
        Some("bob"),
    );
    fails(
        &f,
        "auth: passwd-file(bob,2001:db8::8): unknown user",
        "2001:db8::8",
        Some("bob"),
    );
    fails(
        &f,
        "pop3-login: Aborted login (tried to use disallowed plaintext auth): user=<>, rip=203.0.113.8, lip=192.0.2.1, session=<x>",
        a,
        None,
    );
}

#[test]
fn dovecot_non_failures() {
    let f = load("dovecot");
    for line in [
        "imap-login: Login: user=<bob>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, mpid=1234, TLS, session=<x>",
        "Login: user=<bob>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1",
        "imap-login: Disconnected (no auth attempts in 0 secs): user=<>, rip=203.0.113.8, lip=192.0.2.1, session=<x>",
        "imap-login: Disconnected: Connection closed (no auth attempts in 1 secs): user=<>, rip=203.0.113.8, lip=192.0.2.1, TLS handshaking: SSL_accept() failed",
        "imap(bob)<123><x>: Disconnected: Logged out in=10 out=20",
        "auth: passwd-file(bob,203.0.113.8): Password mismatch (given password: hunter2)",
        "pam_unix(dovecot:session): session opened for user bob",
    ] {
        misses(&f, line);
    }
}

#[test]
fn dovecot_injection_never_bans_another_address() {
    let f = load("dovecot");
    let hits = injection_proof(
        &f,
        &[
            (
                "imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<{}>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, TLS, session=<abc>",
                "203.0.113.8",
            ),
            (
                "imap-login: Login aborted: Connection closed (auth failed, 1 attempts in 2 secs) (auth_failed): user=<{}>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1, TLS, session=<x>",
                "203.0.113.8",
            ),
            (
                "pop3-login: Aborted login (auth failed, 3 attempts in 12 secs): user=<{}>, rip=203.0.113.8",
                "203.0.113.8",
            ),
            ("auth-worker(123): pam({},203.0.113.8,<sess>): unknown user", "203.0.113.8"),
            ("auth: passwd-file({},203.0.113.8): unknown user", "203.0.113.8"),
            (
                "auth: passwd-file({},203.0.113.8): Password mismatch (SHA1 of given password: 7c4a8d09)",
                "203.0.113.8",
            ),
            (
                "auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser={} rhost=203.0.113.8",
                "203.0.113.8",
            ),
            (
                "auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser={} rhost=203.0.113.8  user=bob",
                "203.0.113.8",
            ),
        ],
    );
    assert!(hits > 100, "too few injected lines still matched: {hits}");
    // a plaintext password logged after the address (auth_verbose_passwords=plain)
    for password in [
        "x) y(z,6.6.6.6): unknown user",
        "x) y(z,6.6.6.6,<s>): unknown user (SHA1 of given password: ab",
    ] {
        real_or_nothing(
            &f,
            &format!("auth: passwd-file(bob,203.0.113.8): Password mismatch (given password: {password})"),
            "203.0.113.8",
        );
    }
    // a successful login whose user name looks like a failure
    misses(
        &f,
        "imap-login: Login: user=<x (auth failed, 1 attempts in 2 secs): user=<y>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1>, method=PLAIN, rip=203.0.113.8, lip=192.0.2.1",
    );
}

// ----------------------------------------------------------------------------- nginx-http-auth

#[test]
fn nginx_http_auth_real_failures() {
    let f = load("nginx-http-auth");
    let a = "203.0.113.4";
    for prefix in ["2026/11/29 18:52:53 [error] 1234#1234: *5 ", "*5 ", ""] {
        fails(
            &f,
            &format!("{prefix}user \"bob\": password mismatch, client: 203.0.113.4, server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\""),
            a,
            Some("bob"),
        );
        fails(
            &f,
            &format!("{prefix}user \"bob\" was not found in \"/etc/nginx/.htpasswd\", client: 203.0.113.4, server: example.com, request: \"GET /admin HTTP/1.1\", host: \"example.com\", referrer: \"https://example.com/\""),
            a,
            Some("bob"),
        );
    }
    fails(
        &f,
        "2026/11/29 18:52:53 [error] 1234#1234: *5 user \"bob\": password mismatch, client: 2001:db8::4, server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\"",
        "2001:db8::4",
        Some("bob"),
    );
    fails(
        &f,
        "user \"\": password mismatch, client: 203.0.113.4, server: , request: \"GET / HTTP/1.1\", host: \"x\"",
        a,
        Some(""),
    );
}

#[test]
fn nginx_http_auth_non_failures() {
    let f = load("nginx-http-auth");
    for line in [
        "2026/11/29 18:52:53 [error] 1234#1234: *5 no user/password was provided for basic authentication, client: 203.0.113.4, server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\"",
        "no user/password was provided for basic authentication, client: 203.0.113.4, server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\"",
        "2026/11/29 18:52:53 [error] 1234#1234: *5 open() \"/var/www/favicon.ico\" failed (2: No such file or directory), client: 203.0.113.4, server: example.com, request: \"GET /favicon.ico HTTP/1.1\", host: \"example.com\"",
        "2026/11/29 18:52:53 [notice] 1234#1234: signal process started",
    ] {
        misses(&f, line);
    }
}

#[test]
fn nginx_http_auth_injection_never_bans_another_address() {
    let f = load("nginx-http-auth");
    // the fake field sits inside the user name, before the real one ...
    assert!(!matches!(
        f.check("user \"x\", client: 6.6.6.6, server: y\": password mismatch, client: 203.0.113.4, server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\""),
        Verdict::Failure(m) if m.ip == ip(EVIL4)
    ));
    // ... or in the referrer, after it: "last client:" would be as wrong as "first client:"
    fails(
        &f,
        "user \"bob\": password mismatch, client: 203.0.113.4, server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\", referrer: \"\": password mismatch, client: 6.6.6.6, server: y, request: \"GET / HTTP/1.1\", host: \"y\"",
        "203.0.113.4",
        Some("bob"),
    );
    // nginx ends the user name at the first ':' of the credentials, so it never holds one
    let colon_free: Vec<String> = payloads()
        .into_iter()
        .filter(|p| !p.contains(':'))
        .collect();
    assert!(colon_free.len() > 20);
    let mut hits = injection_proof_with(
        &f,
        &[
            (
                "2026/11/29 18:52:53 [error] 1234#1234: *5 user \"{}\": password mismatch, client: 203.0.113.4, server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\"",
                "203.0.113.4",
            ),
            (
                "user \"{}\" was not found in \"/etc/nginx/.htpasswd\", client: 203.0.113.4, server: example.com, request: \"GET / HTTP/1.1\", host: \"example.com\"",
                "203.0.113.4",
            ),
        ],
        &colon_free,
    );
    // request, host and referrer come after the address: anything goes there
    hits += injection_proof(
        &f,
        &[
            (
                "user \"bob\": password mismatch, client: 203.0.113.4, server: example.com, request: \"GET /{} HTTP/1.1\", host: \"{}\", referrer: \"{}\"",
                "203.0.113.4",
            ),
            (
                "user \"bob\" was not found in \"/etc/nginx/.htpasswd\", client: 203.0.113.4, server: example.com, request: \"GET / HTTP/1.1\", host: \"x\", referrer: \"{}\"",
                "203.0.113.4",
            ),
        ],
    );
    assert!(hits > 50, "too few injected lines still matched: {hits}");
}
