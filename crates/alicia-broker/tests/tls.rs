//! TLS listeners driven by the real `mosquitto_pub`/`mosquitto_sub` (Debian's
//! mosquitto-clients), with certificates made here by rcgen: a CA-signed client certificate is
//! accepted and its Common Name becomes the user name; no certificate, or one from another CA,
//! is refused. And the server chain: with only the leaf in `certfile`, its intermediate and root
//! are sent from `cafile` (as Mosquitto does), so clients that trust only the root (rustls,
//! `openssl s_client`, `mosquitto_pub`) accept it; also after a reload.

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

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::self_signed(ca_params(name), KeyPair::generate().unwrap()).unwrap()
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

/// Mosquitto's test layout (`test/ssl`): a root, an intermediate signed by it, a server leaf
/// signed by the intermediate in `server.crt` alone; `root.crt` holds the root, `all-ca.crt`
/// the intermediate and the root (in that order, as Mosquitto's `all-ca.crt`).
fn chained_pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("Chain Test Root CA");
    let signing =
        CertifiedIssuer::signed_by(ca_params("Chain Test Signing CA"), KeyPair::generate().unwrap(), &root).unwrap();
    leaf(dir.path(), "server", "localhost", vec!["localhost".into(), "127.0.0.1".into()], &signing);
    std::fs::write(dir.path().join("root.crt"), root.pem()).unwrap();
    std::fs::write(dir.path().join("all-ca.crt"), format!("{}{}", signing.pem(), root.pem())).unwrap();
    Pki { dir }
}

/// A TLS listener (no client certificates) with `certfile` server.crt and the given `cafile`.
async fn chained_listener(pki: &Pki, cafile: &str) -> alicia_broker::Listener {
    let broker = Broker::new(Config::default());
    broker
        .listen_with(ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            transport: Transport::Mqtt,
            tls: Some(TlsFiles {
                cafile: Some(pki.path(cafile)),
                certfile: pki.path("server.crt"),
                keyfile: pki.path("server.key"),
                require_certificate: false,
                use_identity_as_username: false,
                crlfile: None,
            }),
            max_connections: 0,
        })
        .await
        .unwrap()
}

/// Connects with a rustls client that trusts only `root.crt`, sends an MQTT 3.1.1 CONNECT and
/// returns the broker's answer, or the TLS error.
async fn rustls_connect(pki: &Pki, addr: SocketAddr) -> Result<Vec<u8>, std::io::Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in alicia_tls::read_certs(&pki.path("root.crt")).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(alicia_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp)).await.unwrap()?;
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "chain".
    tls.write_all(b"\x10\x11\x00\x04MQTT\x04\x02\x00\x3c\x00\x05chain").await?;
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut connack)).await.unwrap()?;
    Ok(connack.to_vec())
}

#[tokio::test]
async fn the_server_chain_is_completed_from_the_cafile() {
    let pki = chained_pki();
    let listener = chained_listener(&pki, "all-ca.crt").await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(listener.serve());

    let connack = rustls_connect(&pki, addr).await.expect("a client trusting only the root accepts the chain");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);

    if have("openssl") {
        // OpenSSL, the client of the failing Mosquitto tests: `unable to get local issuer
        // certificate` when the intermediate is not sent.
        // Through tokio: the broker runs on this test's (single) thread.
        let s_client = tokio::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost", "-verify_return_error"])
            .arg("-CAfile")
            .arg(pki.path("root.crt"))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), s_client).await.expect("s_client ends").unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("Verify return code: 0 (ok)"), "{text}");
    } else {
        eprintln!("SKIP openssl s_client: openssl not installed");
    }
    if have("mosquitto_pub") {
        let publish = tokio::process::Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &addr.port().to_string(), "-t", "chain/test", "-m", "x", "-q", "1"])
            .arg("--cafile")
            .arg(pki.path("root.crt"))
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), publish).await.expect("mosquitto_pub ends").unwrap();
        assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    } else {
        eprintln!("SKIP mosquitto_pub: mosquitto-clients not installed (scripts/test.sh installs them)");
    }
}

#[tokio::test]
async fn a_reload_completes_the_chain_from_the_new_cafile() {
    let pki = chained_pki();
    // At first the cafile has only the root: the leaf goes out alone and the client cannot
    // find its issuer.
    std::fs::copy(pki.path("root.crt"), pki.path("ca.crt")).unwrap();
    let listener = chained_listener(&pki, "ca.crt").await;
    let addr = listener.local_addr().unwrap();
    let reloader = listener.tls_reloader().expect("a TLS listener has a reloader");
    tokio::spawn(listener.serve());
    let e = rustls_connect(&pki, addr).await.expect_err("no intermediate, no chain");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    std::fs::copy(pki.path("all-ca.crt"), pki.path("ca.crt")).unwrap();
    reloader.prepare().expect("the new files load").install();
    let connack = rustls_connect(&pki, addr).await.expect("after the reload the chain is complete");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
}
