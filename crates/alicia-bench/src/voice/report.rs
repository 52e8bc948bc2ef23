//! What the voice scenario measured: distributions in milliseconds, the report (text and
//! JSON), and the ratios against the references and the goals.

use serde_json::{json, Value};

/// A distribution in milliseconds (nearest-rank percentiles of every sample: the runs are
/// small enough to keep them all).
#[derive(Debug, Clone, PartialEq)]
pub struct Ms {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: usize,
}

impl Ms {
    /// `None` without samples.
    pub fn of(values: &[f64]) -> Option<Ms> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[(((v.len() as f64) * p).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Ms {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            samples: v.len(),
        })
    }

    pub fn json(m: &Option<Ms>) -> Value {
        match m {
            Some(m) => json!({"p50_ms": r2(m.p50), "p90_ms": r2(m.p90), "p99_ms": r2(m.p99), "max_ms": r2(m.max),
                              "mean_ms": r2(m.mean), "samples": m.samples}),
            None => Value::Null,
        }
    }
}

fn r2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn r3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// STT of one utterance, one request at a time, through the router.
#[derive(Debug, Clone, Default)]
pub struct SttLatency {
    pub synth: String,
    pub text: String,
    pub seconds: f64,
    pub heard: String,
    /// Request sent → response received, at the requester.
    pub round_trip: Option<Ms>,
    /// The service's own `timings_ms`.
    pub service_total: Option<Ms>,
    pub decode_audio: Option<Ms>,
    pub queue: Option<Ms>,
    pub inference: Option<Ms>,
    pub failed: u64,
}

/// TTS of one sentence streamed to a satellite, one request at a time.
#[derive(Debug, Clone, Default)]
pub struct TtsLatency {
    pub text: String,
    pub audio_seconds: f64,
    /// Request sent → the first `audio-chunk` on the satellite's `snd` topic.
    pub first_audio: Option<Ms>,
    /// Request sent → `audio-stop` there.
    pub total: Option<Ms>,
    /// The service's own `timings_ms`.
    pub service_first_audio: Option<Ms>,
    pub queue: Option<Ms>,
    pub inference: Option<Ms>,
    pub failed: u64,
}

/// Word error rate over one synthesiser's utterances.
#[derive(Debug, Clone, Default)]
pub struct Wer {
    pub synth: String,
    pub utterances: usize,
    pub alicia: f64,
    pub faster_whisper_float32: Option<f64>,
    pub faster_whisper_int8: Option<f64>,
    /// Alicia's misheard utterances: (said, heard).
    pub misheard: Vec<(String, String)>,
}

/// The sustained phase: satellites streaming utterances and hearing the answer, at once.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    pub sessions: usize,
    pub seconds: f64,
    /// Whole sessions (utterance streamed, transcript, answer spoken).
    pub completed: u64,
    /// Refused as busy (STT or TTS), and any other failure (timeouts, errors).
    pub busy: u64,
    pub errors: u64,
    /// Utterances whose VAD ended them before the satellite's `audio-stop`.
    pub ended_by_vad: u64,
    pub audio_in_seconds: f64,
    pub audio_out_seconds: f64,
    /// Word error rate of the transcripts heard under load.
    pub wer: f64,
    /// `audio-stop` sent → `transcript` received (0 when VAD ended the utterance first).
    pub stt_after_stop: Option<Ms>,
    /// The STT service's timings: waiting for a Whisper worker, decoding.
    pub stt_queue: Option<Ms>,
    pub stt_inference: Option<Ms>,
    /// TTS request sent → first `audio-chunk`, and → `audio-stop`.
    pub tts_first_audio: Option<Ms>,
    pub tts_total: Option<Ms>,
    /// The TTS service's timings: waiting for the voice's session, the model.
    pub tts_queue: Option<Ms>,
    pub tts_inference: Option<Ms>,
    /// `audio-start` → the answer's `audio-stop`.
    pub session_total: Option<Ms>,
    /// The first failures, for the report.
    pub error_examples: Vec<String>,
}

