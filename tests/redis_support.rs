//! A private redis-server for the fleet tests: its own port, its own directory, AOF on, RDB
//! snapshots off, optionally inside a network namespace; killed on drop. Never the host's
//! service.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{tool, wait_for};

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
    /// Starts redis-server on 127.0.0.1:`port` (and `extra_bind`), inside the namespace
    /// `wrapper` names (empty: here).
    pub fn start(port: u16, extra_bind: &str, wrapper: &[&str]) -> Redis {
        Redis::start_with(port, extra_bind, wrapper, &[], &[])
    }

    /// As [`Redis::start`], with extra server arguments (e.g. TLS: `--port 0 --tls-port P`)
    /// and the redis-cli arguments they need (`--tls --cacert ...`).
    pub fn start_with(
        port: u16,
        extra_bind: &str,
        wrapper: &[&str],
        extra: &[&str],
        cli_extra: &[&str],
    ) -> Redis {
        tool("redis-server", "redis-server");
        let mut redis = Redis {
            child: None,
            port,
            bind: format!("127.0.0.1 {extra_bind}").trim().to_string(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cli_extra: cli_extra.iter().map(|s| s.to_string()).collect(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        redis.launch();
        redis
    }

    fn launch(&mut self) {
        let mut argv = self.wrapper.clone();
        argv.extend(
            [
                "redis-server",
                "--port",
                &self.port.to_string(),
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
        argv.extend(self.extra.iter().cloned());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        self.child = Some(child);
        let up = wait_for(Duration::from_secs(10), || {
            self.try_cli(&["PING"]).is_some_and(|r| r.trim() == "PONG")
        });
        assert!(up, "redis-server did not answer PING: {}", self.log());
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

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
