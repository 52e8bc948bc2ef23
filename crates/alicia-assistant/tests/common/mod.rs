//! A home for the assistant's tests: a real broker (given), the real device registry and
//! router started in this process, the assistant, test devices that obey
//! `docs/device-protocol.md`, and a tester client that talks to the assistant over the bus.
#![allow(dead_code, unused_imports)]

#[path = "../../../alicia-intents/tests/common/mod.rs"]
mod ha;
pub mod scenarios;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

pub use alicia_assistant::{AssistantConfig, AssistantHandle, MediaItem};
pub use alicia_envelope::{Destination, Envelope, MessageType};
use alicia_intents::Engine;
use alicia_registry::{RegistryConfig, RegistryHandle};
use alicia_router::{RouterConfig, RouterHandle};
use alicia_sdk::ServiceHandle;
pub use alicia_testkit::{alicia_broker, client, config, Mosquitto, Observer, WAIT};
use rumqttc_notls::v5::mqttbytes::v5::{LastWill, Packet};
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::{AsyncClient, Event, MqttOptions};
pub use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Home Assistant's English sentences and Alicia's, compiled once per test binary.
pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            Arc::new(
                Engine::with_alicia_sentences(&ha::ha_json("en"), "home-assistant-intents en")
                    .expect("English compiles"),
            )
        })
        .clone()
}

/// The path of Home Assistant's English data (for the `alicia` binary's tests).
pub fn ha_en_json() -> std::path::PathBuf {
    ha::data_dir().join("en.json")
}

/// A command as a device received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub command: String,
    pub parameters: Value,
    pub envelope: Envelope,
    /// Why the device refused it (out of range, unknown command); `None`: applied.
    pub refused: Option<String>,
}

/// A device obeying `docs/device-protocol.md`: it registers (through the tester, as a
/// service may for a device), takes commands on its `endpoints.control` topic, refuses
/// parameters outside its registered capability parameters, and publishes its state, retained,
/// after every change.
pub struct TestDevice {
    pub id: String,
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Received>,
    state: Arc<Mutex<Map<String, Value>>>,
    task: JoinHandle<()>,
}

fn param(reg: &Value, caps: &[&str], key: &str) -> Option<f64> {
    let list = reg["capabilities"].as_array()?;
    caps.iter().find_map(|c| {
        list.iter().find(|x| x["name"] == *c).and_then(|x| x["parameters"].get(key)).and_then(Value::as_f64)
    })
}

fn has(reg: &Value, cap: &str) -> bool {
    reg["capabilities"].as_array().is_some_and(|l| l.iter().any(|x| x["name"] == cap || *x == cap))
}

