//! Why an envelope was refused: the field, and what is wrong with it.

/// An envelope that could not be read or is not valid.
///
/// The `Display` text is meant for people and for the dead-letter topic: it names the field by
/// its JSON path (`payload.metadata.version`, `routing.route[2]`) and says what is wrong.
/// Programs that act on the failure match on [`EnvelopeError::Field`] and its [`Problem`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The bytes are not JSON at all (or not UTF-8). `line` and `column` are 1-based.
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// Line of the first error, 1-based.
        line: usize,
        /// Column of the first error, 1-based.
        column: usize,
        /// What the JSON parser expected.
        message: String,
    },
    /// The JSON document is not an object.
    #[error("an envelope must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found instead (`array`, `string`, ...).
        found: &'static str,
    },
    /// One field is missing or wrong.
    #[error("`{field}` {problem}")]
    Field {
        /// JSON path of the field, e.g. `payload.metadata.version` or `routing.route[2]`.
        field: String,
        /// What is wrong with it.
        problem: Problem,
    },
}

impl EnvelopeError {
    pub(crate) fn field(field: impl Into<String>, problem: Problem) -> Self {
        EnvelopeError::Field { field: field.into(), problem }
    }

    /// The JSON path of the offending field, when the error is about one field.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            EnvelopeError::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The problem, when the error is about one field.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            EnvelopeError::Field { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// What is wrong with one field. The messages complete a sentence that starts with the field's
/// name: "`ttl` must be at least 1 second, found 0".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A required field is absent.
    #[error("is missing")]
    Missing,
    /// The field has the wrong JSON type.
    #[error("must be {expected}, found {found}")]
    WrongType {
        /// The JSON type required (`a string`, `an object`, ...).
        expected: &'static str,
        /// The JSON type found (`number`, `null`, ...).
        found: &'static str,
    },
    /// A string that must not be empty is empty.
    #[error("must not be empty")]
    Empty,
    /// Not a UUID in the 8-4-4-4-12 hexadecimal form.
    #[error("is not a UUID (`{value}`): {reason}")]
    BadUuid {
        /// The text found.
        value: String,
        /// Why the UUID parser refused it.
        reason: String,
    },
    /// A UUID, but not a random (version 4, RFC 4122 variant) one.
    #[error("must be a random UUID (version 4), found `{value}` (version {version})")]
    NotUuidV4 {
        /// The UUID found.
        value: String,
        /// Its version number.
        version: usize,
    },
    /// Not an RFC 3339 date-time such as `2025-01-15T10:30:00Z`.
    #[error("is not an RFC 3339 timestamp such as `2025-01-15T10:30:00Z` (`{value}`): {reason}")]
    BadTimestamp {
        /// The text found.
        value: String,
        /// Why the parser refused it.
        reason: String,
    },
    /// A string outside a fixed set (`message_type`, `priority`, destination kinds).
    #[error("has unknown value `{value}`; expected one of: {expected}")]
    UnknownValue {
        /// The text found.
        value: String,
        /// The accepted values, comma-separated.
        expected: &'static str,
    },
    /// A name (service, capability, device id, source) that cannot be used as one MQTT topic
    /// level, or that is ambiguous.
    #[error("`{value}` is not a valid name: {reason}")]
    BadName {
        /// The text found.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A whole number that is required here is fractional, negative or too large.
    #[error("must be a whole number from {min} to {max}, found {value}")]
    OutOfRange {
        /// The number as written.
        value: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// `routing.hops` is larger than `routing.max_hops`.
    #[error("is {hops}, more than max_hops ({max_hops}): the message has travelled too far")]
    HopsExceeded {
        /// Hops travelled.
        hops: u32,
        /// The limit.
        max_hops: u32,
    },
}
