//! The gateway's HTTP API (axum).
//!
//! - `POST /auth/challenge` — `{"challenge": C, "expires_in": 60}`: a single-use challenge for
//!   the body form of `/auth/device`.
//! - `POST /auth/device` — a device proves itself with its certificate and gets a token:
//!   `{"token": JWT, "expires_in": seconds}`, or 401 `{"error": "unauthorized", "message": reason}` (also when there is
//!   neither a certificate from the TLS layer nor a body: [`NO_CERTIFICATE`]). The certificate comes
//!   from the TLS layer when the listener put a [`PeerCertificates`] extension on the request
//!   (the mTLS listener on 8443 does; the handshake proved the key), otherwise from the body
//!   `{"certificate": PEM, "challenge": C, "signature": S}` where `S` is the standard base64 of
//!   the certificate key's signature over the ASCII bytes `alicia-device-auth:` followed by `C`
//!   (see [`crate::device_auth::verify_proof`] for the algorithms). A certificate is public, so
//!   without that signature the body form would hand a token to anyone who has seen one;
//!   [`Gateway::accept_certificates_without_proof`] turns the requirement off, for tests and
//!   closed networks only.
//! - `POST /encrypt` — `{"plaintext": base64}` → `{"key_id": "enc-N", "ciphertext": base64}`.
//! - `POST /decrypt` — `{"key_id", "ciphertext"}` → `{"plaintext": base64}`; tampered, unknown
//!   or retired → 400 `{"error": "decryption_failed", "message": reason}`.
//!
//! Every error answer has the shape of [`alicia_sdk::ApiError`], the one every Alicia HTTP API
//! uses: `{"error": code, "message": text}` (`unauthorized`, `invalid_request`,
//! `decryption_failed`, `too_many_requests`, `internal`).
//!
//! `/encrypt` and `/decrypt` need `Authorization: Bearer <token>` (a token from
//! `/auth/device`): otherwise anyone who reaches the port could decrypt the bus's secrets.
//!
//! Every request counts against its client's budget of `max_requests_per_minute` (by peer IP,
//! fixed one-minute windows; `gateway.max_requests_per_minute` in `alicia.yaml`, default
//! [`DEFAULT_MAX_REQUESTS_PER_MINUTE`], one budget across the HTTP and HTTPS listeners of one
//! [`Gateway`]); over it the answer is 429 with `Retry-After` in seconds. The
//! peer address comes from axum's `ConnectInfo<SocketAddr>`, which [`serve`] provides; a
//! listener of its own must provide it too (requests without it share one budget).
//!

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use parking_lot::{Mutex, RwLock};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::{json, Value};

use alicia_sdk::{ApiError, ApiResult};

use crate::crypto::{KeyRing, Sealed};
use crate::device_auth::{DeviceAuthority, DeviceIdentity};
use crate::tokens::TokenIssuer;

/// Requests per client per minute unless configured otherwise.
pub const DEFAULT_MAX_REQUESTS_PER_MINUTE: u32 = 60;

/// The client certificate chain a TLS listener verified (end entity first). The mTLS
/// listener inserts it into each request's extensions; `/auth/device` then checks it again
/// (dates, revocation) and needs no body.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Vec<CertificateDer<'static>>);

/// What the handlers share.
pub struct Gateway {
    /// Device certificate checks.
    pub devices: DeviceAuthority,
    /// Token issuing and checks.
    pub tokens: TokenIssuer,
    /// Encryption keys; take the write lock to rotate or retire.
    pub keys: RwLock<KeyRing>,
    limiter: RateLimiter,
    challenges: Challenges,
    require_proof: bool,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("tokens", &self.tokens).finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway allowing each client `max_requests_per_minute` requests.
    pub fn new(devices: DeviceAuthority, tokens: TokenIssuer, keys: KeyRing, max_requests_per_minute: u32) -> Self {
        Self {
            devices,
            tokens,
            keys: RwLock::new(keys),
            limiter: RateLimiter::new(max_requests_per_minute),
            challenges: Challenges::new(),
            require_proof: true,
        }
    }