/// Applies one command to a state, as the protocol says; `Err` is the refusal.
fn apply(reg: &Value, state: &mut Map<String, Value>, command: &str, p: &Value) -> Result<(), String> {
    let num = |k: &str| p.get(k).and_then(Value::as_f64).ok_or(format!("`{k}` missing or not a number"));
    let (lo, hi) = (
        param(reg, &["volume_control", "audio_playback"], "min_volume").unwrap_or(0.0),
        param(reg, &["volume_control", "audio_playback"], "max_volume").unwrap_or(100.0),
    );
    let need = |cap: &str| if has(reg, cap) { Ok(()) } else { Err(format!("unknown_command: no {cap}")) };
    match command {
        "turn_on" | "turn_off" | "toggle" => {
            need("on_off")?;
            let on = match command {
                "turn_on" => true,
                "turn_off" => false,
                _ => state.get("power") != Some(&json!("on")),
            };
            state.insert("power".into(), json!(if on { "on" } else { "off" }));
        }
        "set_brightness" => {
            need("brightness")?;
            let b = num("brightness")?;
            if !(0.0..=100.0).contains(&b) {
                return Err(format!("invalid_parameters: brightness {b} outside 0..100"));
            }
            state.insert("brightness".into(), json!(b));
            state.insert("power".into(), json!(if b > 0.0 { "on" } else { "off" }));
        }
        "set_volume" => {
            need("volume_control")?;
            let v = num("volume")?;
            if v < lo || v > hi {
                return Err(format!("invalid_parameters: volume {v} outside {lo}..{hi}"));
            }
            state.insert("volume".into(), json!(v));
        }
        "volume_step" => {
            need("volume_control")?;
            let steps = num("steps")?;
            let size = param(reg, &["volume_control"], "step_size").unwrap_or(1.0);
            let now = state.get("volume").and_then(Value::as_f64).unwrap_or(lo);
            let v = now + steps * size;
            if v < lo || v > hi {
                return Err(format!("invalid_parameters: volume {now} + {steps} steps of {size} outside {lo}..{hi}"));
            }
            state.insert("volume".into(), json!(v));
        }
        "mute" | "unmute" => {
            need("volume_control")?;
            state.insert("muted".into(), json!(command == "mute"));
        }
        "pause" | "resume" | "stop" | "next" | "previous" => {
            if !has(reg, "media_control") {
                need("audio_playback")?;
            }
            let playback = match command {
                "pause" => "paused",
                "stop" => "idle",
                _ => "playing",
            };
            state.insert("playback".into(), json!(playback));
        }
        "play_audio" => {
            need("audio_playback")?;
            let url = p.get("audio_url").and_then(Value::as_str).ok_or("`audio_url` missing")?;
            state.insert("media_url".into(), json!(url));
            state.insert("playback".into(), json!("playing"));
        }
        "announce" => {
            if !has(reg, "announce") {
                need("audio_playback")?;
            }
            p.get("text").and_then(Value::as_str).ok_or("`text` missing")?;
        }
        "set_level" => {
            need("level")?;
            state.insert("level".into(), json!(num("level")?));
        }
        other => return Err(format!("unknown_command: {other}")),
    }
    Ok(())
}

impl TestDevice {
    /// Connects, subscribes to its command topic, publishes its state and `online`, and
    /// registers through `tester`.
    pub async fn start(addr: SocketAddr, tester: &ServiceHandle, registration: Value, state: Value) -> TestDevice {
        let id = registration["device_id"].as_str().unwrap().to_string();
        let command_topic = format!("alicia/devices/{id}/command");
        let state_topic = format!("alicia/devices/{id}/state");
        let status_topic = format!("alicia/devices/{id}/status");
        let mut opts = MqttOptions::new(
            format!("dev-{id}-{}", alicia_envelope::Uuid::new_v4().simple()),
            addr.ip().to_string(),
            addr.port(),
        );
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_last_will(LastWill::new(status_topic.clone(), "offline", QoS::AtLeastOnce, true, None));
        let mut network = opts.network_options();
        network.set_tcp_nodelay(true);
        opts.set_network_options(network);
        let (client, mut events) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(state.as_object().cloned().unwrap_or_default()));
        let (c, st, reg, topic) = (client.clone(), state.clone(), registration.clone(), state_topic.clone());
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ack_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Ok(env) = Envelope::parse(&p.payload) else { continue };
                        let command = env.payload.data["command"].as_str().unwrap_or_default().to_string();
                        let parameters = env.payload.data["parameters"].clone();
                        let (refused, doc) = {
                            let mut s = st.lock();
                            let r = apply(&reg, &mut s, &command, &parameters).err();
                            (r, Value::Object(s.clone()))
                        };
                        if refused.is_none() {
                            let _ = c.publish(topic.clone(), QoS::AtLeastOnce, true, doc.to_string()).await;
                        }
                        let _ = tx.send(Received { command, parameters, envelope: env, refused });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        client.subscribe(command_topic, QoS::AtLeastOnce).await.unwrap();
        tokio::time::timeout(WAIT, ack_rx.recv()).await.expect("SUBACK in time");
        let doc = Value::Object(state.lock().clone());
        client.publish(state_topic, QoS::AtLeastOnce, true, doc.to_string()).await.unwrap();
        client.publish(status_topic, QoS::AtLeastOnce, true, "online").await.unwrap();
        let answer = tester
            .request(
                Destination::service("device_registry"),
                json!({"action": "register", "registration": registration}),
                WAIT,
            )
            .await
            .expect("registered");
        assert_eq!(answer.payload.data["device_id"], id.as_str());
        TestDevice { id, client, rx, state, task }
    }

    /// The next command it received (applied or refused).
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no command in time", self.id))
            .unwrap()
    }

    /// The next command, which must have been applied.
    pub async fn applied(&mut self) -> Received {
        let r = self.next().await;
        assert!(r.refused.is_none(), "{} refused {} {}: {:?}", self.id, r.command, r.parameters, r.refused);
        r
    }

    /// Whether a command is waiting (commands come before the answer that says they were sent
    /// only in publish order, so check after the answer's events arrived).
    pub fn pending(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }

    pub fn state(&self) -> Map<String, Value> {
        self.state.lock().clone()
    }

    /// Sets its state and publishes it, as a device does after a local change.
    pub async fn set_state(&self, key: &str, value: Value) {
        let doc = {
            let mut s = self.state.lock();
            s.insert(key.into(), value);
            Value::Object(s.clone())
        };
        self.client
            .publish(format!("alicia/devices/{}/state", self.id), QoS::AtLeastOnce, true, doc.to_string())
            .await
            .unwrap();
    }

    /// Publishes readings on its telemetry topic.
    pub async fn telemetry(&self, readings: Value) {
        let doc = json!({"device_id": self.id, "timestamp": "2025-01-08T14:30:00.000Z", "readings": readings});
        self.client
            .publish(format!("alicia/devices/{}/telemetry", self.id), QoS::AtLeastOnce, false, doc.to_string())
            .await
            .unwrap();
    }

    /// Says it is offline (as its will would).
    pub async fn go_offline(&self) {
        self.client
            .publish(format!("alicia/devices/{}/status", self.id), QoS::AtLeastOnce, true, "offline")
            .await
            .unwrap();
    }
}

