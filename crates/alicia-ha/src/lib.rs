//! Alicia's Home Assistant bridge, the service `ha_bridge`: Alicia's devices appear in Home
//! Assistant through its MQTT discovery, Home Assistant's commands become Alicia device
//! commands, and devices other software announces with HA discovery (ESPHome, Tasmota,
//! Zigbee2MQTT) become registry devices the assistant can control. Checked against a real
//! Home Assistant Core 2024.3.3 (`tests/python/test_ha_bridge.py`).
//!
//! # Alicia → Home Assistant ([`discovery`])
//!
//! Every registry device (except those the bridge adopted) is published as per-component
//! discovery configs, retained, QoS 1, on `D/<component>/<node>/<object>/config` (`D` =
//! `ha_bridge.discovery_prefix`, `homeassistant`; node = `ha_bridge.node_id`, `alicia`;
//! object = the device id, with a suffix per entity), each with a `device` block (identifiers
//! `alicia_<id>`, name, manufacturer, model, `suggested_area` = location), `origin`, a
//! `unique_id` `alicia_<id>_<entity>`, and availability from the device's status topic
//! (`online`/`offline`: its will):
//!
//! | the device has | entities |
//! |----------------|----------|
//! | `on_off` with `brightness`/`color_temperature` (or type `light`) | a JSON-schema `light` (`color_mode: true`, `supported_color_modes`, brightness scale 100, mireds from the kelvin range); its state on `P/ha/<id>/light/state` (the bridge translates), commands on `P/ha/<id>/light/set` |
//! | `on_off` | a `switch` reading `P/devices/<id>/state` (`power`), commands on `P/ha/<id>/switch/set` |
//! | `volume_control` | a `number` (`min_volume..max_volume`, step `step_size`) on `P/ha/<id>/volume/set`, and a `switch` "Mute" when `mute_support` |
//! | `media_control`/`audio_playback` | `button`s pause, resume, stop, next, previous (`P/ha/<id>/<b>/press`) and a `sensor` "Playback" |
//! | `announce`/`audio_playback` | a `text` "Announcement": text set there goes to `speaker_manager` as an announcement |
//! | a capability with a `unit` | a `sensor` reading `sensor_data`'s retained `P/sensors/<id>` (`unit_of_measurement`, `device_class` when HA knows the class, `state_class: measurement`) |
//! | `motion`, `contact`, ... without a unit | a `binary_sensor` |
//!
//! HA's commands become command envelopes to `device_id:<id>`, through the router
//! (`set_brightness`/`set_color_temp` before `turn_on`, so a light comes on at the asked
//! level). When a device is removed from the registry its configs are emptied (HA removes the
//! entities); retained configs of this node whose device no longer exists are emptied at start.
//! On `D/status` = `online` (HA's birth, after a restart) everything is published again.
//!
//! # Home Assistant → Alicia ([`adopt`])
//!
//! With `ha_bridge.adopt`, every other discovery config on the broker is read as HA 2024.3
//! reads it (abbreviations, `~`), grouped into devices by device identifiers (else
//! connections, else unique id) — never by entity ids or names — and registered with the
//! registry as `<adopted_prefix><identifier>` (`ha_246f28a1b2c3`), with capabilities from the
//! entities (switch/light → `on_off`, `brightness`, `color_temperature`; sensor with a device
//! class → that class with its unit; binary sensor → its class; number → `level`) and
//! `metadata.adopted_from = "home_assistant_discovery"`, its unique ids and identifiers. The
//! bridge then speaks for it: its availability topics become `P/devices/<id>/status`, its
//! state topics (through their value templates) the state document `P/devices/<id>/state`
//! and telemetry on `P/devices/<id>/telemetry`, and Alicia's commands, forwarded by the router
//! to `P/ha/adopted/<id>/command`, become the device's own command messages; a request is
//! answered with the state known. It heartbeats for them every 30 s. An emptied config
//! removes the entity; the last one unregisters the device.
//!
//! # Access
//!
//! The bridge's login (`ha_bridge`) may read and write every topic: adopted devices choose
//! their own. Home Assistant's login (`homeassistant`, written by `alicia init`) gets only
//! what these entities need: see `crates/alicia/src/init.rs`.

