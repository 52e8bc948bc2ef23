//! Home Assistant → Alicia: discovery configs other software publishes (ESPHome, Tasmota,
//! Zigbee2MQTT), read as Home Assistant 2024.3 reads them (abbreviations, `~`), grouped into
//! devices by their device identifiers (never HA's entity ids or names, which depend on the
//! order configs arrive in), and turned into registry devices: a registration, a state
//! document, telemetry, availability, and MQTT messages for Alicia's commands. No I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::discovery::object_id;

/// HA 2024.3.3's abbreviation tables, as recorded from its source for the HA tests
/// (`tests/python/fixtures/ha/abbreviations-2024.3.3.json`).
const ABBREVIATIONS_JSON: &str = include_str!("../../../tests/python/fixtures/ha/abbreviations-2024.3.3.json");

struct Tables {
    top: HashMap<String, String>,
    device: HashMap<String, String>,
    origin: HashMap<String, String>,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let v: Value = serde_json::from_str(ABBREVIATIONS_JSON).unwrap_or_default();
        let map = |k: &str| -> HashMap<String, String> {
            v.get(k)
                .and_then(Value::as_object)
                .map(|m| m.iter().filter_map(|(a, f)| Some((a.clone(), f.as_str()?.to_string()))).collect())
                .unwrap_or_default()
        };
        Tables { top: map("ABBREVIATIONS"), device: map("DEVICE_ABBREVIATIONS"), origin: map("ORIGIN_ABBREVIATIONS") }
    })
}

fn expand_keys(m: &Map<String, Value>, table: &HashMap<String, String>) -> Map<String, Value> {
    m.iter().map(|(k, v)| (table.get(k).cloned().unwrap_or_else(|| k.clone()), v.clone())).collect()
}

/// A config with HA's abbreviations expanded and `~` replaced, as HA 2024.3 does it.
pub fn expand(payload: &Map<String, Value>) -> Map<String, Value> {
    let t = tables();
    let mut c = expand_keys(payload, &t.top);
    for (key, table) in [("device", &t.device), ("origin", &t.origin)] {
        if let Some(Value::Object(d)) = c.get(key) {
            let e = expand_keys(d, table);
            c.insert(key.into(), Value::Object(e));
        }
    }
    if let Some(Value::Array(list)) = c.get("availability") {
        let list: Vec<Value> = list
            .iter()
            .map(|a| a.as_object().map(|o| Value::Object(expand_keys(o, &t.top))).unwrap_or_else(|| a.clone()))
            .collect();
        c.insert("availability".into(), Value::Array(list));
    }
    if let Some(Value::String(base)) = c.remove("~") {
        let fix = |s: &str| -> String {
            let mut s = s.to_string();
            if let Some(rest) = s.strip_prefix('~') {
                s = format!("{base}{rest}");
            }
            if let Some(rest) = s.strip_suffix('~') {
                s = format!("{rest}{base}");
            }
            s
        };
        for (k, v) in c.iter_mut() {
            if k.ends_with("topic") {
                if let Value::String(s) = v {
                    *s = fix(s);
                }
            }
        }
        if let Some(Value::Array(list)) = c.get_mut("availability") {
            for a in list.iter_mut() {
                if let Some(Value::String(s)) = a.get_mut("topic") {
                    *s = fix(s);
                }
            }
        }
    }
    c
}

/// `<prefix>/<component>/[<node>/]<object>/config` → (component, node, object).
pub fn parse_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, Option<&'a str>, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?.strip_suffix("/config")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [c, o] => Some((c, None, o)),
        [c, n, o] => Some((c, Some(n), o)),
        _ => None,
    }
}

