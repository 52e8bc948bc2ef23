//! Silero VAD (v5/v6 ONNX) for end of speech in streamed audio.
//!
//! The model takes 512-sample windows at 16 kHz (32 ms) preceded by the previous window's last
//! 64 samples, and carries a recurrent state between calls; it answers the probability that the
//! window is speech. Speech starts when a window reaches `threshold` and ends after
//! `min_silence_ms` below `neg_threshold` (hysteresis, as Silero's own iterator does).

use std::path::Path;

use alicia_onnx::ort;
use ort::session::Session;
use ort::value::Tensor;

use crate::SttError;

const WINDOW: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 2 * 128;

#[derive(Debug, Clone, Copy)]
pub struct VadConfig {
    pub threshold: f32,
    pub neg_threshold: f32,
    /// Silence that ends an utterance.
    pub min_silence_ms: u32,
    /// Speech shorter than this (a click, a cough) does not start an utterance.
    pub min_speech_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig { threshold: 0.5, neg_threshold: 0.35, min_silence_ms: 600, min_speech_ms: 100 }
    }
}

/// What the detector saw, with the time (ms from the stream's start) it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    SpeechStart { at_ms: u64 },
    SpeechEnd { at_ms: u64 },
}

pub struct Vad {
    session: Session,
    cfg: VadConfig,
    state: Vec<f32>,
    context: Vec<f32>,
    pending: Vec<f32>,
    /// Windows processed.
    windows: u64,
    in_speech: bool,
    speech_windows: u32,
    silence_windows: u32,
    speech_start: u64,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad").field("cfg", &self.cfg).field("in_speech", &self.in_speech).finish()
    }
}

const WINDOW_MS: u64 = (WINDOW as u64 * 1000) / 16_000;

impl Vad {
    /// Loads `silero_vad.onnx` (ONNX Runtime must be loaded: [`alicia_onnx::init`]).
    pub fn new(model: &Path, cfg: VadConfig) -> Result<Self, SttError> {
        let session = alicia_onnx::session(model, 1).map_err(|e| SttError::Vad(e.to_string()))?;
        let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for want in ["input", "state", "sr"] {
            if !names.contains(&want) {
                return Err(SttError::Vad(format!("{} is not a Silero VAD model (inputs {names:?})", model.display())));
            }
        }
        Ok(Vad {
            session,
            cfg,
            state: vec![0.0; STATE],
            context: vec![0.0; CONTEXT],
            pending: Vec::new(),
            windows: 0,
            in_speech: false,
            speech_windows: 0,
            silence_windows: 0,
            speech_start: 0,
        })
    }

    /// Forgets everything (a new stream).
    pub fn reset(&mut self) {
        self.state.fill(0.0);
        self.context.fill(0.0);
        self.pending.clear();
        self.windows = 0;
        self.in_speech = false;
        self.speech_windows = 0;
        self.silence_windows = 0;
    }

    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// The speech probability of one 512-sample window at 16 kHz (advances the state).
    pub fn probability(&mut self, window: &[f32]) -> Result<f32, SttError> {
        if window.len() != WINDOW {
            return Err(SttError::Vad(format!("a window is {WINDOW} samples, not {}", window.len())));
        }
        let err = |e: ort::Error| SttError::Vad(e.to_string());
        let mut input = Vec::with_capacity(CONTEXT + WINDOW);
        input.extend_from_slice(&self.context);
        input.extend_from_slice(window);
        let input = Tensor::from_array(([1usize, CONTEXT + WINDOW], input)).map_err(err)?;
        let state = Tensor::from_array(([2usize, 1, 128], self.state.clone())).map_err(err)?;
        let sr = Tensor::from_array(([1usize], vec![16_000i64])).map_err(err)?;
        let outputs = self.session.run(ort::inputs!["input" => input, "state" => state, "sr" => sr]).map_err(err)?;
        let (_, prob) = outputs["output"].try_extract_tensor::<f32>().map_err(err)?;
        let (_, next) = outputs["stateN"].try_extract_tensor::<f32>().map_err(err)?;
        let p = prob.first().copied().ok_or_else(|| SttError::Vad("no output".into()))?;
        if next.len() == STATE {
            self.state.copy_from_slice(next);
        }
        self.context.copy_from_slice(&window[WINDOW - CONTEXT..]);
        Ok(p)
    }

    /// Feeds 16 kHz mono samples (any amount); returns speech starts and ends they complete.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<VadEvent>, SttError> {
        self.pending.extend_from_slice(samples);
        let mut events = Vec::new();
        let min_speech = (self.cfg.min_speech_ms as u64).div_ceil(WINDOW_MS).max(1) as u32;
        let min_silence = (self.cfg.min_silence_ms as u64).div_ceil(WINDOW_MS).max(1) as u32;
        while self.pending.len() >= WINDOW {
            let window: Vec<f32> = self.pending.drain(..WINDOW).collect();
            let p = self.probability(&window)?;
            let now = self.windows;
            self.windows += 1;
            if !self.in_speech {
                if p >= self.cfg.threshold {
                    if self.speech_windows == 0 {
                        self.speech_start = now;
                    }
                    self.speech_windows += 1;
                    if self.speech_windows >= min_speech {
                        self.in_speech = true;
                        self.silence_windows = 0;
                        events.push(VadEvent::SpeechStart { at_ms: self.speech_start * WINDOW_MS });
                    }
                } else {
                    self.speech_windows = 0;
                }
            } else if p < self.cfg.neg_threshold {
                self.silence_windows += 1;
                if self.silence_windows >= min_silence {
                    self.in_speech = false;
                    self.speech_windows = 0;
                    let end = now + 1 - self.silence_windows as u64;
                    events.push(VadEvent::SpeechEnd { at_ms: end * WINDOW_MS });
                }
            } else {
                self.silence_windows = 0;
            }
        }
        Ok(events)
    }
}
