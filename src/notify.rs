//! systemd's readiness protocol (sd_notify): one datagram to `$NOTIFY_SOCKET` per state change,
//! so a `Type=notify` unit is "started" only once every listener is bound.
//!
//! The states and the monotonic clock come from the `sd-notify` crate. The datagram is sent
//! here, because sd-notify 0.5 connects to `$NOTIFY_SOCKET` as a path only, while systemd and
//! container managers may hand out an abstract socket (`@name`), which this also reaches.
//! Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing. A failed send is
//! logged and otherwise ignored: the daemon's work matters more than its supervisor's view.

use std::fmt::Write as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use sd_notify::NotifyState;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor an abstract name (`@name`).
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor @abstract")]
    BadAddress(String),
    /// The socket could not be created or the datagram not sent.
    #[error("cannot notify {socket:?}: {os_error}")]
    Send {
        /// `$NOTIFY_SOCKET`.
        socket: String,
        /// The OS error.
        os_error: std::io::Error,
    },
}

/// Sends `states` to `$NOTIFY_SOCKET`, one `KEY=VALUE` line each.
/// Returns false when there is no socket to tell.
pub(crate) fn notify(states: &[NotifyState]) -> Result<bool, NotifyError> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    let addr = address(&socket)?;
    let state = lines(states);
    let send = || -> std::io::Result<()> {
        let datagram = UnixDatagram::unbound()?;
        datagram.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    };
    send().map_err(|os_error| NotifyError::Send { socket, os_error })?;
    Ok(true)
}

fn address(socket: &str) -> Result<SocketAddr, NotifyError> {
    let bad = || NotifyError::BadAddress(socket.to_string());
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes()).map_err(|_| bad())
    } else if socket.starts_with('/') {
        SocketAddr::from_pathname(socket).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// The datagram for `states`.
fn lines(states: &[NotifyState]) -> String {
    let mut text = String::new();
    for state in states {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{state}");
    }
    text
}

/// Sends `states`, logging a failure instead of returning it.
fn tell(states: &[NotifyState]) {
    match notify(states) {
        Ok(true) => tracing::debug!(state = %lines(states), "notified systemd"),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, state = %lines(states), "cannot notify systemd"),
    }
}

/// Every listener is bound and every action started: systemd may start dependent units.
pub(crate) fn ready() {
    tell(&[NotifyState::Ready, NotifyState::Status("ready")]);
}

/// Shutdown began: systemd shows "deactivating" instead of a hung service.
pub(crate) fn stopping() {
    tell(&[NotifyState::Stopping]);
}

/// A reload in progress: sends `RELOADING=1` (with the `MONOTONIC_USEC` systemd 253+ asks for)
/// when made and `READY=1` when dropped, so every way out of a reload, refused or not, ends it.
pub(crate) struct Reloading(());

impl Reloading {
    /// Tells systemd a reload started.
    pub(crate) fn begin() -> Reloading {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => tell(&[NotifyState::Reloading, now]),
            // Without the clock systemd 253+ would refuse the reload message: say nothing.
            Err(error) => tracing::warn!(%error, "cannot read the monotonic clock for systemd"),
        }
        Reloading(())
    }
}

impl Drop for Reloading {
    fn drop(&mut self) {
        ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(address("/run/systemd/notify").is_ok());
        assert!(address("@/org/freedesktop/systemd1/notify/1").is_ok());
        assert!(matches!(
            address("relative/path"),
            Err(NotifyError::BadAddress(_))
        ));
    }

    #[test]
    fn states_are_one_line_each() {
        assert_eq!(
            lines(&[NotifyState::Reloading, NotifyState::MonotonicUsec(42)]),
            "RELOADING=1\nMONOTONIC_USEC=42\n"
        );
        assert_eq!(
            lines(&[NotifyState::Ready, NotifyState::Status("ready")]),
            "READY=1\nSTATUS=ready\n"
        );
    }
}