/// Renders the templates discovery configs use: `{{ value }}`, `{{ value_json.a.b }}`,
/// `{{ value_json['A']['B'] }}` (filters after `|` are ignored). `None`: a template this does
/// not understand, or a path the payload lacks.
pub fn render(template: Option<&str>, payload: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(payload).ok()?;
    let Some(t) = template else { return Some(text.trim().to_string()) };
    let inner = t.trim().strip_prefix("{{")?.strip_suffix("}}")?.split('|').next()?.trim();
    if inner == "value" {
        return Some(text.trim().to_string());
    }
    let mut path = inner.strip_prefix("value_json")?;
    let mut v: Value = serde_json::from_str(text).ok()?;
    while !path.is_empty() {
        let (key, rest) = if let Some(p) = path.strip_prefix('.') {
            let end = p.find(['.', '[']).unwrap_or(p.len());
            (p[..end].to_string(), &p[end..])
        } else if let Some(p) = path.strip_prefix('[') {
            let end = p.find(']')?;
            (p[..end].trim().trim_matches(['\'', '"']).to_string(), &p[end + 1..])
        } else {
            return None;
        };
        v = match v {
            Value::Object(mut m) => m.remove(&key)?,
            Value::Array(a) => a.into_iter().nth(key.parse().ok()?)?,
            _ => return None,
        };
        path = rest.trim_start();
    }
    Some(match v {
        Value::String(s) => s,
        Value::Bool(b) => if b { "True" } else { "False" }.to_string(),
        other => other.to_string(),
    })
}

fn s<'a>(c: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str)
}

/// What an entity is, for Alicia.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    Switch,
    Light { json: bool, scale: f64 },
    Sensor { capability: String, unit: Option<String>, device_class: String },
    Binary { capability: String },
    Number { min: f64, max: f64, step: f64, unit: Option<String> },
}

/// One adopted entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub unique_id: String,
    pub component: String,
    pub role: Role,
    pub config: Map<String, Value>,
}

impl Entity {
    /// The entity of an expanded config, or why it is not adopted.
    pub fn from_config(component: &str, unique_id: String, c: Map<String, Value>) -> Result<Entity, String> {
        let role = match component {
            "switch" => Role::Switch,
            "light" => Role::Light {
                json: s(&c, "schema") == Some("json"),
                scale: c.get("brightness_scale").and_then(Value::as_f64).filter(|x| *x > 0.0).unwrap_or(255.0),
            },
            "sensor" => {
                let Some(class) = s(&c, "device_class") else {
                    return Err("a sensor without device_class (Alicia names capabilities by class)".into());
                };
                Role::Sensor {
                    capability: class.to_string(),
                    unit: s(&c, "unit_of_measurement").map(str::to_string),
                    device_class: class.to_string(),
                }
            }
            "binary_sensor" => {
                let Some(class) = s(&c, "device_class") else {
                    return Err("a binary sensor without device_class".into());
                };
                Role::Binary { capability: class.to_string() }
            }
            "number" => Role::Number {
                min: c.get("min").and_then(Value::as_f64).unwrap_or(1.0),
                max: c.get("max").and_then(Value::as_f64).unwrap_or(100.0),
                step: c.get("step").and_then(Value::as_f64).unwrap_or(1.0),
                unit: s(&c, "unit_of_measurement").map(str::to_string),
            },
            other => return Err(format!("component {other:?} is not adopted")),
        };
        Ok(Entity { unique_id, component: component.to_string(), role, config: c })
    }

    fn state_topic(&self) -> Option<&str> {
        s(&self.config, "state_topic")
    }

    fn command_topic(&self) -> Option<&str> {
        s(&self.config, "command_topic")
    }

    fn template(&self) -> Option<&str> {
        s(&self.config, "value_template")
    }

    fn payload_on(&self) -> &str {
        s(&self.config, "payload_on").unwrap_or("ON")
    }

    fn payload_off(&self) -> &str {
        s(&self.config, "payload_off").unwrap_or("OFF")
    }

