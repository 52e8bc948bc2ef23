//! `speaker_manager`: announcements and audio for one speaker, a location or all of them, a
//! queue per speaker, volume within each speaker's registered parameters, and music ducked (or
//! paused and resumed) under announcements. A speaker that cannot speak text gets the text
//! spoken by the TTS service, as a clip it fetches ([`crate::media`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alicia_envelope::{Destination, Envelope};
use alicia_sdk::{Bus, BusService, Context, HandlerResult, ServiceConfig, ServiceError, ServiceHandle, Subscription};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::home::{Device, Home};
use crate::media::Media;
use crate::DeviceError;

/// The service's name on the bus.
pub const SERVICE_NAME: &str = "speaker_manager";

/// How to run it.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    pub service: ServiceConfig,
    pub settings: alicia_config::SpeakerManagerConfig,
}

impl SpeakerConfig {
    pub fn new(service: ServiceConfig) -> Self {
        SpeakerConfig { service, settings: alicia_config::SpeakerManagerConfig::default() }
    }
}

/// Which speakers a request is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Device(String),
    Location(String),
    All,
}

impl Target {
    /// `device_id`, else `location`, else every speaker (`"all": true` or nothing).
    pub fn of(data: &Value) -> Target {
        if let Some(id) = data.get("device_id").and_then(Value::as_str) {
            Target::Device(id.to_string())
        } else if let Some(l) = data.get("location").and_then(Value::as_str) {
            Target::Location(l.to_string())
        } else {
            Target::All
        }
    }
}

/// Whether a device plays audio.
pub fn is_speaker(d: &Device) -> bool {
    d.has("audio_playback") || d.has("announce")
}

/// The volume range a speaker registered (`volume_control`'s or `audio_playback`'s
/// `min_volume`/`max_volume`; 0..100 when neither says).
pub fn volume_range(d: &Device) -> (i64, i64) {
    let get = |k: &str, default: f64| {
        d.capability("volume_control")
            .and_then(|c| c.number(k))
            .or_else(|| d.capability("audio_playback").and_then(|c| c.number(k)))
            .unwrap_or(default) as i64
    };
    (get("min_volume", 0.0), get("max_volume", 100.0))
}

#[derive(Debug)]
enum Item {
    Announce { params: Map<String, Value>, done: Option<oneshot::Sender<Value>> },
    Play { params: Map<String, Value>, done: Option<oneshot::Sender<Value>> },
}

struct Queue {
    tx: mpsc::Sender<Item>,
    len: Arc<AtomicUsize>,
}

struct State {
    home: Arc<Home>,
    settings: alicia_config::SpeakerManagerConfig,
    queues: Mutex<HashMap<String, Queue>>,
    bus: Mutex<Option<Bus>>,
    /// Where spoken announcements are served, when on.
    media: Option<Arc<Media>>,
}

