//! The bus core services `alicia up` runs next to the embedded broker, and `alicia services`
//! runs against any other broker (Mosquitto, an EMQX cluster).
//!
//! Each service is a library crate that only speaks MQTT; this module gives each one its
//! settings from the Alicia home: the broker address, its MQTT user (its service name) and the
//! password `alicia init` wrote to `secrets/<name>.password`, its envelope keys, its data
//! files. Services connect over the network even inside `alicia up`: nothing in them may
//! depend on being inside the embedded broker, and this keeps it so.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alicia_config::Config;
use alicia_monitor::{ExtraMetrics, LogFeed};
use alicia_sdk::{EnvelopeSecurity, Secret, ServiceConfig};
use anyhow::Context;
use clap::Args;
use parking_lot::Mutex;

mod devices;

/// The environment files `alicia init` puts in `<home>/config/` (and `up` adds when a home
/// has none): the repository's `config/*.yaml`.
pub const ENVIRONMENT_FILES: &[(&str, &str)] = &[
    ("development", include_str!("../../../config/development.yaml")),
    ("staging", include_str!("../../../config/staging.yaml")),
    ("production", include_str!("../../../config/production.yaml")),
];

/// Which configuration the services use and where they listen. Every address may use port 0
/// (a free port, printed as `<what> listening on ADDR`). A flag wins over the environment's
/// file, which wins over the built-in default.
#[derive(Args, Clone, Debug)]
pub struct ServicesArgs {
    /// The environment: its file `<home>/config/<ENV>.yaml` (development, staging,
    /// production), with `ALICIA__SECTION__KEY=value` variables on top.
    #[arg(long = "env", value_name = "ENV", default_value = "development")]
    pub environment: String,
    /// The directory of the environment files [default: <home>/config].
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// The device registry's HTTP API (`GET /devices`, `POST /devices/register`, ...)
    /// [default: 127.0.0.1:<registry.http_port>, 8081].
    #[arg(long, value_name = "ADDR")]
    pub registry_http: Option<SocketAddr>,
    /// The discovery view [default: 127.0.0.1:<registry.discovery_http_port>, 8082].
    #[arg(long, value_name = "ADDR")]
    pub discovery_http: Option<SocketAddr>,
    /// The data store's query API (`GET /query`, `/stats`)
    /// [default: 127.0.0.1:<data_store.http_port>, 8094].
    #[arg(long, value_name = "ADDR")]
    pub data_store_http: Option<SocketAddr>,
    /// Seconds without a heartbeat after which a device is marked offline
    /// [default: registry.heartbeat_timeout_secs].
    #[arg(long, value_name = "SECS")]
    pub heartbeat_timeout: Option<u64>,
    /// Serve Wyoming speech to text here (Home Assistant's Wyoming integration), backed by
    /// stt_service over the bus [default when `stt_service.wyoming.enabled`:
    /// <stt_service.wyoming.host, 127.0.0.1>:<port, 10300>]. Giving it enables the server.
    #[arg(long, value_name = "ADDR")]
    pub wyoming_asr: Option<SocketAddr>,
    /// Serve Wyoming text to speech here, backed by tts_service [default when
    /// `tts_service.wyoming.enabled`: <host, 127.0.0.1>:<port, 10200>].
    #[arg(long, value_name = "ADDR")]
    pub wyoming_tts: Option<SocketAddr>,
    /// Do not download missing speech models: the voice services report themselves unavailable
    /// (with the `alicia models fetch` command that fixes it) until the models are there.
    #[arg(long)]
    pub no_model_fetch: bool,
}

/// The services to start, from an Alicia home.
pub struct Services {
    pub home: PathBuf,
    pub args: ServicesArgs,
    /// This process's log lines, for the monitor's log analysis.
    pub log_feed: Mutex<Option<LogFeed>>,
    /// The broker stamps every message with its publisher's login (Alicia's own, under `alicia
    /// up`): services may believe it (see `alicia_sdk::Sender`). Never for a broker that does
    /// not (Mosquitto), where a client could set the same properties itself.
    pub trust_broker_identity: bool,
    /// TLS to the broker, when the services run against an external one whose environment
    /// `mqtt` section says `tls` (under `alicia up` they use the embedded broker's loopback).
    pub broker_tls: Option<alicia_sdk::Tls>,
}

