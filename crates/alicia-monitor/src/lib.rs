//! Alicia's operations monitor: is every service there, how is the system doing, and what went
//! wrong, in one place (EMQX's dashboard and HiveMQ's health probes are the comparison).
//!
//! [`start`] connects to the bus as the service `monitor` and runs four parts:
//!
//! - **Health.** It follows the SDK heartbeats (`P/system/discovery/heartbeat`, data
//!   `{service, instance, status, uptime_secs, interval_secs, …}`) and the retained status topics
//!   (`P/system/services/<name>/status`, `online`/`offline`). A service is *missing* when no
//!   heartbeat came for `missing_after_intervals` (default 3) of its own intervals, or when it
//!   said `offline`. An expected service (`monitoring.expected_services`) that is missing, or was
//!   never seen within that window after the monitor started, is a `critical` alert
//!   `service_missing`; another service that vanished without saying `offline` is a `warning`
//!   (one that said `offline` left cleanly and is forgotten).
//! - **Metrics.** It collects every service's snapshot from `P/system/metrics/+` (contract
//!   below), numeric `$SYS/#` topics where the broker has them (Mosquitto), the host's CPU,
//!   memory, disks and network (sysinfo, every `history_interval_secs`), containers, and its own
//!   counters, and renders them as one Prometheus text (families merged by name; snapshot
//!   samples get `service` and `instance` labels). It keeps a rolling history (default 360
//!   points at 10 s: one hour) for a dashboard. Invalid snapshots go to the dead-letter topic
//!   with the reason and are counted (`alicia_monitor_snapshots_total{result="rejected"}`).
//! - **Logs.** [`log_layer`] gives the binary a `tracing_subscriber` layer feeding this process's
//!   log events (INFO and above) to the analyzer; containers' recent lines are fed too. Each
//!   line is checked against `monitoring.log_rules` (regex, severity, message; the seed's error
//!   and warning patterns by default) and the most severe match becomes an alert named after
//!   the rule; its message quotes the line (cut at 300 bytes), and `context` has the whole
//!   line and its source.
//! - **Containers.** Through the Docker Engine API on `monitoring.docker.socket` (bollard):
//!   state, health, restart count, memory, CPU and recent logs of each container. With nothing
//!   at the socket's path (no engine installed, the usual case) the state is `not_installed`:
//!   one info log line, no alert. An engine that is there but does not answer is
//!   `unavailable` with the reason (in `/health`, `/ready` as a non-required check, the metric
//!   `alicia_monitor_container_engine_up{state="unavailable"} 0`, and one `info` alert
//!   `container_engine_unavailable`). Either way the engine is asked again every `retry_secs`.
//!
//! # Alerts
//!
//! Published on `P/system/alerts` (QoS 1) when they fire or resolve:
//! `{"alert","severity":"critical|warning|info","state":"firing|resolved","service","message","since","context":{…}}`;
//! the firing ones, retained, on `P/system/alerts/active` as `{"updated","alerts":[…]}`.
//!
//! - **Dedup:** one condition per (alert, service); while it fires nothing more is published
//!   (log alerts count repeats in `context.count`).
//! - **Flap damping (hysteresis in time):** a held condition (missing service, resource over
//!   its threshold, unhealthy container) fires only after holding for `alerts.fire_after_secs`
//!   and resolves only after being clear for `alerts.resolve_after_secs`; faster flapping
//!   produces nothing. Log alerts fire at the first match and resolve after
//!   `alerts.log_alert_window_secs` without another.
//!
//! # HTTP
//!
//! [`MonitorHandle::http_router`]: `GET /health` (liveness, always 200, with the bus and
//! container engine state), `GET /ready` (200 or 503, a JSON check per part: bus, expected
//! services, containers (not required)), `GET /metrics`, `GET /alerts`, `GET /history[?minutes=N]`,
//! `GET /devices` (the registry's devices: id, type, name, location, status, last seen,
//! capabilities, from its retained inventory),
//! and `GET /` (also `/dashboard`): one self-contained HTML page (`src/dashboard.html`, inline
//! JS and SVG, nothing loaded from elsewhere) that polls `health`, `ready`, `alerts` and
//! `history` every 5 s and shows service tiles, active alerts, the container engine and charts
//! of the last hour, for a person who would rather look than read JSON.
//!
//! Each `/history` point has `timestamp`, `cpu_ratio`, `memory_used_bytes`,
//! `memory_total_bytes`, `network_{received,transmitted}_bytes_total`, `services_up`,
//! `services_missing`, `alerts_active`, `metrics` (each snapshot family's values summed), and
//! `p99` (per histogram family, the 99th percentile of what was observed since the previous
//! point, Prometheus-style interpolation; absent when nothing was); when known also `broker`
//! (`messages_received_total`, `messages_sent_total`, `clients_connected`, from `$SYS` or the
//! embedded broker's metrics) and `devices` (`alicia_registry_devices` by `status`).
//! Handlers only read state kept current by the monitor's loop: no I/O while answering.
//! [`MonitorHandle::serve`] runs them on their own address (`monitoring.http_addr`) for
//! deployments with an external broker; the `alicia` binary merges the router into its own.
//!
//! # Metrics snapshot contract
//!
//! Every service with metrics publishes, every 10 s, QoS 0, retained, on
//! `P/system/metrics/<service>`:
//! `{"service","instance","timestamp","metrics":[{"name","type":"counter|gauge|histogram","help","samples":[{"labels":{…},"value":n}|{"labels":{…},"buckets":[[le,n],…,["+Inf",n]],"sum","count"}]}]}`.
//!
//! # Why
//!
//! - **One loop owns the state.** Every input is handled in order by one task, so alert
//!   decisions never race; HTTP handlers read copies under short locks.
//! - **The bus is the only interface to services**: the monitor needs nothing from a service
//!   but the SDK's heartbeats, status and the metrics contract, and works the same against the
//!   embedded broker or Mosquitto.
//! - **No Docker engine is required**: it is common on a home server, but not necessary, so its
//!   absence is information, not failure.