pub mod adopt;
pub mod discovery;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use alicia_devices::home::{Change, Home, Other};
use alicia_envelope::{Destination, Envelope, Timestamp};
use alicia_sdk::{
    Bus, BusService, Context, HandlerResult, QoS, ServiceConfig, ServiceError, ServiceHandle, Subscription,
};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::adopt::Adopted;
use crate::discovery::{Ask, Names};

/// The service's name on the bus.
pub const SERVICE_NAME: &str = "ha_bridge";
/// How often the bridge heartbeats for adopted devices (announced as their interval).
pub const ADOPTED_HEARTBEAT: Duration = Duration::from_secs(30);

/// What can stop it from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    #[error(transparent)]
    Bus(#[from] alicia_sdk::SdkError),
    #[error("invalid bridge configuration: {0}")]
    Config(String),
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub service: ServiceConfig,
    pub settings: alicia_config::HaBridgeConfig,
}

impl BridgeConfig {
    pub fn new(service: ServiceConfig) -> Self {
        BridgeConfig { service, settings: alicia_config::HaBridgeConfig::default() }
    }
}

/// The adopted devices, shared by the bridge's loop and its command handler.
#[derive(Default)]
struct AdoptedSet {
    /// By device key.
    devices: BTreeMap<String, Adopted>,
    /// Device id → key.
    ids: HashMap<String, String>,
    /// Config topic → (key, unique id).
    configs: HashMap<String, (String, String)>,
    /// State/availability topic → keys.
    topics: HashMap<String, BTreeSet<String>>,
}

struct Shared {
    adopted: Mutex<AdoptedSet>,
    home: Arc<Home>,
    prefix: String,
}

struct Service {
    shared: Arc<Shared>,
    filter: String,
}

impl BusService for Service {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::shared(self.filter.clone())]
    }

    /// A command for an adopted device.
    async fn handle(&self, ctx: &Context, env: Envelope) -> HandlerResult {
        let s = &self.shared;
        let id = ctx
            .topic()
            .strip_prefix(&format!("{}/ha/adopted/", s.prefix))
            .and_then(|t| t.strip_suffix("/command"))
            .unwrap_or_default()
            .to_string();
        let data = &env.payload.data;
        let command = data.get("command").and_then(Value::as_str).unwrap_or_default();
        let params = data.get("parameters").and_then(Value::as_object).cloned().unwrap_or_default();
        let (messages, state) = {
            let set = s.adopted.lock();
            let Some(d) = set.ids.get(&id).and_then(|k| set.devices.get(k)) else {
                return Err(ServiceError::new("unknown_device", format!("{id:?} is not adopted by this bridge")).into());
            };
            let messages = d.command(command, &params).map_err(|(code, m)| ServiceError::new(code, m))?;
            (messages, Value::Object(d.state.clone()))
        };
        for (topic, payload) in messages {
            tracing::info!(device = %id, command, %topic, "command for an adopted device");
            s.home.docs.publish(&topic, payload, QoS::AtLeastOnce, false).await;
        }
        Ok(Some(state))
    }
}

/// The running bridge.
pub struct BridgeHandle {
    service: ServiceHandle,
    home: Arc<Home>,
    task: tokio::task::JoinHandle<()>,
}

impl BridgeHandle {
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    pub async fn shutdown(self) {
        self.task.abort();
        self.home.close().await;
        self.service.shutdown().await;
    }
}

