//! The configuration model: one struct per section, every field with a default, unknown keys
//! rejected (`deny_unknown_fields`), so a typo in a YAML file is an error, not a silent default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Names of the sections, in file order (also the keys of [`Config`] as JSON).
pub const SECTIONS: &[&str] = &[
    "mqtt",
    "router",
    "registry",
    "gateway",
    "stt_service",
    "tts_service",
    "ai_service",
    "voice_pipeline",
    "security",
    "monitoring",
    "logging",
    "speaker_manager",
    "sensor_data",
    "actuator_control",
    "data_store",
    "ha_bridge",
];

/// The whole configuration of an Alicia deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The broker every service connects to.
    pub mqtt: MqttConfig,
    /// The router service.
    pub router: RouterConfig,
    /// The device registry.
    pub registry: RegistryConfig,
    /// The HTTP/WebSocket gateway.
    pub gateway: GatewayConfig,
    /// Speech to text.
    pub stt_service: SttConfig,
    /// Text to speech.
    pub tts_service: TtsConfig,
    /// The assistant: intents, device commands, answers.
    pub ai_service: AiConfig,
    /// The voice pipeline: satellites' sessions, arbitration, barge-in.
    pub voice_pipeline: VoicePipelineConfig,
    /// Envelope signing and encryption.
    pub security: SecurityConfig,
    /// Health monitor, alerts, log rules, containers.
    pub monitoring: MonitoringConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Speakers: announcements, volume, queues (see `crate::devices`).
    pub speaker_manager: crate::devices::SpeakerManagerConfig,
    /// Sensors: telemetry checks, latest values, thresholds.
    pub sensor_data: crate::devices::SensorDataConfig,
    /// Actuators: acknowledged, retried, confirmed commands.
    pub actuator_control: crate::devices::ActuatorControlConfig,
    /// Persistence of events, telemetry, states, voice sessions and alerts.
    pub data_store: crate::devices::DataStoreConfig,
    /// The Home Assistant bridge.
    pub ha_bridge: crate::devices::HaBridgeConfig,
}

/// Broker connection. Secrets belong in files: `password_file` names one (mode 0600). The
/// design document's plain `password:` is accepted for compatibility, with a warning naming its
/// line ([`crate::warnings`]); it is never serialised, so it is neither published on the bus
/// nor logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// The broker's host name or address (`broker:` in the design document's files).
    #[serde(alias = "broker")]
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A password written in the file itself (discouraged; see the type's documentation).
    #[serde(skip_serializing)]
    pub password: Option<PlainPassword>,
    pub topic_prefix: String,
    pub keep_alive_secs: u64,
    pub heartbeat_interval_secs: u64,
    pub tls: TlsConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password_file: None,
            password: None,
            topic_prefix: "alicia".into(),
            keep_alive_secs: 30,
            heartbeat_interval_secs: 30,
            tls: TlsConfig::default(),
        }
    }
}

/// A password kept out of `Debug` output (and, by [`MqttConfig`], out of serialisation).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct PlainPassword(String);

impl PlainPassword {
    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PlainPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainPassword(***)")
    }
}

/// Never written out: a configuration is published on the bus.
impl Serialize for PlainPassword {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_none()
    }
}

/// TLS to the broker (paths only). `tls: true` (the design document's form) turns it on with
/// the other settings at their defaults: without `ca_file`, the broker's certificate is checked
/// against the Alicia home's certificate authority (`certs/ca.crt`).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct TlsConfig {
    pub enabled: bool,
    pub port: Option<u16>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct TlsFields {
    enabled: bool,
    port: Option<u16>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for TlsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TlsConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`true`, `false`, or a map of TLS settings")
            }
            fn visit_bool<E: serde::de::Error>(self, enabled: bool) -> Result<TlsConfig, E> {
                Ok(TlsConfig { enabled, ..TlsConfig::default() })
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<TlsConfig, E> {
                Ok(TlsConfig::default())
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TlsConfig, A::Error> {
                let f = TlsFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(TlsConfig {
                    enabled: f.enabled,
                    port: f.port,
                    ca_file: f.ca_file,
                    cert_file: f.cert_file,
                    key_file: f.key_file,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    pub enabled: bool,
    pub max_hops: u32,
    pub request_timeout_ms: u64,
    pub max_in_flight: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig { enabled: true, max_hops: 8, request_timeout_ms: 5000, max_in_flight: 1024 }
    }
}

/// The device registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub enabled: bool,
    pub db: PathBuf,
    pub heartbeat_timeout_secs: u64,
    pub http_port: u16,
    pub discovery_http_port: u16,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            enabled: true,
            db: PathBuf::from("registry.db"),
            heartbeat_timeout_secs: 90,
            http_port: 8091,
            discovery_http_port: 8092,
        }
    }
}

