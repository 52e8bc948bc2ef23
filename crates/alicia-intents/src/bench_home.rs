//! The benchmark home: 500 devices, 25 kinds in each of 20 areas on two floors. One
//! definition for every benchmark that needs a big home: the matcher's (`benches/matching.rs`,
//! as a [`Home`]) and `alicia bench --scenario assistant-text` (as registrations in the
//! registry's inventory, through [`devices`]), so the two measure the same home.
//!
//! Why here, behind the `bench-home` feature: the home is made of what this crate defines
//! ([`Home`], [`Device`], [`Area`], [`Floor`], and the device-type → domain table the assistant
//! applies to the registry's inventory, [`domain_for_device_type`]), and it is pure data with
//! no I/O, like the rest of the crate. `alicia-testkit` would be the wrong home: it is the
//! tests' brokers (it pulls in `alicia-broker`), and `alicia-bench` is a normal dependency of
//! the binary. The feature keeps it out of every build that does not ask for it (the
//! assistant and the binary's normal paths never see it); the registry's JSON form stays in
//! `alicia-bench`, which is the crate that speaks the registry's format.

use crate::{domain_for_device_type, Area, Device, Floor, Home};

/// The 20 areas; the first 10 on the ground floor, the rest upstairs.
pub const AREAS: [&str; 20] = [
    "Kitchen",
    "Living Room",
    "Dining Room",
    "Bedroom",
    "Guest Room",
    "Kids Room",
    "Office",
    "Bathroom",
    "Hallway",
    "Garage",
    "Basement",
    "Attic",
    "Laundry",
    "Porch",
    "Garden",
    "Patio",
    "Library",
    "Playroom",
    "Pantry",
    "Studio",
];

/// One kind of device, in every area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The name after the area's: "Ceiling Light" → "Kitchen Ceiling Light".
    pub name: &'static str,
    /// The registry's `device_type` (the domain follows from it: [`domain_for_device_type`]).
    pub device_type: &'static str,
    /// Home Assistant's device class, where it has one.
    pub device_class: Option<&'static str>,
    /// Registered capability names.
    pub capabilities: &'static [&'static str],
}

const fn kind(
    name: &'static str,
    device_type: &'static str,
    device_class: Option<&'static str>,
    capabilities: &'static [&'static str],
) -> Kind {
    Kind { name, device_type, device_class, capabilities }
}

/// 25 kinds: lights, lamps, a speaker, a TV, sensors, switches, blinds, a fan, ...
pub const KINDS: [Kind; 25] = [
    kind("Ceiling Light", "light", None, &["on_off", "brightness"]),
    kind("Lamp", "light", None, &["on_off", "brightness"]),
    kind("Floor Lamp", "light", None, &["on_off"]),
    kind("Spotlights", "light", None, &["on_off"]),
    kind("Strip", "light", None, &["on_off"]),
    kind("Speaker", "speaker", None, &["audio_playback", "volume_control", "media_control"]),
    kind("TV", "tv", None, &["audio_playback", "volume_control", "media_control"]),
    kind("Satellite", "satellite", None, &["microphone", "audio_playback"]),
    kind("Thermometer", "sensor", Some("temperature"), &["temperature"]),
    kind("Humidity", "sensor", Some("humidity"), &["humidity"]),
    kind("Motion", "motion_sensor", Some("motion"), &["motion"]),
    kind("Window Sensor", "contact_sensor", Some("window"), &["contact"]),
    kind("Plug", "plug", None, &["on_off"]),
    kind("Heater", "switch", None, &["on_off"]),
    kind("Blinds", "blind", Some("blind"), &["level"]),
    kind("Curtains", "curtain", Some("curtain"), &["level"]),
    kind("Fan", "fan", None, &["on_off"]),
    kind("Thermostat", "thermostat", None, &["temperature", "level"]),
    kind("Night Light", "light", None, &["on_off"]),
    kind("Wall Light", "light", None, &["on_off"]),
    kind("Radio", "radio", None, &["audio_playback", "volume_control"]),
    kind("Air Purifier", "fan", None, &["on_off"]),
    kind("Dehumidifier", "switch", None, &["on_off"]),
    kind("Door Lock", "lock", None, &["lock"]),
    kind("Sconce", "light", None, &["on_off"]),
];

/// `Living Room` → `living_room`.
pub fn slug(s: &str) -> String {
    s.to_lowercase().replace(' ', "_")
}

/// One device of the home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchDevice {
    /// `<area>_<kind>`: `kitchen_ceiling_light`.
    pub id: String,
    /// `Kitchen Ceiling Light`.
    pub name: String,
    /// The area's name (`Living Room`) and id (`living_room`).
    pub area: &'static str,
    pub area_id: String,
    /// `ground` or `upstairs`.
    pub floor: &'static str,
    pub kind: Kind,
    /// The maker, which also names the device ("pause the Sonos"): only the kitchen speaker.
    pub manufacturer: Option<&'static str>,
}

/// The 500 devices, area by area, kind by kind.
pub fn devices() -> Vec<BenchDevice> {
    let mut out = Vec::with_capacity(AREAS.len() * KINDS.len());
    for (ai, area) in AREAS.iter().enumerate() {
        for kind in KINDS {
            out.push(BenchDevice {
                id: format!("{}_{}", slug(area), slug(kind.name)),
                name: format!("{area} {}", kind.name),
                area,
                area_id: slug(area),
                floor: if ai < 10 { "ground" } else { "upstairs" },
                kind,
                manufacturer: (*area == "Kitchen" && kind.name == "Speaker").then_some("Sonos"),
            });
        }
    }
    out
}

/// The home as the matcher takes it: areas with their floors, the floors, and every device
/// with its domain (from its type, as the assistant maps the registry's), device class,
/// capabilities, and its maker as an alias.
pub fn home() -> Home {
    let areas = AREAS
        .iter()
        .enumerate()
        .map(|(ai, area)| Area {
            id: slug(area),
            name: area.to_string(),
            aliases: vec![],
            floor: Some(if ai < 10 { "ground" } else { "upstairs" }.into()),
        })
        .collect();
    let devices = devices()
        .into_iter()
        .map(|d| Device {
            aliases: d.manufacturer.map(str::to_string).into_iter().collect(),
            area: Some(d.area_id),
            domain: domain_for_device_type(d.kind.device_type).to_string(),
            device_class: d.kind.device_class.map(str::to_string),
            capabilities: d.kind.capabilities.iter().map(|c| c.to_string()).collect(),
            id: d.id,
            name: d.name,
        })
        .collect();
    Home {
        areas,
        floors: vec![
            Floor { id: "ground".into(), name: "Ground Floor".into(), aliases: vec!["downstairs".into()] },
            Floor { id: "upstairs".into(), name: "Upstairs".into(), aliases: vec![] },
        ],
        devices,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_hundred_devices_in_twenty_areas_with_unique_ids() {
        let all = devices();
        assert_eq!(all.len(), 500);
        let ids: std::collections::HashSet<&str> = all.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 500);
        let h = home();
        assert_eq!((h.areas.len(), h.floors.len(), h.devices.len()), (20, 2, 500));
        let speaker = h.devices.iter().find(|d| d.id == "kitchen_speaker").unwrap();
        assert_eq!((speaker.domain.as_str(), speaker.aliases.as_slice()), ("media_player", &["Sonos".to_string()][..]));
        let blinds = h.devices.iter().find(|d| d.id == "attic_blinds").unwrap();
        assert_eq!((blinds.domain.as_str(), blinds.device_class.as_deref()), ("cover", Some("blind")));
    }
}
