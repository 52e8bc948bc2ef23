//! One Piper voice: its JSON configuration, its ONNX sessions.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use alicia_onnx::ort;
use ort::session::Session;
use ort::value::Tensor;
use parking_lot::{Condvar, Mutex};
use serde::Deserialize;

use crate::phonemes::{self, PhonemeIds};
use crate::TtsError;

#[derive(Deserialize)]
struct Json {
    audio: JsonAudio,
    #[serde(default)]
    espeak: Option<JsonEspeak>,
    inference: JsonInference,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default = "one")]
    num_speakers: u32,
    #[serde(default)]
    phoneme_type: Option<String>,
    #[serde(default)]
    language: Option<JsonLanguage>,
}

#[derive(Deserialize)]
struct JsonLanguage {
    code: String,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct JsonAudio {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct JsonEspeak {
    voice: String,
}

#[derive(Deserialize)]
struct JsonInference {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

/// The parts of the voice's JSON synthesis uses.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceConfig {
    pub sample_rate: u32,
    /// The espeak-ng voice its phonemes come from (`en-us`).
    pub espeak_voice: String,
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
    pub num_speakers: u32,
    /// `en_US`, when the JSON says.
    pub language: Option<String>,
}

/// Where one sentence's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SentenceTimings {
    /// espeak-ng (text to IPA).
    pub phonemize_ms: f64,
    /// Waiting for a free ONNX session of the voice: the queue.
    pub queue_ms: f64,
    /// The model.
    pub inference_ms: f64,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

pub struct Voice {
    name: String,
    config: VoiceConfig,
    ids: PhonemeIds,
    pool: Mutex<Pool>,
    freed: Condvar,
    queue: usize,
}

struct Pool {
    free: Vec<Session>,
    waiting: usize,
}

impl std::fmt::Debug for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voice").field("name", &self.name).field("config", &self.config).finish()
    }
}

impl Voice {
    /// Loads `model` (`.onnx`) and `model` + `.json`, with `sessions` ONNX sessions.
    pub fn load(model: &Path, sessions: usize, threads: usize, queue: usize) -> Result<Voice, TtsError> {
        let json_path = {
            let mut p = model.as_os_str().to_owned();
            p.push(".json");
            std::path::PathBuf::from(p)
        };
        let bad = |what: String| TtsError::Voice(format!("{}: {what}", json_path.display()));
        let text = std::fs::read_to_string(&json_path).map_err(|e| bad(e.to_string()))?;
        let json: Json = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if json.phoneme_type.as_deref().is_some_and(|t| t != "espeak") {
            return Err(bad(format!("phoneme type {:?} (only espeak voices are supported)", json.phoneme_type)));
        }
        let config = VoiceConfig {
            sample_rate: json.audio.sample_rate,
            espeak_voice: json.espeak.map(|e| e.voice).unwrap_or_else(|| "en-us".into()),
            noise_scale: json.inference.noise_scale,
            length_scale: json.inference.length_scale,
            noise_w: json.inference.noise_w,
            num_speakers: json.num_speakers,
            language: json.language.map(|l| l.code),
        };
        let ids = PhonemeIds::new(json.phoneme_id_map)?;
        let mut free = Vec::new();
        for _ in 0..sessions.max(1) {
            let s = alicia_onnx::session(model, threads).map_err(|e| TtsError::Voice(e.to_string()))?;
            let inputs: Vec<&str> = s.inputs().iter().map(|i| i.name()).collect();
            if !["input", "input_lengths", "scales"].iter().all(|n| inputs.contains(n)) {
                return Err(TtsError::Voice(format!("{} is not a Piper voice (inputs {inputs:?})", model.display())));
            }
            free.push(s);
        }
        let name = model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        phonemes::prepare(&config.espeak_voice);
        Ok(Voice { name, config, ids, pool: Mutex::new(Pool { free, waiting: 0 }), freed: Condvar::new(), queue })
    }

    /// The file stem: `en_US-joe-medium`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    pub(crate) fn answers_to(&self, name: &str) -> bool {
        let n = name.trim_end_matches(".onnx");
        n == self.name || n.strip_prefix("piper-") == Some(&self.name)
    }

    /// One sentence → 16-bit samples. Blocks while every session is busy (up to `queue`
    /// sentences wait; more are refused with `Busy`).
    pub fn speak(&self, sentence: &str, rate: f32) -> Result<Vec<i16>, TtsError> {
        self.speak_timed(sentence, rate).map(|(samples, _)| samples)
    }

    /// As [`Voice::speak`], with where the time went: espeak-ng, waiting for a session (the
    /// queue), and the model.
    pub fn speak_timed(&self, sentence: &str, rate: f32) -> Result<(Vec<i16>, SentenceTimings), TtsError> {
        let started = Instant::now();
        let phonemes = phonemes::phonemize(sentence, &self.config.espeak_voice)?;
        let mut timings = SentenceTimings { phonemize_ms: ms_since(started), ..SentenceTimings::default() };
        let (ids, unknown) = self.ids.ids(&phonemes);
        if !unknown.is_empty() {
            tracing::debug!(voice = %self.name, ?unknown, "phonemes the voice does not know were skipped");
        }
        if ids.len() <= 2 {
            return Ok((Vec::new(), timings));
        }
        let waiting = Instant::now();
        let mut session = self.acquire()?;
        timings.queue_ms = ms_since(waiting);
        let running = Instant::now();
        let result = self.run(&mut session, ids, rate);
        timings.inference_ms = ms_since(running);
        self.release(session);
        phonemes::prepare(&self.config.espeak_voice);
        result.map(|samples| (samples, timings))
    }

    fn acquire(&self) -> Result<Session, TtsError> {
        let mut pool = self.pool.lock();
        if pool.free.is_empty() {
            if pool.waiting >= self.queue {
                return Err(TtsError::Busy { waiting: pool.waiting, limit: self.queue });
            }
            pool.waiting += 1;
            while pool.free.is_empty() {
                self.freed.wait(&mut pool);
            }
            pool.waiting -= 1;
        }
        Ok(pool.free.pop().expect("a free session"))
    }

    fn release(&self, s: Session) {
        self.pool.lock().free.push(s);
        self.freed.notify_one();
    }

    fn run(&self, session: &mut Session, ids: Vec<i64>, rate: f32) -> Result<Vec<i16>, TtsError> {
        let err = |e: ort::Error| TtsError::Synthesis(e.to_string());
        let n = ids.len();
        let c = &self.config;
        let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
        let scales =
            Tensor::from_array(([3usize], vec![c.noise_scale, c.length_scale / rate, c.noise_w])).map_err(err)?;
        let outputs = if c.num_speakers > 1 {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(err)?;
            session.run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales, "sid" => sid])
        } else {
            session.run(ort::inputs!["input" => input, "input_lengths" => lengths, "scales" => scales])
        }
        .map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        Ok(alicia_audio::f32_to_i16(audio))
    }
}
