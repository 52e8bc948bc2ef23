//! Envelope protection: `security.signature` (Ed25519) and `security.encryption` of the
//! payload (AES-256-GCM), with the keys `alicia init` writes (see `alicia_seal` for the key
//! files and how they are distributed).
//!
//! # What a protected envelope looks like
//!
//! ```json
//! { "message_id": "…", "source": "voice_service", "destination": "stt_service", "ttl": 30, …,
//!   "payload": { "data": { "key_id": "enc-1", "ciphertext": "base64…" },
//!                "metadata": { "version": "1.0", "content_type": "application/json", "encoding": "utf-8" } },
//!   "security": { "encryption": "aes-256-gcm", "key_id": "voice_service", "signature": "base64…" },
//!   "routing": { "hops": 0, "max_hops": 10, "route": [] } }
//! ```
//!
//! - **Encryption covers `payload.data` only.** It is replaced by an `alicia_seal::Sealed`
//!   object: the JSON text of the data, sealed with the key ring's newest key, the envelope's
//!   `message_id` bound in as associated data (so a ciphertext cannot be moved into another
//!   envelope). `destination`, `ttl`, `priority`, `routing` and the rest stay readable: the
//!   router routes and expires what it cannot read. `security.encryption` says
//!   `aes-256-gcm`; the encryption key's id is inside `payload.data`.
//! - **The signature covers the whole envelope** in `alicia_seal`'s canonical JSON form
//!   (ciphertext included, so it is sign-after-encrypt), except `security.signature` itself and
//!   `routing`: `routing` is hop-by-hop state the router rewrites on every forward (hops,
//!   route), so covering it would break every routed signature. `security.key_id` names the
//!   signing key and must be the envelope's `source`: a service signs as itself, and a key
//!   trusted for `voice_service` cannot vouch for a message claiming to come from `alarm`.
//!   Devices in other languages sign the normalised form (every defaulted field written out),
//!   which is what the SDK and the router write.
//!
//! # Receiving
//!
//! Before a handler sees an envelope (unless [`EnvelopeSecurity::pass_through_encrypted`], for
//! forwarders, leaves payloads encrypted): a signature by a trusted key that does not match, a
//! signature whose `key_id` is not the `source`, or (with [`EnvelopeSecurity::require_signed`])
//! a missing signature or one by an unknown key, and a payload that cannot be decrypted, send
//! the message to the dead-letter topic with the reason; a request also gets an error
//! response (code `security`). The handler gets the envelope with its plaintext data.
//!
//! # Sending
//!
//! Every envelope the runtime publishes (events, requests, responses, not heartbeats) is
//! encrypted when [`EnvelopeSecurity::encrypt_payloads`] is on and a key ring is loaded, then
//! signed when a signing key is set. An envelope that already carries a signature (forwarded by
//! the router) is left as it is, and one already encrypted, or marked `"encryption": "none"`,
//! is not encrypted (the runtime's `security` error answers are marked so: a requester that
//! failed the checks may not have the keys, and the reason is no secret).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use alicia_envelope::{Envelope, MessageType, Value};
use alicia_seal::{KeyRing, Sealed, SigningKey, VerifyingKey};

use crate::error::SdkError;
use crate::Refusal;

/// The value of `security.encryption` for an encrypted payload.
pub const ENCRYPTION_SCHEME: &str = "aes-256-gcm";

/// The keys and rules a service protects its envelopes with. The default protects nothing
/// and checks only signatures it can (none, with no trusted keys).
#[derive(Clone, Default)]
pub struct EnvelopeSecurity {
    signer: Option<Arc<(String, SigningKey)>>,
    trusted: Arc<HashMap<String, VerifyingKey>>,
    ring: Option<Arc<KeyRing>>,
    require_signed: bool,
    encrypt_payloads: bool,
    pass_through_encrypted: bool,
}

impl std::fmt::Debug for EnvelopeSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut trusted: Vec<&String> = self.trusted.keys().collect();
        trusted.sort();
        f.debug_struct("EnvelopeSecurity")
            .field("signing_key_id", &self.signer.as_ref().map(|s| &s.0))
            .field("trusted", &trusted)
            .field("encryption_keys", &self.ring.as_ref().map(|r| r.key_ids()))
            .field("require_signed", &self.require_signed)
            .field("encrypt_payloads", &self.encrypt_payloads)
            .field("pass_through_encrypted", &self.pass_through_encrypted)
            .finish()
    }
}