/// Starts `ha_bridge`.
pub async fn start(cfg: BridgeConfig) -> Result<BridgeHandle, BridgeError> {
    let prefix = cfg.service.topic_prefix.clone();
    alicia_sdk::check_prefix(&prefix)?;
    let set = &cfg.settings;
    if set.node_id.is_empty() || set.node_id.contains(['/', '+', '#']) {
        return Err(BridgeError::Config(format!("node_id {:?} is not one topic level", set.node_id)));
    }
    let names = Names { prefix: prefix.clone(), discovery: set.discovery_prefix.clone(), node: set.node_id.clone() };
    let d = &names.discovery;
    let filters = vec![
        format!("{d}/status"),
        format!("{d}/+/+/config"),
        format!("{d}/+/+/+/config"),
        format!("{prefix}/ha/+/+/set"),
        format!("{prefix}/ha/+/+/press"),
        format!("{prefix}/sensors/+"),
    ];
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let client_id = format!("{SERVICE_NAME}-{}-io", alicia_envelope::Uuid::new_v4().simple());
    let (home, others) = Home::follow(&cfg.service, client_id, filters, Some(changes_tx));
    let home = Arc::new(home);
    let shared = Arc::new(Shared { adopted: Mutex::default(), home: home.clone(), prefix: prefix.clone() });
    let filter = format!("{prefix}/ha/adopted/+/command");
    let service = alicia_sdk::start(cfg.service.clone(), Service { shared: shared.clone(), filter })?;
    let bridge = Bridge {
        names,
        settings: cfg.settings.clone(),
        shared,
        bus: service.bus().clone(),
        published: HashMap::new(),
        ours: HashMap::new(),
        dirty: BTreeSet::new(),
        registered: HashMap::new(),
    };
    let task = tokio::spawn(bridge.run(changes, others));
    tracing::info!(discovery = %cfg.settings.discovery_prefix, node = %cfg.settings.node_id, adopt = cfg.settings.adopt, "Home Assistant bridge started");
    Ok(BridgeHandle { service, home, task })
}

struct Bridge {
    names: Names,
    settings: alicia_config::HaBridgeConfig,
    shared: Arc<Shared>,
    bus: Bus,
    /// Config topics published per Alicia device.
    published: HashMap<String, Vec<String>>,
    /// Retained configs of this node seen on the broker: topic → device id.
    ours: HashMap<String, String>,
    /// Adopted devices whose registration must be sent (again).
    dirty: BTreeSet<String>,
    /// The last registration sent per adopted key.
    registered: HashMap<String, Value>,
}

