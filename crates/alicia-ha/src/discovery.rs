//! Alicia → Home Assistant: the MQTT discovery configs of a registry device, the state HA's
//! JSON light reads, and what HA's commands mean as Alicia device commands. No I/O.

use alicia_devices::home::Device;
use serde_json::{json, Map, Value};

/// Home Assistant 2024.3's sensor device classes (`homeassistant/components/sensor/const.py`):
/// a config naming another is refused by HA, so other classes are left out.
const SENSOR_CLASSES: &[&str] = &[
    "apparent_power",
    "aqi",
    "atmospheric_pressure",
    "battery",
    "carbon_dioxide",
    "carbon_monoxide",
    "current",
    "data_rate",
    "data_size",
    "date",
    "distance",
    "duration",
    "energy",
    "energy_storage",
    "enum",
    "frequency",
    "gas",
    "humidity",
    "illuminance",
    "irradiance",
    "moisture",
    "monetary",
    "nitrogen_dioxide",
    "nitrogen_monoxide",
    "nitrous_oxide",
    "ozone",
    "ph",
    "pm1",
    "pm10",
    "pm25",
    "power_factor",
    "power",
    "precipitation",
    "precipitation_intensity",
    "pressure",
    "reactive_power",
    "signal_strength",
    "sound_pressure",
    "speed",
    "sulphur_dioxide",
    "temperature",
    "timestamp",
    "volatile_organic_compounds",
    "volatile_organic_compounds_parts",
    "voltage",
    "volume",
    "volume_storage",
    "water",
    "weight",
    "wind_speed",
];

/// Binary sensor device classes (`binary_sensor/__init__.py`).
const BINARY_CLASSES: &[&str] = &[
    "battery",
    "battery_charging",
    "carbon_monoxide",
    "cold",
    "connectivity",
    "door",
    "garage_door",
    "gas",
    "heat",
    "light",
    "lock",
    "moisture",
    "motion",
    "moving",
    "occupancy",
    "opening",
    "plug",
    "power",
    "presence",
    "problem",
    "running",
    "safety",
    "smoke",
    "sound",
    "tamper",
    "update",
    "vibration",
    "window",
];

/// Capabilities reported as booleans (binary sensors).
const BINARY_CAPABILITIES: &[&str] = &[
    "motion",
    "contact",
    "occupancy",
    "presence",
    "door",
    "window",
    "smoke",
    "moisture",
    "leak",
    "vibration",
    "tamper",
];

/// Capabilities that are controls, not readings (a light's `brightness` has a unit too).
const CONTROLS: &[&str] = &[
    "on_off",
    "brightness",
    "color_temperature",
    "volume_control",
    "audio_playback",
    "media_control",
    "announce",
    "level",
];

/// The media commands offered as buttons.
pub const BUTTONS: &[&str] = &["pause", "resume", "stop", "next", "previous"];

/// Topic names of the bridge (prefix `P`, discovery prefix `D`, node `N`).
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
    pub discovery: String,
    pub node: String,
}

impl Names {
    pub fn config_topic(&self, component: &str, object: &str) -> String {
        format!("{}/{component}/{}/{object}/config", self.discovery, self.node)
    }
    /// Where HA sends a command of an Alicia entity: `P/ha/<id>/<entity>/set` (or `/press`).
    pub fn command_topic(&self, id: &str, entity: &str, verb: &str) -> String {
        format!("{}/ha/{id}/{entity}/{verb}", self.prefix)
    }
    /// The HA-format state of an Alicia light: `P/ha/<id>/light/state`.
    pub fn light_state_topic(&self, id: &str) -> String {
        format!("{}/ha/{id}/light/state", self.prefix)
    }
}

