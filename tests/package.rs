//! The Debian package end to end: scripts/package packs the binary under test, dpkg installs it,
//! the shipped config runs from /etc/jailsink (in a network namespace), and purge leaves nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::lab::require_root;
use crate::lab::Netns;
use crate::support::{binary, tool, wait_for};

/// The package name, as dpkg knows it.
const PACKAGE: &str = "jailsink";

/// Directories the package or the daemon create that dpkg does not list as the package's own.
const CREATED: [&str; 3] = ["/etc/jailsink", "/var/lib/jailsink", "/run/jailsink"];

/// What a systemd enablement would leave behind (only where systemd runs; purge removes it).
const SYSTEMD_LEFTOVERS: [&str; 3] = [
    "/etc/systemd/system/multi-user.target.wants/jailsink.service",
    "/etc/systemd/system/jailsink.service",
    "/var/lib/systemd/deb-systemd-helper-enabled/jailsink.service.dsh-also",
];

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs dpkg, waiting (bounded) while another dpkg or apt holds its lock: the suite may share
/// the machine with an apt-get install.
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let out = output(Command::new("dpkg").args(args));
        let locked = !out.status.success() && text(&out.stderr).contains("lock");
        if !locked || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// dpkg's status of the package ("install ok installed", ...); None when dpkg has no record.
fn dpkg_status() -> Option<String> {
    let out = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    let status = text(&out.stdout);
    (out.status.success() && !status.ends_with("not-installed")).then_some(status)
}

fn installed() -> bool {
    dpkg_status().is_some_and(|s| s == "install ok installed")
}

/// Purges the package if the test left any of it on the machine, whatever happened.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if dpkg_status().is_some() {
            let out = dpkg(&["--purge", PACKAGE]);
            if !out.status.success() {
                eprintln!("cleanup: dpkg --purge {PACKAGE}: {}", text(&out.stderr));
            }
        }
    }
}

