//! RFC 3339 timestamps.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::Problem;

/// When an envelope was created: an RFC 3339 date-time.
///
/// Envelopes made here are stamped in UTC to the millisecond, always with three fractional
/// digits (`2025-01-15T10:30:00.120Z`), so timestamps written by Alicia sort as text. Envelopes
/// read from the bus may use any RFC 3339 form (`+01:00`, no or more fractional digits); the
/// text is kept as written, so it goes out unchanged, while comparisons (equality, order,
/// expiry) use the instant.
#[derive(Debug, Clone)]
pub struct Timestamp {
    at: OffsetDateTime,
    text: String,
}

impl Timestamp {
    /// Now, in UTC, truncated to the millisecond.
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// Parses an RFC 3339 date-time.
    pub fn parse(s: &str) -> Result<Self, Problem> {
        match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(at) => Ok(Timestamp { at, text: s.to_string() }),
            Err(e) => Err(Problem::BadTimestamp { value: s.to_string(), reason: e.to_string() }),
        }
    }

    /// The instant as a [`SystemTime`].
    pub fn to_system_time(&self) -> SystemTime {
        SystemTime::from(self.at)
    }

    /// Nanoseconds since the Unix epoch (negative before 1970).
    pub fn unix_timestamp_nanos(&self) -> i128 {
        self.at.unix_timestamp_nanos()
    }

    /// The text, as written on the wire.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Timestamp {}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl std::hash::Hash for Timestamp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.at.unix_timestamp_nanos().hash(state);
    }
}

impl From<SystemTime> for Timestamp {
    /// Converts to UTC, truncated to the millisecond.
    fn from(t: SystemTime) -> Self {
        let t = OffsetDateTime::from(t);
        let at = t.replace_millisecond(t.millisecond()).unwrap_or(t);
        let text = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second(),
            at.millisecond()
        );
        Timestamp { at, text }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Timestamp {
    type Err = Problem;
    fn from_str(s: &str) -> Result<Self, Problem> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Timestamp::parse(&s).map_err(|p| serde::de::Error::custom(format_args!("timestamp {p}")))
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "RFC 3339 date-time. Alicia writes UTC with milliseconds (`2025-01-15T10:30:00.123Z`) and accepts any offset.",
            "type": "string",
            "format": "date-time",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_written() {
        for s in
            ["2025-01-15T10:30:00Z", "2025-01-15T10:30:00.120Z", "2025-01-15T11:30:00+01:00", "2025-01-15t10:30:00z"]
        {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
        let a = Timestamp::parse("2025-01-15T10:30:00Z").unwrap();
        let b = Timestamp::parse("2025-01-15T11:30:00+01:00").unwrap();
        assert_eq!(a.to_system_time(), b.to_system_time());
        assert_eq!(a, b);
    }

    #[test]
    fn now_is_utc_with_milliseconds() {
        let s = Timestamp::now().to_string();
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(s.len(), "2025-01-15T10:30:00.123Z".len(), "{s}");
        assert_eq!(Timestamp::parse(&s).unwrap().to_string(), s);
        let epoch = Timestamp::from(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500));
        assert_eq!(epoch.to_string(), "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn refuses_other_formats() {
        for s in ["2025-01-15 10:30:00", "2025-01-15", "yesterday", "2025-13-01T00:00:00Z", "2025-01-15T10:30:00"] {
            assert!(matches!(Timestamp::parse(s), Err(Problem::BadTimestamp { .. })), "{s}");
        }
    }
}