mod alerts;
mod core;
pub mod docker;
mod http;
pub mod logs;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_config::MonitoringConfig;
use alicia_envelope::{Envelope, MessageType};
use alicia_sdk::{BusService, Context, HandlerResult, ServiceConfig, ServiceHandle, Subscription};
use alicia_sdk::{Link, LinkOptions};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use crate::core::ExtraMetrics;
pub use crate::docker::{Container, EngineState};
pub use crate::logs::{log_layer, LogAnalyzer, LogFeed, LogLayer, LogLine};

/// The SDK name of the monitor.
pub const SERVICE_NAME: &str = "monitor";

/// How to run the monitor.
pub struct MonitorConfig {
    /// The bus (broker, credentials, prefix).
    pub sdk: ServiceConfig,
    /// The `monitoring` section of the configuration.
    pub monitoring: MonitoringConfig,
    /// Heartbeat interval assumed for services not seen yet (the SDK default is 30 s).
    pub default_heartbeat_interval: Duration,
    /// How often conditions are evaluated (default 1 s).
    pub tick: Duration,
    /// Log lines of this process, from [`log_layer`].
    pub log_feed: Option<LogFeed>,
    /// Follow the `monitoring` section announced by the configuration service for this
    /// environment ([`alicia_config::ConfigWatch`]) and reload without a restart.
    pub environment: Option<String>,
}

impl MonitorConfig {
    pub fn new(sdk: ServiceConfig, monitoring: MonitoringConfig) -> Self {
        MonitorConfig {
            sdk,
            monitoring,
            default_heartbeat_interval: Duration::from_secs(30),
            tick: Duration::from_secs(1),
            log_feed: None,
            environment: None,
        }
    }
}

/// What can go wrong starting the monitor.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("log rules: {0}")]
    Rules(String),
    #[error("monitoring configuration: {0}")]
    Config(String),
    #[error("bus: {0}")]
    Bus(#[from] alicia_sdk::SdkError),
    #[error("HTTP on {addr}: {source}")]
    Http { addr: SocketAddr, source: std::io::Error },
}

/// The SDK side: heartbeats in (as envelopes, so signatures and encryption are handled), and
/// `{"op":"status"}` requests answered with the alerts and services.
struct MonitorService {
    heartbeat_topic: String,
    inputs: mpsc::UnboundedSender<core::Input>,
    shared: Arc<RwLock<Option<Arc<core::Shared>>>>,
}

