//! The device's MQTT connection: the SDK's [`alicia_sdk::Link`] (reconnect with jittered
//! backoff, resubscribe on every CONNACK, TLS), given the device's id, will and login: a user
//! name and password, a gateway token made anew for every attempt, or a client certificate.

use std::sync::Arc;

use alicia_sdk::{LastWill, Link, LinkEvent, LinkOptions, PasswordSource, QoS, Secret, ServiceConfig};
use tokio::sync::mpsc;

use crate::{DeviceTopics, SimConfig, SimError};

pub use alicia_sdk::Tls;

/// Makes a fresh gateway token for each connection attempt (tokens expire; see
/// `alicia_gateway::tokens`). Returns the token, or why none could be made.
pub type TokenSource = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// How the device proves who it is.
#[derive(Clone, Default)]
pub enum Credentials {
    /// None (a broker that allows anonymous clients).
    #[default]
    Anonymous,
    /// A user name and password (a password file on Mosquitto).
    Password { username: String, password: String },
    /// A gateway token as the password, the device id as the user name (`alicia up` accepts
    /// it on every listener).
    Token(TokenSource),
    /// The client certificate of [`Tls::client_cert`]: the broker takes its CN as the user
    /// name (`use_identity_as_username`); nothing is sent in CONNECT.
    Certificate,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Anonymous => "Anonymous",
            Credentials::Password { .. } => "Password(***)",
            Credentials::Token(_) => "Token(***)",
            Credentials::Certificate => "Certificate",
        })
    }
}

/// Connects (in the background) with the device's id, its status topic's `offline` as the
/// will, subscribed to its command, errors, reply and rebirth topics on every connect.
pub(crate) fn open(
    cfg: &SimConfig,
    topics: &DeviceTopics,
) -> Result<(Link, mpsc::UnboundedReceiver<LinkEvent>), SimError> {
    let mut sdk = ServiceConfig::broker(cfg.host.clone(), cfg.port);
    sdk.keep_alive = cfg.keep_alive;
    (sdk.reconnect_min, sdk.reconnect_max) = (cfg.reconnect_min, cfg.reconnect_max);
    sdk.tls = cfg.tls.clone();
    match &cfg.credentials {
        Credentials::Anonymous | Credentials::Certificate => {}
        Credentials::Password { username, password } => {
            sdk.username = Some(username.clone());
            sdk.password = Some(Secret::new(password.clone()));
        }
        Credentials::Token(source) => {
            // A token that cannot be made now will not be made later either: say so at start.
            source().map_err(SimError::Credentials)?;
            let source = source.clone();
            sdk.username = Some(cfg.device_id.clone());
            sdk.password_source = Some(PasswordSource::new(move || source().map(Secret::new)));
        }
    }
    sdk.validate().map_err(|e| match &e {
        alicia_sdk::SdkError::Config(why) if why.starts_with("TLS") => {
            SimError::Tls(why.trim_start_matches("TLS: ").to_string())
        }
        _ => SimError::Config(e.to_string()),
    })?;
    let filters = [&topics.command, &topics.errors, &topics.reply, &topics.rebirth].map(|t| t.to_string());
    let opts = LinkOptions::new(cfg.device_id.clone(), filters)
        .with_will(LastWill::new(topics.status.clone(), "offline", QoS::AtLeastOnce, true, None))
        .with_label(format!("device {}", cfg.device_id));
    Ok(Link::connect(&sdk, opts))
}
