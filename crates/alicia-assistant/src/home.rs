//! The home as the assistant sees it, built from the registry's retained inventory
//! (`<prefix>/system/registry/devices`): the matcher's live lists (device names and aliases,
//! locations as areas, device types as Home Assistant domains, capability names) and, per
//! device, what a command must respect (its capabilities' parameters, its status).
//!
//! The inventory is the contract (as for the router): this module reads the document, not the
//! registry crate, so any registry that publishes it works.

use std::collections::{BTreeMap, HashMap};

use alicia_intents::{domain_for_device_type, Area, Device, Floor, Home, HomeIndex};
use serde_json::{Map, Value};

/// One registered capability: its name and parameters (`min_volume`, `step_size`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Capability {
    pub name: String,
    pub parameters: Map<String, Value>,
}

/// A registered device, with what commands need.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub id: String,
    /// Spoken name (the registration's `name`, or one made from location and type).
    pub name: String,
    pub aliases: Vec<String>,
    pub device_type: String,
    /// Home Assistant domain (`light`, `media_player`, ...).
    pub domain: String,
    pub device_class: Option<String>,
    /// Area id (the registered location).
    pub location: Option<String>,
    /// Floor id (`floor` in the registration or its metadata), for the area.
    pub floor: Option<String>,
    /// `online`, `offline` or `unknown` (the registry's word).
    pub status: String,
    pub capabilities: Vec<Capability>,
}

impl DeviceInfo {
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c.name == capability)
    }

    /// A capability parameter, looked up in the named capabilities in order (the design
    /// document puts `min_volume`/`max_volume` on `audio_playback` and `step_size` on
    /// `volume_control`; devices differ).
    pub fn param(&self, capabilities: &[&str], key: &str) -> Option<&Value> {
        capabilities
            .iter()
            .find_map(|name| self.capabilities.iter().find(|c| c.name == *name).and_then(|c| c.parameters.get(key)))
    }

    /// A numeric parameter (see [`DeviceInfo::param`]).
    pub fn number(&self, capabilities: &[&str], key: &str) -> Option<f64> {
        self.param(capabilities, key).and_then(Value::as_f64).filter(|v| v.is_finite())
    }

    /// Whether commands can reach it now (the router delivers to `online` and `unknown`).
    pub fn reachable(&self) -> bool {
        self.status != "offline"
    }

    /// A satellite (it has a microphone): it hears, and answers through its own speaker if it
    /// has one, but a room's music and announcements belong on the room's speakers.
    pub fn is_satellite(&self) -> bool {
        self.has("microphone") || self.device_type == "satellite"
    }
}

/// The matcher's index and the devices behind it, rebuilt for every inventory.
#[derive(Debug, Default)]
pub struct HomeModel {
    pub index: HomeIndex,
    devices: HashMap<String, DeviceInfo>,
    /// The inventory's `updated` time.
    pub updated: Option<String>,
}

