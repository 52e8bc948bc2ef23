//! TLS for Alicia's listeners (the broker's MQTT and WebSocket listeners, the gateway's HTTPS
//! listener), in Mosquitto's terms: a `cafile` that client certificates must chain to, a
//! `certfile`/`keyfile` the server presents, a `crlfile` of revoked certificates.
//!
//! Built on rustls and rustls-webpki, with one addition: **X.509 v1 certificates**. OpenSSL
//! 3.0's `openssl x509 -req` without `-extfile` makes v1 certificates, and those are exactly the
//! commands of Alicia's design document (and of many Mosquitto tutorials). webpki refuses any
//! certificate that is not v3 (`UnsupportedCertVersion`), for the server's own certificate as
//! well as for clients'. This crate accepts them, as Mosquitto (OpenSSL) does, with the same
//! checks as for v3 ([`verify`]):
//!
//! - the certificate must be signed directly by a certificate in `cafile`, and that issuer must
//!   itself be a CA (v3, `basicConstraints` CA:TRUE, `keyCertSign` if it has a key usage): a v1
//!   certificate has no extensions, so it can never be an issuer itself, and is never accepted
//!   as an intermediate;
//! - its signature is checked with the same algorithms webpki accepts (RSA PKCS#1 with
//!   SHA-256/384/512 of 2048 bits or more, ECDSA P-256/P-384, Ed25519; no SHA-1);
//! - it must be within its validity period;
//! - with a CRL it must not be revoked (the CRL's own signature checked against the CA), and a
//!   CA with no CRL in the file is handled as for v3 (refused, unless the policy allows an
//!   unknown status);
//! - the TLS handshake signature is checked against its public key as for any certificate.
//!
//! The server's own chain is completed from `cafile` when `certfile` holds only its certificate,
//! as Mosquitto (OpenSSL) does ([`chain`]).
//!
//! v3 certificates go through webpki unchanged. [`watch::WatchedTrust`] re-reads a CRL file
//! when it changes, so a revocation takes effect without a restart.

pub mod chain;
pub mod load;
pub mod verify;
pub mod watch;

use std::path::{Path, PathBuf};

pub use load::{certified_key, certified_key_with_cas, read_certs, read_crls, server_config, Trust};
pub use verify::{ClientVerifier, Policy};
pub use watch::WatchedTrust;

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{}: {why}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the combination.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

pub(crate) fn file_err(path: &Path, why: impl ToString) -> TlsError {
    TlsError::File { path: path.to_path_buf(), why: why.to_string() }
}

/// The crypto provider every Alicia listener uses (ring, as rustls is built here).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// The Common Name of a DER certificate (v1 or v3).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}
