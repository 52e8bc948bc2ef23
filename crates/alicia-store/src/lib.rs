//! Alicia's data store, the service `data_store`: what happened in the home, kept in embedded
//! SQLite (rusqlite, bundled) under `<home>/data/` and queryable on the bus and over HTTP.
//!
//! # What it keeps
//!
//! | kind (`type`) | from | row |
//! |---------------|------|-----|
//! | `events` | `P/system/registry/events` (kind = the event: `registered`, `offline`, ...), `P/system/actuators/events` (`actuator_confirmed`, `actuator_unconfirmed`, ...), `P/broadcast` envelopes (kind = message type), `P/system/deadletter` (`deadletter`) | time, topic, kind, source, device_id, data |
//! | `telemetry` | `P/sensors/<id>`, the readings `sensor_data` accepted (so only checked values) | time (the reading's, when believable), device_id, capability, value, unit |
//! | `telemetry_rollup` | raw telemetry older than `retention.telemetry_days`, folded into `downsample_secs` buckets | bucket time, width, device_id, capability, unit, count, min, max, mean |
//! | `states` | `P/devices/<id>/state`, when it changed (not only its `updated`) | time, device_id, state |
//! | `voice` | `P/voice/events` (an envelope, or plain JSON): `session_id`, `transcript` (or `text`), `intent` (a name, or `{name}`), `device_id`/`satellite`, and the whole document (timings included) | time, session_id, device_id, transcript, intent, data |
//! | `alerts` | `P/system/alerts` (the monitor's format; `sensor_data`'s and `actuator_control`'s too) | time, alert, severity, state, service, message, data |
//!
//! Retained documents read again (after a reconnect or a restart) are not stored twice: the
//! newest telemetry time per sensor and capability and the last state per device are loaded
//! from the database at start.
//!
//! # Writes, and what a crash loses
//!
//! Records go to one writer thread, which commits them in one transaction per batch: when the
//! batch is `batch_interval_ms` old (counted from its first record) or has `batch_max`
//! records. The database is in WAL mode with `synchronous=FULL`, so a committed batch survives
//! a killed process and a power cut. **A crash loses at most what arrived in the last
//! `batch_interval_ms` (default 1 s)** — the batch being collected — plus what the MQTT
//! connection had received and not yet handed over; messages the broker had not yet delivered
//! are lost only if the store's session is clean (it is: the store reads documents, most of
//! them retained). `tests/python/test_data_store.py` kills `alicia up` with SIGKILL and checks
//! that every alert published more than one interval before the kill is in the database.
//!
//! # Retention and downsampling
//!
//! Every `maintenance_interval_secs` (and at start): raw telemetry older than
//! `retention.telemetry_days` is folded into buckets of `downsample_secs` (min, max, mean,
//! count; merged with a bucket already there) and deleted; rollups older than
//! `retention.telemetry_downsampled_days`, and events, states, voice sessions and alerts older
//! than theirs, are deleted. 0 days keeps forever.
//!
//! # Queries
//!
//! On the bus, requests to the inbox: `{"action": "query", "type": KIND, "from"?, "to"?,
//! "device_id"?, "name"?, "limit"?}` → `{"type", "count", "rows": [...]}` newest first (`from`,
//! `to`: RFC 3339 or Unix seconds; `name`: the capability for telemetry, the kind for events,
//! the alert name, the session id for voice; `limit` at most `max_rows`); `{"action":
//! "stats"}` → rows per kind; `{"action": "maintain"}` runs retention now. Over HTTP (`alicia
//! up`: 127.0.0.1:`http_port`, 8094): `GET /query?type=&from=&to=&device_id=&name=&limit=`,
//! `GET /stats`, `GET /health`. Queries use their own read-only connection: they never wait
//! for a batch.

