//! `stt_service`: speech to text on the bus.
//!
//! Requests (the design document's voice processing message) come to the inbox, where the
//! router forwards `capability:speech_to_text`, or to `P/voice/stt/request`; both are shared
//! among instances. Satellites' audio streams come on `P/voice/sat/<id>/mic` ([`crate::stream`]).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_audio::pcm::{PcmFormat, StreamConverter};
use alicia_audio::AudioError;
use alicia_envelope::{Envelope, MessageType, Value};
use alicia_sdk::{Bus, BusService, Context, HandlerResult, SdkError, ServiceConfig, ServiceError, ServiceHandle};
use alicia_sdk::{Refusal, Subscription};
use alicia_stt::vad::VadConfig;
use alicia_stt::{SttEngine, SttError, Transcript};
use base64::Engine as _;
use serde_json::{json, Map};
use tokio::sync::Notify;

use crate::provider::{Provider, Registration};
use crate::stream::{Streams, StreamsHandle};
use crate::topics::VoiceTopics;

/// The service's name on the bus and its MQTT user.
pub const SERVICE_NAME: &str = "stt_service";
/// The capability it provides in the registry.
pub const CAPABILITY: &str = "speech_to_text";

/// How the service runs.
#[derive(Clone)]
pub struct SttServiceConfig {
    /// The bus connection (name: [`SERVICE_NAME`] unless set).
    pub service: ServiceConfig,
    /// The loaded model and its worker pool (`stt_service.performance.max_concurrent`,
    /// `queue`, `max_audio_length` are the engine's settings).
    pub engine: SttEngine,
    /// The model's name, for `describe` and the registration (`tiny.en`).
    pub model_name: String,
    /// Silero VAD for streams (end of speech without `audio-stop`); `None`: streams end at
    /// `audio-stop` only.
    pub vad: Option<(PathBuf, VadConfig)>,
    /// openWakeWord's models and the score that fires, for streams that begin with `detect`
    /// (a satellite without a wake word of its own); `None`: such streams are refused
    /// (`wake_unavailable`).
    pub wake: Option<(alicia_stt::wake::WakeModels, f32)>,
    /// Longest a transcription may take (`stt_service.performance.timeout`).
    pub timeout: Duration,
    /// Streams (satellites speaking) one instance follows at once; more are answered `busy`.
    pub max_streams: usize,
    /// A stream that sends nothing for this long is ended (transcribed as if it had stopped).
    pub stream_idle: Duration,
    /// Register in the device registry as the provider of [`CAPABILITY`].
    pub register: bool,
}

impl SttServiceConfig {
    pub fn new(service: ServiceConfig, engine: SttEngine, model_name: impl Into<String>) -> Self {
        SttServiceConfig {
            service,
            engine,
            model_name: model_name.into(),
            vad: None,
            wake: None,
            timeout: Duration::from_secs(10),
            max_streams: 32,
            stream_idle: Duration::from_secs(10),
            register: true,
        }
    }
}

/// Counters, for tests and metrics.
#[derive(Debug, Default)]
pub struct SttCounters {
    pub transcribed: AtomicU64,
    pub refused: AtomicU64,
    pub busy: AtomicU64,
}

pub(crate) struct Shared {
    pub engine: SttEngine,
    pub model_name: String,
    pub timeout: Duration,
    pub topics: VoiceTopics,
    pub counters: SttCounters,
}

impl Shared {
    /// Transcribes 16 kHz mono audio within the timeout.
    pub async fn transcribe(&self, audio: Vec<f32>, language: Option<&str>) -> Result<Transcript, ServiceError> {
        match tokio::time::timeout(self.timeout, self.engine.transcribe(audio, language)).await {
            Ok(Ok(t)) => {
                self.counters.transcribed.fetch_add(1, Ordering::Relaxed);
                Ok(t)
            }
            Ok(Err(e)) => {
                if matches!(e, SttError::Busy { .. }) {
                    self.counters.busy.fetch_add(1, Ordering::Relaxed);
                }
                Err(stt_error(&e))
            }
            Err(_) => Err(ServiceError::new(
                "timeout",
                format!("the transcription took longer than {:?} (stt_service.performance.timeout)", self.timeout),
            )),
        }
    }

