//! The command action: the operator's own programs as argv templates for start, stop, ban and
//! unban, run without a shell (argv\[0\] may be one, when the operator writes `["sh", "-c", ...]`),
//! each under a timeout that kills it with its process group.
//!
//! Placeholders, replaced inside every argument: `<ip>` (an address, or a network as CIDR),
//! `<jail>`, `<bantime>` (seconds left, -1 permanent), `<failures>`, `<port>` (comma list, empty
//! for all ports) and `<protocol>`. Values are our own (parsed addresses, checked names), so a
//! shell template cannot be injected through them. The ban template also gets `<hosts>` (the
//! syslog host names the deciding failures came from, comma-separated) and `<matches>` (the
//! deciding lines as `HOST PROGRAM: MESSAGE`, separated by tabs); attackers write those lines,
//! so every character a shell gives a meaning becomes `_` ([`shell_safe`]), quoted or not.

use std::collections::HashMap;
use std::time::Instant;

use ipnetwork::IpNetwork;

use super::{
    element_text, exec, Action, ActionCommand, ActionError, ActionKind, BanOrder, BatchError,
    CommandSpec, Protocol,
};
use crate::action::records::{self, CommandRecord, Done, Mark, Records};
use crate::evidence::{hosts, shell_safe, Line};

/// Most bans whose values are remembered in memory for the unban template; beyond it an unban
/// reads them from the record in the state database (or, without one, shows 0 failures and the
/// bantime as -1).
const REMEMBERED: usize = 1_000_000;

/// Runs operator-supplied programs, and keeps its own record of what it ran.
///
/// The operator's programs cannot be listed, so the action records each ban it runs `ban` for
/// (with the values `unban` will need) in the state database, and forgets it once `unban` ran.
/// Every command is recorded as unsettled before it runs and settled after it succeeded: a
/// crash between the two leaves it unsettled, and the next start runs `ban` again if the ban is
/// still restored, `unban` if not, so an unban is run twice rather than never.
pub(crate) struct CommandAction {
    jail: String,
    /// Its place among the jail's command actions (0 for the first).
    position: usize,
    /// Its identity, which keys its records ([`records::identity`]).
    identity: String,
    /// The identities of the jail's command actions, in order (its own included).
    siblings: Vec<String>,
    spec: CommandSpec,
    /// The values of the bans it holds, for the unban template (at most [`REMEMBERED`]).
    active: HashMap<IpNetwork, CommandRecord>,
    /// The durable record; None without a readable state database (memory only, as then no ban
    /// survives a restart anyway).
    records: Option<Records>,
    /// Recorded targets whose last command may not have run (read by `list`).
    unsettled: Vec<IpNetwork>,
    /// Fingerprint of the ban and unban templates, stored with each record.
    commands: i64,
    /// Fingerprint of the ban template alone: a record of other templates whose ban is this
    /// one holds the ban already (only the unban changed).
    ban_commands: i64,
    /// Unban templates of recorded bans run by other ban templates (the config changed them):
    /// an unban of one of those targets runs the program that holds it.
    old_unban: HashMap<IpNetwork, Vec<String>>,
    /// Opening the record late (a database that opened after start, [`records::named`]).
    reopen: records::Reopen,
}

impl CommandAction {
    /// The command action at `position` among the command actions of `jail`, whose
    /// identities are `siblings` (its own at `position`; empty: it is the only one); nothing
    /// runs until `start`.
    pub(crate) fn new(jail: &str, position: usize, siblings: &[String], spec: CommandSpec) -> Self {
        let siblings = match siblings.get(position) {
            Some(_) => siblings.to_vec(),
            None => vec![records::identity(&spec.ban, 0)],
        };
        CommandAction {
            jail: jail.to_string(),
            position: position.min(siblings.len() - 1),
            identity: siblings[position.min(siblings.len() - 1)].clone(),
            siblings,
            commands: records::fingerprint(&spec.ban, &spec.unban),
            ban_commands: records::fingerprint(&spec.ban, &[]),
            old_unban: HashMap::new(),
            spec,
            active: HashMap::new(),
            records: None,
            unsettled: Vec::new(),
            reopen: records::Reopen::default(),
        }
    }

