//! `voice_pipeline`: the conversation of one satellite utterance, from the end of speech to
//! the last sample of the answer, over the other voice services (it runs no model).
//!
//! ```text
//! stt_service ── P/voice/stt/events (voice_started, utterance_ended, error) ──┐
//!             ── P/voice/stt/response (the transcript) ──────────────────────┤
//!                                                                            ▼
//!                                                                     voice_pipeline
//!   arbitration (several satellites heard it: the loudest answers) ─────────┤
//!   barge-in ("stop", or a new utterance while the answer plays) ───────────┤
//!                                                                            ▼
//!   request to ai_service (text, satellite, session) ─▶ answer on P/voice/ai/response
//!                                                          ─▶ tts_service speaks it
//! tts_service ── P/voice/tts/events (speaking, spoken, cancelled) ─▶ voice_pipeline
//! ```
//!
//! - **Sessions**: one per utterance, its id stt_service's (the satellite's `session_id`, else
//!   a new one). Each session's record, published as the `finished` event, carries the
//!   transcript, intent, actions, response, outcome and per-stage times in milliseconds after
//!   the end of speech (`transcript`, `intent`, `command_sent`, `answered`, `first_audio`,
//!   `done`). `intent` and `command_sent` are the request's departure plus the assistant's own
//!   stage times (`timings_ms` of its answer); the rest are this service's clock when it heard
//!   of them.
//! - **Events** on `P/voice/events` (envelopes, `data.event`): `started` (speech began),
//!   `transcript`, `arbitrated` (another satellite answers), `cancelled` (barge-in), `error`,
//!   `finished` (the record). The assistant's own `intent` and `action` events carry the same
//!   `session_id`.
//! - **Arbitration**: when satellites' speech starts lie within
//!   [`PipelineConfig::arbitration_window`] of each other and their transcripts have nearly
//!   the same words, they heard one utterance; the one
//!   whose speech was loudest (`speech.energy_dbfs` of the transcript) goes to the assistant,
//!   the others get an `arbitrated` event on their `snd` topic and no answer. The decision
//!   waits for the transcript of every such satellite that may have heard it louder (at most
//!   [`PipelineConfig::arbitration_wait`]; loudness is known at the end of speech, before the
//!   transcription): never the first to report, the best, and the best waits for no one.
//! - **Barge-in**: speech starting on a satellite whose answer is still playing (from its
//!   first audio until its duration has passed) cancels the answer: a cancel to tts_service on
//!   `P/voice/tts/cancel` (it stops streaming and ends with `audio-stop` `cancelled: true`)
//!   and `audio-cancel` to the satellite (stop playing what it has buffered). If the new
//!   utterance is only a stop word ("stop", "cancel", "never mind", …) nothing more is done.
//! - **Never silence**: when the assistant cannot be reached, the pipeline itself asks
//!   tts_service (through `P/voice/ai/response`) to say so.
//!
//! One instance per bus: arbitration needs every satellite's events in one place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope, MessageType, ReplyStatus, Value};
use alicia_sdk::{Bus, BusService, Context, HandlerResult, Link, LinkOptions, QoS, SdkError, ServiceConfig};
use alicia_sdk::{ServiceHandle, Subscription};
use serde_json::{json, Map};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sat::{self, Event};
use crate::satellite::{ARBITRATED, AUDIO_CANCEL};
use crate::topics::VoiceTopics;

/// The service's name on the bus and its MQTT user.
pub const SERVICE_NAME: &str = "voice_pipeline";

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub service: ServiceConfig,
    /// The assistant's service name.
    pub assistant: String,
    /// Speech starting on two satellites within this is one utterance heard twice.
    pub arbitration_window: Duration,
    /// Longest wait for the other satellites' transcripts before deciding without them.
    pub arbitration_wait: Duration,
    /// Longest wait for the assistant's answer.
    pub assistant_timeout: Duration,
    /// A session not finished by then ends with `error` `timeout`.
    pub session_timeout: Duration,
    /// Utterances that only stop the answer playing (compared as lowercase words).
    pub stop_words: Vec<String>,
}

