//! Client-certificate verification: webpki for v3 certificates, the same checks by hand for
//! X.509 v1 certificates (see the crate documentation for what they are and why).

use std::sync::Arc;

use ring::signature as sig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use x509_parser::certificate::X509Certificate;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::load::Trust;
use crate::{file_err, provider, TlsError};

/// How strict client-certificate checks are, beyond what every check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Refuse clients without a certificate at the TLS layer (`require_certificate`).
    pub mandatory: bool,
    /// With CRLs configured, accept a certificate whose issuer has no CRL among them.
    pub allow_unknown_revocation: bool,
    /// Check only the end-entity certificate's revocation, not intermediates'.
    pub end_entity_only: bool,
}

impl Policy {
    /// Mosquitto's `require_certificate true` semantics: a certificate is required, and with a
    /// `crlfile` every certificate's status must be known.
    pub fn required() -> Policy {
        Policy { mandatory: true, allow_unknown_revocation: false, end_entity_only: false }
    }
}

/// A client-certificate verifier over a [`Trust`]: v3 certificates by webpki, v1 ones as the
/// crate documentation says. Also checks handshake signatures for both.
#[derive(Debug)]
pub struct ClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    trust: Trust,
    policy: Policy,
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

fn version(der: &[u8]) -> Option<u32> {
    x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c.tbs_certificate.version.0)
}

/// Whether a certificate may issue others: v3, `basicConstraints` CA:TRUE, and `keyCertSign`
/// if it carries a key usage at all.
pub(crate) fn is_ca(cert: &X509Certificate<'_>) -> bool {
    let basic = matches!(cert.basic_constraints(), Ok(Some(b)) if b.value.ca);
    let usage = match cert.key_usage() {
        Ok(Some(k)) => k.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    };
    cert.tbs_certificate.version.0 == 2 && basic && usage
}

impl ClientVerifier {
    /// A verifier for `trust` with `policy`. Refuses a `cafile` with a certificate that cannot
    /// be a CA (for example an X.509 v1 certificate): nothing it signs could be trusted.
    pub fn new(trust: Trust, policy: Policy, cafile: &std::path::Path) -> Result<ClientVerifier, TlsError> {
        let mut roots = RootCertStore::empty();
        for (i, der) in trust.roots.iter().enumerate() {
            let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| file_err(cafile, e))?;
            if !is_ca(&cert) {
                let v = cert.tbs_certificate.version.0 + 1;
                return Err(file_err(
                    cafile,
                    format!(
                        "certificate {} ({}) is X.509 v{v} without CA:TRUE and cannot be a CA; make the CA with \
                         `openssl req -new -x509 -key ca.key -out ca.crt` (OpenSSL 3 adds CA:TRUE)",
                        i + 1,
                        cert.subject()
                    ),
                ));
            }
            roots.add(der.clone()).map_err(|e| file_err(cafile, e))?;
        }
        let mut b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        if !trust.crls.is_empty() {
            b = b.with_crls(trust.crls.clone());
        }
        if policy.end_entity_only {
            b = b.only_check_end_entity_revocation();
        }
        if policy.allow_unknown_revocation {
            b = b.allow_unknown_revocation_status();
        }
        if !policy.mandatory {
            b = b.allow_unauthenticated();
        }
        let webpki = b.build().map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(ClientVerifier { webpki, trust, policy })
    }

    /// Checks a v1 (or v2) end-entity certificate: issued directly by a CA of the trust,
    /// signature, validity, revocation.
    fn verify_v1(&self, end: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
        let bad = |e: CertificateError| Error::InvalidCertificate(e);
        let (_, cert) = x509_parser::parse_x509_certificate(end).map_err(|_| bad(CertificateError::BadEncoding))?;
        let mut issuer = None;
        let mut signature_failed = false;
        for root in &self.trust.roots {
            let Ok((_, ca)) = x509_parser::parse_x509_certificate(root) else { continue };
            if ca.subject().as_raw() != cert.issuer().as_raw() {
                continue;
            }
            if signed_by(
                ca.public_key(),
                &cert.signature_algorithm.algorithm.to_id_string(),
                cert.tbs_certificate.as_ref(),
                &cert.signature_value.data,
            ) {
                issuer = Some(ca);
                break;
            }
            signature_failed = true;
        }
        let Some(ca) = issuer else {
            return Err(bad(if signature_failed {
                CertificateError::BadSignature
            } else {
                CertificateError::UnknownIssuer
            }));
        };
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let validity = cert.validity();
        if now < validity.not_before.timestamp() {
            return Err(bad(CertificateError::NotValidYet));
        }
        if now > validity.not_after.timestamp() {
            return Err(bad(CertificateError::Expired));
        }
        if self.trust.crls.is_empty() {
            return Ok(());
        }
        let mut known = false;
        for der in &self.trust.crls {
            let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else { continue };
            if crl.issuer().as_raw() != ca.subject().as_raw() || !crl_signed_by(&crl, ca.public_key()) {
                continue;
            }
            known = true;
            if crl.iter_revoked_certificates().any(|r| r.raw_serial() == cert.tbs_certificate.raw_serial()) {
                return Err(bad(CertificateError::Revoked));
            }
        }
        if known || self.policy.allow_unknown_revocation {
            Ok(())
        } else {
            Err(bad(CertificateError::UnknownRevocationStatus))
        }
    }

    /// Checks a handshake signature made with a v1 certificate's key.
    fn verify_v1_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
        tls13: bool,
    ) -> Result<HandshakeSignatureValid, Error> {
        let invalid = Error::InvalidCertificate(CertificateError::BadSignature);
        // TLS 1.3 allows no PKCS#1 v1.5 and binds ECDSA curves to hashes: the match below
        // admits only those combinations when `tls13`.
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let spki = parsed.public_key();
        let key_type = spki.algorithm.algorithm.to_id_string();
        let key: &[u8] = &spki.subject_public_key.data;
        let p384 = key.len() == 97;
        let alg: &dyn sig::VerificationAlgorithm = match (dss.scheme, key_type.as_str()) {
            (SignatureScheme::RSA_PKCS1_SHA256, OID_RSA) if !tls13 => &sig::RSA_PKCS1_2048_8192_SHA256,
            (SignatureScheme::RSA_PKCS1_SHA384, OID_RSA) if !tls13 => &sig::RSA_PKCS1_2048_8192_SHA384,
            (SignatureScheme::RSA_PKCS1_SHA512, OID_RSA) if !tls13 => &sig::RSA_PKCS1_2048_8192_SHA512,
            (SignatureScheme::RSA_PSS_SHA256, OID_RSA) => &sig::RSA_PSS_2048_8192_SHA256,
            (SignatureScheme::RSA_PSS_SHA384, OID_RSA) => &sig::RSA_PSS_2048_8192_SHA384,
            (SignatureScheme::RSA_PSS_SHA512, OID_RSA) => &sig::RSA_PSS_2048_8192_SHA512,
            (SignatureScheme::ECDSA_NISTP256_SHA256, OID_EC) if !p384 => &sig::ECDSA_P256_SHA256_ASN1,
            (SignatureScheme::ECDSA_NISTP384_SHA384, OID_EC) if p384 => &sig::ECDSA_P384_SHA384_ASN1,
            (SignatureScheme::ECDSA_NISTP256_SHA256, OID_EC) if !tls13 => &sig::ECDSA_P384_SHA256_ASN1,
            (SignatureScheme::ECDSA_NISTP384_SHA384, OID_EC) if !tls13 => &sig::ECDSA_P256_SHA384_ASN1,
            (SignatureScheme::ED25519, OID_ED25519) => &sig::ED25519,
            _ => return Err(invalid),
        };
        sig::UnparsedPublicKey::new(alg, key)
            .verify(message, dss.signature())
            .map(|_| HandshakeSignatureValid::assertion())
            .map_err(|_| invalid)
    }
}

