//! Wyoming servers (ASR on 10300, TTS on 10200) backed by the running voice services, over
//! the bus: the way Home Assistant uses Alicia.
//!
//! The satellite protocol is Wyoming's events one to one ([`crate::sat`]), so the bridge is a
//! pass-through: each Wyoming connection becomes a satellite of its own on the bus
//! (`wyoming_<bridge>_<n>`, one of a fixed pool so the bridge's subscriptions stay bounded);
//! what the peer sends is published on that satellite's `mic` topic, and what comes back on
//! its `snd` topic is written to the peer. `describe` is answered with `info` built from the
//! services' own `describe` answers. The bridge holds no model: speech is decoded and
//! synthesised by whichever STT and TTS instances take the work, wherever they run.
//!
//! The bridge adds three fields to what it forwards: `session_id` (a per-connection prefix,
//! so a slot reused by a new connection never hears the previous one's late answers),
//! `publish: false` (Home Assistant runs its own pipeline on the transcript: Alicia's
//! assistant must not act on it too) and `vad: false` (Home Assistant decides where the
//! utterance ends, with `audio-stop`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Value};
use alicia_sdk::{Link, LinkEvent, LinkOptions, QoS, SdkError, ServiceConfig, ServiceHandle};
use alicia_wyoming::info::VoiceInfo;
use alicia_wyoming::protocol::{read_event, write_event, Limits};
use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sat::{self, kind, Event};
use crate::topics::VoiceTopics;

/// The bridge's name on the bus and its MQTT user.
pub const SERVICE_NAME: &str = "wyoming";

/// How the bridge runs.
pub struct BridgeConfig {
    /// The bus connection (name [`SERVICE_NAME`] unless set).
    pub service: ServiceConfig,
    /// Where to serve speech to text (`stt_service.wyoming`); `None`: not served.
    pub asr: Option<SocketAddr>,
    /// Where to serve text to speech (`tts_service.wyoming`).
    pub tts: Option<SocketAddr>,
    /// Advertise the servers over mDNS (`_wyoming._tcp`) as `<name>-asr` and `<name>-tts`.
    pub zeroconf: Option<String>,
    /// Connections served at once per server; more are told `busy`.
    pub max_connections: usize,
    /// The services asked (`stt_service`, `tts_service`).
    pub stt_service: String,
    pub tts_service: String,
    /// How long to wait for a service's `describe` answer.
    pub timeout: Duration,
}

