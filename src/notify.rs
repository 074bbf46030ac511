//! systemd's readiness protocol (sd_notify): one datagram to `$NOTIFY_SOCKET` per state change,
//! so a `Type=notify` unit is "started" only once every listener is bound.
//!
//! A few lines of our own rather than a crate: the protocol is one `sendto` of `KEY=VALUE`
//! lines. Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing. A failed send is
//! logged and otherwise ignored: the daemon's work matters more than its supervisor's view.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor an abstract name (`@name`).
    #[error("NOTIFY_SOCKET {0:?} is neither an absolute path nor @abstract")]
    BadAddress(String),
    /// The socket could not be created or the datagram not sent.
    #[error("cannot notify {socket:?}: {source}")]
    Send {
        /// `$NOTIFY_SOCKET`.
        socket: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to `$NOTIFY_SOCKET`.
/// Returns false when there is no socket to tell.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    let addr = address(&socket)?;
    let send = || -> std::io::Result<()> {
        let datagram = UnixDatagram::unbound()?;
        datagram.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    };
    send().map_err(|source| NotifyError::Send { socket, source })?;
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

/// Sends `state`, logging a failure instead of returning it.
fn tell(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(state, "notified systemd"),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, state, "cannot notify systemd"),
    }
}

/// Every listener is bound and every action started: systemd may start dependent units.
pub fn ready() {
    tell("READY=1\nSTATUS=ready");
}

/// Shutdown began: systemd shows "deactivating" instead of a hung service.
pub fn stopping() {
    tell("STOPPING=1");
}

/// A reload in progress: sends `RELOADING=1` (with the `MONOTONIC_USEC` systemd 253+ asks for)
/// when made and `READY=1` when dropped, so every way out of a reload, refused or not, ends it.
pub struct Reloading(());

impl Reloading {
    /// Tells systemd a reload started.
    pub fn begin() -> Reloading {
        tell(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        Reloading(())
    }
}

impl Drop for Reloading {
    fn drop(&mut self) {
        ready();
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reload times on.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer we pass and nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1000
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
    fn the_monotonic_clock_advances() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() > a);
    }
}
