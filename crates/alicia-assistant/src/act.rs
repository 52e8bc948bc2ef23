//! From a recognised intent to device commands, in the contract of `docs/device-protocol.md`:
//! which command each target gets and with which parameters, kept within what the device
//! registered (volume within `min_volume`..`max_volume`, steps of `step_size`, brightness
//! 0–100), or the reason nothing can be done. Questions are answered from the devices' last
//! state. Pure: no bus here (the service sends what this plans).

use alicia_intents::home::{NameKind, NameList, NameRef};
use alicia_intents::{intent_devices, Engine, IntentMatch, ResponseContext, Targets};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::home::{DeviceInfo, HomeModel};
use crate::state::{ha_state, DeviceStates};

/// One command for one device: `data` = `{"command", "parameters"}` of a `command` envelope to
/// `device_id:<device_id>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceCommand {
    pub device_id: String,
    /// The device's spoken name (for logs and answers).
    pub name: String,
    pub command: String,
    pub parameters: Value,
}

impl DeviceCommand {
    fn new(d: &DeviceInfo, command: &str, parameters: Value) -> Self {
        DeviceCommand { device_id: d.id.clone(), name: d.name.clone(), command: command.into(), parameters }
    }

    /// The envelope's `payload.data`.
    pub fn data(&self) -> Value {
        json!({ "command": self.command, "parameters": self.parameters })
    }
}

/// A piece of music or sound "play …" can find: `{name, url, aliases}` (configuration).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct MediaItem {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Settings of planning.
#[derive(Debug, Clone)]
pub struct PlanSettings {
    /// How far "volume up"/"down" without a number moves, in percent of the device's range
    /// (Home Assistant's media players step by 10 %).
    pub volume_step_percent: f64,
    /// What "play …" can play.
    pub media: Vec<MediaItem>,
    media_names: NameList,
}

impl PlanSettings {
    pub fn new(volume_step_percent: f64, media: Vec<MediaItem>) -> Self {
        let mut media_names = NameList::default();
        for (i, m) in media.iter().enumerate() {
            for n in std::iter::once(&m.name).chain(&m.aliases) {
                media_names.add(n, NameRef { index: i as u32, kind: NameKind::Name });
            }
        }
        PlanSettings { volume_step_percent, media, media_names }
    }

    /// The media item most like what was asked for ("jazz" finds "Jazz Radio").
    pub fn find_media(&self, query: &str) -> Option<&MediaItem> {
        let q = alicia_intents::normalize::normalize_words(query);
        let exact = self.media_names.entries.iter().find(|e| e.text == q);
        let entry = exact.or_else(|| {
            // A word of the query naming an item ("some jazz"), then the closest.
            self.media_names
                .entries
                .iter()
                .find(|e| q.split(' ').any(|w| e.words.iter().any(|ew| ew == w) && w.len() > 2))
                .or_else(|| self.media_names.closest(&q, 1).into_iter().next())
        })?;
        self.media.get(entry.refs.first()?.index as usize)
    }
}

impl Default for PlanSettings {
    fn default() -> Self {
        PlanSettings::new(10.0, Vec::new())
    }
}

/// What to do for an intent.
#[derive(Debug, Default)]
pub struct Plan {
    pub commands: Vec<DeviceCommand>,
    /// A message for every speaker (`<prefix>/devices/speakers/announce`).
    pub broadcast: Option<String>,
    /// What the response template needs beyond the match (state, query, slots).
    pub extra: ResponseContext,
    /// Said after the response ("The bedroom lamp is offline.").
    pub notes: Vec<String>,
}

/// Why nothing is done: a code for programs and the sentence to say.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub text: String,
}

impl Refusal {
    fn new(code: &'static str, text: impl Into<String>) -> Self {
        Refusal { code, text: text.into() }
    }
}