/// Whether `signature` over `tbs` (algorithm `alg`, an OID) verifies with `signer`'s key. The
/// algorithms are webpki's: no SHA-1, RSA of at least 2048 bits.
fn signed_by(signer: &SubjectPublicKeyInfo<'_>, alg: &str, tbs: &[u8], signature: &[u8]) -> bool {
    check_signature(signer, alg, tbs, signature) == Some(true)
}

/// As [`signed_by`], but `None` when the algorithm (or key type) is not one of those: the
/// signature could not be checked at all, which is not the same as a bad signature.
pub(crate) fn check_signature(
    signer: &SubjectPublicKeyInfo<'_>,
    alg: &str,
    tbs: &[u8],
    signature: &[u8],
) -> Option<bool> {
    let key: &[u8] = &signer.subject_public_key.data;
    let key_type = signer.algorithm.algorithm.to_id_string();
    let p384 = key.len() == 97;
    let alg: &dyn sig::VerificationAlgorithm = match (alg, key_type.as_str()) {
        ("1.2.840.113549.1.1.11", OID_RSA) => &sig::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", OID_RSA) => &sig::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", OID_RSA) => &sig::RSA_PKCS1_2048_8192_SHA512,
        ("1.2.840.10045.4.3.2", OID_EC) if p384 => &sig::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.2", OID_EC) => &sig::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", OID_EC) if p384 => &sig::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.10045.4.3.3", OID_EC) => &sig::ECDSA_P256_SHA384_ASN1,
        (OID_ED25519, OID_ED25519) => &sig::ED25519,
        _ => return None,
    };
    Some(sig::UnparsedPublicKey::new(alg, key).verify(tbs, signature).is_ok())
}

fn crl_signed_by(crl: &CertificateRevocationList<'_>, signer: &SubjectPublicKeyInfo<'_>) -> bool {
    signed_by(
        signer,
        &crl.signature_algorithm.algorithm.to_id_string(),
        crl.tbs_cert_list.as_ref(),
        &crl.signature_value.data,
    )
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.webpki.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.webpki.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // A v1 certificate can never issue: one among the intermediates voids the chain.
        if intermediates.iter().any(|c| version(c).is_some_and(|v| v < 2)) {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        }
        match version(end_entity) {
            Some(v) if v < 2 => self.verify_v1(end_entity, now).map(|_| ClientCertVerified::assertion()),
            _ => self.webpki.verify_client_cert(end_entity, intermediates, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        match version(cert) {
            Some(v) if v < 2 => self.verify_v1_signature(message, cert, dss, false),
            _ => self.webpki.verify_tls12_signature(message, cert, dss),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        match version(cert) {
            Some(v) if v < 2 => self.verify_v1_signature(message, cert, dss, true),
            _ => self.webpki.verify_tls13_signature(message, cert, dss),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
