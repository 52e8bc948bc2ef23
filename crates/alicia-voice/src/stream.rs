//! Satellites' audio streams: `P/voice/sat/<id>/mic` in, transcripts on `P/voice/sat/<id>/snd`
//! and on the design document's `P/voice/stt/response`.
//!
//! # Which instance follows a satellite
//!
//! An utterance is many messages and must reach one decoder; MQTT's shared subscriptions hand
//! out messages one by one, so they cannot be used for streams. Instead every instance
//! subscribes to every satellite's microphone and follows only the satellites it *owns*:
//! rendezvous hashing of the satellite id over the live instances, which each instance knows
//! from the retained presence documents on `P/voice/stt/instances/<instance>` (published when
//! its stream connection is up, cleared by its will or at shutdown). Every instance computes
//! the same owner without talking to the others, and when an instance comes or goes only the
//! satellites it owned (or now owns) move. An utterance already under way stays with the
//! instance that saw it start, and an instance claims nothing before it has seen its own
//! presence come back (by then it has every other instance's retained one), so a change of
//! membership can at worst, within the instant the instances learn of it, let one utterance
//! be followed twice or not at all.
//!
//! An utterance begins with `audio-start` (or `transcribe`); chunks without a start are
//! ignored (counted), so an instance that becomes owner mid-utterance does not transcribe its
//! second half.
//!
//! # Wake word on the server
//!
//! A satellite with no wake word of its own sends `detect` (Wyoming's, optional `names`)
//! before `audio-start` and then streams for as long as it listens. Its audio goes to
//! openWakeWord ([`alicia_stt::wake`]) until a wake word is heard; then `detection` (name,
//! timestamp, and the new utterance's `session_id`) goes to the satellite and `wake_detected`
//! to `P/voice/stt/events`, and the audio after it is an utterance like any other (VAD ends
//! it, it is transcribed and published). After it, the stream listens for the wake word
//! again. `audio-stop` ends the stream; `not-detected` answers it if no word was heard. The
//! utterances' session ids are the stream's `session_id` with `-1`, `-2`, … (else random).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope, MessageType, ReplyStatus, Value};
use alicia_sdk::{Bus, LastWill, Link, LinkEvent, LinkOptions, Publish, QoS, Refusal, SdkError, Sender, ServiceConfig};
use alicia_stt::stream::{StreamEvent, SttStream};
use alicia_stt::vad::{Vad, VadConfig};
use alicia_stt::wake::{WakeDetector, WakeModels};
use alicia_stt::SttError;
use parking_lot::Mutex;
use serde_json::{json, Map};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sat::{self, kind, Event};
use crate::stt::{audio_error, stt_error, Shared, SttServiceConfig};

/// Messages one stream may have waiting (10 s of 20 ms chunks).
const QUEUE: usize = 512;

/// Counters of the streaming side.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub utterances: AtomicU64,
    /// Chunks or stops that arrived with no utterance open.
    pub stray: AtomicU64,
    pub refused: AtomicU64,
}

struct State {
    shared: Arc<Shared>,
    bus: Bus,
    link: Link,
    me: String,
    vad: Option<(PathBuf, VadConfig)>,
    wake: Option<(WakeModels, f32)>,
    idle: Duration,
    max_streams: usize,
    trust_identity: bool,
    members: Mutex<BTreeSet<String>>,
    /// This instance's presence came back: it knows the others and may claim satellites.
    joined: AtomicBool,
    sessions: Mutex<HashMap<String, (u64, mpsc::Sender<Event>)>>,
    generation: AtomicU64,
    counters: StreamCounters,
}

pub(crate) struct Streams;

