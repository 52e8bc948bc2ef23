//! The optional fallback for sentences no template matches: a local language model behind an
//! OpenAI-compatible chat API (llama.cpp's `llama-server`, Ollama), offered the home's devices
//! as tools. Off unless configured.
//!
//! The model does not act: each tool is one of the intents the templates know (`HassTurnOn`,
//! `HassLightSet`, ...) with a `device_id` (an enum of the registered devices) and the
//! intent's slot; its call becomes an [`IntentMatch`] that goes through the same planning as a
//! recognised sentence, so the device's registered parameters bound whatever the model said,
//! an unknown device is refused, and the answer is Home Assistant's response. A reply without
//! a tool call is not spoken (a small model's free text is no answer to trust); the sentence
//! then gets the polite "I don't know how to …".
//!
//! HTTP over hyper (already in the build, through bollard), plain `http://` only: the model
//! runs on this machine or the local network.
//!
//! Status: the client and the planning of tool calls are tested against a canned answer; with
//! the only small model available offline (gemma3 270M, a base model) llama-server returns no
//! tool call, so nothing is claimed for real models (see `tests/llm.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use alicia_intents::{IntentMatch, SentenceRef, Slot, SlotSource, Target, Targets};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Map, Value};

use crate::home::{DeviceInfo, HomeModel};

/// Where the model is and how to ask it.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8080/v1` (llama-server) or
    /// `http://127.0.0.1:11434/v1` (Ollama).
    pub url: String,
    /// The model name the server expects (llama-server ignores it).
    pub model: String,
    /// A bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Longest wait for an answer.
    pub timeout: Duration,
    /// Most devices offered (those in the satellite's area first).
    pub max_devices: usize,
}

impl LlmConfig {
    pub fn new(url: impl Into<String>) -> Self {
        LlmConfig {
            url: url.into(),
            model: "local".into(),
            api_key: None,
            timeout: Duration::from_secs(20),
            max_devices: 60,
        }
    }
}

/// Why the model could not help.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the language model at {url}: {message}")]
    Http { url: String, message: String },
    #[error("the language model answered something unreadable: {0}")]
    Answer(String),
}

/// A tool: (intent, description, its slot and that slot's JSON schema).
type Tool = (&'static str, &'static str, Option<(&'static str, Value)>);

/// The intents offered as tools.
fn tools_spec() -> Vec<Tool> {
    vec![
        ("HassTurnOn", "Turn a device on (lights, switches, fans) or open a cover", None),
        ("HassTurnOff", "Turn a device off or close a cover", None),
        (
            "HassLightSet",
            "Set a light's brightness, in percent",
            Some(("brightness", json!({"type": "integer", "minimum": 0, "maximum": 100}))),
        ),
        (
            "HassSetVolume",
            "Set a media player's volume, in percent",
            Some(("volume_level", json!({"type": "integer", "minimum": 0, "maximum": 100}))),
        ),
        (
            "HassSetVolumeRelative",
            "Make a media player louder (up) or quieter (down)",
            Some(("volume_step", json!({"type": "string", "enum": ["up", "down"]}))),
        ),
        ("HassMediaPause", "Pause a media player", None),
        ("HassMediaUnpause", "Resume a media player", None),
        ("HassMediaNext", "Skip to the next track", None),
        ("HassMediaPrevious", "Go back to the previous track", None),
        ("AliciaAnnounce", "Say a message on a speaker", Some(("message", json!({"type": "string"})))),
    ]
}

/// The response template key each intent's sentences use.
fn response_key(intent: &str) -> &'static str {
    match intent {
        "HassLightSet" => "brightness",
        "AliciaAnnounce" => "name",
        _ => "default",
    }
}

/// Devices offered: the context area's first, at most `max`.
fn offered<'a>(home: &'a HomeModel, area: Option<&str>, max: usize) -> Vec<&'a DeviceInfo> {
    let mut all: Vec<&DeviceInfo> = home.index.home.devices.iter().filter_map(|d| home.device(&d.id)).collect();
    all.sort_by_key(|d| (d.location.as_deref() != area, d.id.clone()));
    all.truncate(max);
    all
}