/// The running services, stopped in reverse order of start.
pub struct Running {
    config: alicia_config::ConfigServiceHandle,
    registry: Option<alicia_registry::RegistryHandle>,
    router: Option<alicia_router::RouterHandle>,
    assistant: Option<alicia_assistant::AssistantHandle>,
    pipeline: Option<alicia_voice::pipeline::PipelineHandle>,
    voice: Option<crate::voice::Voice>,
    monitor: alicia_monitor::MonitorHandle,
    devices: devices::DeviceServices,
}

impl Services {
    pub fn new(home: PathBuf, args: ServicesArgs, log_feed: Option<LogFeed>) -> Self {
        Services { home, args, log_feed: Mutex::new(log_feed), trust_broker_identity: false, broker_tls: None }
    }

    /// Where each file of the home is (`alicia_home` owns the layout).
    fn layout(&self) -> alicia_home::Home {
        alicia_home::Home::new(&self.home)
    }

    /// The same, for services on Alicia's embedded broker, which stamps publishers' identities.
    pub fn on_embedded_broker(mut self) -> Self {
        self.trust_broker_identity = true;
        self
    }

    /// The directory of the environment files: `--config-dir`, else `<home>/config`, created
    /// from the built-in files when missing.
    fn config_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.args.config_dir {
            return Ok(dir.clone());
        }
        let dir = self.layout().environments_dir();
        write_environment_files(&dir)?;
        Ok(dir)
    }

    /// The configuration in force: the environment's file, the `ALICIA__` variables, and the
    /// updates the configuration service persisted (in `<home>/data`).
    fn load(&self) -> anyhow::Result<alicia_config::ConfigStore> {
        let dir = self.config_dir()?;
        let data = self.layout().data_dir();
        std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        alicia_config::ConfigStore::open(&dir, &self.args.environment, &data)
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))
    }

    /// Reads the configuration without starting anything, so a broken file is reported
    /// (file, line, key) before any listener opens. Returns the gateway's rate limit when the
    /// environment's `security` section sets one (`rate_limiting: false`: none).
    pub fn check(&self) -> anyhow::Result<Option<u32>> {
        let store = self.load()?;
        let s = &store.current().security;
        Ok(match (s.rate_limiting, s.max_requests_per_minute) {
            (false, _) => Some(u32::MAX),
            (true, limit) => limit,
        })
    }

    /// The settings of the service `name` for the broker at `broker`: user `name` with the
    /// password in `secrets/<name>.password` when the home has one (an external broker
    /// without authentication needs none), the envelope keys of the home, and the
    /// environment's envelope rules (`security.require_signed`, `security.encrypt_payloads`).
    fn config(&self, name: &str, broker: SocketAddr, cfg: &Config) -> anyhow::Result<ServiceConfig> {
        let host = if broker.ip().is_unspecified() { "127.0.0.1".to_string() } else { broker.ip().to_string() };
        let mut config = ServiceConfig::broker(host, broker.port());
        config.trust_broker_identity = self.trust_broker_identity;
        config.tls = self.broker_tls.clone();
        config.topic_prefix = cfg.mqtt.topic_prefix.clone();
        config.keep_alive = Duration::from_secs(cfg.mqtt.keep_alive_secs);
        config.heartbeat_interval = Duration::from_secs(cfg.mqtt.heartbeat_interval_secs);
        let secret = self.layout().password_file(name);
        if secret.exists() {
            let password = Secret::from_file(&secret).with_context(|| format!("cannot read {}", secret.display()))?;
            config.username = Some(name.to_string());
            config.password = Some(password);
        } else if let Some(user) = &cfg.mqtt.username {
            // No login of its own in the home: the environment's (the design document's files
            // give one user to every service).
            config.username = Some(user.clone());
            config.password = match (&cfg.mqtt.password_file, &cfg.mqtt.password) {
                (Some(file), _) => {
                    Some(Secret::from_file(file).with_context(|| format!("cannot read {}", file.display()))?)
                }
                (None, Some(p)) => Some(Secret::new(p.expose())),
                (None, None) => None,
            };
        }
        config.security = EnvelopeSecurity::from_home(&self.home, name)
            .with_context(|| format!("envelope keys of {name} in {}", self.home.display()))?
            .require_signed(cfg.security.require_signed)
            .encrypt_payloads(cfg.security.encrypt_payloads);
        Ok(config)
    }

    /// Starts every service against the broker at `broker` and prints where each listens.
    /// `broker_metrics` (the embedded broker's Prometheus text) is appended to the monitor's
    /// `/metrics`.
    pub async fn start(&self, broker: SocketAddr, broker_metrics: Option<ExtraMetrics>) -> anyhow::Result<Running> {
        let store = self.load()?;
        let cfg = store.current().clone();
        let env = self.args.environment.clone();
        tracing::info!(environment = %env, "configuration loaded");

        let config = alicia_config::start(self.config(alicia_config::SERVICE_NAME, broker, &cfg)?, store)
            .map_err(|e| anyhow::anyhow!("cannot start the configuration service: {e}"))?;

        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut registry = None;
        if cfg.registry.enabled {
            let db = self.layout().resolve(&cfg.registry.db);
            let mut r =
                alicia_registry::RegistryConfig::new(self.config(alicia_registry::SERVICE_NAME, broker, &cfg)?, db);
            r.heartbeat_timeout =
                Duration::from_secs(self.args.heartbeat_timeout.unwrap_or(cfg.registry.heartbeat_timeout_secs));
            r.http = Some(self.args.registry_http.unwrap_or(local(cfg.registry.http_port)));
            r.http_auth = Some(registry_http_auth(&self.home));
            r.discovery_http = Some(self.args.discovery_http.unwrap_or(local(cfg.registry.discovery_http_port)));
            let r = alicia_registry::start(r).await.context("cannot start the device registry")?;
            print_listening("registry", r.http_addr());
            print_listening("discovery", r.discovery_addr());
            registry = Some(r);
        }

        let mut router = None;
        if cfg.router.enabled {
            let mut r = alicia_router::RouterConfig::new(self.config(alicia_sdk::ROUTER_SERVICE, broker, &cfg)?);
            r.hop_limit = cfg.router.max_hops;
            r.queue_capacity = cfg.router.max_in_flight;
            router = Some(alicia_router::start(r).await.context("cannot start the router")?);
        }

        // The voice pipeline hands transcripts to the assistant; without it (disabled, or a
        // home made before it existed) the assistant takes them from stt_service itself.
        let pipeline_name = alicia_voice::pipeline::SERVICE_NAME;
        let pipeline_login = !self.layout().passwd().exists() || self.layout().password_file(pipeline_name).exists();
        let pipeline_on = cfg.voice_pipeline.enabled && cfg.ai_service.enabled && pipeline_login;
        if cfg.voice_pipeline.enabled && !pipeline_login {
            tracing::error!(
                "{pipeline_name} not started: this home has no login for it (it was made before the voice pipeline \
                 existed): add one with `alicia passwd {home}/passwd {pipeline_name}` (keep the password in \
                 {home}/secrets/{pipeline_name}.password, mode 0600) and give it the ACL block `alicia init` writes \
                 for it; until then the assistant takes transcripts from stt_service itself",
                home = self.home.display()
            );
        }
        let mut assistant = None;
        if cfg.ai_service.enabled {
            match self.start_assistant(broker, &cfg, pipeline_on).await {
                Ok(a) => assistant = Some(a),
                // The rest of the bus is useful without it; the reason is said once, clearly.
                Err(e) => tracing::error!("ai_service not started: {e:#}"),
            }
        }
        let mut pipeline = None;
        if pipeline_on && assistant.is_some() {
            let vp = &cfg.voice_pipeline;
            let mut p = alicia_voice::pipeline::PipelineConfig::new(self.config(pipeline_name, broker, &cfg)?);
            p.arbitration_window = Duration::from_millis(vp.arbitration_window_ms);
            p.arbitration_wait = Duration::from_millis(vp.arbitration_wait_ms);
            p.assistant_timeout = Duration::from_secs(vp.assistant_timeout_secs);
            p.stop_words = vp.stop_words.iter().map(|w| w.trim().to_lowercase()).collect();
            pipeline = Some(alicia_voice::pipeline::start(p).await.context("cannot start the voice pipeline")?);
        }

        let voice = match self.start_voice(broker, &cfg).await {
            Ok(v) => v,
            // A Wyoming port that cannot be bound is a configuration error worth stopping for.
            Err(e) => return Err(e.context("cannot start the voice services")),
        };

        let mut m = alicia_monitor::MonitorConfig::new(
            self.config(MONITOR, broker, &cfg)?.with_name(MONITOR),
            cfg.monitoring.clone(),
        );
        m.log_feed = self.log_feed.lock().take();
        m.environment = Some(env);
        m.default_heartbeat_interval = Duration::from_secs(cfg.mqtt.heartbeat_interval_secs);
        let monitor = alicia_monitor::start(m).await.map_err(|e| anyhow::anyhow!("cannot start the monitor: {e}"))?;
        if let Some(metrics) = broker_metrics {
            monitor.set_extra_metrics(metrics);
        }
        let devices = devices::DeviceServices::start(self, broker, &cfg).await?;
        let running = Running { config, registry, router, assistant, pipeline, voice, monitor, devices };
        running.wait_subscribed(Duration::from_secs(15)).await;
        Ok(running)
    }

    /// The assistant: its sentences (see `intents_data`), compiled off the runtime's threads,
    /// and the service on the bus as user `ai_service`.
    async fn start_assistant(
        &self,
        broker: SocketAddr,
        cfg: &Config,
        pipeline_on: bool,
    ) -> anyhow::Result<alicia_assistant::AssistantHandle> {
        let name = alicia_assistant::SERVICE_NAME;
        if self.layout().passwd().exists() && !self.layout().password_file(name).exists() {
            anyhow::bail!(
                "this home has no login for {name} (it was made before the assistant existed): add one with \
                 `alicia passwd {home}/passwd {name}` (keep the password in {home}/secrets/{name}.password, mode 0600) \
                 and give it the ACL block `alicia init` writes for it",
                home = self.home.display()
            );
        }
        let ai = cfg.ai_service.clone();
        let under_home = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { self.home.join(p) };
        let intents = ai.intents.as_deref().map(under_home);
        let extra: Vec<PathBuf> = ai.extra_sentences.iter().map(|p| under_home(p)).collect();
        let language = ai.language.clone();
        let (file, engine) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let file = crate::intents_data::locate(intents.as_deref(), &language)?;
            let engine = crate::intents_data::engine(&file, &extra)?;
            Ok((file, engine))
        })
        .await??;
        tracing::info!(sentences = engine.sentence_count(), from = %file.display(), "ai_service: sentences compiled");
        let mut a =
            alicia_assistant::AssistantConfig::new(self.config(name, broker, cfg)?, std::sync::Arc::new(engine));
        a.listen_transcripts = ai.listen_transcripts && !pipeline_on;
        a.dialogue_timeout = Duration::from_secs(ai.dialogue_timeout_secs);
        a.volume_step_percent = ai.volume_step_percent;
        a.announce_timers = ai.announce_timers;
        a.command_ttl = (ai.command_ttl_secs > 0).then_some(ai.command_ttl_secs);
        a.media = ai
            .media
            .iter()
            .map(|m| alicia_assistant::MediaItem {
                name: m.name.clone(),
                url: m.url.clone(),
                aliases: m.aliases.clone(),
            })
            .collect();
        if ai.llm.enabled {
            let mut l = alicia_assistant::llm::LlmConfig::new(ai.llm.url.clone());
            l.model = ai.llm.model.clone();
            l.timeout = Duration::from_secs(ai.llm.timeout_secs);
            l.max_devices = ai.llm.max_devices;
            if let Some(f) = &ai.llm.api_key_file {
                let f = under_home(f);
                let key =
                    Secret::from_file(&f).with_context(|| format!("ai_service.llm.api_key_file {}", f.display()))?;
                l.api_key = Some(key.expose().to_string());
            }
            a.llm = Some(l);
        }
        Ok(alicia_assistant::start(a).await?)
    }

    /// The voice services (see `crate::voice`): `stt_service`, `tts_service` and the
    /// Wyoming bridge, each as its own MQTT user.
    async fn start_voice(&self, broker: SocketAddr, cfg: &Config) -> anyhow::Result<Option<crate::voice::Voice>> {
        let login = |name: &str| -> Option<ServiceConfig> {
            if self.layout().passwd().exists() && !self.layout().password_file(name).exists() {
                tracing::error!(
                    "{name} not started: this home has no login for it (it was made before the voice services \
                     existed): add one with `alicia passwd {home}/passwd {name}` (keep the password in \
                     {home}/secrets/{name}.password, mode 0600) and give it the ACL block `alicia init` writes for it",
                    home = self.home.display()
                );
                return None;
            }
            match self.config(name, broker, cfg) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!("{name} not started: {e:#}");
                    None
                }
            }
        };
        let (s, t) = (&cfg.stt_service, &cfg.tts_service);
        let stt = if s.enabled { login(alicia_voice::stt::SERVICE_NAME) } else { None };
        let tts = if t.enabled { login(alicia_voice::tts::SERVICE_NAME) } else { None };
        let addr = |w: &alicia_config::WyomingConfig| -> anyhow::Result<Option<SocketAddr>> {
            if !w.enabled {
                return Ok(None);
            }
            let host = w.host.as_deref().unwrap_or("127.0.0.1");
            let text = if host.contains(':') { format!("[{host}]:{}", w.port) } else { format!("{host}:{}", w.port) };
            Ok(Some(text.parse().with_context(|| format!("wyoming address {text}: not an IP address and port"))?))
        };
        let asr = self.args.wyoming_asr.or(addr(&s.wyoming)?).filter(|_| s.enabled);
        let tts_addr = self.args.wyoming_tts.or(addr(&t.wyoming)?).filter(|_| t.enabled);
        let bridge = if asr.is_some() || tts_addr.is_some() {
            login(alicia_voice::wyoming_bridge::SERVICE_NAME)
                .map(|c| (c, asr, tts_addr, s.wyoming.zeroconf || t.wyoming.zeroconf))
        } else {
            None
        };
        if stt.is_none() && tts.is_none() && bridge.is_none() {
            return Ok(None);
        }
        let setup = crate::voice::VoiceSetup {
            stt,
            tts,
            bridge,
            cfg: cfg.clone(),
            home: self.home.clone(),
            fetch: !self.args.no_model_fetch,
        };
        Ok(Some(crate::voice::Voice::start(setup).await?))
    }
}

