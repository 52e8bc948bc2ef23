//! X.509 v1 certificates made by the design document's own `openssl` commands (run verbatim in
//! a temporary folder): accepted when signed by the configured CA and valid, refused when from
//! another CA, expired, not yet valid or revoked; and full TLS handshakes (1.2 and 1.3) with a
//! v1 client certificate and a v1 server certificate, rustls on both ends.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use alicia_tls::{certified_key, ClientVerifier, Policy, Trust, WatchedTrust};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};

/// The "Certificate Management" commands of docs' design document, as written.
const DOC_COMMANDS: &str = r#"
openssl genrsa -out ca.key 4096
openssl req -new -x509 -days 365 -key ca.key -out ca.crt -subj "/C=US/ST=State/L=City/O=Alicia/CN=Alicia-CA"
openssl genrsa -out server.key 4096
openssl req -new -key server.key -out server.csr -subj "/C=US/ST=State/L=City/O=Alicia/CN=alicia-bus-core"
openssl x509 -req -days 365 -in server.csr -CA ca.crt -CAkey ca.key -out server.crt
openssl genrsa -out device.key 4096
openssl req -new -key device.key -out device.csr -subj "/C=US/ST=State/L=City/O=Alicia/CN=device-001"
openssl x509 -req -days 365 -in device.csr -CA ca.crt -CAkey ca.key -out device.crt
"#;

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().expect("sh runs");
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

fn have_openssl() -> bool {
    Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success())
}

/// The document's PKI, plus a second CA's v1 device and a revocation list made with
/// `openssl ca` listing `revoked.crt` (also issued by the first CA).
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    sh(dir.path(), DOC_COMMANDS);
    sh(
        dir.path(),
        r#"
mkdir other && cd other
openssl genrsa -out ca.key 2048
openssl req -new -x509 -days 365 -key ca.key -out ca.crt -subj "/C=US/ST=State/L=City/O=Alicia/CN=Alicia-CA"
openssl genrsa -out device.key 2048
openssl req -new -key device.key -out device.csr -subj "/CN=device-001"
openssl x509 -req -days 365 -in device.csr -CA ca.crt -CAkey ca.key -out device.crt
cd ..
openssl genrsa -out revoked.key 2048
openssl req -new -key revoked.key -out revoked.csr -subj "/CN=device-002"
openssl x509 -req -days 365 -in revoked.csr -CA ca.crt -CAkey ca.key -out revoked.crt
mkdir -p ca-db && : > ca-db/index.txt && echo 01 > ca-db/crlnumber
cat > ca.cnf <<CNF
[ca]
default_ca = home
[home]
database = ca-db/index.txt
crlnumber = ca-db/crlnumber
default_md = sha256
default_crl_days = 30
CNF
openssl ca -config ca.cnf -cert ca.crt -keyfile ca.key -revoke revoked.crt 2>/dev/null
openssl ca -config ca.cnf -cert ca.crt -keyfile ca.key -gencrl -out crl.pem 2>/dev/null
"#,
    );
    dir
}

fn der(dir: &Path, name: &str) -> CertificateDer<'static> {
    alicia_tls::read_certs(&dir.join(name)).unwrap().remove(0)
}

fn verifier(dir: &Path, crl: bool) -> ClientVerifier {
    let crl_path = dir.join("crl.pem");
    let trust = Trust::load(&dir.join("ca.crt"), crl.then_some(crl_path.as_path())).unwrap();
    ClientVerifier::new(trust, Policy::required(), &dir.join("ca.crt")).unwrap()
}

fn at(days_from_now: i64) -> UnixTime {
    let now = UnixTime::now().as_secs() as i64;
    UnixTime::since_unix_epoch(Duration::from_secs((now + days_from_now * 86_400) as u64))
}

