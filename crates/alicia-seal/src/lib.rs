//! Alicia's message cryptography, with no network stack: what both the security gateway (an
//! axum server) and the service SDK (an MQTT client) need, and nothing more.
//!
//! The gateway encrypts and decrypts for devices over HTTP; services sign and encrypt the
//! envelopes they put on the bus. Both must agree bit for bit on the ciphertext format and on
//! the bytes a signature covers, so the code lives once, here, rather than in the gateway
//! (which would drag axum into every service) or in the SDK.
//!
//! - [`crypto`] — AES-256-GCM with a rotating [`KeyRing`] (`keys/enc-<N>.key`);
//! - [`signing`] — Ed25519 signatures over a canonical form of a JSON value.
//!
//! Cryptography is ring's, the same library rustls uses in the broker; no other crypto stack
//! is built.
//!
//! # Key files and their distribution
//!
//! `alicia init` writes everything into the Alicia home (mode 0600 for secrets, directories
//! 0700):
//!
//! | file | what | who needs it |
//! |------|------|--------------|
//! | `keys/enc-<N>.key` | AES-256-GCM keys, 64 hex digits; the highest N encrypts | every service that reads or writes encrypted payloads, and the gateway |
//! | `keys/signing/<service>.key` | the service's Ed25519 private key (PKCS#8 PEM, 0600) | that service only |
//! | `keys/signing/<service>.pub` | its public key (SubjectPublicKeyInfo PEM) | everyone who checks its signatures |
//!
//! Services on the machine that ran `init` read these files directly (`alicia_sdk`'s
//! `EnvelopeSecurity::from_home`). A service on another machine gets a copy of its own private
//! key, the `.pub` files of the services it trusts, and (if it handles encrypted payloads) the
//! `enc-*.key` files, over a channel the operator trusts (scp, a configuration management
//! secret): these files are the trust, and no key is ever sent over the bus. The key id of a
//! signature (`security.key_id`) is the signer's name, i.e. the file stem. Rotating encryption
//! keys ([`KeyRing::rotate`]) means copying the new `enc-<N>.key` to the same places before
//! the first message under it is sent; old keys keep decrypting until retired.

pub mod crypto;
pub mod signing;

pub use crypto::{CryptoError, KeyRing, Sealed};
pub use signing::{canonical_bytes, SignatureError, SigningKey, VerifyingKey};

/// Decodes hex digits (either case); `None` if the text is not an even number of them.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    s.as_bytes().chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok()).collect()
}
