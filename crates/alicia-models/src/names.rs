//! The names configuration files use (`stt_service.whisper.model: base`,
//! `tts_service.piper.voice: en_US-lessac-medium`) mapped onto the manifest.
//!
//! A name the manifest has maps to itself. A few names the design document uses map to the
//! nearest model that is obtainable, and say so (`Resolved::note`), so the service can log it:
//! `base.en` to the multilingual `base` (it transcribes English as well when the language is
//! `en`), `en_US-lessac-medium` to `en_US-joe-medium` (fine-tuned from lessac medium: same
//! phonemes, same rate, same quality level). Any other name is an error that lists what is there.

use crate::error::ModelError;
use crate::manifest::{Kind, ModelSpec, MODELS};

/// A configured name and the model it resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub spec: &'static ModelSpec,
    pub requested: String,
    /// Set when the model is a stand-in for the one named.
    pub note: Option<String>,
}

/// Names the document uses that the manifest has no copy of, and the stand-in for each.
const SUBSTITUTES: &[(Kind, &str, &str, &str)] = &[
    (Kind::Whisper, "base.en", "base", "the multilingual base model, run with language `en`"),
    (Kind::PiperVoice, "en_US-lessac-medium", "en_US-joe-medium", "joe medium is fine-tuned from lessac medium"),
];

/// Resolves `stt_service.whisper.model`: `tiny.en`, `base`, the ids (`whisper-tiny.en`), or
/// whisper.cpp file names (`ggml-tiny.en.bin`).
pub fn whisper_model(name: &str) -> Result<Resolved, ModelError> {
    let bare = name.trim().trim_start_matches("ggml-").trim_end_matches(".bin");
    resolve(Kind::Whisper, bare, name)
}

/// Resolves `tts_service.piper.voice` (`en_US-joe-medium`, or its id).
pub fn piper_voice(name: &str) -> Result<Resolved, ModelError> {
    let bare = name.trim().trim_end_matches(".onnx");
    resolve(Kind::PiperVoice, bare, name)
}

fn resolve(kind: Kind, bare: &str, requested: &str) -> Result<Resolved, ModelError> {
    let of_kind = || MODELS.iter().filter(move |m| m.kind == kind);
    if let Some(spec) = of_kind().find(|m| m.name == bare || m.id == bare) {
        return Ok(Resolved { spec, requested: requested.to_string(), note: None });
    }
    for (k, from, to, why) in SUBSTITUTES {
        if *k == kind && *from == bare {
            if let Some(spec) = of_kind().find(|m| m.name == *to) {
                let note = format!("`{requested}` is not available; using `{to}` ({why})");
                return Ok(Resolved { spec, requested: requested.to_string(), note: Some(note) });
            }
        }
    }
    Err(ModelError::Unknown {
        kind: kind.as_str(),
        name: requested.to_string(),
        available: of_kind().map(|m| m.name.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_map_or_fail_naming_what_is_there() {
        assert_eq!(whisper_model("tiny.en").unwrap().spec.id, "whisper-tiny.en");
        assert_eq!(whisper_model("ggml-tiny.en.bin").unwrap().spec.id, "whisper-tiny.en");
        let base = whisper_model("base").unwrap();
        assert_eq!(base.spec.id, "whisper-base");
        assert!(base.note.is_none());
        let base_en = whisper_model("base.en").unwrap();
        assert_eq!(base_en.spec.id, "whisper-base");
        assert!(base_en.note.unwrap().contains("base.en"));

        let err = whisper_model("large").unwrap_err().to_string();
        assert!(err.contains("`large` is not available") && err.contains("tiny.en") && err.contains("base"), "{err}");

        let lessac = piper_voice("en_US-lessac-medium").unwrap();
        assert_eq!(lessac.spec.id, "piper-en_US-joe-medium");
        assert!(lessac.note.is_some());
        let err = piper_voice("de_DE-thorsten-high").unwrap_err().to_string();
        assert!(err.contains("en_US-joe-medium"), "{err}");
        // A Piper name is not a Whisper model.
        assert!(whisper_model("en_US-joe-medium").is_err());
    }
}
