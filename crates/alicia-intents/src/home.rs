//! The live lists the templates' `{name}`, `{area}` and `{floor}` refer to: the home's devices,
//! areas and floors, as the registry knows them now. A [`Home`] is plain data; [`HomeIndex`]
//! is built from it once per change (the ai_service rebuilds it when the inventory changes)
//! and answers "which names start at this word" exactly or fuzzily.

use std::collections::{BTreeMap, HashMap};

use crate::normalize::normalize_words;

/// An area (a room or location): "Kitchen", with aliases ("cuisine") and its floor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Area {
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub floor: Option<String>,
}

/// A floor: "Upstairs", "First Floor".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Floor {
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
}

/// A device the assistant can act on or ask about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Device {
    /// The registry's device id (`device_id:` destination).
    pub id: String,
    /// Spoken name: "Kitchen Speaker".
    pub name: String,
    pub aliases: Vec<String>,
    /// Area id.
    pub area: Option<String>,
    /// Home Assistant's domain for it: `light`, `switch`, `media_player`, `sensor`,
    /// `climate`, `cover`, `fan`, `lock`... ([`domain_for_device_type`] maps Alicia's device
    /// types). Templates require domains (`requires_context: domain: [light]`).
    pub domain: String,
    /// `temperature` for a temperature sensor, `curtain` for a cover...
    pub device_class: Option<String>,
    /// Registered capability names (`audio_playback`, `volume_control`, ...). Usable in
    /// templates as `requires_context: capability: [...]`.
    pub capabilities: Vec<String>,
}

/// Everything the live lists are made of.
#[derive(Debug, Clone, Default)]
pub struct Home {
    pub areas: Vec<Area>,
    pub floors: Vec<Floor>,
    pub devices: Vec<Device>,
    /// Other runtime lists a template may name (`{playlist}`): list name → values.
    pub lists: BTreeMap<String, Vec<String>>,
}

/// Home Assistant domain for an Alicia device type (the registry's `device_type`), for
/// registrations that do not say. Unknown types keep their own name as the domain.
pub fn domain_for_device_type(device_type: &str) -> &str {
    match device_type {
        "speaker" | "media_player" | "tv" | "television" | "radio" | "satellite" => "media_player",
        "light" | "lamp" | "bulb" | "dimmer" => "light",
        "switch" | "plug" | "outlet" | "relay" => "switch",
        "sensor" | "thermometer" | "temperature_sensor" | "humidity_sensor" => "sensor",
        "binary_sensor" | "motion_sensor" | "door_sensor" | "contact_sensor" => "binary_sensor",
        "thermostat" | "climate" | "heater" | "air_conditioner" => "climate",
        "blind" | "shade" | "shutter" | "curtain" | "cover" | "garage_door" => "cover",
        other => other,
    }
}

/// How an entry's text names its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameKind {
    /// The device's (area's) own name.
    Name,
    /// One of its aliases.
    Alias,
    /// Its name without its area's name: "speaker" for "Kitchen Speaker" in the kitchen, so
    /// "pause the speaker" finds it (and asks which one when several areas have one).
    Derived,
}

/// One target of an entry: an index into the home's devices (areas, floors) and how it is
/// named by this entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRef {
    pub index: u32,
    pub kind: NameKind,
}

/// A distinct normalised text of a list and everything it names.
#[derive(Debug, Clone)]
pub struct Entry {
    pub text: String,
    pub words: Vec<String>,
    /// As first written (case kept).
    pub display: String,
    pub refs: Vec<NameRef>,
}

/// A list of names with the indexes the matcher uses.
#[derive(Debug, Clone, Default)]
pub struct NameList {
    pub entries: Vec<Entry>,
    by_text: HashMap<String, u32>,
    /// First word → entries starting with it.
    by_first: HashMap<String, Vec<u32>>,
    /// Distinct first words by length in characters (fuzzy candidates are within ±2).
    first_by_len: HashMap<usize, Vec<String>>,
    /// The first two words run together ("livingroom") → entries.
    by_joined: HashMap<String, Vec<u32>>,
}