    /// Lets the body form of `/auth/device` succeed with a certificate alone, without a signed
    /// challenge. Anyone who has seen a device's certificate can then get its tokens.
    pub fn accept_certificates_without_proof(mut self) -> Self {
        self.require_proof = false;
        self
    }
}

/// The 401 reason when a request has neither a certificate from the TLS layer nor a body.
pub const NO_CERTIFICATE: &str = "no client certificate: present the device certificate in the TLS handshake \
     (HTTPS port), or send {\"certificate\", \"challenge\", \"signature\"}";

/// The prefix of the message a device signs to answer a challenge.
pub const CHALLENGE_PREFIX: &str = "alicia-device-auth:";
/// How long a challenge may be answered.
pub const CHALLENGE_TTL_SECS: u64 = 60;

/// Stateless challenges (time, random bytes and a MAC under a per-process key), remembered
/// once answered so each is used at most once.
struct Challenges {
    key: hmac::Key,
    rng: SystemRandom,
    used: Mutex<HashMap<String, u64>>,
}

impl Challenges {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system random number generator");
        Self { key, rng, used: Mutex::new(HashMap::new()) }
    }

    fn issue(&self) -> Option<String> {
        let mut buf = unix_now().to_be_bytes().to_vec();
        let mut nonce = [0u8; 16];
        self.rng.fill(&mut nonce).ok()?;
        buf.extend_from_slice(&nonce);
        let tag = hmac::sign(&self.key, &buf);
        buf.extend_from_slice(tag.as_ref());
        Some(URL_SAFE_NO_PAD.encode(buf))
    }

    /// Accepts a challenge this gateway issued, not expired, not used before.
    fn redeem(&self, challenge: &str) -> Result<(), &'static str> {
        let raw = URL_SAFE_NO_PAD.decode(challenge).map_err(|_| "challenge is malformed")?;
        if raw.len() != 8 + 16 + 32 {
            return Err("challenge is malformed");
        }
        hmac::verify(&self.key, &raw[..24], &raw[24..]).map_err(|_| "challenge was not issued by this gateway")?;
        let issued = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let now = unix_now();
        if now >= issued + CHALLENGE_TTL_SECS {
            return Err("challenge has expired");
        }
        let mut used = self.used.lock();
        used.retain(|_, expires| *expires > now);
        if used.insert(challenge.to_string(), issued + CHALLENGE_TTL_SECS).is_some() {
            return Err("challenge was already used");
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The router, with rate limiting. Serve it with `ConnectInfo<SocketAddr>` (see [`serve`]).
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/auth/challenge", post(auth_challenge))
        .route("/auth/device", post(auth_device))
        .route("/encrypt", post(encrypt))
        .route("/decrypt", post(decrypt))
        .layer(axum::middleware::from_fn_with_state(gateway.clone(), rate_limit))
        .with_state(gateway)
}

/// Serves the router on `listener` (plain HTTP) until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, gateway: Arc<Gateway>) -> std::io::Result<()> {
    axum::serve(listener, router(gateway).into_make_service_with_connect_info::<SocketAddr>()).await
}

#[derive(Deserialize)]
struct CertificateBody {
    certificate: String,
    challenge: Option<String>,
    signature: Option<String>,
}

async fn auth_challenge(State(gw): State<Arc<Gateway>>) -> ApiResult<Json<Value>> {
    match gw.challenges.issue() {
        Some(c) => Ok(Json(json!({ "challenge": c, "expires_in": CHALLENGE_TTL_SECS }))),
        None => Err(ApiError::internal("the system random number generator failed")),
    }
}

