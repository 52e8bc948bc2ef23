//! `tts_service`: text to speech on the bus.
//!
//! - Requests (inbox, where the router forwards `capability:text_to_speech`, and
//!   `P/voice/tts/request`; shared among instances): `{"text", "voice"?, "rate"?,
//!   "satellite"?}` → the WAV (base64) in the response, or, with `satellite`, the speech
//!   streamed to that satellite's `snd` topic sentence by sentence.
//! - The assistant's answers on `P/voice/ai/response` (shared): `data.response` is spoken to
//!   the satellite that asked (`data.satellite`, else `payload.metadata.device_id`).
//! - `synthesize` events on satellites' `mic` topics (shared): spoken back on their `snd`.
//! - What it said goes on `P/voice/tts/events`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope, MessageType, ReplyStatus, Value};
use alicia_sdk::{Bus, BusService, Context, HandlerResult, Link, LinkEvent, LinkOptions, QoS, SdkError, Sender};
use alicia_sdk::{Refusal, ServiceConfig, ServiceError, ServiceHandle, Subscription};
use alicia_tts::{SpeakOptions, TtsEngine, TtsError};
use base64::Engine as _;
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::provider::{Provider, Registration};
use crate::sat::{self, kind, Event};
use crate::topics::VoiceTopics;

/// The service's name on the bus and its MQTT user.
pub const SERVICE_NAME: &str = "tts_service";
/// The capability it provides in the registry.
pub const CAPABILITY: &str = "text_to_speech";

/// Audio sent to a satellite per message: 100 ms.
const CHUNK_MS: u32 = 100;

/// How the service runs.
#[derive(Clone)]
pub struct TtsServiceConfig {
    pub service: ServiceConfig,
    /// The loaded voices (`tts_service.performance.cache_size`, `max_concurrent` are the
    /// engine's settings).
    pub engine: TtsEngine,
    /// Longest a synthesis may take (`tts_service.performance.timeout`).
    pub timeout: Duration,
    /// Register in the device registry as the provider of [`CAPABILITY`].
    pub register: bool,
    /// Speak the assistant's answers (`P/voice/ai/response`) to their satellites.
    pub speak_answers: bool,
}

impl TtsServiceConfig {
    pub fn new(service: ServiceConfig, engine: TtsEngine) -> Self {
        TtsServiceConfig { service, engine, timeout: Duration::from_secs(15), register: true, speak_answers: true }
    }
}

#[derive(Debug, Default)]
pub struct TtsCounters {
    pub synthesized: AtomicU64,
    pub streamed: AtomicU64,
    pub refused: AtomicU64,
}

struct Shared {
    engine: TtsEngine,
    timeout: Duration,
    topics: VoiceTopics,
    counters: TtsCounters,
    /// The plain connection: satellites' `synthesize` in, audio out.
    link: Link,
    bus: std::sync::OnceLock<Bus>,
    /// What is being spoken to each satellite now, so a cancel can stop it: (the speech's
    /// number, its session, the signal).
    speaking: parking_lot::Mutex<std::collections::HashMap<String, Current>>,
    next_speech: AtomicU64,
}

/// The speech being streamed to a satellite: its number, its session, the cancel signal.
type Current = (u64, Option<String>, Arc<Notify>);

/// Ends a satellite's entry in [`Shared::speaking`] when its speech ends, however it ends.
struct Speaking<'a> {
    shared: &'a Shared,
    satellite: &'a str,
    n: u64,
}

impl Drop for Speaking<'_> {
    fn drop(&mut self) {
        let mut map = self.shared.speaking.lock();
        if map.get(self.satellite).is_some_and(|(n, _, _)| *n == self.n) {
            map.remove(self.satellite);
        }
    }
}

struct TtsService {
    shared: Arc<Shared>,
    speak_answers: bool,
    rebirth: Arc<Notify>,
}

/// The running service.
pub struct TtsHandle {
    service: ServiceHandle,
    shared: Arc<Shared>,
    _provider: Option<Provider>,
    task: JoinHandle<()>,
}

impl TtsHandle {
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    pub fn counters(&self) -> &TtsCounters {
        &self.shared.counters
    }

    pub async fn shutdown(self) {
        drop(self._provider);
        self.shared.link.close().await;
        self.task.abort();
        self.service.shutdown().await;
    }
}

