//! A private redis-server for the fleet tests: its own port, its own directory, AOF on, RDB
//! snapshots off, optionally inside a network namespace; killed on drop. Never the host's
//! service. The port is picked free and the launch retried on a new one when another process
//! took it first (parallel tests), and the server is checked to be this one (its directory).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{free_port, tool, wait_for};

/// A running redis-server.
pub struct Redis {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
    /// Addresses it binds.
    bind: String,
    /// `ip netns exec NS` when it runs in a namespace.
    wrapper: Vec<String>,
    /// Extra server arguments (TLS) and the redis-cli arguments that go with them.
    extra: Vec<String>,
    cli_extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts redis-server on 127.0.0.1 (and `extra_bind`) on a free port, inside the
    /// namespace `wrapper` names (empty: here).
    pub fn start(extra_bind: &str, wrapper: &[&str]) -> Redis {
        Redis::start_with(extra_bind, wrapper, &[], &[])
    }

    /// As [`Redis::start`], with extra server arguments (e.g. TLS: `--port 0 --tls-port
    /// @PORT@`, `@PORT@` standing for the port picked) and the redis-cli arguments they need
    /// (`--tls --cacert ...`).
    pub fn start_with(
        extra_bind: &str,
        wrapper: &[&str],
        extra: &[&str],
        cli_extra: &[&str],
    ) -> Redis {
        tool("redis-server", "redis-server");
        let mut redis = Redis {
            child: None,
            port: 0,
            bind: format!("127.0.0.1 {extra_bind}").trim().to_string(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cli_extra: cli_extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        // Another test may bind the free port between the pick and redis-server's bind:
        // then it exits with "Address already in use" and a new port is tried.
        for _ in 0..10 {
            redis.port = free_port();
            if redis.launch() {
                return redis;
            }
        }
        panic!("redis-server found no free port: {}", redis.log());
    }

    /// Runs redis-server on `self.port` until it answers as this server; false when the port
    /// was taken by another process first.
    fn launch(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let _ = std::fs::remove_file(&log);
        let port = self.port.to_string();
        let mut argv = self.wrapper.clone();
        argv.extend(
            [
                "redis-server",
                "--port",
                &port,
                "--bind",
                &self.bind,
                "--dir",
                &self.dir.path().display().to_string(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--logfile",
                &self.dir.path().join("redis.log").display().to_string(),
            ]
            .map(String::from),
        );
        argv.extend(self.extra.iter().map(|a| a.replace("@PORT@", &port)));
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        self.child = Some(child);
        // Up when the server on the port is this one (its directory), or gone when it
        // could not bind.
        let dir = self.dir.path().display().to_string();
        let mut exited = false;
        let up = wait_for(Duration::from_secs(10), || {
            exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            exited
                || self
                    .try_cli(&["CONFIG", "GET", "dir"])
                    .is_some_and(|r| r.lines().any(|l| l.trim() == dir))
        });
        if exited && self.log().contains("Address already in use") {
            self.child = None;
            return false;
        }
        assert!(
            up && !exited,
            "redis-server did not answer as itself: {}",
            self.log()
        );
        true
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs redis-cli with `args`; None when the server does not answer.
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        let mut argv = self.wrapper.clone();
        argv.extend(["redis-cli", "-p", &self.port.to_string()].map(String::from));
        argv.extend(self.cli_extra.iter().cloned());
        argv.extend(args.iter().map(|s| s.to_string()));
        let out = Command::new(&argv[0]).args(&argv[1..]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// Runs redis-cli with `args`, which must succeed.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed: {}", self.log()))
    }

    /// Kills the server (SIGKILL: what the AOF holds is all that survives).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (clients are configured with it).
    pub fn restart(&mut self) {
        self.kill();
        let ok = wait_for(Duration::from_secs(10), || self.launch());
        assert!(ok, "port {} stays taken: {}", self.port, self.log());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
