//! Network namespaces for firewall tests and the firewall bench: a "server" namespace and an
//! "attacker" namespace joined by a veth pair carrying documentation addresses (192.0.2.0/24,
//! 2001:db8::/64), a TCP service in the server, and connection probes from the attacker.
//! Sockets are made inside a namespace by a thread that first enters it with setns(2), so no
//! packet ever leaves the namespaces the lab created. Shared with benches/firewall/main.rs.

#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The server's addresses on the veth.
pub const SERVER_V4: &str = "192.0.2.1";
/// The server's IPv6 address on the veth.
pub const SERVER_V6: &str = "2001:db8::1";
/// The attacker's addresses on the veth.
pub const ATTACKER_V4: &str = "192.0.2.2";
/// The attacker's IPv6 address on the veth.
pub const ATTACKER_V6: &str = "2001:db8::2";

/// Fails, never skips, when not root: the suite must not pass by doing nothing.
pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test needs root (network namespaces and the firewall); run the suite as root"
    );
}

/// A network namespace removed on drop.
pub struct Netns {
    /// Its name.
    pub name: String,
}

impl Netns {
    /// Creates `jsk-<tag>-<pid>` with loopback up.
    pub fn new(tag: &str) -> Netns {
        require_root();
        let name = format!("jsk-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("cannot run `ip` (apt-get install iproute2)");
        assert!(
            status.success(),
            "ip netns add {name} failed: is this root with CAP_SYS_ADMIN?"
        );
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// `ip netns exec NAME` as a command prefix.
    pub fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Runs a command inside; returns stdout, panicking on failure.
    pub fn run(&self, argv: &[&str]) -> String {
        let out = self.try_run(argv);
        assert!(out.0, "{argv:?} in {}: {}", self.name, out.2);
        out.1
    }

    /// Runs a command inside: (success, stdout, stderr).
    pub fn try_run(&self, argv: &[&str]) -> (bool, String, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `f` on a new thread that has entered this namespace (sockets it makes, and
    /// processes and threads it starts, live here), and returns its result.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("thread inside the namespace panicked")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: setns(2) takes a descriptor we own for the duration of the call and a flag; it
    // changes only the calling thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Two namespaces joined by a veth pair, and a TCP service in the server one.
pub struct Lab {
    /// Where the daemon and the firewall run.
    pub server: Netns,
    /// Where the attacks come from.
    pub attacker: Netns,
    /// The service's port on both families.
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// Connections the service accepted.
    pub accepted: Arc<AtomicUsize>,
}

impl Lab {
    /// Creates the namespaces (`jsk-<tag>s-<pid>`, `jsk-<tag>a-<pid>`), the veth pair with
    /// 192.0.2.1 / 2001:db8::1 (server) and 192.0.2.2 / 2001:db8::2 (attacker), and starts
    /// the service on port 8022.
    pub fn new(tag: &str) -> Lab {
        let server = Netns::new(&format!("{tag}s"));
        let attacker = Netns::new(&format!("{tag}a"));
        // Made inside the server namespace, so parallel labs never clash on interface names.
        server.run(&[
            "ip",
            "link",
            "add",
            "vs",
            "type",
            "veth",
            "peer",
            "name",
            "va",
            "netns",
            &attacker.name,
        ]);
        for (ns, dev, v4, v6) in [
            (&server, "vs", SERVER_V4, SERVER_V6),
            (&attacker, "va", ATTACKER_V4, ATTACKER_V6),
        ] {
            ns.run(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.run(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.run(&["ip", "link", "set", dev, "up"]);
        }
        let port = 8022;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let path = format!("/run/netns/{}", server.name);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (flag, count) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            enter(&path);
            // [::] with IPV6_V6ONLY off takes both families. A blocking accept and a deep
            // backlog: a starved accept loop overflowed the default 128 and lost SYNs.
            let listener = (|| -> std::io::Result<TcpListener> {
                let socket = socket2::Socket::new(
                    socket2::Domain::IPV6,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.set_only_v6(false)?;
                socket.set_reuse_address(true)?;
                socket.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)).into())?;
                socket.listen(4096)?;
                Ok(socket.into())
            })()
            .expect("bind the service");
            let _ = ready_tx.send(());
            while !flag.load(Ordering::Relaxed) {
                if listener.accept().is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("service did not start");
        Lab {
            server,
            attacker,
            port,
            stop,
            accepted,
        }
    }

    /// The service's address on the family of `ip`.
    pub fn service(&self, v6: bool) -> SocketAddr {
        let ip: IpAddr = if v6 { SERVER_V6 } else { SERVER_V4 }
            .parse()
            .expect("literal");
        SocketAddr::new(ip, self.port)
    }

    /// Whether the attacker can open a TCP connection to the service (IPv4 or IPv6) within
    /// `timeout`: a DROP shows as a timeout, a REJECT as a refusal.
    pub fn reaches(&self, v6: bool, timeout: Duration) -> bool {
        let addr = self.service(v6);
        self.attacker.within(move || probe(addr, timeout).is_ok())
    }

    /// Opens and closes `n` connections from the attacker, one after another, in 10 rounds;
    /// the time per connection of the fastest round (the least disturbed by other load on the
    /// machine), or which connection failed and why.
    pub fn connect_time(&self, v6: bool, n: usize) -> Result<Duration, String> {
        let addr = self.service(v6);
        self.attacker.within(move || {
            let per_round = (n / 10).max(1);
            let mut best = Duration::MAX;
            for round in 0..10 {
                let started = Instant::now();
                for i in 0..per_round {
                    probe(addr, Duration::from_secs(1))
                        .map_err(|e| format!("connection {i} of round {round} to {addr}: {e}"))?;
                }
                best = best.min(started.elapsed() / per_round as u32);
            }
            Ok(best)
        })
    }
}

impl Lab {
    /// The TCP counters of both namespaces that explain a lost connection, for failure messages.
    pub fn tcp_counters(&self) -> String {
        let mut out = String::new();
        for ns in [&self.server, &self.attacker] {
            let (_, text, _) = ns.try_run(&["nstat", "-az"]);
            for line in text.lines().filter(|l| {
                [
                    "Listen",
                    "TW",
                    "Retrans",
                    "ReqQ",
                    "Syncookies",
                    "Drop",
                    "PAWS",
                ]
                .iter()
                .any(|k| l.contains(k))
                    && l.split_whitespace().nth(1).is_none_or(|v| v != "0")
            }) {
                out.push_str(&format!("{}: {line}\n", ns.name));
            }
        }
        out
    }
}

/// One connection, closed with a reset (SO_LINGER 0) so thousands of probes leave no
/// TIME_WAIT behind: piled-up TIME_WAIT sockets made the kernel drop a SYN now and then.
fn probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_linger(Some(Duration::ZERO))?;
    socket.connect_timeout(&addr.into(), timeout)
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocked accept so the service thread sees the flag and ends.
        let addr = self.service(false);
        self.server
            .within(move || probe(addr, Duration::from_millis(200)).is_ok());
    }
}