/// Starts the service.
pub async fn start(cfg: TtsServiceConfig) -> Result<TtsHandle, SdkError> {
    let topics = VoiceTopics::new(cfg.service.topic_prefix.clone());
    let mut service_cfg = cfg.service.clone();
    if service_cfg.name.is_none() {
        service_cfg.name = Some(SERVICE_NAME.into());
    }
    let name = service_cfg.name.clone().unwrap_or_default();
    let instance = service_cfg
        .instance_id
        .clone()
        .unwrap_or_else(|| alicia_envelope::Uuid::new_v4().simple().to_string()[..12].to_string());
    service_cfg.instance_id = Some(instance.clone());
    // Satellites' `synthesize`: one instance each (shared), like the inbox.
    let opts = LinkOptions::new(format!("{name}-{instance}-sat"), [format!("$share/{name}/{}", topics.mic_filter())])
        .with_label(format!("{name}/sat"));
    let (link, events) = Link::connect(&service_cfg, opts);
    let shared = Arc::new(Shared {
        engine: cfg.engine.clone(),
        timeout: cfg.timeout,
        topics: topics.clone(),
        counters: TtsCounters::default(),
        link,
        bus: std::sync::OnceLock::new(),
        speaking: parking_lot::Mutex::new(std::collections::HashMap::new()),
        next_speech: AtomicU64::new(0),
    });
    let rebirth = Arc::new(Notify::new());
    let service = alicia_sdk::start(
        service_cfg.clone(),
        TtsService { shared: shared.clone(), speak_answers: cfg.speak_answers, rebirth: rebirth.clone() },
    )?;
    let bus = service.bus().clone();
    let _ = shared.bus.set(bus.clone());
    let task = tokio::spawn(satellites(shared.clone(), events, service_cfg.trust_broker_identity));
    let provider = cfg.register.then(|| {
        let reg = registration(&bus, &shared);
        Provider::start(bus.clone(), topics.clone(), reg, service_cfg.heartbeat_interval, rebirth)
    });
    Ok(TtsHandle { service, shared, _provider: provider, task })
}

fn voices(engine: &TtsEngine) -> Value {
    let list: Vec<Value> = engine
        .voices()
        .iter()
        .map(|v| json!({"name": v.name(), "language": v.config().language, "sample_rate": v.sample_rate()}))
        .collect();
    Value::Array(list)
}

fn registration(bus: &Bus, shared: &Shared) -> Registration {
    Registration {
        device_id: bus.name().to_string(),
        name: "Text to speech (Piper)".into(),
        capability: json!({
            "name": CAPABILITY,
            "version": "1.0.0",
            "parameters": {
                "voices": voices(&shared.engine),
                "default_voice": shared.engine.voice_names().first(),
                "audio_formats": ["wav"],
                "streaming": true,
                // One topic per satellite: not an endpoint (the registry keeps publishable topics).
                "stream_topic": shared.topics.snd("{device_id}"),
                "rate": {"min": 0.25, "max": 4.0},
            },
            "endpoints": {
                "control": bus.topics().inbox(bus.name()),
                "input": shared.topics.tts_request(),
                "events": shared.topics.tts_events(),
            },
        }),
        metadata: json!({"manufacturer": "Alicia", "model": "Piper (ONNX Runtime)", "version": env!("CARGO_PKG_VERSION")}),
    }
}

fn tts_error(e: &TtsError) -> ServiceError {
    ServiceError::new(e.code(), e.to_string())
}

fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::new("invalid_request", msg)
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// What to say, from a request's data.
#[derive(Clone)]
struct Speak {
    text: String,
    opts: SpeakOptions,
    satellite: Option<String>,
    session: Option<String>,
    /// Why it is said (`request`, `answer`, `synthesize`), for the events.
    why: Option<&'static str>,
}

fn parse(data: &Value, metadata: &serde_json::Map<String, Value>) -> Result<Speak, ServiceError> {
    let Value::Object(d) = data else { return Err(invalid("the request's data is an object with `text`")) };
    let text = match d.get("text") {
        Some(Value::String(t)) => t.clone(),
        None | Some(Value::Null) => return Err(invalid("`text` is missing")),
        Some(_) => return Err(invalid("`text` must be a string")),
    };
    let s = |k: &str| -> Result<Option<String>, ServiceError> {
        match d.get(k).or_else(|| metadata.get(k)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) if v.trim().is_empty() => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.trim().to_string())),
            Some(_) => Err(invalid(format!("`{k}` must be a string"))),
        }
    };
    let voice = match d.get("voice") {
        Some(Value::Object(v)) => v.get("name").and_then(Value::as_str).map(str::to_string),
        _ => s("voice")?,
    };
    let rate = match d.get("rate") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v.as_f64().ok_or_else(|| invalid("`rate` must be a number (1.0 is normal speed)"))? as f32,
    };
    Ok(Speak {
        text,
        opts: SpeakOptions { voice, rate, lead_in: 0.0 },
        satellite: s("satellite")?,
        session: s("session_id")?,
        why: None,
    })
}

