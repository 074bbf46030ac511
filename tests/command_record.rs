//! The command action's own record of what it ran, across real restarts: each ban's `ban` runs
//! once however often the daemon restarts (cleanly or by `kill -9`), `unban` gets the values the
//! ban ran with, and an unban the state committed but the crash cut short runs at the next start.
//! The commands are real (`sh -c` appending to a file); the crash moment is made deterministic by
//! a command that waits on a file the test removes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rusqlite::types::FromSql;

use crate::support::{binary, config, jail_toml, wait_for, Daemon, FAILED_ROOT};

/// Two jails whose command actions log each ban and unban (with `<failures>` and `<port>`) to
/// `@DIR@/cmd.log`; while `@DIR@/hold` exists, a command notes `held` in `@DIR@/held.log` and
/// waits for it to go, then fails without logging.
fn jails(port: &str) -> String {
    let step = |verb: &str| {
        format!(
            r#"["sh", "-c", "if [ -e @DIR@/hold ]; then echo held >> @DIR@/held.log; while [ -e @DIR@/hold ]; do sleep 0.05; done; exit 1; fi; echo {verb} <ip> <failures> <port> >> @DIR@/cmd.log"]"#
        )
    };
    let (ban, unban) = (step("ban"), step("unban"));
    let sshd = jail_toml(
        "sshd",
        "sshd",
        FAILED_ROOT,
        &format!(
            "maxretry = 2\nbantime = \"1h\"\nport = \"{port}\"\naction = {{ type = \"command\", ban = {ban}, unban = {unban} }}"
        ),
    );
    sshd + &format!(
        r#"
[jails.stopper]
programs = ["stopper"]
failregex = ['^x <HOST>$']
bantime = "1h"
port = "25"
action = {{ type = "command", ban = {ban}, unban = {unban}, stop = ["sh", "-c", "echo stop <jail> >> @DIR@/cmd.log"] }}
"#
    )
}

/// `all` (text of `jails`) with the sshd jail's action (its first) replaced by `new` of it.
fn with_sshd_action(all: &str, new: impl FnOnce(&str) -> String) -> String {
    let start = all.find("action = {").unwrap();
    let end = start + all[start..].find('\n').unwrap();
    let original = &all[start + "action = ".len()..end];
    format!("{}action = {}{}", &all[..start], new(original), &all[end..])
}

/// Starts the daemon on `jails` in a new directory, which it returns with it.
fn start(jails: &str) -> (Daemon, PathBuf) {
    let d = Daemon::start_in(tempfile::tempdir().unwrap(), jails, &[]);
    let dir = d.dir();
    (d, dir)
}

fn fail(d: &Daemon, ip: &str) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..2 {
        let line = format!(
            "<38>Nov 29 18:52:53 vm sshd[1]: Failed password for root from {ip} port 22 ssh2"
        );
        socket.send_to(line.as_bytes(), d.udp).unwrap();
    }
}

