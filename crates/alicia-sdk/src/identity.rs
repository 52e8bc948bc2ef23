//! Who published a message, as the broker tells it.
//!
//! MQTT does not tell a subscriber who published what it receives. Alicia's broker can
//! (`identity_properties`): it adds two MQTT 5 user properties to every message a client
//! publishes, after removing any the client set itself, so nobody can forge them:
//!
//! | property | value |
//! |----------|-------|
//! | `alicia-user` | the publisher's authenticated user name (certificate CN, token subject or password user; absent for an anonymous client) |
//! | `alicia-auth` | how it logged in: `certificate`, `token`, `password` or `anonymous` |
//!
//! A service reads them only when [`crate::ServiceConfig::trust_broker_identity`] says the
//! broker is one that sets them (under `alicia up` it is): against Mosquitto, a client could
//! set them itself, so there they mean nothing and are ignored. Devices log in with a
//! certificate or a gateway token whose name is their device id; services with a password.

/// User property carrying the publisher's user name.
pub const USER_PROPERTY: &str = "alicia-user";
/// User property carrying how the publisher logged in.
pub const AUTH_PROPERTY: &str = "alicia-auth";

/// How a publisher logged in to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A client certificate (its CN is the user name): a device.
    Certificate,
    /// A gateway token (its subject is the user name): a device.
    Token,
    /// A password from the broker's password file: a service or a person's tool.
    Password,
    /// No credentials (only on brokers that allow it).
    Anonymous,
}

impl AuthMethod {
    /// The wire form (`certificate`, `token`, `password`, `anonymous`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Certificate => "certificate",
            AuthMethod::Token => "token",
            AuthMethod::Password => "password",
            AuthMethod::Anonymous => "anonymous",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "certificate" => AuthMethod::Certificate,
            "token" => AuthMethod::Token,
            "password" => AuthMethod::Password,
            "anonymous" => AuthMethod::Anonymous,
            _ => return None,
        })
    }
}

/// The publisher of a message, as the broker said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Its user name, unless it was anonymous.
    pub user: Option<String>,
    /// How it logged in.
    pub auth: AuthMethod,
}

impl Sender {
    /// Reads the broker's user properties; `None` if it set none (or an unknown method).
    pub fn from_properties(props: &[(String, String)]) -> Option<Sender> {
        let get = |name: &str| props.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let auth = AuthMethod::parse(get(AUTH_PROPERTY)?)?;
        Some(Sender { user: get(USER_PROPERTY).map(str::to_string), auth })
    }

    /// The device this is, if it logged in as one (certificate or token).
    pub fn device_id(&self) -> Option<&str> {
        match self.auth {
            AuthMethod::Certificate | AuthMethod::Token => self.user.as_deref(),
            AuthMethod::Password | AuthMethod::Anonymous => None,
        }
    }

    /// Whether an envelope `source` names this device (`ID` or `device_id:ID`); always true
    /// for a publisher that is not a device.
    pub fn may_speak_as(&self, source: &str) -> bool {
        match self.device_id() {
            None => true,
            Some(id) => source == id || source.strip_prefix("device_id:") == Some(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_what_the_broker_set() {
        let s =
            Sender::from_properties(&props(&[("x", "y"), ("alicia-user", "sonos"), ("alicia-auth", "certificate")]))
                .unwrap();
        assert_eq!(s.device_id(), Some("sonos"));
        assert!(s.may_speak_as("sonos") && s.may_speak_as("device_id:sonos"));
        assert!(!s.may_speak_as("front_door_lock") && !s.may_speak_as("device_id:lock"));
        let svc = Sender::from_properties(&props(&[("alicia-user", "router"), ("alicia-auth", "password")])).unwrap();
        assert_eq!(svc.device_id(), None);
        assert!(svc.may_speak_as("anything"));
        assert!(Sender::from_properties(&props(&[("alicia-user", "x")])).is_none());
        assert!(Sender::from_properties(&props(&[("alicia-auth", "magic")])).is_none());
        let anon = Sender::from_properties(&props(&[("alicia-auth", "anonymous")])).unwrap();
        assert_eq!((anon.user, anon.auth), (None, AuthMethod::Anonymous));
    }
}
