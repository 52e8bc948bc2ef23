//! From a parse to an intent match: slots from the captures, the data block's fixed slots,
//! `requires_context`/`excludes_context` checked (the satellite's area copied into `area`
//! when the block asks for it, the name's devices filtered by domain), the devices resolved
//! (by name, preferring the satellite's area; or every device of the domain in the area), and
//! a ranking key.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::compile::{Block, ListKind, Program};
use crate::home::{Device, HomeIndex, NameKind};
use crate::matcher::{CapValue, Raw};
use crate::normalize::Normalized;
use crate::result::{FuzzyName, IntentMatch, SentenceRef, Slot, SlotSource, Target, Targets};
use crate::Context;

/// What Home Assistant's intent handlers act on, which its sentence data does not say: the
/// domains an intent's devices are in, and the capability that makes a device the better
/// candidate (Alicia's registry names capabilities). `None`: the intent acts on no device
/// unless a name was heard.
pub fn intent_devices(intent: &str) -> Option<(&'static [&'static str], Option<&'static str>)> {
    const ANY: &[&str] = &[];
    const MEDIA: &[&str] = &["media_player"];
    Some(match intent {
        "HassTurnOn" | "HassTurnOff" | "HassToggle" | "HassGetState" => (ANY, None),
        "HassLightSet" => (&["light"], None),
        "HassSetVolume" | "HassSetVolumeRelative" | "HassMediaPlayerMute" | "HassMediaPlayerUnmute" => {
            (MEDIA, Some("volume_control"))
        }
        "HassMediaPause" | "HassMediaUnpause" | "HassMediaNext" | "HassMediaPrevious" | "HassMediaSearchAndPlay" => {
            (MEDIA, Some("audio_playback"))
        }
        "AliciaAnnounce" => (MEDIA, Some("audio_playback")),
        // Temperature sensors answer too (see `fits`).
        "HassClimateGetTemperature" => (&["climate", "sensor"], None),
        "HassClimateSetTemperature" | "HassClimateSetFanMode" => (&["climate"], None),
        "HassFanSetSpeed" => (&["fan"], None),
        "HassSetPosition" => (&["cover", "valve"], None),
        "HassVacuumStart" | "HassVacuumReturnToBase" | "HassVacuumCleanArea" => (&["vacuum"], None),
        "HassLawnMowerStartMowing" | "HassLawnMowerDock" => (&["lawn_mower"], None),
        "HassGetWeather" => (&["weather"], None),
        _ => return None,
    })
}

/// Intents whose area says where to act, not where the named device is ("clean the living
/// room with Rover").
const AREA_IS_A_PARAMETER: &[&str] = &["HassVacuumCleanArea"];

/// Intent-specific fit beyond the domain: only temperature sensors tell the temperature.
fn fits(intent: &str, d: &Device) -> bool {
    match intent {
        "HassClimateGetTemperature" => d.domain != "sensor" || d.device_class.as_deref() == Some("temperature"),
        _ => true,
    }
}

/// Ranking key, lower is better: fewer edits, something to act on (a name heard but not in the
/// area said loses to the area's devices: "the lamp in the lounge"), a longer name (Home
/// Assistant prefers parses with an entity name), fewer wildcards, more literal text, less
/// wildcard text, the literal utterance before one with skip words removed, then data order.
pub(crate) type Rank = (u32, u32, i64, u32, i64, u32, u32, u32);

pub(crate) struct Interpreted {
    pub m: IntentMatch,
    pub rank: Rank,
}

/// Checks a context requirement value against one actual value: null = anything, a string, or
/// a list of strings.
fn value_fits(required: &Value, actual: &str) -> bool {
    match required {
        Value::Null => true,
        Value::String(s) => s == actual,
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(actual)),
        Value::Bool(b) => *b,
        other => value_text(other) == actual,
    }
}

