//! At start, removes the firewall objects (iptables chain and its jumps, nftables chains and
//! sets, ipset sets and their rules) of actions no jail configures any more: a jail removed from
//! the config while the daemon was down after a crash (a clean stop removes them itself).
//!
//! Only what the state's record says this daemon made is touched ([`records`]), so a chain of
//! the same shape that another program (fail2ban) made is never removed; objects made before
//! the record existed are left as they were.

use std::collections::{HashMap, HashSet};

use super::{ActionKind, ActionSpec, FirewallSpec};
use crate::action::records;

/// The action whose `stop` removes the objects `object` records (never kept at stop), None for
/// a backend that makes none, or why the record cannot be read.
pub(crate) fn remover(object: &records::ObjectRecord) -> Result<Option<ActionSpec>, String> {
    let spec = serde_json::from_str::<FirewallSpec>(&object.spec).map_err(|e| e.to_string())?;
    let spec = FirewallSpec {
        keep_on_stop: false,
        ..spec
    };
    Ok(match ActionKind::parse(&object.backend) {
        Some(ActionKind::Iptables) => Some(ActionSpec::Iptables(spec)),
        Some(ActionKind::Nftables) => Some(ActionSpec::Nftables(spec)),
        Some(ActionKind::Ipset) => Some(ActionSpec::Ipset(spec)),
        _ => None,
    })
}

/// The start's sweep, before any jail's actions start: removes the recorded objects of every
/// backend and name `configured` does not hold ([`remove_unconfigured`]), and says whether a
/// command action no longer configured left recorded bans (`commands`: each jail's command
/// actions' identities), for [`lift_unconfigured_later`] once every jail protects.
///
/// Blocking (processes, SQLite): the daemon runs it on its state thread, never on a runtime
/// worker, where it would stall every task sharing that worker (the debug assertion keeps it so).
pub(crate) fn at_start(configured: &[ActionSpec], commands: &HashMap<String, Vec<String>>) -> bool {
    debug_assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "the start-up sweep blocks a runtime worker"
    );
    remove_unconfigured(configured);
    has_unconfigured_commands(commands)
}

/// Runs [`lift_unconfigured_commands`] on a thread of its own (thousands of records, or a hung
/// unban, must not hold anything back); only when [`at_start`] found some bans to lift, since a
/// thread made at every start would keep its malloc arena, which idle RSS shows.
pub(crate) fn lift_unconfigured_later(commands: HashMap<String, Vec<String>>) {
    let lifting = std::thread::Builder::new()
        .name("lift-unconfigured".into())
        .spawn(move || lift_unconfigured_commands(&commands));
    if let Err(error) = lifting {
        tracing::error!(%error, "cannot start lifting the bans of command actions no longer configured; tried at the next start");
    }
}

/// Removes the recorded objects of every backend and name `configured` does not hold, and
/// forgets them; returns how many actions' objects were removed. One that cannot be removed is
/// logged, counted and tried again at the next start.
fn remove_unconfigured(configured: &[ActionSpec]) -> usize {
    let Some(mut records) = records::open_configured() else {
        return 0;
    };
    remove_objects(&mut records, configured)
}

/// Whether a command action no longer configured left recorded bans (read before any thread
/// to lift them is made, so that one is made only when there are some).
fn has_unconfigured_commands(commands: &HashMap<String, Vec<String>>) -> bool {
    records::open_configured()
        .and_then(|records| records.unconfigured_commands(commands).ok())
        .is_some_and(|orphans| !orphans.is_empty())
}

/// Runs the recorded unban of every ban of a command action no longer configured (`commands`:
/// each jail's command actions' identities) and forgets it ([`super::command::lift_unconfigured`]).
pub(crate) fn lift_unconfigured_commands(commands: &HashMap<String, Vec<String>>) {
    let Some(mut records) = records::open_configured() else {
        return;
    };
    let lifted = super::command::lift_unconfigured(&mut records, commands);
    if lifted > 0 {
        tracing::info!(
            lifted,
            "lifted the bans of command actions no longer configured"
        );
    }
}

/// What removing a record of objects of earlier settings does when the record cannot be read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Forget it (the start's sweep: nothing this daemon can remove).
    Forget,
    /// Keep it, an error (a runner's: counted and tried again).
    Keep,
}

