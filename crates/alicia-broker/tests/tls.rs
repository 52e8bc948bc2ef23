//! TLS listeners driven by the real `mosquitto_pub`/`mosquitto_sub` (Debian's
//! mosquitto-clients), with certificates made here by rcgen: a CA-signed client certificate is
//! accepted and its Common Name becomes the user name; no certificate, or one from another CA,
//! is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alicia_broker::{Broker, Config, ListenerConfig, TlsFiles, Transport};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(dir: &Path, name: &str, cn: &str, sans: Vec<String>, issuer: &CertifiedIssuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let good = ca("Alicia Test CA");
    let other = ca("Some Other CA");
    std::fs::write(dir.path().join("ca.crt"), good.pem()).unwrap();
    leaf(dir.path(), "server", "localhost", vec!["localhost".into(), "127.0.0.1".into()], &good);
    leaf(dir.path(), "speaker", "kitchen-speaker", vec![], &good);
    leaf(dir.path(), "intruder", "kitchen-speaker", vec![], &other);
    Pki { dir }
}

fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().is_ok_and(|o| o.status.success())
}

async fn start(pki: &Pki) -> (SocketAddr, SocketAddr) {
    let broker = Broker::new(Config::default());
    let plain = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tls = broker
        .listen_with(ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            transport: Transport::Mqtt,
            tls: Some(TlsFiles {
                cafile: Some(pki.path("ca.crt")),
                certfile: pki.path("server.crt"),
                keyfile: pki.path("server.key"),
                require_certificate: true,
                use_identity_as_username: true,
                crlfile: None,
            }),
            max_connections: 0,
        })
        .await
        .unwrap();
    let addrs = (plain.local_addr().unwrap(), tls.local_addr().unwrap());
    tokio::spawn(plain.serve());
    tokio::spawn(tls.serve());
    addrs
}

/// Runs mosquitto_pub on the TLS port with the given client certificate (or none).
async fn publish(pki: &Pki, port: u16, cert: Option<&str>) -> bool {
    let mut cmd = tokio::process::Command::new("mosquitto_pub");
    cmd.args(["-h", "localhost", "-p", &port.to_string(), "-t", "tls/test", "-m", "hello", "-q", "1", "-i", "tls-pub"]);
    cmd.arg("--cafile").arg(pki.path("ca.crt"));
    if let Some(c) = cert {
        cmd.arg("--cert").arg(pki.path(&format!("{c}.crt"))).arg("--key").arg(pki.path(&format!("{c}.key")));
    }
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output()).await.expect("mosquitto_pub ends").unwrap();
    out.status.success()
}

#[tokio::test]
async fn client_certificates_are_required_and_name_the_user() {
    if !have("mosquitto_pub") {
        eprintln!("SKIP: mosquitto-clients not installed (scripts/test.sh installs them)");
        return;
    }
    let pki = pki();
    let (plain, tls) = start(&pki).await;
    // Watch presence events on the plain listener to see who connected over TLS.
    let mut sub = tokio::process::Command::new("mosquitto_sub");
    sub.args([
        "-h",
        "127.0.0.1",
        "-p",
        &plain.port().to_string(),
        "-t",
        "$SYS/broker/presence/tls-pub",
        "-C",
        "1",
        "-W",
        "10",
    ]);
    sub.stdout(std::process::Stdio::piped());
    let watcher = sub.spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(!publish(&pki, tls.port(), None).await, "no client certificate must be refused");
    assert!(!publish(&pki, tls.port(), Some("intruder")).await, "a certificate from another CA must be refused");
    assert!(publish(&pki, tls.port(), Some("speaker")).await, "a CA-signed certificate must be accepted");

    let out = tokio::time::timeout(Duration::from_secs(10), watcher.wait_with_output()).await.unwrap().unwrap();
    let event = String::from_utf8_lossy(&out.stdout);
    assert!(event.contains("\"event\":\"connected\""), "{event}");
    assert!(event.contains("\"username\":\"kitchen-speaker\""), "certificate CN is the user name: {event}");
}
