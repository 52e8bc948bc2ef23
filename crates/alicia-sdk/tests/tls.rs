//! Services over TLS: a service and a client log in with client certificates (their CN is the
//! user name the broker reports), a request and its answer cross the TLS listener, and a
//! broker whose certificate the client does not trust is reported as such, not as a timeout.

use std::path::Path;
use std::time::Duration;

use alicia_broker::{Broker, Config, ListenerConfig, TlsFiles, Transport};
use alicia_envelope::{Destination, Envelope};
use alicia_sdk::{AuthMethod, BusService, Context, HandlerResult, SdkError, ServiceConfig, Tls};
use alicia_testkit::WAIT;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(dir: &Path, cn: &str, sans: Vec<String>, issuer: &CertifiedIssuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(sans).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(&key, issuer).unwrap();
    std::fs::write(dir.join(format!("{cn}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{cn}.key")), key.serialize_pem()).unwrap();
}

/// A broker whose TLS listener requires a client certificate and takes its CN as the user
/// name, telling services who published (`identity_properties`).
async fn broker(dir: &Path) -> (Broker, u16) {
    let home = ca("Alicia Test CA");
    std::fs::write(dir.join("ca.crt"), home.pem()).unwrap();
    std::fs::write(dir.join("other-ca.crt"), ca("Some Other CA").pem()).unwrap();
    leaf(dir, "localhost", vec!["localhost".into()], &home);
    for cn in ["echo", "tester"] {
        leaf(dir, cn, vec![], &home);
    }
    let broker = Broker::new(Config { identity_properties: true, ..Config::default() });
    let tls = broker
        .listen_with(ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            transport: Transport::Mqtt,
            tls: Some(TlsFiles {
                cafile: Some(dir.join("ca.crt")),
                certfile: dir.join("localhost.crt"),
                keyfile: dir.join("localhost.key"),
                require_certificate: true,
                use_identity_as_username: true,
                crlfile: None,
            }),
            max_connections: 0,
        })
        .await
        .unwrap();
    let port = tls.local_addr().unwrap().port();
    tokio::spawn(tls.serve());
    (broker, port)
}

fn over_tls(dir: &Path, port: u16, cn: &str) -> ServiceConfig {
    let mut c = ServiceConfig::broker("localhost", port);
    c.tls = Some(
        Tls::new(dir.join("ca.crt")).with_client_cert(dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key"))),
    );
    c.trust_broker_identity = true;
    c
}

/// Answers with who the broker says sent the request.
struct Echo;

impl BusService for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        let who = ctx.sender().expect("the broker tells who sent it");
        assert_eq!(who.auth, AuthMethod::Certificate);
        Ok(Some(json!({ "echo": envelope.payload.data, "from": who.user })))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_and_a_client_talk_over_tls_with_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = broker(dir.path()).await;
    let echo = alicia_sdk::start(over_tls(dir.path(), port, "echo"), Echo).unwrap();
    echo.bus().wait_online(WAIT).await.unwrap();
    let tester = alicia_sdk::connect(over_tls(dir.path(), port, "tester").with_name("tester")).unwrap();
    tester.bus().connect_outcome(WAIT).await.unwrap();
    let answer = tester.bus().request(Destination::service("echo"), json!({ "n": 1 }), WAIT).await.unwrap();
    assert_eq!(answer.payload.data, json!({ "echo": { "n": 1 }, "from": "tester" }));
    echo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = broker(dir.path()).await;
    let mut c = over_tls(dir.path(), port, "tester");
    c.tls.as_mut().unwrap().ca_file = dir.path().join("other-ca.crt");
    let client = alicia_sdk::connect(c.with_name("tester")).unwrap();
    let err = client.bus().connect_outcome(Duration::from_secs(5)).await.unwrap_err();
    match &err {
        SdkError::Unreachable { reason, .. } => assert!(reason.contains("TLS handshake failed"), "{err}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // A file that is not there is refused before any connection, naming the file.
    let mut c = over_tls(dir.path(), port, "tester");
    c.tls.as_mut().unwrap().ca_file = dir.path().join("missing.crt");
    let err = alicia_sdk::connect(c).err().expect("refused");
    assert!(err.to_string().contains("missing.crt"), "{err}");
}
