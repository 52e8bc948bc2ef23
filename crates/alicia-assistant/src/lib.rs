//! The assistant: the design document's "AI Service", `ai_service` on the bus. It turns what
//! was said (typed text, or a transcript from the STT service) into an intent with
//! [`alicia_intents`], over the home as the registry knows it now, carries it out with
//! `command` envelopes to `device_id:` destinations through the router, and answers with the
//! sentence to speak.
//!
//! # On the bus (`P` = topic prefix, `alicia` by default)
//!
//! | topic | direction | what |
//! |-------|-----------|------|
//! | `P/services/ai_service/inbox` | in | a `request` with `data` = `{"text", "session_id"?, "conversation_id"?, "satellite"? (or `device_id`), "language"?, "area"?}` (`session_id`, `device_id`, `user_id` may be in `payload.metadata` instead); the response's `data` is the [`Answer`] |
//! | `P/voice/stt/response` | in (shared among instances) | the design document's STT response: `data` = `{"transcription", "confidence", "language"}`, `metadata` = `{session_id, user_id, device_id}` (the satellite); error responses are skipped |
//! | `P/voice/ai/response` | out | every [`Answer`], as a `response` envelope to the requester (the STT response's destination for a transcript), `correlation_id` = the request's id (for a transcript: the STT request's), `metadata` = the request's plus `session_id`; the TTS service speaks `data.response`. A timer that ends is an `event` here with `data` = `{session_id, satellite, area, outcome: "timer_finished", response, timer}` |
//! | `P/voice/events` | out | `event` envelopes, `data.event` = `intent` (understood; with outcome, intent, targets, response, timings), `no_match`, `clarification`, `action` (one per command: device, command, parameters, message id, status), `timer_started`, `timer_cancelled`, `timer_paused`, `timer_resumed`, `timer_changed`, `timer_finished` |
//! | `P/services/router/inbox` | out | `command` envelopes to `device_id:ID`, `data` = `{"command", "parameters"}` as `docs/device-protocol.md` says, `metadata` = `{session_id, user_id, command_source: "voice_command", location}` |
//! | `P/devices/speakers/announce` | out | "announce dinner is ready" (everywhere): an `announce` command for every speaker |
//! | `P/system/registry/devices` | in (plain) | the retained inventory: devices, names, locations, capabilities and their parameters |
//! | `P/devices/+/state`, `P/devices/+/telemetry` | in (plain) | devices' retained states and readings, for questions |
//!
//! # How a sentence is handled
//!
//! 1. The context area is the request's `area`, else the satellite's registered location.
//! 2. If the conversation (`conversation_id`, else the satellite, else the session) has an open question ("Which speaker: kitchen or bedroom?"), the
//!    utterance is first read as its answer ([`dialogue`]).
//! 3. [`alicia_intents::Engine::recognize`] against the [`home::HomeModel`] built from the
//!    inventory (names and aliases, locations as areas, device types as domains, capabilities).
//! 4. Ambiguous targets ask back and keep the intent for the follow-up; timers are kept here
//!    ([`timers`]); "never mind" forgets the question; everything else is planned by [`act`]:
//!    the command per device with parameters within its registered capability parameters, or
//!    the reason it cannot be done, or for a question the device's last state ([`state`]).
//! 5. The commands are sent, the response template rendered ([`alicia_intents::Engine::respond`]),
//!    and the answer returned with per-stage timings; the answer and the events are published
//!    in the background.
//!
//! Optionally ([`AssistantConfig::llm`], off by default), a sentence no template matches is
//! put to a local language model with the home's devices as tools ([`llm`]); its tool call is
//! planned like a recognised intent. Tested against a canned OpenAI-compatible answer only: no
//! model that makes tool calls can be had offline here (see `tests/llm.rs`), so it is not
//! claimed to work with a real model yet.
//!
//! Nothing is left unanswered: a sentence nothing matches gets "Sorry, I am not aware of any
//! device called kettle" when only a name was unknown, else "Sorry, I don't know how to …", and
//! a `no_match` event.
//!
//! # Why it is built this way
//!
//! - **Commands, not requests**, as the brief and the design document's device control message
//!   say: the device's new state shows on its state topic. An offline device is not sent
//!   anything: the registry says it is offline, and the answer says so.
//! - **A second, plain MQTT connection** for the inventory and device documents ([`io`]), as
//!   the registry and the router have: the SDK's handles envelopes only.
//! - **No dependency on the registry or router crates**: the inventory document is the
//!   contract (the tests run the real ones).

