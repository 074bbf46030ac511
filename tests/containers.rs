//! Containers: Docker publishes a port with DNAT, so its traffic is forwarded and never crosses
//! INPUT. In namespaces (a "docker host" with a bridge and a DNAT-published port, a "container"
//! behind it, an attacker outside), a ban through nftables `hooks = ["input", "forward"]` or
//! iptables/ipset `chains = ["INPUT", "DOCKER-USER"]` stops the banned address from reaching the
//! container while another address still does, and an unban lets it back.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::lab::{Lab, Netns, SERVER_V4};
use crate::manual::reaches_from;
use crate::support::{config, wait_for, Daemon};

/// The published port on the host, and the container's own port behind the DNAT.
const PUBLISHED: u16 = 8080;
const CONTAINER_PORT: u16 = 80;
const CONTAINER_IP: &str = "172.31.0.2";
/// A second attacker address that is never banned.
const BYSTANDER: &str = "192.0.2.3";

/// Wires the container behind the lab's server: bridge `br0` (172.31.0.1/24), a veth into the
/// container namespace (172.31.0.2, default route via the bridge), forwarding on, and the DNAT
/// Docker would add for `-p 8080:80`. Returns the container's listening socket.
fn publish(lab: &Lab, container: &Netns) -> TcpListener {
    let host = &lab.server;
    host.run(&["ip", "link", "add", "br0", "type", "bridge"]);
    host.run(&["ip", "addr", "add", "172.31.0.1/24", "dev", "br0"]);
    host.run(&["ip", "link", "set", "br0", "up"]);
    host.run(&[
        "ip",
        "link",
        "add",
        "vc",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &container.name,
    ]);
    host.run(&["ip", "link", "set", "vc", "master", "br0", "up"]);
    container.run(&[
        "ip",
        "addr",
        "add",
        &format!("{CONTAINER_IP}/24"),
        "dev",
        "eth0",
    ]);
    container.run(&["ip", "link", "set", "eth0", "up"]);
    container.run(&["ip", "route", "add", "default", "via", "172.31.0.1"]);
    host.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    host.run(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "--dport",
        &PUBLISHED.to_string(),
        "-j",
        "DNAT",
        "--to-destination",
        &format!("{CONTAINER_IP}:{CONTAINER_PORT}"),
    ]);
    lab.attacker
        .run(&["ip", "addr", "add", &format!("{BYSTANDER}/24"), "dev", "va"]);
    // A socket keeps the namespace it was made in; the accept thread may run anywhere.
    let listener = container.within(|| {
        TcpListener::bind((CONTAINER_IP, CONTAINER_PORT)).expect("bind in the container")
    });
    let accepting = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        while let Ok((stream, _)) = accepting.accept() {
            drop(stream);
        }
    });
    listener
}

fn guards_the_container(action: &str, tag: &str, docker_user: bool) {
    let lab = Lab::new(tag);
    let container = Netns::new(&format!("{tag}c"));
    let _listener = publish(&lab, &container);
    let published = SocketAddr::new(SERVER_V4.parse().unwrap(), PUBLISHED);
    let attacker = crate::lab::ATTACKER_V4;
    for source in [attacker, BYSTANDER] {
        assert!(
            wait_for(Duration::from_secs(5), || reaches_from(
                &lab.attacker,
                source,
                published
            )),
            "{tag}: {source} cannot reach the published port before any ban"
        );
    }
    let jail = format!(
        r#"
[jails.web]
programs = ["nginx"]
failregex = ['^denied <HOST>$']
bantime = "1h"
port = {PUBLISHED}
action = {action}
"#
    );
    let d = Daemon::start_with(&config("", &jail), &lab.server.prefix());
    if docker_user {
        // jailsink made the chain (there is no Docker here); Docker jumps to it from FORWARD.
        let (exists, _, err) = lab.server.try_run(&["iptables", "-n", "-L", "DOCKER-USER"]);
        assert!(exists, "{tag}: DOCKER-USER was not created: {err}");
        lab.server
            .run(&["iptables", "-I", "FORWARD", "-j", "DOCKER-USER"]);
    }
    d.cli_ok(&["ban", "web", attacker]);
    let dropped = wait_for(Duration::from_secs(10), || {
        !reaches_from(&lab.attacker, attacker, published)
    });
    assert!(
        dropped,
        "{tag}: the banned attacker still reaches the container:\n{}\n{}",
        lab.server.run(&["nft", "list", "ruleset"]),
        lab.server.run(&["iptables-save"])
    );
    assert!(
        reaches_from(&lab.attacker, BYSTANDER, published),
        "{tag}: an address that is not banned lost the container"
    );
    d.cli_ok(&["unban", "web", attacker]);
    assert!(
        wait_for(Duration::from_secs(10), || reaches_from(
            &lab.attacker,
            attacker,
            published
        )),
        "{tag}: the unbanned attacker does not reach the container again"
    );
    let errors = d.errors();
    assert!(errors.is_empty(), "{tag}: {errors:#?}");
    assert!(d.stop().success());
    let left = lab.server.run(&["iptables-save"]) + &lab.server.run(&["nft", "list", "ruleset"]);
    assert!(
        !left.contains("jailsink"),
        "{tag}: left after stop:\n{left}"
    );
}

#[test]
fn nftables_with_the_forward_hook_guards_a_published_container_port() {
    guards_the_container(
        r#"{ type = "nftables", hooks = ["input", "forward"] }"#,
        "ctrn",
        false,
    );
}

#[test]
fn iptables_in_docker_user_guards_a_published_container_port() {
    guards_the_container(
        r#"{ type = "iptables", chains = ["INPUT", "DOCKER-USER"] }"#,
        "ctrt",
        true,
    );
}

#[test]
fn ipset_in_docker_user_guards_a_published_container_port() {
    guards_the_container(
        r#"{ type = "ipset", chains = ["INPUT", "DOCKER-USER"] }"#,
        "ctri",
        true,
    );
}

/// Why the hooks exist: with input alone, a ban that is in the kernel set does not stop the
/// forwarded traffic to the container.
#[test]
fn an_input_only_ban_misses_a_published_container_port() {
    let lab = Lab::new("ctro");
    let container = Netns::new("ctroc");
    let _listener = publish(&lab, &container);
    let published = SocketAddr::new(SERVER_V4.parse().unwrap(), PUBLISHED);
    let attacker = crate::lab::ATTACKER_V4;
    let jail = format!(
        "[jails.web]\nprograms = [\"nginx\"]\nfailregex = ['^denied <HOST>$']\nport = {PUBLISHED}\naction = \"nftables\"\n"
    );
    let d = Daemon::start_with(&config("", &jail), &lab.server.prefix());
    d.cli_ok(&["ban", "web", attacker]);
    let in_set = wait_for(Duration::from_secs(10), || {
        lab.server
            .try_run(&[
                "nft",
                "get",
                "element",
                "inet",
                "jailsink",
                "web-v4",
                "{ 192.0.2.2 }",
            ])
            .0
    });
    assert!(in_set, "the ban never reached the set");
    assert!(
        reaches_from(&lab.attacker, attacker, published),
        "an input-only ban stopped forwarded traffic: the container tests prove nothing"
    );
    assert!(d.stop().success());
}
