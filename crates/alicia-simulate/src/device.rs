//! What each kind of simulated device is: its registration (the design document's capability
//! objects) and its behaviour (docs/device-protocol.md's commands and state), with no I/O, so
//! it is tested directly.

use serde_json::{json, Map, Value};

use crate::Kind;

/// The speaker's volume range and step (its `volume_control` and `audio_playback` parameters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerParams {
    pub min_volume: i64,
    pub max_volume: i64,
    pub step_size: i64,
}

impl Default for SpeakerParams {
    fn default() -> Self {
        SpeakerParams { min_volume: 0, max_volume: 100, step_size: 5 }
    }
}

/// The light's colour temperature range.
pub const MIN_KELVIN: i64 = 2700;
pub const MAX_KELVIN: i64 = 6500;

/// A sensor quantity: the capability name, unit, range and Home Assistant device class.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    pub capability: &'static str,
    pub unit: &'static str,
    pub min: f64,
    pub max: f64,
    pub device_class: &'static str,
    /// Where the simulated value starts, and how far it may move per report.
    pub start: f64,
    pub step: f64,
    pub decimals: i32,
}

/// The simulated sensor's quantities.
pub const QUANTITIES: [Quantity; 2] = [
    Quantity {
        capability: "temperature",
        unit: "°C",
        min: -40.0,
        max: 85.0,
        device_class: "temperature",
        start: 21.0,
        step: 0.3,
        decimals: 1,
    },
    Quantity {
        capability: "humidity",
        unit: "%",
        min: 0.0,
        max: 100.0,
        device_class: "humidity",
        start: 45.0,
        step: 1.0,
        decimals: 0,
    },
];

/// The commands each kind knows (named in `unknown_command` refusals).
pub fn commands(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Speaker => &[
            "set_volume",
            "volume_step",
            "mute",
            "unmute",
            "play_audio",
            "pause",
            "resume",
            "stop",
            "next",
            "previous",
            "announce",
        ],
        Kind::Light => &["turn_on", "turn_off", "toggle", "set_brightness", "set_color_temp"],
        Kind::Switch => &["turn_on", "turn_off", "toggle"],
        Kind::Sensor => &[],
    }
}

/// Topic names of one device (prefix `P`): `P/devices/ID/{command,status,state,telemetry,errors,reply}`.
#[derive(Debug, Clone)]
pub struct DeviceTopics {
    pub command: String,
    pub status: String,
    pub state: String,
    pub telemetry: String,
    pub errors: String,
    /// Where the registry's answer to the registration comes (the device's own tree, which
    /// the ACL `alicia init` writes lets it read).
    pub reply: String,
    pub register: String,
    pub unregister: String,
    pub heartbeat: String,
    pub rebirth: String,
    pub router: String,
    pub prefix: String,
}

impl DeviceTopics {
    pub fn new(prefix: &str, id: &str) -> Self {
        let d = |s: &str| format!("{prefix}/devices/{id}/{s}");
        DeviceTopics {
            command: d("command"),
            status: d("status"),
            state: d("state"),
            telemetry: d("telemetry"),
            errors: d("errors"),
            reply: d("reply"),
            register: format!("{prefix}/system/discovery/register"),
            unregister: format!("{prefix}/system/discovery/unregister"),
            heartbeat: format!("{prefix}/system/discovery/heartbeat"),
            rebirth: format!("{prefix}/system/discovery/rebirth"),
            router: format!("{prefix}/services/router/inbox"),
            prefix: prefix.to_string(),
        }
    }
}

fn capability(name: &str, parameters: Value, endpoints: Value) -> Value {
    json!({ "name": name, "version": "1.0.0", "parameters": parameters, "endpoints": endpoints })
}

/// The registration (`payload.data` of the registration envelope) in the design document's
/// format.
pub struct Identity<'a> {
    pub kind: Kind,
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub location: Option<&'a str>,
    pub speaker: SpeakerParams,
    pub heartbeat_secs: u64,
}