mod db;
mod ingest;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use alicia_envelope::{Envelope, Timestamp};
use alicia_sdk::{
    Bus, BusService, Context, HandlerResult, Link, LinkEvent, LinkOptions, QoS, ServiceConfig, ServiceError,
    ServiceHandle,
};
use axum::extract::{Query as HttpQuery, State as HttpState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub use db::{Maintenance, Query, Record, KINDS};

/// The service's name on the bus.
pub const SERVICE_NAME: &str = "data_store";

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("data store database: {0}")]
    Database(String),
    #[error("invalid query: {0}")]
    Query(String),
    #[error(transparent)]
    Bus(#[from] alicia_sdk::SdkError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http { addr: SocketAddr, source: std::io::Error },
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub service: ServiceConfig,
    pub settings: alicia_config::DataStoreConfig,
    /// The database file (`alicia up`: `<home>/data/<settings.db>`).
    pub db: PathBuf,
    /// The HTTP API (`None`: none; port 0: any).
    pub http: Option<SocketAddr>,
}

impl StoreConfig {
    pub fn new(service: ServiceConfig, db: impl Into<PathBuf>) -> Self {
        StoreConfig { service, settings: alicia_config::DataStoreConfig::default(), db: db.into(), http: None }
    }
}

enum Msg {
    Record(Record),
    Flush(oneshot::Sender<()>),
    Maintain(oneshot::Sender<Result<Maintenance, StoreError>>),
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    batches: AtomicU64,
    failed: AtomicU64,
}

/// The writer thread: batches, commits, maintains.
fn writer(
    mut conn: rusqlite::Connection,
    rx: std_mpsc::Receiver<Msg>,
    settings: alicia_config::DataStoreConfig,
    counters: Arc<Counters>,
) {
    let interval = Duration::from_millis(settings.batch_interval_ms);
    let mut batch: Vec<Record> = Vec::new();
    let mut first: Option<Instant> = None;
    let flush = |conn: &mut rusqlite::Connection, batch: &mut Vec<Record>, first: &mut Option<Instant>| {
        *first = None;
        if batch.is_empty() {
            return;
        }
        match db::insert(conn, batch) {
            Ok(()) => {
                counters.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                counters.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                counters.failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, records = batch.len(), "a batch could not be written");
            }
        }
        batch.clear();
    };
    loop {
        let msg = match first {
            Some(t) => match rx.recv_timeout(interval.saturating_sub(t.elapsed())) {
                Ok(m) => Some(m),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            },
        };
        match msg {
            None => flush(&mut conn, &mut batch, &mut first),
            Some(Msg::Record(r)) => {
                batch.push(r);
                first.get_or_insert_with(Instant::now);
                if batch.len() >= settings.batch_max || first.is_some_and(|t| t.elapsed() >= interval) {
                    flush(&mut conn, &mut batch, &mut first);
                }
            }
            Some(Msg::Flush(done)) => {
                flush(&mut conn, &mut batch, &mut first);
                let _ = done.send(());
            }
            Some(Msg::Maintain(done)) => {
                flush(&mut conn, &mut batch, &mut first);
                let r = db::maintain(&mut conn, &settings.retention, settings.downsample_secs as f64, ingest::now());
                if let Ok(m) = &r {
                    tracing::info!(downsampled = m.downsampled, deleted = m.deleted, "retention and downsampling");
                }
                let _ = done.send(r);
            }
        }
    }
    flush(&mut conn, &mut batch, &mut first);
}

struct Shared {
    tx: std_mpsc::Sender<Msg>,
    db: PathBuf,
    max_rows: usize,
    counters: Arc<Counters>,
}

impl Shared {
    async fn query(&self, q: Query) -> Result<Value, StoreError> {
        let path = self.db.clone();
        let kind = q.kind.clone();
        let rows = tokio::task::spawn_blocking(move || db::open_reader(&path).and_then(|c| db::query(&c, &q)))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        Ok(json!({ "type": kind, "count": rows.len(), "rows": rows }))
    }

    async fn stats(&self) -> Result<Value, StoreError> {
        let path = self.db.clone();
        let counts = tokio::task::spawn_blocking(move || db::open_reader(&path).and_then(|c| db::counts(&c)))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        let c = &self.counters;
        Ok(json!({
            "rows": counts,
            "written": c.written.load(Ordering::Relaxed),
            "batches": c.batches.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
            "db": self.db,
        }))
    }