impl Shared {
    fn bus(&self) -> &Bus {
        self.bus.get().expect("set at start")
    }

    async fn event(&self, data: Value) {
        let env = Envelope::event(self.bus().name(), Destination::topic(self.topics.tts_events()), data);
        let _ = self.bus().send(&env).await;
    }

    /// Synthesises the whole text: a WAV file.
    async fn synthesize(&self, speak: &Speak) -> Result<Value, ServiceError> {
        let speech = match tokio::time::timeout(self.timeout, self.engine.synthesize(&speak.text, &speak.opts)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(tts_error(&e)),
            Err(_) => return Err(self.timed_out()),
        };
        self.counters.synthesized.fetch_add(1, Ordering::Relaxed);
        let wav = speech.to_wav();
        Ok(json!({
            "audio_data": base64::engine::general_purpose::STANDARD.encode(&wav),
            "audio_format": "wav",
            "sample_rate": speech.sample_rate,
            "channels": 1,
            "duration_seconds": round3(speech.seconds() as f64),
            "voice": speech.voice,
            "cached": speech.cached,
            "timings_ms": {
                "first_audio": round3(speech.first_audio_ms),
                "total": round3(speech.total_ms),
                "queue": round3(speech.queue_ms),
                "inference": round3(speech.inference_ms),
            },
        }))
    }

    fn timed_out(&self) -> ServiceError {
        ServiceError::new(
            "timeout",
            format!("the synthesis took longer than {:?} (tts_service.performance.timeout)", self.timeout),
        )
    }