    pub fn describe(&self) -> Value {
        let languages: Vec<String> = if self.engine.is_multilingual() {
            alicia_stt::languages::all().into_iter().map(str::to_string).collect()
        } else {
            vec!["en".into()]
        };
        json!({
            "model": self.model_name,
            "multilingual": self.engine.is_multilingual(),
            "languages": languages,
            "default_language": self.engine.config().language,
            "max_audio_seconds": self.engine.config().max_audio_seconds,
            "capacity": self.engine.capacity(),
            "in_flight": self.engine.in_flight(),
        })
    }
}

/// An engine error as the code and reason the requester gets.
pub(crate) fn stt_error(e: &SttError) -> ServiceError {
    ServiceError::new(e.code(), e.to_string())
}

pub(crate) fn audio_error(e: &AudioError) -> ServiceError {
    ServiceError::new(e.code(), e.to_string())
}

struct SttService {
    shared: Arc<Shared>,
    rebirth: Arc<Notify>,
}

/// The running service.
pub struct SttHandle {
    service: ServiceHandle,
    shared: Arc<Shared>,
    _provider: Option<Provider>,
    streams: StreamsHandle,
}

impl SttHandle {
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    pub fn counters(&self) -> &SttCounters {
        &self.shared.counters
    }

    /// Leaves the bus: the stream connection withdraws this instance, then the service says
    /// `offline`.
    pub async fn shutdown(self) {
        drop(self._provider);
        self.streams.shutdown().await;
        self.service.shutdown().await;
    }
}

/// Starts the service: its inbox and `P/voice/stt/request`, the satellites' streams, and its
/// registration as the provider of `speech_to_text`.
pub async fn start(cfg: SttServiceConfig) -> Result<SttHandle, SdkError> {
    let topics = VoiceTopics::new(cfg.service.topic_prefix.clone());
    let shared = Arc::new(Shared {
        engine: cfg.engine.clone(),
        model_name: cfg.model_name.clone(),
        timeout: cfg.timeout,
        topics: topics.clone(),
        counters: SttCounters::default(),
    });
    let rebirth = Arc::new(Notify::new());
    let mut service_cfg = cfg.service.clone();
    if service_cfg.name.is_none() {
        service_cfg.name = Some(SERVICE_NAME.into());
    }
    let service =
        alicia_sdk::start(service_cfg.clone(), SttService { shared: shared.clone(), rebirth: rebirth.clone() })?;
    let bus = service.bus().clone();
    let streams = Streams::start(&service_cfg, bus.clone(), shared.clone(), &cfg)?;
    let provider = cfg.register.then(|| {
        let reg = registration(&bus, &shared, &topics, cfg.vad.is_some());
        Provider::start(bus.clone(), topics.clone(), reg, service_cfg.heartbeat_interval, rebirth)
    });
    Ok(SttHandle { service, shared, _provider: provider, streams })
}

fn registration(bus: &Bus, shared: &Shared, topics: &VoiceTopics, vad: bool) -> Registration {
    let d = shared.describe();
    Registration {
        device_id: bus.name().to_string(),
        name: "Speech to text (Whisper)".into(),
        capability: json!({
            "name": CAPABILITY,
            "version": "1.0.0",
            "parameters": {
                "model": shared.model_name,
                "languages": d["languages"],
                "max_audio_seconds": d["max_audio_seconds"],
                "audio_formats": ["wav", "pcm"],
                "streaming": true,
                // Not an endpoint: the registry keeps only topics one may publish to, and this
                // is one topic per satellite.
                "stream_topic": topics.mic("{device_id}"),
                "vad": vad,
            },
            "endpoints": {
                "control": bus.topics().inbox(bus.name()),
                "input": topics.stt_request(),
                "output": topics.stt_response(),
            },
        }),
        metadata: json!({"manufacturer": "Alicia", "model": "whisper.cpp", "version": env!("CARGO_PKG_VERSION")}),
    }
}

impl BusService for SttService {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::shared(self.shared.topics.stt_request()), Subscription::new(self.shared.topics.rebirth())]
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        if ctx.topic() == self.shared.topics.rebirth() {
            self.rebirth.notify_one();
            return Ok(None);
        }
        if matches!(envelope.message_type, MessageType::Response | MessageType::Heartbeat) {
            let reason = format!("stt_service takes requests; a {} has nothing to transcribe", envelope.message_type);
            ctx.bus().dead_letter(Refusal::new("not_a_request", reason), ctx.topic(), &envelope.to_vec()).await?;
            return Ok(None);
        }
        if envelope.payload.data.get("action").and_then(Value::as_str) == Some("describe") {
            return Ok(Some(self.shared.describe()));
        }
        self.transcribe(ctx, envelope).await
    }
}