impl BusService for MonitorService {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new(self.heartbeat_topic.clone()).with_qos(alicia_sdk::QoS::AtMostOnce)]
    }

    async fn handle(&self, _ctx: &Context, envelope: Envelope) -> HandlerResult {
        if envelope.message_type == MessageType::Heartbeat {
            let _ = self.inputs.send(core::Input::Heartbeat(envelope.payload.data));
            return Ok(None);
        }
        let Some(shared) = self.shared.read().clone() else { return Ok(None) };
        let services: serde_json::Map<String, serde_json::Value> = shared
            .services
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), json!({ "expected": v.expected, "missing": v.missing, "status": v.status, "last_heartbeat": v.last_heartbeat_at })))
            .collect();
        Ok(Some(json!({ "alerts": *shared.active.read(), "services": services, "containers": *shared.engine.read() })))
    }
}

/// A running monitor.
pub struct MonitorHandle {
    shared: Arc<core::Shared>,
    service: Option<ServiceHandle>,
    docs: Link,
    logs: mpsc::Sender<LogLine>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the monitor (see the crate docs). Must be called inside a tokio runtime.
pub async fn start(cfg: MonitorConfig) -> Result<MonitorHandle, MonitorError> {
    let analyzer = LogAnalyzer::new(&cfg.monitoring.log_rules).map_err(MonitorError::Rules)?;
    // Built in code rather than loaded: check it like a file (durations must be finite, ≥ 0).
    let monitoring = serde_json::to_value(&cfg.monitoring).map_err(|e| MonitorError::Config(e.to_string()))?;
    validated(monitoring).map_err(MonitorError::Config)?;
    let prefix = cfg.sdk.topic_prefix.clone();
    let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
    let slot = Arc::new(RwLock::new(None));
    let svc = MonitorService {
        heartbeat_topic: format!("{prefix}/system/discovery/heartbeat"),
        inputs: inputs_tx.clone(),
        shared: slot.clone(),
    };
    let mut sdk = cfg.sdk.clone();
    if sdk.name.is_none() {
        sdk.name = Some(SERVICE_NAME.into());
    }
    let service = alicia_sdk::start(sdk.clone(), svc)?;
    let bus = service.bus().clone();
    let filters = vec![
        format!("{prefix}/system/services/+/status"),
        format!("{prefix}/system/services/+/health"),
        format!("{prefix}/system/metrics/+"),
        format!("{prefix}/system/registry/devices"),
        "$SYS/#".to_string(),
    ];
    let id = format!("{}-{}-docs", sdk.name.as_deref().unwrap_or(SERVICE_NAME), bus.instance());
    let (docs, doc_events) = Link::connect(&sdk, LinkOptions::new(id, filters).with_label("monitor/docs"));
    let docker_cfg = cfg.monitoring.docker.clone();
    let shared = Arc::new(core::Shared {
        started: Instant::now(),
        prefix,
        docs_online: AtomicBool::new(false),
        bus,
        services: RwLock::default(),
        snapshots: RwLock::default(),
        sys: RwLock::default(),
        host: RwLock::default(),
        active: RwLock::default(),
        history: RwLock::default(),
        engine: RwLock::new(if docker_cfg.enabled { EngineState::Starting } else { EngineState::Disabled }),
        containers: RwLock::default(),
        log_matches: Mutex::default(),
        counters: core::Counters::default(),
        extra: RwLock::default(),
        devices: RwLock::default(),
        cfg: RwLock::new(cfg.monitoring.clone()),
    });
    *slot.write() = Some(shared.clone());
    let (stop, stop_rx) = watch::channel(false);
    let (logs_tx, logs_rx) = mpsc::channel(4096);
    let mut tasks = Vec::new();
    if let Some(LogFeed(mut feed)) = cfg.log_feed {
        let tx = logs_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(line) = feed.recv().await {
                let _ = tx.try_send(line);
            }
        }));
    }
    let lp = core::Loop {
        shared: shared.clone(),
        docs: docs.clone(),
        alerts: alerts::Alerts::new(
            Duration::from_secs_f64(cfg.monitoring.alerts.fire_after_secs),
            Duration::from_secs_f64(cfg.monitoring.alerts.resolve_after_secs),
        ),
        analyzer,
        default_interval: cfg.default_heartbeat_interval,
        tick: cfg.tick,
        last_active: Vec::new(),
        forget: Vec::new(),
        prev_histograms: Default::default(),
    };
    tasks.push(tokio::spawn(lp.run(doc_events, inputs_rx, logs_rx, stop_rx.clone())));
    // The host, read off the async threads every history interval.
    let (tx, mut stop_host) = (inputs_tx.clone(), stop_rx.clone());
    let every = Duration::from_secs(cfg.monitoring.history_interval_secs.max(1));
    tasks.push(tokio::spawn(async move {
        let mut host = Some(metrics::Host::new());
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_host.changed() => return,
            }
            let Some(mut h) = host.take() else { return };
            match tokio::task::spawn_blocking(move || {
                let r = h.read();
                (h, r)
            })
            .await
            {
                Ok((h, reading)) => {
                    host = Some(h);
                    if tx.send(core::Input::Host(reading)).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }));
    if let Some(env) = &cfg.environment {
        let mut watch = alicia_config::ConfigWatch::start(&sdk, env, "monitoring");
        let (tx, mut stop_watch) = (inputs_tx.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let section = tokio::select! {
                    s = watch.changed() => s,
                    _ = stop_watch.changed() => None,
                };
                let Some(section) = section else { break };
                match validated(section) {
                    Ok(m) => {
                        if tx.send(core::Input::Reconfigure(Box::new(m))).is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "announced monitoring section ignored"),
                }
            }
            watch.close().await;
        }));
    }
    if docker_cfg.enabled {
        let (rtx, mut rrx) = mpsc::unbounded_channel();
        tasks.push(tokio::spawn(docker::run(docker_cfg, rtx, logs_tx.clone(), stop_rx.clone())));
        let tx = inputs_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(r) = rrx.recv().await {
                if tx.send(core::Input::Docker(r)).is_err() {
                    return;
                }
            }
        }));
    }
    Ok(MonitorHandle { shared, service: Some(service), docs, logs: logs_tx, stop, tasks })
}