/// The stream connection; [`StreamsHandle::shutdown`] withdraws the instance.
pub(crate) struct StreamsHandle {
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Streams {
    pub fn start(
        service: &ServiceConfig,
        bus: Bus,
        shared: Arc<Shared>,
        cfg: &SttServiceConfig,
    ) -> Result<StreamsHandle, SdkError> {
        let topics = &shared.topics;
        let me = bus.instance().to_string();
        let presence = topics.stt_instance(&me);
        let opts = LinkOptions::new(
            format!("{}-{me}-stream", bus.name()),
            [topics.mic_filter(), topics.stt_instances_filter()],
        )
        .with_will(LastWill::new(presence, "", QoS::AtLeastOnce, true, None))
        .with_label(format!("{}/stream", bus.name()));
        let (link, events) = Link::connect(service, opts);
        let state = Arc::new(State {
            shared: shared.clone(),
            bus,
            link,
            me,
            vad: cfg.vad.clone(),
            wake: cfg.wake.clone(),
            idle: cfg.stream_idle,
            max_streams: cfg.max_streams.max(1),
            trust_identity: service.trust_broker_identity,
            members: Mutex::new(BTreeSet::new()),
            joined: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            counters: StreamCounters::default(),
        });
        let task = tokio::spawn(dispatch(state.clone(), events));
        Ok(StreamsHandle { state, task })
    }
}

impl StreamsHandle {
    pub async fn shutdown(self) {
        let s = &self.state;
        let _ = s.link.publish(s.shared.topics.stt_instance(&s.me), QoS::AtLeastOnce, true, Vec::new(), None).await;
        s.link.close().await;
        self.task.abort();
    }
}

/// FNV-1a: the same on every machine and build (the instances must agree on owners).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= u64::from(b'/');
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// The owner of `satellite` among `members` (rendezvous hashing).
pub fn owner<'a>(members: impl IntoIterator<Item = &'a str>, satellite: &str) -> Option<&'a str> {
    members.into_iter().max_by_key(|m| (fnv1a(&[m, satellite]), *m))
}

async fn dispatch(state: Arc<State>, mut events: mpsc::UnboundedReceiver<LinkEvent>) {
    let topics = state.shared.topics.clone();
    let presence_prefix = topics.stt_instance("");
    while let Some(event) = events.recv().await {
        match event {
            LinkEvent::Online => {
                let doc = json!({"instance": state.me, "service": state.bus.name(), "model": state.shared.model_name});
                let body = serde_json::to_vec(&doc).expect("JSON");
                let presence = topics.stt_instance(&state.me);
                if let Err(e) = state.link.publish(presence, QoS::AtLeastOnce, true, body, None).await {
                    tracing::warn!(error = %e, "stt_service: cannot announce this instance");
                }
            }
            LinkEvent::Offline { .. } => {}
            LinkEvent::Message(p) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                if let Some(instance) = topic.strip_prefix(&presence_prefix) {
                    let mut members = state.members.lock();
                    if p.payload.is_empty() {
                        members.remove(instance);
                    } else {
                        members.insert(instance.to_string());
                        if instance == state.me {
                            state.joined.store(true, Ordering::Release);
                        }
                    }
                    tracing::debug!(members = ?*members, "stt_service instances");
                } else if let Some(sat) = topics.satellite_of(&topic, "mic") {
                    let sat = sat.to_string();
                    on_mic(&state, &topic, &sat, p).await;
                }
            }
        }
    }
}

impl State {
    fn owns(&self, satellite: &str) -> bool {
        if !self.joined.load(Ordering::Acquire) {
            return false;
        }
        let members = self.members.lock();
        owner(members.iter().map(String::as_str), satellite) == Some(self.me.as_str())
    }

    fn open_session(&self, satellite: &str) -> Option<mpsc::Sender<Event>> {
        let sessions = self.sessions.lock();
        sessions.get(satellite).map(|(_, tx)| tx.clone()).filter(|tx| !tx.is_closed())
    }

