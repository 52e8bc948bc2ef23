//! Alicia's standard message envelope: the JSON object every service and device puts on the
//! bus.
//!
//! ```json
//! {
//!   "message_id": "6f1c2a8e-3b7d-4c52-9e1a-0d4b8f2c7a61",
//!   "timestamp": "2025-01-15T10:30:00.123Z",
//!   "source": "voice_service",
//!   "destination": "stt_service",
//!   "message_type": "request",
//!   "priority": "high",
//!   "ttl": 30,
//!   "payload": { "data": { "audio_format": "wav" },
//!                "metadata": { "version": "1.0", "content_type": "application/json", "encoding": "utf-8" } },
//!   "routing": { "hops": 0, "max_hops": 10, "route": [] }
//! }
//! ```
//!
//! [`Envelope::parse`] reads and validates one; [`Envelope::request`], [`Envelope::event`],
//! [`Envelope::command`], [`Envelope::heartbeat`] and [`Envelope::reply_to`] make one;
//! [`Envelope::to_json`] writes one; [`json_schema`] describes the format for devices written in
//! other languages (published as `docs/envelope.schema.json`, kept current by a test).
//!
//! # Why it is built this way
//!
//! - **JSON, strings for enums.** Devices are written in anything from C on a microcontroller to
//!   Python; JSON with `"message_type": "request"` is readable on the wire (`mosquitto_sub`) and
//!   needs no generated code. MQTT carries the bytes; the envelope carries what MQTT does not:
//!   who sent it, where it goes beyond a topic, how urgent it is and how long it is worth.
//! - **Nothing unknown is lost.** Extra keys at the top level and inside `payload`,
//!   `payload.metadata`, `security` and `routing` are kept in `extra` maps and written back, in
//!   their original order. A newer device can add a field and the router (an older program)
//!   forwards it untouched. For the same reason `serde_json`'s `preserve_order` is on: an
//!   envelope that passes through Alicia reads the same afterwards.
//! - **Precise refusals.** Reading is done field by field (module `decode`) instead of with a
//!   derived `Deserialize`, so every error names the field by its JSON path and says what is
//!   wrong ([`EnvelopeError`], [`Problem`]); the router copies that text into the dead-letter
//!   topic, where a person reads it. Syntax errors give line and column.
//! - **Strict where it protects the bus, lenient where the design document is.** The full
//!   rules, field by field, are in `docs/envelope.md`; in short: `message_id`, `timestamp`,
//!   `source`, `destination`, `message_type` and `payload.data` are required. `message_id` is
//!   any non-empty string of at most [`MAX_MESSAGE_ID_LEN`] bytes without control characters
//!   (the document writes `device-reg-001`; Alicia generates random UUIDs). `ttl` is optional:
//!   without one the envelope never expires by itself (MQTT message expiry, set by the sender,
//!   still applies), and a `timestamp` far in the past or future is then no reason to drop it
//!   (devices have bad clocks). `priority` defaults to `normal`, `payload.metadata` to version
//!   `1.0`, `application/json`, `utf-8`, and `routing` to 0 hops of at most
//!   [`DEFAULT_MAX_HOPS`]. Defaults are written out when an envelope is serialised, so a parsed
//!   envelope is normalised once and stable after that (`parse(to_json(parse(x))) ==
//!   parse(x)`). `null` in an optional field counts as absent. Every problem of a message is
//!   reported at once ([`EnvelopeError::problems`]), not only the first.
//! - **Correlation.** A response carries the request's `message_id` in a top-level
//!   `correlation_id` (absent on everything else). It is top-level rather than in
//!   `payload.metadata` because it is addressing, not payload description: the router and the
//!   SDK read it without looking inside the payload, and a response that went through the router
//!   or arrived over MQTT 3.1.1 (which has no correlation data property) is still matched. The
//!   SDK also puts the same id into MQTT 5 correlation data.
//! - **Error replies.** A failed request is answered with a `response` whose
//!   `payload.metadata.status` is `"error"` and whose `payload.data` is
//!   `{"code": "...", "message": "..."}` ([`Envelope::error_reply`], [`Envelope::reply_error`]);
//!   a marker in metadata instead of a convention inside `data`, so a successful answer whose
//!   data happens to have an `error` key is never mistaken for a failure.
//! - **Destinations are names of topic levels, or topics.** Service names, capabilities and
//!   device ids are put into MQTT topics, so they may not contain `/`, `+`, `#` or control
//!   characters; a destination with a `/` is a topic itself, as in the document's registration
//!   ([`Destination`]). `source` must be an address a reply can be sent to: a service name (a
//!   device may also use its bare id, as the document's devices do) or `device_id:ID`.
//! - **Time.** Timestamps are RFC 3339; Alicia writes UTC to the millisecond and accepts any
//!   offset, keeping it on the way out ([`Timestamp`]). With a `ttl`, expiry is `timestamp +
//!   ttl`, judged by the receiver's clock ([`Envelope::is_expired`]); a sender whose clock is
//!   wrong should leave `ttl` out and rely on MQTT message expiry.
//! - **`priority` is ordered** (`low < normal < high < critical`) so queues can sort by it.