    /// `<protocol>` as the config gives it now.
    fn protocol(&self) -> &'static str {
        match self.spec.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::All => "all",
        }
    }

    /// The values a ban of `order` runs with (and its unban will).
    fn record_of(&self, order: &BanOrder) -> CommandRecord {
        let bantime = order
            .remaining(Instant::now())
            .map_or(-1, |d| d.as_millis().div_ceil(1000) as i64);
        CommandRecord {
            target: order.target,
            failures: order.failures,
            bantime,
            port: self.spec.ports.join(","),
            protocol: self.protocol().to_string(),
            settled: false,
        }
    }

    /// The values of the ban `target` holds: remembered, recorded, or (a ban from before the
    /// record, or past [`REMEMBERED`] without a database) 0 failures, bantime -1 and the
    /// config's ports.
    fn recorded(&self, target: IpNetwork) -> CommandRecord {
        if let Some(found) = self.active.get(&target) {
            return found.clone();
        }
        let stored = self
            .records
            .as_ref()
            .and_then(|r| r.command(&self.jail, &self.identity, target).ok().flatten())
            // A record an unban made for a target never recorded has no port of its own.
            .filter(|r| !r.protocol.is_empty());
        stored.unwrap_or_else(|| CommandRecord {
            target,
            failures: 0,
            bantime: -1,
            port: self.spec.ports.join(","),
            protocol: self.protocol().to_string(),
            settled: false,
        })
    }

    fn run(
        &self,
        template: &[String],
        target: Option<IpNetwork>,
        values: Option<&CommandRecord>,
        evidence: &[Line],
    ) -> Result<(), ActionError> {
        if template.is_empty() {
            return Ok(());
        }
        let (failures, bantime, port, protocol) = match values {
            Some(r) => (r.failures, r.bantime, r.port.clone(), r.protocol.clone()),
            None => (0, 0, self.spec.ports.join(","), self.protocol().to_string()),
        };
        let values = (failures, bantime, port, protocol);
        let argv = filled(template, &self.jail, target, values, evidence);
        exec::run(&argv, None, self.spec.timeout)?;
        Ok(())
    }

    /// Opens the record when the state database opened after this action started, and writes
    /// into it every ban run meanwhile as held: otherwise the next start would run their `ban`
    /// again, and never their `unban` for those that expired meanwhile.
    fn open_late(&mut self) {
        if self.records.is_some() {
            return;
        }
        let Some(mut opened) = self.reopen.try_open() else {
            return;
        };
        opened.templates(&self.spec.ban, &self.spec.unban);
        let held: Vec<&CommandRecord> = self.active.values().collect();
        let marks: Vec<Mark<'_>> = held.iter().map(|r| Mark::Ban(r)).collect();
        let done: Vec<Done> = held.iter().map(|r| Done::Banned(r.target)).collect();
        let written = opened
            .begin(
                &self.jail,
                &self.identity,
                self.position,
                self.commands,
                &marks,
            )
            .and_then(|()| opened.settle(&self.jail, &self.identity, &done));
        if let Err(error) = written {
            crate::metrics::state_errors().increment(1);
            tracing::error!(jail = %self.jail, %error, "command action: cannot record the bans it ran before the state database opened");
        }
        tracing::info!(jail = %self.jail, held = held.len(), "command action: the state database opened, its record is kept from now");
        drop(marks);
        self.records = Some(opened);
    }

    /// Writes to the record; a database that refuses is logged and counted, and the commands
    /// run anyway (protection first: the next start may then run a ban twice).
    fn write(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Records, &str, &str) -> Result<(), super::records::RecordError>,
    ) {
        let Some(records) = self.records.as_mut() else {
            return;
        };
        if let Err(error) = f(records, &self.jail, &self.identity) {
            crate::metrics::state_errors().increment(1);
            tracing::error!(jail = %self.jail, %error, "command action: cannot {what} its record");
        }
    }
}

/// `template` with every placeholder filled: the address, the jail, (failures, bantime, port,
/// protocol), and the hosts and matching lines of `evidence` (none: both empty). One table for
/// the configured commands and the recorded unbans of actions no longer configured.
fn filled(
    template: &[String],
    jail: &str,
    target: Option<IpNetwork>,
    (failures, bantime, port, protocol): (u32, i64, String, String),
    evidence: &[Line],
) -> Vec<String> {
    let values = [
        ("<ip>", target.map(element_text).unwrap_or_default()),
        ("<jail>", jail.to_string()),
        ("<bantime>", bantime.to_string()),
        ("<failures>", failures.to_string()),
        ("<port>", port),
        ("<protocol>", protocol),
        ("<hosts>", shell_safe(&hosts(evidence).join(","))),
        ("<matches>", matches(evidence)),
    ];
    template.iter().map(|arg| fill(arg, &values)).collect()
}

/// Longest run of an unban of a command action no longer configured (its own timeout went
/// with its config).
const ORPHAN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Longest time all those unbans take together; what is left waits for the next start.
const ORPHAN_BUDGET: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs, at start, the recorded unban of every ban a command action no longer configured ran
/// (its jail removed from the config while the daemon was down, or the command action taken
/// out of it), and forgets it; `configured` maps each jail to the identities of its command
/// actions ([`records::identity`], [`super::command_identities`]). An
/// unban that fails stays recorded for the next start; a record without its unban template
/// (from before they were recorded) is forgotten. Returns how many unbans ran.
pub(crate) fn lift_unconfigured(
    records: &mut Records,
    configured: &HashMap<String, Vec<String>>,
) -> usize {
    let began = Instant::now();
    let bounds = Bounds {
        timeout: ORPHAN_TIMEOUT,
        budget: ORPHAN_BUDGET,
        elapsed: &mut || began.elapsed(),
    };
    lift_unconfigured_within(records, configured, bounds)
}

/// What bounds [`lift_unconfigured`]: each unban's timeout, the budget of the whole run, and
/// the clock the budget is read on (the real one; a test's, which no test waits out).
pub(crate) struct Bounds<'a> {
    /// Longest run of one unban ([`ORPHAN_TIMEOUT`]).
    pub timeout: std::time::Duration,
    /// Longest time all of them take together ([`ORPHAN_BUDGET`]).
    pub budget: std::time::Duration,
    /// Time since the lifting began, read before each unban.
    pub elapsed: &'a mut dyn FnMut() -> std::time::Duration,
}