/// What a request asks for.
struct Request {
    audio: Vec<f32>,
    language: Option<String>,
    threshold: Option<f64>,
    publish: bool,
    decode_ms: f64,
}

impl SttService {
    async fn transcribe(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        let started = Instant::now();
        let max = self.shared.engine.config().max_audio_seconds;
        // Decoding and resampling a long clip takes milliseconds of CPU: not on the runtime.
        let data = envelope.payload.data.clone();
        let parsed = tokio::task::spawn_blocking(move || parse(&data, max)).await;
        let request = match parsed {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.refuse(ctx, &envelope, e).await,
            Err(e) => return Err(ServiceError::new("internal", format!("decoding failed: {e}")).into()),
        };
        let t = match self.shared.transcribe(request.audio, request.language.as_deref()).await {
            Ok(t) => t,
            Err(e) if e.code == "busy" => return Err(e.into()),
            Err(e) => return self.refuse(ctx, &envelope, e).await,
        };
        let mut data = json!({
            "transcription": t.text,
            "confidence": round3(t.confidence as f64),
            "language": t.language,
            "duration_seconds": round3(t.audio_seconds as f64),
            "model": self.shared.model_name,
            "timings_ms": {
                "decode_audio": round3(request.decode_ms),
                "queue": round3(t.queue_ms),
                "inference": round3(t.inference_ms),
                "total": round3(started.elapsed().as_secs_f64() * 1000.0),
            },
        });
        let accepted = request.threshold.is_none_or(|min| t.confidence as f64 >= min);
        if let Some(min) = request.threshold {
            data["accepted"] = json!(accepted);
            if !accepted {
                data["reason"] = json!(format!("confidence {:.2} is below the threshold {min}", t.confidence));
            }
        }
        let bus = ctx.bus();
        let mut head = envelope;
        head.payload.data = Value::Null;
        let mut response = Envelope::reply_to(&head, bus.name(), data);
        // The design document: the response carries the request's metadata (session, user, device).
        response.payload.metadata.extra = head.payload.metadata.extra.clone();
        match ctx.response_topic() {
            Some(rt) => {
                let correlation = ctx.correlation_data().map(bytes::Bytes::copy_from_slice);
                bus.send_to(rt, &response, correlation).await?
            }
            None if head.message_type == MessageType::Request => bus.send(&response).await?,
            None => {}
        }
        // The document's topic: what the assistant listens to. A guess below the requester's
        // threshold is not put there (nobody should act on it).
        if request.publish && accepted {
            bus.send_to(&self.shared.topics.stt_response(), &response, None).await?;
        }
        Ok(None)
    }

    /// Answers a bad request with its reason (the SDK sends the error response) and puts it
    /// on the dead-letter topic.
    async fn refuse(&self, ctx: &Context, envelope: &Envelope, e: ServiceError) -> HandlerResult {
        self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        let refusal = Refusal::new(e.code.clone(), format!("stt_service refused the request: {}", e.message));
        tracing::debug!(message_id = %envelope.message_id, %refusal);
        let _ = ctx.bus().dead_letter(refusal, ctx.topic(), &envelope.to_vec()).await;
        Err(e.into())
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::new("invalid_request", msg)
}

/// `audio_data` as base64 (standard or URL-safe alphabet, padded or not, optionally as a
/// `data:` URL).
fn base64_audio(text: &str) -> Result<Vec<u8>, ServiceError> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let text = text.trim();
    let text = match text.strip_prefix("data:") {
        Some(url) => url.split_once(',').map_or(url, |(_, b)| b),
        None => text,
    };
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let standard = GeneralPurpose::new(&base64::alphabet::STANDARD, cfg);
    let url_safe = GeneralPurpose::new(&base64::alphabet::URL_SAFE, cfg);
    let _ = general_purpose::STANDARD;
    standard
        .decode(text)
        .or_else(|_| url_safe.decode(text))
        .map_err(|e| invalid(format!("`audio_data` is not base64: {e}")))
}