impl BridgeConfig {
    pub fn new(service: ServiceConfig) -> Self {
        BridgeConfig {
            service,
            asr: None,
            tts: None,
            zeroconf: None,
            max_connections: 16,
            stt_service: crate::stt::SERVICE_NAME.into(),
            tts_service: crate::tts::SERVICE_NAME.into(),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Bus(#[from] SdkError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Zeroconf(#[from] alicia_wyoming::zeroconf::ZeroconfError),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Asr,
    Tts,
}

struct Shared {
    client: alicia_sdk::Bus,
    link: Link,
    topics: VoiceTopics,
    stt: String,
    tts: String,
    timeout: Duration,
    /// Free slot names, per role.
    free: Mutex<Vec<(Role, String)>>,
    /// The open connection of each slot: where its `snd` events go.
    routes: Mutex<std::collections::HashMap<String, mpsc::Sender<Event>>>,
}

/// The running bridge.
pub struct BridgeHandle {
    client: ServiceHandle,
    shared: Arc<Shared>,
    pub asr_addr: Option<SocketAddr>,
    pub tts_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    _adverts: Vec<alicia_wyoming::zeroconf::Advertisement>,
}

impl BridgeHandle {
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.link.close().await;
        self.client.shutdown().await;
    }
}

/// Binds the servers and connects to the bus.
pub async fn start(cfg: BridgeConfig) -> Result<BridgeHandle, BridgeError> {
    let mut service = cfg.service.clone();
    if service.name.is_none() {
        service.name = Some(SERVICE_NAME.into());
    }
    let name = service.name.clone().unwrap_or_default();
    let instance = service
        .instance_id
        .clone()
        .unwrap_or_else(|| alicia_envelope::Uuid::new_v4().simple().to_string()[..6].to_string());
    service.instance_id = Some(instance.clone());
    let topics = VoiceTopics::new(service.topic_prefix.clone());
    let n = cfg.max_connections.max(1);
    let mut slots = Vec::new();
    for role in [Role::Asr, Role::Tts] {
        let on = match role {
            Role::Asr => cfg.asr.is_some(),
            Role::Tts => cfg.tts.is_some(),
        };
        if on {
            let tag = if role == Role::Asr { "asr" } else { "tts" };
            slots.extend((0..n).map(|i| (role, format!("{name}_{instance}_{tag}{i}"))));
        }
    }
    let filters: Vec<String> = slots.iter().map(|(_, id)| topics.snd(id)).collect();
    let (link, events) = Link::connect(
        &service,
        LinkOptions::new(format!("{name}-{instance}-sat"), filters).with_label(format!("{name}/sat")),
    );
    let client = alicia_sdk::connect(service)?;
    let shared = Arc::new(Shared {
        client: client.bus().clone(),
        link,
        topics,
        stt: cfg.stt_service.clone(),
        tts: cfg.tts_service.clone(),
        timeout: cfg.timeout,
        free: Mutex::new(slots),
        routes: Mutex::new(Default::default()),
    });
    let mut tasks = vec![tokio::spawn(route_snd(shared.clone(), events))];
    let mut adverts = Vec::new();
    let mut bound = [None, None];
    for (i, (role, addr)) in [(Role::Asr, cfg.asr), (Role::Tts, cfg.tts)].into_iter().enumerate() {
        let Some(addr) = addr else { continue };
        let listener = TcpListener::bind(addr).await.map_err(|source| BridgeError::Listen { addr, source })?;
        let local = listener.local_addr().map_err(|source| BridgeError::Listen { addr, source })?;
        bound[i] = Some(local);
        if let Some(prefix) = &cfg.zeroconf {
            let tag = if role == Role::Asr { "asr" } else { "tts" };
            let ip = (!local.ip().is_unspecified()).then_some(local.ip());
            adverts.push(alicia_wyoming::zeroconf::advertise(&format!("{prefix}-{tag}"), local.port(), ip)?);
        }
        tasks.push(tokio::spawn(accept(shared.clone(), listener, role)));
    }
    Ok(BridgeHandle { client, shared, asr_addr: bound[0], tts_addr: bound[1], tasks, _adverts: adverts })
}

/// `snd` messages to the connection that holds the slot.
async fn route_snd(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<LinkEvent>) {
    while let Some(ev) = events.recv().await {
        let LinkEvent::Message(p) = ev else { continue };
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        let Some(slot) = shared.topics.satellite_of(&topic, "snd") else { continue };
        let Ok(event) = sat::decode(&p.payload) else {
            tracing::debug!(%topic, "wyoming bridge: unreadable message on a snd topic");
            continue;
        };
        let tx = shared.routes.lock().get(slot).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(event);
        }
    }
}

async fn accept(shared: Arc<Shared>, listener: TcpListener, role: Role) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "wyoming bridge: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(shared, stream, role).await {
                tracing::debug!(%peer, error = %e, "wyoming bridge connection ended");
            }
        });
    }
}

struct SlotGuard<'a> {
    shared: &'a Shared,
    role: Role,
    id: String,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.shared.routes.lock().remove(&self.id);
        self.shared.free.lock().push((self.role, self.id.clone()));
    }
}

