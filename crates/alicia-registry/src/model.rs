//! What a device registers, checked field by field, and how a registered device is shown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alicia_envelope::{Destination, Timestamp};
use serde_json::{json, Map, Value};

/// Longest accepted device id, capability name or location, in bytes.
const MAX_NAME: usize = 256;

/// Why a registration (or another request body) was refused: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct Invalid {
    /// The field (`device_id`, `endpoints.command`, `capabilities[2]`, or `(body)`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Invalid {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into() }
    }
}

/// Whether a device is reachable, as far as the registry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Registered, and heard from (heartbeat, registration, `online` status) within its timeout.
    Online,
    /// Its will or an `offline` status said so, or it missed heartbeats for its timeout.
    Offline,
}

impl Status {
    /// `online` or `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
        }
    }

    pub(crate) fn parse(s: &str) -> Status {
        if s == "online" {
            Status::Online
        } else {
            Status::Offline
        }
    }
}

/// A registration that passed the checks. The full JSON is kept as it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub device_id: String,
    pub device_type: String,
    pub name: String,
    pub location: Option<String>,
    pub capabilities: Vec<String>,
    pub command_topic: String,
    pub status_topic: String,
    pub heartbeat_interval: Option<Duration>,
    /// The registration object exactly as received.
    pub raw: Value,
}

/// Checks a topic name given by a device: non-empty, no wildcards, no NUL, not a `$` topic.
fn check_topic(field: &str, topic: &str) -> Result<(), Invalid> {
    if topic.is_empty() {
        return Err(Invalid::new(field, "an empty topic"));
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(Invalid::new(field, format!("{topic:?} contains `+`, `#` or NUL; a topic name cannot")));
    }
    if topic.starts_with('$') {
        return Err(Invalid::new(field, format!("{topic:?} starts with `$` (reserved for the broker)")));
    }
    if topic.len() > 65535 {
        return Err(Invalid::new(field, "longer than an MQTT topic can be (65535 bytes)"));
    }
    Ok(())
}

/// A device id: usable as `device_id:ID` and as one topic level.
pub fn check_device_id(field: &str, id: &str) -> Result<(), Invalid> {
    if id.len() > MAX_NAME {
        return Err(Invalid::new(field, format!("longer than {MAX_NAME} bytes")));
    }
    if id.chars().any(char::is_whitespace) {
        return Err(Invalid::new(field, format!("{id:?} contains white space")));
    }
    Destination::device(id).validate().map_err(|p| Invalid::new(field, p.to_string()))
}

fn check_capability(field: &str, cap: &str) -> Result<(), Invalid> {
    if cap.len() > MAX_NAME {
        return Err(Invalid::new(field, format!("longer than {MAX_NAME} bytes")));
    }
    if cap.chars().any(char::is_whitespace) {
        return Err(Invalid::new(field, format!("{cap:?} contains white space")));
    }
    Destination::capability(cap).validate().map_err(|p| Invalid::new(field, p.to_string()))
}

fn string_field<'a>(obj: &'a Map<String, Value>, field: &str, required: bool) -> Result<Option<&'a str>, Invalid> {
    match obj.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(Invalid::new(field, "missing (a string is required)")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(Invalid::new(field, "empty")),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Invalid::new(field, format!("must be a string, found {}", kind(other)))),
    }
}

pub(crate) use alicia_envelope::json_type_name as kind;

impl Registration {
    /// Checks a registration (the seed's format: `device_id`, `device_type`, `name`,
    /// `location`, `capabilities`, `endpoints` {`command`, `status`}, `heartbeat_interval`,
    /// anything else kept as is). `prefix` is the topic prefix, for the default endpoints.
    pub fn parse(raw: Value, prefix: &str) -> Result<Registration, Invalid> {
        let Value::Object(obj) = &raw else {
            return Err(Invalid::new("(body)", format!("a registration is a JSON object, found {}", kind(&raw))));
        };
        let device_id = string_field(obj, "device_id", true)?.unwrap_or_default().to_string();
        check_device_id("device_id", &device_id)?;
        let device_type = string_field(obj, "device_type", true)?.unwrap_or_default().to_string();
        let name = string_field(obj, "name", false)?.unwrap_or(&device_id).to_string();
        let location = string_field(obj, "location", false)?.map(str::to_string);
        let capabilities = match obj.get("capabilities") {
            None | Some(Value::Null) => return Err(Invalid::new("capabilities", "missing (an array of names)")),
            Some(Value::Array(items)) => {
                let mut caps: Vec<String> = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let field = format!("capabilities[{i}]");
                    let Value::String(cap) = item else {
                        return Err(Invalid::new(field, format!("must be a string, found {}", kind(item))));
                    };
                    check_capability(&field, cap)?;
                    if !caps.contains(cap) {
                        caps.push(cap.clone());
                    }
                }
                caps
            }
            Some(other) => {
                return Err(Invalid::new("capabilities", format!("must be an array of names, found {}", kind(other))))
            }
        };
        let (mut command_topic, mut status_topic) = (None, None);
        match obj.get("endpoints") {
            None | Some(Value::Null) => {}
            Some(Value::Object(ep)) => {
                for (key, slot) in [("command", &mut command_topic), ("status", &mut status_topic)] {
                    let field = format!("endpoints.{key}");
                    match ep.get(key) {
                        None | Some(Value::Null) => {}
                        Some(Value::String(t)) => {
                            check_topic(&field, t)?;
                            *slot = Some(t.clone());
                        }
                        Some(other) => {
                            return Err(Invalid::new(field, format!("must be a topic name, found {}", kind(other))))
                        }
                    }
                }
            }
            Some(other) => return Err(Invalid::new("endpoints", format!("must be an object, found {}", kind(other)))),
        }
        let heartbeat_interval = match obj.get("heartbeat_interval") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(s) if (1..=86_400).contains(&s) => Some(Duration::from_secs(s)),
                _ => {
                    return Err(Invalid::new(
                        "heartbeat_interval",
                        format!("must be a whole number of seconds from 1 to 86400, found {v}"),
                    ))
                }
            },
        };
        Ok(Registration {
            command_topic: command_topic.unwrap_or_else(|| format!("{prefix}/devices/{device_id}/command")),
            status_topic: status_topic.unwrap_or_else(|| format!("{prefix}/devices/{device_id}/status")),
            device_id,
            device_type,
            name,
            location,
            capabilities,
            heartbeat_interval,
            raw,
        })
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    Timestamp::from(t).to_string()
}

