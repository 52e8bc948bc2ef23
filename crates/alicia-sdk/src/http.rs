//! The error every Alicia HTTP API answers with.
//!
//! One shape for every API (the registry's, the gateway's, the monitor's, and those to come), so
//! a client reads every failure the same way:
//!
//! ```json
//! { "error": "invalid_registration",
//!   "message": "`device_type`: missing (a string is required)",
//!   "field": "device_type",
//!   "errors": [ { "field": "device_type", "reason": "missing (a string is required)" } ] }
//! ```
//!
//! `error` is a stable machine-readable code (`not_found`, `unauthorized`, `invalid_json`, ...),
//! `message` says what happened for people; `field` (the first field at fault) and `errors`
//! (every problem) appear when the request had invalid fields. Handlers return
//! `Result<_, ApiError>` and use `?`, as axum's `anyhow-error-response` example does.

use axum::http::header::{HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// An HTTP error answer (see the module documentation). Boxed: handlers return it in a
/// `Result`, which should stay a pointer wide on the success path.
#[derive(Debug, Clone)]
pub struct ApiError(Box<Inner>);

#[derive(Debug, Clone)]
struct Inner {
    status: StatusCode,
    code: String,
    message: String,
    field: Option<String>,
    errors: Option<Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError(Box::new(Inner {
            status,
            code: code.into(),
            message: message.into(),
            field: None,
            errors: None,
            headers: Vec::new(),
        }))
    }

    /// 400 with `code`.
    pub fn bad_request(code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 with `code`: the request was understood and is wrong.
    pub fn unprocessable(code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 429 `too_many_requests`.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// Names the (first) field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.0.field = Some(field.into());
        self
    }

    /// Every problem, for programs (`[{"field", "reason"}]`).
    pub fn with_errors(mut self, errors: Value) -> Self {
        self.0.errors = Some(errors);
        self
    }

    /// Adds a response header (`WWW-Authenticate`, `Retry-After`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The code.
    pub fn code(&self) -> &str {
        &self.0.code
    }

    /// The body.
    pub fn body(&self) -> Value {
        let e = &self.0;
        let mut body = json!({ "error": e.code, "message": e.message });
        if let Some(f) = &e.field {
            body["field"] = json!(f);
        }
        if let Some(e) = &e.errors {
            body["errors"] = e.clone();
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.0.status.as_u16(), self.0.code, self.0.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0.status, Json(self.body())).into_response();
        for (name, value) in self.0.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shape() {
        let e = ApiError::unprocessable("invalid_registration", "`device_type`: missing")
            .with_field("device_type")
            .with_errors(json!([{"field": "device_type", "reason": "missing"}]));
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.body(),
            json!({"error": "invalid_registration", "message": "`device_type`: missing", "field": "device_type",
                   "errors": [{"field": "device_type", "reason": "missing"}]})
        );
        assert_eq!(
            ApiError::not_found("no device \"x\"").body(),
            json!({"error": "not_found", "message": "no device \"x\""})
        );
        let r = ApiError::unauthorized("no token")
            .with_header(axum::http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            .into_response();
        assert_eq!(
            (r.status(), r.headers()["www-authenticate"].to_str().unwrap()),
            (StatusCode::UNAUTHORIZED, "Bearer")
        );
    }
}