pub mod act;
pub mod answer;
pub mod dialogue;
pub mod home;
mod io;
pub mod llm;
mod service;
pub mod state;
pub mod timers;

use std::sync::Arc;
use std::time::Duration;

use alicia_intents::Engine;
use alicia_sdk::{Bus, SdkError, ServiceConfig, ServiceHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use act::{DeviceCommand, MediaItem, PlanSettings};
pub use answer::{Action, Answer, Outcome, Request};
pub use home::{DeviceInfo, HomeModel};
pub use service::dont_know;

use service::{Assistant, Options, Shared};

/// The service's name on the bus (and its MQTT user under `alicia up`).
pub const SERVICE_NAME: &str = "ai_service";

/// The topics the service uses (under the prefix).
#[derive(Debug, Clone)]
pub struct AssistantTopics {
    pub prefix: String,
    /// `P/voice/ai/response`
    pub response: String,
    /// `P/voice/events`
    pub events: String,
    /// `P/voice/stt/response`
    pub transcripts: String,
    /// `P/system/registry/devices`
    pub inventory: String,
    /// `P/devices/+/state`
    pub device_states: String,
    /// `P/devices/+/telemetry` (includes the shared `P/devices/sensors/telemetry`)
    pub telemetry: String,
    /// `P/devices/speakers/announce`
    pub announce_all: String,
}

impl AssistantTopics {
    pub fn new(prefix: &str) -> Self {
        AssistantTopics {
            prefix: prefix.to_string(),
            response: format!("{prefix}/voice/ai/response"),
            events: format!("{prefix}/voice/events"),
            transcripts: format!("{prefix}/voice/stt/response"),
            inventory: format!("{prefix}/system/registry/devices"),
            device_states: format!("{prefix}/devices/+/state"),
            telemetry: format!("{prefix}/devices/+/telemetry"),
            announce_all: format!("{prefix}/devices/speakers/announce"),
        }
    }
}

/// Settings of the service.
#[derive(Clone)]
pub struct AssistantConfig {
    /// The bus connection; its `name` overrides [`SERVICE_NAME`].
    pub service: ServiceConfig,
    /// The compiled sentences (Home Assistant's and Alicia's).
    pub engine: Arc<Engine>,
    /// Handle the STT service's transcripts on `P/voice/stt/response` (default true).
    pub listen_transcripts: bool,
    /// How long a question asked back waits for its answer (default 30 s).
    pub dialogue_timeout: Duration,
    /// "Volume up" without a number, in percent of a device's range (default 10).
    pub volume_step_percent: f64,
    /// What "play …" can play.
    pub media: Vec<MediaItem>,
    /// Announce a finished timer on the satellite (or its area's speakers) (default true).
    pub announce_timers: bool,
    /// `ttl` of the command envelopes, seconds (default 30; `None`: none).
    pub command_ttl: Option<u32>,
    /// The language-model fallback for sentences no template matches (default: none).
    pub llm: Option<llm::LlmConfig>,
}

impl AssistantConfig {
    pub fn new(service: ServiceConfig, engine: Arc<Engine>) -> Self {
        AssistantConfig {
            service,
            engine,
            listen_transcripts: true,
            dialogue_timeout: Duration::from_secs(30),
            volume_step_percent: 10.0,
            media: Vec::new(),
            announce_timers: true,
            command_ttl: Some(30),
            llm: None,
        }
    }
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error(transparent)]
    Sdk(#[from] SdkError),
    #[error("invalid assistant configuration: {0}")]
    Config(String),
}

/// Starts the service (connections in the background, retrying). Inside a tokio runtime.
pub async fn start(config: AssistantConfig) -> Result<AssistantHandle, AssistantError> {
    if !(config.volume_step_percent > 0.0 && config.volume_step_percent <= 100.0) {
        return Err(AssistantError::Config("volume_step_percent must be in (0, 100]".into()));
    }
    if config.command_ttl == Some(0) {
        return Err(AssistantError::Config("command_ttl must be at least 1 second".into()));
    }
    let mut service = config.service.clone();
    let name = service.name.clone().unwrap_or_else(|| SERVICE_NAME.to_string());
    let instance = service
        .instance_id
        .get_or_insert_with(|| alicia_envelope::Uuid::new_v4().simple().to_string()[..12].to_string())
        .clone();
    let topics = AssistantTopics::new(&service.topic_prefix);
    let llm = match &config.llm {
        Some(c) => Some(llm::Llm::new(c.clone()).map_err(|e| AssistantError::Config(e.to_string()))?),
        None => None,
    };
    let (timers, mut done) = timers::Timers::new();
    let shared = Arc::new(Shared {
        engine: config.engine.clone(),
        home: watch::Sender::new(Arc::new(HomeModel::default())),
        states: state::DeviceStates::default(),
        dialogues: dialogue::Dialogues::new(config.dialogue_timeout),
        timers,
        settings: PlanSettings::new(config.volume_step_percent, config.media.clone()),
        topics,
        options: Options {
            listen_transcripts: config.listen_transcripts,
            announce_timers: config.announce_timers,
            command_ttl: config.command_ttl,
        },
        llm,
    });
    let (stop, stop_rx) = watch::channel(false);
    let (io, io_task) = io::connect(&service, format!("{name}-{instance}-io"), shared.clone());
    let sdk = match alicia_sdk::start(service.clone(), Assistant { name: name.clone(), shared: shared.clone() }) {
        Ok(s) => s,
        Err(e) => {
            io_task.abort();
            return Err(e.into());
        }
    };
    let bus = sdk.bus().clone();
    let timer_task = {
        let shared = shared.clone();
        let mut stop = stop_rx;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    t = done.recv() => match t {
                        Some(t) => shared.timer_done(&bus, t).await,
                        None => return,
                    },
                    _ = stop.changed() => return,
                }
            }
        })
    };
    tracing::info!(service = %name, sentences = config.engine.sentence_count(), "assistant started");
    Ok(AssistantHandle { sdk: Some(sdk), shared, io, stop, tasks: vec![io_task, timer_task] })
}