/// The monitor's name on the bus (and its MQTT user).
const MONITOR: &str = "monitor";

/// Who may write to the registry's HTTP API: a device with a gateway token (its subject is the
/// device), or a service whose broker login (the home's password file) the ACL lets register
/// devices (`alicia/system/discovery/register`). The files are read for each request, so a
/// password changed with `alicia passwd` or an ACL edit applies at once.
fn registry_http_auth(home: &Path) -> alicia_registry::HttpAuth {
    use alicia_registry::{Credential, Principal};
    let home = alicia_home::Home::new(home);
    std::sync::Arc::new(move |cred: &Credential| match cred {
        Credential::Bearer(token) => {
            let tokens = alicia_gateway::tokens::TokenIssuer::from_key_file(&home.jwt_key())
                .map_err(|_| "no token can be checked here".to_string())?;
            let claims = tokens.verify(token).map_err(|e| format!("token refused: {e}"))?;
            Ok(Principal::Device(claims.sub))
        }
        Credential::Basic { user, password } => {
            let passwd = alicia_broker::auth::PasswordFile::load(home.passwd())
                .map_err(|_| "no password can be checked here".to_string())?;
            if !passwd.verify(user, password) {
                return Err("wrong user name or password".into());
            }
            let acl = alicia_broker::auth::Acl::load(home.acl()).map_err(|_| "the ACL cannot be read".to_string())?;
            let topic = "alicia/system/discovery/register";
            if !acl.check("", Some(user), topic, alicia_broker::Access::Write) {
                return Err(format!("user {user:?} may not register devices (the ACL does not let it write {topic})"));
            }
            Ok(Principal::Service(user.clone()))
        }
    })
}