mod decode;
mod destination;
mod error;
mod message_id;
mod timestamp;

use std::time::{Duration, SystemTime};

use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Deserializer, Serialize};
pub use serde_json::{Map, Value};
pub use uuid::Uuid;

pub use decode::type_name as json_type_name;
pub use destination::{check_service_name, Destination};
pub use error::{EnvelopeError, FieldError, Problem};
pub use message_id::{MessageId, MAX_MESSAGE_ID_LEN};
pub use timestamp::Timestamp;

/// `ttl` given by the builders unless changed with [`Envelope::with_ttl`] or
/// [`Envelope::without_ttl`], in seconds.
pub const DEFAULT_TTL_SECS: u32 = 60;
/// `routing.max_hops` when an envelope does not say.
pub const DEFAULT_MAX_HOPS: u32 = 10;

/// One message on the Alicia bus. See the crate documentation for the format and the reasons
/// behind it. Fields are public; [`Envelope::validate`] checks them after changes.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[schemars(
    title = "Alicia message envelope",
    description = "The standard JSON message every Alicia service and device publishes on the MQTT bus. Unknown keys are allowed and are preserved by Alicia."
)]
pub struct Envelope {
    /// The sender's id for this message (see [`MessageId`]).
    pub message_id: MessageId,
    /// When the message was created (RFC 3339).
    pub timestamp: Timestamp,
    /// Who sent it, and where a reply goes: a service name, or `device_id:ID` for a device (a
    /// device may also write its bare id). Cannot contain `/`, `+`, `#` or control characters,
    /// and cannot be `broadcast`.
    #[schemars(
        length(min = 1),
        regex(pattern = r"^(device_id:[^/+#\u0000-\u001f\u007f-\u009f]+|[^/+#:\u0000-\u001f\u007f-\u009f]+)$")
    )]
    pub source: String,
    /// Where it goes.
    pub destination: Destination,
    /// What kind of message this is.
    pub message_type: MessageType,
    /// How urgent it is; under backlog, higher priorities are delivered first.
    #[serde(default)]
    pub priority: Priority,
    /// Seconds the message is worth after `timestamp`; later it is dropped to the dead-letter
    /// topic instead of being delivered. Absent: the envelope does not expire by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl: Option<u32>,
    /// On a response: the `message_id` of the request it answers. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<MessageId>,
    /// The content.
    pub payload: Payload,
    /// Signature and encryption details, when the message is signed or encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    /// The path travelled so far, for loop detection.
    #[serde(default)]
    pub routing: Routing,
    /// Top-level keys not defined here, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What kind of message an envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Asks for a `response`.
    Request,
    /// Answers a `request`; `correlation_id` names it.
    Response,
    /// Tells whoever listens that something happened.
    Event,
    /// Tells a device or service to do something.
    Command,
    /// Says the sender is alive.
    Heartbeat,
}

