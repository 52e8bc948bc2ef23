//! Simulated devices: a speaker, a sensor, a light and a switch that behave on the bus as real
//! ones should, for people without hardware (`alicia simulate speaker kitchen_speaker
//! --location kitchen`) and for the tests of every crate that talks to devices ([`start`] runs
//! one in-process). They are the reference implementation of `docs/device-protocol.md`.
//!
//! A simulated device:
//!
//! - **connects as itself**: plain TCP or TLS ([`Tls`]), with a client certificate (`alicia
//!   certs device ID`; the broker takes its CN as the user name), a gateway token as the
//!   password (a fresh one for every connection attempt, [`Credentials::Token`]), or a user
//!   name and password; MQTT 5, client id = the device id, clean start;
//! - **says whether it is there**: its will is a retained `offline` on
//!   `P/devices/ID/status`, and on every connect it publishes a retained `online` there
//!   (the birth message Home Assistant's availability topics and the registry expect);
//! - **registers** on every connect, and again whenever `P/system/discovery/rebirth` asks, with
//!   the design document's registration message: an envelope from `device_id:ID` on
//!   `P/system/discovery/register` whose data has `device_id`, `device_type`, capability
//!   objects `{name, version, parameters, endpoints}`, `endpoints` (`control` = its command
//!   topic, `status`, `state`, `telemetry`), `metadata` (`manufacturer`, `model`, `location`,
//!   `version`, `simulated: true`), `name` and `heartbeat_interval`. The MQTT 5 response
//!   topic `P/devices/ID/reply` gets the registry's answer ([`SimEvent::Registered`] or
//!   [`SimEvent::Refused`]);
//! - **heartbeats** every [`SimConfig::heartbeat_interval`] on `P/system/discovery/heartbeat`;
//! - **obeys** command envelopes on `P/devices/ID/command` (what the router forwards for
//!   `device_id:ID` and `capability:` destinations), as `docs/device-protocol.md` says: a
//!   `request` is answered with the new state, a refused command (`unknown_command`,
//!   `invalid_parameters`, `fetch_failed`, `unsupported_format`) with an error response when
//!   there is somewhere to send it (the MQTT 5 response topic, else the requester's inbox for
//!   a request); the retained state on `P/devices/ID/state` is published after every change;
//! - applies a command once: a repeated message id (a retry) is answered with the state and not
//!   applied again (it remembers the last 64);
//! - hears refusals of what it sent on `P/devices/ID/errors` ([`SimEvent::Refused`]).
//!
//! | kind | capabilities (parameters) | state |
//! |------|---------------------------|-------|
//! | `speaker` | `audio_playback` (`supported_formats: [wav]`, `min_volume`, `max_volume`), `volume_control` (`step_size`, `mute_support`), `media_control`, `announce` (`ducking`) | `volume`, `muted`, `playback`, `media_url`, `announcing`, `last_announcement` |
//! | `light` | `on_off`, `brightness` (`min` 0, `max` 100), `color_temperature` (`min_kelvin` 2700, `max_kelvin` 6500) | `power`, `brightness`, `color_temp_kelvin` |
//! | `switch` | `on_off` | `power` |
//! | `sensor` | `temperature` (`°C`, -40..85), `humidity` (`%`, 0..100), each with `unit`, `min`, `max`, `device_class` | the latest reading per capability |
//!
//! The **speaker** "plays" into WAV files in [`SimConfig::audio_dir`] (`0001-music.wav`,
//! `0002-announcement.wav`, ...): the audio at `audio_url` (`file://`, `http://`, `https://`;
//! WAV only, as its `supported_formats` says), scaled by its volume (silence when muted), and
//! it reports `playing` for the clip's duration (divided by [`SimConfig::playback_speed`]). An
//! announcement (`announce`, or `play_audio` with `announce: true`) over music ducks it
//! (`announcing: true` while it lasts, the music goes on); with [`SimConfig::ducking`] off it
//! pauses the music instead, and whoever sent it must resume it. A text-only `announce` plays a
//! chime (the simulator has no speech) and keeps the text in `last_announcement`.
//!
//! The **sensor** reports every [`SimConfig::telemetry_interval`] on `P/devices/ID/telemetry`
//! (`{"device_id", "timestamp", "readings": [{"capability", "value", "unit"}]}`), each value a
//! random walk within its range; [`SimDevice::set_reading`] sets one (and reports at once).