/// Writes the built-in environment files into `dir` where they are missing.
pub fn write_environment_files(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (env, text) in ENVIRONMENT_FILES {
        let path = dir.join(format!("{env}.yaml"));
        if !path.exists() {
            crate::certs::write_public(&path, text.as_bytes())?;
        }
    }
    Ok(())
}

fn print_listening(what: &str, addr: Option<SocketAddr>) {
    if let Some(addr) = addr {
        crate::listening::announce(what, addr);
    }
}

impl Running {
    /// Waits until the services devices and clients talk to first are connected and
    /// subscribed, so that `alicia ready` means it: a registration or a command published right
    /// after it is heard (MQTT delivers a message to the subscriptions that exist when it
    /// arrives, and to nobody if there are none yet). Bounded: a service that cannot connect is
    /// reported and the rest go on.
    async fn wait_subscribed(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut waits: Vec<(String, Result<(), alicia_sdk::SdkError>)> = Vec::new();
        let bus = self.config.service().bus();
        waits.push((bus.name().to_string(), bus.wait_online(left()).await));
        if let Some(r) = &self.registry {
            waits.push((r.bus().name().to_string(), r.wait_online(left()).await));
        }
        if let Some(r) = &self.router {
            waits.push((r.bus().name().to_string(), r.wait_online(left()).await));
        }
        if let Some(a) = &self.assistant {
            waits.push((a.bus().name().to_string(), a.wait_online(left()).await));
        }
        if let Some(p) = &self.pipeline {
            waits.push((p.bus().name().to_string(), p.wait_online(left()).await));
        }
        for b in self.devices.buses() {
            waits.push((b.name().to_string(), b.wait_online(left()).await));
        }
        for (service, outcome) in waits {
            if let Err(e) = outcome {
                tracing::warn!(%service, error = %e, "not connected and subscribed when alicia up got ready");
            }
        }
    }