/// The gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub enabled: bool,
    pub addr: String,
    pub tls_addr: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub max_requests_per_minute: u32,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            enabled: true,
            addr: "127.0.0.1:8080".into(),
            tls_addr: None,
            cert_file: None,
            key_file: None,
            max_requests_per_minute: 600,
        }
    }
}

/// Speech to text (the design document's `stt_service` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SttConfig {
    pub enabled: bool,
    pub whisper: WhisperConfig,
    pub performance: SttPerformance,
    /// The Wyoming ASR server (for Home Assistant).
    pub wyoming: WyomingConfig,
    /// A wake word heard on the server, for satellites without one of their own.
    pub wake_word: WakeWordConfig,
}

impl Default for SttConfig {
    fn default() -> Self {
        SttConfig {
            enabled: true,
            whisper: WhisperConfig::default(),
            performance: SttPerformance::default(),
            wyoming: WyomingConfig { port: 10300, ..WyomingConfig::default() },
            wake_word: WakeWordConfig::default(),
        }
    }
}

/// openWakeWord on the server (`stt_service.wake_word`): satellites that send `detect` before
/// their audio are listened to for `alexa` or `hey_mycroft`. Off by default: openWakeWord's
/// pre-trained models are licensed for non-commercial use only (CC BY-NC-SA 4.0), and
/// turning this on fetches them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WakeWordConfig {
    pub enabled: bool,
    /// The score (0..1] at which a wake word fires: lower hears more, and more falsely.
    pub threshold: f64,
}

impl Default for WakeWordConfig {
    fn default() -> Self {
        WakeWordConfig { enabled: false, threshold: 0.5 }
    }
}

/// The Whisper model and language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WhisperConfig {
    /// A model name (`tiny.en`, `base`, `large`, ...: names are mapped to what is available)
    /// or a path to a whisper.cpp ggml file.
    pub model: String,
    /// Spoken language (`en`, `en-US`, `de`, or `auto`).
    pub language: String,
}

impl Default for WhisperConfig {
    fn default() -> Self {
        WhisperConfig { model: "tiny.en".into(), language: "en".into() }
    }
}

/// Limits of speech to text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SttPerformance {
    /// Longest audio accepted, in seconds.
    pub max_audio_length: u64,
    /// Longest a transcription may take, in seconds.
    pub timeout: u64,
    /// Transcriptions at once per instance.
    pub max_concurrent: usize,
    /// Requests waiting beyond those; more are answered `busy`.
    pub queue: usize,
}

impl Default for SttPerformance {
    fn default() -> Self {
        SttPerformance { max_audio_length: 30, timeout: 10, max_concurrent: 1, queue: 8 }
    }
}

/// Text to speech (the design document's `tts_service` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsConfig {
    pub enabled: bool,
    pub piper: PiperConfig,
    pub performance: TtsPerformance,
    /// The Wyoming TTS server (for Home Assistant).
    pub wyoming: WyomingConfig,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            enabled: true,
            piper: PiperConfig::default(),
            performance: TtsPerformance::default(),
            wyoming: WyomingConfig { port: 10200, ..WyomingConfig::default() },
        }
    }
}

/// The Piper voice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiperConfig {
    /// A voice name (`en_US-lessac-medium`: names are mapped to what is available) or a path
    /// to a Piper `.onnx` voice.
    pub voice: String,
    /// `low`, `medium` or `high`: which quality of the voice to prefer when several exist.
    pub quality: String,
}

impl Default for PiperConfig {
    fn default() -> Self {
        PiperConfig { voice: "en_US-joe-medium".into(), quality: "medium".into() }
    }
}

/// Limits and cache of text to speech.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TtsPerformance {
    /// Synthesised sentences kept for reuse (keyed by text, voice and rate).
    pub cache_size: usize,
    /// Longest a synthesis may take, in seconds.
    pub timeout: u64,
    /// Syntheses at once per instance.
    pub max_concurrent: usize,
}

