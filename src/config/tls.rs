//! `[server] tls_cert`, `tls_key` and `tls_client_ca` read into a rustls server config: every
//! file is read when the config is compiled (by `check`, at start and by each `reload`), so
//! a missing file, a key that does not match the certificate or a CA that is no certificate is
//! a config error naming the key and the file, and renewed files are picked up by `reload`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// The files of the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates; when set, only clients with a certificate they signed are served.
    pub client_ca: Option<PathBuf>,
}

/// The compiled TLS identity: the files and the rustls config made from them. Two are equal
/// when they name the same files (the contents are whatever was read last).
#[derive(Debug, Clone)]
pub struct TlsServer {
    /// Where it was read from.
    pub files: TlsFiles,
    /// The server config handshakes use.
    pub config: Arc<rustls::ServerConfig>,
}

impl PartialEq for TlsServer {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

/// Why the TLS files could not be used: the config key to blame and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TlsFileError {
    /// `server.tls_cert`, `server.tls_key` or `server.tls_client_ca`.
    pub key: &'static str,
    /// What is wrong, naming the file.
    pub reason: String,
}

fn fail(key: &'static str, path: &Path, what: impl std::fmt::Display) -> TlsFileError {
    TlsFileError {
        key,
        reason: format!("{}: {what}", path.display()),
    }
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = std::fs::read(path).map_err(|e| fail(key, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(key, path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(fail(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The ring provider, named rather than taken from the process default, so nothing depends on
/// which provider some other crate installed. rustls 0.23.48 deprecates it for lacking the
/// post-quantum hybrid key exchange (X25519MLKEM768); aws-lc-rs has it but builds a large C
/// library (minutes on small build hosts), and syslog clients (rsyslog's GnuTLS and OpenSSL
/// drivers) negotiate X25519 or P-256 today. Revisit when ring gains ML-KEM or clients move.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the files into a rustls server config.
pub fn load(files: &TlsFiles) -> Result<TlsServer, TlsFileError> {
    let chain = certificates("server.tls_cert", &files.cert)?;
    let key_bytes = std::fs::read(&files.key).map_err(|e| fail("server.tls_key", &files.key, e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
        fail(
            "server.tls_key",
            &files.key,
            format!("no PEM private key: {e}"),
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("server.tls_cert", &files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("server.tls_client_ca", ca)? {
                roots
                    .add(cert)
                    .map_err(|e| fail("server.tls_client_ca", ca, e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| fail("server.tls_client_ca", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => fail(
            "server.tls_key",
            &files.key,
            format!("does not match the certificate in {}", files.cert.display()),
        ),
        e => fail("server.tls_key", &files.key, e),
    })?;
    Ok(TlsServer {
        files: files.clone(),
        config: Arc::new(config),
    })
}
