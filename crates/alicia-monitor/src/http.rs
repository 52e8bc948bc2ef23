//! The HTTP side: `/health`, `/ready`, `/metrics`, `/alerts`, `/history`, and the dashboard at
//! `/` (also `/dashboard`). Every handler reads state the monitor loop keeps current; none does
//! I/O, so each answers in well under 50 ms.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use alicia_sdk::{ApiError, ApiResult, LinkState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::core::Shared;
use crate::docker::EngineState;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/alerts", get(alerts))
        .route("/history", get(history))
        .route("/devices", get(devices))
        .route("/", get(dashboard))
        .route("/dashboard", get(dashboard))
        .fallback(no_route)
        .with_state(shared)
}

async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

/// One self-contained page (no external resources, no build step) that polls the JSON
/// endpoints above and draws them: see `dashboard.html`.
pub(crate) const DASHBOARD_HTML: &str = include_str!("dashboard.html");

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            // Everything is inline; nothing may be loaded from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
            ),
        ],
        DASHBOARD_HTML,
    )
        .into_response()
}

fn engine_json(s: &Shared) -> Value {
    serde_json::to_value(&*s.engine.read()).unwrap_or(Value::Null)
}

async fn health(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "uptime_secs": s.started.elapsed().as_secs(),
        "bus": if s.bus.state() == LinkState::Online { "online" } else { "offline" },
        "containers": engine_json(&s),
        "alerts_active": s.active.read().len(),
        "services": s.services.read().iter().filter_map(|(k, v)| v.health.clone().map(|h| (k.clone(), h))).collect::<serde_json::Map<_, _>>(),
    }))
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    let bus_ok = s.bus.state() == LinkState::Online && s.docs_online.load(Ordering::Relaxed);
    let services = s.services.read();
    let missing: Vec<&String> = services.iter().filter(|(_, v)| v.missing && v.expected).map(|(k, _)| k).collect();
    let up: Vec<&String> = services.iter().filter(|(_, v)| !v.missing).map(|(k, _)| k).collect();
    // Services that said why they are not running (their health document), with the fix.
    let unavailable: serde_json::Map<String, Value> = services
        .iter()
        .filter_map(|(k, v)| crate::core::health_unavailable(v.health.as_ref()).map(|m| (k.clone(), json!(m))))
        .collect();
    let engine = s.engine.read().clone();
    let ready = bus_ok && missing.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "bus": { "ok": bus_ok, "required": true },
            "services": { "ok": missing.is_empty(), "required": true, "missing": missing, "up": up, "unavailable": unavailable },
            "containers": {
                "ok": !matches!(engine, EngineState::Unavailable { .. }),
                "required": false,
                "detail": engine_json(&s),
            },
        },
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.render_metrics()).into_response()
}

async fn devices(State(s): State<Arc<Shared>>) -> Json<Value> {
    let devices = s.devices.read().clone();
    Json(json!({ "count": devices.len(), "devices": devices }))
}

async fn alerts(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "active": *s.active.read() }))
}

#[derive(Deserialize)]
struct HistoryQuery {
    /// Only the last `minutes` minutes.
    minutes: Option<u64>,
}

async fn history(
    State(s): State<Arc<Shared>>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    // axum's own rejection is plain text; every Alicia API answers in one JSON shape.
    let Query(q) = q.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()).with_field("minutes"))?;
    let h = s.history.read();
    let interval = s.cfg.read().history_interval_secs.max(1);
    let take = q.minutes.map(|m| (m.saturating_mul(60) / interval).max(1) as usize).unwrap_or(h.len());
    let points: Vec<&Value> = h.iter().skip(h.len().saturating_sub(take)).collect();
    Ok(Json(json!({ "interval_secs": interval, "points": points })))
}
