//! The `info` event: what a server offers, in the reference's shape (`asr`/`tts` programs with
//! attribution, models or voices, languages). Attribution names the engines' authors, as the
//! reference servers do.

use serde_json::{json, Value};

use crate::protocol::Event;

fn attribution(name: &str, url: &str) -> Value {
    json!({"name": name, "url": url})
}

/// `info` for an ASR server: one program with one model.
pub fn asr(model: &str, description: &str, languages: &[String]) -> Event {
    let whisper = attribution("OpenAI Whisper, whisper.cpp", "https://github.com/ggerganov/whisper.cpp");
    Event::with_data(
        "info",
        json!({
            "asr": [{
                "name": "alicia-whisper",
                "attribution": whisper,
                "installed": true,
                "description": "Alicia speech to text (whisper.cpp)",
                "version": env!("CARGO_PKG_VERSION"),
                "models": [{
                    "name": model,
                    "attribution": whisper,
                    "installed": true,
                    "description": description,
                    "version": null,
                    "languages": languages,
                }],
                "supports_transcript_streaming": false,
            }],
            "tts": [], "handle": [], "intent": [], "wake": [], "mic": [], "snd": [],
        }),
    )
}

/// One voice in a TTS `info`.
pub struct VoiceInfo {
    pub name: String,
    pub description: String,
    pub languages: Vec<String>,
}

/// `info` for a TTS server: one program, its voices.
pub fn tts(voices: &[VoiceInfo]) -> Event {
    let piper = attribution("Piper (rhasspy)", "https://github.com/rhasspy/piper");
    let voices: Vec<Value> = voices
        .iter()
        .map(|v| {
            json!({
                "name": v.name,
                "attribution": piper,
                "installed": true,
                "description": v.description,
                "version": null,
                "languages": v.languages,
                "speakers": null,
            })
        })
        .collect();
    Event::with_data(
        "info",
        json!({
            "asr": [],
            "tts": [{
                "name": "alicia-piper",
                "attribution": piper,
                "installed": true,
                "description": "Alicia text to speech (Piper voices)",
                "version": env!("CARGO_PKG_VERSION"),
                "voices": voices,
                "supports_synthesize_streaming": false,
            }],
            "handle": [], "intent": [], "wake": [], "mic": [], "snd": [],
        }),
    )
}

/// `info` for a wake word server: openWakeWord with its wake words.
pub fn wake(names: &[String]) -> Event {
    let oww = attribution("David Scripka (openWakeWord)", "https://github.com/dscripka/openWakeWord");
    let models: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({
                "name": n,
                "attribution": oww,
                "installed": true,
                "description": format!("openWakeWord {}", n.replace('_', " ")),
                "version": null,
                "languages": ["en"],
                "phrase": n.replace('_', " "),
            })
        })
        .collect();
    Event::with_data(
        "info",
        json!({
            "asr": [], "tts": [],
            "wake": [{
                "name": "alicia-openwakeword",
                "attribution": oww,
                "installed": true,
                "description": "Alicia wake word detection (openWakeWord models, CC BY-NC-SA 4.0)",
                "version": env!("CARGO_PKG_VERSION"),
                "models": models,
            }],
            "handle": [], "intent": [], "mic": [], "snd": [],
        }),
    )
}
