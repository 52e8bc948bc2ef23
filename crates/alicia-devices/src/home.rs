//! What a device service knows of the home: the registry's retained inventory (kept current by
//! its events) and every device's retained state, read on a plain MQTT connection
//! ([`alicia_sdk::Link`], through [`Docs`]: these are documents, not envelopes).
//!
//! The router keeps a smaller copy of the same inventory for routing; the inventory document
//! is the contract between them and the registry.

use std::collections::HashMap;
use std::sync::Arc;

use alicia_sdk::{Filter, Link, LinkEvent, LinkOptions, QoS, ServiceConfig};
use bytes::Bytes;
use parking_lot::RwLock;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

/// One capability of a device: its name and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Capability {
    pub name: String,
    pub parameters: Map<String, Value>,
}

impl Capability {
    /// A numeric parameter.
    pub fn number(&self, key: &str) -> Option<f64> {
        self.parameters.get(key).and_then(Value::as_f64)
    }

    /// A boolean parameter.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.parameters.get(key).and_then(Value::as_bool)
    }
}

/// A registered device as the services need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub device_id: String,
    pub device_type: String,
    pub name: String,
    pub location: Option<String>,
    /// `online`, `offline` or `unknown`.
    pub status: String,
    pub capabilities: Vec<Capability>,
    pub endpoints: Map<String, Value>,
    pub metadata: Map<String, Value>,
}