/// A list value found in an utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameHit {
    pub entry: u32,
    /// Byte offset in the normalised utterance where it ends.
    pub end: usize,
    /// Edits (Levenshtein, summed over words) between what was heard and the entry; 0 exact.
    pub edits: u32,
}

/// Most edits allowed in a word of this many characters: none below 4 ("on" is not "one"),
/// one up to 5, two from 6 ("sonnos" → "sonos" is one).
pub fn edit_budget(chars: usize) -> u32 {
    match chars {
        0..=3 => 0,
        4..=5 => 1,
        _ => 2,
    }
}

impl NameList {
    pub fn add(&mut self, text: &str, target: NameRef) {
        let norm = normalize_words(text);
        if norm.is_empty() {
            return;
        }
        let id = match self.by_text.get(&norm) {
            Some(&id) => id,
            None => {
                let id = self.entries.len() as u32;
                let words: Vec<String> = norm.split(' ').map(str::to_string).collect();
                self.by_first.entry(words[0].clone()).or_default().push(id);
                let first_len = words[0].chars().count();
                let firsts = self.first_by_len.entry(first_len).or_default();
                if !firsts.contains(&words[0]) {
                    firsts.push(words[0].clone());
                }
                if words.len() >= 2 {
                    self.by_joined.entry(format!("{}{}", words[0], words[1])).or_default().push(id);
                }
                self.entries.push(Entry {
                    text: norm.clone(),
                    words,
                    display: text.trim().to_string(),
                    refs: Vec::new(),
                });
                self.by_text.insert(norm, id);
                id
            }
        };
        let refs = &mut self.entries[id as usize].refs;
        if !refs.iter().any(|r| r.index == target.index) {
            refs.push(target);
        }
    }

    /// Entries whose text starts at byte `pos` of `text` (a word start) and ends at a word
    /// end, exactly.
    pub fn exact(&self, text: &str, pos: usize, out: &mut Vec<NameHit>) {
        let rest = &text[pos..];
        let first = rest.split(' ').next().unwrap_or("");
        if let Some(ids) = self.by_first.get(first) {
            for &id in ids {
                let e = &self.entries[id as usize].text;
                if rest.starts_with(e.as_str()) && (rest.len() == e.len() || rest.as_bytes()[e.len()] == b' ') {
                    out.push(NameHit { entry: id, end: pos + e.len(), edits: 0 });
                }
            }
        }
    }

    /// Entries that differ from the words at `pos` by a few edits per word (see
    /// [`edit_budget`]), or whose first two words were heard run together. Exact hits are not
    /// repeated here.
    pub fn fuzzy(&self, text: &str, pos: usize, out: &mut Vec<NameHit>) {
        let rest = &text[pos..];
        // Word start offsets within `rest`.
        let mut words: Vec<(usize, &str)> = Vec::new();
        let mut at = 0;
        for w in rest.split(' ') {
            words.push((at, w));
            at += w.len() + 1;
            if words.len() > 8 {
                break;
            }
        }
        let Some(&(_, heard0)) = words.first() else { return };
        let len0 = heard0.chars().count();
        for len in len0.saturating_sub(2)..=len0 + 2 {
            let Some(firsts) = self.first_by_len.get(&len) else { continue };
            for first in firsts {
                let budget = edit_budget(len);
                if len.abs_diff(len0) as u32 > budget {
                    continue;
                }
                let d0 = strsim::levenshtein(heard0, first) as u32;
                if d0 > budget {
                    continue;
                }
                for &id in &self.by_first[first] {
                    let entry = &self.entries[id as usize];
                    if entry.words.len() > words.len() {
                        continue;
                    }
                    let mut edits = d0;
                    let mut ok = true;
                    for (k, w) in entry.words.iter().enumerate().skip(1) {
                        let heard = words[k].1;
                        let d = strsim::levenshtein(heard, w) as u32;
                        if d > edit_budget(w.chars().count()) {
                            ok = false;
                            break;
                        }
                        edits += d;
                    }
                    if ok && edits > 0 {
                        let (last_at, last) = words[entry.words.len() - 1];
                        out.push(NameHit { entry: id, end: pos + last_at + last.len(), edits });
                    }
                }
            }
        }
        if let Some(ids) = self.by_joined.get(heard0) {
            for &id in ids {
                let entry = &self.entries[id as usize];
                // "livingroom lamp": the first heard word stands for two.
                let mut edits = 1;
                let mut ok = entry.words.len() - 1 <= words.len();
                for (k, w) in entry.words.iter().enumerate().skip(2) {
                    if !ok {
                        break;
                    }
                    let heard = words[k - 1].1;
                    let d = strsim::levenshtein(heard, w) as u32;
                    ok = d <= edit_budget(w.chars().count());
                    edits += d;
                }
                if ok {
                    let (last_at, last) = words[entry.words.len() - 2];
                    out.push(NameHit { entry: id, end: pos + last_at + last.len(), edits });
                }
            }
        }
    }

