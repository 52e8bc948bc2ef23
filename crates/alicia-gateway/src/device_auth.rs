//! Device certificate checks: chain to the home CA, validity dates, revocation, and the
//! Common Name as the device id.
//!
//! The check is `alicia-tls`'s client-certificate verifier (rustls-webpki with ring for v3
//! certificates, the same checks by hand for X.509 v1 ones, which OpenSSL's `x509 -req` makes),
//! the same one the broker's TLS listeners use, so a certificate the gateway accepts in a
//! request body is exactly one the broker and the mTLS listener would accept.
//! [`DeviceAuthority::client_verifier`] hands that verifier to an HTTPS listener.
//!
//! Revocation is a CRL file in PEM (`-----BEGIN X509 CRL-----`, one or more), the same file
//! the broker's `crlfile` option reads; a certificate whose serial it lists is refused. Only
//! the end-entity certificate's status is checked, and a certificate whose issuer has no CRL
//! in the file counts as not revoked. An authority made with [`DeviceAuthority::load`] looks at
//! the CRL file (size, modification time, inode) before each check and reads it again when it
//! changed, so `alicia certs revoke` takes effect on the next request without a restart; a CRL
//! that cannot be read then refuses every certificate (fail closed) until it is fixed.
//!
//! The device id is the certificate's first Common Name. It becomes an MQTT user name and a
//! topic level (`alicia/devices/<id>/#`), so a CN that is empty or contains `/`, `+`, `#` or a
//! control character is refused as malformed.

use std::path::Path;
use std::sync::Arc;

use alicia_tls::{ClientVerifier, Policy, WatchedTrust};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::CertificateError;

/// A device that proved its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The certificate's Common Name.
    pub device_id: String,
    /// The certificate's serial number, lower-case hex.
    pub serial: String,
}

/// Why a device certificate was refused. [`DeviceAuthError::reason`] is the text for clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceAuthError {
    #[error("certificate is malformed: {0}")]
    Malformed(String),
    #[error("certificate is not signed by this home's CA")]
    WrongCa,
    #[error("certificate has expired")]
    Expired,
    #[error("certificate is not valid yet")]
    NotYetValid,
    #[error("certificate has been revoked")]
    Revoked,
    #[error("certificate is not for client authentication")]
    WrongUsage,
    #[error("certificate refused: {0}")]
    Rejected(String),
    #[error("proof of possession failed: {0}")]
    Proof(String),
    #[error("CA or CRL file: {0}")]
    Config(String),
}

impl DeviceAuthError {
    /// The reason, for a 401 answer or a log line.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// The CA (and CRL) device certificates are checked against.
pub struct DeviceAuthority {
    trust: Trust,
}

/// A fixed trust (from PEM text) or one whose CRL file is watched.
enum Trust {
    Fixed(Arc<ClientVerifier>),
    Watched(WatchedTrust),
}

impl std::fmt::Debug for DeviceAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthority").finish_non_exhaustive()
    }
}

/// Devices may present certificates of a CA that has no CRL in the file, and only their own
/// status is looked up: the home CA issues devices directly.
const POLICY: Policy = Policy { mandatory: false, allow_unknown_revocation: true, end_entity_only: true };

fn config_err(e: alicia_tls::TlsError) -> DeviceAuthError {
    DeviceAuthError::Config(e.to_string())
}

impl DeviceAuthority {
    /// From the CA certificate(s) in PEM and optionally CRLs in PEM.
    pub fn new(ca_pem: &[u8], crl_pem: Option<&[u8]>) -> Result<Self, DeviceAuthError> {
        let origin = Path::new("CA");
        let trust = alicia_tls::Trust::from_pem(ca_pem, crl_pem, origin).map_err(config_err)?;
        let verifier = ClientVerifier::new(trust, POLICY, origin).map_err(config_err)?;
        Ok(Self { trust: Trust::Fixed(Arc::new(verifier)) })
    }

    /// From a CA file (`certs/ca.crt`) and an optional CRL file; a CRL path that does not
    /// exist counts as an empty list. The CRL file is watched: a changed file is read again
    /// before the next check.
    pub fn load(ca_file: &Path, crl_file: Option<&Path>) -> Result<Self, DeviceAuthError> {
        let trust = WatchedTrust::load(ca_file, crl_file, POLICY).map_err(config_err)?;
        Ok(Self { trust: Trust::Watched(trust) })
    }

    /// The verifier in force: for a watched CRL, rebuilt first if the file changed.
    fn current(&self) -> Result<Arc<ClientVerifier>, DeviceAuthError> {
        match &self.trust {
            Trust::Fixed(v) => Ok(v.clone()),
            Trust::Watched(w) => w.current().map_err(config_err),
        }
    }

