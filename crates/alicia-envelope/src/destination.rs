//! Where an envelope is going: a service, every listener, any provider of a capability, or one
//! device.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Problem;

/// The `destination` of an envelope, written on the wire as one string:
///
/// | wire string        | value                         |
/// |--------------------|-------------------------------|
/// | `broadcast`        | [`Destination::Broadcast`]    |
/// | `capability:NAME`  | [`Destination::Capability`]   |
/// | `device_id:ID`     | [`Destination::DeviceId`]     |
/// | `a/topic/name` (has a `/`) | [`Destination::Topic`] |
/// | `NAME` (no colon)  | [`Destination::Service`]      |
///
/// Names become MQTT topic levels (`alicia/services/NAME/inbox`, a device's command topic), so
/// none may be empty or contain `/`, `+`, `#` or control characters. A service name may not
/// contain `:` either: `room:kitchen` is refused as an unknown kind rather than taken as a
/// service, so a typo in a prefix is caught where it is made. Device ids and capability names
/// may contain `:` (MAC addresses are common device ids): only the first `:` separates the kind.
///
/// A destination with a `/` (and no `capability:`/`device_id:` prefix) is an MQTT topic, as in
/// the design document's registration (`"destination": "alicia/system/discovery/register"`):
/// it says the envelope is meant for whoever reads that topic, and it is delivered by being
/// published there. It must be a topic name a client may publish to: no `+`, `#` or NUL, and
/// not a `$` topic, which brokers keep for themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// One service, by name: delivered to that service's inbox.
    Service(String),
    /// Everyone listening on the broadcast topic.
    Broadcast,
    /// One online provider of a capability, chosen by the router.
    Capability(String),
    /// One device, by its registered id.
    DeviceId(String),
    /// Whoever reads an MQTT topic: the envelope is published to that topic.
    Topic(String),
}

/// The accepted destination kinds, for error messages.
const KINDS: &str =
    "`broadcast`, `capability:NAME`, `device_id:ID`, an MQTT topic (with `/`), or a service name without `:`";

impl Destination {
    /// A service destination. Validity is checked by [`Destination::validate`] (and by
    /// [`crate::Envelope::validate`]).
    pub fn service(name: impl Into<String>) -> Self {
        Destination::Service(name.into())
    }

    /// A capability destination.
    pub fn capability(name: impl Into<String>) -> Self {
        Destination::Capability(name.into())
    }

    /// A device destination.
    pub fn device(id: impl Into<String>) -> Self {
        Destination::DeviceId(id.into())
    }

    /// A topic destination.
    pub fn topic(topic: impl Into<String>) -> Self {
        Destination::Topic(topic.into())
    }

    /// Parses the wire form; the error says what is wrong (see the type's documentation).
    pub fn parse(s: &str) -> Result<Self, Problem> {
        if s.is_empty() {
            return Err(Problem::Empty);
        }
        if s == "broadcast" {
            return Ok(Destination::Broadcast);
        }
        // The design document's template, `service_name|broadcast|capability:capability_name`:
        // say so, rather than call it an unknown kind.
        if s.contains('|') && s.split('|').all(|alt| !alt.contains('|') && Destination::parse(alt).is_ok()) {
            return Err(Problem::Template { value: s.to_string(), expected: KINDS });
        }
        let dest = match s.split_once(':') {
            Some(("capability", name)) => Destination::Capability(name.to_string()),
            Some(("device_id", id)) => Destination::DeviceId(id.to_string()),
            _ if s.contains('/') => Destination::Topic(s.to_string()),
            None => Destination::Service(s.to_string()),
            Some(_) => return Err(Problem::UnknownValue { value: s.to_string(), expected: KINDS }),
        };
        if dest.name() == Some("") {
            return Err(Problem::BadName { value: s.to_string(), reason: "nothing follows the `:`" });
        }
        dest.validate()?;
        Ok(dest)
    }

    /// Checks the name inside (see the type's documentation).
    pub fn validate(&self) -> Result<(), Problem> {
        match self {
            Destination::Broadcast => Ok(()),
            Destination::Service(name) => check_service_name(name),
            Destination::Capability(name) | Destination::DeviceId(name) => check_name(name),
            Destination::Topic(topic) => check_topic(topic),
        }
    }

    /// The name inside, if any (service name, capability, device id or topic).
    pub fn name(&self) -> Option<&str> {
        match self {
            Destination::Broadcast => None,
            Destination::Service(n) | Destination::Capability(n) | Destination::DeviceId(n) | Destination::Topic(n) => {
                Some(n)
            }
        }
    }
}

/// A topic a client may publish to: no wildcards or NUL, not a `$` topic, no control characters,
/// and no longer than MQTT allows.
pub(crate) fn check_topic(topic: &str) -> Result<(), Problem> {
    let bad = |reason| Err(Problem::BadTopic { value: topic.to_string(), reason });
    if topic.contains(['+', '#']) {
        return bad("`+` and `#` are wildcards, which cannot appear in a topic name");
    }
    if topic.starts_with('$') {
        return bad("topics starting with `$` are reserved for the broker");
    }
    if topic.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if topic.len() > 65_535 {
        return bad("it is longer than an MQTT topic can be (65535 bytes)");
    }
    Ok(())
}

