//! Short-lived JSON Web Tokens (RFC 7519) signed with HMAC-SHA256 (`HS256`, RFC 7515).
//!
//! The secret is the hex-decoded content of `<home>/keys/jwt.key`, which `alicia init` writes
//! with 64 random bytes and mode 0600; there is no built-in secret. A token's subject (`sub`) is
//! the device id, `iss` and `aud` are fixed per deployment (defaults [`DEFAULT_ISSUER`] and
//! [`DEFAULT_AUDIENCE`]), and it lives [`DEFAULT_LIFETIME`] unless configured otherwise.
//!
//! HS256 is implemented here with `ring::hmac` and base64url (no padding) rather than with the
//! `jsonwebtoken` crate, whose current releases need either aws-lc or the RustCrypto stack;
//! ring is already built for rustls. Only `{"alg":"HS256","typ":"JWT"}` headers are accepted
//! (no `alg: none`, no algorithm confusion); the MAC is checked in constant time before the
//! claims are parsed. The implementation is checked against the HS256 example of RFC 7515 A.1.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Issuer written to and required in tokens unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "alicia-gateway";
/// Audience written to and required in tokens unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "alicia-broker";
/// Token lifetime unless configured otherwise: 15 minutes.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
/// Smallest accepted secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The claims of an Alicia token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the device id (the Common Name of its certificate).
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token or a secret was refused. The text never contains the token or the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm is not HS256")]
    Algorithm,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token issuer is not {0:?}")]
    Issuer(String),
    #[error("token audience is not {0:?}")]
    Audience(String),
    #[error("user name does not match the token subject")]
    Subject,
    #[error("signing key: {0}")]
    Key(String),
}

/// Issues and verifies tokens with one secret.
pub struct TokenIssuer {
    key: hmac::Key,
    issuer: String,
    audience: String,
    lifetime: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer with the given secret (at least [`MIN_SECRET_LEN`] bytes) and the defaults.
    pub fn new(secret: &[u8]) -> Result<Self, TokenError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(TokenError::Key(format!("the secret must have at least {MIN_SECRET_LEN} bytes")));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            issuer: DEFAULT_ISSUER.to_string(),
            audience: DEFAULT_AUDIENCE.to_string(),
            lifetime: DEFAULT_LIFETIME,
        })
    }

    /// Loads the secret from a key file of hex digits (as `alicia init` writes
    /// `keys/jwt.key`). Surrounding whitespace is ignored.
    pub fn from_key_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenError::Key(format!("cannot read {}: {e}", path.display())))?;
        let secret =
            crate::decode_hex(text.trim()).ok_or_else(|| TokenError::Key(format!("{} is not hex", path.display())))?;
        Self::new(&secret)
    }

    /// Sets the issuer written and required.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Sets the audience written and required.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Sets the lifetime of issued tokens.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Lifetime of issued tokens.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Issues a token for `device_id`, valid from now for the configured lifetime.
    pub fn issue(&self, device_id: &str) -> String {
        self.issue_at(device_id, now())
    }

    /// Issues a token as if the time were `now` (seconds since the epoch).
    pub fn issue_at(&self, device_id: &str, now: u64) -> String {
        let claims = Claims {
            sub: device_id.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.lifetime.as_secs(),
        };
        let claims = serde_json::to_vec(&claims).expect("claims serialise");
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(claims));
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Verifies a token now: signature, algorithm, `iss`, `aud`, `exp` and `nbf`.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, now())
    }

    /// Verifies a token as if the time were `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("expected three dot-separated parts"));
        };
        let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed("header is not base64url"))?;
        let header: serde_json::Value =
            serde_json::from_slice(&header).map_err(|_| TokenError::Malformed("header is not JSON"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let (signing_input, _) = token.rsplit_once('.').expect("three parts");
        hmac::verify(&self.key, signing_input.as_bytes(), &sig).map_err(|_| TokenError::Signature)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed("payload is not base64url"))?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed("claims are missing or mistyped"))?;
        if claims.iss != self.issuer {
            return Err(TokenError::Issuer(self.issuer.clone()));
        }
        if claims.aud != self.audience {
            return Err(TokenError::Audience(self.audience.clone()));
        }
        if now >= claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if now.saturating_add(LEEWAY_SECS) < claims.nbf {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// The broker's check for a client that logs in with a token: the MQTT password is the
    /// JWT and the user name must equal its subject. Fits
    /// `alicia_broker::security::Security::authenticate` (map the error to CONNACK 0x86,
    /// bad user name or password, with the error text as the reason).
    pub fn verify_password_jwt(&self, username: &str, password: &[u8]) -> Result<Claims, TokenError> {
        let token = std::str::from_utf8(password).map_err(|_| TokenError::Malformed("password is not UTF-8"))?;
        let claims = self.verify(token)?;
        if claims.sub != username {
            return Err(TokenError::Subject);
        }
        Ok(claims)
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7515 appendix A.1: a JWS with HS256. Its claims are not Alicia's, so only the MAC
    /// is checked here, with the same code path as `verify_at`.
    #[test]
    fn rfc7515_a1_vector() {
        let k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        let key = URL_SAFE_NO_PAD.decode(k).unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9\
                     .eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ\
                     .dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let issuer = TokenIssuer::new(&key).unwrap();
        // The MAC verifies; the claims then fail Alicia's schema (no `sub`), not the signature.
        assert_eq!(issuer.verify_at(token, 0), Err(TokenError::Malformed("claims are missing or mistyped")));
        let mut bad = token.to_string();
        bad.replace_range(bad.len() - 2.., "kA");
        assert_eq!(issuer.verify_at(&bad, 0), Err(TokenError::Signature));
    }
}