/// A registered device.
#[derive(Debug, Clone)]
pub struct Device {
    pub reg: Registration,
    pub status: Status,
    /// Last time the device was heard from (registration, heartbeat, `online` status).
    pub last_seen: SystemTime,
    /// First registration (kept across re-registrations).
    pub registered_at: SystemTime,
    /// Last heartbeat (not registration), if any since it registered.
    pub last_heartbeat: Option<SystemTime>,
}

impl Device {
    /// How long the device may stay silent before it is marked offline: the configured
    /// timeout, shortened to three heartbeat intervals when the device announces a faster
    /// heartbeat, but never under one and a half intervals (one missed beat is not death).
    pub fn timeout(&self, configured: Duration) -> Duration {
        match self.reg.heartbeat_interval {
            None => configured,
            Some(i) => configured.min(i * 3).max(i + i / 2),
        }
    }

    /// The device as the inventory, the HTTP API and the bus answers show it.
    pub fn to_json(&self) -> Value {
        json!({
            "device_id": self.reg.device_id,
            "device_type": self.reg.device_type,
            "name": self.reg.name,
            "location": self.reg.location,
            "capabilities": self.reg.capabilities,
            "endpoints": { "command": self.reg.command_topic, "status": self.reg.status_topic },
            "status": self.status.as_str(),
            "last_seen": rfc3339(self.last_seen),
            "registered_at": rfc3339(self.registered_at),
            "registration": self.reg.raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Value {
        let text = include_str!("../../../docs/examples/envelopes/device_registration.json");
        let v: Value = serde_json::from_str(text).unwrap();
        v["payload"]["data"].clone()
    }

    #[test]
    fn the_seed_registration_parses() {
        let r = Registration::parse(seed(), "alicia").unwrap();
        assert_eq!(r.device_id, "sonos_kitchen_001");
        assert_eq!(r.capabilities, ["audio_playback", "volume_control"]);
        assert_eq!(r.command_topic, "alicia/devices/sonos_kitchen_001/command");
        assert_eq!(r.heartbeat_interval, Some(Duration::from_secs(60)));
        assert_eq!(r.raw, seed());
    }

    #[test]
    fn defaults_and_errors_name_the_field() {
        let r = Registration::parse(
            json!({"device_id": "t1", "device_type": "sensor", "capabilities": ["temperature"]}),
            "home",
        )
        .unwrap();
        assert_eq!((r.name.as_str(), r.command_topic.as_str()), ("t1", "home/devices/t1/command"));
        assert_eq!(r.status_topic, "home/devices/t1/status");
        let cases = [
            (json!([1]), "(body)"),
            (json!({"device_type": "x", "capabilities": []}), "device_id"),
            (json!({"device_id": "a/b", "device_type": "x", "capabilities": []}), "device_id"),
            (json!({"device_id": "a b", "device_type": "x", "capabilities": []}), "device_id"),
            (json!({"device_id": "a", "capabilities": []}), "device_type"),
            (json!({"device_id": "a", "device_type": "x"}), "capabilities"),
            (json!({"device_id": "a", "device_type": "x", "capabilities": "tts"}), "capabilities"),
            (json!({"device_id": "a", "device_type": "x", "capabilities": ["ok", 3]}), "capabilities[1]"),
            (json!({"device_id": "a", "device_type": "x", "capabilities": ["a#"]}), "capabilities[0]"),
            (
                json!({"device_id": "a", "device_type": "x", "capabilities": [], "endpoints": {"command": "a/+"}}),
                "endpoints.command",
            ),
            (
                json!({"device_id": "a", "device_type": "x", "capabilities": [], "heartbeat_interval": 0}),
                "heartbeat_interval",
            ),
            (json!({"device_id": "a", "device_type": "x", "capabilities": [], "name": 5}), "name"),
        ];
        for (body, field) in cases {
            let e = Registration::parse(body.clone(), "alicia").unwrap_err();
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }

    #[test]
    fn timeout_follows_the_announced_heartbeat() {
        let mut d = Device {
            reg: Registration::parse(seed(), "alicia").unwrap(),
            status: Status::Online,
            last_seen: SystemTime::now(),
            registered_at: SystemTime::now(),
            last_heartbeat: None,
        };
        assert_eq!(d.timeout(Duration::from_secs(300)), Duration::from_secs(180));
        assert_eq!(d.timeout(Duration::from_secs(2)), Duration::from_secs(90));
        d.reg.heartbeat_interval = None;
        assert_eq!(d.timeout(Duration::from_secs(2)), Duration::from_secs(2));
        d.reg.heartbeat_interval = Some(Duration::from_secs(600));
        assert_eq!(d.timeout(Duration::from_secs(300)), Duration::from_secs(900));
    }
}
