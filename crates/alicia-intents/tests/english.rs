//! Utterances against Home Assistant's real English data (fetched by `common`, never
//! committed) plus Alicia's own sentences, in a small home (`common::home`).

mod common;

use std::sync::OnceLock;

use alicia_intents::{Context, Engine, HomeIndex, IntentMatch, Recognition, ResponseContext, SlotSource, Targets};
use serde_json::{json, Value};

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::with_alicia_sentences(&common::ha_json("en"), "home-assistant-intents en").expect("English compiles")
    })
}

fn home() -> &'static HomeIndex {
    static HOME: OnceLock<HomeIndex> = OnceLock::new();
    HOME.get_or_init(common::home)
}

fn ctx(area: Option<&str>) -> Context {
    area.map(Context::in_area).unwrap_or_default()
}

fn recognize(utterance: &str, area: Option<&str>) -> Recognition {
    engine().recognize(utterance, home(), &ctx(area))
}

fn matched(utterance: &str, area: Option<&str>) -> IntentMatch {
    match recognize(utterance, area) {
        Recognition::Match(m) => *m,
        Recognition::NoMatch { closest } => {
            panic!("{utterance:?} (area {area:?}) did not match; closest: {closest:#?}")
        }
    }
}

/// (utterance, satellite area, intent, expected slots (name → value), device ids)
type Case = (&'static str, Option<&'static str>, &'static str, Value, &'static [&'static str]);

fn check(cases: &[Case]) {
    let mut failures = Vec::new();
    for (utterance, area, intent, slots, devices) in cases {
        let r = recognize(utterance, *area);
        let Recognition::Match(m) = r else {
            failures.push(format!("{utterance:?}: no match"));
            continue;
        };
        let mut problems = Vec::new();
        if m.intent != *intent {
            problems.push(format!("intent {} (sentence {:?})", m.intent, m.sentence.template));
        }
        for (k, want) in slots.as_object().expect("slots object") {
            let got = m.slots.get(k).map(|s| &s.value);
            if got != Some(want) {
                problems.push(format!("slot {k} = {got:?}, want {want}"));
            }
        }
        let ids = m.device_ids();
        if ids != *devices {
            problems.push(format!("devices {ids:?} (targets {:?}), want {devices:?}", m.targets));
        }
        if !problems.is_empty() {
            failures.push(format!("{utterance:?} [{}]: {}", m.sentence.template, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn device_control() {
    check(&[
        (
            "turn on the kitchen ceiling light",
            None,
            "HassTurnOn",
            json!({"name": "Kitchen Ceiling Light"}),
            &["light_kitchen_ceiling"],
        ),
        ("switch off the coffee maker", None, "HassTurnOff", json!({"name": "Coffee Maker"}), &["switch_coffee"]),
        (
            "turn off the lights in the bedroom",
            None,
            "HassTurnOff",
            json!({"area": "bedroom", "domain": "light"}),
            &["lamp_bedroom"],
        ),
        (
            "turn on the lights upstairs",
            None,
            "HassTurnOn",
            json!({"floor": "upstairs", "domain": "light"}),
            &["lamp_bedroom", "lamp_office"],
        ),
        // An area alias; "lamp" is a light word here, not the bedroom lamp's short name.
        ("turn on the lamp in the lounge", None, "HassTurnOn", json!({"area": "living_room"}), &["lamp_living"]),
        (
            "set the reading lamp to 50%",
            None,
            "HassLightSet",
            json!({"name": "Reading Lamp", "brightness": 50}),
            &["lamp_living"],
        ),
        (
            "set the reading lamp brightness to seventy five percent",
            None,
            "HassLightSet",
            json!({"brightness": 75}),
            &["lamp_living"],
        ),
        (
            "set the brightness to 20 percent",
            Some("living_room"),
            "HassLightSet",
            json!({"area": "living_room", "brightness": 20}),
            &["lamp_living"],
        ),
        ("turn on the ceiling fan", None, "HassTurnOn", json!({"name": "Ceiling Fan"}), &["fan_bedroom"]),
        ("open the living room blinds", None, "HassTurnOn", json!({"name": "Living Room Blinds"}), &["blinds_living"]),
    ]);
}

#[test]
fn area_from_the_satellite() {
    check(&[
        // No area said: the satellite's, as Home Assistant's context area.
        (
            "turn on the lights",
            Some("kitchen"),
            "HassTurnOn",
            json!({"area": "kitchen", "domain": "light"}),
            &["light_kitchen_ceiling", "light_kitchen_counter"],
        ),
        ("lights off", Some("bedroom"), "HassTurnOff", json!({"area": "bedroom"}), &["lamp_bedroom"]),
        // A spoken area wins over the satellite's.
        (
            "turn off the lights in the office",
            Some("kitchen"),
            "HassTurnOff",
            json!({"area": "office"}),
            &["lamp_office"],
        ),
        // Media intents act on players with the capability (the speaker, not the satellite).
        (
            "set the volume to 30",
            Some("kitchen"),
            "HassSetVolume",
            json!({"area": "kitchen", "volume_level": 30}),
            &["speaker_kitchen"],
        ),
        (
            "turn up the volume by 10 percent",
            Some("bedroom"),
            "HassSetVolumeRelative",
            json!({"volume_step": 10}),
            &["speaker_bedroom"],
        ),
        ("volume down", Some("living_room"), "HassSetVolumeRelative", json!({"volume_step": "down"}), &["tv_living"]),
        ("pause", Some("bedroom"), "HassMediaPause", json!({"area": "bedroom"}), &["speaker_bedroom"]),
        ("resume the music", Some("bedroom"), "HassMediaUnpause", json!({}), &["speaker_bedroom"]),
        ("skip this song", Some("living_room"), "HassMediaNext", json!({}), &["tv_living"]),
        (
            "what's the temperature",
            Some("living_room"),
            "HassClimateGetTemperature",
            json!({"area": "living_room"}),
            &["thermostat"],
        ),
        // A short name resolved in the satellite's area.
        ("pause the speaker", Some("kitchen"), "HassMediaPause", json!({"name": "speaker"}), &["speaker_kitchen"]),
        // Another room's short name ("ceiling light" of the kitchen's) still names it when
        // nothing in the satellite's room fits (alicia-assistant's tests: when the room has a
        // light, "turn off the light" is that one).
        ("turn off the ceiling light", Some("bedroom"), "HassTurnOff", json!({}), &["light_kitchen_ceiling"]),
    ]);
    let m = matched("turn on the lights", Some("kitchen"));
    assert_eq!(m.slots["area"].source, SlotSource::Context);
    assert_eq!(m.slots["area"].display.as_deref(), Some("Kitchen"));
    assert_eq!(m.slots["domain"].source, SlotSource::Fixed);
    // Without a satellite area, "turn on the lights" says nothing about where.
    assert!(recognize("turn on the lights", None).matched().is_none());
}

#[test]
fn media_volume_and_announcements() {
    check(&[
        (
            "set the bedroom speaker volume to twenty five",
            None,
            "HassSetVolume",
            json!({"name": "Bedroom Speaker", "volume_level": 25}),
            &["speaker_bedroom"],
        ),
        (
            "set the volume to a hundred percent",
            Some("kitchen"),
            "HassSetVolume",
            json!({"volume_level": 100}),
            &["speaker_kitchen"],
        ),
        (
            "turn the volume down in the kitchen",
            None,
            "HassSetVolumeRelative",
            json!({"area": "kitchen", "volume_step": "down"}),
            &["speaker_kitchen"],
        ),
        (
            "turn the kitchen speaker down",
            None,
            "HassSetVolumeRelative",
            json!({"name": "Kitchen Speaker", "volume_step": "down"}),
            &["speaker_kitchen"],
        ),
        (
            "make the bedroom speaker louder",
            None,
            "HassSetVolumeRelative",
            json!({"volume_step": "up"}),
            &["speaker_bedroom"],
        ),
        (
            "play jazz on the bedroom speaker",
            None,
            "HassMediaSearchAndPlay",
            json!({"search_query": "jazz", "name": "Bedroom Speaker"}),
            &["speaker_bedroom"],
        ),
        (
            "Play Bohemian Rhapsody.",
            Some("kitchen"),
            "HassMediaSearchAndPlay",
            json!({"search_query": "Bohemian Rhapsody"}),
            &["speaker_kitchen", "satellite_kitchen"],
        ),
        (
            "previous track on the living room tv",
            None,
            "HassMediaPrevious",
            json!({"name": "Living Room TV"}),
            &["tv_living"],
        ),
        (
            "announce dinner is ready in the kitchen",
            None,
            "AliciaAnnounce",
            json!({"message": "dinner is ready", "area": "kitchen"}),
            &["speaker_kitchen", "satellite_kitchen"],
        ),
        ("Announce: Dinner is ready!", None, "HassBroadcast", json!({"message": "Dinner is ready"}), &[]),
    ]);
    let m = matched("turn the kitchen speaker down", None);
    assert_eq!(m.sentence.source, "alicia-en", "Alicia's own sentence");
    let m = matched("turn the volume down in the kitchen", None);
    assert_eq!(m.sentence.source, "home-assistant-intents en");
}

#[test]
fn state_timers_and_never_mind() {
    check(&[
        (
            "what is the temperature in the kitchen",
            None,
            "HassClimateGetTemperature",
            json!({"area": "kitchen"}),
            &["sensor_kitchen_temp"],
        ),
        (
            "is the coffee maker on",
            None,
            "HassGetState",
            json!({"name": "Coffee Maker", "state": "on"}),
            &["switch_coffee"],
        ),
        ("set a timer for twenty five minutes", None, "HassStartTimer", json!({"minutes": 25}), &[]),
        ("set a timer for 1 hour and 30 minutes", None, "HassStartTimer", json!({"hours": 1, "minutes": 30}), &[]),
        (
            "set a timer for five minutes named pizza",
            None,
            "HassStartTimer",
            json!({"minutes": 5, "name": "pizza"}),
            &[],
        ),
        ("start a 10 second timer", None, "HassStartTimer", json!({"seconds": 10}), &[]),
        ("cancel the timer", None, "HassCancelTimer", json!({}), &[]),
        ("cancel my 5 minute timer", None, "HassCancelTimer", json!({"start_minutes": 5}), &[]),
        ("how much time is left on my timer", None, "HassTimerStatus", json!({}), &[]),
        ("never mind", None, "HassNevermind", json!({}), &[]),
        ("forget it", None, "HassNevermind", json!({}), &[]),
        ("cancel", None, "HassNevermind", json!({}), &[]),
    ]);
    assert_eq!(matched("set a timer for twenty five minutes", None).targets, Targets::None);
}

#[test]
fn speech_recognition_errors() {
    check(&[
        // Whisper's spellings of names: one or two edits per word.
        ("pause the sonnos", None, "HassMediaPause", json!({"name": "Sonos"}), &["speaker_kitchen"]),
        ("turn on the cofee maker", None, "HassTurnOn", json!({"name": "Coffee Maker"}), &["switch_coffee"]),
        ("turn off the bedrom lamp", None, "HassTurnOff", json!({"name": "Bedroom Lamp"}), &["lamp_bedroom"]),
        ("turn on the lights in the livingroom", None, "HassTurnOn", json!({"area": "living_room"}), &["lamp_living"]),
        (
            "play jazz on the kitchen speeker",
            None,
            "HassMediaSearchAndPlay",
            json!({"search_query": "jazz", "name": "Kitchen Speaker"}),
            &["speaker_kitchen"],
        ),
        // Filler words, punctuation and case.
        (
            "Um, could you please turn off the coffee maker?",
            None,
            "HassTurnOff",
            json!({"name": "Coffee Maker"}),
            &["switch_coffee"],
        ),
        (
            "uh turn the kitchen speaker down please",
            None,
            "HassSetVolumeRelative",
            json!({"volume_step": "down"}),
            &["speaker_kitchen"],
        ),
        (
            "Hey Alicia, turn on the reading lamp.",
            None,
            "HassTurnOn",
            json!({"name": "Reading Lamp"}),
            &["lamp_living"],
        ),
        // Numbers as words and with hyphens.
        (
            "set the volume to thirty-five",
            Some("kitchen"),
            "HassSetVolume",
            json!({"volume_level": 35}),
            &["speaker_kitchen"],
        ),
        ("set a timer for one hundred seconds", None, "HassStartTimer", json!({"seconds": 100}), &[]),
    ]);
    let m = matched("pause the sonnos", None);
    assert_eq!(m.fuzzy.len(), 1);
    assert_eq!((m.fuzzy[0].heard.as_str(), m.fuzzy[0].matched.as_str(), m.fuzzy[0].edits), ("sonnos", "Sonos", 1));
    assert!(matched("pause the sonos", None).fuzzy.is_empty());
}

#[test]
fn ambiguity_is_reported_with_candidates() {
    let m = matched("pause the speaker", None);
    assert_eq!(m.intent, "HassMediaPause");
    let Targets::Ambiguous { heard, candidates } = &m.targets else { panic!("{:?}", m.targets) };
    assert_eq!(heard, "speaker");
    let ids: Vec<&str> = candidates.iter().map(|c| c.device_id.as_str()).collect();
    assert_eq!(ids, ["speaker_kitchen", "speaker_bedroom"]);
    assert_eq!(m.clarification().as_deref(), Some("Which speaker: kitchen or bedroom?"));
    // From a room with no speaker, too.
    let m = matched("turn the speaker up", Some("office"));
    assert!(matches!(m.targets, Targets::Ambiguous { .. }), "{:?}", m.targets);
    // The same question, answered by the satellite's area.
    assert_eq!(matched("pause the speaker", Some("bedroom")).device_ids(), ["speaker_bedroom"]);
    // Misheard ("speaker" as "speeker"): the question names what was understood.
    let m = matched("pause the speeker", None);
    assert_eq!(m.clarification().as_deref(), Some("Which speaker: kitchen or bedroom?"), "{:?}", m.targets);
}

#[test]
fn unknown_sentences_and_names() {
    // Nothing like any sentence.
    let Recognition::NoMatch { closest } = recognize("make me a sandwich", None) else { panic!("matched") };
    assert!(closest.is_empty(), "{closest:#?}");
    // A sentence that fits but a name nobody has: the near miss says which, with suggestions.
    let Recognition::NoMatch { closest } = recognize("turn on the kettle", None) else { panic!("matched") };
    let first = &closest[0];
    assert_eq!(first.intent, "HassTurnOn");
    assert_eq!(first.unknown.get("name").map(String::as_str), Some("kettle"), "{closest:#?}");
    let Recognition::NoMatch { closest } = recognize("turn off the coffee machine", None) else { panic!("matched") };
    let first = &closest[0];
    assert_eq!(first.intent, "HassTurnOff");
    assert_eq!(first.suggestions["name"].first().map(String::as_str), Some("Coffee Maker"), "{closest:#?}");
    // The spoken answer for it.
    let args = serde_json::Map::from_iter([("entity".to_string(), json!(first.unknown["name"]))]);
    assert_eq!(
        engine().error_response("no_entity", &args).unwrap(),
        "Sorry, I am not aware of any device called coffee machine"
    );
    // A known area without the devices asked for: a match with nothing to act on.
    let m = matched("turn on the lights in the garage", None);
    assert_eq!(m.device_ids(), Vec::<&str>::new());
    assert_eq!(m.error_key(), Some("no_domain_in_area"));
    let args = serde_json::Map::from_iter([("domain".into(), json!("light")), ("area".into(), json!("Garage"))]);
    assert_eq!(
        engine().error_response("no_domain_in_area", &args).unwrap(),
        "Sorry, I am not aware of any light in the Garage area"
    );
}

#[test]
fn spoken_responses() {
    let e = engine();
    let say = |u: &str, area: Option<&str>, extra: ResponseContext| e.respond(&matched(u, area), &extra).unwrap();
    assert_eq!(say("turn on the lights", Some("kitchen"), Default::default()), "Turned on the lights");
    assert_eq!(say("turn off the coffee maker", None, Default::default()), "Turned off the switch");
    assert_eq!(say("turn on the reading lamp", None, Default::default()), "Turned on the light");
    assert_eq!(say("pause the speaker", Some("kitchen"), Default::default()), "Paused");
    assert_eq!(say("set a timer for 5 minutes", None, Default::default()), "Timer set for 5 minutes");
    assert_eq!(say("set a timer for 1 minute", None, Default::default()), "Timer set for 1 minute");
    assert_eq!(
        say("set a timer for 2 hours and 10 minutes", None, Default::default()),
        "Timer set for 2 hours and 10 minutes"
    );
    assert_eq!(say("set a timer for half an hour", None, Default::default()), "Timer set for 30 minutes");
    assert_eq!(say("announce dinner is ready in the kitchen", None, Default::default()), "Announcing in the Kitchen");
    assert_eq!(say("open the living room blinds", None, Default::default()), "Opening");
    let state = json!({"state": "21.5", "state_with_unit": "21.5 °C", "attributes": {}});
    let extra = ResponseContext { state: Some(state), ..Default::default() };
    assert_eq!(say("what is the temperature in the kitchen", None, extra.clone()), "21.5 degrees");
    assert_eq!(
        say(
            "is the coffee maker on",
            None,
            ResponseContext {
                state: Some(json!({"state": "off", "state_with_unit": "off"})),
                query: Some(json!({"matched": [], "unmatched": [{"name": "Coffee Maker"}]})),
                ..Default::default()
            }
        ),
        "No, off"
    );
    assert_eq!(say("never mind", None, Default::default()), "");
    // Timer status from the caller's timers.
    let timers =
        json!([{"is_active": true, "rounded_minutes_left": 4, "rounded_seconds_left": 30, "start_minutes": 5}]);
    let extra =
        ResponseContext { slots: serde_json::Map::from_iter([("timers".to_string(), timers)]), ..Default::default() };
    assert_eq!(say("how much time is left on my timer", None, extra), "4 minutes and 30 seconds left.");
}

#[test]
fn extra_sentences_merge_with_home_assistant_s() {
    let mut data = alicia_intents::IntentsData::from_slice(&common::ha_json("en"), "ha").unwrap();
    let dir = std::env::temp_dir().join(format!("alicia-intents-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("custom.json");
    std::fs::write(
        &path,
        r#"{"language": "en", "intents": {"HassTurnOn": {"data": [
            {"sentences": ["wake up [the] {name}"], "requires_context": {"domain": ["media_player"]}}]}},
            "responses": {"intents": {"HassTurnOn": {"woken": "Awake"}}}}"#,
    )
    .unwrap();
    data.merge_path(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let engine = Engine::new(data).unwrap();
    let m = match engine.recognize("wake up the living room tv", home(), &Context::default()) {
        Recognition::Match(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.intent, "HassTurnOn");
    assert_eq!(m.sentence.source, path.display().to_string());
    assert_eq!(m.device_ids(), ["tv_living"]);
    // Home Assistant's sentences still match, and the domain requirement holds.
    assert!(engine.recognize("turn on the reading lamp", home(), &Context::default()).matched().is_some());
    assert!(engine.recognize("wake up the reading lamp", home(), &Context::default()).matched().is_none());
}

#[test]
fn any_input_is_answered_quickly_and_without_panic() {
    let long_message = format!("announce {} in the kitchen", "word ".repeat(400));
    let inputs = [
        "",
        "   ",
        "?!…",
        "((([[[{{{<<<",
        "turn on the \u{0}\u{1}lamp",
        "ТУРН ОН ЗЕ ЛАЙТ",
        "🙂 turn on the reading lamp 🙂",
        &"on ".repeat(500),
        &"turn on the ".repeat(100),
        &long_message,
        &"9".repeat(400),
    ];
    for input in inputs {
        // Answered (the matcher's step limit bounds the work; speed is the benchmark's).
        let r = recognize(input, Some("kitchen"));
        if std::env::var_os("ALICIA_SHOW_TIMES").is_some() {
            let t = std::time::Instant::now();
            let _ = recognize(input, Some("kitchen"));
            eprintln!("{:?}: {:?} {}", &input[..input.len().min(30)], t.elapsed(), r.matched().is_some());
        }
    }
    assert_eq!(matched("🙂 turn on the reading lamp 🙂", None).device_ids(), ["lamp_living"]);
}