impl PipelineConfig {
    pub fn new(service: ServiceConfig) -> Self {
        PipelineConfig {
            service,
            assistant: "ai_service".into(),
            arbitration_window: Duration::from_millis(300),
            arbitration_wait: Duration::from_secs(10),
            assistant_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(60),
            stop_words: ["stop", "cancel", "never mind", "nevermind", "be quiet", "quiet", "shut up", "enough"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Counters, for tests and the monitor.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    pub sessions: AtomicU64,
    pub forwarded: AtomicU64,
    pub arbitrated: AtomicU64,
    pub cancelled: AtomicU64,
    pub errors: AtomicU64,
}

/// What the actor hears.
enum In {
    Stt(Value),
    Transcript(Box<Envelope>),
    Tts(Value),
    Answer { session: String, result: Box<Result<Envelope, SdkError>> },
    Decide(String),
    Expire(String),
}

struct PipelineService {
    topics: VoiceTopics,
    tx: mpsc::UnboundedSender<In>,
}

impl BusService for PipelineService {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        let t = &self.topics;
        vec![Subscription::new(t.stt_events()), Subscription::new(t.stt_response()), Subscription::new(t.tts_events())]
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        let t = &self.topics;
        let msg = if ctx.topic() == t.stt_response() {
            if envelope.payload.metadata.status == Some(ReplyStatus::Error) {
                return Ok(None);
            }
            In::Transcript(Box::new(envelope))
        } else if ctx.topic() == t.stt_events() {
            In::Stt(envelope.payload.data)
        } else if ctx.topic() == t.tts_events() {
            In::Tts(envelope.payload.data)
        } else {
            return Ok(None);
        };
        let _ = self.tx.send(msg);
        Ok(None)
    }
}

/// The running pipeline.
pub struct PipelineHandle {
    service: ServiceHandle,
    link: Link,
    counters: Arc<PipelineCounters>,
    task: JoinHandle<()>,
}

impl PipelineHandle {
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    pub fn counters(&self) -> &PipelineCounters {
        &self.counters
    }

    /// Waits until both connections are up and subscribed.
    pub async fn wait_online(&self, timeout: Duration) -> Result<(), SdkError> {
        self.service.bus().wait_online(timeout).await?;
        self.link.wait_online(timeout).await
    }

    pub async fn shutdown(self) {
        self.task.abort();
        self.link.close().await;
        self.service.shutdown().await;
    }
}

/// Starts the service.
pub async fn start(cfg: PipelineConfig) -> Result<PipelineHandle, SdkError> {
    let topics = VoiceTopics::new(cfg.service.topic_prefix.clone());
    let mut service_cfg = cfg.service.clone();
    if service_cfg.name.is_none() {
        service_cfg.name = Some(SERVICE_NAME.into());
    }
    let instance = service_cfg
        .instance_id
        .get_or_insert_with(|| alicia_envelope::Uuid::new_v4().simple().to_string()[..12].to_string())
        .clone();
    let name = service_cfg.name.clone().unwrap_or_default();
    // Satellite messages (`arbitrated`, `audio-cancel`) are Wyoming events, not envelopes.
    let (link, _events) = Link::connect(
        &service_cfg,
        LinkOptions::new(format!("{name}-{instance}-snd"), Vec::<String>::new()).with_label(format!("{name}/snd")),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let service = alicia_sdk::start(service_cfg, PipelineService { topics: topics.clone(), tx: tx.clone() })?;
    let counters = Arc::new(PipelineCounters::default());
    let actor = Actor {
        bus: service.bus().clone(),
        link: link.clone(),
        topics,
        cfg,
        tx,
        counters: counters.clone(),
        sessions: HashMap::new(),
        playing: HashMap::new(),
    };
    let task = tokio::spawn(actor.run(rx));
    Ok(PipelineHandle { service, link, counters, task })
}

/// One utterance.
#[derive(Debug)]
struct Session {
    id: String,
    satellite: String,
    created: Instant,
    /// Wall clock of the start of speech (unix ms, stt_service's clock).
    speech_at: Option<u64>,
    energy: Option<f64>,
    end_of_speech: Option<Instant>,
    transcript_at: Option<Instant>,
    transcript: Option<Map<String, Value>>,
    failed: bool,
    /// `Some(true)`: went to the assistant; `Some(false)`: another satellite answers.
    decided: Option<bool>,
    waiting: bool,
    /// Speech began while this satellite's previous answer played.
    barged_in: bool,
    request_sent: Option<Instant>,
    answer: Option<Value>,
    answered_at: Option<Instant>,
    first_audio: Option<Instant>,
    done_at: Option<Instant>,
    finished: bool,
    arbitration: Option<Value>,
}

impl Session {
    fn new(id: &str, satellite: &str) -> Session {
        Session {
            id: id.to_string(),
            satellite: satellite.to_string(),
            created: Instant::now(),
            speech_at: None,
            energy: None,
            end_of_speech: None,
            transcript_at: None,
            transcript: None,
            failed: false,
            decided: None,
            waiting: false,
            barged_in: false,
            request_sent: None,
            answer: None,
            answered_at: None,
            first_audio: None,
            done_at: None,
            finished: false,
            arbitration: None,
        }
    }

    fn text(&self) -> &str {
        self.transcript.as_ref().and_then(|t| t.get("transcription")).and_then(Value::as_str).unwrap_or_default()
    }

    /// The record: what was said, understood, done and answered, and when.
    fn record(&self, outcome: &str, error: Option<Value>) -> Value {
        let base = self.end_of_speech.or(self.transcript_at).unwrap_or(self.created);
        let ms = |t: Instant| round3(t.saturating_duration_since(base).as_secs_f64() * 1000.0);
        let mut timings = Map::new();
        let mut put = |k: &str, v: Option<f64>| {
            if let Some(v) = v {
                timings.insert(k.into(), json!(v));
            }
        };
        put("transcript", self.transcript_at.map(ms));
        let a = self.answer.as_ref();
        let laps = a.and_then(|a| a.get("timings_ms")).and_then(Value::as_object);
        if let (Some(sent), Some(laps)) = (self.request_sent, laps) {
            // The assistant's stages, in order, from the request's departure.
            let sent = ms(sent);
            let mut sum = 0.0;
            let (mut intent, mut command) = (None, None);
            for (stage, v) in laps {
                if stage == "total" {
                    continue;
                }
                sum += v.as_f64().unwrap_or(0.0);
                if matches!(stage.as_str(), "dialogue" | "recognize" | "llm") {
                    intent = Some(round3(sent + sum));
                }
                if stage == "send" {
                    command = Some(round3(sent + sum));
                }
            }
            let acted = a.and_then(|a| a.get("actions")).and_then(Value::as_array).is_some_and(|l| !l.is_empty());
            put("intent", intent);
            put("command_sent", command.filter(|_| acted));
        }
        put("answered", self.answered_at.map(ms));
        put("first_audio", self.first_audio.map(ms));
        put("done", self.done_at.map(ms));
        let field = |k: &str| a.and_then(|a| a.get(k)).cloned().unwrap_or(Value::Null);
        let mut r = json!({
            "event": "finished",
            "session_id": self.id,
            "satellite": self.satellite,
            "device_id": self.satellite,
            "outcome": outcome,
            "transcript": self.transcript.as_ref().map(|_| self.text()),
            "confidence": self.transcript.as_ref().and_then(|t| t.get("confidence")).cloned(),
            "intent": a.and_then(|a| a.pointer("/intent/name")).cloned(),
            "area": field("area"),
            "response": field("response"),
            "actions": field("actions"),
            "barge_in": self.barged_in,
            "timings_ms": timings,
            "stt_timings_ms": self.transcript.as_ref().and_then(|t| t.get("timings_ms")).cloned(),
            "assistant_timings_ms": a.and_then(|a| a.get("timings_ms")).cloned(),
        });
        if let Some(arb) = &self.arbitration {
            r["arbitration"] = arb.clone();
        }
        if let Some(e) = error {
            r["error"] = e;
        }
        r
    }
}

/// The answer playing on a satellite.
struct Playing {
    session: String,
    /// When it will have been played (unknown until tts_service says how long it is).
    until: Option<Instant>,
}

struct Actor {
    bus: Bus,
    link: Link,
    topics: VoiceTopics,
    cfg: PipelineConfig,
    tx: mpsc::UnboundedSender<In>,
    counters: Arc<PipelineCounters>,
    sessions: HashMap<String, Session>,
    playing: HashMap<String, Playing>,
}

/// Two transcripts of one utterance: the same words, give or take one in six (each satellite
/// hears it through its own room). Short commands must match word for word: "turn off the
/// nursery light" and "turn off the bedroom light" said at once in two rooms are two
/// utterances, and both are answered.
fn same_words(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> Vec<String> {
        s.to_lowercase()
            .split(|c: char| !c.is_alphanumeric() && c != '\'')
            .filter(|w| !w.is_empty())
            // A quieter satellite's Whisper often bends a plural ("light" / "lights"): one word.
            .map(|w| if w.len() > 3 { w.strip_suffix('s').unwrap_or(w) } else { w }.to_string())
            .collect()
    };
    let (x, y) = (norm(a), norm(b));
    let mut row: Vec<usize> = (0..=y.len()).collect();
    for (i, wx) in x.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, wy) in y.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(wx != wy)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[y.len()] * 6 <= x.len().max(y.len())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<In>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                In::Stt(d) => self.on_stt(d).await,
                In::Transcript(env) => self.on_transcript(*env).await,
                In::Tts(d) => self.on_tts(d).await,
                In::Answer { session, result } => self.on_answer(&session, *result).await,
                In::Decide(id) => self.decide(&id, true).await,
                In::Expire(id) => {
                    if self.sessions.get(&id).is_some_and(|s| !s.finished) {
                        let e = json!({"code": "timeout", "message": "the session did not finish in time"});
                        self.error(&id, e.clone()).await;
                        self.finish(&id, "error", Some(e)).await;
                    }
                }
            }
            self.prune();
        }
    }

    /// Forgets sessions long finished (a decided one stays a while: arbitration compares with it).
    fn prune(&mut self) {
        if self.sessions.len() < 256 {
            return;
        }
        let keep = self.cfg.session_timeout * 2;
        self.sessions.retain(|_, s| !s.finished || s.created.elapsed() < keep);
    }

    async fn event(&self, data: Value) {
        let env = Envelope::event(self.bus.name(), Destination::topic(self.topics.voice_events()), data);
        if let Err(e) = self.bus.send(&env).await {
            tracing::warn!(error = %e, "voice_pipeline: cannot publish an event");
        }
    }

    async fn to_satellite(&self, satellite: &str, event: &Event) {
        let topic = self.topics.snd(satellite);
        if let Err(e) = self.link.publish(topic, QoS::AtLeastOnce, false, sat::encode(event), None).await {
            tracing::warn!(satellite, error = %e, "voice_pipeline: cannot reach the satellite");
        }
    }

    fn session(&mut self, id: &str, satellite: &str) -> &mut Session {
        if !self.sessions.contains_key(id) {
            self.counters.sessions.fetch_add(1, Ordering::Relaxed);
            let tx = self.tx.clone();
            let (sid, after) = (id.to_string(), self.cfg.session_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(In::Expire(sid));
            });
        }
        self.sessions.entry(id.to_string()).or_insert_with(|| Session::new(id, satellite))
    }

    async fn on_stt(&mut self, d: Value) {
        let (Some(satellite), Some(id)) = (s(&d, "satellite"), s(&d, "session_id")) else { return };
        let (satellite, id) = (satellite.to_string(), id.to_string());
        match s(&d, "event") {
            Some("voice_started") => {
                // An utterance that will not be published (Home Assistant's, through Wyoming)
                // is not the assistant's: no session.
                if d.get("publish").and_then(Value::as_bool) == Some(false) {
                    return;
                }
                let at = d.get("at").and_then(Value::as_u64);
                let barge = self
                    .playing
                    .get(&satellite)
                    .filter(|p| p.session != id)
                    .is_some_and(|p| p.until.is_none_or(|u| Instant::now() < u));
                let sess = self.session(&id, &satellite);
                sess.speech_at = sess.speech_at.or(at);
                sess.barged_in |= barge;
                self.event(json!({"event": "started", "session_id": id, "satellite": satellite, "at": at})).await;
                if barge {
                    self.cancel_playback(&satellite, "barge_in").await;
                }
            }
            Some("utterance_ended") => {
                let energy = d.pointer("/speech/energy_dbfs").and_then(Value::as_f64);
                let at = d.pointer("/speech/started_at").and_then(Value::as_u64);
                if d.get("publish").and_then(Value::as_bool) == Some(false) {
                    return;
                }
                let sess = self.session(&id, &satellite);
                sess.end_of_speech.get_or_insert_with(Instant::now);
                sess.energy = sess.energy.or(energy);
                sess.speech_at = sess.speech_at.or(at);
            }
            Some("error") => {
                let Some(sess) = self.sessions.get_mut(&id) else { return };
                sess.failed = true;
                let e = json!({"code": d.get("code"), "message": d.get("message"), "stage": "stt"});
                self.error(&id, e.clone()).await;
                self.finish(&id, "error", Some(e)).await;
                // Satellites waiting on this one's transcript for arbitration need not wait.
                let waiting: Vec<String> =
                    self.sessions.values().filter(|s| s.waiting && s.decided.is_none()).map(|s| s.id.clone()).collect();
                for w in waiting {
                    self.decide(&w, false).await;
                }
            }
            _ => {}
        }
    }

    async fn on_transcript(&mut self, env: Envelope) {
        let meta = &env.payload.metadata.extra;
        let field = |k: &str| meta.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        let (Some(id), Some(satellite)) = (field("session_id"), field("device_id")) else { return };
        let Value::Object(data) = env.payload.data else { return };
        let sess = self.session(&id, &satellite);
        sess.transcript_at = Some(Instant::now());
        if let Some(sp) = data.get("speech") {
            sess.energy = sess.energy.or(sp.get("energy_dbfs").and_then(Value::as_f64));
            sess.speech_at = sess.speech_at.or(sp.get("started_at").and_then(Value::as_u64));
        }
        let ev = json!({"event": "transcript", "session_id": id, "satellite": satellite,
                        "text": data.get("transcription"), "confidence": data.get("confidence"),
                        "timings_ms": data.get("timings_ms")});
        sess.transcript = Some(data);
        self.event(ev).await;
        self.decide(&id, false).await;
        // Utterances waiting for this one's transcript may now know that it was something else.
        let waiting: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.waiting && s.decided.is_none() && s.id != id)
            .map(|s| s.id.clone())
            .collect();
        for w in waiting {
            self.decide(&w, false).await;
        }
    }

    /// Arbitration: does this utterance go to the assistant?
    async fn decide(&mut self, id: &str, force: bool) {
        let Some(me) = self.sessions.get(id) else { return };
        if me.decided.is_some() || me.transcript.is_none() || me.finished {
            return;
        }
        let window = self.cfg.arbitration_window.as_millis() as u64;
        let rivals: Vec<&Session> = match me.speech_at {
            Some(at) => self
                .sessions
                .values()
                .filter(|o| o.id != me.id && o.satellite != me.satellite && !o.failed)
                .filter(|o| o.speech_at.is_some_and(|t| t.abs_diff(at) <= window))
                // Heard differently, it was something else said at the same time elsewhere.
                .filter(|o| o.transcript.is_none() || same_words(o.text(), me.text()))
                .collect(),
            None => Vec::new(),
        };
        if let Some(w) = rivals.iter().find(|o| o.decided == Some(true)) {
            let (winner, winner_session) = (w.satellite.clone(), w.id.clone());
            self.lose(id, &winner, &winner_session).await;
            return;
        }
        // Only a rival that may have heard it louder is worth waiting for: a quieter one's
        // transcript could only confirm that it lost. (Energies come with `utterance_ended`,
        // before the transcription; unknown counts as maybe louder.)
        let louder_pending = rivals.iter().any(|o| {
            o.transcript.is_none()
                && o.decided.is_none()
                && !matches!((o.energy, me.energy), (Some(e), Some(m)) if e <= m)
        });
        if louder_pending && !force {
            if let Some(me) = self.sessions.get_mut(id) {
                if !me.waiting {
                    me.waiting = true;
                    let (tx, sid, wait) = (self.tx.clone(), id.to_string(), self.cfg.arbitration_wait);
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = tx.send(In::Decide(sid));
                    });
                }
            }
            return;
        }
        // Everyone who heard it and has a transcript: the loudest answers.
        let mut field: Vec<(&Session, f64)> = std::iter::once(me)
            .chain(rivals.iter().copied().filter(|o| o.transcript.is_some() && o.decided.is_none() && !o.finished))
            .map(|s| (s, s.energy.unwrap_or(f64::NEG_INFINITY)))
            .collect();
        field.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.speech_at.cmp(&b.0.speech_at)));
        // Quieter rivals still being transcribed heard it too; they lose when their transcript
        // comes (if it has the same words), and are listed as `pending` here.
        let quieter: Vec<&Session> =
            rivals.iter().copied().filter(|o| o.transcript.is_none() && o.decided.is_none() && !o.finished).collect();
        let dbfs = |e: Option<f64>| e.filter(|e| e.is_finite());
        let heard: Vec<Value> = field
            .iter()
            .map(|(s, e)| json!({"satellite": s.satellite, "session_id": s.id, "energy_dbfs": dbfs(Some(*e))}))
            .chain(quieter.iter().map(|s| {
                json!({"satellite": s.satellite, "session_id": s.id, "energy_dbfs": dbfs(s.energy), "pending": true})
            }))
            .collect();
        let ids: Vec<(String, String)> = field.iter().map(|(s, _)| (s.id.clone(), s.satellite.clone())).collect();
        let quieter: Vec<String> = quieter.iter().map(|s| s.id.clone()).collect();
        let (winner_id, winner) = ids[0].clone();
        if heard.len() > 1 {
            for sid in ids.iter().map(|(sid, _)| sid).chain(&quieter) {
                if let Some(s) = self.sessions.get_mut(sid) {
                    s.arbitration = Some(json!({"winner": winner, "winner_session": winner_id, "heard": heard}));
                }
            }
        }
        self.forward(&winner_id).await;
        for (sid, _) in ids.iter().skip(1) {
            self.lose(sid, &winner, &winner_id).await;
        }
    }

    async fn lose(&mut self, id: &str, winner: &str, winner_session: &str) {
        let Some(me) = self.sessions.get_mut(id) else { return };
        me.decided = Some(false);
        let satellite = me.satellite.clone();
        if me.arbitration.is_none() {
            me.arbitration = Some(json!({"winner": winner, "winner_session": winner_session}));
        }
        self.counters.arbitrated.fetch_add(1, Ordering::Relaxed);
        let reason = "another satellite heard this better and answers it";
        let e = sat::with_session(
            Event::with_data(ARBITRATED, json!({"winner": winner, "winner_session": winner_session, "reason": reason})),
            Some(id),
        );
        self.to_satellite(&satellite, &e).await;
        self.event(json!({"event": "arbitrated", "session_id": id, "satellite": satellite, "winner": winner,
                          "winner_session": winner_session}))
            .await;
        self.finish(id, "arbitrated", None).await;
    }

    fn is_stop(&self, text: &str) -> bool {
        let w: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect::<String>()
            .split_whitespace()
            .filter(|w| !matches!(*w, "please" | "alicia" | "hey" | "ok" | "okay"))
            .collect::<Vec<_>>()
            .join(" ");
        self.cfg.stop_words.contains(&w)
    }

    /// The utterance goes to the assistant.
    async fn forward(&mut self, id: &str) {
        let stop = self.sessions.get(id).is_some_and(|s| self.is_stop(s.text()));
        let Some(me) = self.sessions.get_mut(id) else { return };
        me.decided = Some(true);
        let satellite = me.satellite.clone();
        // "Stop" while an answer played (or plays now): stopping it was all it asked.
        let playing = self.playing.get(&satellite).is_some_and(|p| p.session != id);
        if stop && (me.barged_in || playing) {
            if playing {
                self.cancel_playback(&satellite, "stop").await;
            }
            self.finish(id, "stopped", None).await;
            return;
        }
        let t = me.transcript.clone().unwrap_or_default();
        me.request_sent = Some(Instant::now());
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        let mut data = json!({"text": me.text(), "satellite": satellite, "session_id": id,
                              "confidence": t.get("confidence")});
        if let Some(l) = t.get("language") {
            data["language"] = l.clone();
        }
        let timeout = self.cfg.assistant_timeout;
        let ttl = u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX).max(1);
        let mut env = Envelope::request(self.bus.name(), Destination::service(&self.cfg.assistant), data).with_ttl(ttl);
        let meta = &mut env.payload.metadata.extra;
        meta.insert("session_id".into(), json!(id));
        meta.insert("device_id".into(), json!(satellite));
        let (bus, tx, session) = (self.bus.clone(), self.tx.clone(), id.to_string());
        tokio::spawn(async move {
            let result = bus.request_envelope(env, timeout).await;
            let _ = tx.send(In::Answer { session, result: Box::new(result) });
        });
    }

    async fn on_answer(&mut self, id: &str, result: Result<Envelope, SdkError>) {
        let Some(me) = self.sessions.get_mut(id) else { return };
        me.answered_at = Some(Instant::now());
        match result {
            Ok(env) => {
                let empty =
                    env.payload.data.get("response").and_then(Value::as_str).is_none_or(|r| r.trim().is_empty());
                me.answer = Some(env.payload.data);
                // Empty: nothing to say. Spoken already: tts_service (a cached answer streams in
                // a millisecond) was heard before this reply. Otherwise tts_service is speaking
                // it: finished when it says so.
                if empty || me.done_at.is_some() {
                    let outcome = self.outcome(id);
                    self.finish(id, &outcome, None).await;
                }
            }
            Err(e) => {
                let satellite = me.satellite.clone();
                let code = match &e {
                    SdkError::Remote { code, .. } => code.clone(),
                    SdkError::Timeout { .. } => "timeout".into(),
                    _ => "unavailable".into(),
                };
                let err = json!({"code": code, "message": e.to_string(), "stage": "assistant"});
                self.error(id, err.clone()).await;
                // Never silence: say that it failed.
                let text = "Sorry, I could not do that right now";
                let mut say = Envelope::new(
                    self.bus.name(),
                    Destination::device(&satellite),
                    MessageType::Response,
                    json!({"session_id": id, "satellite": satellite, "response": text, "outcome": "error"}),
                );
                say.payload.metadata.extra.insert("session_id".into(), json!(id));
                if let Err(e) = self.bus.send_to(&self.topics.ai_response(), &say, None).await {
                    tracing::warn!(error = %e, "voice_pipeline: cannot ask for the apology to be spoken");
                }
                if let Some(me) = self.sessions.get_mut(id) {
                    me.answer = Some(json!({"response": text}));
                }
            }
        }
    }

    fn outcome(&self, id: &str) -> String {
        self.sessions
            .get(id)
            .and_then(|s| s.answer.as_ref())
            .and_then(|a| a.get("outcome"))
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_string()
    }

    async fn on_tts(&mut self, d: Value) {
        let (Some(satellite), Some(id)) = (s(&d, "satellite"), s(&d, "session_id")) else { return };
        let (satellite, id) = (satellite.to_string(), id.to_string());
        let Some(me) = self.sessions.get_mut(&id) else { return };
        if me.finished {
            return;
        }
        match s(&d, "event") {
            Some("speaking") => {
                me.first_audio.get_or_insert_with(Instant::now);
                // Handled after its "spoken" (events may be handled out of order, and a session
                // stays open after it until the assistant's reply): the answer's end is known,
                // and an open-ended entry would barge in on the next utterance.
                if me.done_at.is_none() {
                    self.playing.insert(satellite, Playing { session: id, until: None });
                }
            }
            Some("spoken") | Some("cancelled") => {
                let now = Instant::now();
                me.done_at = Some(now);
                let secs = d.pointer("/summary/duration_seconds").and_then(Value::as_f64).unwrap_or(0.0);
                // Events may be handled out of order: the summary says when the first audio went.
                if me.first_audio.is_none() {
                    let total = d.pointer("/summary/timings_ms/total").and_then(Value::as_f64).unwrap_or(0.0);
                    let first = d.pointer("/summary/timings_ms/first_audio").and_then(Value::as_f64).unwrap_or(total);
                    me.first_audio = now.checked_sub(Duration::from_secs_f64((total - first).max(0.0) / 1000.0));
                }
                let first = me.first_audio.unwrap_or(now);
                let cancelled = s(&d, "event") == Some("cancelled");
                if cancelled {
                    self.playing.remove(&satellite);
                } else {
                    let until = first + Duration::from_secs_f64(secs.clamp(0.0, 600.0));
                    self.playing.insert(satellite, Playing { session: id.clone(), until: Some(until) });
                }
                // The assistant's reply to this service may come after tts_service spoke it
                // (two paths over the broker): then the reply finishes the session.
                let waiting = self.sessions.get(&id).is_some_and(|s| s.request_sent.is_some() && s.answer.is_none());
                if waiting && !cancelled {
                    return;
                }
                let outcome = if cancelled { "cancelled".to_string() } else { self.outcome(&id) };
                self.finish(&id, &outcome, None).await;
            }
            Some("error") => {
                let e = json!({"code": d.get("code"), "message": d.get("message"), "stage": "tts"});
                self.error(&id, e.clone()).await;
                self.finish(&id, "error", Some(e)).await;
            }
            _ => {}
        }
    }

    /// Barge-in: the answer playing on `satellite` stops.
    async fn cancel_playback(&mut self, satellite: &str, reason: &str) {
        let Some(p) = self.playing.remove(satellite) else { return };
        self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        let cancel = Envelope::event(
            self.bus.name(),
            Destination::topic(self.topics.tts_cancel()),
            json!({"satellite": satellite, "session_id": p.session, "reason": reason}),
        );
        if let Err(e) = self.bus.send(&cancel).await {
            tracing::warn!(error = %e, "voice_pipeline: cannot cancel the speech");
        }
        let e = sat::with_session(Event::with_data(AUDIO_CANCEL, json!({"reason": reason})), Some(&p.session));
        self.to_satellite(satellite, &e).await;
        self.event(json!({"event": "cancelled", "session_id": p.session, "satellite": satellite, "reason": reason}))
            .await;
        if self.sessions.get(&p.session).is_some_and(|s| !s.finished) {
            self.finish(&p.session, "cancelled", None).await;
        }
    }

    async fn error(&self, id: &str, e: Value) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        let satellite = self.sessions.get(id).map(|s| s.satellite.clone());
        self.event(json!({"event": "error", "session_id": id, "satellite": satellite, "error": e})).await;
    }

    async fn finish(&mut self, id: &str, outcome: &str, error: Option<Value>) {
        let Some(me) = self.sessions.get_mut(id) else { return };
        if me.finished {
            return;
        }
        me.finished = true;
        let record = me.record(outcome, error);
        self.event(record).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_utterance_heard_twice_has_nearly_the_same_words() {
        assert!(same_words("Turn on the kitchen light.", "turn on the kitchen light"));
        assert!(!same_words("turn off the nursery light", "turn off the bedroom light"));
        assert!(same_words("please turn on the light in the kitchen", "please turn on the lights in the kitchen"));
        assert!(!same_words("turn on the kitchen light", "turn off the bedroom light"));
        assert!(!same_words("stop", "play jazz"));
        assert!(!same_words("turn on the basement light", "turn on the living room light"));
        assert!(same_words("", ""));
        assert!(same_words("turn on the kitchen lights", "Turn on the kitchen light."));
    }
}
