//! Reading an envelope from JSON, field by field, so that every refusal names its field.
//!
//! serde's derived `Deserialize` would stop at the first problem with a message such as
//! "invalid type: integer, expected a string" and no field name; the router must put a reason
//! a person can act on into the dead-letter topic, so the envelope is read by hand from a
//! `serde_json::Value`. Serialisation and the JSON Schema still come from the derives on the
//! types in `lib.rs`; `tests/schema.rs` checks that both agree on which fields are required.

use serde_json::{Map, Value};

use crate::destination::Destination;
use crate::error::{EnvelopeError, FieldError, Problem};
use crate::message_id::MessageId;
use crate::timestamp::Timestamp;
use crate::{Envelope, MessageType, Metadata, Payload, Priority, ReplyStatus, Routing, Security, DEFAULT_MAX_HOPS};

pub(crate) fn from_slice(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let value: Value = serde_json::from_slice(bytes).map_err(syntax)?;
    from_value(value)
}

fn syntax(e: serde_json::Error) -> EnvelopeError {
    // serde_json's Display ends with " at line L column C"; keep only the message.
    let text = e.to_string();
    let message = match text.rsplit_once(" at line ") {
        Some((m, _)) => m.to_string(),
        None => text,
    };
    EnvelopeError::Syntax { line: e.line(), column: e.column(), message }
}

pub(crate) fn from_value(value: Value) -> Result<Envelope, EnvelopeError> {
    let Value::Object(map) = value else {
        return Err(EnvelopeError::NotAnObject { found: type_name(&value) });
    };
    let mut o = Obj { map, path: String::new() };
    // Every field is read even after one fails, so the sender learns all its mistakes at once.
    let mut errs = Errors::default();

    let message_id = errs.take(o.required("message_id").and_then(|v| id(v, "message_id")));
    let timestamp = errs.take(
        o.required("timestamp")
            .and_then(|v| string(v, "timestamp"))
            .and_then(|t| Timestamp::parse(&t).map_err(|p| EnvelopeError::field("timestamp", p))),
    );
    let source = errs.take(
        o.required("source")
            .and_then(|v| string(v, "source"))
            .and_then(|s| crate::check_source(&s).map(|()| s).map_err(|p| EnvelopeError::field("source", p))),
    );
    let destination = errs.take(
        o.required("destination")
            .and_then(|v| string(v, "destination"))
            .and_then(|d| Destination::parse(&d).map_err(|p| EnvelopeError::field("destination", p))),
    );
    let message_type = errs.take(
        o.required("message_type")
            .and_then(|v| string(v, "message_type"))
            .and_then(|t| MessageType::parse(&t).map_err(|p| EnvelopeError::field("message_type", template(&t, p)))),
    );
    let priority = match o.optional("priority") {
        None => Some(Priority::default()),
        Some(v) => errs.take(
            string(v, "priority")
                .and_then(|p| Priority::parse(&p).map_err(|e| EnvelopeError::field("priority", template(&p, e)))),
        ),
    };
    let ttl = match o.optional("ttl") {
        None => Some(None),
        Some(v) => errs.take(number(v, "ttl", 1, u32::MAX).map(Some)),
    };
    let correlation_id = match o.optional("correlation_id") {
        None => Some(None),
        Some(v) => errs.take(id(v, "correlation_id").map(Some)),
    };
    let payload = errs.take(o.required("payload").and_then(payload));
    let security = match o.optional("security") {
        None => Some(None),
        Some(v) => errs.take(security(v).map(Some)),
    };
    let routing = match o.optional("routing") {
        None => Some(Routing::default()),
        Some(v) => errs.take(routing(v)),
    };

    let (
        Some(message_id),
        Some(timestamp),
        Some(source),
        Some(destination),
        Some(message_type),
        Some(priority),
        Some(ttl),
        Some(correlation_id),
        Some(payload),
        Some(security),
        Some(routing),
    ) = (
        message_id,
        timestamp,
        source,
        destination,
        message_type,
        priority,
        ttl,
        correlation_id,
        payload,
        security,
        routing,
    )
    else {
        return Err(errs.into_error().unwrap_or(EnvelopeError::NotAnObject { found: "an object" }));
    };
    let envelope = Envelope {
        message_id,
        timestamp,
        source,
        destination,
        message_type,
        priority,
        ttl,
        correlation_id,
        payload,
        security,
        routing,
        extra: o.map,
    };
    // What the reading could not see (source names, routing limits) is checked by validate();
    // its problems join the ones found so far.
    if let Err(e) = envelope.validate() {
        errs.0.extend(e.problems());
    }
    match errs.into_error() {
        None => Ok(envelope),
        Some(e) => Err(e),
    }
}