/// A topic level / object id made of `[A-Za-z0-9_-]`.
pub fn object_id(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

fn title(s: &str) -> String {
    let s = s.replace('_', " ");
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// One discovery config to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub component: &'static str,
    pub object: String,
    pub config: Value,
}

impl Entity {
    pub fn topic(&self, n: &Names) -> String {
        n.config_topic(self.component, &self.object)
    }
}

fn kelvin_range(d: &Device) -> (f64, f64) {
    let c = d.capability("color_temperature");
    (c.and_then(|c| c.number("min_kelvin")).unwrap_or(2000.0), c.and_then(|c| c.number("max_kelvin")).unwrap_or(6500.0))
}

/// Whether the bridge made this device from HA discovery itself (it is not announced back).
pub fn is_adopted(d: &Device) -> bool {
    d.metadata.get("adopted_from").is_some()
}

/// The discovery configs of a device (none for a device the bridge adopted).
pub fn entities(d: &Device, n: &Names) -> Vec<Entity> {
    if is_adopted(d) {
        return Vec::new();
    }
    let id = d.device_id.as_str();
    let oid = object_id(id);
    let status = d
        .endpoints
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}/devices/{id}/status", n.prefix));
    let state = format!("{}/devices/{id}/state", n.prefix);
    let text = |k: &str| d.metadata.get(k).and_then(Value::as_str).map(str::to_string);
    let mut device = json!({
        "identifiers": [format!("alicia_{id}")],
        "name": d.name,
        "manufacturer": text("manufacturer").unwrap_or_else(|| "Alicia".into()),
        "model": text("model").unwrap_or_else(|| d.device_type.clone()),
    });
    if let Some(v) = text("version") {
        device["sw_version"] = json!(v);
    }
    if let Some(l) = &d.location {
        device["suggested_area"] = json!(l);
    }
    let base = |unique: &str, object: &str, name: Value| -> Map<String, Value> {
        let v = json!({
            "name": name,
            "unique_id": format!("alicia_{unique}"),
            "object_id": object,
            "availability_topic": status,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            "origin": { "name": "Alicia", "sw_version": env!("CARGO_PKG_VERSION") },
        });
        v.as_object().cloned().unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut push = |component: &'static str, object: String, mut cfg: Map<String, Value>, extra: Value| {
        if let Value::Object(e) = extra {
            cfg.extend(e);
        }
        out.push(Entity { component, object, config: Value::Object(cfg) });
    };

    let light = d.has("on_off") && (d.has("brightness") || d.has("color_temperature") || d.device_type == "light");
    if light {
        let modes: Vec<&str> = if d.has("color_temperature") {
            vec!["color_temp"]
        } else if d.has("brightness") {
            vec!["brightness"]
        } else {
            vec!["onoff"]
        };
        let (kmin, kmax) = kelvin_range(d);
        let mut extra = json!({
            "schema": "json",
            "command_topic": n.command_topic(id, "light", "set"),
            "state_topic": n.light_state_topic(id),
            "color_mode": true,
            "supported_color_modes": modes,
        });
        if d.has("brightness") || d.has("color_temperature") {
            extra["brightness"] = json!(true);
            extra["brightness_scale"] = json!(100);
        }
        if d.has("color_temperature") {
            extra["min_mireds"] = json!((1e6 / kmax).round() as i64);
            extra["max_mireds"] = json!((1e6 / kmin).round() as i64);
        }
        push("light", oid.clone(), base(&format!("{id}_light"), &oid, Value::Null), extra);
    } else if d.has("on_off") {
        push(
            "switch",
            oid.clone(),
            base(&format!("{id}_switch"), &oid, Value::Null),
            json!({
                "command_topic": n.command_topic(id, "switch", "set"),
                "state_topic": state, "value_template": "{{ value_json.power }}",
                "state_on": "on", "state_off": "off", "payload_on": "ON", "payload_off": "OFF",
            }),
        );
    }
    if let Some(vc) = d.capability("volume_control") {
        let (min, max) = alicia_devices::speaker::volume_range(d);
        let object = format!("{oid}_volume");
        push(
            "number",
            object.clone(),
            base(&format!("{id}_volume"), &object, json!("Volume")),
            json!({
                "command_topic": n.command_topic(id, "volume", "set"),
                "state_topic": state, "value_template": "{{ value_json.volume }}",
                "min": min, "max": max, "step": vc.number("step_size").unwrap_or(1.0), "mode": "slider",
            }),
        );
        if vc.flag("mute_support").unwrap_or(false) {
            let object = format!("{oid}_mute");
            push(
                "switch",
                object.clone(),
                base(&format!("{id}_mute"), &object, json!("Mute")),
                json!({
                    "command_topic": n.command_topic(id, "mute", "set"),
                    "state_topic": state, "value_template": "{{ 'ON' if value_json.muted else 'OFF' }}",
                    "payload_on": "ON", "payload_off": "OFF", "icon": "mdi:volume-off",
                }),
            );
        }
    }
    if d.has("media_control") || d.has("audio_playback") {
        for b in BUTTONS {
            let object = format!("{oid}_{b}");
            push(
                "button",
                object.clone(),
                base(&format!("{id}_{b}"), &object, json!(title(b))),
                json!({ "command_topic": n.command_topic(id, b, "press"), "payload_press": "PRESS" }),
            );
        }
        let object = format!("{oid}_playback");
        push(
            "sensor",
            object.clone(),
            base(&format!("{id}_playback"), &object, json!("Playback")),
            json!({ "state_topic": state, "value_template": "{{ value_json.playback }}", "icon": "mdi:speaker" }),
        );
    }
    if d.has("announce") || d.has("audio_playback") {
        let object = format!("{oid}_announce");
        push(
            "text",
            object.clone(),
            base(&format!("{id}_announce"), &object, json!("Announcement")),
            json!({ "command_topic": n.command_topic(id, "announce", "set"), "max": 255, "icon": "mdi:bullhorn" }),
        );
    }
    // Sensors: the readings sensor_data checked and keeps on P/sensors/<id>.
    for c in &d.capabilities {
        let unit = c.parameters.get("unit").and_then(Value::as_str);
        let class = c.parameters.get("device_class").and_then(Value::as_str);
        let binary = unit.is_none() && BINARY_CAPABILITIES.contains(&c.name.as_str());
        if CONTROLS.contains(&c.name.as_str()) || unit.is_none() && !binary {
            continue;
        }
        let object = format!("{oid}_{}", object_id(&c.name));
        let sensors = format!("{}/sensors/{id}", n.prefix);
        let key = c.name.replace('\'', "");
        let mut cfg = base(&format!("{id}_{}", c.name), &object, json!(title(&c.name)));
        if binary {
            cfg.insert("state_topic".into(), json!(sensors));
            cfg.insert(
                "value_template".into(),
                json!(format!("{{{{ 'ON' if value_json.readings['{key}'].value else 'OFF' }}}}")),
            );
            if let Some(cl) = class.or(Some(c.name.as_str())).filter(|cl| BINARY_CLASSES.contains(cl)) {
                cfg.insert("device_class".into(), json!(cl));
            }
            push("binary_sensor", object, cfg, Value::Null);
        } else {
            cfg.insert("state_topic".into(), json!(sensors));
            cfg.insert("value_template".into(), json!(format!("{{{{ value_json.readings['{key}'].value }}}}")));
            cfg.insert("unit_of_measurement".into(), json!(unit));
            cfg.insert("state_class".into(), json!("measurement"));
            if let Some(cl) = class.or(Some(c.name.as_str())).filter(|cl| SENSOR_CLASSES.contains(cl)) {
                cfg.insert("device_class".into(), json!(cl));
            }
            push("sensor", object, cfg, Value::Null);
        }
    }
    out
}

