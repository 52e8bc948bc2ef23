//! The security gateway of Alicia (issue 4), as a library the `alicia` binary wires in.
//!
//! Devices on the home network prove who they are with a client certificate issued by the
//! home's CA and get a short-lived token they use as their MQTT password; services encrypt and
//! sign what they put on the bus. All of it lives here, apart from the broker and the binary,
//! because the same checks are needed in several places (the HTTP and HTTPS listeners, the
//! broker's authentication hook, the service SDK) and must agree, and because none of it may
//! depend on a secret in the code: every key is read from the files `alicia init` writes.
//!
//! - [`tokens`] — HS256 JWTs (secret from `keys/jwt.key`), and the broker's password check;
//! - [`crypto`] — AES-256-GCM with a rotating [`crypto::KeyRing`] (`keys/enc-<N>.key`);
//! - [`signing`] — Ed25519 signatures over a canonical form of a JSON value;
//! - [`device_auth`] — device certificate checks against the CA and its CRL;
//! - [`http`] — the axum router: `POST /auth/device`, `/encrypt`, `/decrypt`, rate limited.
//!
//! Cryptography is ring's (through rustls for certificates); no other crypto stack is built.

pub mod crypto;
pub mod device_auth;
pub mod http;
pub mod signing;
pub mod tokens;

pub use crypto::{KeyRing, Sealed};
pub use device_auth::{DeviceAuthError, DeviceAuthority, DeviceIdentity};
pub use signing::{SigningKey, VerifyingKey};
pub use tokens::{Claims, TokenError, TokenIssuer};

/// Decodes hex digits (either case); `None` if the text is not an even number of them.
pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    s.as_bytes().chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok()).collect()
}
