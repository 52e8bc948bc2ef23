//! Completing the server's certificate chain from the CA file, as Mosquitto (OpenSSL) does.
//!
//! A TLS server must send the certificates between its own and the client's trust anchor:
//! a client that trusts only a root cannot verify a leaf signed by an intermediate it never
//! received (OpenSSL: `unable to get local issuer certificate`). Mosquitto configurations often
//! put only the leaf in `certfile` and the intermediates in `cafile` (Mosquitto's own tests do:
//! `certfile server.crt`, `cafile all-ca.crt` with the intermediate and the root), and work
//! because OpenSSL builds the chain it sends from its verify store when the certificate file
//! holds no chain of its own (`ssl_add_cert_chain`, "auto chain"). Measured with Mosquitto 2.0.11
//! and OpenSSL 3.0 on those test files (`openssl s_client -showcerts`):
//!
//! - `certfile` with only the leaf: it sends leaf, intermediate and the self-signed root, all
//!   found in `cafile`;
//! - `certfile` with leaf and intermediate: it sends exactly those two, nothing from `cafile`.
//!
//! [`complete`] does the same, so one `mosquitto.conf` gives the same handshake with both
//! brokers. rustls has no such step (it sends the `certfile` chain as given), and webpki only
//! verifies chains, it does not build them for sending; the walk here is small: issuer to
//! subject by exact DER distinguished name, each step checked by signature so that a
//! look-alike CA (same name, other key, as Mosquitto's `test-fake-root-ca.crt`) is skipped.

use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;

use crate::verify::{check_signature, is_ca};

/// `chain` (the certificate file's certificates, the server's own first) completed from
/// `cas` (the CA file's certificates) when it holds only the server's certificate: its issuer,
/// that issuer's issuer, and so on up to and including a self-signed root, each one a CA whose
/// key verifies the signature of the certificate below it. The walk stops where no issuer is
/// found (the partial chain is kept: the client may know the rest) and never takes a
/// certificate twice, so a CA file whose certificates issue each other cannot make it loop.
///
/// A chain of two or more certificates is returned unchanged, as OpenSSL does.
pub fn complete(chain: Vec<CertificateDer<'static>>, cas: &[CertificateDer<'static>]) -> Vec<CertificateDer<'static>> {
    if chain.len() != 1 {
        return chain;
    }
    // A CA certificate that does not parse cannot be checked, and is left out.
    let parsed: Vec<(&CertificateDer<'static>, X509Certificate<'_>)> =
        cas.iter().filter_map(|der| Some((der, x509_parser::parse_x509_certificate(der).ok()?.1))).collect();
    let mut out = chain;
    // Indexes into `parsed` already in `out`: each CA is taken at most once, so the loop runs
    // at most `parsed.len()` times.
    let mut used = Vec::new();
    while let Some(last) = out.last() {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(last) else { break };
        if cert.subject().as_raw() == cert.issuer().as_raw() {
            break; // self-signed: the root, nothing above it
        }
        let Some(i) = issuer_of(&cert, &parsed, &used) else { break };
        used.push(i);
        out.push(parsed[i].0.clone());
    }
    out
}

/// The CA among `cas` (not in `used`) that issued `cert`: its subject is `cert`'s issuer, it may
/// issue certificates, and its key verifies `cert`'s signature. If the signature algorithm is
/// one this crate cannot check (not a bad signature, an unknown one), the first CA with the
/// right name is taken, as sending it costs nothing: the client verifies the chain anyway.
fn issuer_of(
    cert: &X509Certificate<'_>,
    cas: &[(&CertificateDer<'static>, X509Certificate<'_>)],
    used: &[usize],
) -> Option<usize> {
    let alg = cert.signature_algorithm.algorithm.to_id_string();
    let mut unchecked = None;
    for (i, (_, ca)) in cas.iter().enumerate() {
        if used.contains(&i) || ca.subject().as_raw() != cert.issuer().as_raw() || !is_ca(ca) {
            continue;
        }
        match check_signature(ca.public_key(), &alg, cert.tbs_certificate.as_ref(), &cert.signature_value.data) {
            Some(true) => return Some(i),
            Some(false) => {}
            None => {
                unchecked.get_or_insert(i);
            }
        }
    }
    unchecked
}