impl State {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.command_timeout_ms)
    }

    fn targets(&self, target: &Target) -> Result<Vec<Device>, ServiceError> {
        let home = &self.home;
        let found = match target {
            Target::Device(id) => match home.device(id) {
                Some(d) if is_speaker(&d) => vec![d],
                Some(_) => {
                    return Err(ServiceError::new(
                        "not_a_speaker",
                        format!("{id} has no audio_playback or announce capability"),
                    ))
                }
                None => return Err(ServiceError::new("unknown_device", format!("{id:?} is not registered"))),
            },
            Target::Location(l) => home.devices(|d| {
                is_speaker(d) && d.reachable() && d.location.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(l))
            }),
            Target::All => home.devices(|d| is_speaker(d) && d.reachable()),
        };
        if found.is_empty() {
            return Err(ServiceError::new("no_speaker", format!("no reachable speaker for {target:?}")));
        }
        Ok(found)
    }

    /// A command to one speaker, through the router; the answer's state.
    async fn send(&self, id: &str, command: &str, params: Value) -> Result<Value, ServiceError> {
        let bus = self.bus.lock().clone().ok_or_else(|| ServiceError::new("unavailable", "not started"))?;
        let data = json!({ "command": command, "parameters": params });
        match bus.request(Destination::device(id), data, self.timeout()).await {
            Ok(answer) => Ok(answer.payload.data),
            Err(alicia_sdk::SdkError::Remote { code, message, .. }) => Err(ServiceError::new(code, message)),
            Err(e) => Err(ServiceError::new("timeout", format!("{id}: {e}"))),
        }
    }

    /// `text` spoken by the TTS service on the bus, as the URL of a clip this service serves;
    /// `None` (the speaker gets the text only) when serving is off or no TTS answers.
    async fn speech(&self, text: &str) -> Option<String> {
        let media = self.media.as_ref()?;
        let bus = self.bus.lock().clone()?;
        let to = Destination::capability("text_to_speech");
        let answer = match bus.request(to, json!({ "text": text }), self.settings_tts_timeout()).await {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(error = %e, "no speech for the announcement; the speaker gets its text only");
                return None;
            }
        };
        let b64 = answer.payload.data.get("audio_data").and_then(Value::as_str)?;
        match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64) {
            Ok(wav) => Some(media.add(wav.into())),
            Err(e) => {
                tracing::warn!(error = %e, from = %answer.source, "the TTS answer's audio_data is not base64");
                None
            }
        }
    }

    fn settings_tts_timeout(&self) -> Duration {
        // Synthesis of a sentence takes well under a second; a model still loading, longer.
        Duration::from_secs(15)
    }

    /// The speaker's queue, started on first use.
    fn queue(self: &Arc<Self>, id: &str) -> (mpsc::Sender<Item>, Arc<AtomicUsize>) {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(id).filter(|q| !q.tx.is_closed()) {
            return (q.tx.clone(), q.len.clone());
        }
        let (tx, rx) = mpsc::channel(self.settings.queue_limit);
        let len = Arc::new(AtomicUsize::new(0));
        tokio::spawn(worker(self.clone(), id.to_string(), rx, len.clone()));
        queues.insert(id.to_string(), Queue { tx: tx.clone(), len: len.clone() });
        (tx, len)
    }

    fn enqueue(self: &Arc<Self>, id: &str, item: Item) -> Result<usize, ServiceError> {
        let (tx, len) = self.queue(id);
        tx.try_send(item).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ServiceError::new(
                "queue_full",
                format!("{id} has {} items waiting (speaker_manager.queue_limit)", self.settings.queue_limit),
            ),
            mpsc::error::TrySendError::Closed(_) => ServiceError::new("unavailable", "the queue stopped"),
        })?;
        Ok(len.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// Plays the queue of one speaker, one item at a time.
async fn worker(state: Arc<State>, id: String, mut rx: mpsc::Receiver<Item>, len: Arc<AtomicUsize>) {
    while let Some(item) = rx.recv().await {
        let (result, done) = match item {
            Item::Announce { params, done } => (announce(&state, &id, params).await, done),
            Item::Play { params, done } => (play_queued(&state, &id, params).await, done),
        };
        len.fetch_sub(1, Ordering::SeqCst);
        let answer = match result {
            Ok(v) => json!({ "device_id": id, "ok": true, "state": v }),
            Err(e) => {
                tracing::warn!(device = %id, code = %e.code, message = %e.message, "speaker item failed");
                json!({ "device_id": id, "ok": false, "code": e.code, "message": e.message })
            }
        };
        if let Some(d) = done {
            let _ = d.send(answer);
        }
    }
}

/// One announcement: duck (or pause) the music, announce, wait until it is over, resume what
/// was paused.
async fn announce(state: &State, id: &str, mut params: Map<String, Value>) -> Result<Value, ServiceError> {
    let device = state.home.device(id).ok_or_else(|| ServiceError::new("unknown_device", id.to_string()))?;
    let before = state.home.state(id).unwrap_or_default();
    let ducks = device.capability("announce").and_then(|c| c.flag("ducking")).unwrap_or(false);
    let music = before.get("playback").and_then(Value::as_str) == Some("playing");
    if let Some(v) = params.get("volume").and_then(Value::as_i64) {
        let (min, max) = volume_range(&device);
        params.insert("volume".into(), json!(v.clamp(min, max)));
    }
    // A speaker that does not say it speaks text (`announce.parameters.text`) also gets the
    // text spoken, as a clip to fetch; one that plays only URLs needs it.
    let speaks_text = device.capability("announce").and_then(|c| c.flag("text")) == Some(true);
    if !speaks_text && !params.contains_key("audio_url") {
        if let Some(text) = params.get("text").and_then(Value::as_str).map(str::to_string) {
            if let Some(url) = state.speech(&text).await {
                params.insert("audio_url".into(), json!(url));
            }
        }
    }
    let pause_first = music && !ducks;
    if pause_first {
        state.send(id, "pause", json!({})).await?;
    }
    let (command, params) = if device.has("announce") {
        ("announce", Value::Object(params))
    } else {
        if !params.contains_key("audio_url") {
            return Err(ServiceError::new(
                "unsupported",
                format!("{id} cannot speak text (no announce capability): give audio_url"),
            ));
        }
        params.insert("announce".into(), json!(true));
        ("play_audio", Value::Object(params))
    };
    let answer = state.send(id, command, params).await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            if pause_first {
                let _ = state.send(id, "resume", json!({})).await;
            }
            return Err(e);
        }
    };
    // The device says `announcing` while it speaks: wait for a newer state without it.
    if answer.get("announcing").and_then(Value::as_bool) == Some(true) {
        let since = answer.get("updated").and_then(Value::as_str).unwrap_or_default().to_string();
        let timeout = Duration::from_secs_f64(state.settings.announcement_timeout_secs);
        let over = state
            .home
            .wait(timeout, |v| {
                v.states
                    .get(id)
                    .filter(|s| {
                        s.get("announcing").and_then(Value::as_bool) == Some(false)
                            && s.get("updated").and_then(Value::as_str).is_some_and(|u| u > since.as_str())
                    })
                    .cloned()
            })
            .await;
        if over.is_none() {
            tracing::warn!(device = %id, "announcement still going after the timeout; going on");
        }
    }
    if pause_first {
        state.send(id, "resume", json!({})).await?;
    }
    Ok(state.home.state(id).unwrap_or(answer))
}