    /// The entries most like `heard` (for "did you mean"), best first, at most `n`, each at
    /// least half similar (normalised Levenshtein).
    pub fn closest(&self, heard: &str, n: usize) -> Vec<&Entry> {
        let mut scored: Vec<(f64, &Entry)> = self
            .entries
            .iter()
            .map(|e| (strsim::normalized_levenshtein(heard, &e.text), e))
            .filter(|(s, _)| *s >= 0.5)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(n).map(|(_, e)| e).collect()
    }
}

/// A [`Home`] with its name lists indexed.
#[derive(Debug, Clone, Default)]
pub struct HomeIndex {
    pub home: Home,
    pub names: NameList,
    pub areas: NameList,
    pub floors: NameList,
    pub extra: HashMap<String, NameList>,
    area_by_id: HashMap<String, u32>,
    floor_by_id: HashMap<String, u32>,
}

impl HomeIndex {
    pub fn new(home: Home) -> HomeIndex {
        let mut ix = HomeIndex::default();
        for (i, a) in home.areas.iter().enumerate() {
            ix.area_by_id.insert(a.id.clone(), i as u32);
            ix.areas.add(&a.name, NameRef { index: i as u32, kind: NameKind::Name });
        }
        for (i, a) in home.areas.iter().enumerate() {
            for alias in &a.aliases {
                ix.areas.add(alias, NameRef { index: i as u32, kind: NameKind::Alias });
            }
        }
        for (i, f) in home.floors.iter().enumerate() {
            ix.floor_by_id.insert(f.id.clone(), i as u32);
            ix.floors.add(&f.name, NameRef { index: i as u32, kind: NameKind::Name });
            for alias in &f.aliases {
                ix.floors.add(alias, NameRef { index: i as u32, kind: NameKind::Alias });
            }
        }
        // Names first, then aliases, then derived names, so an entry's display text is the
        // most direct way it is named.
        for (i, d) in home.devices.iter().enumerate() {
            ix.names.add(&d.name, NameRef { index: i as u32, kind: NameKind::Name });
        }
        for (i, d) in home.devices.iter().enumerate() {
            for alias in &d.aliases {
                ix.names.add(alias, NameRef { index: i as u32, kind: NameKind::Alias });
            }
        }
        for (i, d) in home.devices.iter().enumerate() {
            let Some(area) = d.area.as_ref().and_then(|a| ix.area_by_id.get(a)).map(|&a| &home.areas[a as usize])
            else {
                continue;
            };
            let name = normalize_words(&d.name);
            for area_name in std::iter::once(&area.name).chain(&area.aliases) {
                let an = normalize_words(area_name);
                if an.is_empty() {
                    continue;
                }
                let rest = name
                    .strip_prefix(&an)
                    .and_then(|r| r.strip_prefix(' '))
                    .or_else(|| name.strip_suffix(&an).and_then(|r| r.strip_suffix(' ')));
                if let Some(rest) = rest {
                    // "the kitchen's speaker" → "speaker"; a lone article is no name.
                    let rest = rest.trim_start_matches("'s ").trim();
                    if !rest.is_empty() && !matches!(rest, "the" | "my" | "our") {
                        ix.names.add(rest, NameRef { index: i as u32, kind: NameKind::Derived });
                    }
                }
            }
        }
        for (name, values) in &home.lists {
            let list = ix.extra.entry(name.clone()).or_default();
            for (i, v) in values.iter().enumerate() {
                list.add(v, NameRef { index: i as u32, kind: NameKind::Name });
            }
        }
        ix.home = home;
        ix
    }