pub fn registration(who: &Identity<'_>, t: &DeviceTopics) -> Value {
    let control = json!({ "control": t.command, "status": t.status, "state": t.state });
    let caps = match who.kind {
        Kind::Speaker => vec![
            capability(
                "audio_playback",
                json!({ "supported_formats": ["wav"], "min_volume": who.speaker.min_volume,
                        "max_volume": who.speaker.max_volume }),
                control.clone(),
            ),
            capability(
                "volume_control",
                json!({ "step_size": who.speaker.step_size, "mute_support": true,
                        "min_volume": who.speaker.min_volume, "max_volume": who.speaker.max_volume }),
                control.clone(),
            ),
            capability(
                "media_control",
                json!({ "commands": ["pause", "resume", "stop", "next", "previous"] }),
                control.clone(),
            ),
            capability("announce", json!({ "ducking": true, "text": false }), control.clone()),
        ],
        Kind::Light => vec![
            capability("on_off", json!({}), control.clone()),
            capability("brightness", json!({ "min": 0, "max": 100, "unit": "%" }), control.clone()),
            capability(
                "color_temperature",
                json!({ "min_kelvin": MIN_KELVIN, "max_kelvin": MAX_KELVIN }),
                control.clone(),
            ),
        ],
        Kind::Switch => vec![capability("on_off", json!({}), control.clone())],
        Kind::Sensor => QUANTITIES
            .iter()
            .map(|q| {
                capability(
                    q.capability,
                    json!({ "unit": q.unit, "min": q.min, "max": q.max, "device_class": q.device_class }),
                    json!({ "telemetry": t.telemetry, "status": t.status }),
                )
            })
            .collect(),
    };
    let mut endpoints = json!({ "control": t.command, "status": t.status, "state": t.state });
    if who.kind == Kind::Sensor {
        endpoints["telemetry"] = json!(t.telemetry);
    }
    let mut data = json!({
        "device_id": who.id,
        "device_type": who.kind.device_type(),
        "capabilities": caps,
        "endpoints": endpoints,
        "metadata": {
            "manufacturer": "Alicia",
            "model": format!("simulated {}", who.kind.as_str()),
            "version": env!("CARGO_PKG_VERSION"),
            "simulated": true,
        },
        "heartbeat_interval": who.heartbeat_secs,
    });
    if let Some(n) = who.name {
        data["name"] = json!(n);
    }
    if let Some(l) = who.location {
        data["metadata"]["location"] = json!(l);
    }
    data
}

/// A refused command: the error code and message, and per-field problems.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub errors: Option<Value>,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into(), errors: None }
    }

    fn invalid(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Refusal {
            code: "invalid_parameters",
            message: format!("`{field}`: {reason}"),
            errors: Some(json!([{ "field": format!("parameters.{field}"), "reason": reason }])),
        }
    }
}

/// What the speaker must do after a command besides changing its state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    None,
    /// Fetch and play `url` (an announcement ducks what plays).
    Play {
        url: String,
        announcement: bool,
    },
    /// Play the chime for a text-only announcement.
    Chime {
        text: String,
    },
    /// Playback paused, resumed or stopped: the timers change.
    Transport,
}

/// The state of one device and the rules of its commands.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub kind: Kind,
    pub speaker: SpeakerParams,
    pub power: bool,
    pub brightness: i64,
    pub kelvin: i64,
    pub volume: i64,
    pub muted: bool,
    /// `playing`, `paused` or `idle`.
    pub playback: &'static str,
    pub media_url: Option<String>,
    /// An announcement is playing over the music (ducked).
    pub announcing: bool,
    pub last_announcement: Option<String>,
    pub last_error: Option<String>,
    /// Sensor readings by capability.
    pub readings: Map<String, Value>,
}

fn int_param(params: &Map<String, Value>, key: &str) -> Result<Option<i64>, Refusal> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if f.is_finite() && f.fract() == 0.0 => Ok(Some(f as i64)),
            _ => Err(Refusal::invalid(key, format!("must be a whole number, found {v}"))),
        },
    }
}

fn required(params: &Map<String, Value>, key: &str) -> Result<i64, Refusal> {
    int_param(params, key)?.ok_or_else(|| Refusal::invalid(key, "missing"))
}

fn within(key: &str, v: i64, min: i64, max: i64) -> Result<i64, Refusal> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(Refusal::invalid(key, format!("{v} is outside {min}..={max} (the capability's parameters)")))
    }
}

impl Behaviour {
    pub fn new(kind: Kind, speaker: SpeakerParams) -> Self {
        let mut readings = Map::new();
        if kind == Kind::Sensor {
            for q in QUANTITIES {
                readings.insert(q.capability.into(), json!(q.start));
            }
        }
        Behaviour {
            kind,
            speaker,
            power: false,
            brightness: 100,
            kelvin: 3000,
            volume: (speaker.min_volume + speaker.max_volume) / 3,
            muted: false,
            playback: "idle",
            media_url: None,
            announcing: false,
            last_announcement: None,
            last_error: None,
            readings,
        }
    }