impl Device {
    /// Reads a record of the inventory or of a registry event.
    pub fn from_json(v: &Value) -> Option<Device> {
        let text = |key: &str| v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let device_id = text("device_id")?;
        let capabilities = v
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|caps| {
                caps.iter()
                    .filter_map(|c| match c {
                        Value::String(name) => Some(Capability { name: name.clone(), parameters: Map::new() }),
                        Value::Object(o) => Some(Capability {
                            name: o.get("name")?.as_str()?.to_string(),
                            parameters: o.get("parameters").and_then(Value::as_object).cloned().unwrap_or_default(),
                        }),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let object = |key: &str| v.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
        let metadata = object("metadata");
        let location =
            text("location").or_else(|| metadata.get("location").and_then(Value::as_str).map(str::to_string));
        Some(Device {
            name: text("name").unwrap_or_else(|| device_id.clone()),
            device_type: text("device_type").unwrap_or_default(),
            status: text("status").unwrap_or_else(|| "unknown".into()),
            location,
            capabilities,
            endpoints: object("endpoints"),
            metadata,
            device_id,
        })
    }

    pub fn capability(&self, name: &str) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.name == name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.capability(name).is_some()
    }

    /// Not known to be offline (the router delivers to `unknown` devices too).
    pub fn reachable(&self) -> bool {
        self.status != "offline"
    }
}

/// The devices and their states.
#[derive(Debug, Default)]
pub struct HomeView {
    pub devices: HashMap<String, Device>,
    pub states: HashMap<String, Value>,
    /// Whether the inventory has been heard at all.
    pub inventory_seen: bool,
}

/// The topics the follower reads, under `prefix`.
pub struct HomeTopics {
    pub inventory: String,
    pub events: String,
    pub states: String,
    prefix: String,
}

impl HomeTopics {
    pub fn new(prefix: &str) -> Self {
        HomeTopics {
            inventory: format!("{prefix}/system/registry/devices"),
            events: format!("{prefix}/system/registry/events"),
            states: format!("{prefix}/devices/+/state"),
            prefix: prefix.to_string(),
        }
    }

    /// The device id of a `P/devices/ID/state` topic.
    pub fn state_device<'a>(&self, topic: &'a str) -> Option<&'a str> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix("/devices/")?;
        let id = rest.strip_suffix("/state")?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

/// A message the follower did not consume (on the caller's extra filters).
#[derive(Debug, Clone)]
pub struct Other {
    pub topic: String,
    pub payload: Bytes,
    pub retain: bool,
}

/// What changed, for services that react.
#[derive(Debug, Clone)]
pub enum Change {
    /// The device's state document was replaced.
    State(String),
    /// The inventory or an event changed the device list (ids of devices added/updated, and
    /// removed).
    Devices { updated: Vec<String>, removed: Vec<String> },
    /// Connected (again): retained documents follow.
    Connected,
}

/// The documents side of a [`Link`]: publishing a document is best effort (queued while the
/// link reconnects, within its bounded channel; a failure is logged, never returned: the
/// next state, or the republish on reconnect, supersedes it).
pub struct Docs {
    link: Link,
}

impl Docs {
    /// Publishes a document.
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS, retain: bool) {
        if let Err(e) = self.link.publish(topic, qos, retain, payload, None).await {
            tracing::debug!(error = %e, topic, "document not published");
        }
    }

    /// Publishes without waiting (dropped if the channel is full).
    pub fn try_publish(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS, retain: bool) {
        let _ = self.link.try_publish(topic, qos, retain, payload);
    }

    /// Adds a filter (QoS 1), subscribed now and on every connect.
    pub async fn subscribe(&self, filter: &str) {
        if let Err(e) = self.link.subscribe(Filter::new(filter, QoS::AtLeastOnce)).await {
            tracing::debug!(error = %e, filter, "subscription left for the next connect");
        }
    }

    /// The link itself.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Sends DISCONNECT after what is queued and waits for the connection to end.
    pub async fn close(&self) {
        self.link.close().await;
    }
}

/// Follows the inventory, events and states; forwards everything else to `others`.
pub struct Home {
    pub view: Arc<RwLock<HomeView>>,
    pub docs: Arc<Docs>,
    /// Bumped on every change (wait for a state with [`Home::wait`]).
    version: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Home {
    /// Connects as `client_id` and follows; `extra` filters' messages go to the returned
    /// channel, and every change to `changes` when given.
    pub fn follow(
        config: &ServiceConfig,
        client_id: String,
        extra: Vec<String>,
        changes: Option<mpsc::UnboundedSender<Change>>,
    ) -> (Home, mpsc::UnboundedReceiver<Other>) {
        let topics = HomeTopics::new(&config.topic_prefix);
        let mut filters = vec![topics.inventory.clone(), topics.events.clone(), topics.states.clone()];
        filters.extend(extra);
        let label = format!("{client_id} (documents)");
        let (link, mut rx) = Link::connect(config, LinkOptions::new(client_id, filters).with_label(label));
        let view: Arc<RwLock<HomeView>> = Arc::default();
        let (version_tx, version) = watch::channel(0u64);
        let (others_tx, others) = mpsc::unbounded_channel();
        let v = view.clone();
        let task = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                let change = match ev {
                    LinkEvent::Online => Some(Change::Connected),
                    LinkEvent::Offline { .. } => None,
                    LinkEvent::Message(p) => {
                        let (topic, payload, retain) =
                            (String::from_utf8_lossy(&p.topic).into_owned(), p.payload, p.retain);
                        if topic == topics.inventory {
                            inventory(&v, &payload)
                        } else if topic == topics.events {
                            event(&v, &payload)
                        } else if let Some(id) = topics.state_device(&topic) {
                            let state = serde_json::from_slice::<Value>(&payload).ok().filter(Value::is_object);
                            let mut w = v.write();
                            match state {
                                Some(s) => w.states.insert(id.to_string(), s),
                                None => w.states.remove(id),
                            };
                            Some(Change::State(id.to_string()))
                        } else {
                            let _ = others_tx.send(Other { topic, payload, retain });
                            None
                        }
                    }
                };
                if let Some(c) = change {
                    version_tx.send_modify(|n| *n += 1);
                    if let Some(tx) = &changes {
                        let _ = tx.send(c);
                    }
                }
            }
        });
        (Home { view, docs: Arc::new(Docs { link }), version, task }, others)
    }

    /// A copy of a device's record.
    pub fn device(&self, id: &str) -> Option<Device> {
        self.view.read().devices.get(id).cloned()
    }

    /// A copy of a device's last state.
    pub fn state(&self, id: &str) -> Option<Value> {
        self.view.read().states.get(id).cloned()
    }

    /// Devices that satisfy `pred`, sorted by id.
    pub fn devices(&self, pred: impl Fn(&Device) -> bool) -> Vec<Device> {
        let mut out: Vec<Device> = self.view.read().devices.values().filter(|d| pred(d)).cloned().collect();
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        out
    }

    /// Waits until `check` (called on every change) returns something, at most `timeout`.
    pub async fn wait<T>(&self, timeout: std::time::Duration, check: impl Fn(&HomeView) -> Option<T>) -> Option<T> {
        let mut rx = self.version.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(t) = check(&self.view.read()) {
                return Some(t);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return check(&self.view.read()),
            }
        }
    }

    pub async fn close(&self) {
        self.docs.close().await;
        self.task.abort();
    }
}

