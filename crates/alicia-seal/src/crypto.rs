//! AES-256-GCM encryption with numbered, rotating keys (`ring::aead`).
//!
//! # Key files
//! A key directory (`<home>/keys`) holds `enc-<N>.key` files, each 32 random bytes written as 64
//! hex digits, mode 0600 (`alicia init` writes `enc-1.key`). The key id is `enc-<N>`. The
//! newest key (highest N) encrypts; every loaded key decrypts. [`KeyRing::rotate`] writes
//! `enc-<N+1>.key`; [`KeyRing::retire`] renames a key file to `enc-<N>.key.retired`, after which
//! ciphertexts under it no longer decrypt (the file is kept so an operator can undo it; delete it
//! to destroy the key). The current key cannot be retired: rotate first.
//!
//! # Ciphertext format
//! [`Sealed`] is `{"key_id": "enc-<N>", "ciphertext": B}` where `B` is standard base64 (with
//! padding) of `nonce (12 random bytes) || AES-256-GCM ciphertext || tag (16 bytes)`. The key id
//! is authenticated as associated data (`alicia-enc-v1:enc-<N>`), so relabelling a ciphertext
//! with another key id fails like any other tampering. [`KeyRing::encrypt_bound`] appends `:` and
//! a caller's context (the SDK: the envelope's `message_id`) to the associated data.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// An encrypted message and the id of the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// `enc-<N>`.
    pub key_id: String,
    /// Base64 of nonce || ciphertext || tag.
    pub ciphertext: String,
}

/// Why encryption, decryption or a key operation failed. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("unknown or retired key {0:?}")]
    UnknownKey(String),
    #[error("ciphertext is malformed: {0}")]
    Malformed(&'static str),
    #[error("ciphertext failed authentication (tampered, or wrong key)")]
    Tampered,
    #[error("key ring has no key")]
    Empty,
    #[error("cannot retire the current key {0:?}: rotate first")]
    RetireCurrent(String),
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("the system random number generator failed")]
    Random,
}

/// The encryption keys of a deployment, by number.
pub struct KeyRing {
    keys: BTreeMap<u32, LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("key_ids", &self.key_ids()).finish()
    }
}

/// `enc-<N>` for key number `n`.
pub fn key_id(n: u32) -> String {
    format!("enc-{n}")
}