    /// The state document (docs/device-protocol.md), without `updated`.
    pub fn state(&self) -> Value {
        let mut s = Map::new();
        match self.kind {
            Kind::Light => {
                s.insert("power".into(), json!(if self.power { "on" } else { "off" }));
                s.insert("brightness".into(), json!(self.brightness));
                s.insert("color_temp_kelvin".into(), json!(self.kelvin));
            }
            Kind::Switch => {
                s.insert("power".into(), json!(if self.power { "on" } else { "off" }));
            }
            Kind::Speaker => {
                s.insert("volume".into(), json!(self.volume));
                s.insert("muted".into(), json!(self.muted));
                s.insert("playback".into(), json!(self.playback));
                s.insert("media_url".into(), json!(self.media_url));
                s.insert("announcing".into(), json!(self.announcing));
                if let Some(a) = &self.last_announcement {
                    s.insert("last_announcement".into(), json!(a));
                }
            }
            Kind::Sensor => {
                for (k, v) in &self.readings {
                    s.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(e) = &self.last_error {
            s.insert("last_error".into(), json!(e));
        }
        Value::Object(s)
    }

    /// The gain the speaker plays at (0 when muted).
    pub fn gain(&self) -> f32 {
        if self.muted {
            return 0.0;
        }
        let span = (self.speaker.max_volume - self.speaker.min_volume).max(1) as f32;
        ((self.volume - self.speaker.min_volume) as f32 / span).clamp(0.0, 1.0)
    }

    /// Applies one command. Nothing changes when it is refused.
    pub fn apply(&mut self, command: &str, params: &Map<String, Value>) -> Result<Action, Refusal> {
        if !commands(self.kind).contains(&command) {
            let known = commands(self.kind);
            return Err(Refusal {
                code: "unknown_command",
                message: format!(
                    "a simulated {} does not know {command:?}; it knows: {}",
                    self.kind.as_str(),
                    if known.is_empty() { "no commands (it only reports)".to_string() } else { known.join(", ") }
                ),
                errors: Some(json!({ "commands": known })),
            });
        }
        let sp = self.speaker;
        match command {
            "turn_on" => self.power = true,
            "turn_off" => self.power = false,
            "toggle" => self.power = !self.power,
            "set_brightness" => self.brightness = within("brightness", required(params, "brightness")?, 0, 100)?,
            "set_color_temp" => self.kelvin = within("kelvin", required(params, "kelvin")?, MIN_KELVIN, MAX_KELVIN)?,
            "set_volume" => {
                self.volume = within("volume", required(params, "volume")?, sp.min_volume, sp.max_volume)?;
            }
            "volume_step" => {
                let steps = required(params, "steps")?;
                // Clamped, not refused: "two steps down" at volume 3 means as low as it goes.
                self.volume = (self.volume + steps.saturating_mul(sp.step_size)).clamp(sp.min_volume, sp.max_volume);
            }
            "mute" => self.muted = true,
            "unmute" => self.muted = false,
            "play_audio" | "announce" => {
                let volume = int_param(params, "volume")?
                    .map(|v| within("volume", v, sp.min_volume, sp.max_volume))
                    .transpose()?;
                let url = match params.get("audio_url") {
                    None | Some(Value::Null) if command == "announce" => None,
                    None | Some(Value::Null) => return Err(Refusal::invalid("audio_url", "missing")),
                    Some(Value::String(u)) if !u.is_empty() => Some(u.clone()),
                    Some(other) => return Err(Refusal::invalid("audio_url", format!("must be a URL, found {other}"))),
                };
                let text = match params.get("text") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(t)) => Some(t.clone()),
                    Some(other) => return Err(Refusal::invalid("text", format!("must be a string, found {other}"))),
                };
                if command == "announce" && url.is_none() && text.is_none() {
                    return Err(Refusal::invalid("text", "missing (an announcement needs text or audio_url)"));
                }
                let announcement =
                    command == "announce" || params.get("announce").and_then(Value::as_bool).unwrap_or(false);
                if let Some(v) = volume {
                    self.volume = v;
                }
                if let Some(t) = &text {
                    self.last_announcement = Some(t.clone());
                }
                return Ok(match url {
                    Some(url) => Action::Play { url, announcement },
                    None => Action::Chime { text: text.unwrap_or_default() },
                });
            }
            "pause" => {
                if self.playback == "playing" {
                    self.playback = "paused";
                }
                return Ok(Action::Transport);
            }
            "resume" => {
                if self.playback == "paused" {
                    self.playback = "playing";
                }
                return Ok(Action::Transport);
            }
            // Without a playlist, next ends the track and previous starts it again.
            "stop" | "next" => {
                self.playback = "idle";
                self.media_url = None;
                return Ok(Action::Transport);
            }
            "previous" => {
                return Ok(match self.media_url.clone() {
                    Some(url) => Action::Play { url, announcement: false },
                    None => Action::None,
                });
            }
            _ => unreachable!("commands() lists every command handled here"),
        }
        Ok(Action::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn light_commands_and_limits() {
        let mut b = Behaviour::new(Kind::Light, SpeakerParams::default());
        assert_eq!(b.state()["power"], "off");
        b.apply("set_brightness", &p(json!({"brightness": 40}))).unwrap();
        b.apply("turn_on", &Map::new()).unwrap();
        assert_eq!(b.state(), json!({"power": "on", "brightness": 40, "color_temp_kelvin": 3000}));
        let e = b.apply("set_brightness", &p(json!({"brightness": 140}))).unwrap_err();
        assert_eq!(e.code, "invalid_parameters");
        assert_eq!(e.errors.unwrap()[0]["field"], "parameters.brightness");
        assert_eq!(b.brightness, 40, "a refused command changes nothing");
        assert_eq!(b.apply("set_brightness", &p(json!({"brightness": "x"}))).unwrap_err().code, "invalid_parameters");
        assert_eq!(b.apply("set_color_temp", &p(json!({"kelvin": 2000}))).unwrap_err().code, "invalid_parameters");
        b.apply("toggle", &Map::new()).unwrap();
        assert_eq!(b.state()["power"], "off");
        let e = b.apply("set_volume", &p(json!({"volume": 3}))).unwrap_err();
        assert_eq!(e.code, "unknown_command");
        assert!(e.message.contains("turn_on"), "{}", e.message);
    }

    #[test]
    fn speaker_volume_stays_within_the_parameters() {
        let params = SpeakerParams { min_volume: 0, max_volume: 30, step_size: 3 };
        let mut b = Behaviour::new(Kind::Speaker, params);
        b.apply("set_volume", &p(json!({"volume": 30}))).unwrap();
        assert_eq!(b.apply("set_volume", &p(json!({"volume": 31}))).unwrap_err().code, "invalid_parameters");
        b.apply("volume_step", &p(json!({"steps": -2}))).unwrap();
        assert_eq!(b.volume, 24);
        b.apply("volume_step", &p(json!({"steps": 100}))).unwrap();
        assert_eq!(b.volume, 30);
        b.apply("mute", &Map::new()).unwrap();
        assert_eq!(b.gain(), 0.0);
        b.apply("unmute", &Map::new()).unwrap();
        assert_eq!(b.gain(), 1.0);
        let a = b.apply("play_audio", &p(json!({"audio_url": "file:///a.wav", "volume": 15}))).unwrap();
        assert_eq!(a, Action::Play { url: "file:///a.wav".into(), announcement: false });
        assert_eq!(b.volume, 15);
        assert_eq!(b.apply("play_audio", &Map::new()).unwrap_err().code, "invalid_parameters");
        let a = b.apply("announce", &p(json!({"text": "dinner"}))).unwrap();
        assert_eq!(a, Action::Chime { text: "dinner".into() });
        assert_eq!(b.apply("announce", &Map::new()).unwrap_err().code, "invalid_parameters");
    }

    #[test]
    fn registrations_follow_the_design_document() {
        let t = DeviceTopics::new("alicia", "spk1");
        let who = Identity {
            kind: Kind::Speaker,
            id: "spk1",
            name: Some("Kitchen speaker"),
            location: Some("kitchen"),
            speaker: SpeakerParams::default(),
            heartbeat_secs: 30,
        };
        let r = registration(&who, &t);
        assert_eq!(r["device_type"], "speaker");
        assert_eq!(r["endpoints"]["control"], "alicia/devices/spk1/command");
        assert_eq!(r["metadata"]["location"], "kitchen");
        let names: Vec<&str> =
            r["capabilities"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["audio_playback", "volume_control", "media_control", "announce"]);
        assert_eq!(r["capabilities"][0]["parameters"]["max_volume"], 100);
        assert_eq!(r["capabilities"][1]["parameters"]["mute_support"], true);
        let s = registration(&Identity { kind: Kind::Sensor, ..who }, &t);
        assert_eq!(s["capabilities"][0]["parameters"]["unit"], "°C");
        assert_eq!(s["capabilities"][1]["parameters"]["device_class"], "humidity");
    }
}
