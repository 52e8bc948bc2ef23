//! The broker's authentication and authorisation hook.
//!
//! The broker asks a [`Security`] implementation whether a client may connect and whether it
//! may publish, subscribe or receive on a topic. It does not know where the answers come from:
//! Mosquitto password and ACL files ([`crate::auth`]), tokens, or anything the binary wires in.
//! The implementation in force can be replaced at any time ([`crate::Broker::set_security`]),
//! which is how reloads are atomic: a new one is built completely, then swapped in.

use crate::info::ConnInfo;

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

/// How a client proved who it is. With
/// [`Config::identity_properties`](crate::Config::identity_properties) on, the broker stamps it
/// on every message the client publishes as the user property [`AUTH_PROPERTY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A client certificate verified by the listener; the user name is its Common Name.
    Certificate,
    /// A token (for example the security gateway's JWT given as the MQTT password); the user
    /// name is its subject.
    Token,
    /// A user name and password checked against a password file.
    Password,
    /// Nothing was proved. A user name the client gave may still be used by authorisation (as
    /// Mosquitto does with `allow_anonymous true` and no password file), but it is not an
    /// identity and is never published as [`USER_PROPERTY`].
    Anonymous,
}

impl AuthMethod {
    /// The value of the [`AUTH_PROPERTY`] user property: `certificate`, `token`, `password` or
    /// `anonymous`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Certificate => "certificate",
            AuthMethod::Token => "token",
            AuthMethod::Password => "password",
            AuthMethod::Anonymous => "anonymous",
        }
    }
}

/// Who a connecting client is, as [`Security::authenticate`] established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name authorisation decisions use (`None`: no user name at all).
    pub username: Option<String>,
    /// How it was established.
    pub method: AuthMethod,
}

impl Identity {
    /// Authenticated by a client certificate whose Common Name is `cn`.
    pub fn certificate(cn: impl Into<String>) -> Self {
        Identity { username: Some(cn.into()), method: AuthMethod::Certificate }
    }

    /// Authenticated by a token whose subject is `subject`.
    pub fn token(subject: impl Into<String>) -> Self {
        Identity { username: Some(subject.into()), method: AuthMethod::Token }
    }

    /// Authenticated by the password of `user`.
    pub fn password(user: impl Into<String>) -> Self {
        Identity { username: Some(user.into()), method: AuthMethod::Password }
    }

    /// Not authenticated; `username` is the unverified name the client gave, if any.
    pub fn anonymous(username: Option<String>) -> Self {
        Identity { username, method: AuthMethod::Anonymous }
    }

    /// The authenticated user name: the user name unless the client is anonymous. This is the
    /// value of the [`USER_PROPERTY`] user property.
    pub fn authenticated_user(&self) -> Option<&str> {
        match self.method {
            AuthMethod::Anonymous => None,
            _ => self.username.as_deref(),
        }
    }
}

/// User property carrying the publisher's authenticated user name
/// ([`Identity::authenticated_user`]) when
/// [`Config::identity_properties`](crate::Config::identity_properties) is on. Absent for an
/// anonymous publisher.
pub const USER_PROPERTY: &str = "alicia-user";

/// User property carrying how the publisher authenticated ([`AuthMethod::as_str`]) when
/// [`Config::identity_properties`](crate::Config::identity_properties) is on.
pub const AUTH_PROPERTY: &str = "alicia-auth";

/// Decides who may connect and what they may do.
pub trait Security: Send + Sync + 'static {
    /// Checks a connecting client. On success returns who it is: the user name authorisation
    /// decisions use (for example a certificate's Common Name) and how it was proved.
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, Refusal>;

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
    fn authenticate(&self, creds: &Credentials<'_>) -> Result<Identity, Refusal> {
        Ok(match &creds.info.cert_identity {
            Some(cn) => Identity::certificate(cn.clone()),
            // A user name is taken as given: nothing proved it.
            None => Identity::anonymous(creds.username.map(str::to_string)),
        })
    }

    fn authorize(&self, _: &str, _: Option<&str>, _: Access, _: &str) -> bool {
        true
    }

    fn checks_reads(&self) -> bool {
        false
    }
}
