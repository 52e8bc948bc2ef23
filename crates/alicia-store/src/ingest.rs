//! What the data store reads from the bus, and the records it makes of each message.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use alicia_envelope::Timestamp;
use serde_json::{Map, Value};

use crate::db::Record;

/// The topics read (prefix `P`).
#[derive(Debug, Clone)]
pub struct Topics {
    pub registry_events: String,
    pub actuator_events: String,
    pub broadcast: String,
    pub deadletter: String,
    pub alerts: String,
    pub sensors: String,
    pub states: String,
    pub voice: String,
    prefix: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Topics {
            registry_events: format!("{prefix}/system/registry/events"),
            actuator_events: format!("{prefix}/system/actuators/events"),
            broadcast: format!("{prefix}/broadcast"),
            deadletter: format!("{prefix}/system/deadletter"),
            alerts: format!("{prefix}/system/alerts"),
            sensors: format!("{prefix}/sensors/+"),
            states: format!("{prefix}/devices/+/state"),
            voice: format!("{prefix}/voice/events"),
            prefix: prefix.to_string(),
        }
    }

    pub fn filters(&self) -> Vec<String> {
        vec![
            self.registry_events.clone(),
            self.actuator_events.clone(),
            self.broadcast.clone(),
            self.deadletter.clone(),
            self.alerts.clone(),
            self.sensors.clone(),
            self.states.clone(),
            self.voice.clone(),
        ]
    }

    fn level<'a>(&self, topic: &'a str, before: &str, after: &str) -> Option<&'a str> {
        let id = topic.strip_prefix(&self.prefix)?.strip_prefix(before)?.strip_suffix(after)?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A device's time if it is believable (within a day of ours), else ours: devices' clocks may