impl Sessions {
    pub fn per_minute(&self) -> f64 {
        if self.seconds > 0.0 {
            self.completed as f64 * 60.0 / self.seconds
        } else {
            0.0
        }
    }
}

/// The Python references' numbers (same audio, same weights).
#[derive(Debug, Clone, Default)]
pub struct Reference {
    pub faster_whisper_float32: Option<Ms>,
    pub faster_whisper_int8: Option<Ms>,
    pub faster_whisper_heard: String,
    pub piper_first_audio: Option<Ms>,
    pub piper_total: Option<Ms>,
    /// Phoneme ids identical to piper-tts's own phonemizer: (same, of).
    pub ids_same: Option<(usize, usize)>,
    /// Why there is none.
    pub skipped: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct VoiceReport {
    pub model: String,
    pub voice: String,
    pub stt: SttLatency,
    pub tts: TtsLatency,
    pub wer: Vec<Wer>,
    pub sessions: Sessions,
    pub reference: Reference,
}

/// Goals of issue 13.
pub const STT_GOAL_MS: f64 = 150.0;
pub const TTS_GOAL_MS: f64 = 80.0;

fn ratio(reference: &Option<Ms>, ours: &Option<Ms>) -> Option<f64> {
    match (reference, ours) {
        (Some(r), Some(o)) if o.p50 > 0.0 => Some(r.p50 / o.p50),
        _ => None,
    }
}

impl VoiceReport {
    /// faster-whisper's p50 over Alicia's: above 1, Alicia is faster. Alicia's side is the
    /// round trip through the bus; the references run in process.
    pub fn stt_ratio_float32(&self) -> Option<f64> {
        ratio(&self.reference.faster_whisper_float32, &self.stt.round_trip)
    }
    pub fn stt_ratio_int8(&self) -> Option<f64> {
        ratio(&self.reference.faster_whisper_int8, &self.stt.round_trip)
    }
    /// piper-tts's time to first audio over Alicia's (first chunk at the satellite).
    pub fn tts_ratio(&self) -> Option<f64> {
        ratio(&self.reference.piper_first_audio, &self.tts.first_audio)
    }

    pub fn stt_goal_met(&self) -> Option<bool> {
        self.stt.round_trip.as_ref().map(|m| m.p50 <= STT_GOAL_MS)
    }
    pub fn tts_goal_met(&self) -> Option<bool> {
        self.tts.first_audio.as_ref().map(|m| m.p50 <= TTS_GOAL_MS)
    }
    /// Every session ran to its end (nothing refused busy, nothing failed).
    pub fn sessions_sustained(&self) -> bool {
        let s = &self.sessions;
        s.completed >= s.sessions as u64 && s.busy == 0 && s.errors == 0
    }

