//! Alicia's topic names. See the crate documentation for the table.

use alicia_envelope::Destination;

use crate::error::SdkError;

/// The default first topic level.
pub const DEFAULT_PREFIX: &str = "alicia";

/// The name of the router service. Envelopes for `capability:` and `device_id:` destinations
/// are published to its inbox, the routing entry topic.
pub const ROUTER_SERVICE: &str = "router";

/// Topic names under one prefix (`alicia` unless configured otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics { prefix: DEFAULT_PREFIX.into() }
    }
}

impl Topics {
    /// Topics under `prefix` (see [`check_prefix`] for what is allowed).
    pub fn new(prefix: impl Into<String>) -> Result<Self, SdkError> {
        let prefix = prefix.into();
        check_prefix(&prefix)?;
        Ok(Topics { prefix })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>/services/<service>/inbox`: where envelopes for a service are published.
    pub fn inbox(&self, service: &str) -> String {
        format!("{}/services/{service}/inbox", self.prefix)
    }

    /// `$share/<service>/<prefix>/services/<service>/inbox`: what each instance subscribes to,
    /// so the broker gives every message to one instance of the service.
    pub fn shared_inbox(&self, service: &str) -> String {
        format!("$share/{service}/{}", self.inbox(service))
    }

    /// `<prefix>/services/<service>/reply/<instance>`: responses to one instance's requests
    /// (the MQTT 5 Response Topic of its requests).
    pub fn reply(&self, service: &str, instance: &str) -> String {
        format!("{}/services/{service}/reply/{instance}", self.prefix)
    }

    /// `<prefix>/system/services/<service>/status`: retained `online` or `offline`.
    pub fn status(&self, service: &str) -> String {
        format!("{}/system/services/{service}/status", self.prefix)
    }

    /// `<prefix>/system/discovery/heartbeat`: heartbeat envelopes of services and devices.
    pub fn heartbeat(&self) -> String {
        format!("{}/system/discovery/heartbeat", self.prefix)
    }

    /// `<prefix>/system/deadletter`: messages that could not be handled, with the reason.
    pub fn deadletter(&self) -> String {
        format!("{}/system/deadletter", self.prefix)
    }

    /// `<prefix>/broadcast`: envelopes for `broadcast`.
    pub fn broadcast(&self) -> String {
        format!("{}/broadcast", self.prefix)
    }

    /// The routing entry topic: the router's inbox.
    pub fn router(&self) -> String {
        self.inbox(ROUTER_SERVICE)
    }

    /// Where the SDK publishes an envelope for `destination`: a service's inbox directly,
    /// `broadcast` to the broadcast topic, a topic destination to that topic, and capabilities
    /// and devices to the router, which knows the registry.
    pub fn for_destination(&self, destination: &Destination) -> String {
        match destination {
            Destination::Service(name) => self.inbox(name),
            Destination::Broadcast => self.broadcast(),
            Destination::Topic(topic) => topic.clone(),
            Destination::Capability(_) | Destination::DeviceId(_) => self.router(),
        }
    }

    /// `<prefix>/devices/<id>/errors`: where a device hears why something it sent was refused
    /// when it named no MQTT 5 response topic.
    pub fn device_errors(&self, device_id: &str) -> String {
        format!("{}/devices/{device_id}/errors", self.prefix)
    }
}

/// A prefix is one or more topic levels without wildcards, not starting with `$` (brokers keep
/// `$` topics for themselves) and without empty levels.
pub fn check_prefix(prefix: &str) -> Result<(), SdkError> {
    let bad = |why: &str| Err(SdkError::Config(format!("topic prefix {prefix:?}: {why}")));
    if prefix.is_empty() {
        return bad("it is empty");
    }
    if prefix.contains(['+', '#']) || prefix.contains('\0') {
        return bad("it cannot contain `+`, `#` or NUL");
    }
    if prefix.starts_with('$') {
        return bad("it cannot start with `$`");
    }
    if prefix.split('/').any(str::is_empty) {
        return bad("it cannot have empty levels (leading, trailing or double `/`)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let t = Topics::default();
        assert_eq!(t.inbox("stt"), "alicia/services/stt/inbox");
        assert_eq!(t.shared_inbox("stt"), "$share/stt/alicia/services/stt/inbox");
        assert_eq!(t.reply("stt", "ab12"), "alicia/services/stt/reply/ab12");
        assert_eq!(t.status("stt"), "alicia/system/services/stt/status");
        assert_eq!(t.heartbeat(), "alicia/system/discovery/heartbeat");
        assert_eq!(t.deadletter(), "alicia/system/deadletter");
        assert_eq!(t.for_destination(&Destination::Broadcast), "alicia/broadcast");
        assert_eq!(t.for_destination(&Destination::capability("tts")), "alicia/services/router/inbox");
        assert_eq!(t.for_destination(&Destination::device("d1")), "alicia/services/router/inbox");
        assert_eq!(t.for_destination(&Destination::topic("a/b")), "a/b");
        assert_eq!(t.device_errors("d1"), "alicia/devices/d1/errors");
        assert_eq!(Topics::new("home/alicia").unwrap().inbox("x"), "home/alicia/services/x/inbox");
        for bad in ["", "a/+", "#", "$SYS", "/a", "a/", "a//b"] {
            assert!(Topics::new(bad).is_err(), "{bad}");
        }
    }
}