/// The state HA's JSON light reads, from the Alicia state of a light.
pub fn light_state(d: &Device, state: &Value) -> Value {
    let on = state.get("power").and_then(Value::as_str) == Some("on");
    let mut s = json!({ "state": if on { "ON" } else { "OFF" } });
    if d.has("color_temperature") {
        s["color_mode"] = json!("color_temp");
    } else if d.has("brightness") {
        s["color_mode"] = json!("brightness");
    } else {
        s["color_mode"] = json!("onoff");
    }
    if let Some(b) = state.get("brightness").and_then(Value::as_f64) {
        s["brightness"] = json!(b.round() as i64);
    }
    if let Some(k) = state.get("color_temp_kelvin").and_then(Value::as_f64).filter(|k| *k > 0.0) {
        s["color_temp"] = json!((1e6 / k).round() as i64);
    }
    s
}

/// What an HA command on `P/ha/<id>/<entity>/<verb>` asks of Alicia.
#[derive(Debug, Clone, PartialEq)]
pub enum Ask {
    /// Device commands, in order (`set_brightness` before `turn_on`, so the light comes on at it).
    Commands(Vec<(String, Value)>),
    /// An announcement for the speaker (through speaker_manager).
    Announce(String),
}

fn on_off(payload: &str) -> Result<&'static str, String> {
    match payload.trim() {
        "ON" | "on" => Ok("turn_on"),
        "OFF" | "off" => Ok("turn_off"),
        "TOGGLE" | "toggle" => Ok("toggle"),
        other => Err(format!("{other:?} is not ON, OFF or TOGGLE")),
    }
}

