//! Syslog over Unix datagram sockets, the way `/dev/log` takes it: `logger -u PATH`, and
//! journald's `ForwardToSyslog=yes`, which writes `<PRI>TIMESTAMP IDENT[PID]: MESSAGE` (no
//! host name) to `/run/systemd/journal/syslog`.
//!
//! Local senders are not checked against `allowed_senders` (they have no address): the socket
//! file's mode and group decide who may write. Events without a host name get this host's
//! name, as rsyslog's imuxsock gives them.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::batch::Batch;
use super::udp::Datagrams;
use super::Origin;

/// A bound Unix datagram socket and the host name its events get.
pub(crate) struct LocalSocket {
    socket: UnixDatagram,
    host: String,
}

impl Datagrams for LocalSocket {
    const TRANSPORT: &'static str = "unix";

    async fn receive(&self, batch: &mut Batch) -> io::Result<usize> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || batch.receive(fd))
            .await
    }

    fn origin<'s>(&'s self, _batch: &Batch, _i: usize) -> Origin<'s> {
        Origin::Local(&self.host)
    }
}

/// Who may write to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Access {
    /// Permission bits of the socket file (0o666 as `/dev/log` by default).
    pub mode: u32,
    /// Group the socket file is given, with `mode` 0o660 the only local writers besides root.
    pub group: Option<u32>,
}

/// Binds `path` with `access`. A stale socket file left by a crash is replaced; a socket that
/// another process still serves (rsyslog on the journal's socket, say) is an error, not stolen.
pub(crate) fn bind(path: &Path, access: Access) -> io::Result<LocalSocket> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let probe = std::os::unix::net::UnixDatagram::unbound()?;
            if probe.connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is served by another process", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let socket = UnixDatagram::bind(path)?;
    if let Some(gid) = access.group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))?;
    Ok(LocalSocket {
        socket,
        host: local_host_name(),
    })
}

/// This host's short name, as rsyslog writes it for local messages; "localhost" when the
/// kernel has none.
pub(crate) fn local_host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = if rc == 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    match name.split('.').next() {
        Some(short) if !short.is_empty() => short.to_string(),
        _ => "localhost".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_served_socket_is_not_stolen_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/log.sock");
        let access = Access {
            mode: 0o620,
            group: None,
        };
        let first = bind(&path, access).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o620);
        let err = bind(&path, access).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(first);
        let second = bind(&path, access).unwrap();
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender.send_to(b"<13>x: y", &path).unwrap();
        let mut batch = Batch::new();
        batch.fit(64);
        assert_eq!(second.receive(&mut batch).await.unwrap(), 1);
        assert_eq!(batch.datagram(0), (&b"<13>x: y"[..], false));
        let origin = second.origin(&batch, 0);
        assert!(matches!(origin, Origin::Local(h) if !h.is_empty()));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        assert_eq!(
            bind(&path, access).err().unwrap().kind(),
            io::ErrorKind::AlreadyExists
        );
    }
}
