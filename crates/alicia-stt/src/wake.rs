//! Wake word detection with openWakeWord's ONNX models, on ONNX Runtime.
//!
//! openWakeWord (David Scripka) is three models in a row, all run here as the reference's
//! streaming Python does (`openwakeword/utils.py`, `AudioFeatures`):
//!
//! 1. `melspectrogram.onnx`: int16-valued samples (as f32, not scaled to ±1) → 32 mel bands
//!    every 10 ms, then `x / 10 + 2`. Each 80 ms chunk (1280 samples) is computed with the
//!    480 samples before it, which gives exactly its 8 frames.
//! 2. `embedding_model.onnx`: the last 76 mel frames (`[1, 76, 32, 1]`) → a 96-value
//!    embedding, one per 80 ms chunk.
//! 3. one model per wake word (`alexa.onnx`, `hey_mycroft_v0.1.onnx`): the last 16 embeddings
//!    (`[1, 16, 96]`, 1.28 s) → the probability that the word was just said.
//!
//! The embedding history starts as the embeddings of low noise (the reference uses 4 s of
//! random ±1000 noise) and the first five scores of a stream are ignored, as the reference
//! does, so a stream's start is never a detection. A word fires when its score reaches the
//! threshold, then not again for [`REFRACTORY_MS`] of audio (one utterance of it scores high
//! for several chunks, and may dip between its syllables), as `wyoming-openwakeword` does.
//!
//! Written here rather than taken from a crate: the one Rust port (`oww-rs`) embeds its
//! models in the binary and runs them on tract; Alicia already runs ONNX Runtime for Piper and
//! Silero, and fetches models into its store (the pre-trained models are CC BY-NC-SA 4.0:
//! never bundled).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use alicia_onnx::ort;
use ort::session::Session;
use ort::value::Tensor;

use crate::SttError;

/// Samples per step (80 ms at 16 kHz).
pub const CHUNK: usize = 1280;
/// Samples before a chunk that its mel frames need (the STFT's window overlap).
const MEL_CONTEXT: usize = 480;
const MEL_BANDS: usize = 32;
const MEL_WINDOW: usize = 76;
const EMBEDDING: usize = 96;
const WORD_WINDOW: usize = 16;
/// Scores ignored at a stream's start (the reference's `prediction_buffer` warm-up).
const WARM_UP: u64 = 5;
/// After a word fires, audio in which it cannot fire again (`wyoming-openwakeword`'s
/// `--refractory-seconds` default).
pub const REFRACTORY_MS: u64 = 2_000;
const CHUNK_MS: u64 = CHUNK as u64 * 1000 / 16_000;

/// The files of openWakeWord: the two feature models and the wake word models by name.
#[derive(Debug, Clone)]
pub struct WakeModels {
    pub melspectrogram: PathBuf,
    pub embedding: PathBuf,
    /// (wake word name as it is asked for, `alexa`; its model).
    pub words: Vec<(String, PathBuf)>,
}

impl WakeModels {
    /// From the model store's files in their order: `melspectrogram.onnx`,
    /// `embedding_model.onnx`, then one model per name in `words` (`alicia_models::openwakeword`
    /// and `alicia_models::WAKE_WORDS`). `None` when there are fewer files than that.
    pub fn from_files(files: &[PathBuf], words: &[&str]) -> Option<Self> {
        let [melspectrogram, embedding, rest @ ..] = files else { return None };
        if rest.len() < words.len() {
            return None;
        }
        Some(WakeModels {
            melspectrogram: melspectrogram.clone(),
            embedding: embedding.clone(),
            words: words.iter().zip(rest).map(|(n, f)| (n.to_string(), f.clone())).collect(),
        })
    }

