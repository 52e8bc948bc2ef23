//! Test support for Alicia's crates: real brokers to test against (Alicia's, in this process;
//! Debian's Mosquitto, as a process), a TCP proxy whose connections can be cut, a raw MQTT 5
//! observer, and quick ways to start services. Only ever a dev-dependency.
//!
//! Why a crate: every service crate tests itself against both brokers (a service must not
//! depend on being inside the embedded one), and the harness is the same each time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alicia_broker::{Broker, Config};
use alicia_envelope::Uuid;
use alicia_sdk::{BusService, ServiceConfig, ServiceHandle};
use parking_lot::Mutex;
use rumqttc_notls::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::{AsyncClient, Event, MqttOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const WAIT: Duration = Duration::from_secs(10);

/// Alicia's broker, in this process, on a free port.
pub async fn alicia_broker() -> (Broker, SocketAddr) {
    let broker = Broker::new(Config::default());
    let listener = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(listener.serve());
    (broker, addr)
}

/// Debian's Mosquitto on a free port, stopped on drop; `None` (with a note) when it is not
/// installed (`scripts/test.sh` installs it).
pub struct Mosquitto {
    pub addr: SocketAddr,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub async fn start() -> Option<Mosquitto> {
        let bin = std::path::Path::new("/usr/sbin/mosquitto");
        if !bin.exists() {
            eprintln!(
                "note: /usr/sbin/mosquitto is not installed; skipping the Mosquitto run (scripts/test.sh installs it)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // A free port: bind, read, release. Another process could take it in between; the
        // wait below would then fail loudly rather than test the wrong broker.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")).unwrap();
        let child = tokio::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while TcpStream::connect(addr).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "mosquitto did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(Mosquitto { addr, child, _dir: dir })
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A TCP proxy in front of a broker. `cut` drops every connection through it (no MQTT
/// DISCONNECT: to the broker it looks like a dead client); `set_upstream` points new
/// connections at another broker.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up, cs) = (upstream.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let target = *up.lock();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                cs.lock().push(task);
            }
        });
        Proxy { addr, upstream, conns, accept }
    }

    pub fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock() = addr;
    }

    /// Drops every open connection.
    pub fn cut(&self) {
        for task in self.conns.lock().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A plain MQTT 5 client that records what it receives.
pub struct Observer {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Publish>,
    task: JoinHandle<()>,
}

impl Observer {
    /// Connects and subscribes to `filters` (QoS 1), returning once the subscription is acknowledged.
    pub async fn start(addr: SocketAddr, filters: &[&str]) -> Observer {
        let id = format!("observer-{}", Uuid::new_v4().simple());
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30));
        // TCP_NODELAY like the SDK's connections, so the observer adds no Nagle delay to what it sees.
        let mut network = opts.network_options();
        network.set_tcp_nodelay(true);
        opts.set_network_options(network);
        opts.set_max_packet_size(Some(1 << 20));
        let (client, mut events) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
            timeout(WAIT, ack_rx.recv()).await.expect("SUBACK in time");
        }
        Observer { client, rx, task }
    }

    /// The next message, whatever its topic.
    pub async fn next(&mut self) -> Publish {
        timeout(WAIT, self.rx.recv()).await.expect("a message in time").expect("observer running")
    }

    /// The next message on `topic`, skipping others.
    pub async fn next_on(&mut self, topic: &str) -> Publish {
        loop {
            let p = self.next().await;
            if p.topic == topic.as_bytes() {
                return p;
            }
        }
    }

    /// Nothing arrives for `d`.
    pub async fn quiet(&mut self, d: Duration) {
        if let Ok(Some(p)) = timeout(d, self.rx.recv()).await {
            panic!(
                "unexpected message on {:?}: {:?}",
                String::from_utf8_lossy(&p.topic),
                String::from_utf8_lossy(&p.payload)
            );
        }
    }

    /// Publishes raw bytes (QoS 1), optionally with a response topic and correlation data.
    pub async fn publish(&self, topic: &str, payload: impl Into<bytes::Bytes>, response: Option<(&str, &[u8])>) {
        let props = PublishProperties {
            response_topic: response.map(|(t, _)| t.to_string()),
            correlation_data: response.map(|(_, c)| bytes::Bytes::copy_from_slice(c)),
            ..PublishProperties::default()
        };
        self.client.publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), props).await.unwrap();
    }

    /// Publishes raw bytes (QoS 1) with these MQTT 5 properties.
    pub async fn publish_with(&self, topic: &str, payload: impl Into<bytes::Bytes>, props: PublishProperties) {
        self.client.publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), props).await.unwrap();
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings for a test service on `addr`: fast reconnects, short heartbeats.
pub fn config(addr: SocketAddr) -> ServiceConfig {
    ServiceConfig {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        heartbeat_interval: Duration::from_secs(1),
        keep_alive: Duration::from_secs(5),
        ..ServiceConfig::broker(addr.ip().to_string(), addr.port())
    }
}

/// Starts a service and waits until it is online.
pub async fn online<S: BusService>(config: ServiceConfig, service: S) -> ServiceHandle {
    let running = alicia_sdk::start(config, service).unwrap();
    running.wait_online(WAIT).await.expect("online in time");
    running
}

/// A client (no inbox), online.
pub async fn client(config: ServiceConfig) -> ServiceHandle {
    let running = alicia_sdk::connect(config.with_name("tester")).unwrap();
    running.wait_online(WAIT).await.expect("online in time");
    running
}

/// An Alicia home's key files as `alicia init` lays them out: a signing key pair per service
/// in keys/signing/, one encryption key keys/enc-1.key.
pub fn home_with_keys(services: &[&str]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let layout = alicia_home::Home::new(home.path());
    layout.create_dirs().unwrap();
    for s in services {
        alicia_sdk::seal::SigningKey::generate(&layout.signing_key(s), &layout.verifying_key(s)).unwrap();
    }
    let key: String = (0..32).map(|i| format!("{:02x}", i * 7 + 3)).collect();
    alicia_home::write_file(&layout.encryption_key(1), key.as_bytes(), alicia_home::Access::Secret).unwrap();
    home
}

/// The envelope security of service `name` in `home`, requiring signatures and encrypting.
pub fn protected(home: &std::path::Path, name: &str) -> alicia_sdk::EnvelopeSecurity {
    alicia_sdk::EnvelopeSecurity::from_home(home, name).unwrap().require_signed(true).encrypt_payloads(true)
}