/// "the Kitchen Speaker", "the Kitchen Speaker and the Bedroom Speaker".
fn names(devs: &[&DeviceInfo]) -> String {
    let n: Vec<String> = devs.iter().map(|d| format!("the {}", d.name)).collect();
    match n.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn slot_number(m: &IntentMatch, slot: &str) -> Option<f64> {
    m.slots.get(slot).and_then(|s| match &s.value {
        Value::Number(n) => n.as_f64(),
        Value::String(t) => t.trim().trim_end_matches('%').parse().ok(),
        _ => None,
    })
}

/// Devices acting together in one room speak with one voice: music and announcements go to a
/// room's speakers, not also to the satellite that heard the request.
fn one_voice_per_room(devs: Vec<&DeviceInfo>) -> Vec<&DeviceInfo> {
    let rooms_with_speakers: Vec<Option<&str>> =
        devs.iter().filter(|d| !d.is_satellite()).map(|d| d.location.as_deref()).collect();
    devs.into_iter().filter(|d| !d.is_satellite() || !rooms_with_speakers.contains(&d.location.as_deref())).collect()
}

/// Keeps `n` within the device's `[lo, hi]`.
fn clamp(n: f64, lo: f64, hi: f64) -> f64 {
    n.max(lo).min(hi.max(lo))
}

/// The device's volume range: `min_volume`/`max_volume` of `volume_control`, else of
/// `audio_playback` (the design document's registration), else 0–100.
fn volume_range(d: &DeviceInfo) -> (f64, f64) {
    let caps = ["volume_control", "audio_playback"];
    let lo = d.number(&caps, "min_volume").unwrap_or(0.0);
    let hi = d.number(&caps, "max_volume").unwrap_or(100.0);
    if hi > lo {
        (lo, hi)
    } else {
        (0.0, 100.0)
    }
}

/// Runs `f` for each device: its command, or the device goes to `unable`.
fn each<'a>(
    plan: &mut Plan,
    devs: &[&'a DeviceInfo],
    unable: &mut Vec<&'a DeviceInfo>,
    mut f: impl FnMut(&'a DeviceInfo) -> Option<DeviceCommand>,
) {
    for d in devs {
        match f(d) {
            Some(c) => plan.commands.push(c),
            None => unable.push(d),
        }
    }
}

/// Plans the commands (or the answer) for a recognised intent whose targets are resolved.
/// Intents without devices (timers, never mind) are the service's.
pub fn plan(
    m: &IntentMatch,
    home: &HomeModel,
    states: &DeviceStates,
    engine: &Engine,
    settings: &PlanSettings,
) -> Result<Plan, Refusal> {
    let targets: Vec<&DeviceInfo> = match &m.targets {
        Targets::Devices { devices } => devices.iter().filter_map(|t| home.device(&t.device_id)).collect(),
        _ => Vec::new(),
    };
    let mut plan = Plan::default();
    let intent = m.intent.as_str();

    // Questions are answered from what devices said, reachable or not.
    match intent {
        "HassGetState" => return answer_state(m, &targets, states, plan),
        "HassClimateGetTemperature" => {
            let known = targets.iter().find_map(|d| {
                let st = ha_state(d, states)?;
                let has_temperature =
                    d.domain == "sensor" || st["attributes"].get("current_temperature").is_some_and(|v| !v.is_null());
                has_temperature.then_some(st)
            });
            return match known {
                Some(st) => {
                    plan.extra.state = Some(st);
                    Ok(plan)
                }
                None => Err(Refusal::new(
                    "no_state",
                    format!("Sorry, {} has not reported a temperature yet", names(&targets[..targets.len().min(1)])),
                )),
            };
        }
        "HassBroadcast" => {
            let message = m.slot_str("message").unwrap_or_default();
            if message.trim().is_empty() {
                return Err(Refusal::new("invalid_request", "Sorry, what should I announce?"));
            }
            plan.broadcast = Some(message);
            return Ok(plan);
        }
        _ => {}
    }

    // A room's media commands go to its speakers, not also to the satellite that heard them
    // (a satellite named on its own is still a target).
    let targets = if intent_devices(intent).is_some_and(|(domains, _)| domains == ["media_player"]) {
        one_voice_per_room(targets)
    } else {
        targets
    };
    let (online, offline): (Vec<&DeviceInfo>, Vec<&DeviceInfo>) = targets.iter().partition(|d| d.reachable());
    if online.is_empty() && !offline.is_empty() {
        let verb = if offline.len() == 1 { "is" } else { "are" };
        return Err(Refusal::new("device_offline", format!("Sorry, {} {verb} offline", names(&offline))));
    }
    if !offline.is_empty() {
        let verb = if offline.len() == 1 { "is" } else { "are" };
        plan.notes.push(format!("{} {verb} offline.", capitalize(&names(&offline))));
    }

    // Each intent: which targets can do it, and the command with parameters for each.
    let mut unable: Vec<&DeviceInfo> = Vec::new();
    match intent {
        "HassTurnOn" | "HassTurnOff" | "HassToggle" => {
            let on = intent == "HassTurnOn";
            let command = match intent {
                "HassTurnOn" => "turn_on",
                "HassTurnOff" => "turn_off",
                _ => "toggle",
            };
            each(&mut plan, &online, &mut unable, |d| {
                if d.has("on_off") {
                    Some(DeviceCommand::new(d, command, json!({})))
                } else if intent != "HassToggle" && d.has("brightness") {
                    Some(DeviceCommand::new(d, "set_brightness", json!({ "brightness": if on { 100 } else { 0 } })))
                } else if intent != "HassToggle" && d.has("level") && d.domain == "cover" {
                    let caps = ["level"];
                    let hi = d.number(&caps, "max").unwrap_or(100.0);
                    let lo = d.number(&caps, "min").unwrap_or(0.0);
                    Some(DeviceCommand::new(d, "set_level", json!({ "level": if on { hi } else { lo } })))
                } else {
                    None
                }
            });
        }
        "HassLightSet" => {
            if let Some(b) = slot_number(m, "brightness") {
                let b = clamp(b, 0.0, 100.0).round() as i64;
                each(&mut plan, &online, &mut unable, |d| {
                    d.has("brightness").then(|| DeviceCommand::new(d, "set_brightness", json!({ "brightness": b })))
                });
            } else if let Some(k) = slot_number(m, "temperature") {
                each(&mut plan, &online, &mut unable, |d| {
                    let caps = ["color_temperature"];
                    let lo = d.number(&caps, "min_kelvin").or(d.number(&caps, "min")).unwrap_or(1000.0);
                    let hi = d.number(&caps, "max_kelvin").or(d.number(&caps, "max")).unwrap_or(10000.0);
                    d.has("color_temperature").then(|| {
                        DeviceCommand::new(d, "set_color_temp", json!({ "kelvin": clamp(k, lo, hi).round() as i64 }))
                    })
                });
            } else {
                return Err(Refusal::new("feature_not_supported", "Sorry, I can't change the colour of lights yet"));
            }
        }
        "HassSetVolume" => {
            let pct = clamp(slot_number(m, "volume_level").unwrap_or(50.0), 0.0, 100.0);
            each(&mut plan, &online, &mut unable, |d| {
                if !d.has("volume_control") {
                    return None;
                }
                let (lo, hi) = volume_range(d);
                let volume = (lo + pct * (hi - lo) / 100.0).round();
                Some(DeviceCommand::new(d, "set_volume", json!({ "volume": volume as i64 })))
            });
        }
        "HassSetVolumeRelative" => {
            let step = m.slots.get("volume_step").map(|s| s.value.clone()).unwrap_or(json!("up"));
            let percent = match &step {
                Value::String(s) if s == "down" => -settings.volume_step_percent,
                Value::String(s) if s == "up" => settings.volume_step_percent,
                other => other.as_f64().or_else(|| other.as_str()?.parse().ok()).unwrap_or(0.0),
            };
            let mut at_limit: Vec<&DeviceInfo> = Vec::new();
            each(&mut plan, &online, &mut unable, |d| {
                if !d.has("volume_control") {
                    return None;
                }
                let (lo, hi) = volume_range(d);
                let size = d.number(&["volume_control"], "step_size").filter(|s| *s > 0.0).unwrap_or(1.0);
                let mut steps = (percent * (hi - lo) / 100.0 / size).round() as i64;
                if steps == 0 && percent != 0.0 {
                    steps = percent.signum() as i64;
                }
                // With the current volume known, no step goes past the device's range.
                if let Some(now) = states.number(&d.id, "volume") {
                    let up = ((hi - now) / size).floor().max(0.0) as i64;
                    let down = ((now - lo) / size).floor().max(0.0) as i64;
                    steps = steps.clamp(-down, up);
                }
                if steps == 0 {
                    at_limit.push(d);
                    return Some(DeviceCommand::new(d, "", Value::Null));
                }
                Some(DeviceCommand::new(d, "volume_step", json!({ "steps": steps })))
            });
            plan.commands.retain(|c| !c.command.is_empty());
            if plan.commands.is_empty() && !at_limit.is_empty() {
                let which = if percent > 0.0 { "maximum" } else { "minimum" };
                let verb = if at_limit.len() == 1 { "is" } else { "are" };
                return Err(Refusal::new(
                    "volume_limit",
                    format!("{} {verb} already at {which} volume", capitalize(&names(&at_limit))),
                ));
            }
        }
        "HassMediaPlayerMute" | "HassMediaPlayerUnmute" => {
            let command = if intent == "HassMediaPlayerMute" { "mute" } else { "unmute" };
            each(&mut plan, &online, &mut unable, |d| {
                let supported = d.param(&["volume_control"], "mute_support").and_then(Value::as_bool).unwrap_or(true);
                (d.has("volume_control") && supported).then(|| DeviceCommand::new(d, command, json!({})))
            });
        }
        "HassMediaPause" | "HassMediaUnpause" | "HassMediaNext" | "HassMediaPrevious" => {
            let command = match intent {
                "HassMediaPause" => "pause",
                "HassMediaUnpause" => "resume",
                "HassMediaNext" => "next",
                _ => "previous",
            };
            each(&mut plan, &online, &mut unable, |d| {
                (d.has("media_control") || d.has("audio_playback")).then(|| DeviceCommand::new(d, command, json!({})))
            });
        }
        "HassMediaSearchAndPlay" => {
            let query = m.slot_str("search_query").unwrap_or_default();
            let Some(item) = settings.find_media(&query) else {
                return Err(Refusal::new("media_not_found", format!("Sorry, I couldn't find {query}")));
            };
            let players: Vec<&DeviceInfo> = online.iter().copied().filter(|d| d.has("audio_playback")).collect();
            unable.extend(online.iter().copied().filter(|d| !d.has("audio_playback")));
            for d in one_voice_per_room(players) {
                plan.commands.push(DeviceCommand::new(d, "play_audio", json!({ "audio_url": item.url })));
            }
            plan.extra.slots.insert("media".into(), json!(item.name));
        }
        "AliciaAnnounce" => {
            let message = m.slot_str("message").unwrap_or_default();
            if message.trim().is_empty() {
                return Err(Refusal::new("invalid_request", "Sorry, what should I announce?"));
            }
            let speakers: Vec<&DeviceInfo> =
                online.iter().copied().filter(|d| d.has("announce") || d.has("audio_playback")).collect();
            for d in one_voice_per_room(speakers) {
                plan.commands.push(DeviceCommand::new(d, "announce", json!({ "text": message })));
            }
        }
        "HassSetPosition" | "HassClimateSetTemperature" | "HassFanSetSpeed" => {
            let slot = match intent {
                "HassSetPosition" => "position",
                "HassClimateSetTemperature" => "temperature",
                _ => "percentage",
            };
            let Some(value) = slot_number(m, slot) else {
                return Err(Refusal::new("invalid_request", "Sorry, to what value?"));
            };
            each(&mut plan, &online, &mut unable, |d| {
                let caps = ["level"];
                let lo = d.number(&caps, "min").unwrap_or(f64::MIN);
                let hi = d.number(&caps, "max").unwrap_or(f64::MAX);
                d.has("level").then(|| DeviceCommand::new(d, "set_level", json!({ "level": clamp(value, lo, hi) })))
            });
        }
        other => {
            return Err(Refusal::new("unsupported_intent", format!("Sorry, I can't do that yet ({other})")));
        }
    }
    if plan.commands.is_empty() {
        if unable.is_empty() {
            return Err(Refusal::new(
                "feature_not_supported",
                engine
                    .error_response("feature_not_supported", &Map::new())
                    .unwrap_or_else(|_| "Sorry, no device supports the required features".into()),
            ));
        }
        let what = match intent {
            "HassTurnOn" => "be turned on",
            "HassTurnOff" => "be turned off",
            "HassLightSet" => "be dimmed",
            "HassSetVolume" | "HassSetVolumeRelative" => "change its volume",
            "HassMediaPlayerMute" | "HassMediaPlayerUnmute" => "be muted",
            "HassMediaSearchAndPlay" | "AliciaAnnounce" => "play audio",
            _ => "do that",
        };
        return Err(Refusal::new("feature_not_supported", format!("Sorry, {} can't {what}", names(&unable))));
    }
    if !unable.is_empty() && intent != "HassMediaSearchAndPlay" {
        plan.notes.push(format!("{} can't do that.", capitalize(&names(&unable))));
    }
    Ok(plan)
}

/// "Is the coffee maker on", "what is the kitchen thermometer": the first target's state, and
/// which targets are in the state asked about (`query.matched`/`unmatched`).
fn answer_state(
    m: &IntentMatch,
    targets: &[&DeviceInfo],
    states: &DeviceStates,
    mut plan: Plan,
) -> Result<Plan, Refusal> {
    let known: Vec<(&DeviceInfo, Option<Value>)> = targets.iter().map(|d| (*d, ha_state(d, states))).collect();
    let Some(first) = known.iter().find_map(|(_, s)| s.clone()) else {
        let verb = if targets.len() == 1 { "has" } else { "have" };
        return Err(Refusal::new("no_state", format!("Sorry, {} {verb} not reported a state yet", names(targets))));
    };
    plan.extra.state = Some(first);
    if let Some(wanted) = m.slot_str("state") {
        let (mut matched, mut unmatched) = (Vec::new(), Vec::new());
        for (d, s) in &known {
            let is = s.as_ref().and_then(|s| s["state"].as_str()).is_some_and(|s| s.eq_ignore_ascii_case(&wanted));
            if is {
                matched.push(json!({ "name": d.name }));
            } else {
                unmatched.push(json!({ "name": d.name }));
            }
        }
        plan.extra.query = Some(json!({ "matched": matched, "unmatched": unmatched }));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_is_found_by_name_word_or_likeness() {
        let s = PlanSettings::new(
            10.0,
            vec![
                MediaItem { name: "Jazz Radio".into(), url: "http://x/jazz.mp3".into(), aliases: vec![] },
                MediaItem { name: "Rain".into(), url: "file:///rain.wav".into(), aliases: vec!["rain sounds".into()] },
            ],
        );
        assert_eq!(s.find_media("jazz radio").unwrap().url, "http://x/jazz.mp3");
        assert_eq!(s.find_media("some jazz").unwrap().url, "http://x/jazz.mp3");
        assert_eq!(s.find_media("Rain sounds").unwrap().name, "Rain");
        assert_eq!(s.find_media("jaz radio").unwrap().name, "Jazz Radio");
        assert!(s.find_media("heavy metal").is_none());
    }
}
