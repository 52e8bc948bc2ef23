//! The Whisper engine and its worker pool.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use parking_lot::Mutex;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

use crate::SttError;

const RATE: f32 = alicia_audio::SPEECH_RATE as f32;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct SttConfig {
    /// The ggml model file.
    pub model: PathBuf,
    /// Requests decoded at the same time (one decoder state each).
    pub workers: usize,
    /// whisper.cpp threads per request [default: the machine's cores / workers].
    pub threads_per_worker: Option<usize>,
    /// Requests that may wait for a worker; beyond `workers + queue` the engine answers Busy.
    pub queue: usize,
    /// Longest clip accepted, in seconds (`stt_service.performance.max_audio_length`).
    pub max_audio_seconds: f32,
    /// The language when a request names none (`stt_service.whisper.language`); `None` or
    /// `auto`: detected (multilingual models).
    pub language: Option<String>,
    /// Size the encoder's audio context to the clip (much faster on short clips).
    pub fit_audio_ctx: bool,
    /// Silence put before every clip, in seconds.
    pub lead_in_seconds: f32,
}

impl SttConfig {
    pub fn new(model: impl Into<PathBuf>) -> Self {
        SttConfig {
            model: model.into(),
            workers: 1,
            threads_per_worker: None,
            queue: 8,
            max_audio_seconds: 30.0,
            language: Some("en".into()),
            fit_audio_ctx: true,
            lead_in_seconds: 0.3,
        }
    }
}

/// A transcription and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// ISO 639-1 (`en`), as forced or detected.
    pub language: String,
    /// Geometric mean of the text tokens' probabilities, 0 to 1.
    pub confidence: f32,
    pub audio_seconds: f32,
    /// Time spent waiting for a worker.
    pub queue_ms: f64,
    /// Time spent decoding.
    pub inference_ms: f64,
}

struct Job {
    audio: Vec<f32>,
    language: Option<String>,
    enqueued: Instant,
    reply: tokio::sync::oneshot::Sender<Result<Transcript, SttError>>,
}

struct Shared {
    tx: mpsc::Sender<Job>,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
    multilingual: bool,
    config: SttConfig,
}

/// A loaded model and its workers. Cheap to clone; the workers stop when the last clone goes.
#[derive(Clone)]
pub struct SttEngine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SttEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SttEngine")
            .field("model", &self.shared.config.model)
            .field("limit", &self.shared.limit)
            .finish()
    }
}

impl SttEngine {
    /// Loads the model and starts the workers.
    pub fn new(config: SttConfig) -> Result<Self, SttError> {
        // whisper.cpp's and ggml's log lines go to tracing instead of stderr.
        whisper_rs::install_logging_hooks();
        let model_err = |reason: String| SttError::Model { path: config.model.display().to_string(), reason };
        if !config.model.is_file() {
            return Err(model_err("no such file".into()));
        }
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx = WhisperContext::new_with_params(&config.model, params).map_err(|e| model_err(e.to_string()))?;
        let multilingual = ctx.is_multilingual();
        // Text tokens come before the first special token, end of text.
        let tokens = Tokens { eot: ctx.token_eot(), beg: ctx.token_beg() };
        let workers = config.workers.max(1);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = config.threads_per_worker.unwrap_or((cores / workers).max(1));
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut states = Vec::new();
        for _ in 0..workers {
            states.push(ctx.create_state().map_err(|e| model_err(e.to_string()))?);
        }
        for (i, state) in states.into_iter().enumerate() {
            let rx = rx.clone();
            let in_flight = in_flight.clone();
            let cfg = config.clone();
            std::thread::Builder::new()
                .name(format!("whisper-{i}"))
                .spawn(move || worker(state, rx, in_flight, cfg, threads, tokens))
                .map_err(|e| model_err(format!("cannot start a worker: {e}")))?;
        }
        tracing::info!(model = %config.model.display(), workers, threads, multilingual, "speech to text ready");
        Ok(SttEngine {
            shared: Arc::new(Shared { tx, in_flight, limit: workers + config.queue, multilingual, config }),
        })
    }

    pub fn config(&self) -> &SttConfig {
        &self.shared.config
    }

    pub fn is_multilingual(&self) -> bool {
        self.shared.multilingual
    }

    /// Requests being decoded or waiting.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// `workers + queue`: beyond this the engine is busy.
    pub fn capacity(&self) -> usize {
        self.shared.limit
    }