    async fn maintain(&self) -> Result<Maintenance, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Maintain(tx)).map_err(|_| StoreError::Database("the writer has stopped".into()))?;
        rx.await.map_err(|_| StoreError::Database("the writer has stopped".into()))?
    }

    /// Reads a query from JSON-ish fields (`type`, `from`, `to`, `device_id`, `name`, `limit`).
    fn parse(&self, get: impl Fn(&str) -> Option<Value>) -> Result<Query, StoreError> {
        let time = |key: &str| -> Result<Option<f64>, StoreError> {
            match get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64()),
                Some(Value::String(s)) => match s.parse::<f64>() {
                    Ok(f) => Ok(Some(f)),
                    Err(_) => s
                        .parse::<Timestamp>()
                        .map(|t| Some(t.unix_timestamp_nanos() as f64 / 1e9))
                        .map_err(|_| StoreError::Query(format!("`{key}`: {s:?} is neither RFC 3339 nor Unix seconds"))),
                },
                Some(other) => Err(StoreError::Query(format!("`{key}`: must be a time, found {other}"))),
            }
        };
        let string = |key: &str| get(key).and_then(|v| v.as_str().map(str::to_string));
        let kind = string("type")
            .ok_or_else(|| StoreError::Query(format!("`type`: missing (one of {})", KINDS.join(", "))))?;
        let limit = match get("limit") {
            None | Some(Value::Null) => self.max_rows,
            Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
                Some(n) if n >= 1 => (n as usize).min(self.max_rows),
                _ => return Err(StoreError::Query(format!("`limit`: must be a whole number >= 1, found {v}"))),
            },
        };
        Ok(Query {
            kind,
            from: time("from")?,
            to: time("to")?,
            device_id: string("device_id"),
            name: string("name"),
            limit,
        })
    }
}

struct Service {
    shared: Arc<Shared>,
}

fn service_error(e: StoreError) -> ServiceError {
    match e {
        StoreError::Query(m) => ServiceError::new("invalid_query", m),
        other => ServiceError::new("unavailable", other.to_string()),
    }
}

impl BusService for Service {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    async fn handle(&self, _ctx: &Context, env: Envelope) -> HandlerResult {
        let data = env.payload.data.clone();
        let s = &self.shared;
        let out = match data.get("action").and_then(Value::as_str) {
            Some("query") => {
                let q = s.parse(|k| data.get(k).cloned()).map_err(service_error)?;
                s.query(q).await.map_err(service_error)?
            }
            Some("stats") => s.stats().await.map_err(service_error)?,
            Some("maintain") => {
                let m = s.maintain().await.map_err(service_error)?;
                json!({ "downsampled": m.downsampled, "deleted": m.deleted })
            }
            other => {
                return Err(ServiceError::new(
                    "unknown_action",
                    format!("action {other:?}: this service answers query, stats and maintain"),
                )
                .into())
            }
        };
        Ok(Some(out))
    }
}

/// Every Alicia HTTP API answers errors in one shape (`alicia_sdk::ApiError`).
fn http_error(status: StatusCode, e: StoreError) -> Response {
    let code = if status == StatusCode::BAD_REQUEST { "invalid_query" } else { "unavailable" };
    alicia_sdk::ApiError::new(status, code, e.to_string()).into_response()
}

