//! What recognition answers: the intent, its slots, the devices it is about (or the
//! candidates to ask about), which sentence matched, or the closest near misses.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Where a slot's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotSource {
    /// Heard in the utterance.
    Spoken,
    /// Fixed by the matched data block (`slots: {domain: light}`).
    Fixed,
    /// From the context: the satellite's area when the utterance named none.
    Context,
}

/// A slot: its value (a list's `out`, a number, an area id, a device name) and the text heard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slot {
    pub value: Value,
    /// What was heard (normalised; a wildcard keeps the original case); for a context or fixed
    /// slot, the area's name or the value as text.
    pub text: String,
    /// The name of what the value refers to: the area's or floor's name for an area id, the
    /// device's name. Responses say this.
    pub display: Option<String>,
    pub source: SlotSource,
}

/// A device a matched intent is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub device_id: String,
    pub name: String,
    pub domain: String,
    pub area_id: Option<String>,
    pub area_name: Option<String>,
}

/// The devices of a match.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Targets {
    /// The intent acts on no device (timers, never mind, broadcast, the time).
    None,
    /// These devices (possibly none: "turn on the lights in the garage" with no light
    /// there; [`IntentMatch::error_key`] says which error to speak).
    Devices { devices: Vec<Target> },
    /// A name heard fits several devices and the context did not decide: ask back
    /// ([`IntentMatch::clarification`]).
    Ambiguous { heard: String, candidates: Vec<Target> },
}

/// Which template matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentenceRef {
    /// The file it came from (`home-assistant-intents en` or `alicia-en`).
    pub source: String,
    pub intent: String,
    /// Index of the data block within the intent (counting all merged files), and of the
    /// sentence within it.
    pub block: usize,
    pub sentence: usize,
    pub template: String,
}

/// A name that was heard fuzzily.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FuzzyName {
    pub slot: String,
    pub heard: String,
    pub matched: String,
    pub edits: u32,
}

/// A recognised intent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentMatch {
    pub intent: String,
    pub slots: BTreeMap<String, Slot>,
    /// Captures (`{list:@name}`): text for the response, not slots.
    pub captures: BTreeMap<String, String>,
    pub targets: Targets,
    pub sentence: SentenceRef,
    /// Key of the response template (`default`, `lights_area`, ...).
    pub response: String,
    pub metadata: BTreeMap<String, Value>,
    /// Names matched within a few edits rather than exactly.
    pub fuzzy: Vec<FuzzyName>,
}

/// A sentence that almost matched: everything but one or two names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NearMiss {
    pub intent: String,
    pub sentence: SentenceRef,
    /// Slot (`name`, `area`, `floor`) → what was heard there.
    pub unknown: BTreeMap<String, String>,
    /// For each unknown slot, the known names most like it, best first.
    pub suggestions: BTreeMap<String, Vec<String>>,
}

/// The outcome of recognising one utterance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Recognition {
    Match(Box<IntentMatch>),
    /// No sentence matched; the closest near misses, best first (possibly none).
    NoMatch {
        closest: Vec<NearMiss>,
    },
}

impl Recognition {
    pub fn matched(&self) -> Option<&IntentMatch> {
        match self {
            Recognition::Match(m) => Some(m),
            Recognition::NoMatch { .. } => None,
        }
    }
}

impl IntentMatch {
    /// A slot's value as text (numbers as digits).
    pub fn slot_str(&self, name: &str) -> Option<String> {
        self.slots.get(name).map(|s| match &s.value {
            Value::String(v) => v.clone(),
            other => other.to_string(),
        })
    }