/// The remove-then-forget core of objects of earlier settings (recorded apart): removes what
/// `old` records (its backend's `stop`; nothing for a backend that makes none), then forgets
/// the record. On an error the record stays, for the next try; one that cannot be forgotten
/// is logged and counted, and removed again (harmlessly) at the next try.
pub(crate) fn remove_stale(
    records: &mut records::Records,
    old: &records::ObjectRecord,
    unreadable: Unreadable,
) -> Result<(), String> {
    match remover(old) {
        Ok(Some(action)) => action.build(&old.jail).stop().map_err(|e| e.to_string())?,
        Ok(None) => {}
        Err(error) if unreadable == Unreadable::Keep => return Err(error),
        Err(_) => {}
    }
    forget_stale(records, old);
    Ok(())
}

/// Forgets the record of objects of earlier settings (removed, or made again by the current
/// settings); an error is logged and counted.
pub(crate) fn forget_stale(records: &mut records::Records, old: &records::ObjectRecord) {
    if let Err(error) = records.drop_stale(old) {
        crate::metrics::state_errors().increment(1);
        tracing::error!(jail = %old.jail, backend = %old.backend, name = %old.name, %error, "cannot forget removed firewall objects of earlier settings");
    }
}

/// Removes the objects of earlier settings whose removal failed (recorded apart) under a
/// backend and name no action configures now (those configured are the runners' to retry, at
/// their start); forgets each removed, keeps those that fail for the next start.
fn remove_stale_unconfigured(records: &mut records::Records, kept: &HashSet<(&str, &str)>) {
    let stale = match records.stale(None) {
        Ok(stale) => stale,
        Err(error) => {
            crate::metrics::state_errors().increment(1);
            tracing::error!(%error, "cannot read which firewall objects of earlier settings wait for removal");
            return;
        }
    };
    for object in stale {
        if kept.contains(&(object.backend.as_str(), object.name.as_str())) {
            continue;
        }
        // Unreadable, or a backend that makes none: nothing this daemon can remove.
        if let Err(error) = remove_stale(records, &object, Unreadable::Forget) {
            let backend = ActionKind::parse(&object.backend).map_or("firewall", ActionKind::name);
            crate::metrics::action_errors(&object.jail, backend).increment(1);
            tracing::error!(jail = %object.jail, backend = %object.backend, name = %object.name, %error, "cannot remove the firewall objects of earlier settings; tried again at the next start");
        }
    }
}

fn remove_objects(records: &mut records::Records, configured: &[ActionSpec]) -> usize {
    let objects = match records.objects() {
        Ok(objects) => objects,
        Err(error) => {
            crate::metrics::state_errors().increment(1);
            tracing::error!(%error, "cannot read which firewall objects jailsink made");
            return 0;
        }
    };
    let kept: HashSet<(&str, &str)> = super::firewall_names(configured).collect();
    remove_stale_unconfigured(records, &kept);
    let mut removed = 0;
    for object in objects {
        if kept.contains(&(object.backend.as_str(), object.name.as_str())) {
            continue;
        }
        let forget = |records: &mut records::Records| {
            if let Err(error) = records.unmade(&object.backend, &object.name, &object.jail) {
                crate::metrics::state_errors().increment(1);
                tracing::error!(%error, "cannot forget removed firewall objects");
            }
        };
        let action = match remover(&object) {
            Ok(Some(action)) => action,
            Ok(None) => {
                forget(records);
                continue;
            }
            Err(error) => {
                tracing::warn!(jail = %object.jail, backend = %object.backend, name = %object.name, %error, "unreadable record of firewall objects: forgotten, the objects are left");
                forget(records);
                continue;
            }
        };
        let kind = ActionKind::parse(&object.backend);
        match action.build(&object.jail).stop() {
            Ok(()) => {
                tracing::info!(jail = %object.jail, backend = %object.backend, name = %object.name, "[{}] removed the firewall objects of a jail no longer configured", object.jail);
                forget(records);
                removed += 1;
            }
            Err(error) => {
                let backend = kind.map_or("firewall", ActionKind::name);
                crate::metrics::action_errors(&object.jail, backend).increment(1);
                tracing::error!(jail = %object.jail, backend = %object.backend, name = %object.name, %error, "cannot remove the firewall objects of a jail no longer configured; tried again at the next start");
            }
        }
    }
    removed
}
