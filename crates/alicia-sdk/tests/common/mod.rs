//! Test helpers: real brokers (Alicia's in-process, Debian's Mosquitto as a process), a TCP
//! proxy whose connections can be cut, a raw MQTT observer, test services, and the scenarios
//! that run against every broker.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alicia_broker::{Broker, Config};
use alicia_envelope::{Destination, Envelope, Uuid};
use alicia_sdk::{BusService, Context, HandlerResult, ServiceConfig, ServiceError, ServiceHandle};
use rumqttc_notls::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::{AsyncClient, Event, MqttOptions};
use serde_json::{json, Value};
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
                let target = *up.lock().unwrap();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                cs.lock().unwrap().push(task);
            }
        });
        Proxy { addr, upstream, conns, accept }
    }

    pub fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap() = addr;
    }

    /// Drops every open connection.
    pub fn cut(&self) {
        for task in self.conns.lock().unwrap().drain(..) {
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

/// Handled messages: (instance, message id).
pub type Log = Arc<Mutex<Vec<(String, Uuid)>>>;

/// Answers `{"echo": data, "instance": id}`; `{"fail": true}` fails with code `refused`,
/// `{"panic": true}` panics, `{"sleep_ms": n}` waits first.
pub struct Echo {
    pub name: &'static str,
    pub log: Log,
}

impl Echo {
    pub fn new(name: &'static str) -> (Echo, Log) {
        let log = Log::default();
        (Echo { name, log: log.clone() }, log)
    }
}

impl BusService for Echo {
    fn name(&self) -> &str {
        self.name
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        self.log.lock().unwrap().push((ctx.bus().instance().to_string(), envelope.message_id));
        let data = envelope.payload.data;
        if let Some(ms) = data.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if data.get("fail").is_some() {
            return Err(ServiceError::new("refused", "asked to fail").into());
        }
        if data.get("panic").is_some() {
            panic!("asked to panic");
        }
        Ok(Some(json!({ "echo": data, "instance": ctx.bus().instance() })))
    }
}

/// A service that answers by asking another: `voice` transcribes through `stt`.
pub struct Voice;

impl BusService for Voice {
    fn name(&self) -> &str {
        "voice"
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        let stt = ctx.bus().request(Destination::service("stt"), envelope.payload.data, Duration::from_secs(5)).await?;
        Ok(Some(json!({ "transcript": stt.payload.data["echo"]["audio"], "by": stt.source })))
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

// ---------------------------------------------------------------------------------------------
// Scenarios run against each broker.

/// Two services talk request/response: a client asks `voice`, which asks `stt`.
pub async fn request_response(addr: SocketAddr) {
    let (stt, stt_log) = Echo::new("stt");
    let _stt = online(config(addr), stt).await;
    let _voice = online(config(addr), Voice).await;
    let tester = client(config(addr)).await;

    let response = tester
        .request(Destination::service("voice"), json!({ "audio": "hello world" }), WAIT)
        .await
        .expect("voice answers");
    assert_eq!(response.payload.data["transcript"], "hello world");
    assert_eq!(response.payload.data["by"], "stt");
    assert_eq!(response.source, "voice");
    assert_eq!(response.destination, Destination::service("tester"));
    assert_eq!(response.message_type, alicia_envelope::MessageType::Response);
    response.validate().unwrap();
    assert_eq!(stt_log.lock().unwrap().len(), 1);

    // Directly, several at once: each gets its own answer.
    let calls = (0..10).map(|i| {
        let bus = tester.bus().clone();
        async move { (i, bus.request(Destination::service("stt"), json!({ "n": i }), WAIT).await) }
    });
    for (i, result) in futures_join_all(calls).await {
        let r = result.unwrap();
        assert_eq!(r.payload.data["echo"]["n"], i);
        assert!(r.correlation_id.is_some());
    }

    // An error response is an error, with the handler's code.
    let err = tester.request(Destination::service("stt"), json!({ "fail": true }), WAIT).await.unwrap_err();
    match &err {
        alicia_sdk::SdkError::Remote { from, code, message, .. } => {
            assert_eq!((from.as_str(), code.as_str(), message.as_str()), ("stt", "refused", "asked to fail"))
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    assert!(err.to_string().contains("`stt` refused request"), "{err}");
}

/// Two instances of one service share its inbox: every request is handled once, and both
/// instances handle some.
pub async fn shared_inbox(addr: SocketAddr) {
    let (a, log) = Echo::new("worker");
    let b = Echo { name: "worker", log: log.clone() };
    let mut config_a = config(addr);
    config_a.instance_id = Some("a".into());
    let mut config_b = config(addr);
    config_b.instance_id = Some("b".into());
    let _a = online(config_a, a).await;
    let _b = online(config_b, b).await;
    let tester = client(config(addr)).await;

    let n = 40;
    let calls = (0..n).map(|i| {
        let bus = tester.bus().clone();
        async move { bus.request(Destination::service("worker"), json!({ "n": i }), WAIT).await.unwrap() }
    });
    let responses = futures_join_all(calls).await;
    let mut by_instance = std::collections::HashMap::<String, usize>::new();
    for r in &responses {
        *by_instance.entry(r.payload.data["instance"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let handled = log.lock().unwrap().clone();
    assert_eq!(handled.len(), n, "each request handled exactly once");
    let mut ids: Vec<Uuid> = handled.iter().map(|(_, id)| *id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no request handled twice");
    assert!(by_instance.get("a").copied().unwrap_or(0) > 0, "instance a got none: {by_instance:?}");
    assert!(by_instance.get("b").copied().unwrap_or(0) > 0, "instance b got none: {by_instance:?}");
}

/// The will: a service whose connection dies is marked offline on its status topic.
pub async fn will_marks_offline(addr: SocketAddr) {
    let mut watcher = Observer::start(addr, &["alicia/system/services/lamp/status"]).await;
    let (lamp, _) = Echo::new("lamp");
    let running = online(config(addr), lamp).await;
    assert_eq!(&watcher.next().await.payload[..], b"online");
    // Gone without a DISCONNECT, as in a crash.
    drop(running);
    let p = watcher.next().await;
    assert_eq!(&p.payload[..], b"offline");
    // Retained: a newcomer reads offline.
    let mut late = Observer::start(addr, &["alicia/system/services/lamp/status"]).await;
    let p = late.next().await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"offline");
}

/// `join_all` without the futures crate: spawn each, await in order.
pub async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