/// How urgent a message is, ordered `low` < `normal` < `high` < `critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Background work.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Goes before normal traffic.
    High,
    /// Goes first (alarms, safety).
    Critical,
}

/// The content of an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Payload {
    /// The message itself: any JSON value (null included), shaped by the message's purpose.
    pub data: Value,
    /// How to read `data`.
    #[serde(default)]
    pub metadata: Metadata,
    /// Keys not defined here, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How to read a payload's `data`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(default)]
pub struct Metadata {
    /// Version of the payload format.
    #[schemars(length(min = 1))]
    pub version: String,
    /// Media type of `data`.
    #[schemars(length(min = 1))]
    pub content_type: String,
    /// Encoding of `data` (for example `utf-8`, or `base64` for binary content in a string).
    #[schemars(length(min = 1))]
    pub encoding: String,
    /// On a response: `error` when the request failed (then `data` is `{"code", "message"}`).
    /// Absent means success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ReplyStatus>,
    /// Keys not defined here, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            version: "1.0".into(),
            content_type: "application/json".into(),
            encoding: "utf-8".into(),
            status: None,
            extra: Map::new(),
        }
    }
}

/// Outcome of a request, carried by its response in `payload.metadata.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    /// The request succeeded (the same as no status).
    Ok,
    /// The request failed; `data` is `{"code": "...", "message": "..."}`.
    Error,
}

/// Signature and encryption details of a signed or encrypted message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
pub struct Security {
    /// Signature over the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Encryption scheme of `payload.data` (`none` when not encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Id of the key used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Keys not defined here, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The path a message has travelled.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(default)]
pub struct Routing {
    /// How many times the message has been forwarded.
    pub hops: u32,
    /// Forwarding limit; a message with more hops is dropped to the dead-letter topic.
    #[schemars(range(min = 1))]
    pub max_hops: u32,
    /// Who forwarded it, in order.
    #[schemars(inner(length(min = 1)))]
    pub route: Vec<String>,
    /// Keys not defined here, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing { hops: 0, max_hops: DEFAULT_MAX_HOPS, route: Vec::new(), extra: Map::new() }
    }
}

/// The error carried by an error response ([`Envelope::error_reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    /// Short machine-readable code, e.g. `not_found`, `invalid_request`, `internal`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