/// `living_room` → `Living Room`.
pub fn title(slug: &str) -> String {
    slug.split(['_', '-', ' '])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn strings_at(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// Quantities a sensor measures, in the order that names its device class.
const SENSOR_QUANTITIES: &[&str] =
    &["temperature", "humidity", "illuminance", "pressure", "co2", "battery", "power", "energy"];

/// Reads one device record of the inventory.
fn device_info(d: &Value) -> Option<DeviceInfo> {
    let id = str_at(d, "device_id")?.to_string();
    let device_type = str_at(d, "device_type").unwrap_or("device").to_string();
    let metadata = d.get("metadata").cloned().unwrap_or(Value::Null);
    let registration = d.get("registration").cloned().unwrap_or(Value::Null);
    // A field the registration may carry itself or in its metadata.
    let field = |key: &str| -> Option<String> {
        str_at(&registration, key).or_else(|| str_at(&metadata, key)).map(str::to_string)
    };
    let location = str_at(d, "location").map(str::to_string).or_else(|| field("location"));
    let capabilities: Vec<Capability> = match d.get("capabilities") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|c| match c {
                Value::String(name) => Some(Capability { name: name.clone(), parameters: Map::new() }),
                Value::Object(o) => Some(Capability {
                    name: o.get("name")?.as_str()?.to_string(),
                    parameters: o.get("parameters").and_then(Value::as_object).cloned().unwrap_or_default(),
                }),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut aliases = strings_at(&registration, "aliases");
    aliases.extend(strings_at(&metadata, "aliases"));
    // The registry names a device without a `name` by its id; "sonos_kitchen_001" is no name to
    // say. Then the spoken name is made of its location and type ("Kitchen Speaker"), and the
    // id's words without the number are an alias ("sonos kitchen").
    let given = str_at(d, "name").filter(|n| *n != id).map(str::to_string);
    let name = match (&given, &location) {
        (Some(n), _) => n.clone(),
        (None, Some(loc)) => format!("{} {}", title(loc), title(&device_type)),
        (None, None) => title(&id),
    };
    if given.is_none() {
        let words: Vec<&str> =
            id.split(['_', '-']).filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit())).collect();
        let spoken = words.join(" ");
        if !spoken.is_empty() && !spoken.eq_ignore_ascii_case(&name) {
            aliases.push(spoken);
        }
    }
    // "Pause the Sonos": the maker's name, and maker and model, name the device too.
    if let Some(maker) = str_at(&metadata, "manufacturer") {
        aliases.push(maker.to_string());
        if let Some(model) = str_at(&metadata, "model") {
            aliases.push(format!("{maker} {model}"));
        }
    }
    aliases.retain(|a| !a.trim().is_empty() && !a.eq_ignore_ascii_case(&name));
    aliases.dedup();
    let domain = field("domain").unwrap_or_else(|| domain_for_device_type(&device_type).to_string());
    let device_class = field("device_class")
        .or_else(|| {
            capabilities
                .iter()
                .find_map(|c| c.parameters.get("device_class").and_then(Value::as_str).map(str::to_string))
        })
        .or_else(|| {
            (domain == "sensor")
                .then(|| {
                    SENSOR_QUANTITIES.iter().find(|q| capabilities.iter().any(|c| c.name == **q)).map(|q| q.to_string())
                })
                .flatten()
        });
    Some(DeviceInfo {
        id,
        name,
        aliases,
        device_type,
        domain,
        device_class,
        location,
        floor: field("floor"),
        status: str_at(d, "status").unwrap_or("unknown").to_string(),
        capabilities,
    })
}

impl HomeModel {
    /// Builds the model from the inventory document `{"updated", "devices": [...]}`.
    /// Records without a `device_id` are skipped.
    pub fn from_inventory(doc: &Value) -> Result<HomeModel, String> {
        let devices = doc
            .get("devices")
            .and_then(Value::as_array)
            .ok_or_else(|| "the inventory has no `devices` array".to_string())?;
        let infos: Vec<DeviceInfo> = devices.iter().filter_map(device_info).collect();
        let mut model = HomeModel::from_devices(infos);
        model.updated = doc.get("updated").and_then(Value::as_str).map(str::to_string);
        Ok(model)
    }

    /// Builds the model from device records.
    pub fn from_devices(infos: Vec<DeviceInfo>) -> HomeModel {
        let mut areas: BTreeMap<String, Area> = BTreeMap::new();
        let mut floors: BTreeMap<String, Floor> = BTreeMap::new();
        for d in &infos {
            if let Some(loc) = &d.location {
                let area = areas.entry(loc.clone()).or_insert_with(|| Area {
                    id: loc.clone(),
                    name: title(loc),
                    aliases: Vec::new(),
                    floor: None,
                });
                if let (None, Some(f)) = (&area.floor, &d.floor) {
                    area.floor = Some(f.clone());
                    floors.entry(f.clone()).or_insert_with(|| Floor {
                        id: f.clone(),
                        name: title(f),
                        aliases: Vec::new(),
                    });
                }
            }
        }
        let home = Home {
            areas: areas.into_values().collect(),
            floors: floors.into_values().collect(),
            devices: infos
                .iter()
                .map(|d| Device {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    aliases: d.aliases.clone(),
                    area: d.location.clone(),
                    domain: d.domain.clone(),
                    device_class: d.device_class.clone(),
                    capabilities: d.capabilities.iter().map(|c| c.name.clone()).collect(),
                })
                .collect(),
            lists: BTreeMap::new(),
        };
        HomeModel {
            index: HomeIndex::new(home),
            devices: infos.into_iter().map(|d| (d.id.clone(), d)).collect(),
            updated: None,
        }
    }

    pub fn device(&self, id: &str) -> Option<&DeviceInfo> {
        self.devices.get(id)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The area's spoken name ("Living Room" for `living_room`).
    pub fn area_name(&self, id: &str) -> String {
        self.index.area(id).map(|a| a.name.clone()).unwrap_or_else(|| title(id))
    }

    /// Devices in an area.
    pub fn in_area<'a>(&'a self, area: &'a str) -> impl Iterator<Item = &'a DeviceInfo> + 'a {
        self.devices.values().filter(move |d| d.location.as_deref() == Some(area))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_design_documents_speaker_gets_a_spoken_name_and_aliases() {
        let doc = json!({"updated": "now", "devices": [{
            "device_id": "sonos_kitchen_001", "device_type": "speaker", "name": "sonos_kitchen_001",
            "location": "kitchen", "status": "online",
            "capabilities": [
                {"name": "audio_playback", "parameters": {"max_volume": 100, "min_volume": 0}},
                {"name": "volume_control", "parameters": {"step_size": 1, "mute_support": true}}],
            "metadata": {"manufacturer": "Sonos", "model": "One", "location": "kitchen"},
            "registration": {}
        }]});
        let m = HomeModel::from_inventory(&doc).unwrap();
        let d = m.device("sonos_kitchen_001").unwrap();
        assert_eq!(d.name, "Kitchen Speaker");
        assert_eq!(d.aliases, ["sonos kitchen", "Sonos", "Sonos One"]);
        assert_eq!(d.domain, "media_player");
        assert_eq!(d.number(&["volume_control", "audio_playback"], "max_volume"), Some(100.0));
        assert_eq!(d.number(&["volume_control"], "step_size"), Some(1.0));
        assert_eq!(m.area_name("kitchen"), "Kitchen");
        assert_eq!(m.index.home.devices[0].capabilities, ["audio_playback", "volume_control"]);
    }

    #[test]
    fn sensors_get_a_device_class_from_what_they_measure() {
        let doc = json!({"devices": [
            {"device_id": "t1", "device_type": "sensor", "name": "Hall Thermometer", "location": "hall",
             "capabilities": ["humidity", "temperature"]},
            {"device_id": "m1", "device_type": "sensor", "location": "hall",
             "capabilities": [{"name": "motion", "parameters": {"device_class": "motion"}}]},
            {"name": "no id"}
        ]});
        let m = HomeModel::from_inventory(&doc).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.device("t1").unwrap().device_class.as_deref(), Some("temperature"));
        assert_eq!(m.device("m1").unwrap().device_class.as_deref(), Some("motion"));
        assert_eq!(m.device("m1").unwrap().name, "Hall Sensor");
        assert!(HomeModel::from_inventory(&json!({"x": 1})).is_err());
    }
}
