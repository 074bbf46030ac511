//! `[server] tls_cert`, `tls_key` and `tls_client_ca` read into a rustls server config: every
//! file is read when the config is compiled (by `check`, at start and by each `reload`), so
//! a missing file, a key that does not match the certificate or a CA that is no certificate is
//! a config error naming the key and the file, and renewed files are picked up by `reload`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;

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
    /// The client certificate verifier inside `config` (None without `tls_client_ca`), kept
    /// so that a reload can check the clients already connected against the new CA: rustls
    /// does not hand the verifier of a config back.
    pub client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl TlsServer {
    /// Whether a client that presented `chain` (its certificate first, as the handshake kept
    /// it; None or empty when it sent none) would be accepted by these settings now: Err with
    /// the reason when not. A reload checks the open connections with it, so a client the new
    /// `tls_client_ca` no longer accepts (or whose certificate has expired since it connected)
    /// does not keep a connection it could not open again.
    pub fn accepts(&self, chain: Option<&[CertificateDer<'_>]>) -> Result<(), String> {
        let Some(verifier) = &self.client_verifier else {
            return Ok(());
        };
        match chain.and_then(|c| c.split_first()) {
            None if verifier.client_auth_mandatory() => Err("no client certificate".into()),
            None => Ok(()),
            Some((end_entity, intermediates)) => verifier
                .verify_client_cert(end_entity, intermediates, UnixTime::now())
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

impl PartialEq for TlsServer {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}

/// Why the TLS files could not be used: the config key to blame, its file, and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TlsFileError {
    /// `server.tls_cert`, `server.tls_key` or `server.tls_client_ca`.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: TlsProblem,
}

/// What is wrong with a TLS file.
#[derive(Debug, thiserror::Error)]
pub enum TlsProblem {
    /// It cannot be read, is not PEM, or holds no certificate.
    #[error(transparent)]
    Certificates(#[from] crate::pem::PemError),
    /// A key file that cannot be read.
    #[error("{0}")]
    Read(std::io::Error),
    /// A key file whose PEM does not decode.
    #[error("not PEM: {0}")]
    Pem(rustls_pki_types::pem::Error),
    /// The key does not belong to the certificate.
    #[error("does not match the certificate in {}", .0.display())]
    KeyMismatch(PathBuf),
    /// rustls refused it (an unsupported key type, a CA it cannot use).
    #[error("{0}")]
    Rustls(rustls::Error),
    /// The client CA list makes no verifier.
    #[error("{0}")]
    Verifier(rustls::server::VerifierBuilderError),
}

fn fail(key: &'static str, path: &Path, problem: TlsProblem) -> TlsFileError {
    TlsFileError {
        key,
        path: path.to_path_buf(),
        problem,
    }
}

fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    crate::pem::certificates(path).map_err(|e| fail(key, path, e.into()))
}

use crate::pem::provider;

/// Reads the files into a rustls server config.
pub fn load(files: &TlsFiles) -> Result<TlsServer, TlsFileError> {
    const CERT: &str = "server.tls_cert";
    const KEY: &str = "server.tls_key";
    const CA: &str = "server.tls_client_ca";
    let chain = certificates(CERT, &files.cert)?;
    let key_bytes =
        std::fs::read(&files.key).map_err(|e| fail(KEY, &files.key, TlsProblem::Read(e)))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| fail(KEY, &files.key, TlsProblem::Pem(e)))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(CERT, &files.cert, TlsProblem::Rustls(e)))?;
    let mut client_verifier = None;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(CA, ca)? {
                roots
                    .add(cert)
                    .map_err(|e| fail(CA, ca, TlsProblem::Rustls(e)))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| fail(CA, ca, TlsProblem::Verifier(e)))?;
            client_verifier = Some(verifier.clone());
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            fail(KEY, &files.key, TlsProblem::KeyMismatch(files.cert.clone()))
        }
        e => fail(KEY, &files.key, TlsProblem::Rustls(e)),
    })?;
    Ok(TlsServer {
        files: files.clone(),
        config: Arc::new(config),
        client_verifier,
    })
}