impl Drop for TestDevice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn cap(name: &str, parameters: Value) -> Value {
    json!({"name": name, "version": "1.0.0", "parameters": parameters, "endpoints": {}})
}

/// The home of these tests: two speakers of the design document's kind in two rooms (the
/// bedroom one with a 10..60 range in steps of 5), a kitchen satellite with a speaker, lights,
/// a switch, a temperature sensor.
pub fn registrations() -> Vec<(Value, Value)> {
    vec![
        (
            // The design document's registration, as written (no `name`: it is made from the
            // location and type).
            serde_json::from_str::<Value>(include_str!("../../../../tests/fixtures/design/device_registration.json"))
                .unwrap()["payload"]["data"]
                .clone(),
            json!({"volume": 20, "muted": false, "playback": "playing"}),
        ),
        (
            json!({"device_id": "speaker_bedroom", "device_type": "speaker", "name": "Bedroom Speaker", "location": "bedroom",
                   "capabilities": [cap("audio_playback", json!({"min_volume": 10, "max_volume": 60, "supported_formats": ["mp3"]})),
                                    cap("volume_control", json!({"step_size": 5, "mute_support": true}))]}),
            json!({"volume": 55, "playback": "paused"}),
        ),
        (
            json!({"device_id": "sat_kitchen", "device_type": "satellite", "name": "Kitchen Satellite", "location": "kitchen",
                   "capabilities": [cap("microphone", json!({})), cap("audio_playback", json!({}))]}),
            json!({}),
        ),
        (
            json!({"device_id": "light_kitchen", "device_type": "light", "name": "Kitchen Light", "location": "kitchen",
                   "capabilities": [cap("on_off", json!({})), cap("brightness", json!({}))]}),
            json!({"power": "off", "brightness": 0}),
        ),
        (
            json!({"device_id": "light_counter", "device_type": "light", "name": "Counter Lights", "location": "kitchen",
                   "capabilities": [cap("on_off", json!({}))]}),
            json!({"power": "off"}),
        ),
        (
            json!({"device_id": "switch_coffee", "device_type": "switch", "name": "Coffee Maker", "location": "kitchen",
                   "capabilities": ["on_off"]}),
            json!({"power": "off"}),
        ),
        (
            json!({"device_id": "lamp_bedroom", "device_type": "light", "name": "Bedroom Lamp", "location": "bedroom",
                   "capabilities": ["on_off"]}),
            json!({"power": "on"}),
        ),
        (
            json!({"device_id": "thermo_kitchen", "device_type": "sensor", "name": "Kitchen Thermometer", "location": "kitchen",
                   "capabilities": [cap("temperature", json!({"unit": "°C"})), cap("humidity", json!({"unit": "%"}))]}),
            json!({}),
        ),
    ]
}