    /// `(topic, template, available, not available)` of each availability entry.
    fn availability(&self) -> Vec<(String, Option<String>, String, String)> {
        let c = &self.config;
        let on = s(c, "payload_available").unwrap_or("online").to_string();
        let off = s(c, "payload_not_available").unwrap_or("offline").to_string();
        let mut out = Vec::new();
        if let Some(t) = s(c, "availability_topic") {
            out.push((t.to_string(), s(c, "availability_template").map(str::to_string), on.clone(), off.clone()));
        }
        if let Some(Value::Array(list)) = c.get("availability") {
            for a in list {
                if let Some(t) = a.get("topic").and_then(Value::as_str) {
                    let get = |k: &str, d: &str| a.get(k).and_then(Value::as_str).unwrap_or(d).to_string();
                    out.push((
                        t.to_string(),
                        a.get("value_template").and_then(Value::as_str).map(str::to_string),
                        get("payload_available", &on),
                        get("payload_not_available", &off),
                    ));
                }
            }
        }
        out
    }
}

/// The key a config's device is known by: its first identifier, else its first connection,
/// else (no device block) the entity's unique id.
pub fn device_key(c: &Map<String, Value>, unique_id: &str) -> String {
    let d = c.get("device");
    let ids = d.and_then(|d| d.get("identifiers"));
    let first = match ids {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    first
        .or_else(|| {
            let cns = d?.get("connections")?.as_array()?.first()?.as_array()?.clone();
            Some(cns.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("_"))
        })
        .unwrap_or_else(|| unique_id.to_string())
}

/// What a message on one of a device's topics changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Update {
    pub state_changed: bool,
    pub readings: Vec<Value>,
    /// The device's availability, if this message decided it.
    pub available: Option<bool>,
}

/// A device other software announced, as Alicia keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Adopted {
    pub device_id: String,
    pub key: String,
    /// The device block, merged over its entities (Tasmota names the device in one only).
    pub info: Map<String, Value>,
    pub origin: Option<String>,
    pub entities: BTreeMap<String, Entity>,
    pub state: Map<String, Value>,
    availability: HashMap<String, bool>,
}

impl Adopted {
    pub fn new(device_id: String, key: String) -> Self {
        Adopted {
            device_id,
            key,
            info: Map::new(),
            origin: None,
            entities: BTreeMap::new(),
            state: Map::new(),
            availability: HashMap::new(),
        }
    }