mod audio;
mod device;
mod link;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use alicia_envelope::{Destination, Envelope, MessageType, Timestamp};
use bytes::Bytes;
use rumqttc_notls::v5::mqttbytes::v5::PublishProperties;
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::AsyncClient;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use audio::{AudioError, MAX_AUDIO_BYTES};
pub use device::{commands, DeviceTopics, SpeakerParams, MAX_KELVIN, MIN_KELVIN, QUANTITIES};
pub use link::{Credentials, Tls, TokenSource};

/// The kinds of simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Speaker,
    Sensor,
    Light,
    Switch,
}

impl Kind {
    /// `speaker`, `sensor`, `light`, `switch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Speaker => "speaker",
            Kind::Sensor => "sensor",
            Kind::Light => "light",
            Kind::Switch => "switch",
        }
    }

    /// The registration's `device_type` (the same words).
    pub fn device_type(self) -> &'static str {
        self.as_str()
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "speaker" => Ok(Kind::Speaker),
            "sensor" => Ok(Kind::Sensor),
            "light" => Ok(Kind::Light),
            "switch" => Ok(Kind::Switch),
            _ => Err(format!("{s:?} is not a kind of simulated device (speaker, sensor, light, switch)")),
        }
    }
}

/// What can go wrong starting or running a simulated device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("invalid device: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("the device has stopped")]
    Stopped,
}

/// How to run one simulated device. [`SimConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub kind: Kind,
    /// The device id (client id, topic level, `device_id:ID`).
    pub device_id: String,
    /// A name for people (the registration's `name`).
    pub name: Option<String>,
    /// Where it is (`metadata.location`).
    pub location: Option<String>,
    pub host: String,
    pub port: u16,
    pub tls: Option<Tls>,
    pub credentials: Credentials,
    /// First level of every topic (default `alicia`).
    pub topic_prefix: String,
    /// Default 30 s (announced as `heartbeat_interval`).
    pub heartbeat_interval: Duration,
    /// The sensor's report period (default 10 s).
    pub telemetry_interval: Duration,
    /// Where the speaker writes what it plays.
    pub audio_dir: PathBuf,
    /// A CA to trust for `https://` audio URLs (an Alicia home's `certs/ca.crt`); without one,
    /// the web's roots.
    pub audio_ca: Option<PathBuf>,
    /// Playback runs this many times faster than real time (tests use more than 1).
    pub playback_speed: f64,
    /// The speaker's volume range and step.
    pub speaker: SpeakerParams,
    /// Whether the speaker ducks music under an announcement (else it pauses it).
    pub ducking: bool,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl SimConfig {
    /// A device `kind`/`device_id` on the broker at `host:port`, anonymous, no TLS, the
    /// defaults above, writing audio under the system's temporary directory.
    pub fn new(kind: Kind, device_id: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        let device_id = device_id.into();
        SimConfig {
            kind,
            audio_dir: std::env::temp_dir().join("alicia-simulate").join(&device_id),
            device_id,
            name: None,
            location: None,
            host: host.into(),
            port,
            tls: None,
            credentials: Credentials::Anonymous,
            topic_prefix: "alicia".into(),
            heartbeat_interval: Duration::from_secs(30),
            telemetry_interval: Duration::from_secs(10),
            audio_ca: None,
            playback_speed: 1.0,
            speaker: SpeakerParams::default(),
            ducking: true,
            keep_alive: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
        }
    }

    /// Sets the location.
    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    fn validate(&self) -> Result<(), SimError> {
        let id = &self.device_id;
        if id.is_empty() || id.len() > 256 || id.contains(['/', '+', '#', ':']) || id.chars().any(char::is_whitespace) {
            return Err(SimError::Config(format!(
                "device id {id:?}: 1 to 256 bytes without `/`, `+`, `#`, `:` or white space (it is a topic level)"
            )));
        }
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(['+', '#']) {
            return Err(SimError::Config(format!("topic prefix {:?} is not usable", self.topic_prefix)));
        }
        if self.heartbeat_interval < Duration::from_secs(1) || self.telemetry_interval < Duration::from_millis(10) {
            return Err(SimError::Config("heartbeat_interval >= 1 s and telemetry_interval >= 10 ms".into()));
        }
        if !(self.playback_speed.is_finite() && self.playback_speed > 0.0) {
            return Err(SimError::Config("playback_speed must be a positive number".into()));
        }
        let s = self.speaker;
        if s.min_volume >= s.max_volume || s.step_size < 1 {
            return Err(SimError::Config("the speaker needs min_volume < max_volume and step_size >= 1".into()));
        }
        if matches!(self.credentials, Credentials::Certificate)
            && self.tls.as_ref().is_none_or(|t| t.client_cert.is_none())
        {
            return Err(SimError::Config("certificate login needs TLS with a client certificate".into()));
        }
        Ok(())
    }
}