impl Default for TtsPerformance {
    fn default() -> Self {
        TtsPerformance { cache_size: 100, timeout: 15, max_concurrent: 1 }
    }
}

/// The assistant (`ai_service`, the design document's AI Service).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AiConfig {
    pub enabled: bool,
    /// The language of the sentences (`en`).
    pub language: String,
    /// Home Assistant's intents data: a `<language>.json` of the `home-assistant-intents`
    /// package, or its `data` directory. Unset: `ALICIA_HA_INTENTS`, else the model store
    /// (`ha-intents-<language>`, fetched there when missing).
    pub intents: Option<PathBuf>,
    /// More sentence files in the same format, merged in (relative paths: under the home).
    pub extra_sentences: Vec<PathBuf>,
    /// Understand the STT service's transcripts on `<prefix>/voice/stt/response`.
    pub listen_transcripts: bool,
    /// How long a question asked back waits for its answer, seconds.
    pub dialogue_timeout_secs: u64,
    /// "Volume up" without a number, in percent of a device's range.
    pub volume_step_percent: f64,
    /// Announce a finished timer on the satellite that set it (or its area's speakers).
    pub announce_timers: bool,
    /// `ttl` of device commands, seconds (0: none).
    pub command_ttl_secs: u32,
    /// What "play ..." can play: `{name, url, aliases}`.
    pub media: Vec<MediaEntry>,
    /// The optional language-model fallback for sentences no template matches.
    pub llm: LlmFallback,
}

/// The voice pipeline (`voice_pipeline`): one session per satellite utterance between the
/// speech services and the assistant. While it runs, the assistant takes transcripts from it,
/// not from `<prefix>/voice/stt/response` (`alicia up` turns `ai_service.listen_transcripts` off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoicePipelineConfig {
    pub enabled: bool,
    /// Speech starting on two satellites within this many milliseconds is one utterance heard
    /// twice: only the satellite that heard it loudest answers.
    pub arbitration_window_ms: u64,
    /// Longest wait for a louder satellite's transcript before deciding without it,
    /// milliseconds (it comes within stt_service's timeout, or its error does).
    pub arbitration_wait_ms: u64,
    /// Longest wait for the assistant's answer, seconds.
    pub assistant_timeout_secs: u64,
    /// Utterances that only stop the answer playing.
    pub stop_words: Vec<String>,
}

impl Default for VoicePipelineConfig {
    fn default() -> Self {
        VoicePipelineConfig {
            enabled: true,
            arbitration_window_ms: 300,
            arbitration_wait_ms: 10_000,
            assistant_timeout_secs: 10,
            stop_words: ["stop", "cancel", "never mind", "nevermind", "be quiet", "quiet", "shut up", "enough"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// A local language model behind an OpenAI-compatible API (llama.cpp's `llama-server`,
/// Ollama), offered the home's devices as tools. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmFallback {
    pub enabled: bool,
    /// Base URL, plain HTTP: `http://127.0.0.1:8080/v1` (llama-server),
    /// `http://127.0.0.1:11434/v1` (Ollama).
    pub url: String,
    /// The model name the server expects.
    pub model: String,
    /// A file holding a bearer token, if the server wants one (first line).
    pub api_key_file: Option<PathBuf>,
    pub timeout_secs: u64,
    /// Most devices offered to the model (the satellite's area first).
    pub max_devices: usize,
}

impl Default for LlmFallback {
    fn default() -> Self {
        LlmFallback {
            enabled: false,
            url: "http://127.0.0.1:8080/v1".into(),
            model: "local".into(),
            api_key_file: None,
            timeout_secs: 20,
            max_devices: 60,
        }
    }
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            enabled: true,
            language: "en".into(),
            intents: None,
            extra_sentences: Vec::new(),
            listen_transcripts: true,
            dialogue_timeout_secs: 30,
            volume_step_percent: 10.0,
            announce_timers: true,
            command_ttl_secs: 30,
            media: Vec::new(),
            llm: LlmFallback::default(),
        }
    }
}

/// A piece of media the assistant can play by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaEntry {
    pub name: String,
    /// An http, https or file URL of a WAV, MP3 or FLAC.
    pub url: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A Wyoming protocol server, so Home Assistant can use the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WyomingConfig {
    pub enabled: bool,
    /// Address to listen on (`0.0.0.0` so Home Assistant on another machine can reach it).
    pub host: Option<String>,
    pub port: u16,
    /// Advertise the server over zeroconf (`_wyoming._tcp`).
    pub zeroconf: bool,
}

/// Envelope protection (keys live under `home`, never in the file), and the design document's
/// security switches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    pub home: Option<PathBuf>,
    pub require_signed: bool,
    /// Encrypt envelope payloads (`encryption:` in the design document's files).
    #[serde(alias = "encryption")]
    pub encrypt_payloads: bool,
    pub require_auth: bool,
    /// The design document's switch. Alicia always validates certificates (chain, validity,
    /// revocation); `false` is accepted with a warning and changes nothing.
    pub certificate_validation: bool,
    /// Limit the gateway's requests per client (`false`: no limit).
    pub rate_limiting: bool,
    /// The gateway's limit per client and minute, when set (else `gateway.max_requests_per_minute`).
    pub max_requests_per_minute: Option<u32>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            home: None,
            require_signed: false,
            encrypt_payloads: false,
            require_auth: false,
            certificate_validation: true,
            rate_limiting: true,
            max_requests_per_minute: None,
        }
    }
}

