//! What a device registers, checked field by field, and how a registered device is shown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alicia_envelope::{Destination, Timestamp};
use serde_json::{json, Map, Value};

/// Longest accepted device id, capability name or location, in bytes.
const MAX_NAME: usize = 256;

/// One problem with a registration (or another request body): which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct Invalid {
    /// The field (`device_id`, `endpoints.control`, `capabilities[2].name`, or `(body)`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Invalid {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid { field: field.into(), reason: reason.into() }
    }
}

/// A refused registration: every problem found, in the order of the fields, so a device fixes
/// its message in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub Vec<Invalid>);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&all.join("; "))
    }
}

impl std::error::Error for Refused {}

impl From<Invalid> for Refused {
    fn from(e: Invalid) -> Self {
        Refused(vec![e])
    }
}

impl Refused {
    /// The problems as JSON, for answers: `[{"field", "reason"}]`.
    pub fn to_json(&self) -> Value {
        Value::Array(self.0.iter().map(|e| json!({ "field": e.field, "reason": e.reason })).collect())
    }
}

/// Whether a device is reachable, as far as the registry knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Registered, and heard from (heartbeat, registration, `online` status) within its timeout.
    Online,
    /// Its will or an `offline` status said so, or it missed heartbeats for its timeout.
    Offline,
    /// Not heard from since the registry started (it could not listen while it was down).
    Unknown,
}

impl Status {
    /// `online`, `offline` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Unknown => "unknown",
        }
    }

    pub(crate) fn parse(s: &str) -> Status {
        match s {
            "online" => Status::Online,
            "unknown" => Status::Unknown,
            _ => Status::Offline,
        }
    }
}

/// One capability of a device, as the design document's `DeviceCapability`: a name, a version,
/// parameters (`max_volume`, `step_size`, ...) and endpoints of its own. Other keys are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Capability {
    pub name: String,
    pub version: Option<String>,
    pub parameters: Map<String, Value>,
    pub endpoints: Map<String, Value>,
    /// Keys beyond the document's, as they came.
    pub extra: Map<String, Value>,
}

impl Capability {
    /// As the registry shows it: `{name, version, parameters, endpoints, ...}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        if let Some(v) = &self.version {
            m.insert("version".into(), json!(v));
        }
        m.insert("parameters".into(), Value::Object(self.parameters.clone()));
        m.insert("endpoints".into(), Value::Object(self.endpoints.clone()));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// A registration that passed the checks. The full JSON is kept as it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub device_id: String,
    pub device_type: String,
    pub name: String,
    /// `location`, else `metadata.location` (the design document puts it there).
    pub location: Option<String>,
    pub capabilities: Vec<Capability>,
    /// Named topics: `control` (commands; `command` is accepted for it), `status`, `audio`,
    /// and any others the device declares. `control` and `status` always have a value.
    pub endpoints: Map<String, Value>,
    /// What the device says about itself (`manufacturer`, `model`, `ip_address`, ...).
    pub metadata: Map<String, Value>,
    pub heartbeat_interval: Option<Duration>,
    /// The registration object exactly as received.
    pub raw: Value,
}

impl Registration {
    /// Where commands for the device go (`endpoints.control`).
    pub fn command_topic(&self) -> &str {
        self.endpoints.get("control").and_then(Value::as_str).unwrap_or_default()
    }

    /// Where the device says `online`/`offline` (`endpoints.status`).
    pub fn status_topic(&self) -> &str {
        self.endpoints.get("status").and_then(Value::as_str).unwrap_or_default()
    }

    /// The capability names, in registration order.
    pub fn capability_names(&self) -> impl Iterator<Item = &str> {
        self.capabilities.iter().map(|c| c.name.as_str())
    }
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
    string_at(obj, field, field, required)
}

/// `obj[key]` as a non-empty string; `path` names it in errors.
fn string_at<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
    required: bool,
) -> Result<Option<&'a str>, Invalid> {
    match obj.get(key) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(Invalid::new(path, "missing (a string is required)")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(Invalid::new(path, "empty")),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Invalid::new(path, format!("must be a string, found {}", kind(other)))),
    }
}

/// `obj[key]` as an object (absent or null: empty).
fn object_at(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Map<String, Value>, Invalid> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(Invalid::new(path, format!("must be an object, found {}", kind(other)))),
    }
}