fn verify_body(gw: &Gateway, b: &CertificateBody) -> Result<DeviceIdentity, String> {
    let (challenge, signature) = match (&b.challenge, &b.signature) {
        (Some(c), Some(s)) => (c, s),
        _ if !gw.require_proof => return gw.devices.verify_pem(&b.certificate).map_err(|e| e.reason()),
        _ => return Err("proof of possession required: \"challenge\" and \"signature\"".into()),
    };
    let signature = STANDARD.decode(signature).map_err(|_| "signature is not base64".to_string())?;
    // The certificate first, so a wrong, expired or revoked one is named as such.
    gw.devices.verify_pem(&b.certificate).map_err(|e| e.reason())?;
    let message = format!("{CHALLENGE_PREFIX}{challenge}");
    let id =
        gw.devices.verify_pem_with_proof(&b.certificate, message.as_bytes(), &signature).map_err(|e| e.reason())?;
    gw.challenges.redeem(challenge).map_err(str::to_string)?;
    Ok(id)
}

async fn auth_device(
    State(gw): State<Arc<Gateway>>,
    peer: Option<Extension<PeerCertificates>>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let verified = match peer {
        Some(Extension(PeerCertificates(chain))) => gw.devices.verify_chain(&chain).map_err(|e| e.reason()),
        None if body.iter().all(u8::is_ascii_whitespace) => Err(NO_CERTIFICATE.to_string()),
        None => match serde_json::from_slice::<CertificateBody>(&body) {
            Ok(b) => verify_body(&gw, &b),
            Err(_) => {
                return Err(ApiError::bad_request("invalid_request", "expected a JSON body {\"certificate\": PEM}"));
            }
        },
    };
    match verified {
        Ok(id) => Ok(Json(json!({
            "token": gw.tokens.issue(&id.device_id),
            "expires_in": gw.tokens.lifetime().as_secs(),
        }))),
        Err(reason) => Err(ApiError::unauthorized(reason)),
    }
}

/// Checks `Authorization: Bearer <token>`; a 401 otherwise.
fn bearer(gw: &Gateway, headers: &HeaderMap) -> ApiResult<()> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
    gw.tokens.verify(token.trim()).map(|_| ()).map_err(|e| ApiError::unauthorized(e.to_string()))
}

#[derive(Deserialize)]
struct EncryptBody {
    plaintext: String,
}

async fn encrypt(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<Response> {
    bearer(&gw, &headers)?;
    let Ok(b) = serde_json::from_slice::<EncryptBody>(&body) else {
        return Err(ApiError::bad_request("invalid_request", "expected a JSON body {\"plaintext\": base64}"));
    };
    let Ok(plain) = STANDARD.decode(b.plaintext.as_bytes()) else {
        return Err(ApiError::bad_request("invalid_request", "plaintext is not base64").with_field("plaintext"));
    };
    let sealed = gw.keys.read().encrypt(&plain);
    match sealed {
        Ok(s) => Ok(Json(s).into_response()),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

async fn decrypt(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    bearer(&gw, &headers)?;
    let Ok(sealed) = serde_json::from_slice::<Sealed>(&body) else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "expected a JSON body {\"key_id\": ..., \"ciphertext\": base64}",
        ));
    };
    let plain = gw.keys.read().decrypt(&sealed);
    match plain {
        Ok(p) => Ok(Json(json!({ "plaintext": STANDARD.encode(p) }))),
        Err(e) => Err(ApiError::bad_request("decryption_failed", e.to_string())),
    }
}

/// Fixed one-minute windows per client IP.
struct RateLimiter {
    max: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RateLimiter {
    fn new(max: u32) -> Self {
        Self { max, window: Duration::from_secs(60), clients: Mutex::new(HashMap::new()) }
    }

    /// `Ok` if `ip` may make one more request now, else the seconds until it may.
    fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let mut clients = self.clients.lock();
        if clients.len() > 10_000 {
            clients.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let (start, count) = clients.entry(ip).or_insert((now, 0));
        if now.duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        if *count >= self.max {
            let left = self.window.saturating_sub(now.duration_since(*start));
            return Err(left.as_secs() + u64::from(left.subsec_nanos() > 0));
        }
        *count += 1;
        Ok(())
    }
}

async fn rate_limit(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(a)| a.ip());
    match gw.limiter.check(ip, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(secs) => ApiError::too_many_requests("too many requests")
            .with_header(header::RETRY_AFTER, HeaderValue::from(secs.max(1)))
            .into_response(),
    }
}