/// The chat request: the devices in the system message, the intents as tools.
pub fn request_body(cfg: &LlmConfig, text: &str, home: &HomeModel, area: Option<&str>) -> Value {
    let devices = offered(home, area, cfg.max_devices);
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    let mut listing = String::new();
    for d in &devices {
        let caps: Vec<&str> = d.capabilities.iter().map(|c| c.name.as_str()).collect();
        listing.push_str(&format!(
            "- {}: {} ({}, in {}; can: {})\n",
            d.id,
            d.name,
            d.domain,
            d.location.as_deref().map(|l| home.area_name(l)).unwrap_or_else(|| "no area".into()),
            caps.join(", ")
        ));
    }
    let here = area.map(|a| format!(" The user is in the {}.", home.area_name(a))).unwrap_or_default();
    let system = format!(
        "You are the voice assistant of a home. Carry out the user's request by calling exactly one tool \
         with the device_id of the device meant.{here} If no tool fits, do not call any.\nDevices:\n{listing}"
    );
    let tools: Vec<Value> = tools_spec()
        .into_iter()
        .map(|(name, description, slot)| {
            let mut properties = Map::new();
            properties.insert("device_id".into(), json!({"type": "string", "enum": ids}));
            let mut required = vec![json!("device_id")];
            if let Some((slot, schema)) = slot {
                properties.insert(slot.into(), schema);
                required.push(json!(slot));
            }
            json!({"type": "function", "function": {"name": name, "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required}}})
        })
        .collect();
    json!({
        "model": cfg.model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": text}],
        "tools": tools,
        "tool_choice": "auto",
        "temperature": 0,
        "max_tokens": 128,
    })
}

/// The first tool call of a chat completion as an intent, if it names a known intent and a
/// registered device; `Ok(None)` when the model called no tool.
pub fn to_intent(answer: &Value, home: &HomeModel) -> Result<Option<IntentMatch>, LlmError> {
    let message =
        answer.pointer("/choices/0/message").ok_or_else(|| LlmError::Answer(format!("no choices: {answer}")))?;
    let Some(call) = message.get("tool_calls").and_then(Value::as_array).and_then(|c| c.first()) else {
        return Ok(None);
    };
    let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default();
    let spec = tools_spec().into_iter().find(|(n, _, _)| *n == name);
    let Some((intent, _, slot)) = spec else {
        return Err(LlmError::Answer(format!("a call of an unknown tool {name:?}")));
    };
    // Arguments are a JSON string in the OpenAI format; some servers send the object.
    let args: Value = match call.pointer("/function/arguments") {
        Some(Value::String(s)) => {
            serde_json::from_str(s).map_err(|e| LlmError::Answer(format!("arguments {s:?}: {e}")))?
        }
        Some(v @ Value::Object(_)) => v.clone(),
        _ => return Err(LlmError::Answer("a tool call without arguments".into())),
    };
    let id = args.get("device_id").and_then(Value::as_str).unwrap_or_default();
    let Some(d) = home.device(id) else {
        return Err(LlmError::Answer(format!("a call for an unknown device {id:?}")));
    };
    let mut slots = BTreeMap::new();
    slots.insert(
        "name".to_string(),
        Slot { value: json!(d.name), text: d.name.clone(), display: Some(d.name.clone()), source: SlotSource::Spoken },
    );
    if let Some((slot, _)) = slot {
        let value = args.get(slot).cloned().unwrap_or(Value::Null);
        if value.is_null() {
            return Err(LlmError::Answer(format!("{intent} without its {slot}")));
        }
        let text = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        slots.insert(slot.to_string(), Slot { value, text, display: None, source: SlotSource::Spoken });
    }
    let target = Target {
        device_id: d.id.clone(),
        name: d.name.clone(),
        domain: d.domain.clone(),
        area_id: d.location.clone(),
        area_name: d.location.as_deref().map(|l| home.area_name(l)),
    };
    Ok(Some(IntentMatch {
        intent: intent.to_string(),
        slots,
        captures: BTreeMap::new(),
        targets: Targets::Devices { devices: vec![target] },
        sentence: SentenceRef {
            source: "llm".into(),
            intent: intent.to_string(),
            block: 0,
            sentence: 0,
            template: String::new(),
        },
        response: response_key(intent).to_string(),
        metadata: BTreeMap::new(),
        fuzzy: Vec::new(),
    }))
}

/// The client.
pub struct Llm {
    cfg: LlmConfig,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Llm {
    pub fn new(cfg: LlmConfig) -> Result<Llm, LlmError> {
        if !cfg.url.starts_with("http://") {
            return Err(LlmError::Http {
                url: cfg.url.clone(),
                message: "only http:// URLs (a model on this network)".into(),
            });
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Llm { cfg, client })
    }

    /// Asks the model what `text` means in this home.
    pub async fn understand(
        &self,
        text: &str,
        home: &HomeModel,
        area: Option<&str>,
    ) -> Result<Option<IntentMatch>, LlmError> {
        let body = request_body(&self.cfg, text, home, area);
        let url = format!("{}/chat/completions", self.cfg.url.trim_end_matches('/'));
        let err = |message: String| LlmError::Http { url: url.clone(), message };
        let mut req = hyper::Request::post(&url).header("content-type", "application/json");
        if let Some(key) = &self.cfg.api_key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let req = req.body(Full::new(Bytes::from(body.to_string()))).map_err(|e| err(e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| err(e.to_string()))?;
            let status = resp.status();
            // Bounded: a chat completion is small.
            let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|e| err(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(err(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))));
            }
            serde_json::from_slice::<Value>(&body).map_err(|e| LlmError::Answer(e.to_string()))
        };
        let answer = tokio::time::timeout(self.cfg.timeout, exchange)
            .await
            .map_err(|_| err(format!("no answer within {:?}", self.cfg.timeout)))??;
        to_intent(&answer, home)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> HomeModel {
        HomeModel::from_inventory(&json!({"devices": [
            {"device_id": "light_k", "device_type": "light", "name": "Kitchen Light", "location": "kitchen",
             "capabilities": ["on_off", "brightness"]},
            {"device_id": "spk_b", "device_type": "speaker", "name": "Bedroom Speaker", "location": "bedroom",
             "capabilities": ["audio_playback", "volume_control"]}
        ]}))
        .unwrap()
    }

    #[test]
    fn devices_are_offered_as_tool_arguments_the_satellites_area_first() {
        let body = request_body(&LlmConfig::new("http://x/v1"), "it's too dark", &home(), Some("bedroom"));
        let tools = body["tools"].as_array().unwrap();
        assert_eq!(tools[0]["function"]["name"], "HassTurnOn");
        assert_eq!(tools[0]["function"]["parameters"]["properties"]["device_id"]["enum"], json!(["spk_b", "light_k"]));
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("- light_k: Kitchen Light (light, in Kitchen; can: on_off, brightness)"), "{system}");
        assert!(system.contains("The user is in the Bedroom."), "{system}");
    }

    #[test]
    fn tool_calls_become_intents_and_nonsense_is_refused() {
        let h = home();
        let call = |name: &str, args: &str| json!({"choices": [{"message": {"tool_calls": [{"function": {"name": name, "arguments": args}}]}}]});
        let m = to_intent(&call("HassLightSet", r#"{"device_id": "light_k", "brightness": 30}"#), &h).unwrap().unwrap();
        assert_eq!(
            (m.intent.as_str(), m.device_ids(), m.response.as_str()),
            ("HassLightSet", vec!["light_k"], "brightness")
        );
        assert_eq!(m.slots["brightness"].value, 30);
        assert!(to_intent(&call("HassTurnOn", r#"{"device_id": "ghost"}"#), &h).is_err());
        assert!(to_intent(&call("rm_rf", r#"{"device_id": "light_k"}"#), &h).is_err());
        assert!(to_intent(&call("HassLightSet", r#"{"device_id": "light_k"}"#), &h).is_err());
        assert!(to_intent(&json!({"choices": [{"message": {"content": "Sure!"}}]}), &h).unwrap().is_none());
        assert!(to_intent(&json!({"oops": 1}), &h).is_err());
    }
}
