//! What the router knows of devices: the registry's retained inventory, kept current by its
//! events, and how a `device_id:` or `capability:` destination resolves against it.

use parking_lot::Mutex;
use std::collections::HashMap;

use serde_json::Value;

/// Whether a device can be reached, as the registry last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Heard from within its timeout.
    Online,
    /// Not heard from since the registry (re)started: it may well be there.
    Unknown,
    /// Its will fired, it said so, or it stayed silent past its timeout.
    Offline,
}

/// One device as the router needs it (the registry's record has more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device's id.
    pub device_id: String,
    /// Where it is (`kitchen`), if the registration said.
    pub location: Option<String>,
    /// What it can do (capability names).
    pub capabilities: Vec<String>,
    /// Its command topic (`endpoints.control`, the design document's name, or `endpoints.command`).
    pub command: Option<String>,
    /// `status` in the inventory.
    pub liveness: Liveness,
}

impl Device {
    /// Reads a device record of the inventory or of an event; `None` without a `device_id`.
    /// Capabilities may be objects with a `name` (the design document's form) or plain names.
    pub fn from_json(v: &Value) -> Option<Device> {
        let text = |key: &str| v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let device_id = text("device_id")?;
        let capabilities = v
            .get("capabilities")
            .and_then(Value::as_array)
            .map(|caps| {
                caps.iter()
                    .filter_map(|c| c.as_str().or_else(|| c.get("name").and_then(Value::as_str)))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let endpoint =
            |key: &str| v.get("endpoints").and_then(|e| e.get(key)).and_then(Value::as_str).filter(|s| !s.is_empty());
        let command = endpoint("control").or_else(|| endpoint("command")).map(str::to_string);
        let liveness = match v.get("status").and_then(Value::as_str) {
            Some("online") => Liveness::Online,
            Some("unknown") => Liveness::Unknown,
            _ => Liveness::Offline,
        };
        Some(Device { device_id, location: text("location"), capabilities, command, liveness })
    }

    /// Whether the router should try to deliver to it: not known to be offline.
    pub fn reachable(&self) -> bool {
        self.liveness != Liveness::Offline
    }
}

/// The devices, by id, with a capability index (ids sorted, so round robin is stable).
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    devices: HashMap<String, Device>,
    by_capability: HashMap<String, Vec<String>>,
}

/// Why a destination could not be resolved: the label (for metrics and the error code) and
/// the reason (for the dead letter and the error response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unroutable {
    /// `unknown_device`, `device_offline`, `no_provider`, `no_endpoint`.
    pub code: &'static str,
    /// What happened, for people.
    pub reason: String,
}

impl Unroutable {
    fn new(code: &'static str, reason: String) -> Self {
        Unroutable { code, reason }
    }
}

impl Inventory {
    /// The inventory document `{"updated", "devices": [..]}`; an empty payload (a cleared
    /// retained message) is an empty inventory.
    pub fn from_document(payload: &[u8]) -> Result<Inventory, String> {
        if payload.is_empty() {
            return Ok(Inventory::default());
        }
        let doc: Value = serde_json::from_slice(payload).map_err(|e| format!("inventory is not JSON: {e}"))?;
        let list = doc
            .get("devices")
            .and_then(Value::as_array)
            .ok_or_else(|| "inventory has no `devices` array".to_string())?;
        let mut inv = Inventory::default();
        for d in list.iter().filter_map(Device::from_json) {
            inv.devices.insert(d.device_id.clone(), d);
        }
        inv.reindex();
        Ok(inv)
    }