/// Reads HA's command payload.
pub fn ask(entity: &str, verb: &str, payload: &[u8]) -> Result<Ask, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "the payload is not UTF-8".to_string())?;
    let one = |c: &str, p: Value| Ok(Ask::Commands(vec![(c.to_string(), p)]));
    match (entity, verb) {
        ("switch", "set") => one(on_off(text)?, json!({})),
        ("mute", "set") => one(if on_off(text)? == "turn_on" { "mute" } else { "unmute" }, json!({})),
        ("volume", "set") => {
            let v: f64 = text.trim().parse().map_err(|_| format!("volume {text:?} is not a number"))?;
            one("set_volume", json!({ "volume": v.round() as i64 }))
        }
        ("announce", "set") => Ok(Ask::Announce(text.to_string())),
        (b, "press") if BUTTONS.contains(&b) => one(b, json!({})),
        ("light", "set") => {
            let v: Value = serde_json::from_str(text).map_err(|e| format!("a JSON light command: {e}"))?;
            let mut out = Vec::new();
            if let Some(b) = v.get("brightness").and_then(Value::as_f64) {
                out.push(("set_brightness".to_string(), json!({ "brightness": b.round().clamp(0.0, 100.0) as i64 })));
            }
            if let Some(m) = v.get("color_temp").and_then(Value::as_f64).filter(|m| *m > 0.0) {
                out.push(("set_color_temp".to_string(), json!({ "kelvin": (1e6 / m).round() as i64 })));
            }
            match v.get("state").and_then(Value::as_str) {
                Some(s) => out.push((on_off(s)?.to_string(), json!({}))),
                None if out.is_empty() => return Err("a JSON light command without state".into()),
                None => {}
            }
            Ok(Ask::Commands(out))
        }
        _ => Err(format!("no command {entity}/{verb}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names { prefix: "alicia".into(), discovery: "homeassistant".into(), node: "alicia".into() }
    }

    fn device(v: Value) -> Device {
        Device::from_json(&v).unwrap()
    }

    #[test]
    fn a_light_a_sensor_and_a_speaker() {
        let n = names();
        let light = device(
            json!({"device_id": "hall", "name": "Hall light", "device_type": "light", "location": "hall",
            "capabilities": [{"name": "on_off"}, {"name": "brightness", "parameters": {"unit": "%"}}, {"name": "color_temperature", "parameters": {"min_kelvin": 2700, "max_kelvin": 6500}}],
            "endpoints": {"status": "alicia/devices/hall/status"}}),
        );
        let e = entities(&light, &n);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].topic(&n), "homeassistant/light/alicia/hall/config");
        let c = &e[0].config;
        assert_eq!(c["supported_color_modes"], json!(["color_temp"]));
        assert_eq!((c["min_mireds"].as_i64(), c["max_mireds"].as_i64()), (Some(154), Some(370)));
        assert_eq!(c["device"]["suggested_area"], "hall");
        assert_eq!(c["availability_topic"], "alicia/devices/hall/status");
        let s = light_state(&light, &json!({"power": "on", "brightness": 40, "color_temp_kelvin": 4000}));
        assert_eq!(s, json!({"state": "ON", "color_mode": "color_temp", "brightness": 40, "color_temp": 250}));

        let sensor = device(json!({"device_id": "t1", "capabilities": [
            {"name": "temperature", "parameters": {"unit": "°C", "device_class": "temperature"}},
            {"name": "motion", "parameters": {}}, {"name": "odd_thing", "parameters": {"unit": "x", "device_class": "not_a_class"}}]}));
        let e = entities(&sensor, &n);
        let comps: Vec<(&str, &str)> = e.iter().map(|e| (e.component, e.object.as_str())).collect();
        assert_eq!(comps, [("sensor", "t1_temperature"), ("binary_sensor", "t1_motion"), ("sensor", "t1_odd_thing")]);
        assert_eq!(e[0].config["value_template"], "{{ value_json.readings['temperature'].value }}");
        assert_eq!(e[1].config["device_class"], "motion");
        assert!(e[2].config.get("device_class").is_none(), "an unknown class would make HA refuse the config");

        let speaker = device(json!({"device_id": "spk", "capabilities": [
            {"name": "audio_playback"}, {"name": "volume_control", "parameters": {"step_size": 5, "mute_support": true, "max_volume": 30}},
            {"name": "media_control"}, {"name": "announce"}]}));
        let e = entities(&speaker, &n);
        let objects: Vec<&str> = e.iter().map(|e| e.object.as_str()).collect();
        assert!(objects.contains(&"spk_volume") && objects.contains(&"spk_mute") && objects.contains(&"spk_pause"));
        let vol = e.iter().find(|e| e.object == "spk_volume").unwrap();
        assert_eq!((vol.config["max"].as_i64(), vol.config["step"].as_f64()), (Some(30), Some(5.0)));
        let adopted =
            device(json!({"device_id": "ha_x", "metadata": {"adopted_from": "esphome"}, "capabilities": ["on_off"]}));
        assert!(entities(&adopted, &n).is_empty());
    }

    #[test]
    fn commands_from_home_assistant() {
        assert_eq!(ask("switch", "set", b"ON").unwrap(), Ask::Commands(vec![("turn_on".into(), json!({}))]));
        let a = ask("light", "set", br#"{"state":"ON","brightness":40,"color_temp":250}"#).unwrap();
        let names: Vec<String> = match a {
            Ask::Commands(c) => c.into_iter().map(|c| c.0).collect(),
            _ => vec![],
        };
        assert_eq!(names, ["set_brightness", "set_color_temp", "turn_on"]);
        assert_eq!(
            ask("volume", "set", b"35.0").unwrap(),
            Ask::Commands(vec![("set_volume".into(), json!({"volume": 35}))])
        );
        assert_eq!(ask("pause", "press", b"PRESS").unwrap(), Ask::Commands(vec![("pause".into(), json!({}))]));
        assert_eq!(ask("announce", "set", b"hello").unwrap(), Ask::Announce("hello".into()));
        assert!(ask("switch", "set", b"MAYBE").is_err());
        assert!(ask("rocket", "set", b"ON").is_err());
    }
}
