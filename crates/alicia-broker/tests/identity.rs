//! Publisher identity as MQTT 5 user properties (`Config::identity_properties`), over real
//! sockets: a certificate client (the real `mosquitto_pub` over TLS), a password client, a
//! token client (a test `Security` that accepts a token as the password, as the binary's
//! `BrokerSecurity` does with the gateway's JWTs) and an anonymous one each publish, and a v5
//! subscriber (rumqttc) sees `alicia-user`/`alicia-auth` set by the broker, never the values the
//! clients tried to set themselves. Retained copies and wills carry them too; with the option
//! off, user properties pass untouched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alicia_broker::auth::{set_user, FileSecurity, PasswordFile};
use alicia_broker::{
    Access, Broker, Config, Credentials, Identity, ListenerConfig, Refusal, Security, TlsFiles, Transport,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rumqttc::v5 as mq5;
use rumqttc::v5::mqttbytes::v5::{LastWill, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// File security plus tokens: a password `token:<subject>` for user `<subject>` is a valid
/// token (the binary checks a signed JWT here; what matters to the broker is the method).
struct TestSecurity(FileSecurity);

impl Security for TestSecurity {
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, Refusal> {
        if let (Some(user), Some(pw)) = (creds.username, creds.password) {
            if let Some(subject) = pw.strip_prefix(b"token:") {
                if subject == user.as_bytes() {
                    return Ok(Identity::token(user));
                }
            }
        }
        self.0.authenticate(creds)
    }

    fn authorize(&self, client_id: &str, username: Option<&str>, access: Access, topic: &str) -> bool {
        self.0.authorize(client_id, username, access, topic)
    }
}

struct Setup {
    dir: tempfile::TempDir,
    plain: SocketAddr,
    tls: SocketAddr,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write_pki(dir: &Path) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "Identity Test CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    for (name, cn, sans) in
        [("server", "localhost", vec!["localhost".to_string()]), ("speaker", "kitchen-speaker", vec![])]
    {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

async fn start(identity_properties: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let passwords = dir.path().join("passwd");
    set_user(&passwords, "stt_service", "s3cret-pw").unwrap();
    let broker = Broker::new(Config { identity_properties, ..Config::default() });
    let files = FileSecurity::new(true, Some(PasswordFile::load(&passwords).unwrap()), None);
    broker.set_security(Box::new(TestSecurity(files)));
    let plain = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tls = broker
        .listen_with(ListenerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            transport: Transport::Mqtt,
            tls: Some(TlsFiles {
                cafile: Some(dir.path().join("ca.crt")),
                certfile: dir.path().join("server.crt"),
                keyfile: dir.path().join("server.key"),
                require_certificate: true,
                use_identity_as_username: true,
                crlfile: None,
            }),
            max_connections: 0,
        })
        .await
        .unwrap();
    let setup = Setup { dir, plain: plain.local_addr().unwrap(), tls: tls.local_addr().unwrap() };
    tokio::spawn(plain.serve());
    tokio::spawn(tls.serve());
    // The broker lives as long as its listeners' tasks.
    std::mem::forget(broker);
    setup
}

/// A connected v5 client: incoming PUBLISHes arrive on `rx`, SUBACKs on `subacks`.
struct Client {
    c: mq5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Publish>,
    subacks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn client(addr: SocketAddr, id: &str, credentials: Option<(&str, &str)>, will: Option<LastWill>) -> Client {
    let mut opts = mq5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((u, p)) = credentials {
        opts.set_credentials(u, p);
    }
    if let Some(w) = will {
        opts.set_last_will(w);
    }
    let (c, mut ev) = mq5::AsyncClient::new(opts, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (sub_tx, subacks) = mpsc::unbounded_channel();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(mq5::Event::Incoming(mq5::Incoming::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(mq5::Event::Incoming(mq5::Incoming::ConnAck(a))) => {
                    let _ = conn_tx.send(a);
                }
                Ok(mq5::Event::Incoming(mq5::Incoming::SubAck(_))) => {
                    let _ = sub_tx.send(());
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    timeout(Duration::from_secs(5), conn_rx.recv()).await.expect("CONNACK in time").expect("connected");
    Client { c, rx, subacks, task }
}

/// A subscriber (password login) to `filter`, once its SUBACK arrived.
async fn subscriber(addr: SocketAddr, id: &str, filter: &str) -> Client {
    let mut sub = client(addr, id, Some(("stt_service", "s3cret-pw")), None).await;
    sub.c.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    timeout(Duration::from_secs(5), sub.subacks.recv()).await.expect("SUBACK in time");
    sub
}

async fn next(c: &mut Client) -> Publish {
    timeout(Duration::from_secs(10), c.rx.recv()).await.expect("a message in time").expect("channel open")
}

/// The message's user properties named `alicia-user` and `alicia-auth`, in order.
fn identity(p: &Publish) -> (Vec<String>, Vec<String>) {
    let props = p.properties.clone().unwrap_or_default().user_properties;
    let of = |k: &str| props.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect();
    (of("alicia-user"), of("alicia-auth"))
}

fn spoofed() -> PublishProperties {
    PublishProperties {
        user_properties: vec![
            ("alicia-user".into(), "front_door_lock".into()),
            ("room".into(), "kitchen".into()),
            ("alicia-auth".into(), "certificate".into()),
        ],
        ..PublishProperties::default()
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn password_token_and_anonymous_publishers_are_stamped_and_cannot_spoof() {
    let s = start(true).await;
    let mut sub = subscriber(s.plain, "sub", "id/#").await;

    let pw = client(s.plain, "pw-client", Some(("stt_service", "s3cret-pw")), None).await;
    pw.c.publish_with_properties("id/password", QoS::AtLeastOnce, false, "p", spoofed()).await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(identity(&m), (vec!["stt_service".into()], vec!["password".into()]));
    let props = m.properties.unwrap().user_properties;
    assert!(props.contains(&("room".into(), "kitchen".into())), "other user properties stay: {props:?}");

    let tok = client(s.plain, "tok-client", Some(("sonos_kitchen_001", "token:sonos_kitchen_001")), None).await;
    tok.c.publish_with_properties("id/token", QoS::AtMostOnce, false, "t", spoofed()).await.unwrap();
    assert_eq!(identity(&next(&mut sub).await), (vec!["sonos_kitchen_001".into()], vec!["token".into()]));

    // Anonymous (allowed here): no alicia-user at all.
    let anon = client(s.plain, "anon-client", None, None).await;
    anon.c.publish_with_properties("id/anon", QoS::AtLeastOnce, false, "a", spoofed()).await.unwrap();
    assert_eq!(identity(&next(&mut sub).await), (vec![], vec!["anonymous".into()]));

    // A retained message keeps its stamp for later subscribers.
    pw.c.publish_with_properties("id/retained", QoS::AtLeastOnce, true, "r", spoofed()).await.unwrap();
    next(&mut sub).await;
    let mut late = subscriber(s.plain, "late", "id/retained").await;
    let m = next(&mut late).await;
    assert!(m.retain);
    assert_eq!(identity(&m), (vec!["stt_service".into()], vec!["password".into()]));

    // The will is stamped at CONNECT, from the identity of the client that set it.
    let will = LastWill::new("id/will", "gone", QoS::AtLeastOnce, false, Some(spoofed().into_will()));
    let dying = client(s.plain, "will-client", Some(("stt_service", "s3cret-pw")), Some(will)).await;
    dying.task.abort(); // the connection drops without DISCONNECT: the will goes out
    let m = next(&mut sub).await;
    assert_eq!(m.topic, "id/will");
    assert_eq!(identity(&m), (vec!["stt_service".into()], vec!["password".into()]));
}

trait IntoWill {
    fn into_will(self) -> rumqttc::v5::mqttbytes::v5::LastWillProperties;
}

impl IntoWill for PublishProperties {
    fn into_will(self) -> rumqttc::v5::mqttbytes::v5::LastWillProperties {
        rumqttc::v5::mqttbytes::v5::LastWillProperties {
            delay_interval: None,
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: self.user_properties,
        }
    }
}

#[tokio::test]
async fn certificate_publisher_is_stamped_with_its_common_name() {
    if !have("mosquitto_pub") {
        eprintln!("SKIP: mosquitto-clients not installed (scripts/test.sh installs them)");
        return;
    }
    let s = start(true).await;
    let mut sub = subscriber(s.plain, "sub", "id/#").await;
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &s.tls.port().to_string(), "-V", "5", "-q", "1", "-i", "cert-pub"])
        .args(["-t", "id/cert", "-m", "c"])
        .args(["-D", "publish", "user-property", "alicia-user", "front_door_lock"])
        .args(["-D", "publish", "user-property", "alicia-auth", "token"])
        .arg("--cafile")
        .arg(s.path("ca.crt"))
        .arg("--cert")
        .arg(s.path("speaker.crt"))
        .arg("--key")
        .arg(s.path("speaker.key"))
        .output();
    let out = timeout(Duration::from_secs(10), out).await.expect("mosquitto_pub ends").unwrap();
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    let m = next(&mut sub).await;
    assert_eq!(m.topic, "id/cert");
    assert_eq!(identity(&m), (vec!["kitchen-speaker".into()], vec!["certificate".into()]));
}

#[tokio::test]
async fn off_by_default_user_properties_pass_untouched() {
    let s = start(false).await;
    let mut sub = subscriber(s.plain, "sub", "id/#").await;
    let pw = client(s.plain, "pw-client", Some(("stt_service", "s3cret-pw")), None).await;
    pw.c.publish_with_properties("id/password", QoS::AtLeastOnce, false, "p", spoofed()).await.unwrap();
    let m = next(&mut sub).await;
    assert_eq!(identity(&m), (vec!["front_door_lock".into()], vec!["certificate".into()]));
}