    async fn send_snd(&self, satellite: &str, event: &Event) {
        let topic = self.shared.topics.snd(satellite);
        if let Err(e) = self.link.publish(topic, QoS::AtLeastOnce, false, sat::encode(event), None).await {
            tracing::warn!(satellite, error = %e, "cannot send to the satellite");
        }
    }

    /// An event envelope on `P/voice/stt/events`.
    async fn event(&self, data: Value) {
        let env = Envelope::event(self.bus.name(), Destination::topic(self.shared.topics.stt_events()), data);
        let _ = self.bus.send(&env).await;
    }

    /// A message the service will not act on: dead-lettered, and the satellite told.
    async fn refuse(&self, topic: &str, satellite: &str, payload: &[u8], code: &str, reason: String) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(satellite, code, %reason, "satellite message refused");
        let _ = self.bus.dead_letter(Refusal::new(code.to_string(), reason.clone()), topic, payload).await;
        self.send_snd(satellite, &sat::error(code, &reason, None)).await;
    }
}

async fn on_mic(state: &Arc<State>, topic: &str, satellite: &str, p: Publish) {
    let open = state.open_session(satellite);
    // Only the owner acts, on refusals too: one answer per message whatever the instances.
    if open.is_none() && !state.owns(satellite) {
        return;
    }
    let sender = if state.trust_identity {
        p.properties.as_ref().and_then(|props| Sender::from_properties(&props.user_properties))
    } else {
        None
    };
    if let Some(device) = sender.as_ref().and_then(Sender::device_id).filter(|d| *d != satellite) {
        let reason = format!(
            "identity: `{device}` sent on satellite `{satellite}`'s microphone topic; a satellite streams only on its own topics"
        );
        state.counters.refused.fetch_add(1, Ordering::Relaxed);
        let _ = state.bus.dead_letter(Refusal::new(Refusal::IDENTITY, reason.clone()), topic, &p.payload).await;
        let mut answer = Envelope::new(
            state.bus.name(),
            Destination::device(device),
            MessageType::Response,
            json!({"code": "forbidden", "message": reason}),
        );
        answer.payload.metadata.status = Some(ReplyStatus::Error);
        let _ = state.bus.send_to(&state.bus.topics().device_errors(device), &answer, None).await;
        return;
    }
    let event = match sat::decode(&p.payload) {
        Ok(e) => e,
        Err(e) => {
            let why = format!("not a satellite message (one Wyoming event: a JSON header line, data, payload): {e}");
            state.refuse(topic, satellite, &p.payload, "invalid_message", why).await;
            return;
        }
    };
    if let Some(tx) = open {
        if tx.try_send(event).is_err() {
            let why = format!("more than {QUEUE} messages wait for this stream; the message is dropped");
            state.refuse(topic, satellite, &p.payload, "busy", why).await;
        }
        return;
    }
    match event.kind.as_str() {
        kind::TRANSCRIBE | kind::AUDIO_START | kind::DETECT => {
            if state.sessions.lock().len() >= state.max_streams {
                let why = format!("this instance follows {} streams already", state.max_streams);
                state.send_snd(satellite, &sat::error("busy", &why, event.str("session_id"))).await;
                return;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let gen = state.generation.fetch_add(1, Ordering::Relaxed);
            let _ = tx.try_send(event);
            state.sessions.lock().insert(satellite.to_string(), (gen, tx));
            tokio::spawn(session(state.clone(), satellite.to_string(), rx, gen));
        }
        kind::AUDIO_CHUNK | kind::AUDIO_STOP => {
            state.counters.stray.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(satellite, kind = %event.kind, "no utterance open (audio-start first); ignored");
        }
        // `synthesize` is the TTS service's; `describe` and the rest have no meaning here.
        _ => {}
    }
}

/// What `transcribe` (or `audio-start`) asks of the next utterance.
#[derive(Debug, Clone)]
struct Options {
    language: Option<String>,
    session: Option<String>,
    user: Option<String>,
    /// Put the transcript on `P/voice/stt/response` (where the assistant acts on it).
    publish: bool,
    /// End the utterance when speech ends (Silero VAD), not only at `audio-stop`.
    vad: bool,
    threshold: Option<f64>,
    /// `detect` came first: listen for these wake words (empty: any) before each utterance.
    wake: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Self {
        Options { language: None, session: None, user: None, publish: true, vad: true, threshold: None, wake: None }
    }
}

impl Options {
    /// Fields of `transcribe` or `audio-start` data override.
    fn update(&mut self, data: &Map<String, Value>) {
        let s = |k: &str| data.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(l) = s("language") {
            self.language = Some(l);
        }
        if let Some(id) = s("session_id") {
            self.session = Some(id);
        }
        if let Some(u) = s("user_id") {
            self.user = Some(u);
        }
        if let Some(b) = data.get("publish").and_then(Value::as_bool) {
            self.publish = b;
        }
        if let Some(b) = data.get("vad").and_then(Value::as_bool) {
            self.vad = b;
        }
        if let Some(t) = data.get("confidence_threshold").and_then(Value::as_f64) {
            self.threshold = Some(t);
        }
    }
}

struct Utterance {
    stream: Option<SttStream>,
    opts: Options,
    session: String,
    /// Answered already (transcribed at VAD's end of speech, or refused).
    answered: bool,
    started: Instant,
    /// Wall clock (unix ms) when its `audio-start` arrived. Plus the speech's offset in the
    /// audio, it is when voice activity began ([`speech_at`]): satellites that heard one
    /// utterance report starts close together (the voice pipeline's arbitration).
    started_unix: u64,
}

/// Wall clock (unix ms) when the speech `at_ms` into an utterance's audio began: its
/// `audio-start`'s arrival plus the offset, not the time VAD got round to noticing (on a busy machine one
/// stream's VAD may lag another's by far more than the arbitration window).
fn speech_at(started_unix: u64, at_ms: u64) -> u64 {
    started_unix.saturating_add(at_ms)
}

/// A stream listening for a wake word between its utterances.
struct Listening {
    detector: WakeDetector,
    conv: alicia_audio::pcm::StreamConverter,
    /// The stream's `audio-start`: each utterance after a wake word opens with its format.
    start: Event,
    opts: Options,
    /// Wake words heard so far (the utterances' session suffixes).
    heard: u32,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Loudness of the speech part of an utterance (16 kHz mono), in dB below full scale: how
/// well a satellite heard it (the nearest satellite hears the loudest).
fn energy_dbfs(audio: &[f32], speech: Option<(u64, Option<u64>)>) -> Option<f64> {
    let at = |ms: u64| ((ms as usize).saturating_mul(16)).min(audio.len());
    let part = match speech {
        Some((start, end)) => &audio[at(start)..end.map_or(audio.len(), at).max(at(start))],
        None => audio,
    };
    if part.is_empty() {
        return None;
    }
    let mean = part.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>() / part.len() as f64;
    Some(round3(10.0 * mean.max(1e-12).log10()))
}

async fn session(state: Arc<State>, satellite: String, mut rx: mpsc::Receiver<Event>, gen: u64) {
    let mut next = Options::default();
    let mut cur: Option<Utterance> = None;
    let mut listening: Option<Listening> = None;
    loop {
        let event = match tokio::time::timeout(state.idle, rx.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(_) => {
                if let Some(u) = cur.take().filter(|u| !u.answered) {
                    tracing::debug!(satellite, "stream went quiet without audio-stop: transcribing what came");
                    finish(&state, &satellite, u, "idle").await;
                }
                break;
            }
        };
        match event.kind.as_str() {
            kind::TRANSCRIBE => next.update(&event.data),
            kind::DETECT => {
                let names = event
                    .data
                    .get("names")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect::<Vec<_>>());
                next.wake = Some(names.unwrap_or_default());
            }
            kind::AUDIO_START => {
                if let Some(old) = cur.take().filter(|u| !u.answered) {
                    let e = sat::error("interrupted", "a new audio-start came before audio-stop", Some(&old.session));
                    state.send_snd(&satellite, &e).await;
                }
                listening = None;
                let mut opts = std::mem::take(&mut next);
                opts.update(&event.data);
                if let Some(names) = opts.wake.clone() {
                    match listen(&state, &event, opts, &names) {
                        Ok(l) => listening = Some(l),
                        Err(e) => fail(&state, &satellite, event.str("session_id").unwrap_or_default(), e).await,
                    }
                    continue;
                }
                cur = Some(start(&state, &satellite, &event, opts).await);
            }
            kind::AUDIO_CHUNK if cur.as_ref().is_none_or(|u| u.answered) && listening.is_some() => {
                let l = listening.as_mut().expect("checked");
                let heard = l
                    .conv
                    .push(event.payload.as_deref().unwrap_or_default())
                    .map_err(SttError::from)
                    .and_then(|samples| l.detector.push(&samples));
                match heard {
                    Ok(h) if h.is_empty() => {}
                    Ok(h) => {
                        l.heard += 1;
                        // The utterance starts now: the detector starts afresh when it is over.
                        l.detector.reset();
                        let mut opts = l.opts.clone();
                        opts.wake = None;
                        opts.session = Some(match &l.opts.session {
                            Some(s) => format!("{s}-{}", l.heard),
                            None => alicia_envelope::Uuid::new_v4().simple().to_string(),
                        });
                        let u = start(&state, &satellite, &l.start, opts).await;
                        let (name, score, at) = (&h[0].name, h[0].score, h[0].at_ms);
                        let e = Event::with_data(kind::DETECTION, json!({"name": name, "timestamp": at}));
                        state.send_snd(&satellite, &sat::with_session(e, Some(&u.session))).await;
                        state
                            .event(json!({"event": "wake_detected", "satellite": satellite, "session_id": u.session,
                                          "name": name, "score": round3(f64::from(score)), "timestamp": at,
                                          "publish": u.opts.publish}))
                            .await;
                        cur = Some(u);
                    }
                    Err(e) => {
                        let session = l.opts.session.clone().unwrap_or_default();
                        listening = None;
                        fail(&state, &satellite, &session, stream_error(&e)).await;
                    }
                }
            }
            kind::AUDIO_CHUNK => {
                let Some(u) = cur.as_mut().filter(|u| !u.answered) else { continue };
                let Some(stream) = u.stream.as_mut() else { continue };
                match stream.push(event.payload.as_deref().unwrap_or_default()) {
                    Ok(StreamEvent::Continue) => {}
                    Ok(StreamEvent::SpeechStarted) => {
                        let at = stream.speech().map_or(0, |(s, _)| s);
                        let e = sat::with_session(
                            Event::with_data(kind::VOICE_STARTED, json!({"timestamp": at})),
                            Some(&u.session),
                        );
                        state.send_snd(&satellite, &e).await;
                        let began = speech_at(u.started_unix, at);
                        state
                            .event(json!({"event": "voice_started", "satellite": satellite, "session_id": u.session,
                                          "at": began, "timestamp": at, "publish": u.opts.publish}))
                            .await;
                    }
                    Ok(StreamEvent::SpeechEnded) => {
                        let at = stream.speech().and_then(|(_, e)| e).unwrap_or(0);
                        let e = sat::with_session(
                            Event::with_data(kind::VOICE_STOPPED, json!({"timestamp": at})),
                            Some(&u.session),
                        );
                        state.send_snd(&satellite, &e).await;
                        let taken = Utterance {
                            stream: u.stream.take(),
                            opts: u.opts.clone(),
                            session: u.session.clone(),
                            answered: false,
                            started: u.started,
                            started_unix: u.started_unix,
                        };
                        u.answered = true;
                        finish(&state, &satellite, taken, "vad").await;
                    }
                    Err(e) => {
                        u.answered = true;
                        u.stream = None;
                        fail(&state, &satellite, &u.session, stream_error(&e)).await;
                    }
                }
            }
            kind::AUDIO_STOP => {
                if let Some(u) = cur.take().filter(|u| !u.answered) {
                    finish(&state, &satellite, u, "audio_stop").await;
                }
                if let Some(l) = listening.take().filter(|l| l.heard == 0) {
                    let e = Event::with_data(kind::NOT_DETECTED, json!({}));
                    state.send_snd(&satellite, &sat::with_session(e, l.opts.session.as_deref())).await;
                }
                next = Options::default();
            }
            _ => {}
        }
    }
    let mut sessions = state.sessions.lock();
    if sessions.get(&satellite).is_some_and(|(g, _)| *g == gen) {
        sessions.remove(&satellite);
    }
}

/// A stream that listens for a wake word (`detect` came before its `audio-start`).
fn listen(
    state: &State,
    event: &Event,
    opts: Options,
    names: &[String],
) -> Result<Listening, alicia_sdk::ServiceError> {
    let Some((models, threshold)) = &state.wake else {
        return Err(alicia_sdk::ServiceError::new(
            "wake_unavailable",
            "this speech-to-text service listens for no wake word (stt_service.wake_word.enabled is off): detect on the satellite, or enable it",
        ));
    };
    let fmt = event.pcm_format().map_err(|e| audio_error(&e))?;
    let conv = alicia_audio::pcm::StreamConverter::new(fmt).map_err(|e| audio_error(&e))?;
    let detector = WakeDetector::new(models, names, *threshold).map_err(|e| {
        let code = if names.is_empty() { "wake_failed" } else { "unknown_wake_word" };
        alicia_sdk::ServiceError::new(code, e.to_string())
    })?;
    Ok(Listening { detector, conv, start: event.clone(), opts, heard: 0 })
}

fn stream_error(e: &SttError) -> alicia_sdk::ServiceError {
    match e {
        SttError::Audio(a) => audio_error(a),
        other => stt_error(other),
    }
}

async fn start(state: &State, satellite: &str, event: &Event, opts: Options) -> Utterance {
    let session = opts.session.clone().unwrap_or_else(|| alicia_envelope::Uuid::new_v4().simple().to_string());
    state.counters.utterances.fetch_add(1, Ordering::Relaxed);
    let opened = event.pcm_format().map_err(|e| audio_error(&e)).and_then(|fmt| {
        let vad = match (&state.vad, opts.vad) {
            // A VAD per utterance: its recurrent state belongs to one stream.
            (Some((model, cfg)), true) => Some(Vad::new(model, *cfg).map_err(|e| stt_error(&e))?),
            _ => None,
        };
        SttStream::new(fmt, vad, state.shared.engine.config().max_audio_seconds).map_err(|e| stream_error(&e))
    });
    let mut u =
        Utterance { stream: None, opts, session, answered: false, started: Instant::now(), started_unix: unix_ms() };
    match opened {
        Ok(s) => u.stream = Some(s),
        Err(e) => {
            u.answered = true;
            fail(state, satellite, &u.session, e).await;
        }
    }
    u
}

async fn fail(state: &State, satellite: &str, session: &str, e: alicia_sdk::ServiceError) {
    state.send_snd(satellite, &sat::error(&e.code, &e.message, Some(session))).await;
    state
        .event(json!({"event": "error", "satellite": satellite, "session_id": session, "code": e.code, "message": e.message}))
        .await;
}

/// Transcribes the utterance and says what was heard: `transcript` to the satellite, and the
/// design document's STT response on `P/voice/stt/response`.
async fn finish(state: &State, satellite: &str, u: Utterance, why: &str) {
    let Some(stream) = u.stream else { return };
    let ended = Instant::now();
    let spoken = stream.speech();
    let audio = stream.finish();
    let speech = json!({
        "started_at": speech_at(u.started_unix, spoken.map_or(0, |(s, _)| s)),
        "start_ms": spoken.map(|(s, _)| s),
        "end_ms": spoken.and_then(|(_, e)| e),
        "energy_dbfs": audio.as_ref().ok().and_then(|a| energy_dbfs(a, spoken)),
    });
    // The end of speech, before the model runs: the voice pipeline times the stages from here.
    state
        .event(json!({"event": "utterance_ended", "satellite": satellite, "session_id": u.session, "reason": why,
                      "speech": speech, "publish": u.opts.publish}))
        .await;
    let audio = match audio {
        Ok(a) => a,
        // Nothing was said: an empty transcript, as Wyoming's reference servers answer.
        Err(SttError::Audio(alicia_audio::AudioError::Empty)) => {
            let e = Event::with_data(
                kind::TRANSCRIPT,
                json!({"text": "", "language": u.opts.language.clone().unwrap_or_else(|| "en".into())}),
            );
            state.send_snd(satellite, &sat::with_session(e, Some(&u.session))).await;
            return;
        }
        Err(e) => return fail(state, satellite, &u.session, stream_error(&e)).await,
    };
    let t = match state.shared.transcribe(audio, u.opts.language.as_deref()).await {
        Ok(t) => t,
        Err(e) => return fail(state, satellite, &u.session, e).await,
    };
    let after_end = ended.elapsed().as_secs_f64() * 1000.0;
    let accepted = u.opts.threshold.is_none_or(|min| t.confidence as f64 >= min);
    let timings = json!({
        "queue": round3(t.queue_ms),
        "inference": round3(t.inference_ms),
        "after_end": round3(after_end),
        "utterance": round3(u.started.elapsed().as_secs_f64() * 1000.0),
    });
    let transcript = Event::with_data(
        kind::TRANSCRIPT,
        json!({"text": t.text, "language": t.language, "confidence": round3(t.confidence as f64), "accepted": accepted, "timings_ms": timings}),
    );
    state.send_snd(satellite, &sat::with_session(transcript, Some(&u.session))).await;
    if u.opts.publish && accepted {
        let data = json!({
            "transcription": t.text,
            "confidence": round3(t.confidence as f64),
            "language": t.language,
            "duration_seconds": round3(t.audio_seconds as f64),
            "model": state.shared.model_name,
            "timings_ms": timings,
            "speech": speech,
        });
        let to = Destination::device(satellite);
        let to = if to.validate().is_ok() { to } else { Destination::Broadcast };
        let mut env = Envelope::new(state.bus.name(), to, MessageType::Response, data);
        let meta = &mut env.payload.metadata.extra;
        meta.insert("session_id".into(), json!(u.session));
        meta.insert("device_id".into(), json!(satellite));
        if let Some(user) = &u.opts.user {
            meta.insert("user_id".into(), json!(user));
        }
        if let Err(e) = state.bus.send_to(&state.shared.topics.stt_response(), &env, None).await {
            tracing::warn!(satellite, error = %e, "cannot publish the transcript");
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_spread_and_stable() {
        let members = ["a1", "b2", "c3"];
        let mut count = HashMap::new();
        for i in 0..300 {
            let sat = format!("sat{i}");
            let o = owner(members, &sat).unwrap();
            *count.entry(o).or_insert(0) += 1;
            // Removing another member never moves this satellite.
            let others: Vec<&str> =
                members.iter().copied().filter(|m| *m == o || *m != members[(i % 3) as usize]).collect();
            if others.contains(&o) {
                assert_eq!(owner(others, &sat), Some(o));
            }
        }
        assert!(count.values().all(|n| *n > 60), "{count:?}");
        assert_eq!(owner(std::iter::empty::<&str>(), "x"), None);
    }
}
