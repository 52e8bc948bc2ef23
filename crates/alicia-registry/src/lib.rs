//! Alicia's device registry and discovery service (`device_registry` on the bus).
//!
//! Devices announce themselves with the design document's registration (`device_id`,
//! `device_type`, `capabilities` as `{name, version, parameters, endpoints}` objects or plain
//! names, `endpoints` `{control, status, audio, ...}` where `control` is the command topic,
//! `metadata` with `location`, manufacturer, model, addresses; Alicia's `name`, `location` and
//! `heartbeat_interval` too; anything else kept); the registry keeps them in SQLite with a
//! capability index, watches whether they are alive, and tells everyone else: the router
//! resolves `device_id:` and `capability:` destinations from the retained inventory it
//! publishes.
//!
//! # On the bus (`P` = topic prefix, `alicia` by default)
//!
//! | topic | direction | what |
//! |-------|-----------|------|
//! | `P/system/discovery/register` | in | envelope, `payload.data` = the registration; a request gets a response |
//! | `P/system/discovery/unregister` | in | envelope, data `{"device_id": ..}` |
//! | `P/system/discovery/heartbeat` | in | heartbeat envelopes; a device's has source `device_id:ID` or `data.device_id`; the SDK's service heartbeats (`data.service`) are only counted |
//! | `P/devices/+/status` (and any other registered `endpoints.status`) | in | `online` / `offline`, plain text or `{"status": ..}`: a device's MQTT will marks it offline at once |
//! | `P/services/device_registry/inbox` | in | requests: `{"action":"list"}`, `{"action":"get","device_id"}`, `{"action":"find","capability"}`, `{"action":"register", ..registration}` (or `{"action":"register","registration":{..}}`, or a registration without `action`), `{"action":"unregister","device_id"}`; unknown → error response `unknown_action` |
//! | `P/system/registry/devices` | out, retained, QoS 1 | the inventory: `{"updated", "devices": [{device_id, device_type, name, location, capabilities: [{name, version, parameters, endpoints}], endpoints: {control, status, ...}, metadata, status, last_seen (Unix seconds), last_seen_at, registered_at, registration}]}`, re-published after every change and on every (re)connect |
//! | `P/devices/<id>/errors` | out, QoS 1 | error responses to a device's refused registrations, unregistrations and heartbeats (when it named no response topic): `data` = `{code, message, errors: [{field, reason}]}` |
//! | `P/system/registry/events` | out, QoS 1 | `{"event": "registered"/"updated"/"online"/"offline"/"removed", "device_id", "device", "reason", "timestamp"}` |
//! | `P/system/discovery/rebirth` | out, once at start | an `event` envelope to `broadcast` from `device_registry`, data `{"request": "register", "reason": "registry started", "registry": "device_registry"}`: every device should register again (its content need not be parsed: any message on this topic means "register again") |
//! | `P/system/metrics/device_registry` | out, retained, QoS 0 | the metrics snapshot every 10 s: `alicia_registry_devices{status}`, `alicia_registry_registrations_total{result}`, `alicia_registry_heartbeats_total{kind}`, `alicia_registry_removals_total`, `alicia_registry_status_changes_total{status}` |
//!
//! A device may register, unregister and heartbeat only as itself: the registry asks the SDK
//! who sent each message ([`alicia_sdk::Context::sender`]: the broker's word under `alicia up`,
//! where a certificate's CN or a token's subject is the device's user name), else takes a
//! `device_id:X` source as the sender. A device claiming another id is refused (`forbidden`); a
//! service (a password login, which the ACL let publish there) may act for any device, e.g. a
//! bridge for a radio network. A device registered without endpoints gets
//! `P/devices/<id>/command` as `control` and `P/devices/<id>/status`. Invalid registrations are
//! refused with every field and reason at once: error code `invalid_registration` to a
//! requester; otherwise dead-lettered and answered on the device's errors topic.
//!
//! # Liveness
//!
//! - A registration, a heartbeat or `online` on its status topic makes a device `online`.
//! - `offline` on its status topic (its will, which devices set on their status endpoint)
//!   makes it `offline` at once.
//! - Silence makes it `offline`: after the configured timeout (default 300 s), shortened to
//!   three heartbeat intervals when the device announces a faster `heartbeat_interval`, but
//!   never under one and a half intervals (see `Device::timeout`).
//! - After a registry restart, stored devices are `unknown` until they are heard from: the
//!   registry could not hear them while it was down, and the rebirth request asks them to
//!   speak up. Their timeout counts from the restart. The router still delivers to `unknown`
//!   devices (and prefers online providers of a capability).
//!
//! - Devices that set a will should also publish a retained `online` on their status topic when
//!   they connect (the usual birth message, as Home Assistant's availability topics expect):
//!   otherwise the retained `offline` of an earlier crash is read again when the registry
//!   restarts and subscribes, and the device shows offline until its next heartbeat.
//!
//! Every status change is an event (with the reason) and a new inventory.
//!
//! # Removal and tombstones
//!
//! Unregistering (bus or `DELETE /devices/{id}`) deletes the device and its capabilities and
//! leaves a tombstone: a `removed` event carrying the last known record (not retained, so a
//! late subscriber is not told about long-gone devices), and a row in the database's
//! `tombstones` table, so `get`/`GET /devices/{id}` can answer "removed at T (why)" instead
//! of "unknown". Registering the id again clears it.
//!
//! # HTTP
//!
//! The API ([`RegistryConfig::http`]; `alicia up` uses 127.0.0.1:8081): `POST
//! /devices/register` with a registration or the design document's `Device` model (201
//! `{"status":"registered","device_id"}`, 200 `"updated"` on re-registration, 400
//! `invalid_json`, 422 `invalid_registration` with `reason`, `field` and every problem in
//! `errors`), `DELETE /devices/{id}`, `GET /devices` (`{"devices", "count"}`), `GET
//! /devices/capability/{capability}` (by any of a device's capabilities), `GET /devices/{id}`
//! (404 `{"error": "not_found", "message"}`, the shape of `alicia_sdk::ApiError`). Reads are open; writes need a credential
//! ([`HttpAuth`]: a device's gateway token, for itself only, or a service's login): 401
//! without one or with a bad one, 403 for a device acting for another. The discovery view ([`RegistryConfig::discovery_http`]; 8082): `GET /` or
//! `/discovery` with the online and offline devices, last heartbeats and timeouts. Both act on
//! the same state as the bus side.
//!
//! # Why it is built this way
//!
//! - **SQLite, compiled in** (rusqlite `bundled`): one file, transactions, an index for
//!   capabilities, nothing to install. Every change is committed before it is announced, so a
//!   restart loses nothing that anyone was told.
//! - **A retained inventory** (like Zigbee2MQTT's `bridge/devices`): the router and UIs learn
//!   the whole state by subscribing, with no request and no ordering problem at start-up.
//! - **A second MQTT connection for non-envelopes.** Wills are plain `offline`, the inventory
//!   and metrics are documents; the SDK connection handles envelopes only (and dead-letters
//!   anything else), so status topics and retained documents use a plain client with the same
//!   credentials (client id `<service>-<instance>-io`).
//! - **Services only talk MQTT**: this crate does not depend on the broker; it runs against
//!   the embedded broker and Mosquitto alike (both are tested).