/// The installed daemon in a namespace; killed on drop if the test did not stop it.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(output(Command::new("kill").args(["-TERM", &pid]))
            .status
            .success());
        let mut status = None;
        let stopped = wait_for(Duration::from_secs(45), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        assert!(
            stopped,
            "jailsink did not stop after SIGTERM: {}",
            self.log()
        );
        status.expect("exit status")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the installed CLI with the installed default config (no `-c`).
fn installed_cli(args: &[&str]) -> Output {
    output(Command::new("/usr/bin/jailsink").args(args))
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn debian_package_installs_runs_from_etc_and_purges_clean() {
    require_root();
    tool("dpkg", "dpkg");
    let cargo_deb = output(Command::new("sh").args(["-c", "command -v cargo-deb"]));
    assert!(
        cargo_deb.status.success(),
        "cargo-deb is missing: run scripts/test (it installs it), or cargo install cargo-deb --locked"
    );
    let analyze = tool("systemd-analyze", "systemd");
    // The test installs and purges the package: it must not take an administrator's with it.
    assert!(
        dpkg_status().is_none(),
        "a {PACKAGE} package is installed on this machine; remove it before running this test"
    );
    for dir in CREATED {
        assert!(
            !Path::new(dir).exists(),
            "{dir} exists on this machine; this test would delete it at purge"
        );
    }

    // Package the binary under test (no second build): scripts/package prints the .deb's path.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = output(
        Command::new(root.join("scripts/package"))
            .args(["--binary", binary()])
            .current_dir(root),
    );
    assert!(
        out.status.success(),
        "scripts/package: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let deb = text(&out.stdout)
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no .deb path in: {}", text(&out.stdout)));
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    let arch = text(&output(Command::new("dpkg").arg("--print-architecture")).stdout);
    assert!(
        name.starts_with(&format!("{PACKAGE}_{version}-"))
            && name.ends_with(&format!("_{}.deb", arch.trim())),
        "{name}"
    );

    // What the package will own, and which of those paths exist before it does.
    let contents = output(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(contents.status.success(), "{}", text(&contents.stderr));
    let before: BTreeMap<String, bool> = text(&contents.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let exists = Path::new(&p).exists();
            (p, exists)
        })
        .collect();

    let _purge = Purge;
    let out = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "dpkg -i: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(installed());

    // dpkg owns every path of the .deb; the config files are conffiles.
    let listed = dpkg(&["-L", PACKAGE]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let owned: Vec<String> = text(&listed.stdout).lines().map(String::from).collect();
    for path in before.keys() {
        assert!(owned.contains(path), "dpkg -L lacks {path}");
    }
    let conffiles = output(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    let conffiles = text(&conffiles.stdout);
    let mut shipped = vec!["/etc/jailsink/jailsink.toml".to_string()];
    for filter in files_under(&root.join("conf/filter.d")) {
        shipped.push(format!("/etc/jailsink/filter.d/{}", filter.display()));
    }
    for file in &shipped {
        assert!(
            conffiles.contains(&format!(" {file} ")),
            "{file} is not a conffile: {conffiles}"
        );
    }

    // The binary, its man pages, the unit, README and every example, byte for byte.
    let version_out = installed_cli(&["--version"]);
    assert_eq!(
        text(&version_out.stdout).trim(),
        format!("jailsink {version}")
    );
    for page in [
        "jailsink",
        "jailsink-status",
        "jailsink-regex",
        "jailsink-import-fail2ban",
    ] {
        let path = format!("/usr/share/man/man1/{page}.1.gz");
        assert!(owned.contains(&path), "no man page {path}");
        // man-db is not required: without `man`, the file list above is the check.
        if let Ok(found) = Command::new("man").args(["-w", page]).output() {
            assert_eq!(
                text(&found.stdout).trim(),
                path,
                "man -w {page}: {}",
                text(&found.stderr)
            );
        }
    }
    let man =
        output(Command::new("sh").args(["-c", "zcat /usr/share/man/man1/jailsink-status.1.gz"]));
    assert!(
        text(&man.stdout).contains("The jail to show"),
        "jailsink-status(1) lacks the clap help: {}",
        text(&man.stdout)
    );
    for file in files_under(&root.join("examples")) {
        let installed = Path::new("/usr/share/doc/jailsink/examples").join(&file);
        assert_eq!(
            std::fs::read(&installed).unwrap_or_else(|e| panic!("{}: {e}", installed.display())),
            std::fs::read(root.join("examples").join(&file)).unwrap(),
            "{}",
            installed.display()
        );
    }
    assert!(owned.contains(&"/usr/share/doc/jailsink/README.md".to_string()));
    let unit = std::fs::read_to_string("/lib/systemd/system/jailsink.service").unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/bin/jailsink -c /etc/jailsink/jailsink.toml run\n"),
        "{unit}"
    );
    let verify =
        output(Command::new(&analyze).args(["verify", "/lib/systemd/system/jailsink.service"]));
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );
    let state = std::fs::metadata("/var/lib/jailsink").expect("/var/lib/jailsink");
    assert!(state.is_dir());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&state.permissions()) & 0o777,
        0o750
    );

    // The shipped config compiles where the package put it, its filters found in /etc.
    let check = installed_cli(&["check", "-c", "/etc/jailsink/jailsink.toml"]);
    assert!(
        check.status.success(),
        "jailsink check: {}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    assert!(
        text(&check.stdout).contains("filter=/etc/jailsink/filter.d/sshd.toml"),
        "{}",
        text(&check.stdout)
    );

    // And runs: the default config path, the state in /var/lib/jailsink, the control socket in
    // /run/jailsink and iptables bans, inside a namespace of our own.
    let ns = Netns::new("pkg");
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("jailsink.log");
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "/usr/bin/jailsink",
            "--log-format",
            "json",
            "run",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the installed jailsink");
    let mut daemon = Running { child, log };
    let ready = wait_for(Duration::from_secs(30), || {
        daemon.log().contains("\"message\":\"ready\"")
            || matches!(daemon.child.try_wait(), Ok(Some(_)))
    });
    assert!(
        ready && matches!(daemon.child.try_wait(), Ok(None)),
        "the installed jailsink did not become ready: {}",
        daemon.log()
    );
    let status = installed_cli(&["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("smtp-auth, sshd"),
        "{}",
        text(&status.stdout)
    );
    let ban = installed_cli(&["ban", "sshd", "192.0.2.7"]);
    assert!(ban.status.success(), "{}", text(&ban.stderr));
    // The action applies the committed ban off the control path: wait for it, bounded.
    let applied = wait_for(Duration::from_secs(20), || {
        ns.run(&["iptables", "-S"]).contains("192.0.2.7")
    });
    assert!(
        applied,
        "no iptables rule for 192.0.2.7: {}",
        ns.run(&["iptables", "-S"])
    );
    assert!(Path::new("/var/lib/jailsink/state.db").is_file());
    assert!(Path::new("/run/jailsink/jailsink.sock").exists());
    let stopped = daemon.stop();
    assert!(stopped.success(), "jailsink run exited with {stopped}");

    // Purge: dpkg's files, the config directory, the state and the socket directory all go;
    // paths that existed before the install (/usr/bin, ...) stay.
    let out = dpkg(&["--purge", PACKAGE]);
    assert!(
        out.status.success(),
        "dpkg --purge: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for (path, existed) in &before {
        assert_eq!(
            Path::new(path).exists(),
            *existed,
            "{path}: {} after purge",
            if *existed { "gone" } else { "left behind" }
        );
    }
    for path in CREATED.iter().chain(SYSTEMD_LEFTOVERS.iter()) {
        assert!(!Path::new(path).exists(), "{path} left behind after purge");
    }
    assert_eq!(dpkg_status(), None, "dpkg still has a record of {PACKAGE}");
}
