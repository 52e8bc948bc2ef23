//! The server's chain completed from the CA file (`alicia_tls::chain`), with certificates made
//! here by rcgen: root → intermediate → leaf, a look-alike root (same name, other key), CAs that
//! issue each other; and an in-memory TLS handshake with a rustls client that trusts only the
//! root, which fails when the leaf is sent alone.

use std::path::Path;
use std::sync::Arc;

use alicia_tls::chain::complete;
use alicia_tls::{certified_key, certified_key_with_cas, read_certs};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

fn leaf_params() -> CertificateParams {
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p
}

/// Root, intermediate (signed by the root), leaf (signed by the intermediate), the leaf's key,
/// and a fake root: the root's name on another key.
struct Pki {
    root: CertificateDer<'static>,
    fake_root: CertificateDer<'static>,
    intermediate: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    leaf_key: KeyPair,
    /// The same certificates, for PEM files.
    files: [rcgen::Certificate; 3],
}

fn pki() -> Pki {
    let root_key = KeyPair::generate().unwrap();
    let root_params = ca_params("Test Root CA");
    let root = root_params.self_signed(&root_key).unwrap();
    let fake_root = root_params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let inter_key = KeyPair::generate().unwrap();
    let inter_params = ca_params("Test Signing CA");
    let intermediate = inter_params.signed_by(&inter_key, &Issuer::from_params(&root_params, &root_key)).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params().signed_by(&leaf_key, &Issuer::from_params(&inter_params, &inter_key)).unwrap();
    Pki {
        root: root.der().clone(),
        fake_root: fake_root.der().clone(),
        intermediate: intermediate.der().clone(),
        leaf: leaf.der().clone(),
        leaf_key,
        files: [root, intermediate, leaf],
    }
}

#[test]
fn a_lone_leaf_gets_its_issuers_up_to_the_root_in_any_file_order() {
    let p = pki();
    let want = vec![p.leaf.clone(), p.intermediate.clone(), p.root.clone()];
    // Mosquitto's all-ca.crt order (intermediate first) and the reverse.
    assert_eq!(complete(vec![p.leaf.clone()], &[p.intermediate.clone(), p.root.clone()]), want);
    assert_eq!(complete(vec![p.leaf.clone()], &[p.root.clone(), p.intermediate.clone()]), want);
}

#[test]
fn a_look_alike_root_is_skipped_by_its_signature() {
    let p = pki();
    let got = complete(vec![p.leaf.clone()], &[p.fake_root.clone(), p.intermediate.clone(), p.root.clone()]);
    assert_eq!(got, vec![p.leaf.clone(), p.intermediate.clone(), p.root.clone()]);
    // With only the fake root the walk stops at the intermediate.
    let got = complete(vec![p.leaf.clone()], &[p.fake_root.clone(), p.intermediate.clone()]);
    assert_eq!(got, vec![p.leaf, p.intermediate]);
}

#[test]
fn a_chain_in_the_certificate_file_is_sent_as_it_is() {
    let p = pki();
    let given = vec![p.leaf.clone(), p.intermediate.clone()];
    assert_eq!(complete(given.clone(), &[p.intermediate.clone(), p.root.clone()]), given);
}

#[test]
fn a_missing_issuer_ends_the_walk() {
    let p = pki();
    assert_eq!(complete(vec![p.leaf.clone()], std::slice::from_ref(&p.root)), vec![p.leaf.clone()]);
    assert_eq!(complete(vec![p.leaf.clone()], &[]), vec![p.leaf]);
}

#[test]
fn cas_that_issue_each_other_do_not_loop() {
    // A is signed by B and B by A (cross-certification gone round): each is taken once.
    let (a_key, b_key) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
    let (a_params, b_params) = (ca_params("CA A"), ca_params("CA B"));
    let a = a_params.signed_by(&a_key, &Issuer::from_params(&b_params, &b_key)).unwrap();
    let b = b_params.signed_by(&b_key, &Issuer::from_params(&a_params, &a_key)).unwrap();
    let leaf = leaf_params().signed_by(&KeyPair::generate().unwrap(), &Issuer::from_params(&a_params, &a_key)).unwrap();
    let got = complete(vec![leaf.der().clone()], &[a.der().clone(), b.der().clone()]);
    assert_eq!(got, vec![leaf.der().clone(), a.der().clone(), b.der().clone()]);
}

fn write(dir: &Path, name: &str, certs: &[&rcgen::Certificate]) {
    std::fs::write(dir.join(name), certs.iter().map(|c| c.pem()).collect::<String>()).unwrap();
}

/// Runs a TLS handshake in memory between a server presenting `key` and a rustls client that
/// trusts only `root`; the client's error, if any.
fn handshake(key: Arc<rustls::sign::CertifiedKey>, root: &CertificateDer<'static>) -> Result<(), rustls::Error> {
    let server = Arc::new(alicia_tls::server_config(key, None).unwrap());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(alicia_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c = rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut &buf[..]).unwrap();
        let _ = s.process_new_packets();
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut &buf[..]).unwrap();
        c.process_new_packets()?;
        if !s.is_handshaking() && !c.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn a_client_trusting_only_the_root_accepts_the_completed_chain() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let [root, intermediate, leaf] = &p.files;
    write(d, "server.crt", &[leaf]);
    std::fs::write(d.join("server.key"), p.leaf_key.serialize_pem()).unwrap();
    write(d, "all-ca.crt", &[intermediate, root]);
    let cas = read_certs(&d.join("all-ca.crt")).unwrap();

    let completed = certified_key_with_cas(&d.join("server.crt"), &d.join("server.key"), &cas).unwrap();
    assert_eq!(completed.cert.len(), 3, "leaf, intermediate, root");
    handshake(completed, &p.root).expect("the completed chain verifies");

    // The leaf alone (what was sent before): the client cannot find its issuer.
    let alone = certified_key(&d.join("server.crt"), &d.join("server.key")).unwrap();
    let e = handshake(alone, &p.root).unwrap_err();
    assert!(matches!(e, rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)), "{e:?}");
}
