//! How a service reaches the broker, and how it behaves on the bus.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::error::SdkError;

/// Settings of one service instance. Start from [`ServiceConfig::default`] (a broker on
/// `127.0.0.1:1883`, no credentials) or [`ServiceConfig::from_env`], then adjust the fields.
///
/// Credentials come from here only: the SDK never has a built-in user name or password.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Overrides the service's own name ([`crate::BusService::name`]), e.g. to run a second,
    /// separately addressed copy. The name sets the inbox, status and client id.
    pub name: Option<String>,
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT user name, if the broker wants one.
    pub username: Option<String>,
    /// MQTT password.
    pub password: Option<Secret>,
    /// Makes the password anew for each connection attempt, instead of `password` (a gateway
    /// token expires; a reconnect a day later needs a fresh one).
    pub password_source: Option<PasswordSource>,
    /// TLS to the broker (default: plain TCP).
    pub tls: Option<crate::Tls>,
    /// First level of every Alicia topic (default `alicia`).
    pub topic_prefix: String,
    /// Identifies this instance among instances of the same service (default: 12 random hex
    /// digits). Part of the client id and of the reply topic.
    pub instance_id: Option<String>,
    /// Period of heartbeats on the discovery topic; zero disables them.
    pub heartbeat_interval: Duration,
    /// MQTT keep alive.
    pub keep_alive: Duration,
    /// First delay before reconnecting; doubled after each failure up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// MQTT 5 Session Expiry Interval. Zero (the default) starts a clean session on every
    /// connect: the SDK subscribes again each time, and a dead instance leaves no session
    /// behind that would keep receiving its share of the inbox.
    pub session_expiry: Duration,
    /// Largest packet accepted from the broker, in bytes (default 16 MiB).
    pub max_packet_size: u32,
    /// Handlers running at once; further messages wait for a slot (default 64).
    pub max_concurrent_handlers: usize,
    /// Signing, signature checks and payload encryption of envelopes (default: none; see
    /// [`crate::EnvelopeSecurity::from_home`]).
    pub security: crate::EnvelopeSecurity,
    /// Whether the broker tells who published each message (Alicia's broker with
    /// `identity_properties` on, as under `alicia up`): then [`crate::Context::sender`] is set
    /// and a device may send only as itself. Off by default: on a broker that does not set
    /// these properties, a client could set them itself.
    pub trust_broker_identity: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            name: None,
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            password_source: None,
            tls: None,
            topic_prefix: crate::topics::DEFAULT_PREFIX.into(),
            instance_id: None,
            heartbeat_interval: Duration::from_secs(30),
            keep_alive: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(30),
            session_expiry: Duration::ZERO,
            max_packet_size: 16 * 1024 * 1024,
            max_concurrent_handlers: 64,
            security: crate::EnvelopeSecurity::default(),
            trust_broker_identity: false,
        }
    }
}

impl ServiceConfig {
    /// The defaults, with the broker at `host:port`.
    pub fn broker(host: impl Into<String>, port: u16) -> Self {
        ServiceConfig { host: host.into(), port, ..ServiceConfig::default() }
    }