    pub fn area(&self, id: &str) -> Option<&Area> {
        self.area_by_id.get(id).map(|&i| &self.home.areas[i as usize])
    }

    pub fn floor(&self, id: &str) -> Option<&Floor> {
        self.floor_by_id.get(id).map(|&i| &self.home.floors[i as usize])
    }

    /// The list a template's runtime list reference names.
    pub fn list(&self, name: &str) -> Option<&NameList> {
        match name {
            "name" => Some(&self.names),
            "area" => Some(&self.areas),
            "floor" => Some(&self.floors),
            other => self.extra.get(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> HomeIndex {
        let dev = |id: &str, name: &str, area: &str, domain: &str| Device {
            id: id.into(),
            name: name.into(),
            area: Some(area.into()),
            domain: domain.into(),
            ..Default::default()
        };
        HomeIndex::new(Home {
            areas: vec![
                Area { id: "kitchen".into(), name: "Kitchen".into(), ..Default::default() },
                Area {
                    id: "living".into(),
                    name: "Living Room".into(),
                    aliases: vec!["lounge".into()],
                    ..Default::default()
                },
            ],
            devices: vec![
                dev("sonos_kitchen", "Kitchen Sonos", "kitchen", "media_player"),
                dev("lamp", "Living Room Lamp", "living", "light"),
                dev("lamp2", "Reading Lamp", "living", "light"),
            ],
            ..Default::default()
        })
    }

    #[test]
    fn exact_names_end_at_word_ends() {
        let ix = home();
        let mut hits = Vec::new();
        ix.names.exact("kitchen sonos please", 0, &mut hits);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].end, "kitchen sonos".len());
        hits.clear();
        ix.names.exact("kitchen sonoss", 0, &mut hits);
        assert!(hits.is_empty());
    }

    #[test]
    fn derived_names_drop_the_area() {
        let ix = home();
        let mut hits = Vec::new();
        ix.names.exact("lamp", 0, &mut hits);
        let e = &ix.names.entries[hits[0].entry as usize];
        assert_eq!(e.refs, [NameRef { index: 1, kind: NameKind::Derived }]);
        hits.clear();
        ix.names.exact("sonos", 0, &mut hits);
        assert_eq!(hits.len(), 1);
    }

    #[test]
    fn fuzzy_names_within_budget() {
        let ix = home();
        let mut hits = Vec::new();
        ix.names.fuzzy("kitchen sonnos", 0, &mut hits);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].edits, 1);
        hits.clear();
        ix.names.fuzzy("reeding lamp on", 0, &mut hits);
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].end, "reeding lamp".len());
        hits.clear();
        ix.areas.fuzzy("livingroom", 0, &mut hits);
        assert_eq!(hits.len(), 1);
        hits.clear();
        // Short words must be exact.
        ix.names.fuzzy("lump", 0, &mut hits);
        assert_eq!(hits.len(), 1, "4 letters allow one edit: {hits:?}");
        hits.clear();
        ix.names.fuzzy("kettle", 0, &mut hits);
        assert!(hits.is_empty());
    }

    #[test]
    fn closest_suggestions() {
        let ix = home();
        let c = ix.names.closest("kitchen sono", 2);
        assert_eq!(c[0].display, "Kitchen Sonos");
    }
}