    /// The wake words' names.
    pub fn names(&self) -> Vec<String> {
        self.words.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// A wake word heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub name: String,
    pub score: f32,
    /// The end of the 80 ms chunk it was heard in, from the stream's start.
    pub at_ms: u64,
}

struct Word {
    name: String,
    session: Session,
    input: String,
    /// The chunk count before which it may not fire again.
    quiet_until: u64,
}

/// One stream's detector (the feature history belongs to one stream).
pub struct WakeDetector {
    mel: Session,
    mel_input: String,
    embedding: Session,
    embedding_input: String,
    words: Vec<Word>,
    threshold: f32,
    /// The last `MEL_CONTEXT + CHUNK` samples, int16-valued.
    raw: VecDeque<f32>,
    pending: Vec<f32>,
    mels: VecDeque<[f32; MEL_BANDS]>,
    features: VecDeque<[f32; EMBEDDING]>,
    /// The features a stream starts with (of low noise).
    initial: Vec<[f32; EMBEDDING]>,
    chunks: u64,
    best: f32,
}

impl std::fmt::Debug for WakeDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.words.iter().map(|w| w.name.as_str()).collect();
        f.debug_struct("WakeDetector").field("words", &names).field("threshold", &self.threshold).finish()
    }
}

fn err(e: impl std::fmt::Display) -> SttError {
    SttError::Wake(e.to_string())
}

fn load(path: &Path) -> Result<(Session, String), SttError> {
    let session = alicia_onnx::session(path, 1).map_err(err)?;
    let input = session
        .inputs()
        .first()
        .map(|i| i.name().to_string())
        .ok_or_else(|| SttError::Wake(format!("{} has no input", path.display())))?;
    Ok((session, input))
}

/// Runs `session` on one f32 tensor; its first output, flattened.
fn run(session: &mut Session, input: &str, shape: &[usize], data: Vec<f32>) -> Result<Vec<f32>, SttError> {
    let t = Tensor::from_array((shape.to_vec(), data)).map_err(err)?;
    let outputs = session.run(ort::inputs![input => t]).map_err(err)?;
    let (_, v) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
    Ok(v.to_vec())
}

impl WakeDetector {
    /// Loads the models (ONNX Runtime must be loaded: [`alicia_onnx::init`]); only the words
    /// in `only` when it is not empty (Wyoming's `detect` names them). `threshold` is the score
    /// that fires (the reference's default is 0.5).
    pub fn new(models: &WakeModels, only: &[String], threshold: f32) -> Result<Self, SttError> {
        let (mel, mel_input) = load(&models.melspectrogram)?;
        let (embedding, embedding_input) = load(&models.embedding)?;
        let mut words = Vec::new();
        for (name, path) in &models.words {
            if only.is_empty() || only.iter().any(|o| same_name(o, name)) {
                let (session, input) = load(path)?;
                words.push(Word { name: name.clone(), session, input, quiet_until: 0 });
            }
        }
        if words.is_empty() {
            return Err(SttError::Wake(format!(
                "no wake word model for {only:?} (known: {})",
                models.names().join(", ")
            )));
        }
        let mut d = WakeDetector {
            mel,
            mel_input,
            embedding,
            embedding_input,
            words,
            threshold,
            raw: VecDeque::new(),
            pending: Vec::new(),
            mels: VecDeque::new(),
            features: VecDeque::new(),
            initial: Vec::new(),
            chunks: 0,
            best: 0.0,
        };
        d.initial = d.noise_features()?;
        d.reset();
        Ok(d)
    }

    /// The words it listens for.
    pub fn names(&self) -> Vec<String> {
        self.words.iter().map(|w| w.name.clone()).collect()
    }

    /// The highest score seen since the last reset (for "not detected" diagnostics).
    pub fn best_score(&self) -> f32 {
        self.best
    }

    /// Forgets the stream (a new `audio-start`).
    pub fn reset(&mut self) {
        self.raw = std::iter::repeat_n(0.0, MEL_CONTEXT).collect();
        self.pending.clear();
        self.mels = std::iter::repeat_n([1.0; MEL_BANDS], MEL_WINDOW).collect();
        self.features = self.initial.iter().copied().collect();
        self.chunks = 0;
        self.best = 0.0;
        for w in &mut self.words {
            w.quiet_until = 0;
        }
    }