impl MonitorHandle {
    /// `/health`, `/ready`, `/metrics`, `/alerts`, `/history`.
    pub fn http_router(&self) -> axum::Router {
        http::router(self.shared.clone())
    }

    /// Text appended to `/metrics` on every scrape (e.g. the embedded broker's own metrics).
    /// It is called in the handler, so it must be quick and not block.
    pub fn set_extra_metrics(&self, source: ExtraMetrics) {
        *self.shared.extra.write() = Some(source);
    }

    /// Serves [`MonitorHandle::http_router`] on `addr` (standalone deployments); returns the
    /// bound address and the server task.
    pub async fn serve(&self, addr: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>), MonitorError> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| MonitorError::Http { addr, source })?;
        let bound = listener.local_addr().map_err(|source| MonitorError::Http { addr, source })?;
        let app = self.http_router();
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "monitor HTTP server stopped");
            }
        });
        Ok((bound, task))
    }

    /// Feeds one log line (from any source) to the analyzer; dropped if the monitor is behind.
    pub fn feed_log(&self, source: impl Into<String>, line: impl Into<String>) {
        let _ = self.logs.try_send(LogLine { source: source.into(), line: line.into() });
    }

    /// The firing alerts.
    pub fn active_alerts(&self) -> Vec<serde_json::Value> {
        self.shared.active.read().clone()
    }

    /// The container engine's state.
    pub fn engine_state(&self) -> EngineState {
        self.shared.engine.read().clone()
    }

    /// The Prometheus text `/metrics` serves.
    pub fn render_metrics(&self) -> String {
        self.shared.render_metrics()
    }

    /// Stops every task, leaves the bus (`offline`) and closes the document connection.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(s) = self.service.take() {
            s.shutdown().await;
        }
        self.docs.close().await;
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// A `monitoring` section from the bus, checked like a file would be.
fn validated(section: serde_json::Value) -> Result<MonitoringConfig, String> {
    let monitoring: MonitoringConfig = serde_json::from_value(section).map_err(|e| e.to_string())?;
    let whole = alicia_config::Config { monitoring, ..Default::default() };
    whole.validate().map_err(|p| p.join("; "))?;
    Ok(whole.monitoring)
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}