/// The running service.
pub struct AssistantHandle {
    sdk: Option<ServiceHandle>,
    shared: Arc<Shared>,
    io: alicia_sdk::Link,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl AssistantHandle {
    /// The service's bus connection.
    pub fn bus(&self) -> &Bus {
        self.sdk.as_ref().expect("present until shutdown").bus()
    }

    /// Waits until both connections are up and subscribed, at most `timeout`.
    pub async fn wait_online(&self, timeout: Duration) -> Result<(), SdkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.bus().wait_online(timeout).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.io.wait_online(left).await.map_err(|e| match e {
            SdkError::NotConnected { broker, .. } => {
                SdkError::NotConnected { broker: format!("{broker} (document connection)"), waited: timeout }
            }
            e => e,
        })
    }

    /// The home as the service sees it now.
    pub fn home(&self) -> Arc<HomeModel> {
        self.shared.home()
    }

    /// Waits until the home satisfies `ready` (e.g. has a device), at most `timeout`; returns
    /// whether it did.
    pub async fn wait_for_home(&self, timeout: Duration, ready: impl Fn(&HomeModel) -> bool) -> bool {
        let mut rx = self.shared.home.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|h| ready(h))).await.is_ok_and(|r| r.is_ok())
    }

    /// A device's last state document, as the service has it.
    pub fn device_state(&self, device_id: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.shared.states.state(device_id)
    }

    /// A device's latest reading of a quantity (`temperature`), as the service has it.
    pub fn reading(&self, device_id: &str, quantity: &str) -> Option<state::Reading> {
        self.shared.states.reading(device_id, quantity)
    }

    /// Leaves cleanly: `offline`, both connections closed, timers dropped.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(sdk) = self.sdk.take() {
            sdk.shutdown().await;
        }
        self.io.close().await;
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

impl Drop for AssistantHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