    pub fn to_json(&self) -> String {
        let s = &self.sessions;
        let opt = |v: Option<f64>| v.map(r3);
        json!({
            "scenario": "voice",
            "model": self.model,
            "voice": self.voice,
            "stt": {
                "utterance": {"synth": self.stt.synth, "text": self.stt.text, "seconds": r3(self.stt.seconds)},
                "heard": self.stt.heard,
                "failed": self.stt.failed,
                "round_trip": Ms::json(&self.stt.round_trip),
                "service_total": Ms::json(&self.stt.service_total),
                "decode_audio": Ms::json(&self.stt.decode_audio),
                "queue": Ms::json(&self.stt.queue),
                "inference": Ms::json(&self.stt.inference),
            },
            "tts": {
                "text": self.tts.text,
                "audio_seconds": r3(self.tts.audio_seconds),
                "failed": self.tts.failed,
                "first_audio": Ms::json(&self.tts.first_audio),
                "total": Ms::json(&self.tts.total),
                "service_first_audio": Ms::json(&self.tts.service_first_audio),
                "queue": Ms::json(&self.tts.queue),
                "inference": Ms::json(&self.tts.inference),
            },
            "wer": self.wer.iter().map(|w| json!({
                "synth": w.synth, "utterances": w.utterances, "alicia": r3(w.alicia),
                "faster_whisper_float32": opt(w.faster_whisper_float32), "faster_whisper_int8": opt(w.faster_whisper_int8),
                "misheard": w.misheard.iter().map(|(a, b)| json!({"said": a, "heard": b})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "sessions": {
                "sessions": s.sessions, "seconds": r3(s.seconds), "completed": s.completed,
                "per_minute": r3(s.per_minute()), "busy": s.busy, "errors": s.errors, "ended_by_vad": s.ended_by_vad,
                "audio_in_seconds": r3(s.audio_in_seconds), "audio_out_seconds": r3(s.audio_out_seconds),
                "wer": r3(s.wer),
                "stt_after_stop": Ms::json(&s.stt_after_stop), "stt_queue": Ms::json(&s.stt_queue),
                "stt_inference": Ms::json(&s.stt_inference), "tts_first_audio": Ms::json(&s.tts_first_audio),
                "tts_total": Ms::json(&s.tts_total), "tts_queue": Ms::json(&s.tts_queue),
                "tts_inference": Ms::json(&s.tts_inference), "session_total": Ms::json(&s.session_total),
                "error_examples": s.error_examples,
            },
            "reference": {
                "skipped": self.reference.skipped,
                "faster_whisper_float32": Ms::json(&self.reference.faster_whisper_float32),
                "faster_whisper_int8": Ms::json(&self.reference.faster_whisper_int8),
                "faster_whisper_heard": self.reference.faster_whisper_heard,
                "piper_first_audio": Ms::json(&self.reference.piper_first_audio),
                "piper_total": Ms::json(&self.reference.piper_total),
                "phoneme_ids_same": self.reference.ids_same.map(|(a, b)| json!({"same": a, "of": b})),
            },
            "ratios": {
                "stt_p50_faster_whisper_float32_over_alicia": opt(self.stt_ratio_float32()),
                "stt_p50_faster_whisper_int8_over_alicia": opt(self.stt_ratio_int8()),
                "tts_first_audio_p50_piper_over_alicia": opt(self.tts_ratio()),
            },
            "goals": {
                "stt_p50_ms": STT_GOAL_MS, "stt_met": self.stt_goal_met(),
                "tts_first_audio_p50_ms": TTS_GOAL_MS, "tts_met": self.tts_goal_met(),
                "sessions": s.sessions, "sessions_sustained": self.sessions_sustained(),
            },
        })
        .to_string()
    }
}

fn line(f: &mut std::fmt::Formatter<'_>, name: &str, m: &Option<Ms>) -> std::fmt::Result {
    match m {
        Some(m) => writeln!(
            f,
            "  {name:<34} p50 {:>8.1}  p90 {:>8.1}  p99 {:>8.1}  max {:>8.1} ms  ({} samples)",
            m.p50, m.p90, m.p99, m.max, m.samples
        ),
        None => writeln!(f, "  {name:<34} (no samples)"),
    }
}

fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "not measured",
    }
}

impl std::fmt::Display for VoiceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (stt, tts, s, r) = (&self.stt, &self.tts, &self.sessions, &self.reference);
        writeln!(f, "voice: whisper {} and Piper {}, through the router", self.model, self.voice)?;
        writeln!(
            f,
            "STT, {} utterance {:?} ({:.2} s), one request at a time; heard {:?}{}",
            stt.synth,
            stt.text,
            stt.seconds,
            stt.heard,
            if stt.failed > 0 { format!(", {} failed", stt.failed) } else { String::new() }
        )?;
        line(f, "request -> response (Alicia, bus)", &stt.round_trip)?;
        line(f, "  service total", &stt.service_total)?;
        line(f, "  of which queue wait", &stt.queue)?;
        line(f, "  of which inference", &stt.inference)?;
        line(f, "faster-whisper float32 (in process)", &r.faster_whisper_float32)?;
        line(f, "faster-whisper int8 (in process)", &r.faster_whisper_int8)?;
        writeln!(
            f,
            "TTS, {:?} ({:.2} s of audio) to a satellite, cache off{}",
            tts.text,
            tts.audio_seconds,
            if tts.failed > 0 { format!(", {} failed", tts.failed) } else { String::new() }
        )?;
        line(f, "request -> first audio-chunk", &tts.first_audio)?;
        line(f, "request -> audio-stop", &tts.total)?;
        line(f, "  service first audio", &tts.service_first_audio)?;
        line(f, "  of which queue wait", &tts.queue)?;
        line(f, "  of which inference (all sentences)", &tts.inference)?;
        line(f, "piper-tts first audio (in process)", &r.piper_first_audio)?;
        line(f, "piper-tts whole sentence", &r.piper_total)?;
        for w in &self.wer {
            let fw = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1} %", 100.0 * v));
            writeln!(
                f,
                "WER, {} {} utterances: Alicia {:.1} %, faster-whisper float32 {}, int8 {}",
                w.utterances,
                w.synth,
                100.0 * w.alicia,
                fw(w.faster_whisper_float32),
                fw(w.faster_whisper_int8)
            )?;
        }
        writeln!(
            f,
            "{} sessions at once for {:.0} s: {} completed ({:.1}/min), {} busy, {} errors, {:.0} s of speech in, {:.0} s out, WER {:.1} %",
            s.sessions,
            s.seconds,
            s.completed,
            s.per_minute(),
            s.busy,
            s.errors,
            s.audio_in_seconds,
            s.audio_out_seconds,
            100.0 * s.wer
        )?;
        line(f, "audio-stop -> transcript", &s.stt_after_stop)?;
        line(f, "  STT queue wait", &s.stt_queue)?;
        line(f, "  STT inference", &s.stt_inference)?;
        line(f, "answer request -> first audio", &s.tts_first_audio)?;
        line(f, "answer request -> audio-stop", &s.tts_total)?;
        line(f, "  TTS queue wait", &s.tts_queue)?;
        line(f, "  TTS inference", &s.tts_inference)?;
        line(f, "audio-start -> answer spoken", &s.session_total)?;
        for e in &s.error_examples {
            writeln!(f, "  error: {e}")?;
        }
        if let Some(why) = &r.skipped {
            writeln!(f, "references: skipped ({why})")?;
        }
        let x = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}x"));
        writeln!(
            f,
            "ratios (reference p50 / Alicia p50): STT faster-whisper float32 {}, int8 {}; TTS first audio piper-tts {}",
            x(self.stt_ratio_float32()),
            x(self.stt_ratio_int8()),
            x(self.tts_ratio())
        )?;
        writeln!(
            f,
            "goals: STT p50 <= {STT_GOAL_MS} ms {}; TTS first audio p50 <= {TTS_GOAL_MS} ms {}; {} sessions sustained: {}",
            met(self.stt_goal_met()),
            met(self.tts_goal_met()),
            s.sessions,
            if self.sessions_sustained() { "yes" } else { "no" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let m = Ms::of(&v).unwrap();
        assert_eq!((m.p50, m.p90, m.p99, m.max, m.samples), (50.0, 90.0, 99.0, 100.0, 100));
        let one = Ms::of(&[7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(Ms::of(&[]).is_none());
    }

    #[test]
    fn ratios_and_goals() {
        let mut r = VoiceReport::default();
        r.stt.round_trip = Ms::of(&[100.0, 120.0, 140.0]);
        r.reference.faster_whisper_float32 = Ms::of(&[480.0]);
        r.tts.first_audio = Ms::of(&[90.0]);
        r.reference.piper_first_audio = Ms::of(&[60.0]);
        assert_eq!(r.stt_ratio_float32(), Some(4.0));
        assert_eq!(r.stt_ratio_int8(), None);
        assert!((r.tts_ratio().unwrap() - 60.0 / 90.0).abs() < 1e-9);
        assert_eq!((r.stt_goal_met(), r.tts_goal_met()), (Some(true), Some(false)));
        r.sessions.sessions = 2;
        r.sessions.completed = 3;
        assert!(r.sessions_sustained());
        r.sessions.busy = 1;
        assert!(!r.sessions_sustained());
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["ratios"]["stt_p50_faster_whisper_float32_over_alicia"], 4.0);
        assert_eq!(v["goals"]["tts_met"], false);
    }
}