/// A queued track: waits until the speaker is idle, then plays it.
async fn play_queued(state: &State, id: &str, params: Map<String, Value>) -> Result<Value, ServiceError> {
    let idle = |v: &crate::home::HomeView| {
        v.states.get(id).filter(|s| s.get("playback").and_then(Value::as_str) != Some("playing")).map(|_| ())
    };
    // A long track may be playing: wait as long as it takes (a day at most).
    let _ = state.home.wait(Duration::from_secs(86_400), idle).await;
    state.send(id, "play_audio", Value::Object(params)).await
}

struct Service {
    state: Arc<State>,
    announce_topic: String,
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::new("invalid_request", message)
}

/// `text`, `audio_url`, `volume` of an announcement or a track, checked.
fn media_params(data: &Value, need_url: bool) -> Result<Map<String, Value>, ServiceError> {
    let mut p = Map::new();
    for key in ["text", "audio_url"] {
        match data.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if !s.is_empty() => {
                p.insert(key.into(), json!(s));
            }
            Some(other) => return Err(bad(format!("`{key}` must be a non-empty string, found {other}"))),
        }
    }
    if need_url && !p.contains_key("audio_url") {
        return Err(bad("`audio_url`: missing"));
    }
    if !p.contains_key("text") && !p.contains_key("audio_url") {
        return Err(bad("an announcement needs `text` or `audio_url`"));
    }
    if let Some(v) = data.get("volume").filter(|v| !v.is_null()) {
        let n = v.as_i64().ok_or_else(|| bad(format!("`volume` must be a whole number, found {v}")))?;
        p.insert("volume".into(), json!(n));
    }
    Ok(p)
}