/// Severity of an alert or a log rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// `info`, `warning`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A log rule: a line matching `pattern` (a regex) raises an alert `name` with `severity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRule {
    pub name: String,
    pub pattern: String,
    pub severity: Severity,
    pub message: String,
}

impl LogRule {
    fn new(name: &str, pattern: &str, severity: Severity, message: &str) -> Self {
        LogRule { name: name.into(), pattern: pattern.into(), severity, message: message.into() }
    }
}

/// The seed's log patterns: errors (`ERROR`, `Exception`, `Traceback`, `connection refused`,
/// `timeout`) and warnings (`WARN`, `deprecated`, `retrying`).
pub fn default_log_rules() -> Vec<LogRule> {
    use Severity::*;
    vec![
        LogRule::new("log_error", r"\bERROR\b", Warning, "an error was logged"),
        LogRule::new(
            "log_exception",
            r"Exception|Traceback \(most recent call last\)|panicked at",
            Critical,
            "an exception or crash was logged",
        ),
        LogRule::new("log_connection_refused", r"(?i)connection refused", Warning, "a connection was refused"),
        LogRule::new("log_timeout", r"(?i)\btime(d)? ?out\b", Warning, "a timeout was logged"),
        LogRule::new("log_warning", r"\bWARN(ING)?\b", Info, "a warning was logged"),
        LogRule::new("log_deprecated", r"(?i)\bdeprecated\b", Info, "a deprecated feature is in use"),
        LogRule::new("log_retrying", r"(?i)\bretrying\b", Info, "something is being retried"),
    ]
}

/// Thresholds and damping of the health monitor's alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertRules {
    /// A service is missing after this many heartbeat intervals without one.
    pub missing_after_intervals: u32,
    /// Flap damping: a condition must hold this long before it fires...
    pub fire_after_secs: f64,
    /// ...and be gone this long before it resolves.
    pub resolve_after_secs: f64,
    /// A log rule fires at most once per this window (per rule and source); resolved after it.
    pub log_alert_window_secs: f64,
    pub cpu_warning_percent: f64,
    pub memory_warning_percent: f64,
    pub disk_warning_percent: f64,
}

impl Default for AlertRules {
    fn default() -> Self {
        AlertRules {
            missing_after_intervals: 3,
            fire_after_secs: 10.0,
            resolve_after_secs: 10.0,
            log_alert_window_secs: 300.0,
            cpu_warning_percent: 95.0,
            memory_warning_percent: 90.0,
            disk_warning_percent: 90.0,
        }
    }
}

/// Container monitoring through the Docker Engine API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    pub enabled: bool,
    pub socket: PathBuf,
    pub poll_secs: u64,
    /// Seconds between attempts while the engine is unreachable.
    pub retry_secs: u64,
    /// Log lines read per container and poll.
    pub log_lines: u32,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            enabled: true,
            socket: PathBuf::from("/var/run/docker.sock"),
            poll_secs: 15,
            retry_secs: 60,
            log_lines: 100,
        }
    }
}