    /// Sets user name and password.
    pub fn with_credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(Secret::new(password));
        self
    }

    /// Sets the name override.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The defaults, changed by these environment variables when set:
    ///
    /// | variable                     | field                 |
    /// |------------------------------|-----------------------|
    /// | `ALICIA_MQTT_HOST`           | `host`                |
    /// | `ALICIA_MQTT_PORT`           | `port`                |
    /// | `ALICIA_MQTT_USERNAME`       | `username`            |
    /// | `ALICIA_MQTT_PASSWORD_FILE`  | `password`, read from the file (first line) |
    /// | `ALICIA_MQTT_PASSWORD`       | `password`            |
    /// | `ALICIA_MQTT_CAFILE`         | `tls`: TLS to the broker, trusting this CA file |
    /// | `ALICIA_MQTT_CERTFILE`, `ALICIA_MQTT_KEYFILE` | `tls`'s client certificate and key (both, with `ALICIA_MQTT_CAFILE`) |
    /// | `ALICIA_MQTT_TLS_SERVER_NAME`| `tls`'s server name   |
    /// | `ALICIA_TOPIC_PREFIX`        | `topic_prefix`        |
    /// | `ALICIA_SERVICE_NAME`        | `name`                |
    /// | `ALICIA_INSTANCE_ID`         | `instance_id`         |
    /// | `ALICIA_HEARTBEAT_SECS`      | `heartbeat_interval`  |
    /// | `ALICIA_HOME`                | `security`: [`crate::EnvelopeSecurity::from_home`] with the home and `ALICIA_SERVICE_NAME` (without it: no signing key, only trusted keys and encryption keys) |
    /// | `ALICIA_REQUIRE_SIGNED`      | `security`'s `require_signed` (`1`/`true`) |
    /// | `ALICIA_ENCRYPT_PAYLOADS`    | `security`'s `encrypt_payloads` (`1`/`true`) |
    ///
    /// A password file (systemd credentials, Docker secrets) is preferred to a variable, which
    /// other processes of the same user can read.
    pub fn from_env() -> Result<Self, SdkError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// [`ServiceConfig::from_env`] with another source of variables (for tests and for
    /// configuration files mapped to the same names).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SdkError> {
        let mut c = ServiceConfig::default();
        let bad = |var: &str, value: &str, why: &str| SdkError::Config(format!("{var}={value:?}: {why}"));
        if let Some(v) = get("ALICIA_MQTT_HOST") {
            c.host = v;
        }
        if let Some(v) = get("ALICIA_MQTT_PORT") {
            c.port = v.parse().map_err(|_| bad("ALICIA_MQTT_PORT", &v, "not a port number"))?;
        }
        c.username = get("ALICIA_MQTT_USERNAME");
        if let Some(path) = get("ALICIA_MQTT_PASSWORD_FILE") {
            c.password = Some(Secret::from_file(Path::new(&path))?);
        } else if let Some(v) = get("ALICIA_MQTT_PASSWORD") {
            c.password = Some(Secret::new(v));
        }
        if let Some(ca) = get("ALICIA_MQTT_CAFILE") {
            let mut tls = crate::Tls::new(ca);
            match (get("ALICIA_MQTT_CERTFILE"), get("ALICIA_MQTT_KEYFILE")) {
                (Some(cert), Some(key)) => tls = tls.with_client_cert(cert, key),
                (None, None) => {}
                _ => return Err(SdkError::Config("ALICIA_MQTT_CERTFILE and ALICIA_MQTT_KEYFILE go together".into())),
            }
            tls.server_name = get("ALICIA_MQTT_TLS_SERVER_NAME");
            c.tls = Some(tls);
        } else if get("ALICIA_MQTT_CERTFILE").is_some() {
            return Err(SdkError::Config("ALICIA_MQTT_CERTFILE needs ALICIA_MQTT_CAFILE (TLS)".into()));
        }
        if let Some(v) = get("ALICIA_TOPIC_PREFIX") {
            c.topic_prefix = v;
        }
        c.name = get("ALICIA_SERVICE_NAME");
        c.instance_id = get("ALICIA_INSTANCE_ID");
        if let Some(v) = get("ALICIA_HEARTBEAT_SECS") {
            let secs: u64 = v.parse().map_err(|_| bad("ALICIA_HEARTBEAT_SECS", &v, "not a number of seconds"))?;
            c.heartbeat_interval = Duration::from_secs(secs);
        }
        if let Some(home) = get("ALICIA_HOME") {
            let name = c.name.clone().unwrap_or_default();
            c.security = crate::EnvelopeSecurity::from_home(Path::new(&home), &name)?;
        }
        let flag = |var: &str| -> Result<bool, SdkError> {
            match get(var).as_deref() {
                None | Some("" | "0" | "false") => Ok(false),
                Some("1" | "true") => Ok(true),
                Some(v) => Err(bad(var, v, "expected 1, true, 0 or false")),
            }
        };
        c.security = c.security.require_signed(flag("ALICIA_REQUIRE_SIGNED")?);
        c.security = c.security.encrypt_payloads(flag("ALICIA_ENCRYPT_PAYLOADS")?);
        Ok(c)
    }

    /// Checks the settings that would otherwise fail later, on the bus.
    pub fn validate(&self) -> Result<(), SdkError> {
        let bad = |what: String| Err(SdkError::Config(what));
        if self.host.is_empty() {
            return bad("the broker host is empty".into());
        }
        crate::topics::check_prefix(&self.topic_prefix)?;
        if let Some(id) = &self.instance_id {
            if let Err(p) = alicia_envelope::check_service_name(id) {
                return bad(format!("instance id: {p}"));
            }
        }
        if (self.password.is_some() || self.password_source.is_some()) && self.username.is_none() {
            return bad("a password is set but no user name".into());
        }
        if self.reconnect_min.is_zero() || self.reconnect_min > self.reconnect_max {
            return bad(format!(
                "reconnect delays must satisfy 0 < reconnect_min ({:?}) <= reconnect_max ({:?})",
                self.reconnect_min, self.reconnect_max
            ));
        }
        if self.keep_alive < Duration::from_secs(5) {
            // rumqttc's minimum.
            return bad("keep_alive must be at least 5 seconds".into());
        }
        if self.max_concurrent_handlers == 0 {
            return bad("max_concurrent_handlers must be at least 1".into());
        }
        self.security.validate()?;
        if let Some(tls) = &self.tls {
            // Read the files now, so a wrong path is reported at start with its name.
            tls.client_config()?;
            tls.server_name(&self.host)?;
        }
        Ok(())
    }
}

