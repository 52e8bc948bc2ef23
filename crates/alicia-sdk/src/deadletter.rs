//! The dead-letter record: what could not be handled, where it came from, and why.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::Refusal;

/// A message that could not be handled, published on `<prefix>/system/deadletter` as JSON:
///
/// ```json
/// {"code": "invalid_envelope",
///  "reason": "invalid envelope: `ttl` must be a whole number from 1 to 4294967295, found 0",
///  "topic": "alicia/services/stt_service/inbox",
///  "payload": "{\"message_id\": ...}", "payload_encoding": "utf-8",
///  "reported_by": "stt_service/3f2a9c01b7de", "timestamp": "2025-01-15T10:30:00.123Z"}
/// ```
///
/// It is a plain JSON object, not an envelope: the thing it reports is often not a valid
/// envelope, and tools (`mosquitto_sub ... | jq`) should read it without knowing one. The
/// original bytes are kept exactly: as text when they are UTF-8, otherwise in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Why, for programs: the [`Refusal`]'s code (empty in records from before codes existed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    /// Why the message was not handled, for people.
    pub reason: String,
    /// The topic it arrived on.
    pub topic: String,
    /// The original payload: the text itself, or base64 (see `payload_encoding`).
    pub payload: String,
    /// `utf-8` or `base64`.
    pub payload_encoding: String,
    /// Who gave up on it: `<service>/<instance>`.
    pub reported_by: String,
    /// When (RFC 3339, UTC).
    pub timestamp: String,
}

impl DeadLetter {
    /// A record for `payload` received on `topic`, refused for `refusal`.
    pub fn new(refusal: &Refusal, topic: impl Into<String>, payload: &[u8], reported_by: impl Into<String>) -> Self {
        let (payload, payload_encoding) = match std::str::from_utf8(payload) {
            Ok(text) => (text.to_string(), "utf-8"),
            Err(_) => (base64::engine::general_purpose::STANDARD.encode(payload), "base64"),
        };
        DeadLetter {
            code: refusal.code.to_string(),
            reason: refusal.reason.clone(),
            topic: topic.into(),
            payload,
            payload_encoding: payload_encoding.into(),
            reported_by: reported_by.into(),
            timestamp: alicia_envelope::Timestamp::now().to_string(),
        }
    }

    /// The original payload bytes.
    pub fn original(&self) -> Option<Vec<u8>> {
        match self.payload_encoding.as_str() {
            "base64" => base64::engine::general_purpose::STANDARD.decode(&self.payload).ok(),
            _ => Some(self.payload.clone().into_bytes()),
        }
    }

    /// The record as JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dead letter always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_original_bytes() {
        let text = DeadLetter::new(&Refusal::new("test", "why"), "t", b"{oops", "svc/1");
        assert_eq!((text.payload.as_str(), text.payload_encoding.as_str()), ("{oops", "utf-8"));
        assert_eq!(text.original().unwrap(), b"{oops");
        let bin = DeadLetter::new(&Refusal::new("test", "why"), "t", &[0xff, 0x00, 0x80], "svc/1");
        assert_eq!(bin.payload_encoding, "base64");
        assert_eq!(bin.original().unwrap(), [0xff, 0x00, 0x80]);
        let back: DeadLetter = serde_json::from_slice(&bin.to_vec()).unwrap();
        assert_eq!(back, bin);
    }
}
