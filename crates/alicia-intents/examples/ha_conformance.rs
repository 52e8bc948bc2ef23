//! Runs Home Assistant's own English test sentences through the matcher, as a developer's
//! check of how close it is to hassil (not part of the test suite: the test files live in
//! Home Assistant's intents repository, which is not a package).
//!
//! ```text
//! cargo run --release -p alicia-intents --example ha_conformance -- HA_JSON TESTS_DIR [-v]
//! ```
//! HA_JSON: `home_assistant_intents/data/en.json`; TESTS_DIR: the repository's `tests/en`.
//! Each file's entities, areas and floors become the home; the satellite's area is the one
//! the file marks `context_area: true`, else a sentinel area. A sentence passes when the
//! intent, the data block's `slot_combination` and the `name`/`area`/`floor` slots (by name)
//! are the expected ones. Version skew between the package and the repository fails some.

use std::collections::BTreeMap;
use std::path::Path;

use alicia_intents::{
    Area, Context, Device, Engine, Floor, Home, HomeIndex, IntentsData, Recognition, ResponseContext, Targets,
};
use serde_yaml_ng::Value;

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(|x| x.as_str()).map(str::to_string)
}

fn slug(n: &str) -> String {
    n.trim().to_lowercase().replace(' ', "_")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let verbose = args.iter().any(|a| a == "-v");
    let data = IntentsData::from_path(Path::new(&args[1])).expect("intents JSON");
    let engine = Engine::new(data).expect("compile");
    let mut totals: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut responses: BTreeMap<&str, u32> = BTreeMap::new();
    let mut dirs: Vec<_> = std::fs::read_dir(&args[2]).expect("tests dir").filter_map(|e| e.ok()).collect();
    dirs.sort_by_key(|e| e.path());
    for intent_dir in dirs {
        if !intent_dir.path().is_dir() {
            continue;
        }
        let intent = intent_dir.file_name().to_string_lossy().to_string();
        let mut files: Vec<_> = std::fs::read_dir(intent_dir.path()).unwrap().filter_map(|e| e.ok()).collect();
        files.sort_by_key(|e| e.path());
        for f in files {
            let combo = f.path().file_stem().unwrap().to_string_lossy().to_string();
            let doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(f.path()).unwrap()).unwrap();
            let seq = |k: &str| doc.get(k).and_then(|v| v.as_sequence()).cloned().unwrap_or_default();
            let floors: Vec<Floor> = seq("floors")
                .iter()
                .map(|f| {
                    let name = s(f, "name").unwrap();
                    Floor { id: slug(&name), name, aliases: vec![] }
                })
                .collect();
            let mut context_area = "__context_area__".to_string();
            let mut areas: Vec<Area> = seq("areas")
                .iter()
                .map(|a| {
                    let name = s(a, "name").unwrap();
                    if a.get("context_area").and_then(|v| v.as_bool()) == Some(true) {
                        context_area = slug(&name);
                    }
                    Area { id: slug(&name), name, aliases: vec![], floor: s(a, "floor").map(|f| slug(&f)) }
                })
                .collect();
            if context_area == "__context_area__" {
                areas.push(Area { id: context_area.clone(), name: context_area.clone(), ..Default::default() });
            }
            let devices: Vec<Device> = seq("entities")
                .iter()
                .map(|e| {
                    let name = s(e, "name").unwrap();
                    let domain = s(e, "domain").unwrap();
                    Device {
                        id: format!("{domain}.{}", slug(&name)),
                        name,
                        domain,
                        area: s(e, "area").map(|a| slug(&a)),
                        device_class: e.get("attributes").and_then(|a| s(a, "device_class")),
                        ..Default::default()
                    }
                })
                .collect();
            // Entity states for the responses: Home Assistant's `state` object.
            let mut states: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            for e in seq("entities") {
                let name = s(&e, "name").unwrap();
                let domain = s(&e, "domain").unwrap();
                let id = format!("{domain}.{}", slug(&name));
                let state = s(&e, "state").or_else(|| s(&e, "state_with_unit")).unwrap_or_default();
                let attributes: serde_json::Value = e
                    .get("attributes")
                    .map(|a| serde_json::to_value(a).unwrap_or_default())
                    .unwrap_or(serde_json::json!({}));
                let unit = attributes.get("unit_of_measurement").and_then(|u| u.as_str()).map(|u| format!(" {u}"));
                let with_unit =
                    s(&e, "state_with_unit").unwrap_or_else(|| format!("{state}{}", unit.unwrap_or_default()));
                states.insert(
                    id.clone(),
                    serde_json::json!({"entity_id": id, "domain": domain, "name": name, "state": state,
                                       "state_with_unit": with_unit, "attributes": attributes}),
                );
            }
            let home = HomeIndex::new(Home { areas, floors, devices, ..Default::default() });
            let ctx = Context::in_area(&context_area);
            for group in seq("tests") {
                let expected = group.get("slots").cloned().unwrap_or(Value::Null);
                let want_response = s(&group, "response");
                for sentence in group.get("sentences").and_then(|v| v.as_sequence()).cloned().unwrap_or_default() {
                    let sentence = sentence.as_str().unwrap().to_string();
                    let r = engine.recognize(&sentence, &home, &ctx);
                    let problem = match &r {
                        Recognition::NoMatch { .. } => Some("no match".to_string()),
                        Recognition::Match(m) => {
                            let got_combo = m.metadata.get("slot_combination").and_then(|v| v.as_str()).unwrap_or("");
                            let mut p = None;
                            if m.intent != intent || got_combo != combo {
                                p = Some(format!("got {} / {got_combo} ({})", m.intent, m.sentence.template));
                            } else {
                                for key in ["name", "area", "floor"] {
                                    let Some(want) = expected.get(key).and_then(|v| v.as_str()) else { continue };
                                    let got = match key {
                                        "area" => m.slots.get("area").map(|s| {
                                            home.area(s.value.as_str().unwrap_or(""))
                                                .map(|a| a.name.clone())
                                                .unwrap_or_default()
                                        }),
                                        "floor" => m.slots.get("floor").map(|s| {
                                            home.floor(s.value.as_str().unwrap_or(""))
                                                .map(|a| a.name.clone())
                                                .unwrap_or_default()
                                        }),
                                        _ => m.slot_str(key),
                                    };
                                    if got.as_deref().map(str::to_lowercase) != Some(want.to_lowercase()) {
                                        p = Some(format!(
                                            "slot {key}: got {got:?}, want {want:?} ({})",
                                            m.sentence.template
                                        ));
                                    }
                                }
                            }
                            if p.is_none() {
                                let source = engine.response_template(&m.intent, &m.response).unwrap_or("");
                                // Responses built from Home Assistant's own query results, timers
                                // and clock are not reproduced here.
                                let needs_ha = [
                                    "query.",
                                    "slots.timers",
                                    "slots.time",
                                    "slots.date",
                                    "slots.canceled",
                                    "slots.media",
                                ]
                                .iter()
                                .any(|k| source.contains(k));
                                // Home Assistant's test renders the named entity's state even when
                                // it is not in the area said (the files give entities no area).
                                let by_name = m.slots.get("name").and_then(|n| {
                                    states.values().find(|st| {
                                        st["name"].as_str().map(str::to_lowercase)
                                            == n.value.as_str().map(str::to_lowercase)
                                    })
                                });
                                let state = match &m.targets {
                                    Targets::Devices { devices } if devices.len() == 1 => {
                                        states.get(&devices[0].device_id).cloned()
                                    }
                                    // ... and the file's only entity when none is in the context area.
                                    _ => by_name.cloned().or_else(|| {
                                        (states.len() == 1).then(|| states.values().next().cloned()).flatten()
                                    }),
                                };
                                let extra = ResponseContext { state, ..Default::default() };
                                let got = engine.respond(m, &extra).unwrap_or_else(|e| format!("ERROR {e}"));
                                *responses.entry(if needs_ha { "skipped" } else { "checked" }).or_default() += 1;
                                if let (false, Some(want)) = (needs_ha, &want_response) {
                                    if got.trim() != want.trim() {
                                        *responses.entry("wrong").or_default() += 1;
                                        if verbose {
                                            println!(
                                                "RESPONSE {intent}/{combo}: {sentence:?}: got {got:?}, want {want:?}"
                                            );
                                        }
                                    }
                                }
                            }
                            p
                        }
                    };
                    let t = totals.entry(intent.clone()).or_default();
                    t.0 += 1;
                    match problem {
                        None => t.1 += 1,
                        Some(p) if verbose => println!("FAIL {intent}/{combo}: {sentence:?}: {p}"),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    let (mut all, mut ok) = (0, 0);
    for (intent, (n, p)) in &totals {
        println!("{intent:32} {p:4}/{n:4}");
        all += n;
        ok += p;
    }
    println!("total {ok}/{all} ({:.1} %)", 100.0 * f64::from(ok) / f64::from(all));
    println!("responses: {responses:?}");
}