impl Bridge {
    async fn run(mut self, mut changes: mpsc::UnboundedReceiver<Change>, mut others: mpsc::UnboundedReceiver<Other>) {
        let mut heartbeat = tokio::time::interval(ADOPTED_HEARTBEAT);
        let mut debounce = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                Some(c) = changes.recv() => self.change(c).await,
                Some(m) = others.recv() => self.other(m).await,
                _ = debounce.tick() => self.register_dirty().await,
                _ = heartbeat.tick() => self.heartbeats().await,
                else => return,
            }
        }
    }

    fn docs(&self) -> &alicia_devices::home::Docs {
        &self.shared.home.docs
    }

    async fn change(&mut self, c: Change) {
        match c {
            Change::Devices { updated, removed } => {
                for id in updated {
                    self.announce(&id).await;
                }
                for id in removed {
                    self.withdraw(&id).await;
                }
                self.sweep_ours().await;
            }
            Change::State(id) => self.light_state(&id).await,
            Change::Connected => {}
        }
    }

    /// Publishes the configs of one Alicia device (and empties those it no longer has).
    async fn announce(&mut self, id: &str) {
        let Some(d) = self.shared.home.device(id) else { return };
        let entities = discovery::entities(&d, &self.names);
        let topics: Vec<String> = entities.iter().map(|e| e.topic(&self.names)).collect();
        let mut old = self.published.get(id).cloned().unwrap_or_default();
        old.extend(self.ours.iter().filter(|(_, d)| d.as_str() == id).map(|(t, _)| t.clone()));
        for old in old {
            if !topics.contains(&old) {
                self.docs().publish(&old, Vec::new(), QoS::AtLeastOnce, true).await;
            }
        }
        for e in &entities {
            self.docs().publish(&e.topic(&self.names), e.config.to_string(), QoS::AtLeastOnce, true).await;
        }
        if !entities.is_empty() {
            tracing::debug!(device = %id, entities = entities.len(), "announced to Home Assistant");
            self.published.insert(id.to_string(), topics);
            self.light_state(id).await;
        } else {
            self.published.remove(id);
        }
    }

    async fn withdraw(&mut self, id: &str) {
        if let Some(topics) = self.published.remove(id) {
            for t in topics {
                self.docs().publish(&t, Vec::new(), QoS::AtLeastOnce, true).await;
            }
            self.docs().publish(&self.names.light_state_topic(id), Vec::new(), QoS::AtLeastOnce, true).await;
            tracing::info!(device = %id, "removed from Home Assistant");
        }
    }

    /// Empties retained configs of this node whose device is gone (removed while the bridge
    /// was not running).
    async fn sweep_ours(&mut self) {
        if !self.shared.home.view.read().inventory_seen {
            return;
        }
        let home = &self.shared.home;
        let stale: Vec<String> = self
            .ours
            .iter()
            .filter(|(_, id)| home.device(id).is_none_or(|d| discovery::is_adopted(&d)))
            .map(|(t, _)| t.clone())
            .collect();
        for t in stale {
            self.ours.remove(&t);
            tracing::info!(topic = %t, "emptying a retained config of a device that is gone");
            self.docs().publish(&t, Vec::new(), QoS::AtLeastOnce, true).await;
        }
    }

    async fn republish(&mut self) {
        let ids: Vec<String> = self.shared.home.view.read().devices.keys().cloned().collect();
        for id in ids {
            self.announce(&id).await;
        }
    }

    async fn light_state(&self, id: &str) {
        if !self.published.get(id).is_some_and(|t| t.iter().any(|t| t.contains("/light/"))) {
            return;
        }
        let (Some(d), Some(state)) = (self.shared.home.device(id), self.shared.home.state(id)) else { return };
        let s = discovery::light_state(&d, &state);
        self.docs().publish(&self.names.light_state_topic(id), s.to_string(), QoS::AtLeastOnce, true).await;
    }

    async fn other(&mut self, m: Other) {
        let d = self.names.discovery.clone();
        if m.topic == format!("{d}/status") {
            if &m.payload[..] == b"online" {
                tracing::info!("Home Assistant (re)started: publishing every entity again");
                self.republish().await;
            }
            return;
        }
        if let Some((component, node, object)) = adopt::parse_topic(&d, &m.topic) {
            let (component, node, object) = (component.to_string(), node.map(str::to_string), object.to_string());
            return self.config(&m, &component, node.as_deref(), &object).await;
        }
        let p = &self.names.prefix;
        if let Some(rest) = m.topic.strip_prefix(&format!("{p}/ha/")) {
            let parts: Vec<&str> = rest.split('/').collect();
            if let [id, entity, verb] = parts.as_slice() {
                if *id != "adopted" {
                    return self.ha_command(id, entity, verb, &m.payload).await;
                }
            }
            return;
        }
        self.adopted_message(&m.topic, &m.payload).await;
    }

    /// A discovery config: one of ours (remembered), or another's (adopted).
    async fn config(&mut self, m: &Other, component: &str, node: Option<&str>, object: &str) {
        if node == Some(self.names.node.as_str()) {
            if m.payload.is_empty() {
                self.ours.remove(&m.topic);
            } else if let Ok(v) = serde_json::from_slice::<Value>(&m.payload) {
                let id =
                    v["device"]["identifiers"][0].as_str().and_then(|i| i.strip_prefix("alicia_")).map(str::to_string);
                if let Some(id) = id {
                    self.ours.insert(m.topic.clone(), id);
                    self.sweep_ours().await;
                }
            }
            return;
        }
        if !self.settings.adopt {
            return;
        }
        if m.payload.is_empty() {
            return self.entity_removed(&m.topic).await;
        }
        let Some(c) = serde_json::from_slice::<Value>(&m.payload).ok().and_then(|v| v.as_object().cloned()) else {
            tracing::debug!(topic = %m.topic, "a discovery config that is not a JSON object");
            return;
        };
        let c = adopt::expand(&c);
        let unique = c
            .get("unique_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{component}_{}_{object}", node.unwrap_or("")));
        let from_alicia = unique.starts_with("alicia_")
            || c.get("origin").and_then(|o| o.get("name")).and_then(Value::as_str) == Some("Alicia");
        if from_alicia {
            return;
        }
        let key = adopt::device_key(&c, &unique);
        let id = adopt::adopted_id(&self.settings.adopted_prefix, &key);
        let entity = adopt::Entity::from_config(component, unique.clone(), c.clone());
        let new_topics = {
            let mut set = self.shared.adopted.lock();
            set.ids.insert(id.clone(), key.clone());
            let dev = set.devices.entry(key.clone()).or_insert_with(|| Adopted::new(id, key.clone()));
            dev.merge(&c);
            match entity {
                Ok(e) => dev.put(e),
                Err(why) => tracing::debug!(topic = %m.topic, %why, "entity not adopted"),
            }
            let topics = dev.topics();
            set.configs.insert(m.topic.clone(), (key.clone(), unique));
            let mut new = Vec::new();
            for t in topics {
                let keys = set.topics.entry(t.clone()).or_default();
                if keys.insert(key.clone()) {
                    new.push(t);
                }
            }
            new
        };
        self.dirty.insert(key);
        for t in new_topics {
            self.docs().subscribe(&t).await;
        }
    }

    async fn entity_removed(&mut self, topic: &str) {
        let gone = {
            let mut set = self.shared.adopted.lock();
            let Some((key, unique)) = set.configs.remove(topic) else { return };
            let Some(dev) = set.devices.get_mut(&key) else { return };
            let had = !dev.entities.is_empty();
            dev.entities.remove(&unique);
            if dev.entities.is_empty() && had {
                let id = dev.device_id.clone();
                set.devices.remove(&key);
                set.ids.remove(&id);
                for keys in set.topics.values_mut() {
                    keys.remove(&key);
                }
                Some((key, id))
            } else {
                self.dirty.insert(key);
                None
            }
        };
        if let Some((key, id)) = gone {
            self.dirty.remove(&key);
            self.registered.remove(&key);
            let data = json!({ "action": "unregister", "device_id": id });
            match self.bus.request(Destination::service("device_registry"), data, Duration::from_secs(5)).await {
                Ok(_) => tracing::info!(device = %id, "adopted device removed (its last entity was)"),
                Err(e) => tracing::warn!(device = %id, error = %e, "cannot unregister an adopted device"),
            }
        }
    }

    async fn register_dirty(&mut self) {
        let keys: Vec<String> = std::mem::take(&mut self.dirty).into_iter().collect();
        for key in keys {
            let (reg, id, state, available) = {
                let set = self.shared.adopted.lock();
                let Some(d) = set.devices.get(&key).filter(|d| !d.entities.is_empty()) else { continue };
                (d.registration(&self.names.prefix), d.device_id.clone(), d.state.clone(), d.available())
            };
            if self.registered.get(&key) == Some(&reg) {
                continue;
            }
            let mut data = reg.clone();
            data["action"] = json!("register");
            match self.bus.request(Destination::service("device_registry"), data, Duration::from_secs(5)).await {
                Ok(_) => {
                    tracing::info!(device = %id, "adopted a device announced with Home Assistant discovery");
                    self.registered.insert(key, reg);
                    if !state.is_empty() {
                        self.publish_state(&id, &state).await;
                    }
                    if let Some(a) = available {
                        self.publish_status(&id, a).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(device = %id, error = %e, "cannot register an adopted device; retrying");
                    self.dirty.insert(key);
                }
            }
        }
    }

    async fn publish_state(&self, id: &str, state: &Map<String, Value>) {
        let topic = format!("{}/devices/{id}/state", self.names.prefix);
        self.docs().publish(&topic, Value::Object(state.clone()).to_string(), QoS::AtLeastOnce, true).await;
    }

    async fn publish_status(&self, id: &str, available: bool) {
        let topic = format!("{}/devices/{id}/status", self.names.prefix);
        let word = if available { "online" } else { "offline" };
        self.docs().publish(&topic, word, QoS::AtLeastOnce, true).await;
    }

    async fn adopted_message(&mut self, topic: &str, payload: &[u8]) {
        let now = Timestamp::now().to_string();
        let updates: Vec<(String, bool, adopt::Update, Map<String, Value>)> = {
            let mut set = self.shared.adopted.lock();
            let keys: Vec<String> = set.topics.get(topic).map(|k| k.iter().cloned().collect()).unwrap_or_default();
            keys.iter()
                .filter_map(|k| {
                    let registered = self.registered.contains_key(k);
                    let d = set.devices.get_mut(k)?;
                    let u = d.message(topic, payload, &now);
                    Some((d.device_id.clone(), registered, u, d.state.clone()))
                })
                .collect()
        };
        for (id, registered, u, state) in updates {
            if !registered {
                continue; // published once the registration is in
            }
            if u.state_changed {
                self.publish_state(&id, &state).await;
            }
            if !u.readings.is_empty() {
                let t = json!({ "device_id": id, "timestamp": now, "readings": u.readings });
                let topic = format!("{}/devices/{id}/telemetry", self.names.prefix);
                self.docs().publish(&topic, t.to_string(), QoS::AtLeastOnce, false).await;
            }
            if let Some(a) = u.available {
                self.publish_status(&id, a).await;
            }
        }
    }

    async fn heartbeats(&self) {
        let ids: Vec<String> = {
            let set = self.shared.adopted.lock();
            set.devices
                .iter()
                .filter(|(k, d)| self.registered.contains_key(*k) && d.available() != Some(false))
                .map(|(_, d)| d.device_id.clone())
                .collect()
        };
        let topic = format!("{}/system/discovery/heartbeat", self.names.prefix);
        for id in ids {
            let env = Envelope::heartbeat(
                self.bus.name(),
                json!({ "device_id": id, "status": "online", "via": SERVICE_NAME }),
            )
            .with_ttl(ADOPTED_HEARTBEAT.as_secs() as u32 * 3);
            if let Err(e) = self.bus.send_to(&topic, &env, None).await {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
        }
    }

    /// A command Home Assistant sent for an Alicia entity.
    async fn ha_command(&self, id: &str, entity: &str, verb: &str, payload: &[u8]) {
        match discovery::ask(entity, verb, payload) {
            Ok(Ask::Commands(list)) => {
                // One after another, each answered before the next: the router handles envelopes
                // concurrently, so two sent at once may arrive in either order.
                let (bus, id) = (self.bus.clone(), id.to_string());
                tokio::spawn(async move {
                    for (command, parameters) in list {
                        tracing::info!(device = %id, %command, "command from Home Assistant");
                        let data = json!({ "command": command, "parameters": parameters });
                        if let Err(e) = bus.request(Destination::device(&id), data, Duration::from_secs(5)).await {
                            tracing::warn!(device = %id, %command, error = %e, "command from Home Assistant failed");
                            return;
                        }
                    }
                });
            }
            Ok(Ask::Announce(text)) => {
                let topic = format!("{}/devices/speakers/announce", self.names.prefix);
                let env = Envelope::event(
                    self.bus.name(),
                    Destination::topic(&topic),
                    json!({ "device_id": id, "text": text }),
                );
                if let Err(e) = self.bus.send_to(&topic, &env, None).await {
                    tracing::warn!(device = %id, error = %e, "announcement from Home Assistant not sent");
                }
            }
            Err(why) => {
                tracing::warn!(device = %id, entity, verb, %why, "a command from Home Assistant that means nothing");
                let _ = self
                    .bus
                    .dead_letter(
                        alicia_sdk::Refusal::new("invalid_command", format!("Home Assistant command refused: {why}")),
                        &format!("{}/ha/{id}/{entity}/{verb}", self.names.prefix),
                        payload,
                    )
                    .await;
            }
        }
    }
}