macro_rules! wire_enum {
    ($ty:ident, $expected:literal, $($variant:ident = $s:literal),+) => {
        impl $ty {
            /// The wire form.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),+ }
            }

            /// Parses the wire form (lower case, exactly).
            pub fn parse(s: &str) -> Result<Self, Problem> {
                match s {
                    $($s => Ok($ty::$variant),)+
                    _ => Err(Problem::UnknownValue { value: s.to_string(), expected: $expected }),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = Problem;
            fn from_str(s: &str) -> Result<Self, Problem> {
                $ty::parse(s)
            }
        }
    };
}

wire_enum!(
    MessageType,
    "request, response, event, command, heartbeat",
    Request = "request",
    Response = "response",
    Event = "event",
    Command = "command",
    Heartbeat = "heartbeat"
);
wire_enum!(
    Priority,
    "low, normal, high, critical",
    Low = "low",
    Normal = "normal",
    High = "high",
    Critical = "critical"
);
wire_enum!(ReplyStatus, "ok, error", Ok = "ok", Error = "error");

impl Envelope {
    /// A new envelope with a fresh random `message_id`, the current time, priority `normal`,
    /// [`DEFAULT_TTL_SECS`], default metadata and empty routing.
    pub fn new(source: impl Into<String>, destination: Destination, message_type: MessageType, data: Value) -> Self {
        Envelope {
            message_id: MessageId::new(),
            timestamp: Timestamp::now(),
            source: source.into(),
            destination,
            message_type,
            priority: Priority::Normal,
            ttl: Some(DEFAULT_TTL_SECS),
            correlation_id: None,
            payload: Payload { data, metadata: Metadata::default(), extra: Map::new() },
            security: None,
            routing: Routing::default(),
            extra: Map::new(),
        }
    }

    /// A `request` (answer with [`Envelope::reply_to`]).
    pub fn request(source: impl Into<String>, destination: Destination, data: Value) -> Self {
        Envelope::new(source, destination, MessageType::Request, data)
    }

    /// A `command`.
    pub fn command(source: impl Into<String>, destination: Destination, data: Value) -> Self {
        Envelope::new(source, destination, MessageType::Command, data)
    }

    /// An `event`.
    pub fn event(source: impl Into<String>, destination: Destination, data: Value) -> Self {
        Envelope::new(source, destination, MessageType::Event, data)
    }

    /// A `heartbeat` to `broadcast`.
    pub fn heartbeat(source: impl Into<String>, data: Value) -> Self {
        Envelope::new(source, Destination::Broadcast, MessageType::Heartbeat, data)
    }

    /// The `response` to `request`, sent by `source`: addressed to the request's `source`, with
    /// `correlation_id` = the request's `message_id` and the request's priority and ttl.
    ///
    /// The request's `source` is read as a destination (`device_id:ID` stays a device, anything
    /// else a service), which [`Envelope::validate`] guarantees is possible for parsed requests.
    pub fn reply_to(request: &Envelope, source: impl Into<String>, data: Value) -> Self {
        let destination =
            Destination::parse(&request.source).unwrap_or_else(|_| Destination::Service(request.source.clone()));
        let mut reply = Envelope::new(source, destination, MessageType::Response, data);
        reply.correlation_id = Some(request.message_id.clone());
        reply.priority = request.priority;
        reply.ttl = request.ttl;
        reply
    }

    /// The error `response` to `request`: `payload.metadata.status` = `error`, `payload.data` =
    /// `{"code": code, "message": message}`.
    pub fn error_reply(
        request: &Envelope,
        source: impl Into<String>,
        code: &str,
        message: impl std::fmt::Display,
    ) -> Self {
        let data = serde_json::json!({ "code": code, "message": message.to_string() });
        let mut reply = Envelope::reply_to(request, source, data);
        reply.payload.metadata.status = Some(ReplyStatus::Error);
        reply
    }

    /// The error this response carries, if it is an error response.
    pub fn reply_error(&self) -> Option<ReplyError> {
        if self.payload.metadata.status != Some(ReplyStatus::Error) {
            return None;
        }
        let text = |key: &str| match self.payload.data.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        Some(ReplyError { code: text("code"), message: text("message") })
    }

    /// Sets the priority.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the time to live, in seconds (at least 1 for a valid envelope).
    pub fn with_ttl(mut self, ttl_secs: u32) -> Self {
        self.ttl = Some(ttl_secs);
        self
    }

    /// Removes the time to live: the envelope does not expire by itself.
    pub fn without_ttl(mut self) -> Self {
        self.ttl = None;
        self
    }

    /// Sets `payload.metadata.content_type`.
    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.payload.metadata.content_type = content_type.into();
        self
    }

    /// Reads and validates an envelope from JSON bytes.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        decode::from_slice(bytes)
    }

    /// Reads and validates an envelope from a JSON value.
    pub fn from_value(value: Value) -> Result<Envelope, EnvelopeError> {
        decode::from_value(value)
    }

    /// Checks everything the types do not: `message_id` and `correlation_id` are usable ids,
    /// `source` and `destination` are usable names, `ttl` ≥ 1 when given, metadata strings are
    /// not empty, `routing.max_hops` ≥ 1, `routing.hops` ≤ `routing.max_hops`, `routing.route`
    /// entries are not empty. Reports every problem found, not only the first.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        let mut errors = Vec::new();
        let mut field = |name: String, problem| errors.push(FieldError { field: name, problem });
        if let Err(p) = MessageId::parse(self.message_id.as_str()) {
            field("message_id".into(), p);
        }
        if let Err(p) = check_source(&self.source) {
            field("source".into(), p);
        }
        if let Err(p) = self.destination.validate() {
            field("destination".into(), p);
        }
        if self.ttl == Some(0) {
            field("ttl".into(), Problem::OutOfRange { value: "0".into(), min: 1, max: u32::MAX.into() });
        }
        if let Some(Err(p)) = self.correlation_id.as_ref().map(|c| MessageId::parse(c.as_str())) {
            field("correlation_id".into(), p);
        }
        let m = &self.payload.metadata;
        for (name, value) in [("version", &m.version), ("content_type", &m.content_type), ("encoding", &m.encoding)] {
            if value.is_empty() {
                field(format!("payload.metadata.{name}"), Problem::Empty);
            }
        }
        let r = &self.routing;
        if r.max_hops == 0 {
            field("routing.max_hops".into(), Problem::OutOfRange { value: "0".into(), min: 1, max: u32::MAX.into() });
        } else if r.hops > r.max_hops {
            field("routing.hops".into(), Problem::HopsExceeded { hops: r.hops, max_hops: r.max_hops });
        }
        for (i, _) in r.route.iter().enumerate().filter(|(_, hop)| hop.is_empty()) {
            field(format!("routing.route[{i}]"), Problem::Empty);
        }
        match EnvelopeError::from_problems(errors) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope always serialises")
    }

    /// Indented JSON (two spaces), as in `docs/examples/envelopes/`.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("an envelope always serialises")
    }

    /// Compact JSON bytes, for an MQTT payload.
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }

    /// The envelope as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an envelope always serialises")
    }

    /// When the message stops being worth delivering: `timestamp + ttl`; `None` without a
    /// `ttl` (it never expires by itself).
    pub fn expires_at(&self) -> Option<SystemTime> {
        let ttl = self.ttl?;
        let t = self.timestamp.to_system_time();
        Some(t.checked_add(Duration::from_secs(ttl.into())).unwrap_or(t))
    }

    /// Whether the message is past its lifetime at `now` (strictly after `timestamp + ttl`).
    /// Never true without a `ttl`, however old or new its `timestamp`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|at| now > at)
    }

    /// The remaining lifetime at `now`, zero if expired (for MQTT 5 message expiry); `None`
    /// without a `ttl`.
    pub fn remaining_ttl(&self, now: SystemTime) -> Option<Duration> {
        self.expires_at().map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

/// A source is a service name (or a device's bare id) or `device_id:ID`.
pub(crate) fn check_source(source: &str) -> Result<(), Problem> {
    if source.is_empty() {
        return Err(Problem::Empty);
    }
    if source.contains('/') && !source.starts_with("device_id:") && !source.starts_with("capability:") {
        return Err(Problem::BadName {
            value: source.to_string(),
            reason: "`/`, `+` and `#` cannot appear in an MQTT topic level, and a source must be a name a reply can be sent to",
        });
    }
    match Destination::parse(source)? {
        Destination::Service(_) | Destination::DeviceId(_) => Ok(()),
        Destination::Broadcast | Destination::Capability(_) | Destination::Topic(_) => Err(Problem::BadName {
            value: source.to_string(),
            reason: "a source must be a service name or `device_id:ID`, an address a reply can go to",
        }),
    }
}

impl<'de> Deserialize<'de> for Envelope {
    /// Reads through [`Envelope::from_value`], so serde users get the same validation and
    /// messages.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Envelope::from_value(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Envelope {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, EnvelopeError> {
        Envelope::parse(s.as_bytes())
    }
}

/// The JSON Schema (draft 2020-12) of the envelope, generated from these types.
pub fn json_schema() -> Schema {
    schemars::SchemaGenerator::default().into_root_schema_for::<Envelope>()
}

/// [`json_schema`] as indented JSON with a final newline, the form of
/// `docs/envelope.schema.json`.
pub fn json_schema_string() -> String {
    let mut s = serde_json::to_string_pretty(&json_schema()).expect("a schema always serialises");
    s.push('\n');
    s
}