impl BusService for Service {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::shared(self.announce_topic.clone())]
    }

    async fn handle(&self, ctx: &Context, env: Envelope) -> HandlerResult {
        let data = env.payload.data.clone();
        let action = if ctx.topic() == self.announce_topic {
            "announce"
        } else {
            data.get("action").and_then(Value::as_str).unwrap_or_default()
        };
        let s = &self.state;
        match action {
            "announce" => {
                let params = media_params(&data, false)?;
                let targets = s.targets(&Target::of(&data))?;
                let wait = data.get("wait").and_then(Value::as_bool).unwrap_or(false);
                let mut queued = Map::new();
                let mut waiting = Vec::new();
                for d in &targets {
                    let (tx, rx) = oneshot::channel();
                    let pos = s.enqueue(&d.device_id, Item::Announce { params: params.clone(), done: Some(tx) })?;
                    queued.insert(d.device_id.clone(), json!(pos));
                    waiting.push(rx);
                }
                tracing::info!(targets = targets.len(), "announcement queued");
                if !wait {
                    return Ok(Some(json!({ "status": "queued", "queued": queued })));
                }
                let mut results = Vec::new();
                for rx in waiting {
                    results.push(rx.await.unwrap_or_else(|_| json!({ "ok": false, "code": "dropped" })));
                }
                Ok(Some(json!({ "status": "done", "results": results })))
            }
            "play" => {
                let params = media_params(&data, true)?;
                let targets = s.targets(&Target::of(&data))?;
                let enqueue = data.get("enqueue").and_then(Value::as_bool).unwrap_or(false);
                let mut out = Map::new();
                for d in &targets {
                    if enqueue {
                        let pos = s.enqueue(&d.device_id, Item::Play { params: params.clone(), done: None })?;
                        out.insert(d.device_id.clone(), json!({ "queued": pos }));
                    } else {
                        let r = s.send(&d.device_id, "play_audio", Value::Object(params.clone())).await;
                        out.insert(d.device_id.clone(), result_json(r));
                    }
                }
                Ok(Some(json!({ "results": out })))
            }
            "volume" => Ok(Some(self.volume(&data).await?)),
            "stop" => {
                let targets = s.targets(&Target::of(&data))?;
                let mut out = Map::new();
                for d in &targets {
                    out.insert(d.device_id.clone(), result_json(s.send(&d.device_id, "stop", json!({})).await));
                }
                Ok(Some(json!({ "results": out })))
            }
            "status" => {
                let speakers = s.home.devices(is_speaker);
                let queues = s.queues.lock();
                let list: Vec<Value> = speakers
                    .iter()
                    .map(|d| {
                        let (min, max) = volume_range(d);
                        json!({
                            "device_id": d.device_id, "name": d.name, "location": d.location, "status": d.status,
                            "state": s.home.state(&d.device_id),
                            "volume_range": [min, max],
                            "ducking": d.capability("announce").and_then(|c| c.flag("ducking")).unwrap_or(false),
                            "queued": queues.get(&d.device_id).map_or(0, |q| q.len.load(Ordering::SeqCst)),
                        })
                    })
                    .collect();
                Ok(Some(json!({ "speakers": list })))
            }
            other => Err(ServiceError::new(
                "unknown_action",
                format!("action {other:?}: this service answers announce, play, volume, stop and status"),
            )
            .into()),
        }
    }
}

fn result_json(r: Result<Value, ServiceError>) -> Value {
    match r {
        Ok(state) => json!({ "ok": true, "state": state }),
        Err(e) => json!({ "ok": false, "code": e.code, "message": e.message }),
    }
}

