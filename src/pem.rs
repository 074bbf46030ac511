//! PEM certificate files read into DER certificates, and the crypto provider: one place for
//! every TLS peer we configure (the syslog listener's chain and client CA, the fleet's Redis
//! CA), which the fleet cannot take from `config`, which imports it.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why a PEM certificate file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// It cannot be read.
    #[error("{0}")]
    Read(std::io::Error),
    /// A PEM section that does not decode.
    #[error("not PEM: {0}")]
    Pem(rustls_pki_types::pem::Error),
    /// No `CERTIFICATE` section.
    #[error("holds no PEM certificate")]
    NoCertificate,
}

/// The ring provider, named rather than taken from the process default, so nothing depends on
/// which provider some other crate installed. rustls 0.23.48 deprecates it for lacking the
/// post-quantum hybrid key exchange (X25519MLKEM768); aws-lc-rs has it but builds a large C
/// library (minutes on small build hosts), and syslog clients (rsyslog's GnuTLS and OpenSSL
/// drivers) and Redis's TLS negotiate X25519 or P-256 today. Revisit when ring gains ML-KEM or
/// clients move.
#[allow(deprecated)]
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file at `path`; a file with none is an error, since a CA or a
/// chain that trusts nothing is a mistake, not a setting.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = std::fs::read(path).map_err(PemError::Read)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(PemError::Pem)?;
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}
