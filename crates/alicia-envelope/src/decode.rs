//! Reading an envelope from JSON, field by field, so that every refusal names its field.
//!
//! serde's derived `Deserialize` would stop at the first problem with a message such as
//! "invalid type: integer, expected a string" and no field name; the router must put a reason
//! a person can act on into the dead-letter topic, so the envelope is read by hand from a
//! `serde_json::Value`. Serialisation and the JSON Schema still come from the derives on the
//! types in `lib.rs`; `tests/schema.rs` checks that both agree on which fields are required.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::destination::Destination;
use crate::error::{EnvelopeError, Problem};
use crate::timestamp::Timestamp;
use crate::{Envelope, MessageType, Metadata, Payload, Priority, ReplyStatus, Routing, Security};

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

    let message_id = uuid(o.required("message_id")?, &o.path("message_id"))?;
    let timestamp = string(o.required("timestamp")?, &o.path("timestamp"))?;
    let timestamp = Timestamp::parse(&timestamp).map_err(|p| EnvelopeError::field("timestamp", p))?;
    let source = string(o.required("source")?, &o.path("source"))?;
    let destination = string(o.required("destination")?, &o.path("destination"))?;
    let destination = Destination::parse(&destination).map_err(|p| EnvelopeError::field("destination", p))?;
    let message_type = string(o.required("message_type")?, &o.path("message_type"))?;
    let message_type = MessageType::parse(&message_type).map_err(|p| EnvelopeError::field("message_type", p))?;
    let priority = match o.optional("priority") {
        None => Priority::default(),
        Some(v) => Priority::parse(&string(v, "priority")?).map_err(|p| EnvelopeError::field("priority", p))?,
    };
    let ttl = number(o.required("ttl")?, "ttl", 1, u32::MAX)?;
    let correlation_id = match o.optional("correlation_id") {
        None => None,
        Some(v) => Some(uuid(v, "correlation_id")?),
    };
    let payload = payload(o.required("payload")?)?;
    let security = match o.optional("security") {
        None => None,
        Some(v) => Some(security(v)?),
    };
    let routing = match o.optional("routing") {
        None => Routing::default(),
        Some(v) => routing(v)?,
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
    envelope.validate()?;
    Ok(envelope)
}

fn payload(v: Value) -> Result<Payload, EnvelopeError> {
    let mut o = Obj::new(v, "payload")?;
    // `data` may be any JSON value, null included, but must be present: a payload that forgot
    // its data is a bug worth reporting, not an empty message.
    let data = o.map.remove("data").ok_or_else(|| EnvelopeError::field("payload.data", Problem::Missing))?;
    let metadata = match o.optional("metadata") {
        None => Metadata::default(),
        Some(v) => metadata(v)?,
    };
    Ok(Payload { data, metadata, extra: o.map })
}

fn metadata(v: Value) -> Result<Metadata, EnvelopeError> {
    let mut o = Obj::new(v, "payload.metadata")?;
    let mut m = Metadata::default();
    if let Some(v) = o.optional("version") {
        m.version = string(v, &o.path("version"))?;
    }
    if let Some(v) = o.optional("content_type") {
        m.content_type = string(v, &o.path("content_type"))?;
    }
    if let Some(v) = o.optional("encoding") {
        m.encoding = string(v, &o.path("encoding"))?;
    }
    if let Some(v) = o.optional("status") {
        let path = o.path("status");
        let s = string(v, &path)?;
        m.status = Some(ReplyStatus::parse(&s).map_err(|p| EnvelopeError::field(path, p))?);
    }
    m.extra = o.map;
    Ok(m)
}

fn security(v: Value) -> Result<Security, EnvelopeError> {
    let mut o = Obj::new(v, "security")?;
    let mut field = |key: &str| -> Result<Option<String>, EnvelopeError> {
        match o.optional(key) {
            None => Ok(None),
            Some(v) => string(v, &o.path(key)).map(Some),
        }
    };
    let signature = field("signature")?;
    let encryption = field("encryption")?;
    let key_id = field("key_id")?;
    Ok(Security { signature, encryption, key_id, extra: o.map })
}

fn routing(v: Value) -> Result<Routing, EnvelopeError> {
    let mut o = Obj::new(v, "routing")?;
    let mut r = Routing::default();
    if let Some(v) = o.optional("hops") {
        r.hops = number(v, &o.path("hops"), 0, u32::MAX)?;
    }
    if let Some(v) = o.optional("max_hops") {
        r.max_hops = number(v, &o.path("max_hops"), 1, u32::MAX)?;
    }
    if let Some(v) = o.optional("route") {
        let path = o.path("route");
        let Value::Array(items) = v else {
            return Err(EnvelopeError::field(path, Problem::WrongType { expected: "an array", found: type_name(&v) }));
        };
        r.route = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| string(item, &format!("{path}[{i}]")))
            .collect::<Result<_, _>>()?;
    }
    r.extra = o.map;
    Ok(r)
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
        "ttl" => "a number",
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

fn uuid(v: Value, path: &str) -> Result<Uuid, EnvelopeError> {
    let s = string(v, path)?;
    // Only the hyphenated 8-4-4-4-12 form: Uuid::parse_str also takes the simple, braced and
    // URN forms, which would be rewritten on the way out.
    if s.len() != 36 {
        let reason = "expected the hyphenated form xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".to_string();
        return Err(EnvelopeError::field(path, Problem::BadUuid { value: s, reason }));
    }
    Uuid::parse_str(&s).map_err(|e| EnvelopeError::field(path, Problem::BadUuid { value: s, reason: e.to_string() }))
}