/// A name usable as one MQTT topic level: not empty, no `/`, `+`, `#`, no control characters.
pub(crate) fn check_name(name: &str) -> Result<(), Problem> {
    let bad = |reason| Err(Problem::BadName { value: name.to_string(), reason });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.contains(['/', '+', '#']) {
        return bad("`/`, `+` and `#` cannot appear in an MQTT topic level");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

/// A service name: a topic level without `:` (which would read as a destination kind).
pub fn check_service_name(name: &str) -> Result<(), Problem> {
    check_name(name)?;
    if name.contains(':') {
        return Err(Problem::BadName {
            value: name.to_string(),
            reason: "a service name cannot contain `:` (it would read as a destination kind)",
        });
    }
    if name == "broadcast" {
        return Err(Problem::BadName { value: name.to_string(), reason: "`broadcast` is reserved" });
    }
    Ok(())
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Service(name) => f.write_str(name),
            Destination::Broadcast => f.write_str("broadcast"),
            Destination::Capability(name) => write!(f, "capability:{name}"),
            Destination::DeviceId(id) => write!(f, "device_id:{id}"),
            Destination::Topic(topic) => f.write_str(topic),
        }
    }
}

impl FromStr for Destination {
    type Err = Problem;
    fn from_str(s: &str) -> Result<Self, Problem> {
        Destination::parse(s)
    }
}

impl Serialize for Destination {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        Destination::parse(&s).map_err(|p| serde::de::Error::custom(format_args!("destination {p}")))
    }
}

/// Characters allowed in a name, as a regular-expression character class (JSON Schema uses
/// ECMA 262 regular expressions): anything but `/`, `+`, `#` and control characters.
pub(crate) const NAME_CLASS: &str = r"[^/+#\u0000-\u001f\u007f-\u009f]";
const SERVICE_CLASS: &str = r"[^/+#:\u0000-\u001f\u007f-\u009f]";
/// A topic name: anything but wildcards and control characters, not starting with `$`, with at
/// least one `/` (else it reads as a service name).
const TOPIC: &str = r"[^$+#\u0000-\u001f\u007f-\u009f][^+#\u0000-\u001f\u007f-\u009f]*/[^+#\u0000-\u001f\u007f-\u009f]*|/[^+#\u0000-\u001f\u007f-\u009f]*";

impl JsonSchema for Destination {
    fn schema_name() -> Cow<'static, str> {
        "Destination".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let pattern = format!("^(broadcast|(capability|device_id):{NAME_CLASS}+|{SERVICE_CLASS}+|{TOPIC})$");
        json_schema!({
            "description": "Where the envelope goes: `broadcast`, `capability:NAME` (one online provider of a capability), `device_id:ID` (one device), an MQTT topic with at least one `/` (whoever reads that topic; the envelope is published there), or a service name (that service's inbox). Names cannot contain `/`, `+`, `#` or control characters; a service name cannot contain `:` and cannot be `broadcast`; a topic cannot contain `+` or `#` or start with `$`.",
            "type": "string",
            "pattern": pattern,
            "examples": ["stt_service", "broadcast", "capability:audio_playback", "device_id:sonos_kitchen_001", "alicia/system/discovery/register"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind() {
        for (wire, value) in [
            ("stt_service", Destination::service("stt_service")),
            ("broadcast", Destination::Broadcast),
            ("capability:audio_playback", Destination::capability("audio_playback")),
            ("device_id:sonos_kitchen_001", Destination::device("sonos_kitchen_001")),
            ("device_id:aa:bb:cc:dd:ee:ff", Destination::device("aa:bb:cc:dd:ee:ff")),
            ("alicia/system/discovery/register", Destination::topic("alicia/system/discovery/register")),
            ("room:kitchen/lamp", Destination::topic("room:kitchen/lamp")),
            ("/leading", Destination::topic("/leading")),
        ] {
            assert_eq!(Destination::parse(wire).unwrap(), value, "{wire}");
            assert_eq!(value.to_string(), wire);
        }
    }

    #[test]
    fn refuses_with_reasons() {
        assert_eq!(Destination::parse(""), Err(Problem::Empty));
        let e = Destination::parse("room:kitchen").unwrap_err();
        assert!(matches!(e, Problem::UnknownValue { ref value, .. } if value == "room:kitchen"), "{e}");
        for bad in ["capability:", "device_id:", "cap+", "x#", "device_id:a/b", "capability:a/b", "tab\there"] {
            let e = Destination::parse(bad).unwrap_err();
            assert!(matches!(e, Problem::BadName { .. }), "{bad}: {e}");
        }
        for bad in ["alicia/#", "a/+/b", "$SYS/broker/version", "a/\u{0}b", "a/\tb"] {
            let e = Destination::parse(bad).unwrap_err();
            assert!(matches!(e, Problem::BadTopic { .. }), "{bad}: {e}");
        }
        let e = Destination::parse("service_name|broadcast|capability:capability_name").unwrap_err();
        assert!(matches!(e, Problem::Template { .. }), "{e}");
        assert!(e.to_string().contains("choose one of them"), "{e}");
        // `|` in something that is not a list of destinations is just a bad name.
        assert!(matches!(Destination::parse("a|b:c"), Err(Problem::UnknownValue { .. })));
        assert!(Destination::service("broadcast").validate().is_err());
        assert!(Destination::service("a:b").validate().is_err());
    }
}
