//! Text to speech for Alicia: Piper voices (VITS, ONNX) on ONNX Runtime.
//!
//! The path of one request: the text is split into sentences ([`phonemes::sentences`]); each
//! sentence becomes IPA through espeak-ng run as a subprocess (GPL: never linked), then Piper
//! phoneme ids through the voice's `phoneme_id_map` ([`phonemes::PhonemeIds`]); the model turns
//! the ids into 16-bit audio at the voice's rate with the voice's scales (noise, length / rate,
//! noise width). Sentences are synthesised one after another and each is sent as soon as it is
//! ready ([`TtsEngine::stream`]), so playback can start after the first sentence. Whole results
//! are kept in a bounded LRU cache keyed by text, voice and rate.
//!
//! Busy voices: each voice has a fixed number of ONNX sessions; a sentence waits for a free
//! one, and a request that would make more than `queue` sentences wait is refused with
//! [`TtsError::Busy`].

pub mod phonemes;
mod voice;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

pub use voice::{SentenceTimings, Voice, VoiceConfig};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TtsError {
    #[error("voice `{name}` is not loaded; available: {}", available.join(", "))]
    UnknownVoice { name: String, available: Vec<String> },
    #[error("nothing to say")]
    EmptyText,
    #[error("the text is {len} characters long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("rate {0} is outside 0.25 to 4")]
    Rate(f32),
    #[error("voice: {0}")]
    Voice(String),
    #[error("espeak-ng: {0}")]
    Espeak(String),
    #[error("synthesis failed: {0}")]
    Synthesis(String),
    #[error("text to speech is busy ({waiting} sentences waiting, limit {limit})")]
    Busy { waiting: usize, limit: usize },
}

impl TtsError {
    /// A stable code for error responses.
    pub fn code(&self) -> &'static str {
        match self {
            TtsError::UnknownVoice { .. } => "unknown_voice",
            TtsError::EmptyText => "empty_text",
            TtsError::TooLong { .. } => "text_too_long",
            TtsError::Rate(_) => "invalid_rate",
            TtsError::Voice(_) => "voice_unavailable",
            TtsError::Espeak(_) | TtsError::Synthesis(_) => "tts_failed",
            TtsError::Busy { .. } => "busy",
        }
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct TtsConfig {
    /// Whole results kept (`tts_service.performance.cache_size`); 0 turns the cache off.
    pub cache_entries: usize,
    /// And at most this many bytes of audio in it.
    pub cache_bytes: usize,
    /// Longest text accepted, in characters.
    pub max_chars: usize,
    /// Sentences that may wait for a session, per voice, before requests are refused.
    pub queue: usize,
    /// ONNX sessions per voice (sentences synthesised at once).
    pub sessions_per_voice: usize,
    /// ONNX Runtime threads per session [default: the machine's cores / sessions].
    pub threads_per_session: Option<usize>,
    /// Silence between sentences, seconds.
    pub sentence_silence: f32,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            cache_entries: 100,
            cache_bytes: 64 << 20,
            max_chars: 5_000,
            queue: 32,
            sessions_per_voice: 1,
            threads_per_session: None,
            sentence_silence: 0.2,
        }
    }
}

/// What to say and how.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakOptions {
    /// A loaded voice's name; `None`: the first voice loaded.
    pub voice: Option<String>,
    /// Speaking rate: 1.0 normal, 2.0 twice as fast.
    pub rate: f32,
    /// Silence before the speech, seconds (speech recognisers miss a first word that starts at
    /// once: ~0.3 s helps Whisper).
    pub lead_in: f32,
}

impl Default for SpeakOptions {
    fn default() -> Self {
        SpeakOptions { voice: None, rate: 1.0, lead_in: 0.0 }
    }
}

/// One piece of a streamed result: 16-bit mono samples at `sample_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct TtsChunk {
    pub samples: Arc<Vec<i16>>,
    pub sample_rate: u32,
    /// Milliseconds from the request to this chunk being ready.
    pub ready_ms: f64,
    /// Of which this chunk's sentence waited for a free session of the voice (the queue)...
    pub queue_ms: f64,
    /// ...and ran in the model (0 for silence and for audio from the cache).
    pub inference_ms: f64,
    /// The last chunk.
    pub last: bool,
}

/// A whole result.
#[derive(Debug, Clone)]
pub struct Speech {
    pub samples: Arc<Vec<i16>>,
    pub sample_rate: u32,
    pub voice: String,
    /// Milliseconds until the first sentence's audio was ready (0 from the cache).
    pub first_audio_ms: f64,
    pub total_ms: f64,
    /// Milliseconds its sentences waited for a free session of the voice, all together.
    pub queue_ms: f64,
    /// Milliseconds in the model, all sentences together.
    pub inference_ms: f64,
    pub cached: bool,
}

impl Speech {
    pub fn seconds(&self) -> f32 {
        self.samples.len() as f32 / self.sample_rate as f32
    }