/// The field problems found so far.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    /// The value, or `None` after recording why there is none.
    fn take<T>(&mut self, r: Result<T, EnvelopeError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.extend(e.problems());
                None
            }
        }
    }

    fn into_error(mut self) -> Option<EnvelopeError> {
        // validate() may report again what reading found (an empty source, say): once is enough.
        let mut seen = std::collections::HashSet::new();
        self.0.retain(|e| seen.insert(e.field.clone()));
        EnvelopeError::from_problems(self.0)
    }
}

/// `request|response|event` is the design document's template, not an unknown value.
fn template(value: &str, problem: Problem) -> Problem {
    match problem {
        Problem::UnknownValue { expected, .. }
            if value.contains('|') && value.split('|').all(|alt| expected.split(", ").any(|e| e == alt)) =>
        {
            Problem::Template { value: value.to_string(), expected }
        }
        other => other,
    }
}

fn payload(v: Value) -> Result<Payload, EnvelopeError> {
    let mut o = Obj::new(v, "payload")?;
    let mut errs = Errors::default();
    // `data` may be any JSON value, null included, but must be present: a payload that forgot
    // its data is a bug worth reporting, not an empty message.
    let data = errs.take(o.map.remove("data").ok_or_else(|| EnvelopeError::field("payload.data", Problem::Missing)));
    let metadata = match o.optional("metadata") {
        None => Some(Metadata::default()),
        Some(v) => errs.take(metadata(v)),
    };
    match (data, metadata) {
        (Some(data), Some(metadata)) => Ok(Payload { data, metadata, extra: o.map }),
        _ => Err(errs.into_error().unwrap_or(EnvelopeError::field("payload", Problem::Missing))),
    }
}

fn metadata(v: Value) -> Result<Metadata, EnvelopeError> {
    let mut o = Obj::new(v, "payload.metadata")?;
    let mut m = Metadata::default();
    let mut errs = Errors::default();
    for (key, slot) in
        [("version", &mut m.version), ("content_type", &mut m.content_type), ("encoding", &mut m.encoding)]
    {
        if let Some(v) = o.optional(key) {
            let path = o.path(key);
            let text = string(v, &path).and_then(|t| match t.is_empty() {
                true => Err(EnvelopeError::field(path, Problem::Empty)),
                false => Ok(t),
            });
            if let Some(text) = errs.take(text) {
                *slot = text;
            }
        }
    }
    if let Some(v) = o.optional("status") {
        let path = o.path("status");
        let status = string(v, &path).and_then(|s| ReplyStatus::parse(&s).map_err(|p| EnvelopeError::field(path, p)));
        m.status = errs.take(status);
    }
    m.extra = o.map;
    match errs.into_error() {
        None => Ok(m),
        Some(e) => Err(e),
    }
}

fn security(v: Value) -> Result<Security, EnvelopeError> {
    let mut o = Obj::new(v, "security")?;
    let mut errs = Errors::default();
    let mut field = |key: &str| -> Option<String> {
        let v = o.optional(key)?;
        errs.take(string(v, &o.path(key)))
    };
    let signature = field("signature");
    let encryption = field("encryption");
    let key_id = field("key_id");
    match errs.into_error() {
        None => Ok(Security { signature, encryption, key_id, extra: o.map }),
        Some(e) => Err(e),
    }
}