    /// Applies a registry event `{"event", "device_id", "device"}`. Returns whether it changed
    /// anything it understood.
    pub fn apply_event(&mut self, payload: &[u8]) -> Result<bool, String> {
        let ev: Value = serde_json::from_slice(payload).map_err(|e| format!("registry event is not JSON: {e}"))?;
        let kind = ev.get("event").and_then(Value::as_str).unwrap_or_default();
        let id = ev
            .get("device_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| ev.get("device").and_then(|d| d.get("device_id")).and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| "registry event without `device_id`".to_string())?;
        match kind {
            "removed" => {
                let changed = self.devices.remove(&id).is_some();
                self.reindex();
                Ok(changed)
            }
            "registered" | "updated" | "online" | "offline" => {
                let mut device = match ev.get("device").and_then(Device::from_json) {
                    Some(d) => d,
                    None => match self.devices.get(&id) {
                        Some(d) => d.clone(),
                        None => return Ok(false),
                    },
                };
                match kind {
                    "online" => device.liveness = Liveness::Online,
                    "offline" => device.liveness = Liveness::Offline,
                    _ => {}
                }
                self.devices.insert(id, device);
                self.reindex();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn reindex(&mut self) {
        let mut index: HashMap<String, Vec<String>> = HashMap::new();
        for d in self.devices.values() {
            for c in &d.capabilities {
                index.entry(c.clone()).or_default().push(d.device_id.clone());
            }
        }
        for ids in index.values_mut() {
            ids.sort();
            ids.dedup();
        }
        self.by_capability = index;
    }

    /// The number of devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// No devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// A device by id.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// The command topic of device `id`, if it is known, not offline and has a usable one. A
    /// device whose state is `unknown` (not heard from since the registry restarted) is tried:
    /// it was there before, and a command it misses costs less than one refused for nothing.
    pub fn device_topic(&self, id: &str) -> Result<String, Unroutable> {
        let d = self.devices.get(id).ok_or_else(|| {
            Unroutable::new("unknown_device", format!("no device `{id}` in the registry's inventory"))
        })?;
        if !d.reachable() {
            return Err(Unroutable::new("device_offline", format!("device `{id}` is offline")));
        }
        command_topic(d)
    }

    /// One provider of `capability`: the online ones first, else those in an `unknown` state;
    /// among them, in `near` (a location) if any is there, else any; round robin (per
    /// capability and location) via `turns`.
    pub fn pick_provider(
        &self,
        capability: &str,
        near: Option<&str>,
        turns: &RoundRobin,
    ) -> Result<(String, String), Unroutable> {
        let ids = self.by_capability.get(capability).map(Vec::as_slice).unwrap_or_default();
        let with = |l: Liveness| -> Vec<&Device> {
            ids.iter().filter_map(|id| self.devices.get(id)).filter(|d| d.liveness == l).collect()
        };
        let mut online = with(Liveness::Online);
        if online.is_empty() {
            online = with(Liveness::Unknown);
        }
        if online.is_empty() {
            let why = if ids.is_empty() {
                format!("no device provides capability `{capability}`")
            } else {
                format!("no online provider of capability `{capability}` ({} offline)", ids.len())
            };
            return Err(Unroutable::new("no_provider", why));
        }
        let local: Vec<&Device> = match near {
            Some(loc) => online.iter().copied().filter(|d| d.location.as_deref() == Some(loc)).collect(),
            None => Vec::new(),
        };
        let (pool, key_loc) = if local.is_empty() { (online, "") } else { (local, near.unwrap_or_default()) };
        let chosen = pool[turns.next(capability, key_loc) % pool.len()];
        Ok((chosen.device_id.clone(), command_topic(chosen)?))
    }
}

fn command_topic(d: &Device) -> Result<String, Unroutable> {
    match &d.command {
        Some(t) if valid_topic(t) => Ok(t.clone()),
        Some(t) => Err(Unroutable::new(
            "no_endpoint",
            format!("device `{}` has an unusable command topic {t:?} (empty level, wildcard, `$` or NUL)", d.device_id),
        )),
        None => Err(Unroutable::new(
            "no_endpoint",
            format!("device `{}` has no command endpoint (`endpoints.control`)", d.device_id),
        )),
    }
}

/// A topic name the router may publish to: not empty, no wildcards or NUL, not a `$` topic.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty() && !t.contains(['+', '#', '\0']) && !t.starts_with('$') && t.len() <= 65535
}

/// Round-robin turn counters, one per (capability, location).
#[derive(Debug, Default)]
pub struct RoundRobin {
    turns: Mutex<HashMap<(String, String), usize>>,
}

impl RoundRobin {
    /// The next turn for `capability` near `location` (`""`: anywhere).
    pub fn next(&self, capability: &str, location: &str) -> usize {
        let mut turns = self.turns.lock();
        let n = turns.entry((capability.to_string(), location.to_string())).or_insert(0);
        let turn = *n;
        *n = n.wrapping_add(1);
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Vec<u8> {
        json!({"updated": "2025-01-15T10:30:00Z", "devices": [
            {"device_id": "sonos_kitchen_001", "location": "kitchen", "status": "online",
             "capabilities": ["audio_playback", "volume_control"],
             "endpoints": {"command": "alicia/devices/sonos_kitchen_001/command", "status": "alicia/devices/sonos_kitchen_001/status"}},
            {"device_id": "sonos_living_001", "location": "living_room", "status": "online",
             "capabilities": ["audio_playback"], "endpoints": {"command": "alicia/devices/sonos_living_001/command"}},
            {"device_id": "sonos_bed_001", "location": "bedroom", "status": "offline",
             "capabilities": ["audio_playback"], "endpoints": {"command": "alicia/devices/sonos_bed_001/command"}},
            {"device_id": "bad", "status": "online", "capabilities": ["x"], "endpoints": {"command": "a/+/b"}},
            {"device_id": "doc_speaker", "location": "hall", "status": "unknown",
             "capabilities": [{"name": "audio_playback", "version": "1.0.0", "parameters": {}, "endpoints": {}},
                              {"name": "announce"}],
             "endpoints": {"control": "alicia/devices/doc_speaker/command", "status": "alicia/devices/doc_speaker/status"}},
            {"name": "no id is skipped"}
        ]})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn resolves_devices() {
        let inv = Inventory::from_document(&doc()).unwrap();
        assert_eq!(inv.len(), 5);
        // The design document's form: capability objects, `endpoints.control`; `unknown` is tried.
        assert_eq!(inv.device_topic("doc_speaker").unwrap(), "alicia/devices/doc_speaker/command");
        assert_eq!(inv.device("doc_speaker").unwrap().capabilities, ["audio_playback", "announce"]);
        assert_eq!(inv.device_topic("sonos_kitchen_001").unwrap(), "alicia/devices/sonos_kitchen_001/command");
        assert_eq!(inv.device_topic("nope").unwrap_err().code, "unknown_device");
        assert_eq!(inv.device_topic("sonos_bed_001").unwrap_err().code, "device_offline");
        assert_eq!(inv.device_topic("bad").unwrap_err().code, "no_endpoint");
        assert!(Inventory::from_document(b"{oops").is_err());
        assert!(Inventory::from_document(b"{}").is_err());
        assert!(Inventory::from_document(b"").unwrap().is_empty());
    }

    #[test]
    fn round_robin_skips_offline_and_prefers_the_location() {
        let inv = Inventory::from_document(&doc()).unwrap();
        let rr = RoundRobin::default();
        let picks: Vec<String> = (0..4).map(|_| inv.pick_provider("audio_playback", None, &rr).unwrap().0).collect();
        // Online providers come first: the one in an unknown state is not picked while they are.
        assert_eq!(picks, ["sonos_kitchen_001", "sonos_living_001", "sonos_kitchen_001", "sonos_living_001"]);
        for _ in 0..3 {
            let near = inv.pick_provider("audio_playback", Some("living_room"), &rr).unwrap();
            assert_eq!(near.0, "sonos_living_001");
        }
        // Nobody online in the bedroom: any online provider.
        let far = inv.pick_provider("audio_playback", Some("bedroom"), &rr).unwrap();
        assert_ne!(far.0, "sonos_bed_001");
        assert_eq!(inv.pick_provider("teleport", None, &rr).unwrap_err().code, "no_provider");
        // Only a provider in an unknown state: it is tried.
        assert_eq!(inv.pick_provider("announce", None, &rr).unwrap().0, "doc_speaker");
    }

    #[test]
    fn events_update_the_inventory() {
        let mut inv = Inventory::from_document(&doc()).unwrap();
        let ev = |v: Value| v.to_string().into_bytes();
        assert!(inv
            .apply_event(&ev(json!({"event": "offline", "device_id": "sonos_kitchen_001", "device": null})))
            .unwrap());
        assert_eq!(inv.device_topic("sonos_kitchen_001").unwrap_err().code, "device_offline");
        inv.apply_event(&ev(json!({"event": "online", "device_id": "sonos_kitchen_001"}))).unwrap();
        assert!(inv.device_topic("sonos_kitchen_001").is_ok());
        inv.apply_event(&ev(json!({"event": "registered", "device_id": "lamp", "device":
            {"device_id": "lamp", "status": "online", "capabilities": ["light"], "endpoints": {"command": "l/cmd"}}})))
            .unwrap();
        assert_eq!(inv.pick_provider("light", None, &RoundRobin::default()).unwrap(), ("lamp".into(), "l/cmd".into()));
        inv.apply_event(&ev(json!({"event": "removed", "device_id": "lamp", "device": {"device_id": "lamp"}})))
            .unwrap();
        assert_eq!(inv.device_topic("lamp").unwrap_err().code, "unknown_device");
        assert_eq!(inv.pick_provider("light", None, &RoundRobin::default()).unwrap_err().code, "no_provider");
        assert!(inv.apply_event(b"nope").is_err());
    }
}