    /// A 16-bit mono WAV file.
    pub fn to_wav(&self) -> Vec<u8> {
        alicia_audio::encode_wav(&self.samples, self.sample_rate, 1)
    }
}

#[derive(Hash, PartialEq, Eq)]
struct CacheKey {
    text: String,
    voice: String,
    rate_milli: u32,
    lead_milli: u32,
}

struct Cache {
    lru: Option<lru::LruCache<CacheKey, Arc<Vec<i16>>>>,
    bytes: usize,
    max_bytes: usize,
}

/// Loaded voices, the cache. Cheap to clone.
#[derive(Clone)]
pub struct TtsEngine {
    voices: Arc<Vec<Arc<Voice>>>,
    aliases: Arc<std::collections::HashMap<String, String>>,
    cache: Arc<Mutex<Cache>>,
    cfg: TtsConfig,
}

impl std::fmt::Debug for TtsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtsEngine").field("voices", &self.voice_names()).finish()
    }
}

impl TtsEngine {
    /// Loads the voices (`.onnx` files next to their `.onnx.json`). ONNX Runtime must be loaded
    /// ([`alicia_onnx::init`]).
    pub fn new(voices: &[PathBuf], cfg: TtsConfig) -> Result<Self, TtsError> {
        if voices.is_empty() {
            return Err(TtsError::Voice("no voice configured".into()));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let sessions = cfg.sessions_per_voice.max(1);
        let threads = cfg.threads_per_session.unwrap_or((cores / sessions).max(1));
        let loaded = voices
            .iter()
            .map(|p| Voice::load(p, sessions, threads, cfg.queue).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let lru = NonZeroUsize::new(cfg.cache_entries).map(lru::LruCache::new);
        tracing::info!(voices = ?loaded.iter().map(|v| v.name()).collect::<Vec<_>>(), "text to speech ready");
        Ok(TtsEngine {
            voices: Arc::new(loaded),
            aliases: Default::default(),
            cache: Arc::new(Mutex::new(Cache { lru, bytes: 0, max_bytes: cfg.cache_bytes })),
            cfg,
        })
    }

    pub fn voice_names(&self) -> Vec<String> {
        self.voices.iter().map(|v| v.name().to_string()).collect()
    }

    pub fn voices(&self) -> &[Arc<Voice>] {
        &self.voices
    }

    /// The voice called `name` (file stem, `en_US-joe-medium`, or the configuration name a
    /// model resolved from); `None`: the default (first) voice.
    pub fn voice(&self, name: Option<&str>) -> Result<Arc<Voice>, TtsError> {
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            None => Ok(self.voices[0].clone()),
            Some(n) => {
                let n = self.aliases.get(n).map_or(n, String::as_str);
                self.voices
                    .iter()
                    .find(|v| v.answers_to(n))
                    .cloned()
                    .ok_or_else(|| TtsError::UnknownVoice { name: n.to_string(), available: self.voice_names() })
            }
        }
    }

    /// Lets `alias` (a configured name such as `en_US-lessac-medium` that resolved to this
    /// voice) select `voice`.
    pub fn alias(&mut self, alias: &str, voice: &str) -> Result<(), TtsError> {
        let v = self.voice(Some(voice))?;
        Arc::make_mut(&mut self.aliases).insert(alias.to_string(), v.name().to_string());
        Ok(())
    }

    fn check(&self, text: &str, opts: &SpeakOptions) -> Result<(Arc<Voice>, Vec<String>), TtsError> {
        let len = text.chars().count();
        if len > self.cfg.max_chars {
            return Err(TtsError::TooLong { len, max: self.cfg.max_chars });
        }
        if !(0.25..=4.0).contains(&opts.rate) || !opts.rate.is_finite() {
            return Err(TtsError::Rate(opts.rate));
        }
        let voice = self.voice(opts.voice.as_deref())?;
        let sentences = phonemes::sentences(text);
        if sentences.is_empty() {
            return Err(TtsError::EmptyText);
        }
        Ok((voice, sentences))
    }

    fn key(text: &str, voice: &Voice, opts: &SpeakOptions) -> CacheKey {
        CacheKey {
            text: text.trim().to_string(),
            voice: voice.name().to_string(),
            rate_milli: (opts.rate * 1000.0).round() as u32,
            lead_milli: (opts.lead_in.clamp(0.0, 5.0) * 1000.0).round() as u32,
        }
    }

    fn cached(&self, key: &CacheKey) -> Option<Arc<Vec<i16>>> {
        let mut c = self.cache.lock();
        c.lru.as_mut()?.get(key).cloned()
    }

    fn remember(&self, key: CacheKey, samples: Arc<Vec<i16>>) {
        let mut c = self.cache.lock();
        let size = samples.len() * 2;
        if size > c.max_bytes {
            return;
        }
        let Cache { lru, bytes, max_bytes } = &mut *c;
        let Some(lru) = lru.as_mut() else { return };
        if let Some(old) = lru.put(key, samples) {
            *bytes -= old.len() * 2;
        }
        *bytes += size;
        while *bytes > *max_bytes || lru.len() > lru.cap().get() {
            match lru.pop_lru() {
                Some((_, v)) => *bytes -= v.len() * 2,
                None => break,
            }
        }
    }

    /// Entries and bytes in the cache.
    pub fn cache_usage(&self) -> (usize, usize) {
        let c = self.cache.lock();
        (c.lru.as_ref().map_or(0, |l| l.len()), c.bytes)
    }

    /// Synthesises sentence by sentence, sending each chunk as soon as it is ready (a leading
    /// silence chunk first when `lead_in` is set). Errors are sent in place of a chunk. Must be
    /// called inside a tokio runtime (the work runs on its blocking threads).
    pub fn stream(&self, text: &str, opts: &SpeakOptions) -> tokio::sync::mpsc::Receiver<Result<TtsChunk, TtsError>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let started = Instant::now();
        let ms = move || started.elapsed().as_secs_f64() * 1000.0;
        let (voice, sentences) = match self.check(text, opts) {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.try_send(Err(e));
                return rx;
            }
        };
        let key = Self::key(text, &voice, opts);
        let rate = voice.sample_rate();
        if let Some(samples) = self.cached(&key) {
            let chunk =
                TtsChunk { samples, sample_rate: rate, ready_ms: ms(), queue_ms: 0.0, inference_ms: 0.0, last: true };
            let _ = tx.try_send(Ok(chunk));
            return rx;
        }
        let engine = self.clone();
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            let lead = (opts.lead_in.clamp(0.0, 5.0) * rate as f32) as usize;
            if lead > 0 {
                let s = Arc::new(vec![0i16; lead]);
                all.extend_from_slice(&s);
                let chunk = TtsChunk {
                    samples: s,
                    sample_rate: rate,
                    ready_ms: ms(),
                    queue_ms: 0.0,
                    inference_ms: 0.0,
                    last: false,
                };
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return;
                }
            }
            let gap = (engine.cfg.sentence_silence.max(0.0) * rate as f32) as usize;
            let n = sentences.len();
            for (i, sentence) in sentences.iter().enumerate() {
                match voice.speak_timed(sentence, opts.rate) {
                    Ok((mut samples, t)) => {
                        let (queue_ms, inference_ms) = (t.queue_ms, t.inference_ms);
                        if i + 1 < n {
                            samples.extend(std::iter::repeat_n(0, gap));
                        }
                        all.extend_from_slice(&samples);
                        if i + 1 == n {
                            // Cached before the last chunk goes out: a repeat that follows the
                            // answer finds it.
                            engine.remember(key, Arc::new(std::mem::take(&mut all)));
                            let chunk = TtsChunk {
                                samples: Arc::new(samples),
                                sample_rate: rate,
                                ready_ms: ms(),
                                queue_ms,
                                inference_ms,
                                last: true,
                            };
                            let _ = tx.blocking_send(Ok(chunk));
                            return;
                        }
                        let chunk = TtsChunk {
                            samples: Arc::new(samples),
                            sample_rate: rate,
                            ready_ms: ms(),
                            queue_ms,
                            inference_ms,
                            last: i + 1 == n,
                        };
                        if tx.blocking_send(Ok(chunk)).is_err() {
                            return; // the listener went away: stop synthesising
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        });
        rx
    }

    /// The whole result (from the cache when it is there).
    pub async fn synthesize(&self, text: &str, opts: &SpeakOptions) -> Result<Speech, TtsError> {
        let started = Instant::now();
        let voice = self.check(text, opts)?.0;
        if let Some(samples) = self.cached(&Self::key(text, &voice, opts)) {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            return Ok(Speech {
                samples,
                sample_rate: voice.sample_rate(),
                voice: voice.name().into(),
                first_audio_ms: ms,
                total_ms: ms,
                queue_ms: 0.0,
                inference_ms: 0.0,
                cached: true,
            });
        }
        let mut rx = self.stream(text, opts);
        let mut samples = Vec::new();
        let mut first = None;
        let (mut queue_ms, mut inference_ms) = (0.0, 0.0);
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk?;
            queue_ms += chunk.queue_ms;
            inference_ms += chunk.inference_ms;
            if !chunk.samples.is_empty() && chunk.samples.iter().any(|s| *s != 0) && first.is_none() {
                first = Some(chunk.ready_ms);
            }
            samples.extend_from_slice(&chunk.samples);
            if chunk.last {
                break;
            }
        }
        let total = started.elapsed().as_secs_f64() * 1000.0;
        Ok(Speech {
            samples: Arc::new(samples),
            sample_rate: voice.sample_rate(),
            voice: voice.name().into(),
            first_audio_ms: first.unwrap_or(total),
            total_ms: total,
            queue_ms,
            inference_ms,
            cached: false,
        })
    }
}