fn lines(dir: &Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn count(dir: &Path, line: &str) -> usize {
    lines(dir, "cmd.log").iter().filter(|l| *l == line).count()
}

/// Lines of `cmd.log` that start with `prefix`.
fn count_prefix(dir: &Path, prefix: &str) -> usize {
    lines(dir, "cmd.log")
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// `line` ran exactly `times` times, by cmd.log.
#[track_caller]
fn assert_ran(dir: &Path, line: &str, times: usize) {
    assert_eq!(count(dir, line), times, "{:?}", lines(dir, "cmd.log"));
}

/// Lines starting with `prefix` ran exactly `times` times, by cmd.log.
#[track_caller]
fn assert_ran_prefix(dir: &Path, prefix: &str, times: usize) {
    assert_eq!(
        count_prefix(dir, prefix),
        times,
        "{:?}",
        lines(dir, "cmd.log")
    );
}

fn wait_line(dir: &Path, line: &str, times: usize) {
    let ok = wait_for(Duration::from_secs(15), || count(dir, line) >= times);
    assert!(
        ok,
        "`{line}` x{times} never ran: {:?}",
        lines(dir, "cmd.log")
    );
}

#[test]
fn a_command_action_runs_each_ban_once_across_restarts_and_unbans_with_its_values() {
    let text = config("", &jails("22"));
    let (d, dir) = start(&text);
    fail(&d, "192.0.2.31");
    d.cli_ok(&["ban", "stopper", "192.0.2.32"]);
    wait_line(&dir, "ban 192.0.2.31 2 22", 1);
    wait_line(&dir, "ban 192.0.2.32 0 25", 1);

    // A clean restart: sshd (no stop template) keeps its ban and does not run it again; the
    // stopper's stop ran, so its ban runs again, as before the record.
    let (status, kept) = d.stop_keeping_dir();
    assert!(status.success());
    let d = Daemon::start_in(kept, &text, &[]);
    wait_line(&dir, "stop stopper", 1);
    wait_line(&dir, "ban 192.0.2.32 0 25", 2);
    // Readiness means every runner reconciled: nothing more runs for the restored bans.
    assert_ran(&dir, "ban 192.0.2.31 2 22", 1);

    // kill -9 (no stop at all), then a start with other ports: no ban runs again (with any
    // values: a re-run would show the new port), and the unban gets the failures and the port
    // the ban ran with.
    let kept = d.kill9();
    let d = Daemon::start_in(kept, &config("", &jails("2222")), &[]);
    assert_ran_prefix(&dir, "ban 192.0.2.31 ", 1);
    assert_ran_prefix(&dir, "ban 192.0.2.32 ", 2);
    d.cli_ok(&["unban", "sshd", "192.0.2.31"]);
    wait_line(&dir, "unban 192.0.2.31 2 22", 1);
    assert!(
        !lines(&dir, "cmd.log").iter().any(|l| l.contains(" 0 2222")),
        "{:?}",
        lines(&dir, "cmd.log")
    );
    fail(&d, "192.0.2.35");
    wait_line(&dir, "ban 192.0.2.35 2 2222", 1);

    // Other ban and unban templates: what the old ones hold is not theirs, so the new ban runs
    // for the active ban once, and only once across the next restart.
    let kept = d.kill9();
    let changed = config("", &jails("2222")).replace("echo ban", "echo reban");
    let d = Daemon::start_in(kept, &changed, &[]);
    assert_ran(&dir, "reban 192.0.2.35 2 2222", 1);
    let kept = d.kill9();
    let d = Daemon::start_in(kept, &changed, &[]);
    assert_ran(&dir, "reban 192.0.2.35 2 2222", 1);
    assert!(d.stop().success());
}

/// Waits for the `n`th held command, so a kill lands while it runs.
fn wait_held(dir: &Path, n: usize) {
    let ok = wait_for(Duration::from_secs(15), || {
        lines(dir, "held.log").len() >= n
    });
    assert!(ok, "no command held");
}

/// Removes the hold: the orphaned command (the killed daemon's) sees it gone and fails without
/// logging, whenever it does, so nothing waits for it.
fn release(dir: &Path) {
    std::fs::remove_file(dir.join("hold")).unwrap();
}

#[test]
fn a_command_cut_short_by_kill_9_is_run_again_at_the_next_start() {
    let text = config("", &jails("22"));
    let (d, dir) = start(&text);
    fail(&d, "192.0.2.33");
    wait_line(&dir, "ban 192.0.2.33 2 22", 1);

    // The unban is committed to the state, then its command is running when the daemon dies.
    let kept = unban_cut_short(d, &dir, "192.0.2.33");
    assert_eq!(count(&dir, "unban 192.0.2.33 2 22"), 0);
    // The state no longer holds the ban; the record says its unban may not have run: it runs.
    let d = Daemon::start_in(kept, &text, &[]);
    assert_ran(&dir, "unban 192.0.2.33 2 22", 1);

    // A ban whose command the crash cut short runs again (the ban is still restored).
    std::fs::write(dir.join("hold"), "").unwrap();
    fail(&d, "192.0.2.34");
    wait_held(&dir, 2);
    let kept = d.kill9();
    release(&dir);
    let d = Daemon::start_in(kept, &text, &[]);
    assert_ran(&dir, "ban 192.0.2.34 2 22", 1);
    assert_eq!(count(&dir, "ban 192.0.2.33 2 22"), 1);
    assert!(d.stop().success());
}

/// Runs `unban sshd ip` through the CLI while its command holds, kills `d` -9 in the middle of
/// it (the unban is committed to the state), then releases the hold; returns the directory.
fn unban_cut_short(d: Daemon, dir: &Path, ip: &str) -> tempfile::TempDir {
    std::fs::write(dir.join("hold"), "").unwrap();
    let mut unban = Command::new(binary())
        .arg("-c")
        .arg(&d.config)
        .args(["unban", "sshd", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_held(dir, 1);
    let kept = d.kill9();
    let _ = unban.wait();
    release(dir);
    kept
}

/// The firewall objects the state's record holds, as (backend, name, jail).
fn objects(dir: &Path) -> Vec<(String, String, String)> {
    triples(
        &dir.join("state.db"),
        "SELECT backend, name, jail FROM firewall_objects ORDER BY name",
    )
}

/// The rows of `query` (three columns) in the database `db`.
fn triples<A: FromSql, B: FromSql, C: FromSql>(db: &Path, query: &str) -> Vec<(A, B, C)> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db.prepare(query).unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn a_dry_run_leaves_the_recorded_firewall_objects_alone() {
    let text = config("", &jails("22"));
    let (d, dir) = start(&text);
    let (status, kept) = d.stop_keeping_dir();
    assert!(status.success());
    // Objects another run recorded, of a backend no jail of this config uses (a dry run's
    // jails use none at all): the sweep would forget them, and remove real ones first. The
    // backend is one no build knows, so nothing on this host is touched either way.
    let db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    db.execute(
        "INSERT INTO firewall_objects (backend, name, jail, spec) VALUES ('retired', 'web', 'web', '{}')",
        [],
    )
    .unwrap();
    drop(db);
    let want = vec![("retired".to_string(), "web".to_string(), "web".to_string())];
    assert_eq!(objects(&dir), want);
    // `run --dry-run`: its ready means the sweep had its turn.
    let d = Daemon::start_in(kept, &text, &["sh", "-c", "exec \"$@\" --dry-run", "sh"]);
    assert!(d.logged("ready"));
    assert_eq!(objects(&dir), want);
    assert!(d.stop().success());
}

#[test]
fn a_kill_9_mid_burst_runs_again_only_the_commands_that_had_not_finished() {
    // `ban` waits while @DIR@/gate exists for 192.0.2.40 (so the next bans queue up behind it
    // and go as one burst), and holds while @DIR@/hold exists for 192.0.2.43 (so the daemon
    // dies in the middle of that burst).
    let ban = r#"["sh", "-c", "if [ <ip> = 192.0.2.40 ]; then echo gated >> @DIR@/held.log; while [ -e @DIR@/gate ]; do sleep 0.05; done; fi; if [ <ip> = 192.0.2.43 ] && [ -e @DIR@/hold ]; then echo held >> @DIR@/held.log; while [ -e @DIR@/hold ]; do sleep 0.05; done; exit 1; fi; echo ban <ip> >> @DIR@/cmd.log"]"#;
    let action = format!(
        r#"action = {{ type = "command", ban = {ban}, unban = ["sh", "-c", "echo unban <ip> >> @DIR@/cmd.log"] }}"#
    );
    let jail = jail_toml(
        "sshd",
        "sshd",
        FAILED_ROOT,
        &format!("bantime = \"1h\"\n{action}"),
    );
    let text = config("", &jail);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gate"), "").unwrap();
    std::fs::write(dir.path().join("hold"), "").unwrap();
    let d = Daemon::start_in(dir, &text, &[]);
    let dir = d.dir();
    d.cli_ok(&["ban", "sshd", "192.0.2.40"]);
    wait_held(&dir, 1);
    let list = dir.join("list");
    std::fs::write(&list, "192.0.2.41\n192.0.2.42\n192.0.2.43\n192.0.2.44\n").unwrap();
    d.cli_ok(&["ban", "sshd", "--file", list.to_str().unwrap()]);
    std::fs::remove_file(dir.join("gate")).unwrap();
    wait_held(&dir, 2);
    let kept = d.kill9();
    release(&dir);
    let d = Daemon::start_in(kept, &text, &[]);
    // .41 and .42 ran before the crash: not again. .43 was cut short and .44 never ran: once.
    for ip in [
        "192.0.2.40",
        "192.0.2.41",
        "192.0.2.42",
        "192.0.2.43",
        "192.0.2.44",
    ] {
        let bans = count(&dir, &format!("ban {ip}"));
        assert_eq!(bans, 1, "{ip}: {:?}", lines(&dir, "cmd.log"));
    }
    assert!(d.stop().success());
}

/// The targets the command record of `jail` holds as settled, sorted.
fn settled(db: &Path, jail: &str) -> Vec<String> {
    let Ok(db) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut stmt) = db
        .prepare("SELECT target FROM command_bans WHERE jail = ?1 AND settled = 1 ORDER BY target")
    else {
        return Vec::new();
    };
    stmt.query_map([jail], |r| r.get(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// Waits (15 s at most) for the command record of `jail` to hold `want` as settled.
#[track_caller]
fn wait_settled(db: &Path, jail: &str, want: &[&str]) {
    let settled = wait_for(Duration::from_secs(15), || settled(db, jail) == want);
    assert!(settled, "{:?}", settled_all(db));
}

/// Bans `ip` in sshd through the CLI; waits for its `ban` to run and its record to settle.
fn ban_settled(d: &Daemon, dir: &Path, ip: &str) {
    d.cli_ok(&["ban", "sshd", ip]);
    wait_line(dir, &format!("ban {ip} 0 22"), 1);
    wait_settled(&dir.join("state.db"), "sshd", &[ip]);
}

/// The old `unban` lifted `ip` once, before the new `reban` ran; returns cmd.log's lines.
#[track_caller]
fn lifted_then_rebanned(dir: &Path, ip: &str) -> Vec<String> {
    let log = lines(dir, "cmd.log");
    let old = log.iter().position(|l| *l == format!("unban {ip} 0 22"));
    let new = log.iter().position(|l| *l == format!("reban {ip} 0 22"));
    assert!(old.is_some() && old < new, "{log:?}");
    assert_eq!(count(dir, &format!("unban {ip} 0 22")), 1, "{log:?}");
    log
}

/// Every row of the command record, for a failure message.
fn settled_all(db: &Path) -> Vec<(String, String, i64)> {
    triples(db, "SELECT jail, target, settled FROM command_bans")
}

#[test]
fn a_state_database_that_opens_late_still_records_the_commands() {
    // The state's directory is a file at start: the database cannot open, and the daemon bans
    // in memory until it can.
    let text = config("", &jails("22")).replace("@DIR@/state.db", "@DIR@/late/state.db");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("late"), "").unwrap();
    let d = Daemon::start_in(dir, &text, &[]);
    let dir = d.dir();
    d.cli_ok(&["ban", "sshd", "192.0.2.50"]);
    wait_line(&dir, "ban 192.0.2.50 0 22", 1);
    std::fs::remove_file(dir.join("late")).unwrap();
    d.assert_state_opened_late();
    // A ban once the database opened: recorded, and so is the one from before.
    d.cli_ok(&["ban", "sshd", "192.0.2.51"]);
    wait_line(&dir, "ban 192.0.2.51 0 22", 1);
    // The program logged before the action settles its record: the kill waits for that (a
    // kill in between rightly runs the ban again).
    wait_settled(
        &dir.join("late/state.db"),
        "sshd",
        &["192.0.2.50", "192.0.2.51"],
    );
    let kept = d.kill9();
    let d = Daemon::start_in(kept, &text, &[]);
    for ip in ["192.0.2.50", "192.0.2.51"] {
        let bans = count(&dir, &format!("ban {ip} 0 22"));
        assert_eq!(bans, 1, "{ip}: {:?}", lines(&dir, "cmd.log"));
    }
    assert!(d.stop().success());
}

#[test]
fn changed_templates_lift_with_the_recorded_unban_and_keep_what_the_same_ban_holds() {
    let text = config("", &jails("22"));
    let (d, dir) = start(&text);
    d.cli_ok(&["ban", "sshd", "192.0.2.60"]);
    d.cli_ok(&["ban", "sshd", "192.0.2.61"]);
    wait_line(&dir, "ban 192.0.2.60 0 22", 1);
    wait_line(&dir, "ban 192.0.2.61 0 22", 1);
    // The unban of .61 is committed to the state, and cut short by kill -9.
    let kept = unban_cut_short(d, &dir, "192.0.2.61");

    // Other ban and unban templates: the active .60 is lifted from the old program by the
    // unban it was banned for, then gets the new ban (review-act3 finding 1: the old program
    // would hold it for good); .61, no longer active, is lifted by the unban it was banned for
    // (recorded with it), not the new one.
    let reban = config("", &jails("22"))
        .replace("echo ban", "echo reban")
        .replace("echo unban", "echo lift");
    let d = Daemon::start_in(kept, &reban, &[]);
    assert_ran(&dir, "reban 192.0.2.60 0 22", 1);
    let log = lifted_then_rebanned(&dir, "192.0.2.60");
    assert_eq!(count_prefix(&dir, "lift 192.0.2.60"), 0, "{log:?}");
    assert_ran(&dir, "unban 192.0.2.61 0 22", 1);
    assert_eq!(count_prefix(&dir, "lift 192.0.2.61"), 0);

    // Then only the unban template changes: the ban .60 holds is the current ban's, so it
    // does not run again; an unban runs the new unban.
    let kept = d.kill9();
    let drop = reban.replace("echo lift", "echo drop");
    let d = Daemon::start_in(kept, &drop, &[]);
    assert_ran_prefix(&dir, "reban 192.0.2.60 ", 1);
    d.cli_ok(&["unban", "sshd", "192.0.2.60"]);
    wait_line(&dir, "drop 192.0.2.60 0 22", 1);
    assert!(d.stop().success());
}

#[test]
fn the_bans_of_a_command_action_removed_while_down_are_lifted_with_their_unban() {
    let all = jails("22");
    let (d, dir) = start(&config("", &all));
    d.cli_ok(&["ban", "sshd", "192.0.2.70"]);
    wait_line(&dir, "ban 192.0.2.70 0 22", 1);
    // sshd has no stop template: its ban stays where the program put it, and recorded.
    let (status, kept) = d.stop_keeping_dir();
    assert!(status.success());
    // sshd leaves the config while the daemon is down: its recorded unban runs, once (after
    // the start, on a thread of its own), and the record is forgotten.
    let rest = &all[all.find("[jails.stopper]").unwrap()..];
    let d = Daemon::start_in(kept, &config("", rest), &[]);
    wait_line(&dir, "unban 192.0.2.70 0 22", 1);
    wait_settled(&dir.join("state.db"), "sshd", &[]);
    let (status, kept) = d.stop_keeping_dir();
    assert!(status.success());
    let d = Daemon::start_in(kept, &config("", rest), &[]);
    assert_ran(&dir, "unban 192.0.2.70 0 22", 1);
    assert!(d.stop().success());
}

/// Whether the state (bans table) holds `target` in `jail`.
fn stored(db: &Path, jail: &str, target: &str) -> bool {
    let Ok(db) = rusqlite::Connection::open(db) else {
        return false;
    };
    db.query_row(
        "SELECT count(*) FROM bans WHERE jail = ?1 AND target = ?2",
        [jail, target],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n == 1)
}

/// A clean stop while the record is not open yet (the state database opened after start and no
/// command of the action ran since) still writes down that its `stop` lifted everything
/// (review-act3 finding 3): the next start runs the restored ban's `ban` again.
#[test]
fn a_stop_before_the_late_record_opened_still_forgets_what_it_lifted() {
    let text = config("", &jails("22")).replace("@DIR@/state.db", "@DIR@/late/state.db");
    let (d, dir) = start(&text);
    let db = dir.join("late/state.db");
    d.cli_ok(&["ban", "stopper", "192.0.2.80"]);
    wait_line(&dir, "ban 192.0.2.80 0 25", 1);
    let recorded = wait_for(Duration::from_secs(15), || {
        settled(&db, "stopper") == ["192.0.2.80"] && stored(&db, "stopper", "192.0.2.80/32")
    });
    assert!(recorded, "{:?}", settled_all(&db));
    let kept = d.kill9();

    // The database cannot open at start (its directory is a file): nothing is restored, the
    // stopper's action runs no command and its record stays closed.
    std::fs::rename(dir.join("late"), dir.join("away")).unwrap();
    std::fs::write(dir.join("late"), "").unwrap();
    let d = Daemon::start_in(kept, &text, &[]);
    // A ban of the other jail leaves a write waiting, which the state retries.
    d.cli_ok(&["ban", "sshd", "192.0.2.81"]);
    wait_line(&dir, "ban 192.0.2.81 0 22", 1);
    std::fs::remove_file(dir.join("late")).unwrap();
    std::fs::rename(dir.join("away"), dir.join("late")).unwrap();
    d.assert_state_opened_late();
    let (status, kept) = d.stop_keeping_dir();
    assert!(status.success());
    assert_ran(&dir, "stop stopper", 1);

    // The stop lifted .80: restored from the state, it is banned again.
    let d = Daemon::start_in(kept, &text, &[]);
    assert_eq!(
        count(&dir, "ban 192.0.2.80 0 25"),
        2,
        "{:?} {:?}",
        lines(&dir, "cmd.log"),
        settled_all(&db)
    );
    assert!(d.stop().success());
}

/// A reload that takes a command action out of a jail runs the recorded unban of every ban it
/// ran (review-act3 finding 4), before the reload answers; the other jail's bans stay.
#[test]
fn a_reload_that_removes_a_command_action_lifts_its_bans() {
    let all = jails("22");
    let (d, dir) = start(&config("", &all));
    d.cli_ok(&["ban", "sshd", "192.0.2.90"]);
    d.cli_ok(&["ban", "stopper", "192.0.2.91"]);
    wait_line(&dir, "ban 192.0.2.90 0 22", 1);
    wait_line(&dir, "ban 192.0.2.91 0 25", 1);
    wait_settled(&dir.join("state.db"), "sshd", &["192.0.2.90"]);
    let logged = with_sshd_action(&all, |_| "{ type = \"log\" }".to_string());
    let out = d.reload_jails(&logged);
    assert!(out.contains("sshd: actions restarted"), "{out}");
    assert_ran(&dir, "unban 192.0.2.90 0 22", 1);
    assert_eq!(count_prefix(&dir, "unban 192.0.2.91"), 0);
    assert!(settled(&dir.join("state.db"), "sshd").is_empty());
    assert!(d.stop().success());
}

/// The recorded unbans of a command action removed while the daemon was down run after the
/// start, not before it (review-act3 finding 5): the daemon is ready while one of them waits on
/// a file the test holds, and the unban finishes once the test removes it. (Run before the
/// start, it would hold the start back until its timeout killed it, and stay recorded.)
#[test]
fn the_unbans_of_a_removed_command_action_do_not_hold_the_start_back() {
    let waiting = r#"
[jails.slow]
programs = ["slow"]
failregex = ['^x <HOST>$']
bantime = "1h"
action = { type = "command", ban = ["sh", "-c", "echo ban <ip> >> @DIR@/cmd.log"], unban = ["sh", "-c", "if [ -e @DIR@/hold ]; then echo held >> @DIR@/held.log; fi; while [ -e @DIR@/hold ]; do sleep 0.05; done; echo unban <ip> >> @DIR@/cmd.log"] }
"#;
    let all = jails("22");
    let rest = &all[all.find("[jails.stopper]").unwrap()..];
    let d = Daemon::start_in(
        tempfile::tempdir().unwrap(),
        &config("", &format!("{waiting}\n{rest}")),
        &[],
    );
    let dir = d.dir();
    d.cli_ok(&["ban", "slow", "192.0.2.95"]);
    wait_line(&dir, "ban 192.0.2.95", 1);
    wait_settled(&dir.join("state.db"), "slow", &["192.0.2.95"]);
    let (status, kept) = d.stop_keeping_dir();
    assert!(status.success());

    std::fs::write(dir.join("hold"), "").unwrap();
    let d = Daemon::start_in(kept, &config("", rest), &[]);
    wait_held(&dir, 1);
    assert_eq!(count(&dir, "unban 192.0.2.95"), 0);
    release(&dir);
    wait_line(&dir, "unban 192.0.2.95", 1);
    wait_settled(&dir.join("state.db"), "slow", &[]);
    assert!(d.stop().success());
}

/// `jails(port)` with the sshd jail's command action behind `ahead` (more command actions,
/// each logging `<word> <ip>` to cmd.log).
fn inserted_ahead(port: &str, ahead: &[&str]) -> String {
    with_sshd_action(&jails(port), |original| {
        let mut actions: Vec<String> = ahead
            .iter()
            .map(|word| {
                format!(
                    r#"{{ type = "command", ban = ["sh", "-c", "echo {word} <ip> >> @DIR@/cmd.log"] }}"#
                )
            })
            .collect();
        actions.push(original.to_string());
        format!("[{}]", actions.join(", "))
    })
}

/// A command action inserted ahead of another, at a restart and at a reload, leaves the
/// other's bans held: its `ban` does not run again and nothing of it is lifted; the new action
/// runs its own `ban` for each active ban (records were keyed by position: the start ran the
/// other's `ban` again, and the new action's took the old position's records for its own).
#[test]
fn a_command_action_inserted_ahead_of_another_runs_none_of_its_bans_again() {
    let (d, dir) = start(&config("", &jails("22")));
    ban_settled(&d, &dir, "192.0.2.100");
    // sshd has no stop template: its ban stays held, and recorded, across the restart.
    let (status, kept) = d.stop_keeping_dir();
    assert!(status.success());

    let d = Daemon::start_in(kept, &config("", &inserted_ahead("22", &["first"])), &[]);
    wait_line(&dir, "first 192.0.2.100", 1);
    let out = d.reload_jails(&inserted_ahead("22", &["second", "first"]));
    assert!(out.contains("sshd: actions restarted"), "{out}");
    wait_line(&dir, "second 192.0.2.100", 1);
    let (status, _kept) = d.stop_keeping_dir();
    assert!(status.success());
    let log = lines(&dir, "cmd.log");
    assert_eq!(count(&dir, "ban 192.0.2.100 0 22"), 1, "{log:?}");
    assert_eq!(count(&dir, "first 192.0.2.100"), 1, "{log:?}");
    assert_eq!(count_prefix(&dir, "unban"), 0, "{log:?}");
}

/// A reload that changes a command action's `ban` (another identity): the reload's lifting of
/// removed command actions leaves its records to the changed action, which runs the `unban` the
/// active ban was banned for, then its new `ban`, once each.
#[test]
fn a_reload_that_changes_a_ban_template_lifts_with_the_old_unban_then_bans_once() {
    let (d, dir) = start(&config("", &jails("22")));
    ban_settled(&d, &dir, "192.0.2.110");
    let reban = jails("22")
        .replace("echo ban", "echo reban")
        .replace("echo unban", "echo lift");
    let out = d.reload_jails(&reban);
    assert!(out.contains("sshd: actions restarted"), "{out}");
    wait_line(&dir, "reban 192.0.2.110 0 22", 1);
    let (status, _kept) = d.stop_keeping_dir();
    assert!(status.success());
    let log = lifted_then_rebanned(&dir, "192.0.2.110");
    assert_eq!(count(&dir, "reban 192.0.2.110 0 22"), 1, "{log:?}");
    assert_eq!(count_prefix(&dir, "lift "), 0, "{log:?}");
}

/// `jails(port)` with another command action after the sshd jail's own: `after`, in TOML.
fn appended(port: &str, after: &str) -> String {
    with_sshd_action(&jails(port), |original| format!("[{original}, {after}]"))
}

/// A reload whose new actions fail to start gives the jail its old actions back (review-act5
/// finding 1): the bans a command action that only the new actions have ran at its start are
/// lifted with its unban before the old actions run again, and its record goes; the old
/// action's ban and record stay, and a later unban runs only the old action's unban.
#[test]
fn a_reload_that_falls_back_lifts_the_bans_of_a_new_only_command_action() {
    let (d, dir) = start(&config("", &jails("22")));
    let db = dir.join("state.db");
    ban_settled(&d, &dir, "192.0.2.120");
    // The new action's `start` fails (its `ban` works): the new actions cannot run.
    let added = r#"{ type = "command", start = ["false"], ban = ["sh", "-c", "echo newban <ip> >> @DIR@/cmd.log"], unban = ["sh", "-c", "echo newunban <ip> >> @DIR@/cmd.log"] }"#;
    let out = d.reload_jails(&appended("22", added));
    assert!(
        out.contains("sshd: new actions failed to start") && out.contains("run again"),
        "{out}"
    );
    let log = lines(&dir, "cmd.log");
    assert_eq!(count(&dir, "newban 192.0.2.120"), 1, "{log:?}");
    assert_eq!(count(&dir, "newunban 192.0.2.120"), 1, "lifted: {log:?}");
    assert_eq!(settled_all(&db).len(), 1, "{:?}", settled_all(&db));
    assert_eq!(settled(&db, "sshd"), ["192.0.2.120"]);
    d.cli_ok(&["unban", "sshd", "192.0.2.120"]);
    wait_line(&dir, "unban 192.0.2.120 0 22", 1);
    let (status, _kept) = d.stop_keeping_dir();
    assert!(status.success());
    let log = lines(&dir, "cmd.log");
    assert_eq!(count(&dir, "newunban 192.0.2.120"), 1, "{log:?}");
    assert_eq!(count(&dir, "ban 192.0.2.120 0 22"), 1, "{log:?}");
    assert!(settled_all(&db).is_empty(), "{:?}", settled_all(&db));
}