fn parse_key_id(id: &str) -> Option<u32> {
    let n = id.strip_prefix("enc-")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

fn key_number(file_name: &str, suffix: &str) -> Option<u32> {
    parse_key_id(file_name.strip_suffix(suffix)?)
}

fn file_err(path: &Path, reason: impl ToString) -> CryptoError {
    CryptoError::KeyFile { path: path.to_path_buf(), reason: reason.to_string() }
}

impl KeyRing {
    /// A ring from raw keys: `(number, 32 bytes)`.
    pub fn from_keys(keys: impl IntoIterator<Item = (u32, [u8; KEY_LEN])>) -> Self {
        let keys = keys
            .into_iter()
            .map(|(n, k)| (n, LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).expect("32-byte key"))))
            .collect();
        Self { keys, rng: SystemRandom::new() }
    }

    /// Loads every `enc-<N>.key` in `dir`. Other files (including retired keys) are ignored.
    pub fn load(dir: &Path) -> Result<Self, CryptoError> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| file_err(dir, e))? {
            let entry = entry.map_err(|e| file_err(dir, e))?;
            let name = entry.file_name();
            let Some(n) = name.to_str().and_then(|s| key_number(s, ".key")) else { continue };
            let path = entry.path();
            let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
            let bytes = crate::decode_hex(text.trim()).ok_or_else(|| file_err(&path, "not hex"))?;
            let key: [u8; KEY_LEN] =
                bytes.try_into().map_err(|_| file_err(&path, format!("a key must be {KEY_LEN} bytes")))?;
            keys.push((n, key));
        }
        if keys.is_empty() {
            return Err(CryptoError::Empty);
        }
        Ok(Self::from_keys(keys))
    }

    /// Ids of the usable keys, oldest first.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.keys().map(|&n| key_id(n)).collect()
    }

    /// Id of the key that encrypts.
    pub fn current_key_id(&self) -> Option<String> {
        self.keys.keys().next_back().map(|&n| key_id(n))
    }

    /// Encrypts with the newest key and a fresh random nonce.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        self.encrypt_bound(plaintext, b"")
    }

    /// Decrypts with the key named by `sealed.key_id`, if it is loaded and not retired.
    pub fn decrypt(&self, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        self.decrypt_bound(sealed, b"")
    }

    /// Encrypts like [`KeyRing::encrypt`], binding the ciphertext to `context` (authenticated,
    /// not stored): it only decrypts with the same context. The SDK binds a payload to its
    /// envelope's `message_id`, so a ciphertext cannot be moved into another envelope.
    pub fn encrypt_bound(&self, plaintext: &[u8], context: &[u8]) -> Result<Sealed, CryptoError> {
        let (&n, key) = self.keys.iter().next_back().ok_or(CryptoError::Empty)?;
        let id = key_id(n);
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&id, context)),
                &mut buf[NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Malformed("plaintext too long"))?;
        buf.extend_from_slice(tag.as_ref());
        Ok(Sealed { key_id: id, ciphertext: STANDARD.encode(buf) })
    }

    /// Decrypts what [`KeyRing::encrypt_bound`] sealed with the same `context`.
    pub fn decrypt_bound(&self, sealed: &Sealed, context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = parse_key_id(&sealed.key_id)
            .and_then(|n| self.keys.get(&n))
            .ok_or_else(|| CryptoError::UnknownKey(sealed.key_id.clone()))?;
        let mut buf = STANDARD.decode(&sealed.ciphertext).map_err(|_| CryptoError::Malformed("not base64"))?;
        if buf.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("shorter than nonce and tag"));
        }
        let nonce = Nonce::try_assume_unique_for_key(&buf[..NONCE_LEN]).map_err(|_| CryptoError::Malformed("nonce"))?;
        let plain = key
            .open_in_place(nonce, Aad::from(aad(&sealed.key_id, context)), &mut buf[NONCE_LEN..])
            .map_err(|_| CryptoError::Tampered)?;
        Ok(plain.to_vec())
    }

    /// Writes a new key `enc-<N+1>.key` (mode 0600, N the highest number in `dir`, retired
    /// keys included, so a number is never reused) and makes it the current key. Returns its id.
    pub fn rotate(&mut self, dir: &Path) -> Result<String, CryptoError> {
        let mut highest = self.keys.keys().next_back().copied().unwrap_or(0);
        for entry in std::fs::read_dir(dir).map_err(|e| file_err(dir, e))? {
            let name = entry.map_err(|e| file_err(dir, e))?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = key_number(&name, ".key").or_else(|| key_number(&name, ".key.retired")) {
                highest = highest.max(n);
            }
        }
        let n = highest.checked_add(1).ok_or_else(|| file_err(dir, "key numbers exhausted"))?;
        let mut key = [0u8; KEY_LEN];
        self.rng.fill(&mut key).map_err(|_| CryptoError::Random)?;
        let path = dir.join(format!("{}.key", key_id(n)));
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| file_err(&path, e))?;
        f.write_all(hex.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| file_err(&path, e))?;
        self.keys.insert(n, LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("32-byte key")));
        Ok(key_id(n))
    }

    /// Retires key `id`: renames its file in `dir` to `<id>.key.retired` and forgets it, so
    /// ciphertexts under it no longer decrypt. The current key cannot be retired.
    pub fn retire(&mut self, dir: &Path, id: &str) -> Result<(), CryptoError> {
        let n =
            parse_key_id(id).filter(|n| self.keys.contains_key(n)).ok_or_else(|| CryptoError::UnknownKey(id.into()))?;
        if self.keys.keys().next_back() == Some(&n) {
            return Err(CryptoError::RetireCurrent(id.to_string()));
        }
        let from = dir.join(format!("{id}.key"));
        let to = dir.join(format!("{id}.key.retired"));
        std::fs::rename(&from, &to).map_err(|e| file_err(&from, e))?;
        self.keys.remove(&n);
        Ok(())
    }
}

/// `alicia-enc-v1:<key id>`, then `:` and the context if there is one.
fn aad(key_id: &str, context: &[u8]) -> Vec<u8> {
    let mut out = format!("alicia-enc-v1:{key_id}").into_bytes();
    if !context.is_empty() {
        out.push(b':');
        out.extend_from_slice(context);
    }
    out
}