    /// Streams the speech to `satellite`'s `snd` topic as each sentence is ready:
    /// `audio-start`, 100 ms `audio-chunk`s, `audio-stop`. An error is an `error` event there.
    async fn stream_to(&self, satellite: &str, speak: &Speak) -> Result<Value, ServiceError> {
        let started = Instant::now();
        let session = speak.session.as_deref();
        let topic = self.topics.snd(satellite);
        let send = |e: Event| {
            let topic = topic.clone();
            async move { self.link.publish(topic, QoS::AtLeastOnce, false, sat::encode(&e), None).await }
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        // A newer speech to the same satellite replaces this one's entry: a cancel stops the newest.
        let cancel = Arc::new(Notify::new());
        let n = self.next_speech.fetch_add(1, Ordering::Relaxed);
        self.speaking.lock().insert(satellite.to_string(), (n, speak.session.clone(), cancel.clone()));
        let _entry = Speaking { shared: self, satellite, n };
        let mut cancelled = false;
        let mut rx = self.engine.stream(&speak.text, &speak.opts);
        let (mut sent, mut first, mut rate) = (0u64, None::<f64>, 0u32);
        // Where the time went, over the sentences: waiting for a session, and the model.
        let (mut queue_ms, mut inference_ms) = (0.0f64, 0.0f64);
        loop {
            let next = tokio::select! {
                biased;
                _ = cancel.notified() => {
                    cancelled = true;
                    break;
                }
                c = tokio::time::timeout_at(deadline, rx.recv()) => c,
            };
            let chunk = match next {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => {
                    let err = tts_error(&e);
                    let _ = send(sat::error(&err.code, &err.message, session)).await;
                    return Err(err);
                }
                Ok(None) => break,
                Err(_) => {
                    let err = self.timed_out();
                    let _ = send(sat::error(&err.code, &err.message, session)).await;
                    return Err(err);
                }
            };
            queue_ms += chunk.queue_ms;
            inference_ms += chunk.inference_ms;
            if first.is_none() {
                rate = chunk.sample_rate;
                send(sat::audio_start(rate, session))
                    .await
                    .map_err(|e| ServiceError::new("unavailable", e.to_string()))?;
                first = Some(started.elapsed().as_secs_f64() * 1000.0);
                let why = speak.why.unwrap_or("request");
                self.event(json!({"event": "speaking", "satellite": satellite, "session_id": speak.session,
                                  "text": speak.text, "for": why}))
                    .await;
            }
            let per = (rate as usize * CHUNK_MS as usize / 1000).max(1);
            for piece in chunk.samples.chunks(per) {
                let ts = sent * 1000 / rate.max(1) as u64;
                let e = sat::with_session(sat::audio_chunk(rate, piece, ts), session);
                send(e).await.map_err(|e| ServiceError::new("unavailable", e.to_string()))?;
                sent += piece.len() as u64;
            }
            if chunk.last {
                break;
            }
        }
        let ts = sent * 1000 / rate.max(1) as u64;
        let mut stop = sat::audio_stop(ts, session);
        if cancelled {
            // The satellite stops playing too: this speech was cut short on purpose.
            stop.data.insert("cancelled".into(), Value::Bool(true));
        }
        send(stop).await.map_err(|e| ServiceError::new("unavailable", e.to_string()))?;
        self.counters.streamed.fetch_add(1, Ordering::Relaxed);
        Ok(json!({
            "satellite": satellite,
            "session_id": speak.session,
            "cancelled": cancelled,
            "sample_rate": rate,
            "duration_seconds": round3(sent as f64 / rate.max(1) as f64),
            "timings_ms": {
                "first_audio": first.map(round3),
                "total": round3(started.elapsed().as_secs_f64() * 1000.0),
                "queue": round3(queue_ms),
                "inference": round3(inference_ms),
            },
        }))
    }

    /// Says on `P/voice/tts/events` what a request's synthesis gave (the audio stays in the
    /// answer: listeners want to know that something was said, not to receive it again).
    async fn synthesized(&self, request: &Envelope, speak: &Speak, r: &Result<Value, ServiceError>) {
        let mut ev = json!({"for": "request", "requester": request.source, "request_id": request.message_id,
                            "session_id": speak.session, "text": speak.text});
        match r {
            Ok(d) => {
                ev["event"] = json!("synthesized");
                for k in ["voice", "sample_rate", "duration_seconds", "cached", "timings_ms"] {
                    ev[k] = d[k].clone();
                }
            }
            Err(e) => {
                ev["event"] = json!("error");
                ev["code"] = json!(e.code);
                ev["message"] = json!(e.message);
            }
        }
        self.event(ev).await;
    }

    /// Speaks to a satellite and says so on `P/voice/tts/events`.
    async fn speak_to(&self, satellite: &str, speak: &Speak, why: &'static str) -> Result<Value, ServiceError> {
        let speak = Speak { why: Some(why), ..speak.clone() };
        let speak = &speak;
        let r = self.stream_to(satellite, speak).await;
        match &r {
            Ok(summary) => {
                let kind = if summary["cancelled"] == true { "cancelled" } else { "spoken" };
                self.event(json!({"event": kind, "satellite": satellite, "session_id": speak.session,
                                  "text": speak.text, "for": why, "summary": summary}))
                    .await
            }
            Err(e) => {
                self.event(json!({"event": "error", "satellite": satellite, "session_id": speak.session,
                                  "text": speak.text, "for": why, "code": e.code, "message": e.message}))
                    .await
            }
        }
        r
    }
}

impl BusService for TtsService {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        let t = &self.shared.topics;
        // Cancels go to every instance: only the one speaking to the satellite has anything to stop.
        let mut subs = vec![
            Subscription::shared(t.tts_request()),
            Subscription::new(t.rebirth()),
            Subscription::new(t.tts_cancel()),
        ];
        if self.speak_answers {
            subs.push(Subscription::shared(t.ai_response()));
        }
        subs
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        let t = &self.shared.topics;
        if ctx.topic() == t.rebirth() {
            self.rebirth.notify_one();
            return Ok(None);
        }
        if ctx.topic() == t.ai_response() {
            return self.answer(envelope).await;
        }
        if ctx.topic() == t.tts_cancel() {
            self.cancel(&envelope.payload.data);
            return Ok(None);
        }
        if matches!(envelope.message_type, MessageType::Response | MessageType::Heartbeat) {
            let reason = format!("tts_service takes requests; a {} has nothing to say", envelope.message_type);
            ctx.bus().dead_letter(Refusal::new("not_a_request", reason), ctx.topic(), &envelope.to_vec()).await?;
            return Ok(None);
        }
        if envelope.payload.data.get("action").and_then(Value::as_str) == Some("describe") {
            let names = self.shared.engine.voice_names();
            return Ok(Some(json!({"voices": voices(&self.shared.engine), "default_voice": names.first()})));
        }
        let result = match parse(&envelope.payload.data, &envelope.payload.metadata.extra) {
            Ok(speak) => match &speak.satellite {
                Some(sat) => self.shared.speak_to(sat, &speak, "request").await,
                None => {
                    let r = self.shared.synthesize(&speak).await;
                    self.shared.synthesized(&envelope, &speak, &r).await;
                    r
                }
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.code == "busy" || e.code == "timeout" => Err(e.into()),
            Err(e) => {
                self.shared.counters.refused.fetch_add(1, Ordering::Relaxed);
                let refusal = Refusal::new(e.code.clone(), format!("tts_service refused the request: {}", e.message));
                let _ = ctx.bus().dead_letter(refusal, ctx.topic(), &envelope.to_vec()).await;
                Err(e.into())
            }
        }
    }
}

impl TtsService {
    /// `{satellite, session_id?}`: stops the speech to that satellite (only that session's,
    /// when one is named) if this instance is speaking it.
    fn cancel(&self, data: &Value) {
        let Some(satellite) = data.get("satellite").and_then(Value::as_str) else { return };
        let session = data.get("session_id").and_then(Value::as_str);
        let map = self.shared.speaking.lock();
        if let Some((_, s, signal)) = map.get(satellite) {
            if session.is_none() || s.as_deref() == session {
                // A stored permit: a cancel that arrives between two chunks is not lost.
                signal.notify_one();
            }
        }
    }

