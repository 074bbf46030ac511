//! fail2ban's own filters on a running daemon: real `logger` messages over UDP and TCP, matched
//! by /etc/fail2ban/filter.d/*.conf (sshd including its multi-line forms, postfix), banned.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{config, logger, wait_for, Daemon};

/// A jail on fail2ban's filter `filter` (aggressive mode) for `program`'s messages.
fn fail2ban_jail(filter: &str, program: &str) -> String {
    format!(
        r#"
[jails.{filter}]
programs = ["{program}"]
filter = "{filter}"
filter_dirs = ["/etc/fail2ban/filter.d"]
filter_options = {{ mode = "aggressive" }}
maxretry = 2
bantime = "1h"
"#
    )
}

/// Sends `lines` through one `logger` over one TCP connection, so they arrive in order, all
/// with the same program and pid (what sshd's multi-line failure id is made of).
fn logger_lines(tcp_port: u16, tag: &str, pid: u32, lines: &[&str]) {
    let mut child = Command::new("logger")
        .args(["-n", "127.0.0.1", "-P", &tcp_port.to_string(), "-T"])
        .args(["-t", tag, &format!("--id={pid}")])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run logger (apt-get install bsdutils)");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write to logger");
    }
    drop(stdin);
    assert!(child.wait().expect("logger").success());
}

fn wait_ban(d: &Daemon, jail: &str, ip: &str) {
    let line = format!("[{jail}] Ban {ip}");
    assert!(
        wait_for(Duration::from_secs(10), || d.logged(&line)),
        "no `{line}`: {:#?}",
        d.logs.lock().unwrap()
    );
}

#[test]
fn fail2ban_filters_ban_from_live_logger_messages() {
    assert!(
        std::path::Path::new("/etc/fail2ban/filter.d/sshd.conf").is_file(),
        "fail2ban's filters are missing: install the fail2ban package (scripts/test does)"
    );
    let jails = fail2ban_jail("sshd", "sshd") + &fail2ban_jail("postfix", "postfix/smtpd");
    let d = Daemon::start(&config("", &jails));
    let (udp, tcp) = (d.udp.port().to_string(), d.tcp.port().to_string());

    // One line, one failure: over TCP and over UDP, as sshd writes it.
    for transport in [["-T", "-P", &tcp], ["-d", "-P", &udp]] {
        let mut args = vec!["-n", "127.0.0.1", "-t", "sshd", "-i"];
        args.extend_from_slice(&transport);
        args.push("Failed password for root from 192.0.2.5 port 22 ssh2");
        logger(&[], &args);
    }
    wait_ban(&d, "sshd", "192.0.2.5");

    // Lines sent in order as `program[pid]`, then the jail bans the address, one case after
    // the other.
    let cases: [(&str, u32, &[&str], &str, &str); 3] = [
        // Multi-line: the address is only on the connection line; the failures after it carry
        // the same sshd[pid] (fail2ban's <F-MLFID>), so they are counted against that address.
        (
            "sshd",
            22440,
            &[
                "Connection from 192.0.2.6 port 39678 on 192.168.1.9 port 22",
                "fatal: Unable to negotiate a key exchange method [preauth]",
                "fatal: Unable to negotiate a key exchange method [preauth]",
            ],
            "sshd",
            "192.0.2.6",
        ),
        // aggressive mode: a connection closed before authentication completed is a failure.
        (
            "sshd",
            22441,
            &[
                "Connection closed by authenticating user root 192.0.2.7 port 50412 [preauth]",
                "Connection closed by authenticating user admin 192.0.2.7 port 50413 [preauth]",
            ],
            "sshd",
            "192.0.2.7",
        ),
        // postfix: an RBL reject and a SASL failure (aggressive mode has both).
        (
            "postfix/smtpd",
            1574,
            &[
                "NOQUEUE: reject: RCPT from unknown[192.0.2.20]: 554 5.7.1 Service unavailable; Client host [192.0.2.20] blocked using rbl.example.com; from=<spammer@example.com> to=<goodguy@example.com> proto=ESMTP helo=<badguy.example.com>",
                "warning: unknown[192.0.2.20]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
            ],
            "postfix",
            "192.0.2.20",
        ),
    ];
    for (program, pid, lines, jail, ip) in cases {
        logger_lines(d.tcp.port(), program, pid, lines);
        wait_ban(&d, jail, ip);
    }

    d.wait_metric("jailsink_bans_total{jail=\"sshd\"}", 3.0);
    d.wait_metric("jailsink_bans_total{jail=\"postfix\"}", 1.0);
    d.wait_metric("jailsink_failures_total{jail=\"sshd\"}", 6.0);
    // Only sshd's messages reach the sshd jail, only postfix's the postfix jail.
    d.wait_metric("jailsink_failures_total{jail=\"postfix\"}", 2.0);
    assert!(d.stop().success());
}
