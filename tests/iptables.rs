//! The iptables action for real, inside a network namespace the test creates: a banned address
//! appears in the jail's chain (iptables and ip6tables), leaves it at unban, and the chain and
//! its INPUT hook are gone after the daemon stops.

use std::time::Duration;

use crate::lab::Netns;
use crate::support::{config, log_tcp, wait_for, Daemon};

#[test]
fn iptables_bans_and_unbans_in_a_namespace_and_cleans_up_at_stop() {
    let ns = Netns::new("ipt");
    let jails = r#"
[jails.sshd]
programs = ["sshd"]
failregex = ['^Failed password for (?:invalid user )?\S+ from <HOST> port \d+(?: ssh2)?$']
maxretry = 2
bantime = "3s"
port = "ssh"
action = "iptables"

[jails.smtp]
programs = ["sendmail"]
failregex = ['relay=\[<HOST>\]$']
maxretry = 1
bantime = "1h"
action = { type = "iptables", name = "SMTP", port = ["smtp", 465], protocol = "tcp", blocktype = "REJECT" }
"#;
    let d = Daemon::start_with(&config("", jails), &ns.prefix());
    let hooks = ns.run(&["iptables-save", "-t", "filter"]);
    assert!(
        hooks.contains("-A INPUT -p tcp -m multiport --dports 22 -j jailsink-sshd"),
        "{hooks}"
    );
    assert!(
        hooks.contains("-A INPUT -p tcp -m multiport --dports 25,465 -j jailsink-SMTP"),
        "{hooks}"
    );
    let hooks6 = ns.run(&["ip6tables-save", "-t", "filter"]);
    assert!(hooks6.contains("-j jailsink-sshd"), "{hooks6}");

    for ip in ["192.0.2.50", "2001:db8::50"] {
        let msg = format!("Failed password for root from {ip} port 4242 ssh2");
        log_tcp(&ns.prefix(), &d, "sshd", &msg, 2);
    }
    log_tcp(
        &ns.prefix(),
        &d,
        "sendmail",
        "AUTH failure (LOGIN): relay=[198.51.100.60]",
        1,
    );
    let v4_rule = "-A jailsink-sshd -s 192.0.2.50/32 -j DROP";
    let v6_rule = "-A jailsink-sshd -s 2001:db8::50/128 -j DROP";
    let smtp_rule = "-A jailsink-SMTP -s 198.51.100.60/32 -j REJECT";
    let banned = wait_for(Duration::from_secs(10), || {
        let v4 = ns.run(&["iptables-save", "-t", "filter"]);
        let v6 = ns.run(&["ip6tables-save", "-t", "filter"]);
        v4.contains(v4_rule) && v4.contains(smtp_rule) && v6.contains(v6_rule)
    });
    assert!(
        banned,
        "rules missing:\n{}\n{}\n{:#?}",
        ns.run(&["iptables-save"]),
        ns.run(&["ip6tables-save"]),
        d.logs.lock().unwrap()
    );
    // bantime 3s: the sshd rules leave, the 1h SMTP ban stays.
    let lifted = wait_for(Duration::from_secs(15), || {
        let v4 = ns.run(&["iptables-save", "-t", "filter"]);
        let v6 = ns.run(&["ip6tables-save", "-t", "filter"]);
        !v4.contains(v4_rule) && !v6.contains(v6_rule)
    });
    assert!(
        lifted,
        "sshd bans were not lifted:\n{}",
        ns.run(&["iptables-save"])
    );
    assert!(ns
        .run(&["iptables-save", "-t", "filter"])
        .contains(smtp_rule));
    // The metrics port is inside the namespace; the log shows any action error.
    let errors = d.errors();
    assert!(errors.is_empty(), "{errors:#?}");

    assert!(d.stop().success());
    for tool in ["iptables-save", "ip6tables-save"] {
        let rules = ns.run(&[tool, "-t", "filter"]);
        assert!(
            !rules.contains("jailsink"),
            "{tool} still holds our rules after stop:\n{rules}"
        );
    }
}