    /// Queues a 16 kHz mono clip; `Busy` at once when the pool and its queue are full.
    fn submit(
        &self,
        audio: Vec<f32>,
        language: Option<&str>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Transcript, SttError>>, SttError> {
        if audio.is_empty() {
            return Err(alicia_audio::AudioError::Empty.into());
        }
        let seconds = audio.len() as f32 / RATE;
        let max = self.shared.config.max_audio_seconds;
        if seconds > max {
            return Err(alicia_audio::AudioError::TooLong { seconds, max }.into());
        }
        let language = self.language_for(language)?;
        let s = &self.shared;
        // Reserve a slot or refuse: the count covers decoding and waiting requests.
        let mut cur = s.in_flight.load(Ordering::SeqCst);
        loop {
            if cur >= s.limit {
                return Err(SttError::Busy { in_flight: cur, limit: s.limit });
            }
            match s.in_flight.compare_exchange(cur, cur + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        if s.tx.send(Job { audio, language, enqueued: Instant::now(), reply }).is_err() {
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(SttError::Stopped);
        }
        Ok(rx)
    }

    /// Transcribes a 16 kHz mono clip.
    pub async fn transcribe(&self, audio: Vec<f32>, language: Option<&str>) -> Result<Transcript, SttError> {
        self.submit(audio, language)?.await.map_err(|_| SttError::Stopped)?
    }

    /// As [`transcribe`](Self::transcribe), for threads outside an async runtime.
    pub fn transcribe_blocking(&self, audio: Vec<f32>, language: Option<&str>) -> Result<Transcript, SttError> {
        self.submit(audio, language)?.blocking_recv().map_err(|_| SttError::Stopped)?
    }

    /// Transcribes a WAV file in any format hound reads (the length limit is checked from its
    /// header before decoding).
    pub async fn transcribe_wav(&self, wav: &[u8], language: Option<&str>) -> Result<Transcript, SttError> {
        let audio = alicia_audio::wav_to_16k_mono(wav, Some(self.shared.config.max_audio_seconds))?;
        self.transcribe(audio, language).await
    }

    /// The language to decode with: `en-US` → `en`; `auto`/none → the configured default, or
    /// detection on a multilingual model. An English-only model decodes English only.
    fn language_for(&self, requested: Option<&str>) -> Result<Option<String>, SttError> {
        let pick = requested
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .or(self.shared.config.language.as_deref())
            .map(|l| l.split(['-', '_']).next().unwrap_or(l).to_ascii_lowercase());
        match pick.as_deref() {
            None | Some("auto") if self.shared.multilingual => Ok(None),
            None | Some("auto") | Some("en") => Ok(Some("en".into())),
            Some(l) if whisper_rs::get_lang_id(l).is_none() => Err(SttError::Language(l.to_string())),
            Some(l) if !self.shared.multilingual => Err(SttError::Language(format!(
                "{l} (the model is English only; configure `base` for other languages)"
            ))),
            Some(l) => Ok(Some(l.to_string())),
        }
    }
}

/// The first special token (end of text) and the first timestamp token, `<|0.00|>`.
#[derive(Clone, Copy)]
struct Tokens {
    eot: i32,
    beg: i32,
}

/// One greedy pass: the text, the sum of the text tokens' log probabilities, and their count.
fn run_once(
    state: &mut WhisperState,
    audio: &[f32],
    speech_end: f32,
    language: Option<&str>,
    threads: usize,
    tokens: Tokens,
    ctx: Option<i32>,
) -> Result<(String, f64, usize), SttError> {
    let seconds = audio.len() as f32 / RATE;
    let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    p.set_n_threads(threads as i32);
    p.set_translate(false);
    p.set_no_context(true);
    // With timestamp tokens the decoder ends the segment where the speech ends; without them
    // tiny.en tends to repeat the sentence.
    p.set_no_timestamps(false);
    p.set_single_segment(seconds <= 30.0);
    p.set_print_special(false);
    p.set_print_progress(false);
    p.set_print_realtime(false);
    p.set_print_timestamps(false);
    p.set_suppress_blank(true);
    p.set_temperature(0.0);
    // No fallback to sampling at higher temperatures: one greedy pass, bounded time.
    p.set_temperature_inc(0.0);
    // Bounds a runaway decode: far more tokens than anyone speaks in this time.
    p.set_max_tokens((seconds * 10.0) as i32 + 16);
    if let Some(ctx) = ctx {
        p.set_audio_ctx(ctx);
    }
    p.set_language(Some(language.unwrap_or("auto")));
    state.full(p, audio).map_err(|e| SttError::Whisper(e.to_string()))?;

    // Text tokens up to the first timestamp past the end of the audio: whatever the decoder
    // "hears" after that is the known hallucination (the sentence again), not speech.
    let mut bytes = Vec::new();
    let (mut logp, mut n) = (0f64, 0usize);
    'segments: for segment in state.as_iter() {
        for i in 0..segment.n_tokens() {
            let Some(tok) = segment.get_token(i) else { continue };
            let id = tok.token_id();
            if id >= tokens.beg {
                if (id - tokens.beg) as f32 * 0.02 > speech_end + 0.1 {
                    break 'segments;
                }
            } else if id < tokens.eot {
                bytes.extend_from_slice(tok.to_bytes().map_err(|e| SttError::Whisper(e.to_string()))?);
                logp += (tok.token_probability().max(1e-6) as f64).ln();
                n += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok((text, logp, n))
}

/// Whisper's known failure on short clips: the same sentence again (and again), or more tokens
/// than the speech could hold (6 per second is already fast speech). A command said twice in a
/// row is rare enough that a second decode to check it is cheap.
pub(crate) fn looped(text: &str, tokens: usize, speech_seconds: f32) -> bool {
    if tokens as f32 > 6.0 * speech_seconds + 10.0 {
        return true;
    }
    let sentences: Vec<String> =
        text.split(['.', '?', '!']).map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()).collect();
    sentences.windows(2).any(|w| w[0] == w[1] && w[0].contains(' '))
}

/// Encoder positions for a clip: whisper.cpp's encoder covers 30 s in 1500 positions (50 per
/// second). The window must reach about 2 s past the speech: with less (tried: 1 s) tiny.en does
/// not see the speech end and repeats the sentence until its token limit. Rounded up to a
/// multiple of 64.
pub(crate) fn audio_ctx(seconds: f32) -> i32 {
    let needed = (seconds * 50.0).ceil() as i32 + 100;
    ((needed + 63) / 64 * 64).clamp(128, 1500)
}

fn worker(
    mut state: WhisperState,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    in_flight: Arc<AtomicUsize>,
    cfg: SttConfig,
    threads: usize,
    tokens: Tokens,
) {
    loop {
        let job = {
            let guard = rx.lock();
            guard.recv()
        };
        let Ok(job) = job else { return };
        let started = Instant::now();
        let queue_ms = (started - job.enqueued).as_secs_f64() * 1000.0;
        let result = decode(&mut state, &job.audio, job.language.as_deref(), &cfg, threads, tokens).map(
            |(text, language, confidence)| Transcript {
                text,
                language,
                confidence,
                audio_seconds: job.audio.len() as f32 / RATE,
                queue_ms,
                inference_ms: started.elapsed().as_secs_f64() * 1000.0,
            },
        );
        in_flight.fetch_sub(1, Ordering::SeqCst);
        let _ = job.reply.send(result);
    }
}

fn decode(
    state: &mut WhisperState,
    audio: &[f32],
    language: Option<&str>,
    cfg: &SttConfig,
    threads: usize,
    tokens: Tokens,
) -> Result<(String, String, f32), SttError> {
    // Whisper misses a first word that starts right at the beginning (synthesised speech, a
    // clip cut by VAD): lead in with silence. And whisper.cpp decodes nothing from less than a
    // second: pad short clips.
    let speech_len = audio.len();
    let speech_seconds = speech_len as f32 / RATE;
    let lead = (RATE * cfg.lead_in_seconds) as usize;
    let len = (lead + audio.len()).max((RATE * 1.1) as usize);
    let padded: Vec<f32> =
        std::iter::repeat_n(0.0, lead).chain(audio.iter().copied()).chain(std::iter::repeat(0.0)).take(len).collect();
    let audio = &padded[..];
    let seconds = audio.len() as f32 / RATE;
    let fitted = cfg.fit_audio_ctx && seconds <= 30.0;
    let speech_end = (lead + speech_len) as f32 / RATE;
    let mut ctx = fitted.then(|| audio_ctx(seconds));
    let (mut text, mut logp, mut n) = run_once(state, audio, speech_end, language, threads, tokens, ctx)?;
    // A shortened audio context sometimes makes tiny.en loop on a short utterance ("Good night.
    // Good night. ..."), mostly with ~4-5 s windows; measured on Piper's "Good night.", a
    // 7.7 s window (384) did not loop in 12 of 12 runs where the fitted 3.8 s one looped in most.
    // So: decode again with 384 (or twice the context), and at last with the full 30 s.
    while let Some(c) = ctx.filter(|_| looped(&text, n, speech_seconds)) {
        let next = if c < 1500 { Some((c * 2).clamp(384, 1500)) } else { None };
        tracing::debug!(%text, ctx = c, next = ?next, "whisper looped; decoding with a larger audio context");
        ctx = next;
        let Some(c) = next else { break };
        (text, logp, n) = run_once(state, audio, speech_end, language, threads, tokens, (c < 1500).then_some(c))?;
    }
    let confidence = if n == 0 { 0.0 } else { (logp / n as f64).exp() as f32 };
    let language = match language {
        Some(l) => l.to_string(),
        None => whisper_rs::get_lang_str(state.full_lang_id_from_state()).unwrap_or("en").to_string(),
    };
    Ok((text.trim().to_string(), language, confidence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_recognised() {
        assert!(looped("Good night. Good night. Good night.", 9, 0.8));
        assert!(looped("turn on the kitchen light turn on the kitchen light", 40, 1.5));
        assert!(!looped("Good night.", 3, 0.8));
        assert!(looped("Good night. Good night.", 6, 0.8));
        assert!(!looped("No. No. Yes.", 6, 1.5));
    }

    #[test]
    fn audio_ctx_covers_the_clip() {
        assert_eq!(audio_ctx(0.5), 128);
        assert_eq!(audio_ctx(1.6), 192);
        assert_eq!(audio_ctx(2.0), 256);
        assert_eq!(audio_ctx(7.0), 512);
        assert_eq!(audio_ctx(29.9), 1500);
        for s in [1.0f32, 3.3, 10.0, 20.0] {
            assert!(audio_ctx(s) as f32 >= s * 50.0 + 100.0);
        }
    }
}