/// `{value: ..., slot: true|"name"}` → (value, slot to copy into).
fn unpack(v: &Value, key: &str) -> (Value, Option<String>) {
    match v {
        Value::Object(o) => {
            let value = o.get("value").cloned().unwrap_or(Value::Null);
            let slot = match o.get("slot") {
                Some(Value::Bool(true)) => Some(key.to_string()),
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            };
            (value, slot)
        }
        other => (other.clone(), None),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn interpret(
    prog: &Program,
    home: &HomeIndex,
    ctx: &Context,
    norm: &Normalized,
    raw: &Raw,
    variant: u32,
) -> Option<Interpreted> {
    let sentence = &prog.sentences[raw.sentence as usize];
    let Block { intent, source, index, data } = &prog.blocks[sentence.block as usize];
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    let mut captures = BTreeMap::new();
    let mut fuzzy = Vec::new();
    let mut static_context: BTreeMap<String, Value> = BTreeMap::new();
    let mut name_devices: Option<(String, Vec<(u32, NameKind)>)> = None;
    let mut spoken_areas: Vec<u32> = Vec::new();
    let mut spoken_floors: Vec<String> = Vec::new();
    let (mut edits, mut wildcards, mut wildcard_len, mut name_len) = (0u32, 0u32, 0u32, 0i64);

    for cap in &raw.caps {
        let slot_name = &prog.slots[cap.slot as usize];
        let (start, end) = (cap.start as usize, cap.end as usize);
        let heard = norm.text[start..end].to_string();
        let list = &prog.lists[cap.list as usize];
        let mut display = None;
        let (value, text) = match (&list.kind, cap.value) {
            (ListKind::Values(values), CapValue::Static(i)) => {
                let v = &values[i as usize];
                static_context.extend(v.context.clone());
                (v.value.clone(), heard)
            }
            (ListKind::Range(spec), CapValue::Number(n)) => (spec.value(n)?, heard),
            (ListKind::Wildcard, CapValue::Wildcard) => {
                wildcards += 1;
                wildcard_len += (end - start) as u32;
                let original = norm.original_span(start, end);
                (Value::from(original.clone()), original)
            }
            (ListKind::Runtime(list_name), CapValue::Name { entry, edits: e }) => {
                let names = home.list(list_name)?;
                let entry = &names.entries[entry as usize];
                edits += e;
                if e > 0 {
                    fuzzy.push(FuzzyName {
                        slot: slot_name.clone(),
                        heard: heard.clone(),
                        matched: entry.display.clone(),
                        edits: e,
                    });
                }
                match list_name.as_str() {
                    "name" => {
                        name_len += entry.text.len() as i64;
                        // A question back names what was matched ("Which lamp"), not what was misheard
                        // ("Which ramp").
                        name_devices =
                            Some((entry.text.clone(), entry.refs.iter().map(|r| (r.index, r.kind)).collect()));
                        display = Some(entry.display.clone());
                        (Value::from(entry.display.clone()), heard)
                    }
                    "area" => {
                        spoken_areas = entry.refs.iter().map(|r| r.index).collect();
                        let area = &home.home.areas[entry.refs[0].index as usize];
                        display = Some(area.name.clone());
                        (Value::from(area.id.clone()), heard)
                    }
                    "floor" => {
                        spoken_floors =
                            entry.refs.iter().map(|r| home.home.floors[r.index as usize].id.clone()).collect();
                        display = Some(home.home.floors[entry.refs[0].index as usize].name.clone());
                        (Value::from(spoken_floors[0].clone()), heard)
                    }
                    _ => (Value::from(entry.display.clone()), heard),
                }
            }
            _ => return None,
        };
        if cap.capture {
            captures.insert(slot_name.clone(), text);
        } else {
            slots.insert(slot_name.clone(), Slot { value, text, display, source: SlotSource::Spoken });
        }
    }
    for (k, v) in &data.slots {
        slots.entry(k.clone()).or_insert_with(|| Slot {
            value: v.clone(),
            text: value_text(v),
            display: None,
            source: SlotSource::Fixed,
        });
    }

    // The name's candidate devices, filtered as the context rules say.
    let mut devices: Option<Vec<(u32, NameKind)>> = name_devices.as_ref().map(|(_, d)| d.clone());
    let device_attr = |d: &Device, key: &str| -> Option<Vec<String>> {
        match key {
            "domain" => Some(vec![d.domain.clone()]),
            "device_class" => Some(d.device_class.iter().cloned().collect()),
            "capability" => Some(d.capabilities.clone()),
            _ => None,
        }
    };
    let context_area = ctx.area.as_ref().and_then(|id| home.area(id));
    for (key, req) in &data.requires_context {
        let (required, copy_to) = unpack(req, key);
        if let (Some(devs), true) = (devices.as_mut(), matches!(key.as_str(), "domain" | "device_class" | "capability"))
        {
            devs.retain(|&(i, _)| {
                let d = &home.home.devices[i as usize];
                device_attr(d, key).unwrap_or_default().iter().any(|a| value_fits(&required, a))
            });
            if devs.is_empty() {
                return None;
            }
            continue;
        }
        if key == "area" {
            if !spoken_areas.is_empty() {
                continue;
            }
            let area = context_area?;
            if !value_fits(&required, &area.id) && !value_fits(&required, &area.name) {
                return None;
            }
            if let Some(slot) = copy_to {
                slots.entry(slot).or_insert(Slot {
                    value: Value::from(area.id.clone()),
                    text: area.name.clone(),
                    display: Some(area.name.clone()),
                    source: SlotSource::Context,
                });
            }
            continue;
        }
        let actual = static_context.get(key).map(value_text).or_else(|| ctx.values.get(key).cloned())?;
        if !value_fits(&required, &actual) {
            return None;
        }
        if let Some(slot) = copy_to {
            slots.entry(slot).or_insert(Slot {
                value: Value::from(actual.clone()),
                text: actual,
                display: None,
                source: SlotSource::Context,
            });
        }
    }
    for (key, excluded) in &data.excludes_context {
        let (excluded, _) = unpack(excluded, key);
        if let (Some(devs), true) = (devices.as_mut(), matches!(key.as_str(), "domain" | "device_class" | "capability"))
        {
            devs.retain(|&(i, _)| {
                let d = &home.home.devices[i as usize];
                !device_attr(d, key).unwrap_or_default().iter().any(|a| value_fits(&excluded, a))
            });
            if devs.is_empty() {
                return None;
            }
            continue;
        }
        let actual = match key.as_str() {
            "area" => context_area.map(|a| a.id.clone()),
            _ => static_context.get(key).map(value_text).or_else(|| ctx.values.get(key).cloned()),
        };
        if actual.is_some_and(|a| value_fits(&excluded, &a)) {
            return None;
        }
    }

    let targets = resolve_targets(home, ctx, intent, &slots, devices, &spoken_areas, &spoken_floors, &name_devices)?;

    // A short name made by dropping another room's name ("light" for the kitchen's "Kitchen
    // Light") heard on a satellite elsewhere means the light here: such a parse ranks as one
    // with nothing to act on, below the satellite's area's devices.
    let derived_elsewhere = match (&name_devices, &ctx.area, &targets) {
        (Some((_, refs)), Some(here), Targets::Devices { devices })
            if spoken_areas.is_empty() && refs.iter().all(|&(_, k)| k == NameKind::Derived) =>
        {
            !devices.is_empty() && devices.iter().all(|d| d.area_id.as_ref() != Some(here))
        }
        _ => false,
    };
    let nothing =
        u32::from(matches!(&targets, Targets::Devices { devices } if devices.is_empty()) || derived_elsewhere);
    let rank: Rank = (edits, nothing, -name_len, wildcards, -(raw.literal as i64), wildcard_len, variant, raw.sentence);
    let m = IntentMatch {
        intent: intent.clone(),
        slots,
        captures,
        targets,
        sentence: SentenceRef {
            source: source.0.clone(),
            intent: intent.clone(),
            block: *index,
            sentence: sentence.index as usize,
            template: sentence.template.clone(),
        },
        response: data.response.clone().unwrap_or_else(|| "default".to_string()),
        metadata: data.metadata.clone(),
        fuzzy,
    };
    Some(Interpreted { m, rank })
}

fn target(home: &HomeIndex, i: u32) -> Target {
    let d = &home.home.devices[i as usize];
    let area = d.area.as_ref().and_then(|a| home.area(a));
    Target {
        device_id: d.id.clone(),
        name: d.name.clone(),
        domain: d.domain.clone(),
        area_id: d.area.clone(),
        area_name: area.map(|a| a.name.clone()),
    }
}

#[allow(clippy::too_many_arguments)]
fn resolve_targets(
    home: &HomeIndex,
    ctx: &Context,
    intent: &str,
    slots: &BTreeMap<String, Slot>,
    name_devices: Option<Vec<(u32, NameKind)>>,
    spoken_areas: &[u32],
    spoken_floors: &[String],
    heard_name: &Option<(String, Vec<(u32, NameKind)>)>,
) -> Option<Targets> {
    let table = intent_devices(intent);
    // Domains: the block's fixed `domain` slot, else the intent's.
    let fixed_domains: Option<Vec<String>> = slots.get("domain").map(|s| match &s.value {
        Value::Array(a) => a.iter().map(value_text).collect(),
        v => vec![value_text(v)],
    });
    let domains: Vec<String> =
        fixed_domains.or_else(|| table.map(|(d, _)| d.iter().map(|s| s.to_string()).collect())).unwrap_or_default();
    let device_class = slots.get("device_class").map(|s| value_text(&s.value));
    let capability = table.and_then(|(_, c)| c);
    let area_ids: Vec<&str> = spoken_areas.iter().map(|&i| home.home.areas[i as usize].id.as_str()).collect();
    let in_floor = |d: &Device| {
        d.area
            .as_ref()
            .and_then(|a| home.area(a))
            .and_then(|a| a.floor.as_ref())
            .is_some_and(|f| spoken_floors.contains(f))
    };
    let fit = |d: &Device| {
        (domains.is_empty() || domains.contains(&d.domain))
            && device_class.as_ref().is_none_or(|c| d.device_class.as_ref() == Some(c))
            && fits(intent, d)
    };

    if let Some(mut devs) = name_devices {
        // A name of the wrong kind is no parse ("turn on" a sensor); a name not in the area
        // said is a parse with nothing to act on ("no device called X in the kitchen").
        devs.retain(|&(i, _)| fit(&home.home.devices[i as usize]));
        if devs.is_empty() {
            return None;
        }
        if !AREA_IS_A_PARAMETER.contains(&intent) {
            devs.retain(|&(i, _)| {
                let d = &home.home.devices[i as usize];
                (area_ids.is_empty() || d.area.as_deref().is_some_and(|a| area_ids.contains(&a)))
                    && (spoken_floors.is_empty() || in_floor(d))
            });
        }
        if devs.is_empty() {
            return Some(Targets::Devices { devices: vec![] });
        }
        if devs.len() > 1 {
            if let Some(here) = &ctx.area {
                let local: Vec<_> = devs
                    .iter()
                    .copied()
                    .filter(|&(i, _)| home.home.devices[i as usize].area.as_ref() == Some(here))
                    .collect();
                if !local.is_empty() {
                    devs = local;
                }
            }
        }
        if devs.len() > 1 {
            let direct: Vec<_> = devs.iter().copied().filter(|&(_, k)| k != NameKind::Derived).collect();
            if direct.len() == 1 {
                devs = direct;
            }
        }
        if devs.len() > 1 {
            if let Some(cap) = capability {
                let able: Vec<_> = devs
                    .iter()
                    .copied()
                    .filter(|&(i, _)| home.home.devices[i as usize].capabilities.iter().any(|c| c == cap))
                    .collect();
                if able.len() == 1 {
                    devs = able;
                }
            }
        }
        if devs.len() > 1 {
            let heard = heard_name.as_ref().map(|(h, _)| h.clone()).unwrap_or_default();
            return Some(Targets::Ambiguous {
                heard,
                candidates: devs.iter().map(|&(i, _)| target(home, i)).collect(),
            });
        }
        return Some(Targets::Devices { devices: devs.iter().map(|&(i, _)| target(home, i)).collect() });
    }

    // No name: the intent's devices in the area (spoken, or the satellite's when the block
    // copied it into `area`), on the floor, or in the whole home.
    let acts_on_devices = table.is_some() || slots.contains_key("domain") || device_class.is_some();
    if !acts_on_devices {
        return Some(Targets::None);
    }
    let area_slot = slots.get("area").map(|s| value_text(&s.value));
    let mut out: Vec<u32> = Vec::new();
    for (i, d) in home.home.devices.iter().enumerate() {
        let place = match (&area_slot, spoken_floors.is_empty()) {
            (Some(a), _) => d.area.as_ref() == Some(a),
            (None, false) => in_floor(d),
            (None, true) => true,
        };
        if place && fit(d) {
            out.push(i as u32);
        }
    }
    if let Some(cap) = capability {
        let able: Vec<u32> = out
            .iter()
            .copied()
            .filter(|&i| home.home.devices[i as usize].capabilities.iter().any(|c| c == cap))
            .collect();
        if !able.is_empty() {
            out = able;
        }
    }
    Some(Targets::Devices { devices: out.into_iter().map(|i| target(home, i)).collect() })
}