    /// The monitor's HTTP endpoints: `/health`, `/ready`, `/metrics`, `/alerts`, `/history`.
    pub fn http_router(&self) -> axum::Router {
        self.monitor.http_router()
    }

    /// Stops every service: each says `offline` and closes its connection while the broker
    /// is still there to hear it.
    pub async fn stop(self) {
        self.devices.stop().await;
        if let Some(voice) = self.voice {
            voice.stop().await;
        }
        self.monitor.shutdown().await;
        if let Some(pipeline) = self.pipeline {
            pipeline.shutdown().await;
        }
        if let Some(assistant) = self.assistant {
            assistant.shutdown().await;
        }
        if let Some(router) = self.router {
            router.shutdown().await;
        }
        if let Some(registry) = self.registry {
            registry.shutdown().await;
        }
        self.config.shutdown().await;
    }
}

/// The broker the services of `alicia up` use: its first plain MQTT listener (loopback when it
/// listens on every address).
pub fn local_broker(listeners: &[(&'static str, SocketAddr)]) -> anyhow::Result<SocketAddr> {
    listeners.iter().find(|(kind, _)| *kind == "mqtt").map(|(_, a)| *a).context(
        "the bus services need a plain MQTT listener on this machine (add one on 127.0.0.1 to the configuration)",
    )
}

/// `alicia services`: the services against the broker at `broker` (HOST:PORT; default: the
/// environment's `mqtt` section), with the
/// monitor's HTTP endpoints on `http`, until SIGINT or SIGTERM.
pub async fn run_against(
    broker: Option<String>,
    http: Option<SocketAddr>,
    mut services: Services,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let broker = match broker {
        Some(b) => b,
        None => {
            let store = services.load()?;
            let mqtt = &store.current().mqtt;
            if mqtt.tls.enabled {
                // The design document's `tls: true`: the home's CA unless another is named, the
                // client certificate if one is, and the broker's host name checked.
                let layout = services.layout();
                let ca = mqtt.tls.ca_file.clone().unwrap_or_else(|| layout.ca_cert());
                let mut tls = alicia_sdk::Tls::new(layout.resolve(&ca)).with_server_name(mqtt.host.clone());
                match (&mqtt.tls.cert_file, &mqtt.tls.key_file) {
                    (Some(c), Some(k)) => tls = tls.with_client_cert(layout.resolve(c), layout.resolve(k)),
                    (None, None) => {}
                    _ => anyhow::bail!("mqtt.tls: cert_file and key_file go together"),
                }
                services.broker_tls = Some(tls);
            }
            format!("{}:{}", mqtt.host, mqtt.tls.port.filter(|_| mqtt.tls.enabled).unwrap_or(mqtt.port))
        }
    };
    let broker = broker.as_str();
    let addr = tokio::net::lookup_host(broker)
        .await
        .with_context(|| format!("cannot resolve the broker address {broker}"))?
        .next()
        .with_context(|| format!("{broker} resolves to no address"))?;
    services.check()?;
    // Starting waits for the broker (a model may load meanwhile): a signal ends it too.
    let running = tokio::select! {
        r = services.start(addr, None) => r?,
        _ = int.recv() => return Ok(()),
        _ = term.recv() => return Ok(()),
    };
    let mut server = None;
    if let Some(addr) = http {
        let (local, task) =
            running.monitor.serve(addr).await.map_err(|e| anyhow::anyhow!("cannot serve HTTP on {addr}: {e}"))?;
        crate::listening::announce("http", local);
        server = Some(task);
    }
    println!("alicia ready");
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    if let Some(task) = server {
        task.abort();
    }
    running.stop().await;
    Ok(())
}
