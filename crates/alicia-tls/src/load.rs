//! Reading PEM files into rustls types, and building server configurations from them.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::{file_err, provider, TlsError};

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate found"));
    }
    Ok(certs)
}

/// Every CRL in a PEM file (possibly none).
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))
}

/// What client certificates are checked against: the CA certificates and the CRLs.
#[derive(Debug, Clone)]
pub struct Trust {
    /// CA certificates (trust anchors).
    pub roots: Vec<CertificateDer<'static>>,
    /// Certificate revocation lists.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
}

impl Trust {
    /// From a CA file and an optional CRL file (both PEM).
    pub fn load(cafile: &Path, crlfile: Option<&Path>) -> Result<Trust, TlsError> {
        let roots = read_certs(cafile)?;
        let crls = match crlfile {
            Some(p) => read_crls(p)?,
            None => Vec::new(),
        };
        Ok(Trust { roots, crls })
    }

    /// From PEM text; `what` names the source in errors.
    pub fn from_pem(ca: &[u8], crl: Option<&[u8]>, what: &Path) -> Result<Trust, TlsError> {
        let roots: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(ca).collect::<Result<_, _>>().map_err(|e| file_err(what, e))?;
        if roots.is_empty() {
            return Err(file_err(what, "no CA certificate found"));
        }
        let crls = match crl {
            Some(pem) => CertificateRevocationListDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| file_err(what, e))?,
            None => Vec::new(),
        };
        Ok(Trust { roots, crls })
    }
}

/// The server's certificate chain and key, from PEM files. A v1 server certificate is
/// accepted (rustls' own loader refuses it); the key must match the certificate. The chain is
/// sent as the file has it: see [`certified_key_with_cas`] for Mosquitto's completion from
/// `cafile`.
pub fn certified_key(certfile: &Path, keyfile: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    certified_key_with_cas(certfile, keyfile, &[])
}

/// As [`certified_key`], and when `certfile` holds only the server's certificate, its issuers
/// found among `cas` (a listener's `cafile`) are sent after it up to the root, as Mosquitto
/// does ([`crate::chain::complete`]).
pub fn certified_key_with_cas(
    certfile: &Path,
    keyfile: &Path,
    cas: &[CertificateDer<'static>],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = crate::chain::complete(read_certs(certfile)?, cas);
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| file_err(keyfile, e))?;
    let signer = provider().key_provider.load_private_key(key).map_err(|e| file_err(keyfile, e))?;
    let end = chain.first().ok_or_else(|| file_err(certfile, "no certificate found"))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(end).map_err(|e| file_err(certfile, e))?;
    if let Some(spki) = signer.public_key() {
        if spki.as_ref() != parsed.tbs_certificate.subject_pki.raw {
            return Err(file_err(keyfile, format!("is not the key of the certificate in {}", certfile.display())));
        }
    }
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

/// Always the same certificate.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A server configuration (TLS 1.2 and 1.3) presenting `key`, asking for client certificates
/// when `clients` is given.
pub fn server_config(
    key: Arc<CertifiedKey>,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<ServerConfig, TlsError> {
    let provider: Arc<CryptoProvider> = provider();
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match clients {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_cert_resolver(Arc::new(OneCert(key))))
}