async fn connection(shared: Arc<Shared>, stream: TcpStream, role: Role) -> std::io::Result<()> {
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut w = BufWriter::new(w);
    let slot = {
        let mut free = shared.free.lock();
        free.iter().position(|(ro, _)| *ro == role).map(|i| free.swap_remove(i).1)
    };
    let Some(slot) = slot else {
        write_event(&mut w, &Event::error("too many connections", "busy")).await?;
        return w.flush().await;
    };
    let (tx, mut rx) = mpsc::channel(1024);
    shared.routes.lock().insert(slot.clone(), tx);
    let _guard = SlotGuard { shared: &shared, role, id: slot.clone() };
    // Answers carry a session id with this prefix; anything else on the slot is stale.
    let prefix = alicia_envelope::Uuid::new_v4().simple().to_string()[..12].to_string();
    let mut seq = 0u32;
    let mut session: Option<String> = None;
    let limits = Limits::default();
    let mic = shared.topics.mic(&slot);
    loop {
        tokio::select! {
            read = read_event(&mut r, &limits) => {
                let mut event = match read {
                    Ok(Some(e)) => e,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        let _ = write_event(&mut w, &Event::error(&e.to_string(), "protocol_error")).await;
                        let _ = w.flush().await;
                        return Err(std::io::Error::other(e.to_string()));
                    }
                };
                let forward = match (role, event.kind.as_str()) {
                    (_, "describe") => {
                        let info = describe(&shared, role).await;
                        write_event(&mut w, &info).await?;
                        w.flush().await?;
                        false
                    }
                    (Role::Asr, kind::TRANSCRIBE) | (Role::Asr, kind::AUDIO_START) => {
                        if event.kind == kind::TRANSCRIBE || session.is_none() {
                            seq += 1;
                            session = Some(format!("{prefix}-{seq}"));
                        }
                        let data = &mut event.data;
                        data.insert("session_id".into(), json!(session));
                        data.insert("publish".into(), json!(false));
                        data.insert("vad".into(), json!(false));
                        true
                    }
                    (Role::Asr, kind::AUDIO_CHUNK) => true,
                    (Role::Asr, kind::AUDIO_STOP) => {
                        event.data.insert("session_id".into(), json!(session));
                        true
                    }
                    (Role::Tts, kind::SYNTHESIZE) => {
                        seq += 1;
                        event.data.insert("session_id".into(), json!(format!("{prefix}-{seq}")));
                        true
                    }
                    (_, other) => {
                        tracing::debug!(event = other, ?role, "wyoming bridge: event ignored");
                        false
                    }
                };
                if forward {
                    if let Err(e) = shared.link.publish(mic.clone(), QoS::AtLeastOnce, false, sat::encode(&event), None).await {
                        write_event(&mut w, &Event::error(&format!("the bus is not reachable: {e}"), "unavailable")).await?;
                        w.flush().await?;
                    }
                }
                if event.kind == kind::AUDIO_STOP {
                    // The next utterance starts a new session (its `transcribe` or `audio-start`).
                    session = None;
                }
            }
            Some(mut back) = rx.recv() => {
                let ours = back.str("session_id").is_some_and(|s| s.starts_with(&prefix));
                let wanted = match role {
                    Role::Asr => matches!(back.kind.as_str(), kind::TRANSCRIPT | kind::ERROR),
                    Role::Tts => matches!(back.kind.as_str(), kind::AUDIO_START | kind::AUDIO_CHUNK | kind::AUDIO_STOP | kind::ERROR),
                };
                if ours && wanted {
                    back.data.remove("session_id");
                    write_event(&mut w, &back).await?;
                    w.flush().await?;
                }
            }
        }
    }
}

/// `info` from the service's own `describe` answer, or an `error` when it does not answer.
async fn describe(shared: &Shared, role: Role) -> Event {
    let service = match role {
        Role::Asr => &shared.stt,
        Role::Tts => &shared.tts,
    };
    let started = Instant::now();
    let answer = shared
        .client
        .request(Destination::service(service.clone()), json!({"action": "describe"}), shared.timeout)
        .await;
    let d = match answer {
        Ok(env) => env.payload.data,
        Err(e) => {
            tracing::warn!(%service, error = %e, "wyoming bridge: the service does not describe itself");
            return Event::error(&format!("{service} is not available: {e}"), "unavailable");
        }
    };
    tracing::debug!(%service, ms = started.elapsed().as_millis() as u64, "describe");
    match role {
        Role::Asr => {
            let model = d["model"].as_str().unwrap_or("whisper").to_string();
            let languages: Vec<String> =
                d["languages"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
            alicia_wyoming::info::asr(&model, &format!("Whisper {model} (Alicia's stt_service)"), &languages)
        }
        Role::Tts => {
            let voices: Vec<VoiceInfo> = d["voices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| VoiceInfo {
                    name: v["name"].as_str().unwrap_or_default().to_string(),
                    description: format!(
                        "Piper {} ({} Hz, Alicia's tts_service)",
                        v["name"].as_str().unwrap_or("?"),
                        v["sample_rate"]
                    ),
                    languages: v["language"].as_str().map(str::to_string).into_iter().collect(),
                })
                .collect();
            alicia_wyoming::info::tts(&voices)
        }
    }
}