fn http_api(shared: Arc<Shared>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/query",
            get(
                |HttpState(s): HttpState<Arc<Shared>>,
                 HttpQuery(params): HttpQuery<std::collections::HashMap<String, String>>| async move {
                    let q = match s.parse(|k| params.get(k).map(|v| Value::String(v.clone()))) {
                        Ok(q) => q,
                        Err(e) => return http_error(StatusCode::BAD_REQUEST, e),
                    };
                    match s.query(q).await {
                        Ok(v) => Json(v).into_response(),
                        Err(e @ StoreError::Query(_)) => http_error(StatusCode::BAD_REQUEST, e),
                        Err(e) => http_error(StatusCode::SERVICE_UNAVAILABLE, e),
                    }
                },
            ),
        )
        .route(
            "/stats",
            get(|HttpState(s): HttpState<Arc<Shared>>| async move {
                match s.stats().await {
                    Ok(v) => Json(v).into_response(),
                    Err(e) => http_error(StatusCode::SERVICE_UNAVAILABLE, e),
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .with_state(shared)
}

/// The running data store.
pub struct StoreHandle {
    service: ServiceHandle,
    shared: Arc<Shared>,
    docs: Link,
    http: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl StoreHandle {
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Commits what is waiting now (tests, shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.shared.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Runs retention and downsampling now.
    pub async fn maintain(&self) -> Result<Maintenance, StoreError> {
        self.shared.maintain().await
    }

    /// Stops reading, commits the last batch, closes the database.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.docs.close().await;
        self.flush().await;
        self.service.shutdown().await;
        drop(self.shared);
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

/// Starts `data_store`: opens (creating) the database, reads the bus, serves queries.
pub async fn start(cfg: StoreConfig) -> Result<StoreHandle, StoreError> {
    let prefix = cfg.service.topic_prefix.clone();
    alicia_sdk::check_prefix(&prefix)?;
    let path = cfg.db.clone();
    let (conn, seen) = tokio::task::spawn_blocking(move || {
        let conn = db::open(&path)?;
        let seen = db::last_seen(&conn)?;
        Ok::<_, StoreError>((conn, seen))
    })
    .await
    .map_err(|e| StoreError::Database(e.to_string()))??;
    let listener = match cfg.http {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| StoreError::Http { addr, source })?)
        }
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let (tx, rx) = std_mpsc::channel();
    let settings = cfg.settings.clone();
    let c = counters.clone();
    let writer = std::thread::Builder::new()
        .name("data_store-writer".into())
        .spawn(move || writer(conn, rx, settings, c))
        .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
    let shared = Arc::new(Shared { tx: tx.clone(), db: cfg.db.clone(), max_rows: cfg.settings.max_rows, counters });
    let service = alicia_sdk::start(cfg.service.clone(), Service { shared: shared.clone() })?;
    let instance = service.bus().instance().to_string();
    let topics = ingest::Topics::new(&prefix);
    let id = format!("{SERVICE_NAME}-{instance}-io");
    let (docs, mut events) =
        Link::connect(&cfg.service, LinkOptions::new(id, topics.filters()).with_label("data_store/io"));
    let mut tasks = Vec::new();
    {
        let mut ingest = ingest::Ingest::default();
        ingest.seed(seen.0, seen.1);
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let LinkEvent::Message(p) = ev {
                    let topic = String::from_utf8_lossy(&p.topic);
                    for r in ingest.records(&topics, &topic, &p.payload, ingest::now()) {
                        if tx.send(Msg::Record(r)).is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    {
        // Maintenance at start and every interval, and the metrics snapshot every 10 s.
        let (shared, docs) = (shared.clone(), docs.clone());
        let every = Duration::from_secs(cfg.settings.maintenance_interval_secs);
        let metrics_topic = format!("{prefix}/system/metrics/{SERVICE_NAME}");
        tasks.push(tokio::spawn(async move {
            let mut maintain = tokio::time::interval(every);
            let mut metrics = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    _ = maintain.tick() => {
                        if let Err(e) = shared.maintain().await {
                            tracing::error!(error = %e, "retention failed");
                        }
                    }
                    _ = metrics.tick() => {
                        let c = &shared.counters;
                        let snapshot = json!({
                            "service": SERVICE_NAME, "instance": instance, "timestamp": Timestamp::now().to_string(),
                            "metrics": [{"name": "alicia_store_records_total", "type": "counter", "help": "Records by result.",
                                "samples": [{"labels": {"result": "written"}, "value": c.written.load(Ordering::Relaxed)},
                                            {"labels": {"result": "failed"}, "value": c.failed.load(Ordering::Relaxed)}]},
                                {"name": "alicia_store_batches_total", "type": "counter", "help": "Committed batches.",
                                "samples": [{"labels": {}, "value": c.batches.load(Ordering::Relaxed)}]}]
                        });
                        if let Err(e) = docs.publish(&metrics_topic, QoS::AtMostOnce, true, snapshot.to_string(), None).await {
                            tracing::debug!(error = %e, "metrics snapshot not published");
                        }
                    }
                }
            }
        }));
    }
    let mut http = None;
    if let Some(l) = listener {
        http = l.local_addr().ok();
        let router = http_api(shared.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(l, router).await;
        }));
    }
    tracing::info!(db = %cfg.db.display(), ?http, batch_ms = cfg.settings.batch_interval_ms, "data store started");
    Ok(StoreHandle { service, shared, docs, http, tasks, writer: Some(writer) })
}