    /// Embeddings of 4 s of deterministic low noise (±1000, as the reference's random start).
    fn noise_features(&mut self) -> Result<Vec<[f32; EMBEDDING]>, SttError> {
        let mut seed: u32 = 0x2545_f491;
        let noise: Vec<f32> = (0..16_000 * 4)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed % 2000) as f32 - 1000.0
            })
            .collect();
        let n = (noise.len() - 512) / 160 + 1;
        let flat = run(&mut self.mel, &self.mel_input, &[1, noise.len()], noise)?;
        let mels: Vec<[f32; MEL_BANDS]> = frames(&flat, n);
        let mut out = Vec::new();
        let mut end = MEL_WINDOW;
        while end <= mels.len() {
            out.push(self.embed(&mels[end - MEL_WINDOW..end])?);
            end += 8;
        }
        let keep = out.len().saturating_sub(WORD_WINDOW);
        Ok(out.split_off(keep))
    }

    fn embed(&mut self, window: &[[f32; MEL_BANDS]]) -> Result<[f32; EMBEDDING], SttError> {
        let data: Vec<f32> = window.iter().flatten().copied().collect();
        let v = run(&mut self.embedding, &self.embedding_input, &[1, MEL_WINDOW, MEL_BANDS, 1], data)?;
        v.try_into()
            .map_err(|v: Vec<f32>| SttError::Wake(format!("an embedding of {} values, not {EMBEDDING}", v.len())))
    }

    /// Feeds 16 kHz mono samples in ±1 (any amount); returns the words they complete.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<Detection>, SttError> {
        self.pending.extend(samples.iter().map(|s| (s * 32767.0).clamp(-32768.0, 32767.0).round()));
        let mut heard = Vec::new();
        while self.pending.len() >= CHUNK {
            let chunk: Vec<f32> = self.pending.drain(..CHUNK).collect();
            self.raw.extend(chunk);
            while self.raw.len() > MEL_CONTEXT + CHUNK {
                self.raw.pop_front();
            }
            self.step(&mut heard)?;
        }
        Ok(heard)
    }

    fn step(&mut self, heard: &mut Vec<Detection>) -> Result<(), SttError> {
        let input: Vec<f32> = self.raw.iter().copied().collect();
        let len = input.len();
        let flat = run(&mut self.mel, &self.mel_input, &[1, len], input)?;
        for f in frames(&flat, (len - 512) / 160 + 1) {
            self.mels.push_back(f);
        }
        while self.mels.len() > MEL_WINDOW {
            self.mels.pop_front();
        }
        let window: Vec<[f32; MEL_BANDS]> = self.mels.iter().copied().collect();
        let e = self.embed(&window)?;
        self.features.push_back(e);
        while self.features.len() > WORD_WINDOW {
            self.features.pop_front();
        }
        self.chunks += 1;
        let data: Vec<f32> = self.features.iter().flatten().copied().collect();
        let at_ms = self.chunks * CHUNK_MS;
        for w in &mut self.words {
            let v = run(&mut w.session, &w.input, &[1, WORD_WINDOW, EMBEDDING], data.clone())?;
            let score = v.first().copied().unwrap_or(0.0);
            if self.chunks <= WARM_UP {
                continue;
            }
            self.best = self.best.max(score);
            if score >= self.threshold && self.chunks >= w.quiet_until {
                w.quiet_until = self.chunks + REFRACTORY_MS.div_ceil(CHUNK_MS);
                heard.push(Detection { name: w.name.clone(), score, at_ms });
            }
        }
        Ok(())
    }
}

/// The mel output (`[1, 1, frames, 32]`, flattened) as frames, transformed as the reference
/// does (`x / 10 + 2`); at most `n`.
fn frames(flat: &[f32], n: usize) -> Vec<[f32; MEL_BANDS]> {
    flat.chunks_exact(MEL_BANDS)
        .take(n)
        .map(|c| {
            let mut f = [0.0; MEL_BANDS];
            for (o, v) in f.iter_mut().zip(c) {
                *o = v / 10.0 + 2.0;
            }
            f
        })
        .collect()
}

/// `hey_mycroft`, `Hey Mycroft`, `hey mycroft` and `hey-mycroft` are one name.
pub fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String { s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect() };
    norm(a) == norm(b)
}