mod auth;
mod events;
mod http;
mod io;
mod model;
mod registry;
mod service;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alicia_envelope::{Destination, Envelope};
use alicia_sdk::{Bus, SdkError, ServiceConfig, ServiceHandle};
use serde_json::json;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

pub use auth::{Credential, HttpAuth, Principal};
pub use events::{watch_events, WatchEvent};
pub use model::{check_device_id, Invalid, Refused, Status};

/// The registry's service name (its inbox: `<prefix>/services/device_registry/inbox`).
pub const SERVICE_NAME: &str = "device_registry";
/// Default silence after which a device is marked offline.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(300);
/// Where `alicia up` serves the HTTP API.
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8081));
/// Where `alicia up` serves the discovery view.
pub const DEFAULT_DISCOVERY_HTTP: SocketAddr =
    SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8082));

/// What can stop the registry from starting or working.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The SQLite database failed (open, schema, read, write).
    #[error("registry database: {0}")]
    Database(String),
    /// The bus configuration was refused.
    #[error(transparent)]
    Bus(#[from] SdkError),
    /// An HTTP listener could not be opened.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The broker could not be reached (by [`watch_events`]).
    #[error("cannot connect to the broker at {0}")]
    Connect(String),
    /// The settings cannot work.
    #[error("invalid registry configuration: {0}")]
    Config(String),
}

/// Settings of the registry.
#[derive(Clone)]
pub struct RegistryConfig {
    /// The bus connection (broker, credentials, prefix). Its `name` overrides
    /// [`SERVICE_NAME`].
    pub service: ServiceConfig,
    /// The SQLite file (created with its directory if missing).
    pub db: PathBuf,
    /// Silence after which a device is marked offline (see the crate documentation).
    pub heartbeat_timeout: Duration,
    /// The HTTP API's address (port 0: any free port; `None`: no HTTP API).
    pub http: Option<SocketAddr>,
    /// The discovery view's address (port 0: any free port; `None`: no view).
    pub discovery_http: Option<SocketAddr>,
    /// Checks the credentials of HTTP writes (see [`HttpAuth`]); `None`, the default, refuses
    /// every write with 401.
    pub http_auth: Option<HttpAuth>,
}