    /// The assistant's answer: its `response` spoken to the satellite it is for.
    async fn answer(&self, envelope: Envelope) -> HandlerResult {
        if envelope.payload.metadata.status == Some(ReplyStatus::Error) {
            return Ok(None);
        }
        let data = &envelope.payload.data;
        let meta = &envelope.payload.metadata.extra;
        let text = data.get("response").and_then(Value::as_str).unwrap_or_default().trim().to_string();
        let satellite = data
            .get("satellite")
            .and_then(Value::as_str)
            .or_else(|| meta.get("device_id").and_then(Value::as_str))
            .map(str::to_string);
        let (Some(satellite), false) = (satellite, text.is_empty()) else {
            // Typed questions (`alicia ask`) have no satellite to speak to.
            return Ok(None);
        };
        let session =
            data.get("session_id").or_else(|| meta.get("session_id")).and_then(Value::as_str).map(str::to_string);
        let speak =
            Speak { text, opts: SpeakOptions::default(), satellite: Some(satellite.clone()), session, why: None };
        if let Err(e) = self.shared.speak_to(&satellite, &speak, "answer").await {
            tracing::warn!(%satellite, code = %e.code, error = %e.message, "cannot speak the answer");
        }
        Ok(None)
    }
}

/// Satellites' `synthesize` events (a shared subscription to every `mic` topic; audio events
/// there are the STT service's and ignored here).
async fn satellites(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<LinkEvent>, trust_identity: bool) {
    while let Some(ev) = events.recv().await {
        let LinkEvent::Message(p) = ev else { continue };
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        let Some(satellite) = shared.topics.satellite_of(&topic, "mic").map(str::to_string) else { continue };
        // Cheap check first: audio is most of this traffic.
        if !p.payload.windows(kind::SYNTHESIZE.len()).take(256).any(|w| w == kind::SYNTHESIZE.as_bytes()) {
            continue;
        }
        let Ok(event) = sat::decode(&p.payload) else { continue };
        if event.kind != kind::SYNTHESIZE {
            continue;
        }
        if trust_identity {
            let sender = p.properties.as_ref().and_then(|props| Sender::from_properties(&props.user_properties));
            if let Some(device) = sender.as_ref().and_then(Sender::device_id).filter(|d| *d != satellite) {
                let reason = format!("identity: `{device}` sent on satellite `{satellite}`'s microphone topic");
                let _ = shared.bus().dead_letter(Refusal::new(Refusal::IDENTITY, reason), &topic, &p.payload).await;
                continue;
            }
        }
        let data = Value::Object(event.data.clone());
        let shared = shared.clone();
        tokio::spawn(async move {
            match parse(&data, &serde_json::Map::new()) {
                Ok(mut speak) => {
                    if let Some(name) = data.pointer("/voice/name").and_then(Value::as_str) {
                        speak.opts.voice = Some(name.to_string());
                    }
                    let _ = shared.speak_to(&satellite, &speak, "synthesize").await;
                }
                Err(e) => {
                    let _ = shared.bus().dead_letter(Refusal::from(&e), &topic, &p.payload).await;
                    let err = sat::error(&e.code, &e.message, data.get("session_id").and_then(Value::as_str));
                    let _ = shared
                        .link
                        .publish(shared.topics.snd(&satellite), QoS::AtLeastOnce, false, sat::encode(&err), None)
                        .await;
                }
            }
        });
    }
}
