//! Message ids: what a sender calls its message.

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::Problem;

/// Longest accepted `message_id` (and `correlation_id`), in bytes.
///
/// Ids travel in MQTT correlation data, logs and dead letters; 128 bytes holds a UUID, a ULID,
/// a device's `device-reg-001`-style counter with a long prefix, or a hash, and keeps a
/// misbehaving sender from making every reply and log line carry kilobytes.
pub const MAX_MESSAGE_ID_LEN: usize = 128;

/// The `message_id` of an envelope (and the `correlation_id` of a response): any non-empty
/// string of at most [`MAX_MESSAGE_ID_LEN`] bytes without control characters.
///
/// The design document writes ids such as `device-reg-001` and `voice-stt-001`, and devices
/// number their messages however they like, so any such string is accepted and kept exactly as
/// written. What Alicia generates itself ([`MessageId::new`]) is a random UUID (version 4) in
/// the lower-case hyphenated form, so ids made here never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// A fresh random id: a version 4 UUID, lower-case, hyphenated.
    #[allow(clippy::new_without_default)] // a default id would be a fixed one: a new one is random
    pub fn new() -> Self {
        MessageId(Uuid::new_v4().hyphenated().to_string())
    }

    /// Checks an id read from the wire (see the type's documentation for the rules).
    pub fn parse(s: &str) -> Result<Self, Problem> {
        if s.is_empty() {
            return Err(Problem::Empty);
        }
        if s.len() > MAX_MESSAGE_ID_LEN {
            return Err(Problem::TooLong { len: s.len(), max: MAX_MESSAGE_ID_LEN });
        }
        if s.chars().any(char::is_control) {
            return Err(Problem::BadId {
                value: s.escape_debug().to_string(),
                reason: "it contains a control character",
            });
        }
        Ok(MessageId(s.to_string()))
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for MessageId {
    type Err = Problem;
    fn from_str(s: &str) -> Result<Self, Problem> {
        MessageId::parse(s)
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for MessageId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<Uuid> for MessageId {
    fn from(u: Uuid) -> Self {
        MessageId(u.hyphenated().to_string())
    }
}

impl PartialEq<str> for MessageId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        MessageId::parse(&s).map_err(|p| serde::de::Error::custom(format_args!("message id {p}")))
    }
}

impl JsonSchema for MessageId {
    fn schema_name() -> Cow<'static, str> {
        "MessageId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "The sender's id for this message: any non-empty string of at most 128 bytes without control characters, kept as written (e.g. `device-reg-001`). Alicia generates random UUIDs (version 4).",
            "type": "string",
            "minLength": 1,
            // JSON Schema counts characters, not bytes: 128 characters is the most any
            // 128-byte id can have (the parser checks bytes).
            "maxLength": MAX_MESSAGE_ID_LEN,
            "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
            "examples": ["0841abf7-0904-4c2a-844c-f41174f69628", "device-reg-001"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_devices_write_and_keeps_it() {
        for id in ["device-reg-001", "0841ABF7-0904-4C2A-844C-F41174F69628", "42", "a b", "ünïcödé", &"x".repeat(128)]
        {
            assert_eq!(MessageId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn refuses_empty_long_and_control_characters() {
        assert_eq!(MessageId::parse(""), Err(Problem::Empty));
        assert_eq!(MessageId::parse(&"x".repeat(129)), Err(Problem::TooLong { len: 129, max: 128 }));
        // 43 three-byte characters: 129 bytes.
        assert!(matches!(MessageId::parse(&"€".repeat(43)), Err(Problem::TooLong { len: 129, .. })));
        for bad in ["a\nb", "\0", "tab\there", "\u{7f}"] {
            assert!(matches!(MessageId::parse(bad), Err(Problem::BadId { .. })), "{bad:?}");
        }
    }

    #[test]
    fn new_ids_are_random_uuids() {
        let (a, b) = (MessageId::new(), MessageId::new());
        assert_ne!(a, b);
        let u = Uuid::parse_str(a.as_str()).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(a.as_str(), a.as_str().to_lowercase());
    }
}