/// [`lift_unconfigured`] within `bounds`.
pub(crate) fn lift_unconfigured_within(
    records: &mut Records,
    configured: &HashMap<String, Vec<String>>,
    bounds: Bounds<'_>,
) -> usize {
    let orphans = match records.unconfigured_commands(configured) {
        Ok(orphans) => orphans,
        Err(error) => {
            crate::metrics::state_errors().increment(1);
            tracing::error!(%error, "cannot read the command actions' records");
            return 0;
        }
    };
    let (mut lifted, mut shared) = (0, 0);
    // Templates that ran past their timeout: not tried again before the next start (one hung
    // program must not cost a minute per record).
    let mut hung: Vec<Vec<String>> = Vec::new();
    for records::Orphan {
        jail,
        action,
        record,
        unban,
    } in orphans
    {
        if (bounds.elapsed)() >= bounds.budget {
            tracing::warn!(lifted, "lifting the bans of command actions no longer configured took too long: the rest waits for the next start");
            break;
        }
        let target = record.target;
        // Two command actions of the jail ran the same `ban` (the same program, same values):
        // the one still configured holds the target, which the removed one's unban would lift
        // from under it. Forgotten without its unban.
        let ids = configured.get(&jail).map_or(&[][..], Vec::as_slice);
        if records
            .held_by_same_ban(&jail, &action, ids, target)
            .unwrap_or(false)
        {
            if let Err(error) = records.settle(&jail, &action, &[Done::Unbanned(target)]) {
                crate::metrics::state_errors().increment(1);
                tracing::error!(%jail, %error, "cannot forget a command record");
            }
            shared += 1;
            continue;
        }
        let unban = unban.filter(|argv| !argv.is_empty());
        if unban.as_ref().is_some_and(|argv| hung.contains(argv)) {
            continue;
        }
        let ran = match unban {
            None => {
                tracing::warn!(%jail, ip = %element_text(target), "record of a command action no longer configured, without its unban: forgotten");
                Ok(())
            }
            Some(template) => {
                let values = (
                    record.failures,
                    record.bantime,
                    record.port.clone(),
                    record.protocol.clone(),
                );
                let argv = filled(&template, &jail, Some(target), values, &[]);
                let ran = exec::run(&argv, None, bounds.timeout).map(|_| lifted += 1);
                if matches!(ran, Err(exec::ExecError::Timeout { .. })) {
                    hung.push(template);
                }
                ran
            }
        };
        match ran {
            Ok(()) => {
                if let Err(error) = records.settle(&jail, &action, &[Done::Unbanned(target)]) {
                    crate::metrics::state_errors().increment(1);
                    tracing::error!(%jail, %error, "cannot forget a lifted command record");
                }
            }
            Err(error) => {
                crate::metrics::action_errors(&jail, "command").increment(1);
                tracing::error!(%jail, ip = %element_text(target), %error, "the unban of a command action no longer configured failed; tried again at the next start");
            }
        }
    }
    if shared > 0 {
        tracing::info!(
            forgotten = shared,
            "records of removed command actions forgotten without their unban: another command action of the jail with the same ban holds those bans"
        );
    }
    lifted
}

/// The deciding lines for `<matches>`: `HOST PROGRAM: MESSAGE` each, shell-safe, tab-separated.
fn matches(evidence: &[Line]) -> String {
    evidence
        .iter()
        .map(|l| {
            shell_safe(&format!(
                "{} {}: {}",
                l.host.as_deref().unwrap_or("-"),
                l.program.as_deref().unwrap_or("-"),
                l.message
            ))
        })
        .collect::<Vec<_>>()
        .join("\t")
}

/// Replaces every placeholder in one argument.
fn fill(arg: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(arg.to_string(), |text, (key, value)| {
        text.replace(key, value)
    })
}

impl Action for CommandAction {
    fn kind(&self) -> ActionKind {
        ActionKind::Command
    }

    fn start(&mut self) -> Result<(), ActionError> {
        if self.records.is_none() {
            self.records = records::open_configured();
            if let Some(records) = self.records.as_mut() {
                records.templates(&self.spec.ban, &self.spec.unban);
            }
        }
        self.run(&self.spec.start, None, None, &[])
    }

    fn ban(&mut self, order: &BanOrder) -> Result<(), ActionError> {
        super::apply_one(self, ActionCommand::Ban(order.clone()))
    }

    fn unban(&mut self, target: IpNetwork) -> Result<(), ActionError> {
        super::apply_one(self, ActionCommand::Unban(target))
    }

    /// Records the burst as unsettled, runs it in order, and records each command that succeeded
    /// as soon as it did.
    ///
    /// A ban of a target an old ban template holds (the config changed the templates) first
    /// runs the unban that target was banned for, recorded and settled on its own before the
    /// new ban overwrites the record: a crash in between runs the old unban again rather than
    /// never. A ban whose old unban failed stays pending (the old program still holds it).
    fn apply(&mut self, batch: &[ActionCommand]) -> Result<(), BatchError> {
        self.open_late();
        let lifts: Vec<ActionCommand> = batch
            .iter()
            .filter_map(|c| match c {
                ActionCommand::Ban(order) if self.old_unban.contains_key(&order.target) => {
                    Some(ActionCommand::Unban(order.target))
                }
                _ => None,
            })
            .collect();
        if lifts.is_empty() {
            return self.record_and_run(batch);
        }
        let mut first = None;
        let mut blocked = Vec::new();
        if let Err(failed) = self.record_and_run(&lifts) {
            for j in failed.pending {
                let target = lifts[j].target();
                blocked.extend(
                    (0..batch.len()).filter(
                        |&i| matches!(&batch[i], ActionCommand::Ban(o) if o.target == target),
                    ),
                );
            }
            first = Some(failed.error);
        }
        let rest: Vec<usize> = (0..batch.len()).filter(|i| !blocked.contains(i)).collect();
        let rest_batch: Vec<ActionCommand> = rest.iter().map(|&i| batch[i].clone()).collect();
        let mut pending = blocked;
        if let Err(failed) = self.record_and_run(&rest_batch) {
            pending.extend(failed.pending.iter().filter_map(|&j| rest.get(j).copied()));
            first.get_or_insert(failed.error);
        }
        pending.sort_unstable();
        BatchError::of(first, pending)
    }