    /// Merges a config's device block and origin (every config of the device, adopted entity
    /// or not: Tasmota names the device only in its status sensor).
    pub fn merge(&mut self, c: &Map<String, Value>) {
        if let Some(Value::Object(d)) = c.get("device") {
            for (k, v) in d {
                let useful = !v.is_null() && v.as_str() != Some("");
                if useful && (!self.info.contains_key(k) || k == "name") {
                    self.info.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(o) = c.get("origin").and_then(|o| o.get("name")).and_then(Value::as_str) {
            self.origin = Some(o.to_string());
        }
    }

    /// Adds or replaces an entity.
    pub fn put(&mut self, e: Entity) {
        self.merge(&e.config);
        self.entities.insert(e.unique_id.clone(), e);
    }

    fn on_off_entity(&self) -> Option<&Entity> {
        let lights = self.entities.values().find(|e| matches!(e.role, Role::Light { .. }));
        lights.or_else(|| self.entities.values().find(|e| e.role == Role::Switch))
    }

    fn number_entity(&self) -> Option<&Entity> {
        self.entities.values().find(|e| matches!(e.role, Role::Number { .. }))
    }

    /// The registration the bridge sends the registry for it.
    pub fn registration(&self, prefix: &str) -> Value {
        let mut caps: Vec<Value> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut add = |name: &str, params: Value| {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
                caps.push(json!({ "name": name, "version": "1.0.0", "parameters": params }));
            }
        };
        let mut device_type = "device";
        if let Some(e) = self.on_off_entity() {
            add("on_off", json!({}));
            if let Role::Light { .. } = e.role {
                device_type = "light";
                let modes: Vec<&str> = e
                    .config
                    .get("supported_color_modes")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if e.config.get("brightness").and_then(Value::as_bool).unwrap_or(false)
                    || modes.iter().any(|m| *m != "onoff")
                {
                    add("brightness", json!({ "min": 0, "max": 100, "unit": "%" }));
                }
                if modes.contains(&"color_temp") {
                    let mired = |k: &str, d: f64| e.config.get(k).and_then(Value::as_f64).unwrap_or(d);
                    add(
                        "color_temperature",
                        json!({ "min_kelvin": (1e6 / mired("max_mireds", 500.0)).round(),
                                "max_kelvin": (1e6 / mired("min_mireds", 153.0)).round() }),
                    );
                }
            } else {
                device_type = "switch";
            }
        }
        for e in self.entities.values() {
            match &e.role {
                Role::Sensor { capability, unit, device_class } => {
                    if device_type == "device" {
                        device_type = "sensor";
                    }
                    add(capability, json!({ "unit": unit, "device_class": device_class }));
                }
                Role::Binary { capability } => add(capability, json!({ "device_class": capability })),
                Role::Number { min, max, step, unit } => {
                    add("level", json!({ "min": min, "max": max, "step": step, "unit": unit }))
                }
                _ => {}
            }
        }
        let text = |k: &str| self.info.get(k).and_then(Value::as_str);
        let unique: Vec<&str> = self.entities.keys().map(String::as_str).collect();
        let mut r = json!({
            "device_id": self.device_id,
            "device_type": device_type,
            "name": text("name").unwrap_or(&self.device_id),
            "capabilities": caps,
            "endpoints": {
                "control": control_topic(prefix, &self.device_id),
                "status": format!("{prefix}/devices/{}/status", self.device_id),
                "state": format!("{prefix}/devices/{}/state", self.device_id),
            },
            "metadata": {
                "adopted_from": "home_assistant_discovery",
                "origin": self.origin,
                "manufacturer": text("manufacturer"),
                "model": text("model"),
                "version": text("sw_version"),
                "identifiers": self.info.get("identifiers"),
                "unique_ids": unique,
            },
            "heartbeat_interval": crate::ADOPTED_HEARTBEAT.as_secs(),
        });
        if let Some(area) = text("suggested_area") {
            r["metadata"]["location"] = json!(area);
        }
        r
    }

    /// Every topic its entities read (state and availability).
    pub fn topics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in self.entities.values() {
            let mut ts: Vec<String> = e.availability().into_iter().map(|a| a.0).collect();
            ts.extend(e.state_topic().map(str::to_string));
            for t in ts {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Applies a message on `topic`.
    pub fn message(&mut self, topic: &str, payload: &[u8], now: &str) -> Update {
        let mut u = Update::default();
        let before = self.state.clone();
        let entities: Vec<Entity> = self.entities.values().cloned().collect();
        // `power` is the on/off entity's (the one Alicia's commands switch); another switch of
        // the same device (ESPHome's relay next to its light) reports as `<name>_power`, or the
        // two would overwrite each other in whatever order the broker delivers them.
        let main = self.on_off_entity().map(|e| e.unique_id.clone());
        for e in &entities {
            let power = if main.as_deref() == Some(e.unique_id.as_str()) {
                "power".to_string()
            } else {
                let name = s(&e.config, "name").map(|n| n.to_lowercase()).unwrap_or_else(|| e.unique_id.clone());
                format!("{}_power", object_id(&name))
            };
            for (t, tpl, on, off) in e.availability() {
                if t == topic {
                    if let Some(v) = render(tpl.as_deref(), payload) {
                        if v == on {
                            self.availability.insert(t.clone(), true);
                        } else if v == off {
                            self.availability.insert(t.clone(), false);
                        }
                    }
                }
            }
            if e.state_topic() != Some(topic) {
                continue;
            }
            match &e.role {
                Role::Switch => {
                    let v = render(e.template(), payload);
                    let on = s(&e.config, "state_on").unwrap_or(e.payload_on()).to_string();
                    let off = s(&e.config, "state_off").unwrap_or(e.payload_off()).to_string();
                    match v {
                        Some(v) if v == on => self.set(&power, json!("on")),
                        Some(v) if v == off => self.set(&power, json!("off")),
                        _ => {}
                    }
                }
                Role::Light { json: true, scale } => {
                    if let Ok(v) = serde_json::from_slice::<Value>(payload) {
                        match v.get("state").and_then(Value::as_str) {
                            Some("ON") => self.set(&power, json!("on")),
                            Some("OFF") => self.set(&power, json!("off")),
                            _ => {}
                        }
                        if let Some(b) = v.get("brightness").and_then(Value::as_f64) {
                            self.set("brightness", json!((b * 100.0 / scale).round() as i64));
                        }
                        if let Some(m) = v.get("color_temp").and_then(Value::as_f64).filter(|m| *m > 0.0) {
                            self.set("color_temp_kelvin", json!((1e6 / m).round() as i64));
                        }
                    }
                }
                Role::Light { json: false, .. } => match render(e.template(), payload) {
                    Some(v) if v == e.payload_on() => self.set(&power, json!("on")),
                    Some(v) if v == e.payload_off() => self.set(&power, json!("off")),
                    _ => {}
                },
                Role::Number { .. } => {
                    if let Some(v) = render(e.template(), payload).and_then(|v| v.trim().parse::<f64>().ok()) {
                        self.set("level", json!(v));
                    }
                }
                Role::Sensor { capability, unit, .. } => {
                    if let Some(v) = render(e.template(), payload).and_then(|v| v.trim().parse::<f64>().ok()) {
                        self.set(capability, json!(v));
                        u.readings.push(json!({ "capability": capability, "value": v, "unit": unit }));
                    }
                }
                Role::Binary { capability } => {
                    let v = render(e.template(), payload);
                    let on = v.as_deref() == Some(e.payload_on());
                    if v.is_some() {
                        self.set(capability, json!(on));
                        u.readings.push(json!({ "capability": capability, "value": on }));
                    }
                }
            }
        }
        u.state_changed = self.state != before;
        if u.state_changed {
            self.state.insert("updated".into(), json!(now));
        }
        if self.availability.keys().any(|t| t == topic) {
            u.available = Some(self.availability.values().all(|a| *a));
        }
        u
    }

    /// Whether its availability topics say it is there (`None`: they have said nothing).
    pub fn available(&self) -> Option<bool> {
        (!self.availability.is_empty()).then(|| self.availability.values().all(|a| *a))
    }

    fn set(&mut self, k: &str, v: Value) {
        self.state.insert(k.to_string(), v);
    }

    /// The MQTT messages that carry out an Alicia command, or the refusal (code, message).
    pub fn command(
        &self,
        command: &str,
        params: &Map<String, Value>,
    ) -> Result<Vec<(String, String)>, (String, String)> {
        let refuse = |code: &str, m: String| Err((code.to_string(), m));
        let on_off = self.on_off_entity();
        let num = |k: &str| params.get(k).and_then(Value::as_f64);
        match command {
            "turn_on" | "turn_off" | "toggle" => {
                let Some(e) = on_off else {
                    return refuse("unknown_command", format!("{} has no on/off entity", self.device_id));
                };
                let on = match command {
                    "turn_on" => true,
                    "turn_off" => false,
                    _ => self.state.get("power").and_then(Value::as_str) != Some("on"),
                };
                let topic =
                    e.command_topic().ok_or_else(|| ("unknown_command".to_string(), "no command topic".to_string()))?;
                let payload = match e.role {
                    Role::Light { json: true, .. } => json!({ "state": if on { "ON" } else { "OFF" } }).to_string(),
                    _ => if on { e.payload_on() } else { e.payload_off() }.to_string(),
                };
                Ok(vec![(topic.to_string(), payload)])
            }
            "set_brightness" | "set_color_temp" => {
                let Some(e @ Entity { role: Role::Light { json: true, scale }, .. }) = on_off else {
                    return refuse("unknown_command", format!("{} has no JSON light to dim", self.device_id));
                };
                let topic = e.command_topic().unwrap_or_default().to_string();
                let body = if command == "set_brightness" {
                    let Some(b) = num("brightness").filter(|b| (0.0..=100.0).contains(b)) else {
                        return refuse("invalid_parameters", "`brightness`: a number 0..=100".into());
                    };
                    if b == 0.0 {
                        json!({ "state": "OFF" })
                    } else {
                        json!({ "state": "ON", "brightness": (b * scale / 100.0).round() as i64 })
                    }
                } else {
                    let Some(k) = num("kelvin").filter(|k| *k > 0.0) else {
                        return refuse("invalid_parameters", "`kelvin`: a positive number".into());
                    };
                    json!({ "state": "ON", "color_temp": (1e6 / k).round() as i64 })
                };
                Ok(vec![(topic, body.to_string())])
            }
            "set_level" => {
                let Some(e @ Entity { role: Role::Number { min, max, .. }, .. }) = self.number_entity() else {
                    return refuse("unknown_command", format!("{} has no number entity", self.device_id));
                };
                let Some(l) = num("level").filter(|l| l >= min && l <= max) else {
                    return refuse("invalid_parameters", format!("`level`: a number {min}..={max}"));
                };
                let text = if l.fract() == 0.0 { format!("{}", l as i64) } else { l.to_string() };
                Ok(vec![(e.command_topic().unwrap_or_default().to_string(), text)])
            }
            other => refuse(
                "unknown_command",
                format!("{} (adopted from Home Assistant discovery) does not know {other:?}", self.device_id),
            ),
        }
    }
}

/// Where Alicia's commands for an adopted device go (the router forwards there; the bridge
/// listens): `P/ha/adopted/<id>/command`.
pub fn control_topic(prefix: &str, device_id: &str) -> String {
    format!("{prefix}/ha/adopted/{device_id}/command")
}

/// The device id of an adopted device: the prefix and its key, as one topic level.
pub fn adopted_id(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", object_id(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/../../tests/python/fixtures/ha/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Feeds a fixture's messages: configs make devices, the rest are state.
    fn adopt(name: &str) -> Vec<Adopted> {
        let f = fixture(name);
        let mut devices: BTreeMap<String, Adopted> = BTreeMap::new();
        let msgs = f["messages"].as_array().unwrap();
        for m in msgs {
            let topic = m["topic"].as_str().unwrap();
            if let Some((component, _, object)) = parse_topic("homeassistant", topic) {
                let c = expand(m["payload"].as_object().unwrap());
                let unique = s(&c, "unique_id").map(str::to_string).unwrap_or_else(|| object.to_string());
                let key = device_key(&c, &unique);
                let d = devices.entry(key.clone()).or_insert_with(|| Adopted::new(adopted_id("ha_", &key), key));
                d.merge(&c);
                if let Ok(e) = Entity::from_config(component, unique, c) {
                    d.put(e);
                }
            }
        }
        for m in msgs {
            let topic = m["topic"].as_str().unwrap();
            let payload = match &m["payload"] {
                Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            for d in devices.values_mut() {
                d.message(topic, &payload, "2024-03-20T10:00:00Z");
            }
        }
        devices.into_values().collect()
    }

    #[test]
    fn templates() {
        assert_eq!(render(Some("{{value_json.POWER}}"), br#"{"POWER":"ON"}"#).as_deref(), Some("ON"));
        assert_eq!(
            render(Some("{{ value_json['AM2301']['Temperature'] }}"), br#"{"AM2301":{"Temperature":22.4}}"#).as_deref(),
            Some("22.4")
        );
        assert_eq!(render(Some("{{ value_json.state | lower }}"), br#"{"state":"online"}"#).as_deref(), Some("online"));
        assert_eq!(render(None, b" 21.5 ").as_deref(), Some("21.5"));
        assert_eq!(render(Some("{{ value_json.missing }}"), b"{}"), None);
        assert_eq!(render(Some("{% if x %}y{% endif %}"), b"{}"), None);
    }

    #[test]
    fn esphome() {
        let d = adopt("esphome.json");
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.device_id, "ha_246f28a1b2c3");
        let r = d.registration("alicia");
        assert_eq!(r["name"], "Kitchen Node");
        assert_eq!(r["device_type"], "light");
        let caps: Vec<&str> =
            r["capabilities"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(caps, ["on_off", "brightness", "level", "temperature"]);
        assert_eq!(r["capabilities"][3]["parameters"]["unit"], "°C");
        assert_eq!(r["metadata"]["manufacturer"], "Espressif");
        assert_eq!(d.state["temperature"], 21.5);
        assert_eq!(d.state["level"], 40.0);
        assert_eq!((d.state["power"].as_str(), d.state["brightness"].as_i64()), (Some("on"), Some(100)));
        assert_eq!(d.state["relay_power"], "off", "the relay next to the light has a power of its own");
        // Commands go to the light (the on/off entity of a device with a light).
        let out = d.command("turn_off", &Map::new()).unwrap();
        assert_eq!(out, vec![("kitchen-node/light/ceiling/command".to_string(), r#"{"state":"OFF"}"#.to_string())]);
        let p = json!({"brightness": 50}).as_object().cloned().unwrap();
        assert_eq!(d.command("set_brightness", &p).unwrap()[0].1, r#"{"state":"ON","brightness":128}"#);
        let p = json!({"level": 55}).as_object().cloned().unwrap();
        assert_eq!(
            d.command("set_level", &p).unwrap(),
            vec![("kitchen-node/number/speaker_volume/command".into(), "55".into())]
        );
        assert_eq!(d.command("fly", &Map::new()).unwrap_err().0, "unknown_command");
        let mut d2 = d.clone();
        assert_eq!(d2.message("kitchen-node/status", b"offline", "t").available, Some(false));
        assert_eq!(d2.message("kitchen-node/status", b"online", "t").available, Some(true));
    }

    #[test]
    fn tasmota_and_zigbee2mqtt() {
        let t = adopt("tasmota.json");
        assert_eq!(t.len(), 1, "one device, by dev.ids, however HA names its entities");
        let t = &t[0];
        assert_eq!(t.device_id, "ha_1A2B3C");
        let r = t.registration("alicia");
        assert_eq!(r["name"], "Tasmota");
        assert_eq!(r["device_type"], "switch");
        assert_eq!(t.state["power"], "off");
        assert_eq!(t.state["temperature"], 22.4);
        assert_eq!(t.command("turn_on", &Map::new()).unwrap(), vec![("cmnd/tasmota_1A2B3C/POWER".into(), "ON".into())]);

        let z = adopt("zigbee2mqtt.json");
        let ids: Vec<&str> = z.iter().map(|d| d.device_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "ha_zigbee2mqtt_0x000b57fffe8c1d2e",
                "ha_zigbee2mqtt_0x000d6ffffe1a2b3c",
                "ha_zigbee2mqtt_0x00158d0001a2b3c4"
            ]
        );
        let bulb = &z[0];
        assert_eq!(bulb.state["color_temp_kelvin"], 2703);
        assert_eq!(bulb.state["brightness"], 100);
        let r = bulb.registration("alicia");
        assert_eq!(r["capabilities"][2]["parameters"]["min_kelvin"], 2203.0);
        let p = json!({"brightness": 50}).as_object().cloned().unwrap();
        assert_eq!(
            bulb.command("set_brightness", &p).unwrap()[0],
            ("zigbee2mqtt/hallway_bulb/set".into(), r#"{"state":"ON","brightness":127}"#.into())
        );
        assert_eq!(z[2].state["temperature"], 22.61);
    }
}