impl Service {
    /// `{"action": "volume", target, "volume": N | "step": N | "mute": bool}`.
    async fn volume(&self, data: &Value) -> Result<Value, ServiceError> {
        let s = &self.state;
        let targets = s.targets(&Target::of(data))?;
        let set = data.get("volume").filter(|v| !v.is_null());
        let step = data.get("step").filter(|v| !v.is_null());
        let mute = data.get("mute").filter(|v| !v.is_null());
        let mut out = Map::new();
        for d in &targets {
            let (command, params) = match (set, step, mute) {
                (Some(v), None, None) => {
                    let v = v.as_i64().ok_or_else(|| bad(format!("`volume` must be a whole number, found {v}")))?;
                    let (min, max) = volume_range(d);
                    if !(min..=max).contains(&v) {
                        let e = ServiceError::new(
                            "invalid_parameters",
                            format!("volume {v} is outside {}'s range {min}..={max}", d.device_id),
                        )
                        .with_errors(json!([{ "field": "volume", "reason": format!("{min}..={max}"), "device_id": d.device_id }]));
                        return Err(e);
                    }
                    ("set_volume", json!({ "volume": v }))
                }
                (None, Some(n), None) => {
                    let n = n.as_i64().ok_or_else(|| bad(format!("`step` must be a whole number, found {n}")))?;
                    ("volume_step", json!({ "steps": n }))
                }
                (None, None, Some(m)) => {
                    let m = m.as_bool().ok_or_else(|| bad(format!("`mute` must be true or false, found {m}")))?;
                    let supported =
                        d.capability("volume_control").and_then(|c| c.flag("mute_support")).unwrap_or(false);
                    if !supported {
                        out.insert(
                            d.device_id.clone(),
                            json!({ "ok": false, "code": "unsupported", "message": "no mute_support" }),
                        );
                        continue;
                    }
                    (if m { "mute" } else { "unmute" }, json!({}))
                }
                _ => return Err(bad("give exactly one of `volume`, `step` and `mute`")),
            };
            out.insert(d.device_id.clone(), result_json(s.send(&d.device_id, command, params).await));
        }
        Ok(json!({ "results": out }))
    }
}

/// The running service.
pub struct SpeakerHandle {
    service: ServiceHandle,
    home: Arc<Home>,
    media_addr: Option<std::net::SocketAddr>,
    media_task: Option<tokio::task::JoinHandle<()>>,
}

impl SpeakerHandle {
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    /// Where spoken announcements are served, when on.
    pub fn media_addr(&self) -> Option<std::net::SocketAddr> {
        self.media_addr
    }

    pub async fn shutdown(self) {
        if let Some(t) = self.media_task {
            t.abort();
        }
        self.home.close().await;
        self.service.shutdown().await;
    }
}

/// Starts `speaker_manager`.
pub async fn start(cfg: SpeakerConfig) -> Result<SpeakerHandle, DeviceError> {
    let prefix = cfg.service.topic_prefix.clone();
    alicia_sdk::check_prefix(&prefix)?;
    let (home, _others) =
        Home::follow(&cfg.service, format!("{SERVICE_NAME}-{}-io", crate::random_suffix()), Vec::new(), None);
    let home = Arc::new(home);
    let (media, media_task) = match &cfg.settings.media_http {
        Some(addr) => {
            let bind: std::net::SocketAddr =
                addr.parse().map_err(|_| DeviceError::Config(format!("speaker_manager.media_http: {addr:?}")))?;
            let (media, local, task) = Media::serve(bind, cfg.settings.media_url.clone())
                .await
                .map_err(|e| DeviceError::Config(format!("speaker_manager.media_http {bind}: {e}")))?;
            tracing::info!(%local, "spoken announcements served");
            (Some(media), Some((local, task)))
        }
        None => (None, None),
    };
    let state = Arc::new(State {
        home: home.clone(),
        settings: cfg.settings.clone(),
        queues: Mutex::default(),
        bus: Mutex::default(),
        media,
    });
    let announce_topic = format!("{prefix}/devices/speakers/announce");
    let service = alicia_sdk::start(cfg.service.clone(), Service { state: state.clone(), announce_topic })?;
    *state.bus.lock() = Some(service.bus().clone());
    tracing::info!("speaker manager started");
    let (media_addr, media_task) = media_task.unzip();
    Ok(SpeakerHandle { service, home, media_addr, media_task })
}