    /// What the record says the operator's programs hold: the bans whose `ban` ran and whose
    /// `unban` did not start since (None without a record, so every restored ban is run).
    fn list(&mut self) -> Result<Option<Vec<IpNetwork>>, ActionError> {
        let Some(records) = self.records.as_mut() else {
            return Ok(None);
        };
        let read = |e| ActionError(format!("read the command action's record: {e}"));
        // Records are kept by the action's identity (its `ban`): another command action
        // inserted or removed around it leaves them its own. Those of a changed `ban` (or from
        // before identities) are taken over by position, then handled as other templates.
        let taken = records
            .claim(&self.jail, &self.identity, self.position, &self.siblings)
            .map_err(read)?;
        if taken > 0 {
            tracing::info!(jail = %self.jail, taken, position = self.position, "[{}] the command action took over the records at its position (its ban template changed, or they are from before records were kept by the action's identity)", self.jail);
        }
        // Bans run by other templates (the config changed them). Only the unban changed: the
        // ban is held by the current ban's program, kept. The ban changed: doubtful, so the
        // reconcile runs the recorded (old) unban, then the new ban, for an active one
        // (`apply`), and the old unban alone for one no longer active. Unknown templates (a record from before they were recorded):
        // forgotten, and the new ban runs for every active one.
        let (mut adopted, mut changed, mut forgotten) = (0, 0, 0);
        for other in records
            .other_commands(&self.jail, &self.identity, self.commands)
            .map_err(read)?
        {
            match other.unban {
                Some(_) if other.ban_commands == self.ban_commands => {
                    records
                        .adopt(&self.jail, &self.identity, other.target, self.commands)
                        .map_err(read)?;
                    adopted += 1;
                }
                Some(unban) => {
                    self.old_unban.insert(other.target, unban);
                    changed += 1;
                }
                None => {
                    records
                        .forget_command(&self.jail, &self.identity, other.target)
                        .map_err(read)?;
                    forgotten += 1;
                }
            }
        }
        if adopted + changed + forgotten > 0 {
            tracing::warn!(jail = %self.jail, adopted, changed, forgotten, "[{}] the command action's ban or unban changed: bans of the same ban program kept ({adopted}), the old unban then the new ban run for the active ones of another ({changed}, the old unban alone for those no longer active), records of unknown programs forgotten ({forgotten})", self.jail);
        }
        let all = records.commands(&self.jail, &self.identity).map_err(read)?;
        self.unsettled = all
            .iter()
            .filter(|r| !r.settled || self.old_unban.contains_key(&r.target))
            .map(|r| r.target)
            .collect();
        let mut held = Vec::new();
        for record in all {
            if record.settled && !self.old_unban.contains_key(&record.target) {
                held.push(record.target);
            }
            if self.active.len() < REMEMBERED && !record.protocol.is_empty() {
                self.active.insert(record.target, record);
            }
        }
        Ok(Some(held))
    }

    fn doubtful(&self) -> Vec<IpNetwork> {
        self.unsettled.clone()
    }

    fn held(&self) -> Vec<IpNetwork> {
        self.active.keys().copied().collect()
    }

    /// Runs the `stop` template. One that ran is taken to lift every ban (as fail2ban's
    /// actionstop flushes its chain): the record is forgotten, and the next start runs `ban`
    /// for every restored ban. Without a `stop` template the bans stay where the programs put
    /// them, and so does the record.
    ///
    /// A record not opened yet (the state database opened after start, and no command came
    /// since) is opened first, whenever it was last tried: a stop not written down would leave
    /// the record saying its bans are held, and the next start would skip them.
    fn stop(&mut self) -> Result<(), ActionError> {
        self.run(&self.spec.stop, None, None, &[])?;
        if !self.spec.stop.is_empty() {
            self.reopen.force();
            self.open_late();
            if self.records.is_none() && records::named() {
                tracing::error!(jail = %self.jail, "command action: its stop ran but cannot be recorded: the next start may take the bans it lifted for held, and not run them again");
            }
            self.active.clear();
            self.old_unban.clear();
            self.write("forget", |r, jail, action| r.forget_commands(jail, action));
        }
        Ok(())
    }
}

impl CommandAction {
    /// Records the commands as begun, runs them in order, and records each that succeeded.
    fn record_and_run(&mut self, batch: &[ActionCommand]) -> Result<(), BatchError> {
        let values: Vec<Option<CommandRecord>> = batch
            .iter()
            .map(|c| match c {
                ActionCommand::Ban(order) => Some(self.record_of(order)),
                ActionCommand::Unban(_) => None,
            })
            .collect();
        let marks: Vec<Mark<'_>> = batch
            .iter()
            .zip(&values)
            .map(|(c, v)| match v {
                Some(record) => Mark::Ban(record),
                None => Mark::Unban(c.target()),
            })
            .collect();
        let Some(records) = self.records.as_mut() else {
            return self.run_burst(batch, values);
        };
        if let Err(error) = records.begin(
            &self.jail,
            &self.identity,
            self.position,
            self.commands,
            &marks,
        ) {
            crate::metrics::state_errors().increment(1);
            tracing::error!(jail = %self.jail, %error, "command action: cannot record the commands it runs");
        }
        drop(marks);
        self.run_burst(batch, values)
    }

    /// Records one command as done, as soon as it succeeded: a crash later in the burst (up to
    /// [`super::runner::MAX_BURST`] commands) then runs again only what had not finished.
    fn settle(&mut self, done: Done) {
        self.write("settle", |r, jail, action| r.settle(jail, action, &[done]));
    }