/// An `endpoints` object: every value a topic a client may publish to.
fn endpoints_at(obj: &Map<String, Value>, key: &str, path: &str, errs: &mut Vec<Invalid>) -> Map<String, Value> {
    let map = match object_at(obj, key, path) {
        Ok(m) => m,
        Err(e) => {
            errs.push(e);
            return Map::new();
        }
    };
    let mut out = Map::new();
    for (name, topic) in map {
        let field = format!("{path}.{name}");
        match &topic {
            Value::String(t) => match check_topic(&field, t) {
                Ok(()) => {
                    out.insert(name, topic);
                }
                Err(e) => errs.push(e),
            },
            other => errs.push(Invalid::new(field, format!("must be a topic name, found {}", kind(other)))),
        }
    }
    out
}

pub(crate) use alicia_envelope::json_type_name as kind;

/// Collects the problems of the fields read one after another.
struct Check(Vec<Invalid>);

impl Check {
    fn take<T>(&mut self, r: Result<T, Invalid>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }
}

impl Registration {
    /// Checks a registration, reporting every problem at once. The design document's format
    /// (`device_id`, `device_type`, `capabilities` as `{name, version, parameters, endpoints}`
    /// objects, `endpoints` `{control, status, audio}`, `metadata` with `location`, ...) and
    /// Alicia's shorthands (capability names as plain strings, `name`, `location`,
    /// `endpoints.command` for `control`, `heartbeat_interval`) are accepted; anything else is
    /// kept as is. `prefix` is the topic prefix, for the default endpoints. A `status` or
    /// `last_seen` in the body (the document's `Device` model has them) is ignored: the
    /// registry decides those.
    pub fn parse(raw: Value, prefix: &str) -> Result<Registration, Refused> {
        let Value::Object(obj) = &raw else {
            return Err(Invalid::new("(body)", format!("a registration is a JSON object, found {}", kind(&raw))).into());
        };
        let mut c = Check(Vec::new());
        let device_id = c.take(string_field(obj, "device_id", true)).flatten().unwrap_or_default().to_string();
        if !device_id.is_empty() {
            c.take(check_device_id("device_id", &device_id));
        }
        let device_type = c.take(string_field(obj, "device_type", true)).flatten().unwrap_or_default().to_string();
        let metadata = c.take(object_at(obj, "metadata", "metadata")).unwrap_or_default();
        let name = c
            .take(string_field(obj, "name", false))
            .flatten()
            .or_else(|| metadata.get("name").and_then(Value::as_str).filter(|n| !n.trim().is_empty()))
            .unwrap_or(&device_id)
            .to_string();
        let location = match c.take(string_field(obj, "location", false)).flatten() {
            Some(l) => Some(l.to_string()),
            None => c.take(string_at(&metadata, "location", "metadata.location", false)).flatten().map(str::to_string),
        };
        let capabilities = match obj.get("capabilities") {
            None | Some(Value::Null) => {
                c.0.push(Invalid::new("capabilities", "missing (an array of capabilities or names)"));
                Vec::new()
            }
            Some(Value::Array(items)) => {
                let mut caps: Vec<Capability> = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    if let Some(cap) = capability(&format!("capabilities[{i}]"), item, &mut c.0) {
                        if !caps.iter().any(|k| k.name == cap.name) {
                            caps.push(cap);
                        }
                    }
                }
                caps
            }
            Some(other) => {
                c.0.push(Invalid::new(
                    "capabilities",
                    format!("must be an array of capabilities, found {}", kind(other)),
                ));
                Vec::new()
            }
        };
        let mut endpoints = endpoints_at(obj, "endpoints", "endpoints", &mut c.0);
        // `command` is Alicia's older name for the document's `control`.
        match (endpoints.get("control").cloned(), endpoints.get("command").cloned()) {
            (Some(a), Some(b)) if a != b => c.0.push(Invalid::new(
                "endpoints.command",
                format!("{b} differs from endpoints.control {a}: commands can go to one topic only"),
            )),
            (None, Some(command)) => {
                endpoints.insert("control".into(), command);
            }
            (None, None) => {
                endpoints.insert("control".into(), json!(format!("{prefix}/devices/{device_id}/command")));
            }
            _ => {}
        }
        if !endpoints.contains_key("status") {
            endpoints.insert("status".into(), json!(format!("{prefix}/devices/{device_id}/status")));
        }
        let heartbeat_interval = match obj.get("heartbeat_interval") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(s) if (1..=86_400).contains(&s) => Some(Duration::from_secs(s)),
                _ => {
                    c.0.push(Invalid::new(
                        "heartbeat_interval",
                        format!("must be a whole number of seconds from 1 to 86400, found {v}"),
                    ));
                    None
                }
            },
        };
        if !c.0.is_empty() {
            return Err(Refused(c.0));
        }
        Ok(Registration {
            device_id,
            device_type,
            name,
            location,
            capabilities,
            endpoints,
            metadata,
            heartbeat_interval,
            raw,
        })
    }
}