/// The media the tests can play.
pub fn media() -> Vec<MediaItem> {
    vec![
        MediaItem {
            name: "Jazz Radio".into(),
            url: "http://media.local/jazz.mp3".into(),
            aliases: vec!["jazz".into()],
        },
        MediaItem { name: "Rain".into(), url: "file:///srv/rain.wav".into(), aliases: vec![] },
    ]
}

/// Everything running.
pub struct House {
    pub addr: SocketAddr,
    pub registry: RegistryHandle,
    pub router: RouterHandle,
    pub assistant: AssistantHandle,
    pub tester: ServiceHandle,
    pub devices: BTreeMap<String, TestDevice>,
    _db: tempfile::TempDir,
}

/// Polls a condition (state held by another task) until it holds, at most [`WAIT`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl House {
    pub async fn start(addr: SocketAddr) -> House {
        Self::start_with(addr, |_| {}).await
    }

    pub async fn start_with(addr: SocketAddr, adjust: impl FnOnce(&mut AssistantConfig)) -> House {
        let db = tempfile::tempdir().unwrap();
        let registry =
            alicia_registry::start(RegistryConfig::new(config(addr), db.path().join("registry.db"))).await.unwrap();
        registry.bus().wait_online(WAIT).await.unwrap();
        let router = alicia_router::start(RouterConfig::new(config(addr))).await.unwrap();
        router.wait_online(WAIT).await.unwrap();
        let mut cfg = AssistantConfig::new(config(addr), engine());
        cfg.media = media();
        adjust(&mut cfg);
        let assistant = alicia_assistant::start(cfg).await.unwrap();
        assistant.wait_online(WAIT).await.unwrap();
        let tester = client(config(addr)).await;
        let mut devices = BTreeMap::new();
        for (reg, state) in registrations() {
            let d = TestDevice::start(addr, &tester, reg, state).await;
            devices.insert(d.id.clone(), d);
        }
        let ids: Vec<String> = devices.keys().cloned().collect();
        let all = ids.clone();
        assert!(
            assistant
                .wait_for_home(WAIT, move |h| all.iter().all(|id| h.device(id).is_some_and(|d| d.status == "online")))
                .await,
            "the assistant did not learn the devices"
        );
        until("the router to know the devices", || ids.iter().all(|id| router.inventory().device(id).is_some())).await;
        House { addr, registry, router, assistant, tester, devices, _db: db }
    }

    pub fn device(&mut self, id: &str) -> &mut TestDevice {
        self.devices.get_mut(id).unwrap_or_else(|| panic!("no device {id}"))
    }

    /// Asks the assistant over the bus; the answer's `data`.
    pub async fn ask(&self, text: &str, satellite: Option<&str>, session: Option<&str>) -> Value {
        let mut data = json!({"text": text});
        if let Some(s) = satellite {
            data["satellite"] = json!(s);
        }
        if let Some(s) = session {
            data["session_id"] = json!(s);
        }
        self.ask_data(data).await
    }

    /// A request with these `data`.
    pub async fn ask_data(&self, data: Value) -> Value {
        let answer = self.tester.request(Destination::service("ai_service"), data, WAIT).await.expect("an answer");
        assert_eq!(answer.message_type, MessageType::Response);
        answer.payload.data
    }

    /// Waits until the assistant has seen `key` = `value` in the device's state.
    pub async fn assistant_sees(&self, id: &str, key: &str, value: Value) {
        let a = &self.assistant;
        until(&format!("the assistant to see {id}.{key} = {value}"), || {
            a.device_state(id).and_then(|s| s.get(key).cloned()) == Some(value.clone())
        })
        .await;
    }

    pub async fn stop(self) {
        self.assistant.shutdown().await;
        self.router.shutdown().await;
        self.registry.shutdown().await;
    }
}