    /// Runs each command of a burst (recorded as begun), recording each as it succeeds.
    fn run_burst(
        &mut self,
        batch: &[ActionCommand],
        values: Vec<Option<CommandRecord>>,
    ) -> Result<(), BatchError> {
        let mut pending = Vec::new();
        let mut first = None;
        for (i, (command, value)) in batch.iter().zip(values).enumerate() {
            let result = match (command, value) {
                (ActionCommand::Ban(order), Some(mut record)) => {
                    let result = self.run(
                        &self.spec.ban,
                        Some(order.target),
                        Some(&record),
                        &order.evidence,
                    );
                    if result.is_ok() {
                        self.old_unban.remove(&order.target);
                        self.settle(Done::Banned(order.target));
                        record.settled = true;
                        if self.active.len() < REMEMBERED || self.active.contains_key(&order.target)
                        {
                            self.active.insert(order.target, record);
                        }
                    }
                    result
                }
                (command, _) => {
                    let target = command.target();
                    let record = self.recorded(target);
                    // A ban run by an old ban template is lifted by its own unban.
                    let template = self
                        .old_unban
                        .get(&target)
                        .unwrap_or(&self.spec.unban)
                        .clone();
                    let result = self.run(&template, Some(target), Some(&record), &[]);
                    if result.is_ok() {
                        self.old_unban.remove(&target);
                        self.settle(Done::Unbanned(target));
                        self.active.remove(&target);
                    }
                    result
                }
            };
            if let Err(error) = result {
                pending.push(i);
                first.get_or_insert(error);
            }
        }
        BatchError::of(first, pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records of a jail `gone` (no longer configured) for `targets`, banned with `unban` as
    /// their unban template.
    fn orphans(records: &mut Records, unban: &[String], targets: &[&str]) {
        records.templates(&["true".to_string()], unban);
        for target in targets {
            let record = CommandRecord {
                target: target.parse().unwrap(),
                failures: 1,
                bantime: 60,
                port: String::new(),
                protocol: "tcp".into(),
                settled: false,
            };
            records
                .begin("gone", "x", 0, 1, &[Mark::Ban(&record)])
                .unwrap();
            records
                .settle("gone", "x", &[Done::Banned(record.target)])
                .unwrap();
        }
    }

    fn sh(script: String) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script]
    }

    fn left(records: &Records) -> Vec<String> {
        let mut left: Vec<String> = records
            .commands("gone", "x")
            .unwrap()
            .iter()
            .map(|r| element_text(r.target))
            .collect();
        left.sort();
        left
    }

    /// An unban template that hangs is killed at the timeout and not run again for the other
    /// records (which stay recorded for the next start); the other templates go on.
    ///
    /// The hung template waits to read a FIFO the test never opens for writing: it can only
    /// end at the timeout, whatever the host's load. The timeout is wide, as it also bounds
    /// the quick template (a fork and an exec on a loaded host); the test waits it out once.
    #[test]
    fn a_hung_unban_of_a_removed_command_action_is_skipped_for_the_rest_of_the_lifting() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = Records::open(&dir.path().join("state.db")).unwrap();
        let hung = dir.path().join("hung.log");
        let quick = dir.path().join("quick.log");
        let never = dir.path().join("never");
        let fifo = std::ffi::CString::new(never.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo reads it only.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        orphans(
            &mut records,
            &sh(format!(
                "echo <ip> >> {}; cat {}",
                hung.display(),
                never.display()
            )),
            &["192.0.2.1", "192.0.2.2"],
        );
        orphans(
            &mut records,
            &sh(format!("echo <ip> >> {}", quick.display())),
            &["192.0.2.3"],
        );
        let bounds = Bounds {
            timeout: std::time::Duration::from_secs(5),
            budget: std::time::Duration::from_secs(3600),
            elapsed: &mut || std::time::Duration::ZERO,
        };
        let lifted = lift_unconfigured_within(&mut records, &HashMap::new(), bounds);
        assert_eq!(lifted, 1);
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        assert_eq!(read(&hung), "192.0.2.1\n", "the hung template ran once");
        assert_eq!(read(&quick), "192.0.2.3\n");
        assert_eq!(left(&records), ["192.0.2.1", "192.0.2.2"]);
    }