    /// The device ids acted on, when resolved.
    pub fn device_ids(&self) -> Vec<&str> {
        match &self.targets {
            Targets::Devices { devices } => devices.iter().map(|d| d.device_id.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// The question to ask back when a name fits several devices: "Which speaker: kitchen or
    /// bedroom?" (by area when the areas tell them apart, else by name).
    pub fn clarification(&self) -> Option<String> {
        let Targets::Ambiguous { heard, candidates } = &self.targets else { return None };
        let mut areas: Vec<String> = candidates.iter().filter_map(|c| c.area_name.clone()).collect();
        areas.dedup();
        let distinct_areas = {
            let mut a = areas.clone();
            a.sort();
            a.dedup();
            a.len() == candidates.len() && areas.len() == candidates.len()
        };
        let options: Vec<String> = if distinct_areas {
            areas.iter().map(|a| a.to_lowercase()).collect()
        } else {
            candidates.iter().map(|c| c.name.clone()).collect()
        };
        if options.len() > 4 {
            // Twenty rooms are no question to listen to: name three, count the rest.
            return Some(format!(
                "Which {heard}? There are {}: {} and {} more.",
                options.len(),
                options[..3].join(", "),
                options.len() - 3
            ));
        }
        Some(format!("Which {heard}: {}?", or_list(&options)))
    }

    /// The error response key (in `responses.errors`) when the match found nothing to act on.
    pub fn error_key(&self) -> Option<&'static str> {
        let Targets::Devices { devices } = &self.targets else { return None };
        if !devices.is_empty() {
            return None;
        }
        let spoken_area = self.slots.contains_key("area");
        let floor = self.slots.contains_key("floor");
        let class = self.slots.contains_key("device_class");
        if self.slots.contains_key("name") {
            return Some(match (spoken_area, floor) {
                (true, _) => "no_entity_in_area",
                (false, true) => "no_entity_in_floor",
                (false, false) => "no_entity",
            });
        }
        Some(match (class, spoken_area, floor) {
            (true, true, _) => "no_device_class_in_area",
            (true, _, true) => "no_device_class_in_floor",
            (true, false, false) => "no_device_class",
            (false, true, _) => "no_domain_in_area",
            (false, _, true) => "no_domain_in_floor",
            (false, false, false) => "no_domain",
        })
    }
}

/// "a", "a or b", "a, b or c".
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ambiguous(areas: &[&str]) -> IntentMatch {
        IntentMatch {
            intent: "HassMediaPause".into(),
            slots: BTreeMap::new(),
            captures: BTreeMap::new(),
            targets: Targets::Ambiguous {
                heard: "speaker".into(),
                candidates: areas
                    .iter()
                    .map(|a| Target {
                        device_id: format!("{a}_speaker"),
                        name: format!("{a} Speaker"),
                        domain: "media_player".into(),
                        area_id: Some(a.to_lowercase()),
                        area_name: Some(a.to_string()),
                    })
                    .collect(),
            },
            sentence: SentenceRef {
                source: "x".into(),
                intent: "HassMediaPause".into(),
                block: 0,
                sentence: 0,
                template: String::new(),
            },
            response: "default".into(),
            metadata: BTreeMap::new(),
            fuzzy: vec![],
        }
    }

    #[test]
    fn clarifications() {
        assert_eq!(ambiguous(&["Kitchen", "Bedroom"]).clarification().unwrap(), "Which speaker: kitchen or bedroom?");
        assert_eq!(
            ambiguous(&["Kitchen", "Bedroom", "Office"]).clarification().unwrap(),
            "Which speaker: kitchen, bedroom or office?"
        );
        assert_eq!(
            ambiguous(&["A", "B", "C", "D", "E"]).clarification().unwrap(),
            "Which speaker? There are 5: a, b, c and 2 more."
        );
        // Two in one room: by name.
        let mut m = ambiguous(&["Kitchen", "Kitchen"]);
        if let Targets::Ambiguous { candidates, .. } = &mut m.targets {
            candidates[1].name = "Kitchen Radio".into();
        }
        assert_eq!(m.clarification().unwrap(), "Which speaker: Kitchen Speaker or Kitchen Radio?");
    }
}