/// One entry of `capabilities`: a name (shorthand) or a `{name, version, parameters,
/// endpoints}` object. Problems go to `errs`.
fn capability(field: &str, item: &Value, errs: &mut Vec<Invalid>) -> Option<Capability> {
    match item {
        Value::String(name) => match check_capability(field, name) {
            Ok(()) => Some(Capability {
                name: name.clone(),
                version: None,
                parameters: Map::new(),
                endpoints: Map::new(),
                extra: Map::new(),
            }),
            Err(e) => {
                errs.push(e);
                None
            }
        },
        Value::Object(obj) => {
            let before = errs.len();
            let name_field = format!("{field}.name");
            let name = match string_at(obj, "name", &name_field, true) {
                Ok(Some(n)) => check_capability(&name_field, n).map(|()| n.to_string()).map_err(|e| errs.push(e)).ok(),
                Ok(None) => None,
                Err(e) => {
                    errs.push(e);
                    None
                }
            };
            let version = match obj.get("version") {
                None | Some(Value::Null) => None,
                Some(Value::String(v)) => Some(v.clone()),
                // Devices write `1` or `1.0` as numbers, too; keep the text.
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(other) => {
                    errs.push(Invalid::new(
                        format!("{field}.version"),
                        format!("must be a string, found {}", kind(other)),
                    ));
                    None
                }
            };
            let parameters =
                object_at(obj, "parameters", &format!("{field}.parameters")).map_err(|e| errs.push(e)).ok();
            let endpoints = endpoints_at(obj, "endpoints", &format!("{field}.endpoints"), errs);
            let extra: Map<String, Value> = obj
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "name" | "version" | "parameters" | "endpoints"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if errs.len() > before {
                return None;
            }
            Some(Capability { name: name?, version, parameters: parameters.unwrap_or_default(), endpoints, extra })
        }
        other => {
            errs.push(Invalid::new(field, format!("must be a capability object or a name, found {}", kind(other))));
            None
        }
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

    /// The device as the inventory, the HTTP API and the bus answers show it: the design
    /// document's `Device` model (`device_id`, `device_type`, `capabilities`, `endpoints`,
    /// `metadata`, `status`, `last_seen` in Unix seconds) plus Alicia's `name`, `location`,
    /// `last_seen_at`, `registered_at` (RFC 3339) and the registration as it came.
    pub fn to_json(&self) -> Value {
        let caps: Vec<Value> = self.reg.capabilities.iter().map(Capability::to_json).collect();
        json!({
            "device_id": self.reg.device_id,
            "device_type": self.reg.device_type,
            "name": self.reg.name,
            "location": self.reg.location,
            "capabilities": caps,
            "endpoints": self.reg.endpoints,
            "metadata": self.reg.metadata,
            "status": self.status.as_str(),
            "last_seen": unix_secs(self.last_seen),
            "last_seen_at": rfc3339(self.last_seen),
            "registered_at": rfc3339(self.registered_at),
            "registration": self.reg.raw,
        })
    }
}

/// Seconds since the Unix epoch, with milliseconds (the document's `last_seen: float`).
pub(crate) fn unix_secs(t: SystemTime) -> f64 {
    millis(t) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The design document's registration message, as written.
    fn design() -> Value {
        let text = include_str!("../../../tests/fixtures/design/device_registration.json");
        let v: Value = serde_json::from_str(text).unwrap();
        v["payload"]["data"].clone()
    }

    #[test]
    fn the_design_documents_registration_keeps_every_field() {
        let r = Registration::parse(design(), "alicia").unwrap();
        assert_eq!(r.device_id, "sonos_kitchen_001");
        assert_eq!(r.device_type, "speaker");
        assert_eq!(r.capability_names().collect::<Vec<_>>(), ["audio_playback", "volume_control"]);
        let playback = &r.capabilities[0];
        assert_eq!(playback.version.as_deref(), Some("1.0.0"));
        assert_eq!(playback.parameters["max_volume"], 100);
        assert_eq!(playback.parameters["supported_formats"], json!(["wav", "mp3", "flac"]));
        assert_eq!(playback.endpoints["input"], "alicia/devices/sonos_kitchen_001/audio");
        assert_eq!(r.capabilities[1].parameters["mute_support"], true);
        // `control` is the command topic.
        assert_eq!(r.command_topic(), "alicia/devices/sonos_kitchen_001/command");
        assert_eq!(r.status_topic(), "alicia/devices/sonos_kitchen_001/status");
        assert_eq!(r.endpoints["audio"], "alicia/devices/sonos_kitchen_001/audio");
        // The location is in the metadata, with the rest of what the device says of itself.
        assert_eq!(r.location.as_deref(), Some("kitchen"));
        assert_eq!(r.metadata["manufacturer"], "Sonos");
        assert_eq!(r.metadata["mac_address"], "00:11:22:33:44:55");
        assert_eq!(r.raw, design());
        // Shown as the document's Device model.
        let d = Device {
            reg: r,
            status: Status::Online,
            last_seen: UNIX_EPOCH + Duration::from_millis(1_736_346_600_250),
            registered_at: SystemTime::now(),
            last_heartbeat: None,
        };
        let shown = d.to_json();
        assert_eq!(shown["capabilities"][0]["parameters"]["min_volume"], 0);
        assert_eq!(shown["capabilities"][1]["endpoints"]["status"], "alicia/devices/sonos_kitchen_001/volume_status");
        assert_eq!(shown["metadata"]["ip_address"], "192.168.1.101");
        assert_eq!(shown["endpoints"]["control"], "alicia/devices/sonos_kitchen_001/command");
        assert_eq!(shown["last_seen"], 1_736_346_600.25);
        assert_eq!(shown["status"], "online");
    }

    #[test]
    fn names_and_command_are_shorthands() {
        let r = Registration::parse(
            json!({"device_id": "t1", "device_type": "sensor", "capabilities": ["temperature"],
                   "endpoints": {"command": "x/cmd"}}),
            "home",
        )
        .unwrap();
        assert_eq!(r.capabilities[0].to_json(), json!({"name": "temperature", "parameters": {}, "endpoints": {}}));
        assert_eq!((r.name.as_str(), r.command_topic()), ("t1", "x/cmd"));
        assert_eq!(r.status_topic(), "home/devices/t1/status");
        let plain =
            Registration::parse(json!({"device_id": "t2", "device_type": "x", "capabilities": []}), "home").unwrap();
        assert_eq!(plain.command_topic(), "home/devices/t2/command");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let e = Registration::parse(
            json!({
                "device_id": "a b",
                "capabilities": ["ok", 3, {"name": "x#"}, {"version": 1}, {"name": "v", "endpoints": {"input": "a/+"}}],
                "endpoints": {"control": "$SYS/x", "status": 5},
                "heartbeat_interval": 0,
                "metadata": "kitchen"
            }),
            "alicia",
        )
        .unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "device_id",
                "device_type",
                "metadata",
                "capabilities[1]",
                "capabilities[2].name",
                "capabilities[3].name",
                "capabilities[4].endpoints.input",
                "endpoints.control",
                "endpoints.status",
                "heartbeat_interval",
            ],
            "{e}"
        );
        assert!(e.to_string().starts_with("`device_id`: \"a b\" contains white space; `device_type`: missing"), "{e}");
    }

    #[test]
    fn single_problems_name_the_field() {
        let cases = [
            (json!([1]), "(body)"),
            (json!({"device_type": "x", "capabilities": []}), "device_id"),
            (json!({"device_id": "a/b", "device_type": "x", "capabilities": []}), "device_id"),
            (json!({"device_id": "a", "capabilities": []}), "device_type"),
            (json!({"device_id": "a", "device_type": "x"}), "capabilities"),
            (json!({"device_id": "a", "device_type": "x", "capabilities": "tts"}), "capabilities"),
            (json!({"device_id": "a", "device_type": "x", "capabilities": ["a#"]}), "capabilities[0]"),
            (
                json!({"device_id": "a", "device_type": "x", "capabilities": [], "endpoints": {"command": "a/+"}}),
                "endpoints.command",
            ),
            (
                json!({"device_id": "a", "device_type": "x", "capabilities": [],
                       "endpoints": {"command": "a/1", "control": "a/2"}}),
                "endpoints.command",
            ),
            (json!({"device_id": "a", "device_type": "x", "capabilities": [], "name": 5}), "name"),
        ];
        for (body, field) in cases {
            let e = Registration::parse(body.clone(), "alicia").unwrap_err();
            assert_eq!(e.0.len(), 1, "{body}: {e}");
            assert_eq!(e.0[0].field, field, "{body}: {e}");
        }
    }

    #[test]
    fn timeout_follows_the_announced_heartbeat() {
        let mut body = design();
        body["heartbeat_interval"] = json!(60);
        let mut d = Device {
            reg: Registration::parse(body, "alicia").unwrap(),
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