/// Makes a password for each connection attempt (see [`ServiceConfig::password_source`]).
/// Returns the password, or why none could be made (the attempt then goes without).
#[derive(Clone)]
pub struct PasswordSource(std::sync::Arc<dyn Fn() -> Result<Secret, String> + Send + Sync>);

impl PasswordSource {
    /// Wraps `make`.
    pub fn new(make: impl Fn() -> Result<Secret, String> + Send + Sync + 'static) -> Self {
        PasswordSource(std::sync::Arc::new(make))
    }

    /// A fresh password.
    pub fn make(&self) -> Result<Secret, String> {
        (self.0)()
    }
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordSource(***)")
    }
}

/// A password: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads the first line of a file (the usual form of systemd credentials and Docker
    /// secrets), without its line ending.
    pub fn from_file(path: &Path) -> Result<Self, SdkError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SdkError::Config(format!("cannot read password file {}: {e}", path.display())))?;
        Ok(Secret(text.lines().next().unwrap_or("").to_string()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn environment_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let vars: HashMap<&str, String> = [
            ("ALICIA_MQTT_HOST", "broker.lan".to_string()),
            ("ALICIA_MQTT_PORT", "8883".into()),
            ("ALICIA_MQTT_USERNAME", "stt".into()),
            ("ALICIA_MQTT_PASSWORD_FILE", file.display().to_string()),
            ("ALICIA_MQTT_PASSWORD", "ignored".into()),
            ("ALICIA_HEARTBEAT_SECS", "5".into()),
        ]
        .into();
        let c = ServiceConfig::from_lookup(|k| vars.get(k).cloned()).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.username.as_deref()), ("broker.lan", 8883, Some("stt")));
        assert_eq!(c.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("s3cret"));
        c.validate().unwrap();

        let err = ServiceConfig::from_lookup(|k| (k == "ALICIA_MQTT_PORT").then(|| "http".to_string())).unwrap_err();
        assert!(err.to_string().contains("ALICIA_MQTT_PORT=\"http\""), "{err}");
        let none = ServiceConfig::from_lookup(|_| None).unwrap();
        assert!(none.username.is_none() && none.password.is_none());
        let err =
            ServiceConfig::from_lookup(|k| (k == "ALICIA_REQUIRE_SIGNED").then(|| "yes".to_string())).unwrap_err();
        assert!(err.to_string().contains("ALICIA_REQUIRE_SIGNED=\"yes\""), "{err}");
    }

    #[test]
    fn envelope_security_from_the_home() {
        let home = tempfile::tempdir().unwrap();
        let signing = home.path().join("keys").join("signing");
        std::fs::create_dir_all(&signing).unwrap();
        for s in ["stt", "voice"] {
            alicia_seal::SigningKey::generate(&signing.join(format!("{s}.key")), &signing.join(format!("{s}.pub")))
                .unwrap();
        }
        std::fs::write(home.path().join("keys").join("enc-1.key"), "ab".repeat(32)).unwrap();
        let vars: HashMap<&str, String> = [
            ("ALICIA_HOME", home.path().display().to_string()),
            ("ALICIA_SERVICE_NAME", "stt".into()),
            ("ALICIA_REQUIRE_SIGNED", "1".into()),
            ("ALICIA_ENCRYPT_PAYLOADS", "true".into()),
        ]
        .into();
        let c = ServiceConfig::from_lookup(|k| vars.get(k).cloned()).unwrap();
        let shown = format!("{:?}", c.security);
        for part in [
            "signing_key_id: Some(\"stt\")",
            "trusted: [\"stt\", \"voice\"]",
            "encryption_keys: Some([\"enc-1\"])",
            "require_signed: true",
            "encrypt_payloads: true",
        ] {
            assert!(shown.contains(part), "{part} in {shown}");
        }
        c.validate().unwrap();
        // Encrypting with no key ring cannot work.
        let c = ServiceConfig::from_lookup(|k| (k == "ALICIA_ENCRYPT_PAYLOADS").then(|| "1".to_string())).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("needs an encryption key ring"));
    }

    #[test]
    fn bad_settings_are_refused() {
        let c = ServiceConfig { topic_prefix: "alicia/#".into(), ..ServiceConfig::default() };
        assert!(c.validate().is_err());
        let c = ServiceConfig { password: Some(Secret::new("x")), ..ServiceConfig::default() };
        assert!(c.validate().unwrap_err().to_string().contains("no user name"));
        let c = ServiceConfig { reconnect_min: Duration::from_secs(60), ..ServiceConfig::default() };
        assert!(c.validate().is_err());
    }
}
