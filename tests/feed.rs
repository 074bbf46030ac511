//! The ban feed on the metrics listener, read with curl as a router script would: `/bans` one
//! target per line, `/bans.json`, `?jail=` filters, a bearer token when configured, and 100,000
//! bans streamed in chunks.

use std::fmt::Write as _;
use std::process::Command;

use crate::support::{config, tool, Daemon};

fn jails() -> String {
    r#"
[jails.sshd]
programs = ["sshd"]
failregex = ['^Failed password for \S+ from <HOST> port \d+ ssh2$']
bantime = "1h"

[jails.web]
programs = ["nginx"]
failregex = ['^denied <HOST>$']
bantime = "permanent"
"#
    .into()
}

/// `curl -sS -i` of `path`, with extra arguments: (status code, headers, body).
fn curl(d: &Daemon, path: &str, extra: &[&str]) -> (u16, String, String) {
    let url = format!("http://{}{path}", d.metrics);
    let out = Command::new(tool("curl", "curl"))
        .args(["-sS", "-i", "--max-time", "30"])
        .args(extra)
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {url}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
}

fn lines(body: &str) -> Vec<&str> {
    let mut all: Vec<&str> = body.lines().collect();
    all.sort();
    all
}

#[test]
fn bans_are_fed_as_text_and_json_filtered_by_jail() {
    let d = Daemon::start(&config("", &jails()));
    let (code, head, body) = curl(&d, "/bans", &[]);
    assert_eq!((code, body.as_str()), (200, ""), "{head}");
    let (_, _, body) = curl(&d, "/bans.json", &[]);
    assert_eq!(body, "[]\n");

    d.cli_ok(&["ban", "sshd", "192.0.2.1"]);
    d.cli_ok(&["ban", "sshd", "2001:db8::/48"]);
    d.cli_ok(&["ban", "web", "198.51.100.0/24"]);
    let (code, head, body) = curl(&d, "/bans", &[]);
    assert_eq!(code, 200);
    assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert_eq!(
        lines(&body),
        ["192.0.2.1", "198.51.100.0/24", "2001:db8::/48"]
    );
    let (_, _, body) = curl(&d, "/bans?jail=web", &[]);
    assert_eq!(body, "198.51.100.0/24\n");

    let (_, head, body) = curl(&d, "/bans.json?jail=sshd", &[]);
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let bans = json.as_array().unwrap();
    assert_eq!(bans.len(), 2, "{body}");
    assert!(bans.iter().all(|b| b["jail"] == "sshd"));
    assert!(bans.iter().any(|b| b["ip"] == "2001:db8::/48"));
    assert!(bans[0]["expires_at"].as_str().is_some() && bans[0]["ban_count"] == 1);

    let (code, _, body) = curl(&d, "/bans?jail=nope", &[]);
    assert_eq!(code, 404);
    assert!(body.contains("no jail `nope`"), "{body}");
    // /metrics is served as before, and other paths are not found.
    assert_eq!(curl(&d, "/metrics", &[]).0, 200);
    assert_eq!(curl(&d, "/bansx", &[]).0, 404);
    assert!(d.stop().success());
}

#[test]
fn a_token_guards_the_feed_and_100000_bans_stream() {
    let text =
        config("", &jails()).replace("[metrics]", "[metrics]\nbans_token = \"s3cret-token\"");
    let d = Daemon::start(&text);
    let (code, head, _) = curl(&d, "/bans", &[]);
    assert_eq!(code, 401, "{head}");
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    let wrong = ["-H", "Authorization: Bearer s3cret-tokem"];
    assert_eq!(curl(&d, "/bans.json", &wrong).0, 401);
    // The token guards the feed only: Prometheus scrapes without it.
    assert_eq!(curl(&d, "/metrics", &[]).0, 200);

    let mut list = String::new();
    for i in 0..100_000u32 {
        writeln!(list, "10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list");
    std::fs::write(&path, &list).unwrap();
    d.cli_ok(&["ban", "sshd", "--file", path.to_str().unwrap()]);

    let auth = ["-H", "Authorization: Bearer s3cret-token"];
    let (code, head, body) = curl(&d, "/bans?jail=sshd", &auth);
    assert_eq!(code, 200, "{head}");
    let mut got: Vec<&str> = body.lines().collect();
    let mut want: Vec<&str> = list.lines().collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got.len(), 100_000);
    assert!(got == want, "the feed differs from the list");
    let (_, _, json) = curl(&d, "/bans.json", &auth);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 100_000);
    assert!(d.stop().success());
}

/// One raw GET of `path` as HTTP/`version` (`1.0` or `1.1`), read until the server closes:
/// (head, body as sent).
fn raw_get(d: &Daemon, path: &str, version: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(d.metrics).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "GET {path} HTTP/{version}\r\nHost: feed\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(all[..at].to_vec()).unwrap();
    (head, all[at + 4..].to_vec())
}

/// The body of a chunked answer: its chunks joined, checking every size line, and that the
/// empty chunk ends it, once, with nothing after it.
fn dechunk(mut body: &[u8]) -> String {
    let mut out = Vec::new();
    loop {
        let line = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&body[..line]).unwrap(), 16).unwrap();
        body = &body[line + 2..];
        if size == 0 {
            assert_eq!(body, b"\r\n", "the last chunk ends the body");
            return String::from_utf8(out).unwrap();
        }
        out.extend_from_slice(&body[..size]);
        assert_eq!(&body[size..size + 2], b"\r\n");
        body = &body[size + 2..];
    }
}

/// HTTP/1.0 has no chunked encoding: a 1.0 request gets the feed as a body the connection's
/// close ends (no Transfer-Encoding, Connection: close), 1.1 gets it chunked; the same bans
/// either way, over more than one page (1,000 bans) and with none.
#[test]
fn an_http_1_0_client_gets_the_feed_unchunked() {
    let d = Daemon::start(&config("", &jails()));
    for version in ["1.0", "1.1"] {
        let (head, body) = raw_get(&d, "/bans", version);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: close"), "{head}");
        if version == "1.0" {
            assert!(!head.contains("Transfer-Encoding"), "{head}");
            assert_eq!(body, b"");
        } else {
            assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{head}");
            assert_eq!(dechunk(&body), "");
        }
    }

    let mut list = String::new();
    for i in 0..2_500u32 {
        writeln!(list, "10.0.{}.{}", i >> 8, i & 255).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list");
    std::fs::write(&path, &list).unwrap();
    d.cli_ok(&["ban", "sshd", "--file", path.to_str().unwrap()]);
    d.cli_ok(&["ban", "web", "198.51.100.0/24"]);
    let mut want: Vec<&str> = list.lines().chain(["198.51.100.0/24"]).collect();
    want.sort_unstable();

    let (head, old) = raw_get(&d, "/bans", "1.0");
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    assert!(head.contains("\r\nConnection: close"), "{head}");
    let old = String::from_utf8(old).unwrap();
    let (head, new) = raw_get(&d, "/bans", "1.1");
    assert!(head.contains("\r\nTransfer-Encoding: chunked"), "{head}");
    let new = dechunk(&new);
    assert_eq!(old, new, "both versions get the same feed");
    let mut got: Vec<&str> = old.lines().collect();
    got.sort_unstable();
    assert!(got == want, "the feed differs from the bans");

    let (head, json) = raw_get(&d, "/bans.json?jail=web", "1.0");
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    let (_, json) = raw_get(&d, "/bans.json", "1.1");
    let json: serde_json::Value = serde_json::from_str(&dechunk(&json)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2_501);
    assert!(d.stop().success());
}
