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
//! - [`crypto`] — AES-256-GCM with a rotating [`crypto::KeyRing`] (`keys/enc-<N>.key`), and
//!   [`signing`] — Ed25519 signatures over a canonical form of a JSON value: both re-exported
//!   from `alicia-seal`, which the service SDK shares without depending on this crate;
//! - [`device_auth`] — device certificate checks against the CA and its CRL;
//! - [`http`] — the axum router: `POST /auth/device`, `/encrypt`, `/decrypt`, rate limited;
//! - [`tls`] — the HTTPS listener (8443) that takes device certificates from the TLS handshake.
//!
//! Cryptography is ring's (through rustls for certificates); no other crypto stack is built.

pub mod device_auth;
pub mod http;
pub mod tls;
pub mod tokens;

pub use alicia_seal::{crypto, signing};

pub use crypto::{KeyRing, Sealed};
pub use device_auth::{DeviceAuthError, DeviceAuthority, DeviceIdentity};
pub use signing::{SigningKey, VerifyingKey};
pub use tokens::{Claims, TokenError, TokenIssuer};

pub(crate) use alicia_seal::decode_hex;