fn refusal(r: Result<rustls::server::danger::ClientCertVerified, Error>) -> CertificateError {
    match r {
        Err(Error::InvalidCertificate(e)) => e,
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn the_documents_commands_make_v1_certificates() {
    if !have_openssl() {
        eprintln!("SKIP: openssl not installed (scripts/test.sh installs it)");
        return;
    }
    let dir = pki();
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(dir.path().join("device.crt"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("Version: 1 (0x0)"), "OpenSSL 3 makes v1 here");
    // And rustls/webpki alone refuses them.
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        r.add(der(dir.path(), "ca.crt")).unwrap();
        Arc::new(r)
    };
    let plain = rustls::server::WebPkiClientVerifier::builder(roots).build().unwrap();
    let e = plain.verify_client_cert(&der(dir.path(), "device.crt"), &[], UnixTime::now()).unwrap_err();
    assert!(matches!(e, Error::InvalidCertificate(CertificateError::Other(_))), "{e:?}");
}

#[test]
fn v1_client_certificates_are_checked_like_v3_ones() {
    if !have_openssl() {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let dir = pki();
    let d = dir.path();
    let v = verifier(d, true);
    let device = der(d, "device.crt");
    v.verify_client_cert(&device, &[], UnixTime::now()).expect("signed by the CA, valid, not revoked");
    assert_eq!(refusal(v.verify_client_cert(&device, &[], at(400))), CertificateError::Expired);
    assert_eq!(refusal(v.verify_client_cert(&device, &[], at(-2))), CertificateError::NotValidYet);
    assert_eq!(refusal(v.verify_client_cert(&der(d, "revoked.crt"), &[], UnixTime::now())), CertificateError::Revoked);
    // Another CA with the very same name: the signature decides.
    assert_eq!(
        refusal(v.verify_client_cert(&der(d, "other/device.crt"), &[], UnixTime::now())),
        CertificateError::BadSignature
    );
    // A v1 certificate never issues: presented as an intermediate, the chain is refused.
    let chain = [der(d, "server.crt")];
    assert_eq!(refusal(v.verify_client_cert(&device, &chain, UnixTime::now())), CertificateError::UnknownIssuer);
    // With CRLs configured but none from this CA, the status is unknown: refused unless the
    // policy allows it.
    sh(d, "cd other && mkdir db && : > db/index.txt && echo 01 > db/crlnumber && printf '[ca]\ndefault_ca=o\n[o]\ndatabase=db/index.txt\ncrlnumber=db/crlnumber\ndefault_md=sha256\ndefault_crl_days=30\n' > o.cnf && openssl ca -config o.cnf -cert ca.crt -keyfile ca.key -gencrl -out crl.pem 2>/dev/null");
    let foreign = Trust::load(&d.join("ca.crt"), Some(&d.join("other/crl.pem"))).unwrap();
    let strict = ClientVerifier::new(foreign.clone(), Policy::required(), &d.join("ca.crt")).unwrap();
    assert_eq!(
        refusal(strict.verify_client_cert(&device, &[], UnixTime::now())),
        CertificateError::UnknownRevocationStatus
    );
    let lenient = Policy { allow_unknown_revocation: true, ..Policy::required() };
    ClientVerifier::new(foreign, lenient, &d.join("ca.crt"))
        .unwrap()
        .verify_client_cert(&device, &[], UnixTime::now())
        .unwrap();
}

#[test]
fn a_v1_ca_is_refused_with_the_file_and_the_fix() {
    if !have_openssl() {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let dir = pki();
    let d = dir.path();
    let trust = Trust::load(&d.join("device.crt"), None).unwrap();
    let err = ClientVerifier::new(trust, Policy::required(), &d.join("device.crt")).unwrap_err().to_string();
    assert!(err.contains("device.crt") && err.contains("X.509 v1") && err.contains("openssl req -new -x509"), "{err}");
}

#[test]
fn a_watched_crl_takes_effect_when_rewritten() {
    if !have_openssl() {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let dir = pki();
    let d = dir.path();
    let crl = d.join("watched.pem");
    let policy = Policy { mandatory: false, allow_unknown_revocation: true, end_entity_only: true };
    let w = WatchedTrust::load(&d.join("ca.crt"), Some(&crl), policy).unwrap();
    let device = der(d, "revoked.crt");
    w.current().unwrap().verify_client_cert(&device, &[], UnixTime::now()).expect("no CRL yet");
    std::fs::copy(d.join("crl.pem"), &crl).unwrap();
    let e = w.current().unwrap().verify_client_cert(&device, &[], UnixTime::now()).unwrap_err();
    assert!(matches!(e, Error::InvalidCertificate(CertificateError::Revoked)), "{e:?}");
}

/// Accepts any server certificate: these tests are about the server's side.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The client's certificate and key as they are, even if they do not match (rustls' client
/// would refuse a v1 certificate before sending it).
fn client_key_for(d: &Path, cert: &str, key: &str) -> Arc<rustls::sign::CertifiedKey> {
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_file(d.join(key)).unwrap();
    let signer = alicia_tls::provider().key_provider.load_private_key(key).unwrap();
    Arc::new(rustls::sign::CertifiedKey::new(alicia_tls::read_certs(&d.join(cert)).unwrap(), signer))
}

#[derive(Debug)]
struct ClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Runs a handshake in memory; returns the server's error, if any.
fn handshake(
    d: &Path,
    client_cert: &str,
    client_key: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> Result<(), Error> {
    let server_key =
        certified_key(&d.join("server.crt"), &d.join("server.key")).expect("a v1 server certificate loads");
    let clients: Arc<dyn ClientCertVerifier> = Arc::new(verifier(d, false));
    let server = Arc::new(alicia_tls::server_config(server_key, Some(clients)).unwrap());
    let client = rustls::ClientConfig::builder_with_provider(alicia_tls::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_cert_resolver(Arc::new(ClientCert(client_key_for(d, client_cert, client_key))));
    let mut c =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("alicia-bus-core").unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    for _ in 0..10 {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut &buf[..]).unwrap();
        s.process_new_packets()?;
        let mut buf = Vec::new();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut &buf[..]).unwrap();
        let _ = c.process_new_packets();
        if !s.is_handshaking() && !c.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn handshakes_with_v1_certificates_on_both_sides() {
    if !have_openssl() {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let dir = pki();
    let d = dir.path();
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        handshake(d, "device.crt", "device.key", v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let e = handshake(d, "other/device.crt", "other/device.key", v).unwrap_err();
        assert!(matches!(e, Error::InvalidCertificate(_)), "{v:?}: {e:?}");
        // The right certificate with the wrong key: the handshake signature fails.
        let e = handshake(d, "device.crt", "revoked.key", v).unwrap_err();
        assert!(matches!(e, Error::InvalidCertificate(CertificateError::BadSignature)), "{v:?}: {e:?}");
    }
}
