//! Shared helpers: a registry on a broker, simulated devices, a raw HTTP/1.1 client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use alicia_envelope::{Destination, Envelope, Timestamp, Uuid};
pub use alicia_registry::{start, Credential, Principal, RegistryConfig, RegistryHandle};
pub use alicia_testkit::{alicia_broker, client, config, Mosquitto, Observer, WAIT};
use rumqttc_notls::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::{AsyncClient, Event, MqttOptions};
pub use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

pub const EVENTS: &str = "alicia/system/registry/events";
pub const INVENTORY: &str = "alicia/system/registry/devices";
pub const REGISTER: &str = "alicia/system/discovery/register";
pub const UNREGISTER: &str = "alicia/system/discovery/unregister";
pub const HEARTBEAT: &str = "alicia/system/discovery/heartbeat";
pub const REBIRTH: &str = "alicia/system/discovery/rebirth";
pub const INBOX: &str = "alicia/services/device_registry/inbox";
pub const DEADLETTER: &str = "alicia/system/deadletter";
pub const METRICS: &str = "alicia/system/metrics/device_registry";

/// The design document's registration message (sonos_kitchen_001) with a new id, stamped now,
/// announcing a heartbeat every 60 s (Alicia's `heartbeat_interval`, which shortens its
/// timeout; the document's message has none).
pub fn seed_envelope() -> Envelope {
    let text = include_str!("../../../../docs/examples/envelopes/device_registration.json");
    let mut env = Envelope::parse(text.as_bytes()).expect("the seed parses");
    env.message_id = alicia_envelope::MessageId::new();
    env.timestamp = Timestamp::now();
    env.payload.data["heartbeat_interval"] = json!(60);
    env
}

pub fn seed_registration() -> Value {
    seed_envelope().payload.data
}

/// A temperature sensor: no endpoints (defaults apply), no heartbeat interval (the configured
/// timeout applies).
pub fn sensor_registration() -> Value {
    json!({
        "device_id": "temp_living_001",
        "device_type": "sensor",
        "name": "Living Room Temperature",
        "manufacturer": "Aqara",
        "location": "living_room",
        "capabilities": ["temperature", "humidity"]
    })
}

/// The credential of the tests' installer service (HTTP `Basic`), as a header value.
pub const SERVICE_AUTH: &str = "Basic aW5zdGFsbGVyOnMzY3JldA=="; // installer:s3cret

/// A device's bearer token in these tests: `device:<id>` (the real ones are the gateway's JWTs).
pub fn device_auth(id: &str) -> String {
    format!("Bearer device:{id}")
}

pub fn registry_config(addr: SocketAddr, db: &Path, timeout: Duration) -> RegistryConfig {
    RegistryConfig {
        heartbeat_timeout: timeout,
        http: Some("127.0.0.1:0".parse().unwrap()),
        discovery_http: Some("127.0.0.1:0".parse().unwrap()),
        http_auth: Some(std::sync::Arc::new(|c: &Credential| match c {
            Credential::Basic { user, password } if user == "installer" && password == "s3cret" => {
                Ok(Principal::Service(user.clone()))
            }
            Credential::Basic { .. } => Err("wrong user name or password".into()),
            Credential::Bearer(t) => match t.strip_prefix("device:") {
                Some(id) => Ok(Principal::Device(id.to_string())),
                None => Err("not a valid token".into()),
            },
        })),
        ..RegistryConfig::new(config(addr), db)
    }
}

pub async fn registry(addr: SocketAddr, db: &Path, timeout: Duration) -> RegistryHandle {
    let r = start(registry_config(addr, db, timeout)).await.expect("registry starts");
    r.bus().wait_online(WAIT).await.expect("registry online");
    r
}

/// The next registry event `event` about `id`, skipping others.
pub async fn event(obs: &mut Observer, event: &str, id: &str) -> Value {
    loop {
        let p = obs.next_on(EVENTS).await;
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        if v["event"] == event && v["device_id"] == id {
            return v;
        }
    }
}

/// The retained inventory a new subscriber gets, once it satisfies `ok`.
pub async fn inventory(addr: SocketAddr, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut obs = Observer::start(addr, &[INVENTORY]).await;
        let p = obs.next_on(INVENTORY).await;
        assert!(p.retain, "a new subscriber gets the retained inventory");
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        if ok(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "inventory never became as expected: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn device<'a>(inventory: &'a Value, id: &str) -> Option<&'a Value> {
    inventory["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == id)
}

/// A device on plain MQTT with its will (`offline`, retained) on its status topic.
pub struct SimDevice {
    pub client: AsyncClient,
    task: JoinHandle<()>,
}

impl SimDevice {
    pub async fn connect(addr: SocketAddr, id: &str) -> SimDevice {
        let status = format!("alicia/devices/{id}/status");
        let mut o =
            MqttOptions::new(format!("sim-{id}-{}", Uuid::new_v4().simple()), addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(5));
        o.set_last_will(LastWill::new(status.clone(), "offline", QoS::AtLeastOnce, true, None));
        let (client, mut events) = AsyncClient::new(o, 16);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tx = Some(tx);
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, rx).await.expect("device connects").unwrap();
        client.publish(status, QoS::AtLeastOnce, true, "online").await.unwrap();
        SimDevice { client, task }
    }

    /// Publishes an envelope on a topic.
    pub async fn send(&self, topic: &str, env: &Envelope) {
        self.client.publish(topic, QoS::AtLeastOnce, false, env.to_vec()).await.unwrap();
    }

    /// Publishes raw bytes (a message exactly as a device wrote it) on a topic.
    pub async fn send_raw(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).await.unwrap();
    }

    /// Dies without DISCONNECT: the broker publishes the will.
    pub fn crash(self) {
        self.task.abort();
    }
}

/// An HTTP/1.1 exchange over a plain socket: (status, JSON body). Writes (`POST`, `DELETE`)
/// carry the installer service's credential; see [`http_as`] for others.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let auth = matches!(method, "POST" | "DELETE").then_some(SERVICE_AUTH);
    http_as(addr, auth, method, path, body).await
}

/// [`http`] with this `Authorization` header value, or none.
pub async fn http_as(
    addr: SocketAddr,
    authorization: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await.expect("HTTP answer in time").unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let json = if body.is_empty() { Value::Null } else { serde_json::from_str(body).expect("a JSON body") };
    (status, json)
}