fn routing(v: Value) -> Result<Routing, EnvelopeError> {
    let mut o = Obj::new(v, "routing")?;
    let mut r = Routing::default();
    let mut errs = Errors::default();
    if let Some(v) = o.optional("hops") {
        r.hops = errs.take(number(v, &o.path("hops"), 0, u32::MAX)).unwrap_or(0);
    }
    if let Some(v) = o.optional("max_hops") {
        r.max_hops = errs.take(number(v, &o.path("max_hops"), 1, u32::MAX)).unwrap_or(DEFAULT_MAX_HOPS);
    }
    if let Some(v) = o.optional("route") {
        let path = o.path("route");
        match v {
            Value::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let at = format!("{path}[{i}]");
                    let hop = string(item, &at).and_then(|h| match h.is_empty() {
                        true => Err(EnvelopeError::field(at, Problem::Empty)),
                        false => Ok(h),
                    });
                    if let Some(hop) = errs.take(hop) {
                        r.route.push(hop);
                    }
                }
            }
            other => {
                errs.0.push(FieldError {
                    field: path,
                    problem: Problem::WrongType { expected: "an array", found: type_name(&other) },
                });
            }
        }
    }
    if r.hops > r.max_hops {
        errs.0.push(FieldError {
            field: o.path("hops"),
            problem: Problem::HopsExceeded { hops: r.hops, max_hops: r.max_hops },
        });
    }
    r.extra = o.map;
    match errs.into_error() {
        None => Ok(r),
        Some(e) => Err(e),
    }
}

/// An object being taken apart: known keys are removed, what is left is preserved as extra.
struct Obj {
    map: Map<String, Value>,
    /// Path of this object ("" for the envelope itself).
    path: String,
}

impl Obj {
    fn new(v: Value, path: &str) -> Result<Obj, EnvelopeError> {
        match v {
            Value::Object(map) => Ok(Obj { map, path: path.to_string() }),
            other => {
                Err(EnvelopeError::field(path, Problem::WrongType { expected: "an object", found: type_name(&other) }))
            }
        }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn required(&mut self, key: &str) -> Result<Value, EnvelopeError> {
        match self.map.remove(key) {
            None => Err(EnvelopeError::field(self.path(key), Problem::Missing)),
            Some(Value::Null) => {
                Err(EnvelopeError::field(self.path(key), Problem::WrongType { expected: expected(key), found: "null" }))
            }
            Some(v) => Ok(v),
        }
    }

    /// An optional field; `null` counts as absent.
    fn optional(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }
}

/// What a required top-level field must be, for the message when it is `null`.
fn expected(key: &str) -> &'static str {
    match key {
        "payload" => "an object",
        _ => "a string",
    }
}

/// What kind of JSON value `v` is, as error messages say it ("a string", "an object", ...).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string(v: Value, path: &str) -> Result<String, EnvelopeError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(EnvelopeError::field(path, Problem::WrongType { expected: "a string", found: type_name(&other) })),
    }
}

fn number(v: Value, path: &str, min: u32, max: u32) -> Result<u32, EnvelopeError> {
    let Value::Number(n) = &v else {
        return Err(EnvelopeError::field(path, Problem::WrongType { expected: "a number", found: type_name(&v) }));
    };
    match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
        Some(n) if n >= min && n <= max => Ok(n),
        _ => Err(EnvelopeError::field(
            path,
            Problem::OutOfRange { value: n.to_string(), min: min.into(), max: max.into() },
        )),
    }
}

fn id(v: Value, path: &str) -> Result<MessageId, EnvelopeError> {
    let s = string(v, path)?;
    MessageId::parse(&s).map_err(|p| EnvelopeError::field(path, p))
}
