//! The HTTP API (the seed's, on 8081 under `alicia up`) and the discovery view (8082).

use std::sync::Arc;

use alicia_sdk::{ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::auth::{credential, HttpAuth, Principal};
use crate::model::Device;
use crate::registry::{Outcome, RegisterError, Registry};

/// What the API handlers share: the registry and who may write.
#[derive(Clone)]
pub(crate) struct Api {
    pub reg: Arc<Registry>,
    /// `None`: writes are refused (nothing can check a credential).
    pub auth: Option<HttpAuth>,
}

type Reg = State<Arc<Registry>>;

/// The caller of a write, checked; a 401 answer otherwise.
fn caller(api: &Api, headers: &HeaderMap) -> ApiResult<Principal> {
    let unauthorized = |why: String| {
        ApiError::unauthorized(why).with_header(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"alicia\", Basic realm=\"alicia\""),
        )
    };
    let Some(auth) = &api.auth else {
        return Err(unauthorized("writes are disabled: this registry has no way to check credentials".into()));
    };
    let cred = credential(headers).map_err(unauthorized)?;
    auth(&cred).map_err(|why| unauthorized(format!("credential refused: {why}")))
}

/// A device may act only for itself.
fn may_act_for(who: &Principal, device_id: &str) -> ApiResult<()> {
    match who {
        Principal::Service(_) => Ok(()),
        Principal::Device(id) if id == device_id => Ok(()),
        Principal::Device(id) => {
            Err(ApiError::forbidden(format!("device {id:?} may register or remove only itself, not {device_id:?}")))
        }
    }
}

fn list(devices: &[Device]) -> Value {
    let devices: Vec<Value> = devices.iter().map(Device::to_json).collect();
    json!({ "devices": devices, "count": devices.len() })
}

async fn register(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let who = caller(&api, &headers)?;
    let reg = &api.reg;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("invalid_json", "the body is empty: send the registration as JSON"));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")))?;
    if let Some(id) = value.get("device_id").and_then(Value::as_str) {
        may_act_for(&who, id)?;
    }
    match reg.register(value, "HTTP POST /devices/register") {
        Ok((outcome, device)) => {
            let status = match outcome {
                Outcome::Registered => StatusCode::CREATED,
                Outcome::Updated => StatusCode::OK,
            };
            Ok((status, Json(json!({ "status": outcome.as_str(), "device_id": device.reg.device_id }))).into_response())
        }
        Err(RegisterError::Invalid(e)) => {
            let mut answer = ApiError::unprocessable("invalid_registration", e.to_string());
            if let Some(first) = e.0.first() {
                // Every problem, and the first one's field for callers that read one.
                answer = answer.with_field(first.field.clone()).with_errors(e.to_json());
            }
            Err(answer)
        }
        Err(RegisterError::Registry(e)) => Err(ApiError::internal(e.to_string())),
    }
}

async fn remove(State(api): State<Api>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    caller(&api, &headers).and_then(|who| may_act_for(&who, &id))?;
    let reg = &api.reg;
    match reg.unregister(&id, "unregistered via HTTP DELETE") {
        Ok(Some(_)) => Ok(Json(json!({ "status": "removed", "device_id": id }))),
        Ok(None) => Err(ApiError::not_found(reg.not_found_reason(&id))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

async fn all(State(reg): Reg) -> Json<Value> {
    Json(list(&reg.list()))
}

async fn one(State(reg): Reg, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    match reg.get(&id) {
        Some(d) => Ok(Json(d.to_json())),
        None => Err(ApiError::not_found(reg.not_found_reason(&id))),
    }
}

async fn by_capability(State(reg): Reg, Path(capability): Path<String>) -> ApiResult<Json<Value>> {
    let devices = reg.find(&capability).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut answer = list(&devices);
    answer["capability"] = json!(capability);
    Ok(Json(answer))
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}

/// `POST /devices/register`, `DELETE /devices/{id}` (both with a credential, see
/// [`crate::auth`]), `GET /devices`, `GET /devices/capability/{capability}`,
/// `GET /devices/{id}`.
pub(crate) fn api(reg: Arc<Registry>, auth: Option<HttpAuth>) -> Router {
    let writes = Router::new()
        .route("/devices/register", post(register))
        .route("/devices/{id}", delete(remove))
        .with_state(Api { reg: reg.clone(), auth });
    let reads = Router::new()
        .route("/devices", get(all))
        .route("/devices/capability/{capability}", get(by_capability))
        .route("/devices/{id}", get(one))
        .with_state(reg);
    writes.merge(reads).fallback(no_route)
}

async fn discovery(State(reg): Reg) -> Json<Value> {
    Json(reg.discovery())
}

/// `GET /` and `GET /discovery`: online and offline devices, last heartbeats, timeouts.
pub(crate) fn discovery_view(reg: Arc<Registry>) -> Router {
    Router::new().route("/", get(discovery)).route("/discovery", get(discovery)).fallback(no_route).with_state(reg)
}
