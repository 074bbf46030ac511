//! Syslog over TLS (RFC 5425) with rustls: the TCP listener of [`super::tcp`] with a handshake
//! in front. The handshake has its own timeout (a client that never finishes it holds a
//! connection slot only that long); a failed one is closed and counted as
//! `jailsink_messages_dropped_total{reason="tls_handshake"}`. Frames after it are read exactly as
//! on TCP (octet counting as RFC 5425 requires, or newlines as rsyslog can send).
//!
//! The server config sits behind an [`ArcSwapOption`] that `reload` replaces: new handshakes
//! use renewed certificate files, running connections keep theirs. A running connection's
//! client certificate chain (kept from its handshake) is checked again at its first read after
//! a reload, against the new settings' client verifier: one the new `tls_client_ca` would not
//! accept is closed there, counted as a `tls_handshake` drop and logged, as a sender a reload
//! takes out of `allowed_senders` is ([`Verified`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use metrics::Counter;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::tcp::Upgrade;
use crate::config::tls::TlsServer;
use crate::metrics::{messages_dropped, DropReason};

/// The TLS settings new handshakes use (and open connections are checked against after a
/// reload), swapped by `reload`.
pub(crate) type SharedTlsConfig = Arc<ArcSwapOption<TlsServer>>;

/// The TLS handshake as an [`Upgrade`] of accepted TCP sockets.
#[derive(Clone)]
pub(crate) struct Handshake {
    config: SharedTlsConfig,
    timeout: Duration,
    failed: Counter,
}

impl Handshake {
    /// Handshakes with the current `config`, each given at most `timeout`.
    pub(crate) fn new(config: SharedTlsConfig, timeout: Duration) -> Self {
        Handshake {
            config,
            timeout,
            failed: messages_dropped(DropReason::TlsHandshake),
        }
    }
}

impl Upgrade for Handshake {
    type Stream = Verified;
    const TRANSPORT: &'static str = "tls";

    async fn upgrade(&self, stream: TcpStream, peer: SocketAddr) -> Option<Self::Stream> {
        let Some(server) = self.config.load_full() else {
            self.failed.increment(1);
            tracing::warn!(%peer, "no TLS certificate loaded; connection closed");
            return None;
        };
        let stream = match tokio::time::timeout(
            self.timeout,
            TlsAcceptor::from(server.config.clone()).accept(stream),
        )
        .await
        {
            Err(_) => {
                self.failed.increment(1);
                tracing::info!(%peer, "TLS handshake timed out; connection closed");
                return None;
            }
            Ok(Err(error)) => {
                self.failed.increment(1);
                tracing::info!(%peer, %error, "TLS handshake failed; connection closed");
                return None;
            }
            Ok(Ok(stream)) => stream,
        };
        let (_, session) = stream.get_ref();
        match session.peer_certificates().and_then(|chain| chain.first()) {
            Some(cert) => {
                let subject = subject(cert).unwrap_or_else(|| "(unreadable)".to_string());
                tracing::info!(%peer, %subject, "TLS client certificate accepted");
            }
            None => tracing::debug!(%peer, "TLS connected"),
        }
        Some(Verified {
            stream,
            checked: server,
            shared: arc_swap::Cache::new(self.config.clone()),
            peer,
            refused: false,
            failed: self.failed.clone(),
        })
    }
}

/// A TLS connection whose client certificate chain is checked again whenever a reload has
/// swapped the TLS settings: at the first read after it, against the new settings' client
/// verifier. A refused client's read fails (a `PermissionDenied` error, which ends the
/// connection with what it sent since unread), and the refusal is counted and logged once.
/// Between reloads a read costs one atomic load and one pointer comparison more than the bare
/// stream's (the settings are read through an `arc_swap::Cache`, which touches no reference
/// count until they change).
pub(crate) struct Verified {
    stream: TlsStream<TcpStream>,
    /// The settings the chain was last found acceptable by (at the handshake, or a reload).
    checked: Arc<TlsServer>,
    /// The settings now, cached: `load` is one atomic load while they are unchanged.
    shared: arc_swap::Cache<SharedTlsConfig, Option<Arc<TlsServer>>>,
    peer: SocketAddr,
    /// Refused already: every later read fails too, and is not counted again.
    refused: bool,
    failed: Counter,
}

impl Verified {
    /// Err when a reload since the last check brought settings that do not accept the
    /// client's certificate chain.
    fn recheck(&mut self) -> std::io::Result<()> {
        let refusal = || {
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the reloaded TLS settings no longer accept the client certificate",
            )
        };
        if self.refused {
            return Err(refusal());
        }
        // None: no certificate loaded any more (the listener is going away with it).
        let Some(now) = self
            .shared
            .load()
            .as_ref()
            .filter(|n| !Arc::ptr_eq(n, &self.checked))
            .cloned()
        else {
            return Ok(());
        };
        let chain = self.stream.get_ref().1.peer_certificates();
        match now.accepts(chain) {
            Ok(()) => {
                self.checked = now;
                Ok(())
            }
            Err(reason) => {
                self.refused = true;
                self.failed.increment(1);
                let subject = chain
                    .and_then(|c| c.first())
                    .map(|c| subject(c).unwrap_or_else(|| "(unreadable)".to_string()))
                    .unwrap_or_else(|| "(none)".to_string());
                tracing::info!(
                    peer = %self.peer,
                    %subject,
                    %reason,
                    "connection closed: the reloaded TLS settings no longer accept its client certificate"
                );
                Err(refusal())
            }
        }
    }
}

impl AsyncRead for Verified {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(error) = this.recheck() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

/// One DER element: tag, contents, and what follows it. Only what certificates use (one-byte
/// tags, definite lengths up to 4 bytes).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The subject of a DER certificate as RFC 4514 text (`CN=host,O=Example`), for the log.
pub(crate) fn subject(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity: skipped.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, mut name, _) = element(rest)? else {
        return None;
    };
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (_, mut set, next) = element(name)?;
        name = next;
        while !set.is_empty() {
            let (_, pair, next) = element(set)?;
            set = next;
            let (_, oid, value) = element(pair)?;
            let (_, value, _) = element(value)?;
            parts.push(format!(
                "{}={}",
                attribute(oid),
                String::from_utf8_lossy(value).replace(',', "\\,")
            ));
        }
    }
    parts.reverse();
    Some(parts.join(","))
}

/// The short name of an X.520 attribute, or its dotted OID.
fn attribute(oid: &[u8]) -> String {
    let short = match oid {
        [0x55, 0x04, 0x03] => "CN",
        [0x55, 0x04, 0x06] => "C",
        [0x55, 0x04, 0x07] => "L",
        [0x55, 0x04, 0x08] => "ST",
        [0x55, 0x04, 0x0a] => "O",
        [0x55, 0x04, 0x0b] => "OU",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => "",
    };
    if !short.is_empty() {
        return short.to_string();
    }
    let mut arcs = Vec::new();
    let mut value = 0u64;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    #[test]
    fn garbage_is_no_subject() {
        assert_eq!(super::subject(b""), None);
        assert_eq!(super::subject(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(super::subject(&[0x30, 0x02, 0x30, 0x00]), None);
    }

    #[test]
    fn unknown_attributes_show_their_oid() {
        assert_eq!(super::attribute(&[0x55, 0x04, 0x03]), "CN");
        // 0.9.2342.19200300.100.1.25 (domainComponent)
        assert_eq!(
            super::attribute(&[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19]),
            "0.9.2342.19200300.100.1.25"
        );
    }
}