fn inventory(v: &RwLock<HomeView>, payload: &[u8]) -> Option<Change> {
    let doc: Value =
        if payload.is_empty() { serde_json::json!({ "devices": [] }) } else { serde_json::from_slice(payload).ok()? };
    let list = doc.get("devices")?.as_array()?;
    let devices: HashMap<String, Device> =
        list.iter().filter_map(Device::from_json).map(|d| (d.device_id.clone(), d)).collect();
    let mut w = v.write();
    let removed: Vec<String> = w.devices.keys().filter(|k| !devices.contains_key(*k)).cloned().collect();
    let updated: Vec<String> =
        devices.iter().filter(|(k, d)| w.devices.get(*k) != Some(d)).map(|(k, _)| k.clone()).collect();
    w.devices = devices;
    w.inventory_seen = true;
    Some(Change::Devices { updated, removed })
}

fn event(v: &RwLock<HomeView>, payload: &[u8]) -> Option<Change> {
    let ev: Value = serde_json::from_slice(payload).ok()?;
    let kind = ev.get("event")?.as_str()?;
    let id = ev.get("device_id").and_then(Value::as_str)?.to_string();
    let mut w = v.write();
    if kind == "removed" {
        w.devices.remove(&id);
        return Some(Change::Devices { updated: vec![], removed: vec![id] });
    }
    let mut device = ev.get("device").and_then(Device::from_json)?;
    // An online/offline event's record already carries the new status; be sure.
    if matches!(kind, "online" | "offline") {
        device.status = kind.to_string();
    }
    w.devices.insert(id.clone(), device);
    Some(Change::Devices { updated: vec![id], removed: vec![] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inventory_and_events() {
        let v = RwLock::new(HomeView::default());
        let doc = json!({"devices": [
            {"device_id": "spk", "device_type": "speaker", "status": "online", "metadata": {"location": "kitchen"},
             "capabilities": [{"name": "volume_control", "parameters": {"max_volume": 30}}, "announce"]},
            {"device_id": "x"}]});
        inventory(&v, doc.to_string().as_bytes()).unwrap();
        let d = v.read().devices["spk"].clone();
        assert_eq!(d.location.as_deref(), Some("kitchen"));
        assert_eq!(d.capability("volume_control").unwrap().number("max_volume"), Some(30.0));
        assert!(d.has("announce"));
        let off = json!({"event": "offline", "device_id": "spk", "device": {"device_id": "spk", "status": "online"}});
        event(&v, off.to_string().as_bytes()).unwrap();
        assert_eq!(v.read().devices["spk"].status, "offline");
        event(&v, br#"{"event":"removed","device_id":"x"}"#).unwrap();
        assert!(!v.read().devices.contains_key("x"));
        let t = HomeTopics::new("alicia");
        assert_eq!(t.state_device("alicia/devices/spk/state"), Some("spk"));
        assert_eq!(t.state_device("alicia/devices/a/b/state"), None);
    }
}
