//! What devices last said about themselves: the retained state documents on
//! `<prefix>/devices/<id>/state` and the latest sensor readings from
//! `<prefix>/devices/<id>/telemetry` (and the shared `<prefix>/devices/sensors/telemetry`), as
//! `docs/device-protocol.md` defines them. Questions ("is the coffee maker on", "what is the
//! temperature in the kitchen") are answered from here, without asking the device.

use parking_lot::RwLock;
use std::collections::HashMap;

use serde_json::{json, Map, Value};

use crate::home::DeviceInfo;

/// Largest state or telemetry document kept (a device cannot fill the memory).
pub const MAX_DOCUMENT: usize = 64 * 1024;
/// Most devices whose state is kept.
pub const MAX_DEVICES: usize = 100_000;

/// One sensor reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub value: Value,
    pub unit: Option<String>,
    pub timestamp: Option<String>,
}

#[derive(Debug, Default)]
struct Known {
    state: Option<Map<String, Value>>,
    readings: HashMap<String, Reading>,
}

/// The latest state and readings of every device heard from.
#[derive(Debug, Default)]
pub struct DeviceStates {
    known: RwLock<HashMap<String, Known>>,
}

/// A device's documents may come wrapped in an envelope (a device built on an SDK): the data is
/// then `payload.data`.
fn unwrap_envelope(v: Value) -> Value {
    if v.get("message_id").is_some() && v.get("payload").is_some() {
        return v["payload"]["data"].clone();
    }
    v
}

fn parse(payload: &[u8]) -> Option<Value> {
    if payload.len() > MAX_DOCUMENT {
        return None;
    }
    serde_json::from_slice::<Value>(payload).ok().map(unwrap_envelope)
}

impl DeviceStates {
    fn with<R>(&self, id: &str, f: impl FnOnce(&mut Known) -> R) -> Option<R> {
        let mut known = self.known.write();
        if !known.contains_key(id) && known.len() >= MAX_DEVICES {
            return None;
        }
        Some(f(known.entry(id.to_string()).or_default()))
    }

    /// A state document from `<prefix>/devices/<id>/state`. An empty payload (a retained
    /// message cleared) forgets the state. Returns whether it was taken.
    pub fn apply_state(&self, device_id: &str, payload: &[u8]) -> bool {
        if payload.is_empty() {
            return self.with(device_id, |k| k.state = None).is_some();
        }
        match parse(payload) {
            Some(Value::Object(state)) => self.with(device_id, |k| k.state = Some(state)).is_some(),
            _ => false,
        }
    }

    /// A telemetry document `{"device_id", "timestamp", "readings": [{capability, value,
    /// unit}]}` from `topic_device`'s telemetry topic (`None` for the shared topic, where the
    /// document names the device). Returns how many readings were taken.
    pub fn apply_telemetry(&self, topic_device: Option<&str>, payload: &[u8]) -> usize {
        let Some(doc) = parse(payload) else { return 0 };
        let Some(id) = topic_device.or_else(|| doc.get("device_id").and_then(Value::as_str)) else { return 0 };
        let timestamp = doc.get("timestamp").and_then(Value::as_str).map(str::to_string);
        let readings: Vec<(String, Reading)> = doc
            .get("readings")
            .and_then(Value::as_array)
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| {
                        let cap = r.get("capability").and_then(Value::as_str)?;
                        let value = r.get("value")?.clone();
                        let unit = r.get("unit").and_then(Value::as_str).map(str::to_string);
                        Some((cap.to_string(), Reading { value, unit, timestamp: timestamp.clone() }))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let n = readings.len();
        self.with(id, |k| k.readings.extend(readings)).map(|_| n).unwrap_or(0)
    }

    /// The state document, if the device published one.
    pub fn state(&self, device_id: &str) -> Option<Map<String, Value>> {
        self.known.read().get(device_id).and_then(|k| k.state.clone())
    }

    /// The latest reading of a quantity: from telemetry, else a key of that name in the state
    /// document (`{"temperature": 21.5}`).
    pub fn reading(&self, device_id: &str, quantity: &str) -> Option<Reading> {
        let known = self.known.read();
        let k = known.get(device_id)?;
        if let Some(r) = k.readings.get(quantity) {
            return Some(r.clone());
        }
        let v = k.state.as_ref()?.get(quantity)?;
        (!v.is_null()).then(|| Reading { value: v.clone(), unit: None, timestamp: None })
    }

    /// A number in the state document (`volume`, `brightness`, `level`).
    pub fn number(&self, device_id: &str, key: &str) -> Option<f64> {
        let known = self.known.read();
        known.get(device_id)?.state.as_ref()?.get(key)?.as_f64()
    }
}

/// A number as people say it: `21.5`, `21`, not `21.0`.
pub fn number_text(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) => format!("{}", (f * 100.0).round() / 100.0),
            None => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        other => other.to_string(),
    }
}

/// `°C` and `%` follow the number as Home Assistant writes them: `21.5 °C`, `48 %`.
fn with_unit(value: &str, unit: Option<&str>) -> String {
    match unit {
        Some(u) if !u.is_empty() => format!("{value} {u}"),
        _ => value.to_string(),
    }
}

