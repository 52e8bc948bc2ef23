//! Who may change the registry over HTTP.
//!
//! Reading (`GET`) is open: the API listens on loopback by default. Writing (`POST
//! /devices/register`, `DELETE /devices/{id}`) needs a credential in the `Authorization`
//! header: `Bearer <token>` (a device's gateway token) or `Basic <user:password>` (a service's
//! broker login). The registry does not know how to check either (tokens are the gateway's,
//! passwords the broker's): the program that runs it supplies an [`HttpAuth`], which says who
//! the caller is. A device may then register or remove only itself; a service any device.

use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine;

/// A credential as sent.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic <base64(user:password)>`.
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Bearer(_) => f.write_str("Bearer(***)"),
            Credential::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
        }
    }
}

/// Who a checked credential belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A device (a gateway token's subject): it may act only for itself.
    Device(String),
    /// A service or an operator's tool (a broker login allowed to register devices): it may
    /// act for any device.
    Service(String),
}

/// Checks a credential: `Ok(who)`, or `Err(why)` (the text goes into the 401 answer, so it
/// must not reveal more than "wrong password" or "expired token").
pub type HttpAuth = Arc<dyn Fn(&Credential) -> Result<Principal, String> + Send + Sync>;

/// The credential in `headers`, or why there is none that can be read.
pub(crate) fn credential(headers: &HeaderMap) -> Result<Credential, String> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or("this needs a credential: `Authorization: Bearer <gateway token>` or `Basic <user:password>`")?;
    let value = value.to_str().map_err(|_| "the Authorization header is not text")?;
    let (scheme, rest) = value.split_once(' ').ok_or("the Authorization header has no scheme")?;
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Ok(Credential::Bearer(rest.trim().to_string())),
        "basic" => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| "the Basic credential is not base64")?;
            let text = String::from_utf8(raw).map_err(|_| "the Basic credential is not UTF-8")?;
            let (user, password) = text.split_once(':').ok_or("the Basic credential has no `:`")?;
            Ok(Credential::Basic { user: user.to_string(), password: password.to_string() })
        }
        other => Err(format!("unsupported Authorization scheme {other:?} (Bearer or Basic)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_schemes() {
        let mut h = HeaderMap::new();
        assert!(credential(&h).unwrap_err().contains("needs a credential"));
        h.insert("authorization", "Bearer abc.def".parse().unwrap());
        assert_eq!(credential(&h).unwrap(), Credential::Bearer("abc.def".into()));
        h.insert("authorization", "Basic aW5zdGFsbGVyOnMzY3I6ZXQ=".parse().unwrap());
        assert_eq!(credential(&h).unwrap(), Credential::Basic { user: "installer".into(), password: "s3cr:et".into() });
        assert!(!format!("{:?}", credential(&h).unwrap()).contains("s3cr"));
        h.insert("authorization", "Digest x".parse().unwrap());
        assert!(credential(&h).is_err());
    }
}
