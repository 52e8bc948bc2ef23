//! Why an envelope was refused: the field, and what is wrong with it.

/// An envelope that could not be read or is not valid.
///
/// The `Display` text is meant for people and for the dead-letter topic: it names the field by
/// its JSON path (`payload.metadata.version`, `routing.route[2]`) and says what is wrong.
/// Programs that act on the failure read [`EnvelopeError::problems`]: every field that is wrong,
/// each with its [`Problem`]. The reader reports them all at once, so a device fixes its message
/// in one round instead of one field per attempt.
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
    /// Several fields are missing or wrong, in the order they appear in the format.
    #[error("{} problems: {}", .0.len(), list(.0))]
    Fields(Vec<FieldError>),
}

/// One field of an envelope that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `payload.metadata.version` or `routing.route[2]`.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl EnvelopeError {
    pub(crate) fn field(field: impl Into<String>, problem: Problem) -> Self {
        EnvelopeError::Field { field: field.into(), problem }
    }

    /// One error for all the field problems found: [`EnvelopeError::Field`] for one,
    /// [`EnvelopeError::Fields`] for several.
    pub(crate) fn from_problems(mut errors: Vec<FieldError>) -> Option<Self> {
        match errors.len() {
            0 => None,
            1 => errors.pop().map(|e| EnvelopeError::Field { field: e.field, problem: e.problem }),
            _ => Some(EnvelopeError::Fields(errors)),
        }
    }

    /// The JSON path of the (first) offending field, when the error is about fields.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            EnvelopeError::Field { field, .. } => Some(field),
            EnvelopeError::Fields(errors) => errors.first().map(|e| e.field.as_str()),
            _ => None,
        }
    }

    /// The (first) problem, when the error is about fields.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            EnvelopeError::Field { problem, .. } => Some(problem),
            EnvelopeError::Fields(errors) => errors.first().map(|e| &e.problem),
            _ => None,
        }
    }

    /// Every field problem, in format order (empty for syntax errors and non-objects).
    pub fn problems(&self) -> Vec<FieldError> {
        match self {
            EnvelopeError::Field { field, problem } => {
                vec![FieldError { field: field.clone(), problem: problem.clone() }]
            }
            EnvelopeError::Fields(errors) => errors.clone(),
            _ => Vec::new(),
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
    /// A string longer than allowed.
    #[error("is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An id (`message_id`, `correlation_id`) that cannot be used.
    #[error("`{value}` is not a usable id: {reason}")]
    BadId {
        /// The text found (escaped).
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A value that lists the alternatives of the design document's template
    /// (`request|response|event`) instead of choosing one.
    #[error("is `{value}`, a template listing the alternatives: choose one of them ({expected})")]
    Template {
        /// The text found.
        value: String,
        /// The accepted values.
        expected: &'static str,
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
    /// A topic-shaped destination that is not a usable MQTT topic name.
    #[error("`{value}` is not a usable topic: {reason}")]
    BadTopic {
        /// The text found.
        value: String,
        /// Why it is refused.
        reason: &'static str,
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