/// Home Assistant's state object for a device (what its response templates read: `state`,
/// `state_with_unit`, `attributes`, `name`, `domain`, `entity_id`), made from the device's
/// state document and readings. `None` when the device has said nothing usable.
pub fn ha_state(device: &DeviceInfo, states: &DeviceStates) -> Option<Value> {
    let doc = states.state(&device.id);
    let get = |k: &str| doc.as_ref().and_then(|d| d.get(k)).filter(|v| !v.is_null()).cloned();
    let mut attributes = Map::new();
    let (state, unit): (String, Option<String>) = match device.domain.as_str() {
        "sensor" | "binary_sensor" => {
            let quantity = device
                .device_class
                .clone()
                .or_else(|| device.capabilities.first().map(|c| c.name.clone()))
                .unwrap_or_default();
            let r = states.reading(&device.id, &quantity)?;
            let unit = r
                .unit
                .clone()
                .or_else(|| device.param(&[quantity.as_str()], "unit").and_then(Value::as_str).map(str::to_string));
            if let Some(u) = &unit {
                attributes.insert("unit_of_measurement".into(), json!(u));
            }
            (number_text(&r.value), unit)
        }
        "climate" => {
            if let Some(r) = states.reading(&device.id, "temperature") {
                attributes.insert("current_temperature".into(), r.value.clone());
            }
            if let Some(level) = get("level") {
                attributes.insert("temperature".into(), level);
            }
            let mode = get("mode").or_else(|| get("power")).map(|v| number_text(&v));
            match (mode, attributes.get("current_temperature").cloned()) {
                (Some(m), _) => (m, None),
                (None, Some(t)) => (number_text(&t), None),
                (None, None) => return None,
            }
        }
        "media_player" => {
            if let Some(v) = get("volume") {
                attributes.insert("volume_level".into(), v);
            }
            if let Some(m) = get("muted") {
                attributes.insert("is_volume_muted".into(), m);
            }
            let s = get("playback").or_else(|| get("power"))?;
            (number_text(&s), None)
        }
        "cover" => {
            let level = get("level")?.as_f64()?;
            attributes.insert("current_position".into(), json!(level));
            ((if level > 0.0 { "open" } else { "closed" }).to_string(), None)
        }
        _ => {
            if let Some(b) = get("brightness") {
                attributes.insert("brightness".into(), b);
            }
            let s = get("power").or_else(|| get("state"))?;
            (number_text(&s), None)
        }
    };
    Some(json!({
        "state": state,
        "state_with_unit": with_unit(&state, unit.as_deref()),
        "attributes": attributes,
        "name": device.name,
        "domain": device.domain,
        "entity_id": device.id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::home::HomeModel;

    fn model() -> HomeModel {
        HomeModel::from_inventory(&json!({"devices": [
            {"device_id": "t1", "device_type": "sensor", "name": "Kitchen Thermometer", "location": "kitchen",
             "capabilities": [{"name": "temperature", "parameters": {"unit": "°C"}}]},
            {"device_id": "l1", "device_type": "light", "name": "Lamp", "capabilities": ["on_off"]},
            {"device_id": "s1", "device_type": "speaker", "name": "Speaker", "capabilities": ["audio_playback"]}
        ]}))
        .unwrap()
    }

    #[test]
    fn readings_and_states_become_home_assistant_states() {
        let m = model();
        let s = DeviceStates::default();
        assert_eq!(ha_state(m.device("t1").unwrap(), &s), None);
        let n = s.apply_telemetry(
            None,
            r#"{"device_id": "t1", "readings": [{"capability": "temperature", "value": 21.5, "unit": "°C"}]}"#
                .as_bytes(),
        );
        assert_eq!(n, 1);
        let st = ha_state(m.device("t1").unwrap(), &s).unwrap();
        assert_eq!((st["state"].as_str(), st["state_with_unit"].as_str()), (Some("21.5"), Some("21.5 °C")));
        assert!(s.apply_state("l1", br#"{"power": "off", "brightness": 40}"#));
        let st = ha_state(m.device("l1").unwrap(), &s).unwrap();
        assert_eq!(st["state"], "off");
        assert_eq!(st["attributes"]["brightness"], 40);
        // Wrapped in an envelope, too.
        assert!(
            s.apply_state("s1", br#"{"message_id": "x", "payload": {"data": {"playback": "paused", "volume": 30}}}"#)
        );
        assert_eq!(ha_state(m.device("s1").unwrap(), &s).unwrap()["state"], "paused");
        assert_eq!(s.number("s1", "volume"), Some(30.0));
        // Garbage and oversized documents are ignored; an empty retained message forgets.
        assert!(!s.apply_state("l1", b"not json"));
        assert!(!s.apply_state("l1", &vec![b' '; MAX_DOCUMENT + 1]));
        assert!(s.apply_state("l1", b""));
        assert_eq!(s.state("l1"), None);
        assert_eq!(s.apply_telemetry(Some("t1"), br#"{"readings": [{"value": 3}]}"#), 0);
    }

    #[test]
    fn numbers_read_as_said() {
        assert_eq!(number_text(&json!(21.0)), "21");
        assert_eq!(number_text(&json!(21.456)), "21.46");
        assert_eq!(number_text(&json!("on")), "on");
    }
}