/// The monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    pub enabled: bool,
    /// Services that must be there (by SDK name); one missing is a critical alert.
    pub expected_services: Vec<String>,
    /// Standalone HTTP address (health, ready, metrics, alerts, history) when not embedded.
    pub http_addr: String,
    pub history_interval_secs: u64,
    pub history_len: usize,
    pub alerts: AlertRules,
    pub log_rules: Vec<LogRule>,
    pub docker: DockerConfig,
    /// Extra labels for every metric family (e.g. `site: home`).
    pub labels: BTreeMap<String, String>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            enabled: true,
            expected_services: vec!["router".into(), "device_registry".into()],
            http_addr: "127.0.0.1:8093".into(),
            history_interval_secs: 10,
            history_len: 360,
            alerts: AlertRules::default(),
            log_rules: default_log_rules(),
            docker: DockerConfig::default(),
            labels: BTreeMap::new(),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing `EnvFilter` directive, e.g. `info,alicia_broker=warn`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    pub file: Option<PathBuf>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { level: "info".into(), format: "text".into(), file: None }
    }
}

impl Config {
    /// Checks what types cannot: ranges, names, regexes. Each problem names its key.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let mut need = |ok: bool, key: &str, why: &str| {
            if !ok {
                errs.push(format!("{key}: {why}"));
            }
        };
        need(!self.mqtt.host.trim().is_empty(), "mqtt.host", "must not be empty");
        need(self.mqtt.port != 0, "mqtt.port", "must not be 0");
        need(
            alicia_sdk::check_prefix(&self.mqtt.topic_prefix).is_ok(),
            "mqtt.topic_prefix",
            "not a valid topic prefix",
        );
        need(self.mqtt.keep_alive_secs >= 5, "mqtt.keep_alive_secs", "must be at least 5");
        need(self.mqtt.heartbeat_interval_secs >= 1, "mqtt.heartbeat_interval_secs", "must be at least 1");
        need(self.router.max_hops >= 1, "router.max_hops", "must be at least 1");
        need(self.router.request_timeout_ms >= 1, "router.request_timeout_ms", "must be at least 1");
        need(self.registry.heartbeat_timeout_secs >= 1, "registry.heartbeat_timeout_secs", "must be at least 1");
        need(self.gateway.addr.parse::<std::net::SocketAddr>().is_ok(), "gateway.addr", "not a socket address");
        if let Some(a) = &self.gateway.tls_addr {
            need(a.parse::<std::net::SocketAddr>().is_ok(), "gateway.tls_addr", "not a socket address");
            need(self.gateway.cert_file.is_some(), "gateway.cert_file", "required with tls_addr");
            need(self.gateway.key_file.is_some(), "gateway.key_file", "required with tls_addr");
        }
        need(self.gateway.max_requests_per_minute >= 1, "gateway.max_requests_per_minute", "must be at least 1");
        let (stt, tts) = (&self.stt_service.performance, &self.tts_service.performance);
        need(stt.max_audio_length >= 1, "stt_service.performance.max_audio_length", "must be at least 1");
        need(stt.timeout >= 1, "stt_service.performance.timeout", "must be at least 1");
        need(stt.max_concurrent >= 1, "stt_service.performance.max_concurrent", "must be at least 1");
        let wake = self.stt_service.wake_word.threshold;
        need(wake > 0.0 && wake <= 1.0, "stt_service.wake_word.threshold", "must be a score in (0, 1]");
        need(tts.timeout >= 1, "tts_service.performance.timeout", "must be at least 1");
        need(tts.max_concurrent >= 1, "tts_service.performance.max_concurrent", "must be at least 1");
        need(!self.stt_service.whisper.model.trim().is_empty(), "stt_service.whisper.model", "must not be empty");
        need(!self.tts_service.piper.voice.trim().is_empty(), "tts_service.piper.voice", "must not be empty");
        need(
            matches!(self.tts_service.piper.quality.as_str(), "low" | "medium" | "high" | "x_low"),
            "tts_service.piper.quality",
            "must be x_low, low, medium or high",
        );
        let vp = &self.voice_pipeline;
        need(vp.arbitration_window_ms <= 5000, "voice_pipeline.arbitration_window_ms", "must be at most 5000");
        need(vp.assistant_timeout_secs >= 1, "voice_pipeline.assistant_timeout_secs", "must be at least 1");
        let ai = &self.ai_service;
        need(!ai.language.trim().is_empty(), "ai_service.language", "must not be empty");
        need(ai.dialogue_timeout_secs >= 1, "ai_service.dialogue_timeout_secs", "must be at least 1");
        need(
            ai.volume_step_percent > 0.0 && ai.volume_step_percent <= 100.0,
            "ai_service.volume_step_percent",
            "must be more than 0 and at most 100",
        );
        if ai.llm.enabled {
            need(ai.llm.url.starts_with("http://"), "ai_service.llm.url", "must be an http:// URL");
            need(ai.llm.timeout_secs >= 1, "ai_service.llm.timeout_secs", "must be at least 1");
            need(ai.llm.max_devices >= 1, "ai_service.llm.max_devices", "must be at least 1");
        }
        for (i, m) in ai.media.iter().enumerate() {
            need(!m.name.trim().is_empty(), &format!("ai_service.media[{i}].name"), "must not be empty");
            need(
                ["http://", "https://", "file://"].iter().any(|p| m.url.starts_with(p)),
                &format!("ai_service.media[{i}].url"),
                "must be an http, https or file URL",
            );
        }
        need(
            self.security.max_requests_per_minute.is_none_or(|n| n >= 1),
            "security.max_requests_per_minute",
            "must be at least 1",
        );
        let m = &self.monitoring;
        need(m.http_addr.parse::<std::net::SocketAddr>().is_ok(), "monitoring.http_addr", "not a socket address");
        need(m.history_interval_secs >= 1, "monitoring.history_interval_secs", "must be at least 1");
        need(m.history_len >= 1, "monitoring.history_len", "must be at least 1");
        need(m.alerts.missing_after_intervals >= 1, "monitoring.alerts.missing_after_intervals", "must be at least 1");
        for (k, v) in [
            ("fire_after_secs", m.alerts.fire_after_secs),
            ("resolve_after_secs", m.alerts.resolve_after_secs),
            ("log_alert_window_secs", m.alerts.log_alert_window_secs),
        ] {
            need(v.is_finite() && v >= 0.0, &format!("monitoring.alerts.{k}"), "must be a number >= 0");
        }
        for (k, v) in [
            ("cpu_warning_percent", m.alerts.cpu_warning_percent),
            ("memory_warning_percent", m.alerts.memory_warning_percent),
            ("disk_warning_percent", m.alerts.disk_warning_percent),
        ] {
            need(v.is_finite() && (0.0..=100.0).contains(&v), &format!("monitoring.alerts.{k}"), "must be 0..=100");
        }
        for (i, r) in m.log_rules.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&r.pattern) {
                need(false, &format!("monitoring.log_rules[{i}].pattern"), &format!("bad regex: {e}"));
            }
            need(!r.name.is_empty(), &format!("monitoring.log_rules[{i}].name"), "must not be empty");
        }
        for k in m.labels.keys() {
            let ok = k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !k.starts_with("__")
                && !["service", "instance", "le"].contains(&k.as_str());
            need(ok, &format!("monitoring.labels.{k}"), "not a usable Prometheus label name");
        }
        need(m.docker.poll_secs >= 1, "monitoring.docker.poll_secs", "must be at least 1");
        need(m.docker.retry_secs >= 1, "monitoring.docker.retry_secs", "must be at least 1");
        need(["text", "json"].contains(&self.logging.format.as_str()), "logging.format", "must be `text` or `json`");
        need(!self.logging.level.trim().is_empty(), "logging.level", "must not be empty");
        crate::devices::validate(self, &mut need);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// The SDK settings for a service on the configured broker: host, port, user name, the
    /// password read from `mqtt.password_file` (never from the file itself), topic prefix, keep
    /// alive and heartbeat interval.
    pub fn sdk_config(&self) -> Result<alicia_sdk::ServiceConfig, crate::ConfigError> {
        let mut sdk = alicia_sdk::ServiceConfig::broker(self.mqtt.host.clone(), self.mqtt.port);
        sdk.username = self.mqtt.username.clone();
        if let Some(file) = &self.mqtt.password_file {
            sdk.password = Some(alicia_sdk::Secret::from_file(file).map_err(|e| crate::ConfigError::Secret {
                key: "mqtt.password_file".into(),
                message: e.to_string(),
            })?);
        }
        sdk.topic_prefix = self.mqtt.topic_prefix.clone();
        sdk.keep_alive = std::time::Duration::from_secs(self.mqtt.keep_alive_secs);
        sdk.heartbeat_interval = std::time::Duration::from_secs(self.mqtt.heartbeat_interval_secs);
        Ok(sdk)
    }

    /// One section as JSON (`None` for an unknown name).
    pub fn section(&self, name: &str) -> Option<serde_json::Value> {
        serde_json::to_value(self).ok()?.get(name).cloned()
    }
}