    /// The lifting stops once its budget is spent (read on a clock the test moves: five
    /// minutes per unban), the rest staying recorded for the next start.
    #[test]
    fn the_lifting_of_removed_command_actions_ends_with_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = Records::open(&dir.path().join("state.db")).unwrap();
        let log = dir.path().join("unban.log");
        orphans(
            &mut records,
            &sh(format!("echo <ip> >> {}", log.display())),
            &["192.0.2.1", "192.0.2.2", "192.0.2.3"],
        );
        let mut reads = 0u32;
        let bounds = Bounds {
            timeout: std::time::Duration::from_secs(60),
            budget: ORPHAN_BUDGET,
            elapsed: &mut || {
                reads += 1;
                std::time::Duration::from_secs(300) * (reads - 1)
            },
        };
        let lifted = lift_unconfigured_within(&mut records, &HashMap::new(), bounds);
        assert_eq!(lifted, 2, "two unbans within ten minutes");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "192.0.2.1\n192.0.2.2\n"
        );
        assert_eq!(left(&records), ["192.0.2.3"]);
    }

    fn command(ban: &str) -> CommandSpec {
        CommandSpec {
            start: Vec::new(),
            stop: Vec::new(),
            ban: vec!["true".into(), ban.into(), "<ip>".into()],
            unban: vec!["true".into(), format!("un{ban}"), "<ip>".into()],
            timeout: std::time::Duration::from_secs(10),
            ports: Vec::new(),
            protocol: Protocol::Tcp,
        }
    }

    /// What a start's listing of a command action gave: held and doubtful targets.
    type Listed = (Vec<String>, Vec<String>);

    /// The command actions of a jail `sshd` holding `specs` (in order), each with its records
    /// at `path`, listed as a start does: (held, doubtful) per action.
    fn started(path: &std::path::Path, specs: &[CommandSpec]) -> (Vec<CommandAction>, Vec<Listed>) {
        let all: Vec<super::super::ActionSpec> = specs
            .iter()
            .cloned()
            .map(super::super::ActionSpec::Command)
            .collect();
        let ids = super::super::command_identities(&all);
        let mut actions = Vec::new();
        let mut seen = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let mut action = CommandAction::new("sshd", i, &ids, spec.clone());
            let mut records = Records::open(path).unwrap();
            records.templates(&spec.ban, &spec.unban);
            action.records = Some(records);
            let texts = |t: Vec<IpNetwork>| {
                let mut t: Vec<String> = t.into_iter().map(element_text).collect();
                t.sort();
                t
            };
            let held = texts(action.list().unwrap().unwrap());
            seen.push((held, texts(action.doubtful())));
            actions.push(action);
        }
        (actions, seen)
    }

    fn ban(action: &mut CommandAction, target: &str) {
        let order = BanOrder {
            target: target.parse().unwrap(),
            failures: 2,
            bantime: None,
            decided_at: Instant::now(),
            from_state: false,
            evidence: Default::default(),
        };
        action.apply(&[ActionCommand::Ban(order)]).unwrap();
    }

    /// Records are kept by the action's identity, not its position: a command action
    /// inserted ahead of another leaves the other's bans held (no `ban` run again, no `unban`
    /// of the old position), and the new one holds none (its `ban` runs for every active ban).
    #[test]
    fn a_command_action_inserted_ahead_leaves_the_others_records_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (a, b) = (command("a"), command("b"));
        let (mut actions, seen) = started(&path, std::slice::from_ref(&a));
        assert_eq!(seen, [(vec![], vec![])]);
        ban(&mut actions[0], "192.0.2.1");
        drop(actions);
        let (_, seen) = started(&path, &[b.clone(), a.clone()]);
        assert_eq!(
            seen,
            [(vec![], vec![]), (vec!["192.0.2.1".to_string()], vec![])]
        );
        // Taken out again (b removed ahead of it): still held, nothing left to lift.
        let (_, seen) = started(&path, std::slice::from_ref(&a));
        assert_eq!(seen, [(vec!["192.0.2.1".to_string()], vec![])]);
        let records = Records::open(&path).unwrap();
        let configured = HashMap::from([("sshd".to_string(), vec![records::identity(&a.ban, 0)])]);
        assert!(records
            .unconfigured_commands(&configured)
            .unwrap()
            .is_empty());
        // The one ahead removed: its records are a removed action's, lifted with its unban.
        let (mut actions, _) = started(&path, &[b.clone(), a.clone()]);
        ban(&mut actions[0], "192.0.2.2");
        drop(actions);
        let orphans = records.unconfigured_commands(&configured).unwrap();
        let lifted: Vec<(String, Option<Vec<String>>)> = orphans
            .iter()
            .map(|o| (element_text(o.record.target), o.unban.clone()))
            .collect();
        assert_eq!(lifted, [("192.0.2.2".to_string(), Some(b.unban.clone()))]);
        // A changed `ban` is another identity: its records are taken over by position, as
        // other templates (the old unban, then the new ban, for an active one).
        let changed = command("c");
        let (_, seen) = started(&path, &[b, changed]);
        assert_eq!(
            seen[1],
            (vec![], vec!["192.0.2.1".to_string()]),
            "doubtful: lifted with the unban it was banned for, banned again"
        );
    }

    /// Two command actions of a jail with the same `ban` (different unbans): the first
    /// removed, the second takes its records (the identity is the `ban`'s, the second's suffix
    /// goes) and its own are the removed action's. Lifting them must not run an unban for a
    /// target the second still holds (the one `ban` program holds it for both): those records
    /// are forgotten; one it does not hold is lifted with its recorded unban.
    #[test]
    fn removing_one_of_two_actions_with_the_same_ban_lifts_nothing_the_other_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let lifts = dir.path().join("lifts");
        let first = command("a");
        let mut second = command("a");
        second.unban = vec![
            "sh".into(),
            "-c".into(),
            format!("echo \"$0\" >> {}", lifts.display()),
            "<ip>".into(),
        ];
        let (mut actions, _) = started(&path, &[first, second.clone()]);
        for action in &mut actions {
            ban(action, "192.0.2.1");
        }
        // Its ban failed for the first, say: held by the second only.
        ban(&mut actions[1], "192.0.2.2");
        drop(actions);
        // The first removed: the second holds what the first held (192.0.2.1).
        let (_, seen) = started(&path, std::slice::from_ref(&second));
        assert_eq!(seen, [(vec!["192.0.2.1".to_string()], vec![])]);
        let mut records = Records::open(&path).unwrap();
        let configured =
            HashMap::from([("sshd".to_string(), vec![records::identity(&second.ban, 0)])]);
        assert_eq!(records.unconfigured_commands(&configured).unwrap().len(), 2);
        lift_unconfigured(&mut records, &configured);
        let lifted = std::fs::read_to_string(&lifts).unwrap_or_default();
        assert_eq!(lifted, "192.0.2.2\n", "only what the second does not hold");
        assert!(records
            .unconfigured_commands(&configured)
            .unwrap()
            .is_empty());
        let held = records
            .commands("sshd", &records::identity(&second.ban, 0))
            .unwrap();
        assert_eq!(held.len(), 1, "the second still holds 192.0.2.1");
    }

    /// A database written when records were keyed by position (the previous release) is read:
    /// each position's records go to the action whose `ban` made them, wherever it is now, and
    /// those from before the templates were recorded to the action now at their position.
    #[test]
    fn records_kept_by_position_are_read_by_the_actions_identities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (a, b) = (command("a"), command("b"));
        let json = |t: &[String]| serde_json::to_string(t).unwrap();
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE command_bans (jail TEXT NOT NULL, action INTEGER NOT NULL,
             target TEXT NOT NULL, failures INTEGER NOT NULL, bantime INTEGER NOT NULL,
             port TEXT NOT NULL, protocol TEXT NOT NULL, settled INTEGER NOT NULL,
             commands INTEGER NOT NULL, ban_commands INTEGER NOT NULL DEFAULT 0,
             unban_argv TEXT NOT NULL DEFAULT '', PRIMARY KEY (jail, action, target));",
        )
        .unwrap();
        let row =
            |position: i64, target: &str, spec: &CommandSpec, known: bool| {
                db.execute(
                "INSERT INTO command_bans VALUES ('sshd', ?1, ?2, 2, -1, '', 'tcp', 1, ?3, ?4, ?5)",
                rusqlite::params![
                    position,
                    target,
                    records::fingerprint(&spec.ban, &spec.unban),
                    if known { records::fingerprint(&spec.ban, &[]) } else { 0 },
                    if known { json(&spec.unban) } else { String::new() }
                ],
            )
            .unwrap();
            };
        // [a, b] with .1 banned by both; `web`'s only action from before templates were kept.
        row(0, "192.0.2.1", &a, true);
        row(1, "192.0.2.1", &b, true);
        db.execute(
            "INSERT INTO command_bans VALUES ('web', 0, '192.0.2.9', 2, -1, '', 'tcp', 1, ?1, 0, '')",
            [records::fingerprint(&a.ban, &a.unban)],
        )
        .unwrap();
        drop(db);
        // a is taken out while the daemon was down: b (now first) keeps its own records, and
        // a's are a removed action's, lifted with its unban.
        let (_, seen) = started(&path, std::slice::from_ref(&b));
        assert_eq!(seen, [(vec!["192.0.2.1".to_string()], vec![])]);
        let records = Records::open(&path).unwrap();
        let configured = HashMap::from([
            ("sshd".to_string(), vec![records::identity(&b.ban, 0)]),
            ("web".to_string(), vec![records::identity(&a.ban, 0)]),
        ]);
        let orphans = records.unconfigured_commands(&configured).unwrap();
        let lifted: Vec<(&str, Option<Vec<String>>)> = orphans
            .iter()
            .map(|o| (o.jail.as_str(), o.unban.clone()))
            .collect();
        assert_eq!(lifted, [("sshd", Some(a.unban.clone()))]);
        // `web`'s record (templates unknown) goes to its action at position 0, whose
        // templates made it (same fingerprint): held.
        let mut web = CommandAction::new("web", 0, &configured["web"], a.clone());
        web.records = Some(Records::open(&path).unwrap());
        assert_eq!(
            web.list().unwrap().unwrap(),
            ["192.0.2.9/32".parse::<IpNetwork>().unwrap()]
        );
        assert!(records.unconfigured_commands(&configured).unwrap().len() == 1);
    }

    /// A `command_bans` table as the release before identities wrote it (keyed by position).
    fn by_position(path: &std::path::Path) -> rusqlite::Connection {
        let db = rusqlite::Connection::open(path).unwrap();
        db.execute_batch(
            "CREATE TABLE command_bans (jail TEXT NOT NULL, action INTEGER NOT NULL,
             target TEXT NOT NULL, failures INTEGER NOT NULL, bantime INTEGER NOT NULL,
             port TEXT NOT NULL, protocol TEXT NOT NULL, settled INTEGER NOT NULL,
             commands INTEGER NOT NULL, ban_commands INTEGER NOT NULL DEFAULT 0,
             unban_argv TEXT NOT NULL DEFAULT '', PRIMARY KEY (jail, action, target));",
        )
        .unwrap();
        db
    }

    /// A held record of `sshd`'s command action at `position`, banned by `spec`'s templates.
    fn held_by(db: &rusqlite::Connection, position: i64, target: &str, spec: &CommandSpec) {
        db.execute(
            "INSERT INTO command_bans VALUES ('sshd', ?1, ?2, 2, -1, '', 'tcp', 1, ?3, ?4, ?5)",
            rusqlite::params![
                position,
                target,
                records::fingerprint(&spec.ban, &spec.unban),
                records::fingerprint(&spec.ban, &[]),
                serde_json::to_string(&spec.unban).unwrap()
            ],
        )
        .unwrap();
    }

    /// Migrated records go to the action the config says made them (review-act5 finding 5),
    /// not to the first action of their `ban`: two actions with the same `ban` where only the
    /// second has records (the first's stop ran); and a position whose records were made by
    /// two `ban` templates (an old unban that kept failing), one of them another action's.
    #[test]
    fn migrated_records_go_to_the_action_the_config_says_made_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dup.db");
        let first = command("same");
        let second = CommandSpec {
            unban: vec!["true".into(), "other-unban".into(), "<ip>".into()],
            ..first.clone()
        };
        let db = by_position(&path);
        held_by(&db, 1, "192.0.2.1", &second);
        drop(db);
        let (_, seen) = started(&path, &[first.clone(), second.clone()]);
        assert_eq!(
            seen,
            [(vec![], vec![]), (vec!["192.0.2.1".to_string()], vec![])],
            "the second action holds its ban; the first runs its own"
        );
        let ids = super::super::command_identities(&[
            super::super::ActionSpec::Command(first.clone()),
            super::super::ActionSpec::Command(second),
        ]);
        let records = Records::open(&path).unwrap();
        assert!(records
            .unconfigured_commands(&HashMap::from([("sshd".to_string(), ids)]))
            .unwrap()
            .is_empty());

        // Position 0 holds a ban of its current `ban` and one of an older `ban` that another
        // action of the jail runs now (whichever fingerprint is the larger).
        let (x, y) = (command("x"), command("y"));
        let fp = |c: &CommandSpec| records::fingerprint(&c.ban, &[]);
        let (high, low) = if fp(&x) > fp(&y) { (x, y) } else { (y, x) };
        let path = dir.path().join("mixed.db");
        let db = by_position(&path);
        held_by(&db, 0, "192.0.2.1", &high);
        held_by(&db, 0, "192.0.2.2", &low);
        drop(db);
        let (_, seen) = started(&path, &[low, high]);
        assert_eq!(
            seen,
            [
                (vec!["192.0.2.2".to_string()], vec![]),
                (vec!["192.0.2.1".to_string()], vec![])
            ],
            "each ban held by the program that ran it"
        );
    }

    /// A downgrade to the release before identities, then this release again (review-act5
    /// finding 3, review-act6 findings 1 and 5): the old release can record (the `position`
    /// column has a default; the first release keyed by identity lacked it, and every write of
    /// the old one failed). Only the records of targets it recorded a command of, by the same
    /// program, give way to what it left: the ban it ran again is held once, the ban it lifted
    /// meanwhile is not unbanned again, and a ban it never saw (it ended before the old
    /// release started: that release never unbans it) stays held, so its `unban` runs at the
    /// start. A record of another program at the position (the config changed across the
    /// downgrade) stays too.
    #[test]
    fn records_written_by_a_downgrade_are_keyed_again_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let (a, b) = (command("a"), command("b"));
        // The table as the first release keyed by identity made it: no default position.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE command_bans (jail TEXT NOT NULL, action TEXT NOT NULL,
             position INTEGER NOT NULL, target TEXT NOT NULL, failures INTEGER NOT NULL,
             bantime INTEGER NOT NULL, port TEXT NOT NULL, protocol TEXT NOT NULL,
             settled INTEGER NOT NULL, commands INTEGER NOT NULL,
             ban_commands INTEGER NOT NULL DEFAULT 0, unban_argv TEXT NOT NULL DEFAULT '',
             PRIMARY KEY (jail, action, target));",
        )
        .unwrap();
        drop(db);
        let (mut actions, _) = started(&path, std::slice::from_ref(&a));
        for target in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
            ban(&mut actions[0], target);
        }
        drop(actions);
        // A record of another program at that position (the config had command action `b`
        // there before): its record of .1 is not the old release's to replace.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute(
            "INSERT INTO command_bans
             (jail, action, position, target, failures, bantime, port, protocol, settled,
              commands, ban_commands, unban_argv)
             VALUES ('sshd', ?1, 0, '192.0.2.1', 2, -1, '', 'tcp', 1, ?2, ?3, ?4)",
            rusqlite::params![
                records::identity(&b.ban, 0),
                records::fingerprint(&b.ban, &b.unban),
                records::fingerprint(&b.ban, &[]),
                serde_json::to_string(&b.unban).unwrap()
            ],
        )
        .unwrap();
        drop(db);
        // The old release (action `a` at position 0): it finds none of these records (its
        // `action` is the position), so it runs `ban` again for the active ones, .1 and .3,
        // and records them its way; it lifts .3 (its unban deletes the record). .2 ended
        // before it started: it never sees it.
        let old_release = |target: &str| {
            let db = rusqlite::Connection::open(&path).unwrap();
            db.execute(
                "INSERT OR REPLACE INTO command_bans
                 (jail, action, target, failures, bantime, port, protocol, settled, commands,
                  ban_commands, unban_argv)
                 VALUES ('sshd', ?1, ?2, 2, -1, '', 'tcp', 1, ?3, ?4, ?5)",
                rusqlite::params![
                    0i64,
                    target,
                    records::fingerprint(&a.ban, &a.unban),
                    records::fingerprint(&a.ban, &[]),
                    serde_json::to_string(&a.unban).unwrap()
                ],
            )
            .expect("the old release records");
            db
        };
        drop(old_release("192.0.2.1"));
        old_release("192.0.2.3")
            .execute_batch("DELETE FROM command_bans WHERE action = '0' AND target = '192.0.2.3'")
            .unwrap();
        let (mut actions, seen) = started(&path, std::slice::from_ref(&a));
        assert_eq!(
            seen,
            [(
                vec!["192.0.2.1".to_string(), "192.0.2.2".to_string()],
                vec![]
            )],
            ".1 held once (no ban again), .2 held: the start unbans it (not restored)"
        );
        actions[0]
            .apply(&[ActionCommand::Unban("192.0.2.2".parse().unwrap())])
            .unwrap();
        drop(actions);
        let records = Records::open(&path).unwrap();
        let ids = HashMap::from([("sshd".to_string(), vec![records::identity(&a.ban, 0)])]);
        let orphans: Vec<String> = records
            .unconfigured_commands(&ids)
            .unwrap()
            .iter()
            .map(|o| element_text(o.record.target))
            .collect();
        assert_eq!(orphans, ["192.0.2.1"], "b's record stays: its unban runs");
        let all: Vec<String> = records
            .commands("sshd", &records::identity(&a.ban, 0))
            .unwrap()
            .iter()
            .map(|r| element_text(r.target))
            .collect();
        assert_eq!(all, ["192.0.2.1"]);
        drop(records);
        // The start's sweep lifts b's record with its unban, and forgets it.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute(
            "DELETE FROM command_bans WHERE action = ?1",
            [records::identity(&b.ban, 0)],
        )
        .unwrap();
        drop(db);

        // Down again: the old release runs `ban` again for .1, then its `stop` template lifts
        // every ban and it forgets its records. Back here, .1 is not held: its `ban` runs.
        old_release("192.0.2.1")
            .execute_batch("DELETE FROM command_bans WHERE jail = 'sshd' AND action = '0';")
            .unwrap();
        let (_, seen) = started(&path, std::slice::from_ref(&a));
        assert_eq!(seen, [(vec![], vec![])]);
    }

    #[test]
    fn placeholders_fill_inside_arguments() {
        let values = [
            ("<ip>", "192.0.2.0/24".to_string()),
            ("<jail>", "sshd".to_string()),
        ];
        assert_eq!(
            fill("ban <ip> in <jail> (<ip>)", &values),
            "ban 192.0.2.0/24 in sshd (192.0.2.0/24)"
        );
        assert_eq!(fill("<other>", &values), "<other>");
    }

    #[test]
    fn matches_are_shell_safe_and_tab_separated() {
        let line = |host: &str, message: &str| Line {
            at_ms: 0,
            host: Some(host.into()),
            program: Some("sshd".into()),
            message: message.into(),
            count: 1,
        };
        let evidence = [
            line("web-1", "Invalid user $(reboot) from 192.0.2.1"),
            line("web-2", "Failed password for `id` from 192.0.2.1"),
        ];
        assert_eq!(
            matches(&evidence),
            "web-1 sshd: Invalid user __reboot_ from 192.0.2.1\tweb-2 sshd: Failed password for _id_ from 192.0.2.1"
        );
    }
}