/// What happened to a simulated device ([`SimDevice::events`]; `alicia simulate` prints each
/// as a JSON line).
#[derive(Debug, Clone)]
pub enum SimEvent {
    Connected,
    Disconnected(String),
    /// The registry accepted the registration; its answer's data.
    Registered(Value),
    /// Something the device sent was refused (registration, heartbeat), or a command it
    /// received was (`command` set): the code and reason.
    Refused {
        code: String,
        message: String,
        command: Option<String>,
    },
    /// A command envelope arrived on the command topic (before it was applied).
    Command(Box<Envelope>),
    /// The speaker wrote what it played.
    Played {
        path: PathBuf,
        url: Option<String>,
        announcement: bool,
        volume: i64,
        muted: bool,
    },
    /// The sensor reported.
    Telemetry(Value),
}

impl SimEvent {
    /// A JSON form for people and scripts: `{"event": ..., ...}`.
    pub fn to_json(&self) -> Value {
        match self {
            SimEvent::Connected => json!({ "event": "connected" }),
            SimEvent::Disconnected(why) => json!({ "event": "disconnected", "reason": why }),
            SimEvent::Registered(answer) => json!({ "event": "registered", "answer": answer }),
            SimEvent::Refused { code, message, command } => {
                json!({ "event": "refused", "code": code, "message": message, "command": command })
            }
            SimEvent::Command(env) => json!({ "event": "command", "envelope": env.to_value() }),
            SimEvent::Played { path, url, announcement, volume, muted } => json!({
                "event": "played", "path": path, "url": url, "announcement": announcement,
                "volume": volume, "muted": muted,
            }),
            SimEvent::Telemetry(t) => json!({ "event": "telemetry", "telemetry": t }),
        }
    }
}

enum Control {
    SetReading(String, f64),
    Unregister(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
    Loaded {
        result: Result<audio::Clip, AudioError>,
        url: Option<String>,
        announcement: bool,
        reply: Option<Box<Reply>>,
    },
}

/// Where the answer to a command goes.
#[derive(Clone)]
struct Reply {
    request: Envelope,
    topic: Option<String>,
    correlation: Option<Bytes>,
    /// A request wants its new state back; a command only hears about refusals.
    wants_state: bool,
}

struct Shared {
    played: Mutex<Vec<PathBuf>>,
    commands: Mutex<Vec<Envelope>>,
}

/// A running simulated device.
pub struct SimDevice {
    id: String,
    topics: DeviceTopics,
    control: mpsc::UnboundedSender<Control>,
    state: watch::Receiver<Value>,
    registered: watch::Receiver<bool>,
    events: broadcast::Sender<SimEvent>,
    shared: Arc<Shared>,
    actor: tokio::task::JoinHandle<()>,
    link: alicia_sdk::Link,
}

/// Starts a simulated device: it connects (and keeps reconnecting) in the background.
pub async fn start(cfg: SimConfig) -> Result<SimDevice, SimError> {
    cfg.validate()?;
    let id = cfg.device_id.clone();
    let topics = DeviceTopics::new(&cfg.topic_prefix, &cfg.device_id);
    let (link, link_rx) = link::open(&cfg, &topics)?;
    let behaviour = device::Behaviour::new(cfg.kind, cfg.speaker);
    let (state_tx, state) = watch::channel(stamped(behaviour.state()));
    let (registered_tx, registered) = watch::channel(false);
    let (events, _) = broadcast::channel(256);
    let (control, control_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared { played: Mutex::default(), commands: Mutex::default() });
    let actor = Actor {
        source: format!("device_id:{}", cfg.device_id),
        topics: topics.clone(),
        client: link.client().clone(),
        behaviour,
        state_tx,
        registered_tx,
        events: events.clone(),
        shared: shared.clone(),
        control: control.clone(),
        connected: false,
        started: Instant::now(),
        music: Timer::default(),
        announcement: Timer::default(),
        seq: 0,
        rng: fastrand::Rng::new(),
        recent: std::collections::VecDeque::new(),
        register_again: None,
        register_wait: REGISTER_RETRY_MIN,
        cfg,
    };
    let actor = tokio::spawn(actor.run(link_rx, control_rx, link.clone()));
    Ok(SimDevice { id, topics, control, state, registered, events, shared, actor, link })
}

impl SimDevice {
    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its topics.
    pub fn topics(&self) -> &DeviceTopics {
        &self.topics
    }