impl RegistryConfig {
    /// Defaults: 300 s timeout, no HTTP servers.
    pub fn new(service: ServiceConfig, db: impl Into<PathBuf>) -> Self {
        RegistryConfig {
            service,
            db: db.into(),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            http: None,
            discovery_http: None,
            http_auth: None,
        }
    }
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("service", &self.service)
            .field("db", &self.db)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("http", &self.http)
            .field("discovery_http", &self.discovery_http)
            .field("http_auth", &self.http_auth.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// The running registry.
pub struct RegistryHandle {
    service: ServiceHandle,
    http: Option<SocketAddr>,
    discovery_http: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    io: alicia_sdk::Link,
    publisher: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl RegistryHandle {
    /// Waits until the service and its document connection are connected and subscribed, at
    /// most `timeout` (a registration published before that could reach no subscriber).
    pub async fn wait_online(&self, timeout: Duration) -> Result<(), SdkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.bus().wait_online(timeout).await?;
        self.io.wait_online(deadline.saturating_duration_since(tokio::time::Instant::now())).await
    }

    /// Where the HTTP API listens (the bound address, also for port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Where the discovery view listens.
    pub fn discovery_addr(&self) -> Option<SocketAddr> {
        self.discovery_http
    }

    /// The registry's bus connection (requests, state).
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    /// Stops: HTTP servers end, the last changes and metrics are published, the service goes
    /// `offline` and both connections close. The database is closed with its last write done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.publisher).await;
        self.io.close().await;
        self.service.shutdown().await;
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        tracing::info!("device registry stopped");
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, RegistryError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| RegistryError::Http { addr, source })
}

fn serve(listener: tokio::net::TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    })
}

/// Starts the registry: opens (or creates) the database, binds the HTTP servers, connects to
/// the bus, publishes the inventory and asks devices to register again (rebirth).
pub async fn start(cfg: RegistryConfig) -> Result<RegistryHandle, RegistryError> {
    if cfg.heartbeat_timeout.is_zero() {
        return Err(RegistryError::Config("heartbeat_timeout must be more than zero".into()));
    }
    let name = cfg.service.name.clone().unwrap_or_else(|| SERVICE_NAME.to_string());
    let prefix = cfg.service.topic_prefix.clone();
    alicia_sdk::check_prefix(&prefix)?;
    let db = cfg.db.clone();
    let store = tokio::task::spawn_blocking(move || store::Store::open(&db))
        .await
        .map_err(|e| RegistryError::Database(e.to_string()))??;
    let (reg, rx) = registry::Registry::open(store, &prefix, cfg.heartbeat_timeout)?;
    let reg = Arc::new(reg);

    let api = match cfg.http {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let view = match cfg.discovery_http {
        Some(a) => Some(bind(a).await?),
        None => None,
    };

    let service = alicia_sdk::start(cfg.service.clone(), service::RegistryService::new(name.clone(), reg.clone()))?;
    let instance = service.bus().instance().to_string();
    let (stop, stop_rx) = watch::channel(false);
    let topics = io::RegistryTopics::new(&prefix, &name);
    let republish = Arc::new(Notify::new());
    let (client, io_task) =
        io::connect(&cfg.service, format!("{name}-{instance}-io"), reg.clone(), topics.clone(), republish.clone());
    let publisher = tokio::spawn(io::publisher(
        reg.clone(),
        client.clone(),
        rx,
        topics,
        republish,
        io::Identity { service: name.clone(), instance },
        stop_rx.clone(),
    ));

    let mut tasks = vec![io_task];
    let mut http = None;
    if let Some(l) = api {
        http = l.local_addr().ok();
        tasks.push(serve(l, http::api(reg.clone(), cfg.http_auth.clone()), stop_rx.clone()));
    }
    let mut discovery_http = None;
    if let Some(l) = view {
        discovery_http = l.local_addr().ok();
        tasks.push(serve(l, http::discovery_view(reg.clone()), stop_rx.clone()));
    }

    // The timeout sweep.
    {
        let reg = reg.clone();
        let mut stop = stop_rx.clone();
        let period = (cfg.heartbeat_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = reg.sweep(std::time::SystemTime::now()) {
                            tracing::error!(error = %e, "heartbeat sweep failed");
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        }));
    }

    // Rebirth, once connected.
    {
        let bus = service.bus().clone();
        let mut stop = stop_rx;
        let topic = format!("{prefix}/system/discovery/rebirth");
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = bus.wait_online(Duration::from_secs(3600)) => match r {
                        Ok(()) => break,
                        Err(SdkError::Closed) => return,
                        Err(_) => continue,
                    },
                    _ = stop.changed() => return,
                }
            }
            let data = json!({ "request": "register", "reason": "registry started", "registry": bus.name() });
            let envelope = Envelope::event(bus.name(), Destination::Broadcast, data);
            match bus.send_to(&topic, &envelope, None).await {
                Ok(()) => tracing::info!(%topic, "asked devices to register again"),
                Err(e) => tracing::warn!(error = %e, "cannot publish the rebirth request"),
            }
        }));
    }

    tracing::info!(service = %name, db = %cfg.db.display(), ?http, ?discovery_http, "device registry started");
    Ok(RegistryHandle { service, http, discovery_http, stop, io: client, publisher, tasks })
}