/// be wrong (one that booted without network time says 1970).
fn device_time(text: Option<&str>, received: f64) -> f64 {
    let t = text.and_then(|t| t.parse::<Timestamp>().ok()).map(|t| t.unix_timestamp_nanos() as f64 / 1e9);
    match t {
        Some(t) if (t - received).abs() < 86_400.0 => t,
        _ => received,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Turns messages into records, remembering what it stored last so a retained document read
/// again (after a reconnect or a restart) is not stored twice.
#[derive(Default)]
pub struct Ingest {
    pub last_telemetry: HashMap<(String, String), f64>,
    pub last_state: HashMap<String, Value>,
}

/// A state without its `updated` stamp: what counts as a change.
fn essence(state: &Value) -> Value {
    let mut s = state.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("updated");
    }
    s
}

impl Ingest {
    pub fn seed(&mut self, telemetry: Vec<(String, String, f64)>, states: Vec<(String, String)>) {
        for (d, c, ts) in telemetry {
            self.last_telemetry.insert((d, c), ts);
        }
        for (d, s) in states {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                self.last_state.insert(d, essence(&v));
            }
        }
    }

    /// The records of one message (none for what is not worth keeping or cannot be read).
    pub fn records(&mut self, t: &Topics, topic: &str, payload: &[u8], received: f64) -> Vec<Record> {
        let Ok(doc) = serde_json::from_slice::<Value>(payload) else {
            return Vec::new();
        };
        if topic == t.registry_events || topic == t.actuator_events {
            let kind = text(&doc, "event").unwrap_or_else(|| "event".into());
            let kind = if topic == t.actuator_events { format!("actuator_{kind}") } else { kind };
            let source = if topic == t.actuator_events { "actuator_control" } else { "device_registry" };
            return vec![Record::Event {
                ts: received,
                topic: topic.into(),
                kind,
                source: Some(source.into()),
                device_id: text(&doc, "device_id"),
                data: doc,
            }];
        }
        if topic == t.broadcast || topic.starts_with(&format!("{}/", t.broadcast)) {
            return vec![Record::Event {
                ts: received,
                topic: topic.into(),
                kind: text(&doc, "message_type").unwrap_or_else(|| "broadcast".into()),
                source: text(&doc, "source"),
                device_id: text(&doc, "source").and_then(|s| s.strip_prefix("device_id:").map(str::to_string)),
                data: doc,
            }];
        }
        if topic == t.deadletter {
            return vec![Record::Event {
                ts: received,
                topic: topic.into(),
                kind: "deadletter".into(),
                source: text(&doc, "topic"),
                device_id: None,
                data: doc,
            }];
        }
        if topic == t.alerts {
            let (Some(alert), Some(state)) = (text(&doc, "alert"), text(&doc, "state")) else { return Vec::new() };
            return vec![Record::Alert {
                ts: received,
                alert,
                severity: text(&doc, "severity").unwrap_or_default(),
                state,
                service: text(&doc, "service").unwrap_or_default(),
                message: text(&doc, "message").unwrap_or_default(),
                data: doc,
            }];
        }
        if topic == t.voice {
            // An envelope (its data is the session) or the session itself.
            let (data, source) = match doc.get("payload").and_then(|p| p.get("data")) {
                Some(d) if doc.get("message_id").is_some() => (d.clone(), text(&doc, "source")),
                _ => (doc.clone(), None),
            };
            let intent = match data.get("intent") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Object(o)) => o.get("name").and_then(Value::as_str).map(str::to_string),
                _ => None,
            };
            let device = text(&data, "device_id")
                .or_else(|| text(&data, "satellite"))
                .or_else(|| source.and_then(|s| s.strip_prefix("device_id:").map(str::to_string)));
            return vec![Record::Voice {
                ts: received,
                session_id: text(&data, "session_id"),
                device_id: device,
                transcript: text(&data, "transcript").or_else(|| text(&data, "text")),
                intent,
                data,
            }];
        }
        if let Some(id) = t.level(topic, "/sensors/", "") {
            let Some(readings) = doc.get("readings").and_then(Value::as_object) else { return Vec::new() };
            return self.telemetry(id, readings, received);
        }
        if let Some(id) = t.level(topic, "/devices/", "/state") {
            if !doc.is_object() {
                return Vec::new();
            }
            let e = essence(&doc);
            if self.last_state.get(id) == Some(&e) {
                return Vec::new();
            }
            self.last_state.insert(id.to_string(), e);
            let ts = device_time(doc.get("updated").and_then(Value::as_str), received);
            return vec![Record::State { ts, device_id: id.to_string(), state: doc }];
        }
        Vec::new()
    }

    fn telemetry(&mut self, id: &str, readings: &Map<String, Value>, received: f64) -> Vec<Record> {
        let mut out = Vec::new();
        for (cap, r) in readings {
            let Some(value) = r.get("value").and_then(|v| v.as_f64().or_else(|| v.as_bool().map(f64::from))) else {
                continue;
            };
            let ts = device_time(r.get("timestamp").and_then(Value::as_str), received);
            let key = (id.to_string(), cap.clone());
            if self.last_telemetry.get(&key).is_some_and(|last| ts <= *last) {
                continue;
            }
            self.last_telemetry.insert(key, ts);
            out.push(Record::Telemetry {
                ts,
                device_id: id.to_string(),
                capability: cap.clone(),
                value,
                unit: text(r, "unit"),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_become_records_once() {
        let t = Topics::new("alicia");
        let mut i = Ingest::default();
        let now = now();
        let ts = Timestamp::from(SystemTime::now()).to_string();
        let latest = json!({"device_id": "t1", "readings": {
            "temperature": {"value": 21.5, "unit": "°C", "timestamp": ts},
            "motion": {"value": true, "timestamp": ts}}});
        let r = i.records(&t, "alicia/sensors/t1", latest.to_string().as_bytes(), now);
        assert_eq!(r.len(), 2);
        assert!(i.records(&t, "alicia/sensors/t1", latest.to_string().as_bytes(), now).is_empty(), "retained again");
        let s1 = json!({"power": "on", "updated": "2025-01-01T00:00:00Z"});
        let s2 = json!({"power": "on", "updated": "2025-01-01T00:00:05Z"});
        assert_eq!(i.records(&t, "alicia/devices/l1/state", s1.to_string().as_bytes(), now).len(), 1);
        assert!(
            i.records(&t, "alicia/devices/l1/state", s2.to_string().as_bytes(), now).is_empty(),
            "only updated changed"
        );
        let r = i.records(&t, "alicia/devices/l1/state", br#"{"power":"off"}"#, now);
        let Record::State { ts, .. } = &r[0] else { panic!() };
        assert_eq!(*ts, now);
        let voice = json!({"message_id": "m", "source": "ai_service", "payload": {"data": {
            "session_id": "s1", "transcript": "turn on the light", "intent": {"name": "HassTurnOn"}, "timings": {"stt_ms": 120}}}});
        let r = i.records(&t, "alicia/voice/events", voice.to_string().as_bytes(), now);
        let Record::Voice { intent, transcript, .. } = &r[0] else { panic!() };
        assert_eq!((intent.as_deref(), transcript.as_deref()), (Some("HassTurnOn"), Some("turn on the light")));
        assert!(i.records(&t, "alicia/system/alerts", b"not json", now).is_empty());
        let ev = json!({"event": "confirmed", "device_id": "l1"});
        let r = i.records(&t, "alicia/system/actuators/events", ev.to_string().as_bytes(), now);
        let Record::Event { kind, device_id, .. } = &r[0] else { panic!() };
        assert_eq!((kind.as_str(), device_id.as_deref()), ("actuator_confirmed", Some("l1")));
        assert_eq!(device_time(Some("1970-01-01T00:00:00Z"), now), now, "a 1970 clock is not believed");
    }
}
