//! The HTTP API (the seed's, on 8081 under `alicia up`) and the discovery view (8082).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::model::Device;
use crate::registry::{Outcome, RegisterError, Registry};

type Reg = State<Arc<Registry>>;

fn error(status: StatusCode, error: &str, reason: impl Into<String>) -> Response {
    (status, Json(json!({ "error": error, "reason": reason.into() }))).into_response()
}

fn list(devices: &[Device]) -> Value {
    let devices: Vec<Value> = devices.iter().map(Device::to_json).collect();
    json!({ "devices": devices, "count": devices.len() })
}

async fn register(State(reg): Reg, body: Bytes) -> Response {
    if body.iter().all(u8::is_ascii_whitespace) {
        return error(StatusCode::BAD_REQUEST, "invalid_json", "the body is empty: send the registration as JSON");
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {e}")),
    };
    match reg.register(value, "HTTP POST /devices/register") {
        Ok((outcome, device)) => {
            let status = match outcome {
                Outcome::Registered => StatusCode::CREATED,
                Outcome::Updated => StatusCode::OK,
            };
            (status, Json(json!({ "status": outcome.as_str(), "device_id": device.reg.device_id }))).into_response()
        }
        Err(RegisterError::Invalid(e)) => {
            error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_registration", e.to_string())
        }
        Err(RegisterError::Registry(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn remove(State(reg): Reg, Path(id): Path<String>) -> Response {
    match reg.unregister(&id, "unregistered via HTTP DELETE") {
        Ok(Some(_)) => Json(json!({ "status": "removed", "device_id": id })).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", reg.not_found_reason(&id)),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn all(State(reg): Reg) -> Json<Value> {
    Json(list(&reg.list()))
}

async fn one(State(reg): Reg, Path(id): Path<String>) -> Response {
    match reg.get(&id) {
        Some(d) => Json(d.to_json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", reg.not_found_reason(&id)),
    }
}

async fn by_capability(State(reg): Reg, Path(capability): Path<String>) -> Response {
    match reg.find(&capability) {
        Ok(devices) => {
            let mut answer = list(&devices);
            answer["capability"] = json!(capability);
            Json(answer).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

async fn no_route(uri: Uri) -> Response {
    error(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {}", uri.path()))
}

/// `POST /devices/register`, `DELETE /devices/{id}`, `GET /devices`,
/// `GET /devices/capability/{capability}`, `GET /devices/{id}`.
pub(crate) fn api(reg: Arc<Registry>) -> Router {
    Router::new()
        .route("/devices/register", post(register))
        .route("/devices", get(all))
        .route("/devices/capability/{capability}", get(by_capability))
        .route("/devices/{id}", get(one).merge(delete(remove)))
        .fallback(no_route)
        .with_state(reg)
}

async fn discovery(State(reg): Reg) -> Json<Value> {
    Json(reg.discovery())
}

/// `GET /` and `GET /discovery`: online and offline devices, last heartbeats, timeouts.
pub(crate) fn discovery_view(reg: Arc<Registry>) -> Router {
    Router::new().route("/", get(discovery)).route("/discovery", get(discovery)).fallback(no_route).with_state(reg)
}