    /// The verifier, for an HTTPS listener that asks for client certificates (8443). It is a
    /// snapshot: a later change of the CRL file does not reach it (the mTLS listener therefore
    /// uses it for handshake signatures only and leaves the certificate to
    /// [`DeviceAuthority::verify_chain`]).
    pub fn client_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        match &self.trust {
            Trust::Fixed(v) => v.clone(),
            Trust::Watched(w) => w.snapshot(),
        }
    }

    /// Checks a PEM certificate (the device's certificate first, then any intermediates).
    pub fn verify_pem(&self, pem: &str) -> Result<DeviceIdentity, DeviceAuthError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| DeviceAuthError::Malformed(format!("not PEM: {e}")))?;
        if chain.is_empty() {
            return Err(DeviceAuthError::Malformed("no certificate in the PEM text".into()));
        }
        self.verify_chain(&chain)
    }

    /// Checks a PEM certificate as [`DeviceAuthority::verify_pem`] does, and that whoever sent
    /// it holds its private key: `signature` must be the key's signature over `message` —
    /// ECDSA P-256/SHA-256 or P-384/SHA-384 (ASN.1 DER signature), Ed25519, or RSA PKCS#1 v1.5
    /// with SHA-256 (2048 bits or more), as the certificate's key type dictates.
    pub fn verify_pem_with_proof(
        &self,
        pem: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<DeviceIdentity, DeviceAuthError> {
        let identity = self.verify_pem(pem)?;
        let end = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| DeviceAuthError::Malformed("no certificate in the PEM text".into()))?;
        verify_proof(&end, message, signature)?;
        Ok(identity)
    }

    /// Checks a DER chain (end entity first), as a TLS layer presents it.
    pub fn verify_chain(&self, chain: &[CertificateDer<'_>]) -> Result<DeviceIdentity, DeviceAuthError> {
        self.verify_chain_at(chain, UnixTime::now())
    }

    /// Checks a DER chain as if the time were `now`.
    pub fn verify_chain_at(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<DeviceIdentity, DeviceAuthError> {
        let (end, intermediates) = chain.split_first().ok_or(DeviceAuthError::Malformed("no certificate".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(end)
            .map_err(|e| DeviceAuthError::Malformed(format!("not an X.509 certificate: {e}")))?;
        self.current()?.verify_client_cert(end, intermediates, now).map_err(classify)?;
        let cn = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| DeviceAuthError::Malformed("no Common Name (device id)".into()))?;
        if cn.is_empty() || cn.chars().any(|c| matches!(c, '/' | '+' | '#') || c.is_control()) {
            return Err(DeviceAuthError::Malformed("Common Name is not usable as a device id".into()));
        }
        let serial = parsed.tbs_certificate.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
        Ok(DeviceIdentity { device_id: cn.to_string(), serial })
    }
}

/// Checks `signature` over `message` with the public key of the DER certificate `cert`.
pub fn verify_proof(cert: &[u8], message: &[u8], signature: &[u8]) -> Result<(), DeviceAuthError> {
    use ring::signature as sig;
    use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519};
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| DeviceAuthError::Malformed(format!("not an X.509 certificate: {e}")))?;
    let spki = parsed.public_key();
    let key: &[u8] = &spki.subject_public_key.data;
    let oid = &spki.algorithm.algorithm;
    let alg: &dyn sig::VerificationAlgorithm = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY && key.len() == 65 {
        &sig::ECDSA_P256_SHA256_ASN1
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY && key.len() == 97 {
        &sig::ECDSA_P384_SHA384_ASN1
    } else if *oid == OID_SIG_ED25519 {
        &sig::ED25519
    } else if *oid == OID_PKCS1_RSAENCRYPTION {
        &sig::RSA_PKCS1_2048_8192_SHA256
    } else {
        return Err(DeviceAuthError::Proof("unsupported key type".into()));
    };
    sig::UnparsedPublicKey::new(alg, key)
        .verify(message, signature)
        .map_err(|_| DeviceAuthError::Proof("signature does not match the certificate's key".into()))
}

fn classify(e: rustls::Error) -> DeviceAuthError {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::BadEncoding => DeviceAuthError::Malformed("bad DER encoding".into()),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => DeviceAuthError::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => DeviceAuthError::NotYetValid,
            CertificateError::Revoked => DeviceAuthError::Revoked,
            CertificateError::UnknownIssuer | CertificateError::BadSignature => DeviceAuthError::WrongCa,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                DeviceAuthError::WrongUsage
            }
            other => DeviceAuthError::Rejected(format!("{other:?}")),
        },
        other => DeviceAuthError::Rejected(other.to_string()),
    }
}
