//! Ed25519 signatures over JSON values (`ring::signature`), for `security.signature` in
//! envelopes. Works on `serde_json::Value` so the envelope crate and the SDK can call it
//! without this crate knowing the envelope types.
//!
//! # Canonical form
//! The signed bytes are the UTF-8 text of the value with:
//! - `security.signature` removed from the top-level object, and then `security` itself removed
//!   if that left it an empty object (so signing an envelope that had no `security` verifies);
//! - object keys sorted by their UTF-8 bytes, at every depth; array order kept;
//! - no whitespace between tokens;
//! - strings and keys escaped as `serde_json` writes them (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`,
//!   `\f`, other control characters as `\u00XX`, everything else as literal UTF-8);
//! - numbers as `serde_json` prints them (integers in decimal, floats in shortest round-trip
//!   form).
//!
//! Every other field, `security.encryption` and `security.key_id` included, is covered.
//!
//! # Signature and key files
//! The signature is standard base64 (with padding) of the 64 signature bytes. The private key is
//! a PKCS#8 document in PEM (`-----BEGIN PRIVATE KEY-----`, written mode 0600); the public key is
//! a SubjectPublicKeyInfo in PEM (`-----BEGIN PUBLIC KEY-----`), both as OpenSSL reads them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use serde_json::Value;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// Why signing or verifying failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("message has no security.signature")]
    Missing,
    #[error("security.signature is not base64 of 64 bytes")]
    Malformed,
    #[error("signature does not match the message (altered, or signed by another key)")]
    Mismatch,
    #[error("a signed message must be a JSON object")]
    NotAnObject,
    #[error("key: {0}")]
    Key(String),
}

/// The bytes that are signed for `value` (see the module documentation).
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        Value::Object(map) => {
            let mut map = map.clone();
            if let Some(Value::Object(sec)) = map.get_mut("security") {
                sec.remove("signature");
                if sec.is_empty() {
                    map.remove("security");
                }
            }
            write_canonical(&Value::Object(map), &mut out);
        }
        other => write_canonical(other, &mut out),
    }
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(serde_json::to_string(k).expect("string").as_bytes());
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(serde_json::to_string(scalar).expect("scalar").as_bytes()),
    }
}

/// A private signing key.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("public", &self.verifying_key()).finish()
    }
}

impl SigningKey {
    /// Generates a key pair, writes the private key to `private` (mode 0600, refusing to
    /// overwrite) and the public key to `public`.
    pub fn generate(private: &Path, public: &Path) -> Result<Self, SignatureError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| SignatureError::Key("the system random number generator failed".into()))?;
        let key = Self::from_pkcs8(pkcs8.as_ref())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(private)
            .map_err(|e| SignatureError::Key(format!("cannot write {}: {e}", private.display())))?;
        f.write_all(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
            .map_err(|e| SignatureError::Key(format!("cannot write {}: {e}", private.display())))?;
        key.verifying_key()
            .write(public)
            .map_err(|e| SignatureError::Key(format!("cannot write {}: {e}", public.display())))?;
        Ok(key)
    }

    /// A key from a PKCS#8 document (v1 as OpenSSL writes, or v2 as ring writes).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, SignatureError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| SignatureError::Key(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        Ok(Self { pair })
    }

    /// Loads a PEM PKCS#8 private key file.
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        let der = PrivatePkcs8KeyDer::from_pem_file(path)
            .map_err(|e| SignatureError::Key(format!("cannot read {}: {e}", path.display())))?;
        Self::from_pkcs8(der.secret_pkcs8_der())
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey { raw }
    }

    /// The signature (base64) of `value`'s canonical form.
    pub fn sign(&self, value: &Value) -> String {
        STANDARD.encode(self.pair.sign(&canonical_bytes(value)).as_ref())
    }

    /// Signs `message` (a JSON object) and stores the signature in `security.signature`,
    /// creating `security` if needed. Any earlier signature is replaced.
    pub fn sign_in_place(&self, message: &mut Value) -> Result<(), SignatureError> {
        let sig = self.sign(message);
        let obj = message.as_object_mut().ok_or(SignatureError::NotAnObject)?;
        let sec = obj.entry("security").or_insert_with(|| Value::Object(Default::default()));
        let sec = sec.as_object_mut().ok_or(SignatureError::NotAnObject)?;
        sec.insert("signature".into(), Value::String(sig));
        Ok(())
    }
}

/// A public key that checks signatures.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    raw: [u8; 32],
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", STANDARD.encode(self.raw))
    }
}

impl VerifyingKey {
    /// The 32 raw Ed25519 public key bytes.
    pub fn from_raw(raw: [u8; 32]) -> Self {
        Self { raw }
    }

    /// Loads a PEM SubjectPublicKeyInfo file.
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        let der = SubjectPublicKeyInfoDer::from_pem_file(path)
            .map_err(|e| SignatureError::Key(format!("cannot read {}: {e}", path.display())))?;
        let raw = der
            .as_ref()
            .strip_prefix(&SPKI_PREFIX[..])
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or_else(|| SignatureError::Key(format!("{} is not an Ed25519 public key", path.display())))?;
        Ok(Self { raw })
    }

    /// Writes the key as a PEM SubjectPublicKeyInfo.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        std::fs::write(path, pem("PUBLIC KEY", &der))
    }

    /// Checks a base64 `signature` over `value`'s canonical form.
    pub fn verify_signature(&self, value: &Value, signature: &str) -> Result<(), SignatureError> {
        let sig = STANDARD.decode(signature).map_err(|_| SignatureError::Malformed)?;
        if sig.len() != 64 {
            return Err(SignatureError::Malformed);
        }
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(&canonical_bytes(value), &sig)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// Checks the `security.signature` of `message`.
    pub fn verify(&self, message: &Value) -> Result<(), SignatureError> {
        let sig = message
            .get("security")
            .and_then(|s| s.get("signature"))
            .and_then(Value::as_str)
            .ok_or(SignatureError::Missing)?;
        self.verify_signature(message, sig)
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form() {
        let v = json!({"b": [1, 2.5, "x\"y"], "a": {"z": null, "é": true, "A": false}, "security": {"signature": "s"}});
        assert_eq!(
            String::from_utf8(canonical_bytes(&v)).unwrap(),
            r#"{"a":{"A":false,"z":null,"é":true},"b":[1,2.5,"x\"y"]}"#
        );
        let v = json!({"security": {"signature": "s", "key_id": "enc-1"}});
        assert_eq!(canonical_bytes(&v), br#"{"security":{"key_id":"enc-1"}}"#);
    }
}
