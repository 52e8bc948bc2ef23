//! Speech to text for Alicia.
//!
//! - [`SttEngine`]: whisper.cpp through whisper-rs. One model in memory, a fixed pool of worker
//!   threads each with its own decoder state, and a bound on work waiting: a request beyond it is
//!   answered [`SttError::Busy`] at once instead of queueing without limit (the service turns that
//!   into a "busy" response; another instance may take the work). Greedy decoding, the encoder's
//!   audio context sized to the clip (whisper.cpp otherwise encodes 30 s for every request: on two
//!   cores that is ~0.5 s for a 1.6 s clip instead of ~0.1 s), confidence from token
//!   probabilities, language forced or detected.
//! - [`vad::Vad`]: Silero VAD on ONNX Runtime, for end of speech in streamed audio.
//! - [`wake::WakeDetector`]: openWakeWord's wake word models on ONNX Runtime, for a server-side
//!   wake word in streamed audio (Wyoming's wake service).
//! - [`stream::SttStream`]: the streaming path (Wyoming `audio-start`/`audio-chunk`/
//!   `audio-stop`, satellites' mic topics): chunks in any PCM format are converted as they arrive,
//!   VAD runs on each, and the utterance is transcribed when the stream stops or VAD says speech
//!   ended. (whisper.cpp decodes a whole utterance, so "starting on the first chunk" means
//!   conversion and VAD run during the stream, and only decoding waits for its end.)

pub mod stream;
pub mod languages {
    //! The languages Whisper knows (ISO 639-1 codes, `en`, `de`, ...).
    pub fn all() -> Vec<&'static str> {
        (0..=whisper_rs::get_lang_max_id()).filter_map(whisper_rs::get_lang_str).collect()
    }
}
pub mod vad;
pub mod wake;
mod whisper;

pub use whisper::{SttConfig, SttEngine, Transcript};

/// Why a transcription did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SttError {
    /// Every worker is busy and the wait queue is full.
    #[error("speech to text is busy ({in_flight} requests in progress or waiting, limit {limit})")]
    Busy { in_flight: usize, limit: usize },
    #[error(transparent)]
    Audio(#[from] alicia_audio::AudioError),
    #[error("cannot load the Whisper model {path}: {reason}")]
    Model { path: String, reason: String },
    #[error("language `{0}` is not one Whisper knows")]
    Language(String),
    #[error("whisper failed: {0}")]
    Whisper(String),
    #[error("voice activity detection failed: {0}")]
    Vad(String),
    #[error("wake word detection failed: {0}")]
    Wake(String),
    /// The engine was dropped while the request waited.
    #[error("speech to text stopped")]
    Stopped,
}

impl SttError {
    /// A stable code for error responses.
    pub fn code(&self) -> &'static str {
        match self {
            SttError::Busy { .. } => "busy",
            SttError::Audio(a) => a.code(),
            SttError::Model { .. } => "model_unavailable",
            SttError::Language(_) => "unsupported_language",
            SttError::Whisper(_) | SttError::Stopped => "stt_failed",
            SttError::Vad(_) => "vad_failed",
            SttError::Wake(_) => "wake_failed",
        }
    }
}