fn key_error(e: impl std::fmt::Display) -> SdkError {
    SdkError::Config(format!("envelope security: {e}"))
}

impl EnvelopeSecurity {
    /// What `alicia init` set up in the Alicia home `home` for the service `name`: its signing
    /// key `keys/signing/<name>.key` (if there is one), every public key in `keys/signing/` as
    /// trusted (key id = file stem), and the encryption keys `keys/enc-<N>.key` (if any).
    /// Requiring signatures and encrypting are left off: turn them on with
    /// [`EnvelopeSecurity::require_signed`] and [`EnvelopeSecurity::encrypt_payloads`].
    pub fn from_home(home: &Path, name: &str) -> Result<Self, SdkError> {
        let mut s = Self::default();
        let home = alicia_home::Home::new(home);
        let signing = home.signing_dir();
        let own = home.signing_key(name);
        if own.exists() {
            s = s.with_signing_key(name, SigningKey::load(&own).map_err(key_error)?);
        }
        if signing.is_dir() {
            s = s.trust_dir(&signing)?;
        }
        match KeyRing::load(&home.keys_dir()) {
            Ok(ring) => s = s.with_key_ring(ring),
            Err(alicia_seal::CryptoError::Empty) => {}
            Err(e) => return Err(key_error(e)),
        }
        Ok(s)
    }

    /// Signs outgoing envelopes with `key`; `key_id` (written to `security.key_id`) must be
    /// the service's name, the `source` of what it sends.
    pub fn with_signing_key(mut self, key_id: impl Into<String>, key: SigningKey) -> Self {
        self.signer = Some(Arc::new((key_id.into(), key)));
        self
    }

    /// Trusts `key` for envelopes whose `source` (and `security.key_id`) is `key_id`.
    pub fn trust(mut self, key_id: impl Into<String>, key: VerifyingKey) -> Self {
        Arc::make_mut(&mut self.trusted).insert(key_id.into(), key);
        self
    }