fn parse(data: &Value, max_seconds: f32) -> Result<Request, ServiceError> {
    let started = Instant::now();
    let Value::Object(d) = data else {
        return Err(invalid("the request's data is an object with `audio_data` (base64 WAV)"));
    };
    let audio_b64 = match d.get("audio_data") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) => return Err(ServiceError::new("empty_audio", "`audio_data` is empty")),
        None | Some(Value::Null) => return Err(invalid("`audio_data` is missing (base64 of a WAV file)")),
        Some(_) => return Err(invalid("`audio_data` must be a string (base64 of a WAV file)")),
    };
    let bytes = base64_audio(audio_b64)?;
    if bytes.is_empty() {
        return Err(ServiceError::new("empty_audio", "`audio_data` holds no bytes"));
    }
    let format = str_field(d, "audio_format")?.unwrap_or("wav").to_ascii_lowercase();
    let audio = match format.as_str() {
        "wav" | "wave" | "audio/wav" | "audio/x-wav" => {
            alicia_audio::wav_to_16k_mono(&bytes, Some(max_seconds)).map_err(|e| audio_error(&e))?
        }
        "pcm" | "raw" | "s16le" | "pcm_s16le" => {
            let rate = uint_field(d, "sample_rate")?.ok_or_else(|| invalid("raw PCM needs `sample_rate`"))?;
            let channels = uint_field(d, "channels")?.unwrap_or(1);
            let width = uint_field(d, "sample_width")?.unwrap_or(2);
            let fmt = PcmFormat::from_fields(rate, width, channels).map_err(|e| audio_error(&e))?;
            let seconds = fmt.seconds(bytes.len());
            if seconds > max_seconds {
                return Err(audio_error(&AudioError::TooLong { seconds, max: max_seconds }));
            }
            let mut conv = StreamConverter::new(fmt).map_err(|e| audio_error(&e))?;
            let mut audio = conv.push(&bytes).map_err(|e| audio_error(&e))?;
            audio.extend(conv.finish().map_err(|e| audio_error(&e))?);
            if audio.is_empty() {
                return Err(audio_error(&AudioError::Empty));
            }
            audio
        }
        other => {
            return Err(ServiceError::new(
                "unsupported_format",
                format!("`audio_format` {other:?}: `wav` (any rate, 8/16/24/32-bit) or `pcm` (raw, with sample_rate, channels, sample_width) are supported"),
            ))
        }
    };
    let threshold = match d.get("confidence_threshold") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=1.0).contains(&t) => Some(t),
            _ => return Err(invalid("`confidence_threshold` must be a number from 0 to 1")),
        },
    };
    let publish = match d.get("publish") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`publish` must be true or false")),
    };
    Ok(Request {
        audio,
        language: str_field(d, "language")?.map(str::to_string),
        threshold,
        publish,
        decode_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}

fn str_field<'a>(d: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ServiceError> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim())),
        Some(_) => Err(invalid(format!("`{key}` must be a string"))),
    }
}

fn uint_field(d: &Map<String, Value>, key: &str) -> Result<Option<u64>, ServiceError> {
    match d.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| invalid(format!("`{key}` must be a positive whole number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_name_their_problem() {
        let wav = alicia_audio::encode_wav(&vec![0i16; 16000], 16000, 1);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&wav);
        for (data, code) in [
            (json!("x"), "invalid_request"),
            (json!({}), "invalid_request"),
            (json!({"audio_data": 5}), "invalid_request"),
            (json!({"audio_data": ""}), "empty_audio"),
            (json!({"audio_data": "%%%"}), "invalid_request"),
            (json!({"audio_data": "aGVsbG8gd29ybGQ="}), "not_wav"),
            (json!({"audio_data": b64, "audio_format": "mp3"}), "unsupported_format"),
            (json!({"audio_data": b64, "confidence_threshold": 2}), "invalid_request"),
            (json!({"audio_data": "AAAA", "audio_format": "pcm"}), "invalid_request"),
        ] {
            let e = parse(&data, 30.0).err().unwrap_or_else(|| panic!("{data} was accepted"));
            assert_eq!(e.code, code, "{data}: {e}");
        }
        let long = base64::engine::general_purpose::STANDARD.encode(alicia_audio::encode_wav(
            &vec![0i16; 16000 * 3],
            16000,
            1,
        ));
        assert_eq!(parse(&json!({"audio_data": long}), 2.0).err().unwrap().code, "audio_too_long");
        let ok =
            parse(&json!({"audio_data": format!("data:audio/wav;base64,{b64}"), "language": "en-US"}), 30.0).unwrap();
        assert_eq!((ok.audio.len(), ok.language.as_deref(), ok.publish), (16000, Some("en-US"), true));
        let pcm = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0u8; 8000 * 2]);
        let ok = parse(&json!({"audio_data": pcm, "audio_format": "pcm", "sample_rate": 8000}), 30.0).unwrap();
        assert!((15900..=16100).contains(&ok.audio.len()), "{}", ok.audio.len());
    }
}