    /// The current state document (as last published, with `updated`).
    pub fn state(&self) -> Value {
        self.state.borrow().clone()
    }

    /// Waits until the state satisfies `pred`; returns it.
    pub async fn wait_state(&self, pred: impl Fn(&Value) -> bool, timeout: Duration) -> Result<Value, SimError> {
        let mut rx = self.state.clone();
        let found = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s))).await;
        match found {
            Ok(Ok(s)) => Ok(s.clone()),
            Ok(Err(_)) => Err(SimError::Stopped),
            Err(_) => Err(SimError::Timeout(format!("a state of {} ({})", self.id, self.state()))),
        }
    }

    /// Waits until the registry has accepted the registration (since the last connect).
    pub async fn wait_registered(&self, timeout: Duration) -> Result<(), SimError> {
        let mut rx = self.registered.clone();
        let found = tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await.map(|r| r.map(|_| ()));
        match found {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SimError::Stopped),
            Err(_) => Err(SimError::Timeout(format!("the registry to accept {}", self.id))),
        }
    }

    /// Events from now on.
    pub fn events(&self) -> broadcast::Receiver<SimEvent> {
        self.events.subscribe()
    }

    /// The files the speaker has written, in order.
    pub fn played(&self) -> Vec<PathBuf> {
        self.shared.played.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every command envelope received, in order.
    pub fn commands(&self) -> Vec<Envelope> {
        self.shared.commands.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets a sensor reading (the next ones walk on from it) and reports at once.
    pub fn set_reading(&self, capability: &str, value: f64) {
        let _ = self.control.send(Control::SetReading(capability.to_string(), value));
    }

    /// Publishes an unregistration (`P/system/discovery/unregister`) and waits until it is
    /// handed to the connection.
    pub async fn unregister(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Unregister(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops cleanly: a retained `offline`, then DISCONNECT (so the will does not fire).
    pub async fn stop(self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Stop(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.actor).await;
        self.link.close().await;
    }

    /// Dies without a word: the connection is dropped without DISCONNECT, so the broker
    /// publishes the will (`offline` on the status topic).
    pub async fn crash(self) {
        self.link.abort();
        self.actor.abort();
        let _ = self.actor.await;
    }
}

fn stamped(mut state: Value) -> Value {
    state["updated"] = json!(Timestamp::now().to_string());
    state
}

/// A clip's remaining play time: running (`ends`) or paused (`remaining`).
#[derive(Default)]
struct Timer {
    ends: Option<Instant>,
    remaining: Option<Duration>,
}

impl Timer {
    fn start(&mut self, d: Duration) {
        self.ends = Some(Instant::now() + d);
        self.remaining = None;
    }
    fn pause(&mut self) {
        if let Some(e) = self.ends.take() {
            self.remaining = Some(e.saturating_duration_since(Instant::now()));
        }
    }
    fn resume(&mut self) {
        if let Some(r) = self.remaining.take() {
            self.ends = Some(Instant::now() + r);
        }
    }
    fn clear(&mut self) {
        *self = Timer::default();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

struct Actor {
    cfg: SimConfig,
    source: String,
    topics: DeviceTopics,
    client: AsyncClient,
    behaviour: device::Behaviour,
    state_tx: watch::Sender<Value>,
    registered_tx: watch::Sender<bool>,
    events: broadcast::Sender<SimEvent>,
    shared: Arc<Shared>,
    control: mpsc::UnboundedSender<Control>,
    connected: bool,
    started: Instant,
    music: Timer,
    announcement: Timer,
    seq: u32,
    rng: fastrand::Rng,
    /// Message ids of the last commands, so a retry (the same id) is not applied twice.
    recent: std::collections::VecDeque<String>,
    /// When to send the registration again if the registry has not answered it (a registry
    /// that was restarting, or an answer lost with a connection, must not leave the device
    /// unregistered until the next rebirth).
    register_again: Option<Instant>,
    /// The wait before the next unanswered registration is repeated (doubling, capped).
    register_wait: Duration,
}

/// The first wait for a registration's answer, and the longest.
const REGISTER_RETRY_MIN: Duration = Duration::from_secs(2);
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(30);

/// How many command ids a device remembers.
const RECENT_COMMANDS: usize = 64;

impl Actor {
    async fn run(
        mut self,
        mut link: mpsc::UnboundedReceiver<alicia_sdk::LinkEvent>,
        mut control: mpsc::UnboundedReceiver<Control>,
        held: alicia_sdk::Link,
    ) {
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut telemetry = tokio::time::interval(self.cfg.telemetry_interval);
        telemetry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = link.recv() => match ev {
                    Some(ev) => self.link_event(ev).await,
                    None => break,
                },
                c = control.recv() => match c {
                    Some(Control::Stop(done)) => {
                        self.publish(&self.topics.status.clone(), "offline", true).await;
                        held.close().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.control(c).await,
                    None => break,
                },
                _ = heartbeat.tick() => self.heartbeat().await,
                _ = sleep_until(self.register_again) => {
                    self.register_again = None;
                    if self.connected && !*self.registered_tx.borrow() {
                        tracing::info!(device = %self.cfg.device_id, "no answer to the registration; registering again");
                        self.register().await;
                    }
                }
                _ = telemetry.tick(), if self.cfg.kind == Kind::Sensor => self.report(true).await,
                _ = sleep_until(self.music.ends) => {
                    self.music.clear();
                    self.behaviour.playback = "idle";
                    self.behaviour.media_url = None;
                    self.publish_state().await;
                }
                _ = sleep_until(self.announcement.ends) => {
                    self.announcement.clear();
                    self.behaviour.announcing = false;
                    self.publish_state().await;
                }
            }
        }
        drop(held);
    }

    fn emit(&self, e: SimEvent) {
        let _ = self.events.send(e);
    }

    async fn publish(&self, topic: &str, payload: impl Into<Bytes>, retain: bool) {
        if let Err(e) = self.client.publish(topic, QoS::AtLeastOnce, retain, payload.into()).await {
            tracing::debug!(error = %e, topic, "not published");
        }
    }

    async fn send(&self, topic: &str, env: &Envelope, response: Option<(String, Bytes)>) {
        let props = PublishProperties {
            content_type: Some("application/json".into()),
            response_topic: response.as_ref().map(|r| r.0.clone()),
            correlation_data: response.map(|r| r.1),
            message_expiry_interval: env.remaining_ttl(SystemTime::now()).map(|d| d.as_secs().max(1) as u32),
            ..PublishProperties::default()
        };
        if let Err(e) = self.client.publish_with_properties(topic, QoS::AtLeastOnce, false, env.to_vec(), props).await {
            tracing::debug!(error = %e, topic, "envelope not published");
        }
    }

    async fn publish_state(&self) {
        let state = stamped(self.behaviour.state());
        self.publish(&self.topics.state, state.to_string(), true).await;
        self.state_tx.send_replace(state);
    }

    async fn link_event(&mut self, ev: alicia_sdk::LinkEvent) {
        match ev {
            // Connected and subscribed (the link's SUBACK came): the registry's answer to the
            // registration sent now cannot arrive before the reply topic is subscribed.
            alicia_sdk::LinkEvent::Online => {
                self.connected = true;
                self.registered_tx.send_replace(false);
                self.register_wait = REGISTER_RETRY_MIN;
                self.publish(&self.topics.status.clone(), "online", true).await;
                self.publish_state().await;
                self.register().await;
                self.emit(SimEvent::Connected);
                tracing::info!(device = %self.cfg.device_id, "connected and registering");
            }
            alicia_sdk::LinkEvent::Offline { reason, .. } => {
                if std::mem::take(&mut self.connected) {
                    tracing::warn!(device = %self.cfg.device_id, %reason, "connection lost");
                    self.emit(SimEvent::Disconnected(reason));
                }
            }
            alicia_sdk::LinkEvent::Message(p) => {
                let topic = String::from_utf8_lossy(&p.topic);
                let (payload, props) = (p.payload, p.properties);
                if topic == self.topics.command {
                    self.command(&payload, props).await;
                } else if topic == self.topics.rebirth {
                    self.register().await;
                } else if topic == self.topics.reply || topic == self.topics.errors {
                    self.answer(&payload);
                }
            }
        }
    }

    async fn register(&mut self) {
        self.register_again = Some(Instant::now() + self.register_wait);
        self.register_wait = (self.register_wait * 2).min(REGISTER_RETRY_MAX);
        let who = device::Identity {
            kind: self.cfg.kind,
            id: &self.cfg.device_id,
            name: self.cfg.name.as_deref(),
            location: self.cfg.location.as_deref(),
            speaker: self.cfg.speaker,
            heartbeat_secs: self.cfg.heartbeat_interval.as_secs().max(1),
        };
        let mut data = device::registration(&who, &self.topics);
        if self.cfg.kind == Kind::Speaker && !self.cfg.ducking {
            if let Some(caps) = data["capabilities"].as_array_mut() {
                for c in caps.iter_mut().filter(|c| c["name"] == "announce") {
                    c["parameters"]["ducking"] = json!(false);
                }
            }
        }
        // The document's registration is an event on the discovery topic; the response topic
        // asks the registry to say whether it took it.
        let env = Envelope::event(&self.source, Destination::topic(&self.topics.register), data).without_ttl();
        let correlation = Bytes::from(env.message_id.to_string());
        self.send(&self.topics.register, &env, Some((self.topics.reply.clone(), correlation))).await;
    }

    /// The registry's answer, or an error on the errors topic.
    fn answer(&mut self, payload: &[u8]) {
        let Ok(env) = Envelope::parse(payload) else {
            tracing::warn!(device = %self.cfg.device_id, "an answer that is not an envelope");
            return;
        };
        match env.reply_error() {
            Some(e) => {
                tracing::warn!(device = %self.cfg.device_id, code = %e.code, message = %e.message, "refused");
                self.emit(SimEvent::Refused { code: e.code, message: e.message, command: None });
            }
            None => {
                self.register_again = None;
                self.registered_tx.send_replace(true);
                self.emit(SimEvent::Registered(env.payload.data));
            }
        }
    }

    async fn heartbeat(&self) {
        if !self.connected {
            return;
        }
        let data = json!({
            "device_id": self.cfg.device_id,
            "status": "online",
            "uptime_secs": self.started.elapsed().as_secs(),
            "interval_secs": self.cfg.heartbeat_interval.as_secs(),
        });
        let ttl = (self.cfg.heartbeat_interval.as_secs() * 3).clamp(1, u64::from(u32::MAX)) as u32;
        let env = Envelope::heartbeat(&self.source, data).with_ttl(ttl);
        self.send(&self.topics.heartbeat, &env, None).await;
    }

    /// One sensor report: every quantity moves a little (when `walk`), within its range.
    async fn report(&mut self, walk: bool) {
        let mut readings = Vec::new();
        for q in QUANTITIES {
            let old = self.behaviour.readings.get(q.capability).and_then(Value::as_f64).unwrap_or(q.start);
            let mut v = if walk { old + (self.rng.f64() * 2.0 - 1.0) * q.step } else { old };
            v = v.clamp(q.min, q.max);
            let scale = 10f64.powi(q.decimals);
            v = (v * scale).round() / scale;
            self.behaviour.readings.insert(q.capability.into(), json!(v));
            readings.push(json!({ "capability": q.capability, "value": v, "unit": q.unit }));
        }
        let t = json!({
            "device_id": self.cfg.device_id,
            "timestamp": Timestamp::now().to_string(),
            "readings": readings,
        });
        if self.connected {
            self.publish(&self.topics.telemetry, t.to_string(), false).await;
            self.publish_state().await;
        }
        self.emit(SimEvent::Telemetry(t));
    }

    async fn control(&mut self, c: Control) {
        match c {
            Control::SetReading(cap, v) => {
                self.behaviour.readings.insert(cap, json!(v));
                self.report(false).await;
            }
            Control::Unregister(done) => {
                let data = json!({ "device_id": self.cfg.device_id });
                let env = Envelope::event(&self.source, Destination::topic(&self.topics.unregister), data);
                self.send(&self.topics.unregister, &env, None).await;
                let _ = done.send(());
            }
            Control::Loaded { result, url, announcement, reply } => {
                let outcome = match result {
                    Ok(clip) => self.play(clip, url.clone(), announcement).await,
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) => {
                        self.behaviour.last_error = None;
                        self.publish_state().await;
                        if let Some(r) = reply {
                            self.reply_ok(&r).await;
                        }
                    }
                    Err(e) => {
                        self.behaviour.last_error = Some(e.message.clone());
                        self.publish_state().await;
                        let refusal = device::Refusal::new(e.code, e.message);
                        self.refuse(reply.as_deref(), "play_audio", &refusal).await;
                    }
                }
            }
            Control::Stop(_) => unreachable!("handled in run"),
        }
    }

    async fn play(&mut self, clip: audio::Clip, url: Option<String>, announcement: bool) -> Result<(), AudioError> {
        self.seq += 1;
        let what = if announcement { "announcement" } else { "music" };
        let path = self.cfg.audio_dir.join(format!("{:04}-{what}.wav", self.seq));
        let gain = self.behaviour.gain();
        let (p, c) = (path.clone(), clip.clone());
        tokio::task::spawn_blocking(move || audio::write(&p, &c, gain))
            .await
            .map_err(|e| AudioError { code: "playback_failed", message: e.to_string() })??;
        let duration = clip.duration().div_f64(self.cfg.playback_speed);
        let b = &mut self.behaviour;
        if announcement {
            if !self.cfg.ducking && b.playback == "playing" {
                b.playback = "paused";
                self.music.pause();
            }
            b.announcing = true;
            self.announcement.start(duration);
        } else {
            b.playback = "playing";
            b.media_url = url.clone();
            self.music.start(duration);
        }
        self.shared.played.lock().unwrap_or_else(|p| p.into_inner()).push(path.clone());
        tracing::info!(device = %self.cfg.device_id, path = %path.display(), ?duration, "playing");
        let (volume, muted) = (b.volume, b.muted);
        self.emit(SimEvent::Played { path, url, announcement, volume, muted });
        Ok(())
    }

    async fn command(&mut self, payload: &[u8], props: Option<PublishProperties>) {
        let props = props.unwrap_or_default();
        let env = match Envelope::parse(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(device = %self.cfg.device_id, error = %e, "a command that is not a valid envelope");
                self.emit(SimEvent::Refused { code: "invalid_envelope".into(), message: e.to_string(), command: None });
                return;
            }
        };
        self.shared.commands.lock().unwrap_or_else(|p| p.into_inner()).push(env.clone());
        self.emit(SimEvent::Command(Box::new(env.clone())));
        let reply = Reply {
            wants_state: env.message_type == MessageType::Request,
            topic: props.response_topic,
            correlation: props.correlation_data,
            request: env.clone(),
        };
        // A retry of a command already handled: answered, not applied again (a toggle sent
        // twice must toggle once).
        let id = env.message_id.to_string();
        if self.recent.contains(&id) {
            tracing::info!(device = %self.cfg.device_id, message_id = %id, "repeated command: answered, not applied");
            return self.reply_ok(&reply).await;
        }
        self.recent.push_back(id);
        if self.recent.len() > RECENT_COMMANDS {
            self.recent.pop_front();
        }
        if env.is_expired(SystemTime::now()) {
            let r = device::Refusal::new("expired", "the command's ttl had passed when it arrived");
            return self.refuse(Some(&reply), "", &r).await;
        }
        let data = &env.payload.data;
        let Some(name) = data.get("command").and_then(Value::as_str).map(str::to_string) else {
            let r = device::Refusal::new("invalid_command", "`payload.data.command`: missing (a command name)");
            return self.refuse(Some(&reply), "", &r).await;
        };
        let params = match data.get("parameters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                let r = device::Refusal::new(
                    "invalid_parameters",
                    format!("`parameters` must be an object, found {other}"),
                );
                return self.refuse(Some(&reply), &name, &r).await;
            }
        };
        tracing::info!(device = %self.cfg.device_id, command = %name, "command");
        match self.behaviour.apply(&name, &params) {
            Err(r) => self.refuse(Some(&reply), &name, &r).await,
            Ok(device::Action::Play { url, announcement }) => self.load(url, announcement, reply),
            Ok(device::Action::Chime { text }) => {
                tracing::info!(device = %self.cfg.device_id, %text, "announcement (a chime: no speech here)");
                let text_file = self.cfg.audio_dir.join(format!("{:04}-announcement.txt", self.seq + 1));
                let _ = std::fs::create_dir_all(&self.cfg.audio_dir).and_then(|_| std::fs::write(&text_file, &text));
                let _ = self.control.send(Control::Loaded {
                    result: Ok(audio::Clip::chime()),
                    url: None,
                    announcement: true,
                    reply: Some(Box::new(reply)),
                });
            }
            Ok(action) => {
                if action == device::Action::Transport {
                    match self.behaviour.playback {
                        "playing" => self.music.resume(),
                        "paused" => self.music.pause(),
                        _ => self.music.clear(),
                    }
                }
                self.publish_state().await;
                self.reply_ok(&reply).await;
            }
        }
    }

    /// Fetches and decodes off the actor, then plays (Control::Loaded).
    fn load(&self, url: String, announcement: bool, reply: Reply) {
        let control = self.control.clone();
        let ca = self.cfg.audio_ca.clone();
        tokio::spawn(async move {
            let u = url.clone();
            let result =
                tokio::task::spawn_blocking(move || audio::fetch(&u, ca.as_deref()).and_then(|b| audio::decode(&b)))
                    .await
                    .unwrap_or_else(|e| Err(AudioError { code: "playback_failed", message: e.to_string() }));
            let _ =
                control.send(Control::Loaded { result, url: Some(url), announcement, reply: Some(Box::new(reply)) });
        });
    }

    fn reply_topic(&self, r: &Reply) -> String {
        match &r.topic {
            Some(t) => t.clone(),
            None => match Destination::parse(&r.request.source) {
                Ok(Destination::Service(name)) => format!("{}/services/{name}/inbox", self.topics.prefix),
                _ => self.topics.router.clone(),
            },
        }
    }

    async fn reply_ok(&self, r: &Reply) {
        if !r.wants_state {
            return;
        }
        let reply = Envelope::reply_to(&r.request, &self.source, self.state_tx.borrow().clone());
        let topic = self.reply_topic(r);
        self.send_reply(&topic, &reply, r).await;
    }

    async fn refuse(&self, r: Option<&Reply>, command: &str, refusal: &device::Refusal) {
        tracing::warn!(device = %self.cfg.device_id, command, code = refusal.code, message = %refusal.message, "command refused");
        self.emit(SimEvent::Refused {
            code: refusal.code.to_string(),
            message: refusal.message.clone(),
            command: Some(command.to_string()),
        });
        let Some(r) = r else { return };
        if !(r.wants_state || r.topic.is_some()) {
            return;
        }
        let mut reply = Envelope::error_reply(&r.request, &self.source, refusal.code, &refusal.message);
        if let Some(errors) = &refusal.errors {
            reply.payload.data["errors"] = errors.clone();
        }
        let topic = self.reply_topic(r);
        self.send_reply(&topic, &reply, r).await;
    }

    async fn send_reply(&self, topic: &str, reply: &Envelope, r: &Reply) {
        let correlation = r.correlation.clone().unwrap_or_else(|| Bytes::from(r.request.message_id.to_string()));
        let props = PublishProperties {
            content_type: Some("application/json".into()),
            correlation_data: Some(correlation),
            ..PublishProperties::default()
        };
        if let Err(e) = self.client.publish_with_properties(topic, QoS::AtLeastOnce, false, reply.to_vec(), props).await
        {
            tracing::debug!(error = %e, topic, "reply not published");
        }
    }
}