    /// Trusts every `<key id>.pub` file (PEM public key) in `dir`.
    pub fn trust_dir(mut self, dir: &Path) -> Result<Self, SdkError> {
        let entries = std::fs::read_dir(dir).map_err(|e| key_error(format!("{}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry.map_err(|e| key_error(format!("{}: {e}", dir.display())))?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".pub")) else {
                continue;
            };
            let key = VerifyingKey::load(&path).map_err(key_error)?;
            self = self.trust(id.to_string(), key);
        }
        Ok(self)
    }

    /// Decrypts with `ring` (and, with [`EnvelopeSecurity::encrypt_payloads`], encrypts).
    pub fn with_key_ring(mut self, ring: KeyRing) -> Self {
        self.ring = Some(Arc::new(ring));
        self
    }

    /// Refuses (dead-letters) envelopes without a valid signature by a trusted key.
    pub fn require_signed(mut self, on: bool) -> Self {
        self.require_signed = on;
        self
    }

    /// Encrypts the `payload.data` of every envelope sent (needs a key ring).
    pub fn encrypt_payloads(mut self, on: bool) -> Self {
        self.encrypt_payloads = on;
        self
    }

    /// Hands envelopes with an encrypted payload to the handler as they came, not decrypted:
    /// for a forwarder such as the router, which routes on the clear fields and must pass the
    /// ciphertext on untouched (decrypting would forward plaintext, and break the signature).
    /// Signatures are still checked.
    pub fn pass_through_encrypted(mut self, on: bool) -> Self {
        self.pass_through_encrypted = on;
        self
    }

    /// Whether sending or receiving does anything beyond plain JSON.
    fn active(&self) -> bool {
        self.signer.is_some() || self.require_signed || !self.trusted.is_empty() || self.ring.is_some()
    }

    /// Checks that the settings can work.
    pub(crate) fn validate(&self) -> Result<(), SdkError> {
        if self.encrypt_payloads && self.ring.is_none() {
            return Err(key_error("encrypt_payloads needs an encryption key ring"));
        }
        Ok(())
    }

    /// The bytes to publish for `envelope`: encrypted and signed as configured (module docs).
    pub fn seal(&self, envelope: &Envelope) -> Result<Vec<u8>, SdkError> {
        if !self.active() {
            return Ok(envelope.to_vec());
        }
        let security = envelope.security.as_ref();
        let encrypt = self.encrypt_payloads
            && envelope.message_type != MessageType::Heartbeat
            && security.and_then(|s| s.encryption.as_ref()).is_none();
        let sign = self.signer.is_some() && security.and_then(|s| s.signature.as_ref()).is_none();
        if !encrypt && !sign {
            return Ok(envelope.to_vec());
        }
        let mut value = envelope.to_value();
        if encrypt {
            let ring = self.ring.as_ref().ok_or_else(|| key_error("no encryption key ring"))?;
            let plain = serde_json::to_vec(&value["payload"]["data"]).map_err(key_error)?;
            let sealed = ring.encrypt_bound(&plain, envelope.message_id.to_string().as_bytes()).map_err(key_error)?;
            value["payload"]["data"] = serde_json::to_value(sealed).map_err(key_error)?;
            security_object(&mut value).insert("encryption".into(), Value::String(ENCRYPTION_SCHEME.into()));
        }
        if let Some(signer) = self.signer.as_ref().filter(|_| sign) {
            security_object(&mut value).insert("key_id".into(), Value::String(signer.0.clone()));
            let signature = signer.1.sign(&without_routing(&value));
            security_object(&mut value).insert("signature".into(), Value::String(signature));
        }
        serde_json::to_vec(&value).map_err(key_error)
    }

    /// Checks the signature of a received envelope (`raw`: the bytes as received, `envelope`:
    /// them parsed) and decrypts its payload in place. The error (code `security`) is what the
    /// dead-letter record and the sender's answer carry.
    pub fn open(&self, raw: &[u8], envelope: &mut Envelope) -> Result<(), Refusal> {
        self.check(raw, envelope).map_err(|reason| Refusal::new(Refusal::SECURITY, reason))
    }

    fn check(&self, raw: &[u8], envelope: &mut Envelope) -> Result<(), String> {
        let security = envelope.security.clone().unwrap_or_default();
        match &security.signature {
            Some(signature) => {
                let key_id = security.key_id.as_deref().ok_or("signed envelope has no security.key_id")?;
                match self.trusted.get(key_id) {
                    Some(key) => {
                        if key_id != envelope.source {
                            return Err(format!(
                                "signature key {key_id:?} does not belong to the source {:?}",
                                envelope.source
                            ));
                        }
                        let value: Value =
                            serde_json::from_slice(raw).map_err(|e| format!("signed envelope is not JSON: {e}"))?;
                        key.verify_signature(&without_routing(&value), signature)
                            .map_err(|e| format!("bad signature by {key_id:?}: {e}"))?;
                    }
                    None if self.require_signed => {
                        return Err(format!("signed by an untrusted key {key_id:?}"));
                    }
                    None => {}
                }
            }
            None if self.require_signed => {
                return Err("unsigned envelope: this service requires security.signature".into());
            }
            None => {}
        }
        match security.encryption.as_deref() {
            None | Some("none") => Ok(()),
            Some(_) if self.pass_through_encrypted => Ok(()),
            Some(ENCRYPTION_SCHEME) => {
                let ring = self.ring.as_ref().ok_or("encrypted payload, but this service has no encryption keys")?;
                let sealed: Sealed = serde_json::from_value(envelope.payload.data.clone())
                    .map_err(|_| "encrypted payload.data is not {\"key_id\", \"ciphertext\"}")?;
                let plain = ring
                    .decrypt_bound(&sealed, envelope.message_id.to_string().as_bytes())
                    .map_err(|e| format!("cannot decrypt payload: {e}"))?;
                envelope.payload.data =
                    serde_json::from_slice(&plain).map_err(|e| format!("decrypted payload is not JSON: {e}"))?;
                Ok(())
            }
            Some(other) => Err(format!("unsupported security.encryption {other:?}")),
        }
    }
}

/// `value["security"]` as an object, created if absent.
fn security_object(value: &mut Value) -> &mut serde_json::Map<String, Value> {
    let obj = value.as_object_mut().expect("an envelope serialises to an object");
    let sec = obj.entry("security").or_insert_with(|| Value::Object(Default::default()));
    if !sec.is_object() {
        *sec = Value::Object(Default::default());
    }
    sec.as_object_mut().expect("just made an object")
}

/// The envelope without `routing` (which the signature does not cover).
fn without_routing(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("routing");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use alicia_envelope::Destination;
    use serde_json::json;

    fn keys(dir: &Path, name: &str) -> SigningKey {
        SigningKey::generate(&dir.join(format!("{name}.key")), &dir.join(format!("{name}.pub"))).unwrap()
    }

    #[test]
    fn sign_encrypt_open() {
        let dir = tempfile::tempdir().unwrap();
        let voice = keys(dir.path(), "voice");
        let ring = || KeyRing::from_keys([(1, [7; 32])]);
        let sender =
            EnvelopeSecurity::default().with_signing_key("voice", voice).with_key_ring(ring()).encrypt_payloads(true);
        let receiver =
            EnvelopeSecurity::default().trust_dir(dir.path()).unwrap().with_key_ring(ring()).require_signed(true);

        let original = Envelope::request("voice", Destination::service("stt"), json!({"text": "open the door"}));
        let bytes = sender.seal(&original).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("open the door"));
        let mut got = Envelope::parse(&bytes).unwrap();
        assert_eq!(got.security.as_ref().unwrap().encryption.as_deref(), Some(ENCRYPTION_SCHEME));
        receiver.open(&bytes, &mut got).unwrap();
        assert_eq!(got.payload.data, json!({"text": "open the door"}));

        // The router may rewrite routing; anything else breaks the signature.
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["routing"]["hops"] = json!(3);
        let routed = serde_json::to_vec(&v).unwrap();
        receiver.open(&routed, &mut Envelope::parse(&routed).unwrap()).unwrap();
        v["ttl"] = json!(3600);
        let tampered = serde_json::to_vec(&v).unwrap();
        let err = receiver.open(&tampered, &mut Envelope::parse(&tampered).unwrap()).unwrap_err().reason;
        assert!(err.starts_with("bad signature by \"voice\""), "{err}");

        // Unsigned, or claiming another source.
        let plain = original.to_vec();
        let err = receiver.open(&plain, &mut Envelope::parse(&plain).unwrap()).unwrap_err().reason;
        assert!(err.starts_with("unsigned envelope"), "{err}");
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["source"] = json!("alarm");
        let forged = serde_json::to_vec(&v).unwrap();
        let err = receiver.open(&forged, &mut Envelope::parse(&forged).unwrap()).unwrap_err().reason;
        assert!(err.contains("does not belong to the source \"alarm\""), "{err}");

        // Encrypted for another message id (moved ciphertext) or with an unknown key.
        let mut v: Value = serde_json::from_slice(&bytes).unwrap();
        v["message_id"] = json!(alicia_envelope::Uuid::new_v4().to_string());
        let moved = serde_json::to_vec(&v).unwrap();
        let lenient = EnvelopeSecurity::default().with_key_ring(ring());
        let err = lenient.open(&moved, &mut Envelope::parse(&moved).unwrap()).unwrap_err().reason;
        assert!(err.starts_with("cannot decrypt payload"), "{err}");
        let other = EnvelopeSecurity::default().with_key_ring(KeyRing::from_keys([(2, [8; 32])]));
        let err = other.open(&bytes, &mut Envelope::parse(&bytes).unwrap()).unwrap_err().reason;
        assert!(err.contains("unknown or retired key \"enc-1\""), "{err}");
        assert!(EnvelopeSecurity::default().encrypt_payloads(true).validate().is_err());

        // A forwarder (the router) gets it as it came, bumps the hops, and sends it on: the
        // receiver still verifies and decrypts it.
        let router = EnvelopeSecurity::default().trust_dir(dir.path()).unwrap().pass_through_encrypted(true);
        let mut fwd = Envelope::parse(&bytes).unwrap();
        router.open(&bytes, &mut fwd).unwrap();
        assert_eq!(fwd.payload.data["key_id"], "enc-1");
        fwd.routing.hops += 1;
        fwd.routing.route.push("router".into());
        let forwarded = router.seal(&fwd).unwrap();
        let mut got = Envelope::parse(&forwarded).unwrap();
        receiver.open(&forwarded, &mut got).unwrap();
        assert_eq!((got.payload.data["text"].as_str(), got.routing.hops), (Some("open the door"), 1));
    }
}
