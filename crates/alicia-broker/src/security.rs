//! The broker's authentication and authorisation hook.
//!
//! The broker asks a [`Security`] implementation whether a client may connect and whether it
//! may publish, subscribe or receive on a topic. It does not know where the answers come from:
//! Mosquitto password and ACL files ([`crate::auth`]), tokens, or anything the binary wires in.
//! The implementation in force can be replaced at any time ([`crate::Broker::set_security`]),
//! which is how reloads are atomic: a new one is built completely, then swapped in.

use crate::listener::ConnInfo;

/// What a client wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages published on a topic.
    Read,
    /// Publish on a topic.
    Write,
    /// Subscribe with a topic filter.
    Subscribe,
}

/// What a client presented in CONNECT and on the wire.
#[derive(Debug)]
pub struct Credentials<'a> {
    /// Client identifier (possibly assigned by the broker).
    pub client_id: &'a str,
    /// User name from CONNECT.
    pub username: Option<&'a str>,
    /// Password from CONNECT.
    pub password: Option<&'a [u8]>,
    /// How the connection arrived (TLS identity, addresses).
    pub info: &'a ConnInfo,
}

/// A refused connection: the MQTT 5 CONNACK reason code and a reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// CONNACK reason code (mapped to a 3.1.1 return code for old clients).
    pub reason: u8,
    /// Why, for logs and the v5 reason string. Never contains secrets.
    pub why: String,
}

/// Decides who may connect and what they may do.
pub trait Security: Send + Sync + 'static {
    /// Checks a connecting client. On success returns the user name that authorisation
    /// decisions use (for example a certificate's Common Name), or `None` for anonymous.
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Option<String>, Refusal>;

    /// Whether `client_id`/`username` may perform `access` on `topic` (a topic name, or a
    /// filter for [`Access::Subscribe`]).
    fn authorize(&self, client_id: &str, username: Option<&str>, access: Access, topic: &str) -> bool;

    /// Whether [`Access::Read`] can ever be refused. When false the broker skips the check for
    /// each delivered message.
    fn checks_reads(&self) -> bool {
        true
    }
}

/// Everyone may do everything, with or without a user name. Used when no security is
/// configured (tests, benchmarks); `alicia up` always configures real security.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Security for AllowAll {
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Option<String>, Refusal> {
        Ok(creds.info.cert_identity.clone().or_else(|| creds.username.map(str::to_string)))
    }

    fn authorize(&self, _: &str, _: Option<&str>, _: Access, _: &str) -> bool {
        true
    }

    fn checks_reads(&self) -> bool {
        false
    }
}
