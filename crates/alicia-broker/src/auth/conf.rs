//! A parser for the parts of `mosquitto.conf` Alicia understands.
//!
//! One option per line, `name value`; lines starting with `#` are comments. Supported:
//! `listener PORT [ADDRESS]` and, after it, the per-listener `protocol`, `max_connections`,
//! `cafile`, `certfile`, `keyfile`, `crlfile`, `require_certificate`,
//! `use_identity_as_username`; the global `max_inflight_messages`, `max_topic_alias`, `max_queued_messages`,
//! `message_size_limit`, `max_keepalive`, `persistence`, `persistence_location`,
//! `autosave_interval`, `log_dest`, `log_type`, `sys_interval`, `per_listener_settings`; and
//! the security options `allow_anonymous`, `password_file`, `acl_file`, which are global, or
//! per listener under `per_listener_settings true`.
//!
//! Other Mosquitto 2.0 options are ignored with a [`Warning`] naming file, line and option, so a
//! user's existing file still loads. A misspelt option, a wrong value (`max_connections abc`,
//! `listener 99999`) or a contradiction (`certfile` without `keyfile`) is an [`Error`]: Mosquitto
//! refuses those too, and silently dropping, say, a misspelt `acl_file` would open the broker.
//!
//! Differences from Mosquitto worth knowing:
//! - relative paths are resolved against the configuration file's directory (Mosquitto uses
//!   its working directory), so a configuration and its files can move together;
//! - listener options before the first `listener` line configure Mosquitto's implicit default
//!   listener on port 1883; Alicia does not create it, so they are ignored with a warning;
//!   under `per_listener_settings true` security options there are an error instead, because
//!   ignoring an `acl_file` would grant more than the user wrote;
//! - values are split on spaces and tabs (Mosquitto: spaces only), and a single-word value may
//!   be followed by a `# comment`. Values that are paths take the rest of the line verbatim, as
//!   in Mosquitto, so a `#` there is part of the path.

use std::path::{Path, PathBuf};

use super::{first_word, read_text, Error};
use crate::listener::{TlsFiles, Transport};

/// An option Alicia ignores, and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The configuration file.
    pub file: PathBuf,
    /// Line number, from 1.
    pub line: usize,
    /// The option, as written.
    pub option: String,
    /// Why it is ignored.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}: {}", self.file.display(), self.line, self.option, self.message)
    }
}

/// Authentication and authorisation settings: global, or one listener's under
/// `per_listener_settings true`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityConf {
    /// Whether clients without a user name may connect. Mosquitto 2.0 defaults to `false`.
    pub allow_anonymous: bool,
    /// `password_file`, resolved. Without one, clients with a user name are refused (unless
    /// another mechanism such as `use_identity_as_username` authenticates them).
    pub password_file: Option<PathBuf>,
    /// `acl_file`, resolved. Without one, Mosquitto lets every connected client read and write
    /// everything.
    pub acl_file: Option<PathBuf>,
}

/// One `listener` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConf {
    /// Line of the `listener` option, for messages about this listener.
    pub line: usize,
    /// TCP port (1–65535).
    pub port: u16,
    /// Host name or address to bind, as written (`localhost`, `127.0.0.1`, `::1`). `None` means
    /// every interface, IPv4 and IPv6.
    pub address: Option<String>,
    /// `protocol mqtt` (default) or `protocol websockets`.
    pub protocol: Transport,
    /// Connection limit for this listener; `None` is unlimited (Mosquitto: `-1`, and also `0`).
    pub max_connections: Option<u32>,
    /// CA certificates client certificates must chain to.
    pub cafile: Option<PathBuf>,
    /// Server certificate chain. TLS is on when this and `keyfile` are set.
    pub certfile: Option<PathBuf>,
    /// Server private key.
    pub keyfile: Option<PathBuf>,
    /// Certificate revocation list for client certificates.
    pub crlfile: Option<PathBuf>,
    /// Refuse clients without a valid certificate.
    pub require_certificate: bool,
    /// Use the client certificate's Common Name as user name (no password check).
    pub use_identity_as_username: bool,
    /// This listener's security, used only when [`MosquittoConf::per_listener_settings`] is set.
    pub security: SecurityConf,
}

impl ListenerConf {
    fn new(line: usize, port: u16, address: Option<String>) -> ListenerConf {
        ListenerConf {
            line,
            port,
            address,
            protocol: Transport::Mqtt,
            max_connections: None,
            cafile: None,
            certfile: None,
            keyfile: None,
            crlfile: None,
            require_certificate: false,
            use_identity_as_username: false,
            security: SecurityConf::default(),
        }
    }

    /// The listener's TLS settings, if TLS is on (both `certfile` and `keyfile` set, as in
    /// Mosquitto).
    pub fn tls(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cafile: self.cafile.clone(),
            certfile: self.certfile.clone()?,
            keyfile: self.keyfile.clone()?,
            require_certificate: self.require_certificate,
            use_identity_as_username: self.use_identity_as_username,
            crlfile: self.crlfile.clone(),
        })
    }
}

/// A `log_dest` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// `stdout`.
    Stdout,
    /// `stderr`.
    Stderr,
    /// `syslog`.
    Syslog,
    /// `topic`: log messages published on `$SYS/broker/log/...`.
    Topic,
    /// `dlt`: the automotive Diagnostic Log and Trace daemon.
    Dlt,
    /// `file PATH`, resolved.
    File(PathBuf),
}

/// A `log_type` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `notice`.
    Notice,
    /// `information`.
    Information,
    /// `debug`.
    Debug,
    /// `subscribe`: log each subscription.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
    /// `websockets`: WebSocket transport details.
    WebSockets,
    /// `internal`.
    Internal,
    /// `all`.
    All,
}

/// What Alicia took from a `mosquitto.conf`. Options not set keep Mosquitto's defaults, given
/// in each field's documentation, so the caller can tell "not set" from a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MosquittoConf {
    /// Listeners in file order.
    pub listeners: Vec<ListenerConf>,
    /// Whether security options are per listener ([`ListenerConf::security`]) rather than
    /// global ([`MosquittoConf::security`]). Use [`MosquittoConf::security_for`].
    pub per_listener_settings: bool,
    /// Global security settings (when `per_listener_settings` is false).
    pub security: SecurityConf,
    /// QoS 1/2 messages in flight per client; `Some(0)` is unlimited. Mosquitto default 20.
    pub max_inflight_messages: Option<u16>,
    /// Topic aliases a v5 client may use towards the broker (Topic Alias Maximum in CONNACK).
    /// Mosquitto default 10.
    pub max_topic_alias: Option<u16>,
    /// Messages queued per offline client; `Some(0)` is unlimited. Mosquitto default 1000.
    pub max_queued_messages: Option<usize>,
    /// Largest PUBLISH payload accepted, in bytes; `Some(0)` is unlimited (the default).
    pub message_size_limit: Option<u32>,
    /// Longest keep-alive granted, seconds. Mosquitto default 65535.
    pub max_keepalive: Option<u16>,
    /// Whether to save sessions and retained messages. Mosquitto default false.
    pub persistence: bool,
    /// Directory for the persistence file, resolved.
    pub persistence_location: Option<PathBuf>,
    /// Seconds between saves; `Some(0)` saves only on shutdown. Mosquitto default 1800.
    pub autosave_interval: Option<u32>,
    /// Log destinations; `Some(vec![])` after `log_dest none`. Mosquitto default stderr.
    pub log_dest: Option<Vec<LogDest>>,
    /// Logged message types; `Some(vec![])` after `log_type none`. Mosquitto default error,
    /// warning, notice and information.
    pub log_type: Option<Vec<LogType>>,
    /// Seconds between `$SYS` updates; `Some(0)` disables them. Mosquitto default 10.
    pub sys_interval: Option<u16>,
    /// Alicia's extension, set only from Alicia's YAML (`identity_properties: true`; no
    /// `mosquitto.conf` option): stamp published messages with the publisher's identity
    /// (`Config::identity_properties`).
    pub identity_properties: bool,
    /// Options that were ignored, in file order. Show them to the user.
    pub warnings: Vec<Warning>,
    /// Every option that names a file or directory, with its line, for
    /// [`MosquittoConf::check_files`].
    pub files: Vec<FileOption>,
}

/// An option naming a file, where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOption {
    /// The configuration file.
    pub origin: PathBuf,
    /// Line number, from 1 (0 when the source has no lines to point at).
    pub line: usize,
    /// The option (`password_file`, `cafile`, `log_dest file`, ...).
    pub option: String,
    /// The path, resolved.
    pub path: PathBuf,
    /// What must be true of it.
    pub kind: FileKind,
}

/// What an option's path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A file Alicia reads (password, ACL, certificates, keys, CRL): it must exist and be
    /// readable now.
    Read,
    /// A file Alicia appends to (`log_dest file`): its directory must exist.
    Append,
    /// A directory Alicia writes into (`persistence_location`): it must be a directory if it
    /// exists; it is created when the broker starts.
    Directory,
}

impl MosquittoConf {
    /// Reads a configuration file. Errors name file, line and option.
    pub fn load(path: impl AsRef<Path>) -> Result<MosquittoConf, Error> {
        let path = path.as_ref();
        MosquittoConf::parse(&read_text(path)?, path)
    }

    /// Parses configuration text. `origin` names the source in errors and warnings, and its
    /// directory is where relative paths are resolved.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<MosquittoConf, Error> {
        let origin = origin.as_ref();
        let mut p = Parser {
            origin,
            base: origin.parent().filter(|d| !d.as_os_str().is_empty()).map(Path::to_path_buf),
            conf: MosquittoConf::default(),
            scope: Scope::Default,
            security_seen: false,
            log_file_seen: false,
        };
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (option, args) = first_word(line);
            p.option(n + 1, option, args)?;
        }
        p.check_listeners()?;
        Ok(p.conf)
    }

    /// Checks every file the configuration names, before anything is started or created: a
    /// missing or unreadable password file, ACL file, certificate, key or CRL is an error naming
    /// the option, the file and the line.
    pub fn check_files(&self) -> Result<(), Error> {
        for f in &self.files {
            let problem = match f.kind {
                FileKind::Read => {
                    std::fs::File::open(&f.path).err().map(|e| format!("cannot read {}: {e}", f.path.display()))
                }
                FileKind::Append => match f.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    Some(dir) if !dir.is_dir() => Some(format!("directory {} does not exist", dir.display())),
                    _ => None,
                },
                FileKind::Directory => {
                    (f.path.exists() && !f.path.is_dir()).then(|| format!("{} is not a directory", f.path.display()))
                }
            };
            if let Some(message) = problem {
                return Err(Error::Value { path: f.origin.clone(), line: f.line, option: f.option.clone(), message });
            }
        }
        Ok(())
    }

    /// The security settings that apply to listener number `listener` (an index into
    /// [`MosquittoConf::listeners`]), following `per_listener_settings`.
    pub fn security_for(&self, listener: usize) -> &SecurityConf {
        match self.listeners.get(listener) {
            Some(l) if self.per_listener_settings => &l.security,
            _ => &self.security,
        }
    }
}

/// Where listener-scoped options go.
#[derive(Clone, Copy)]
enum Scope {
    /// Before any `listener`: Mosquitto's default listener, which we do not create.
    Default,
    Listener(usize),
    /// After a listener we could not represent (already warned about).
    Skipped,
}

struct Parser<'a> {
    origin: &'a Path,
    base: Option<PathBuf>,
    conf: MosquittoConf,
    scope: Scope,
    security_seen: bool,
    log_file_seen: bool,
}

/// Mosquitto 2.0 options Alicia does not implement (warned about, not refused).
const UNSUPPORTED: &[&str] = &[
    "address",
    "addresses",
    "allow_duplicate_messages",
    "allow_zero_length_clientid",
    "auth_plugin",
    "auth_plugin_deny_special_chars",
    "auto_id_prefix",
    "autosave_on_changes",
    "bind_address",
    "bind_interface",
    "bridge_alpn",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
    "capath",
    "check_retain_source",
    "ciphers",
    "ciphers_tls1.3",
    "cleansession",
    "clientid",
    "clientid_prefixes",
    "connection",
    "connection_messages",
    "dhparamfile",
    "http_dir",
    "idle_timeout",
    "include_dir",
    "keepalive_interval",
    "local_cleansession",
    "local_clientid",
    "local_password",
    "local_username",
    "log_facility",
    "log_timestamp",
    "log_timestamp_format",
    "max_inflight_bytes",
    "max_packet_size",
    "max_qos",
    "max_queued_bytes",
    "memory_limit",
    "mount_point",
    "notification_topic",
    "notifications",
    "notifications_local_only",
    "password",
    "persistence_file",
    "persistent_client_expiration",
    "pid_file",
    "plugin",
    "port",
    "psk_file",
    "psk_hint",
    "queue_qos0_messages",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "restart_timeout",
    "retain_available",
    "retry_interval",
    "round_robin",
    "set_tcp_nodelay",
    "socket_domain",
    "start_type",
    "threshold",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "tls_version",
    "topic",
    "try_private",
    "upgrade_outgoing_qos",
    "use_subject_as_username",
    "use_username_as_clientid",
    "user",
    "username",
    "websockets_headers_size",
    "websockets_log_level",
];

/// Sets a path option unless it is already set (Mosquitto refuses duplicates).
fn put_once(slot: &mut Option<PathBuf>, path: PathBuf) -> bool {
    if slot.is_some() {
        return false;
    }
    *slot = Some(path);
    true
}

/// Largest PUBLISH payload MQTT can carry (Mosquitto's `MQTT_MAX_PAYLOAD`).
const MQTT_MAX_PAYLOAD: i64 = 268_435_455;

impl Parser<'_> {
    fn err(&self, line: usize, option: &str, message: impl Into<String>) -> Error {
        Error::Value { path: self.origin.to_path_buf(), line, option: option.to_string(), message: message.into() }
    }

    fn warn(&mut self, line: usize, option: &str, message: impl Into<String>) {
        self.conf.warnings.push(Warning {
            file: self.origin.to_path_buf(),
            line,
            option: option.to_string(),
            message: message.into(),
        });
    }

    /// The single value of an option, allowing a trailing `# comment`.
    fn word<'t>(&self, line: usize, option: &str, args: &'t str) -> Result<&'t str, Error> {
        let (value, rest) = first_word(args);
        if value.is_empty() {
            return Err(self.err(line, option, "missing value"));
        }
        if !rest.is_empty() && !rest.starts_with('#') {
            return Err(self.err(line, option, format!("unexpected {rest:?} after the value")));
        }
        Ok(value)
    }

    fn bool(&self, line: usize, option: &str, args: &str) -> Result<bool, Error> {
        match self.word(line, option, args)? {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            v => Err(self.err(line, option, format!("invalid value {v:?} (expected true or false)"))),
        }
    }

    fn int(&self, line: usize, option: &str, args: &str, min: i64, max: i64) -> Result<i64, Error> {
        let v = self.word(line, option, args)?;
        match v.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            Ok(_) => Err(self.err(line, option, format!("{v} is out of range ({min} to {max})"))),
            Err(_) => Err(self.err(line, option, format!("invalid number {v:?}"))),
        }
    }

    /// A path value: the rest of the line, resolved against the file's directory, and
    /// remembered for [`MosquittoConf::check_files`].
    fn path(&mut self, line: usize, option: &str, args: &str) -> Result<PathBuf, Error> {
        self.path_of(line, option, args, FileKind::Read)
    }

    fn path_of(&mut self, line: usize, option: &str, args: &str, kind: FileKind) -> Result<PathBuf, Error> {
        if args.is_empty() {
            return Err(self.err(line, option, "missing value"));
        }
        let path = Path::new(args);
        let path = match &self.base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        };
        self.conf.files.push(FileOption {
            origin: self.origin.to_path_buf(),
            line,
            option: option.to_string(),
            path: path.clone(),
            kind,
        });
        Ok(path)
    }

    /// The listener listener-scoped options apply to, or `None` (with a warning) before the
    /// first `listener`.
    fn listener(&mut self, line: usize, option: &str) -> Option<usize> {
        match self.scope {
            Scope::Listener(i) => Some(i),
            Scope::Skipped => None,
            Scope::Default => {
                self.warn(
                    line,
                    option,
                    "applies to Mosquitto's default listener on port 1883, which Alicia does not create; \
                     ignored (put it after a listener line)",
                );
                None
            }
        }
    }

    /// Where a security option goes: the global settings, or the current listener's.
    fn security(&mut self, line: usize, option: &str) -> Result<Option<&mut SecurityConf>, Error> {
        self.security_seen = true;
        if !self.conf.per_listener_settings {
            return Ok(Some(&mut self.conf.security));
        }
        match self.scope {
            Scope::Listener(i) => Ok(self.conf.listeners.get_mut(i).map(|l| &mut l.security)),
            Scope::Skipped => Ok(None),
            Scope::Default => Err(self.err(
                line,
                option,
                "with per_listener_settings true, security options must follow a listener line \
                 (Alicia has no default listener)",
            )),
        }
    }

    fn option(&mut self, line: usize, option: &str, args: &str) -> Result<(), Error> {
        match option {
            "listener" => self.listener_line(line, args)?,
            "protocol" => {
                let protocol = match self.word(line, option, args)? {
                    "mqtt" => Transport::Mqtt,
                    "websockets" => Transport::WebSockets,
                    v => {
                        return Err(self.err(
                            line,
                            option,
                            format!("invalid value {v:?} (expected mqtt or websockets)"),
                        ))
                    }
                };
                if let Some(i) = self.listener(line, option) {
                    self.conf.listeners[i].protocol = protocol;
                }
            }
            "max_connections" => {
                let n = self.int(line, option, args, i64::from(i32::MIN), i64::from(i32::MAX))?;
                let limit = u32::try_from(n).ok().filter(|&n| n > 0);
                if let Some(i) = self.listener(line, option) {
                    self.conf.listeners[i].max_connections = limit;
                }
            }
            "cafile" | "certfile" | "keyfile" | "crlfile" => {
                let path = self.path(line, option, args)?;
                if let Some(i) = self.listener(line, option) {
                    let l = &mut self.conf.listeners[i];
                    let slot = match option {
                        "cafile" => &mut l.cafile,
                        "certfile" => &mut l.certfile,
                        "keyfile" => &mut l.keyfile,
                        _ => &mut l.crlfile,
                    };
                    if !put_once(slot, path) {
                        return Err(self.err(line, option, "given twice"));
                    }
                }
            }
            "require_certificate" | "use_identity_as_username" => {
                let v = self.bool(line, option, args)?;
                if let Some(i) = self.listener(line, option) {
                    let l = &mut self.conf.listeners[i];
                    if option == "require_certificate" {
                        l.require_certificate = v;
                    } else {
                        l.use_identity_as_username = v;
                    }
                }
            }
            "max_inflight_messages" => {
                let n = self.int(line, option, args, i64::from(i32::MIN), i64::from(u16::MAX))?;
                // Mosquitto: negative or 65535 means unlimited, stored as 0.
                self.conf.max_inflight_messages = Some(u16::try_from(n).ok().filter(|&n| n != u16::MAX).unwrap_or(0));
            }
            "max_topic_alias" => {
                let n = self.int(line, option, args, 0, i64::from(u16::MAX))?;
                self.conf.max_topic_alias = u16::try_from(n).ok();
            }
            "max_queued_messages" => {
                let n = self.int(line, option, args, i64::from(i32::MIN), i64::from(i32::MAX))?;
                self.conf.max_queued_messages = Some(usize::try_from(n).unwrap_or(0));
            }
            "message_size_limit" => {
                let n = self.int(line, option, args, 0, i64::MAX)?;
                if n > MQTT_MAX_PAYLOAD {
                    // Mosquitto's own example files (and Alicia's design document) give
                    // 268435456, one over what MQTT can carry: clamp rather than refuse.
                    self.warn(line, option, format!("{n} is above MQTT's largest payload; using {MQTT_MAX_PAYLOAD}"));
                }
                self.conf.message_size_limit = u32::try_from(n.min(MQTT_MAX_PAYLOAD)).ok();
            }
            "max_keepalive" => {
                let n = self.int(line, option, args, 0, i64::from(u16::MAX))?;
                self.conf.max_keepalive = u16::try_from(n).ok();
            }
            "persistence" | "retained_persistence" => self.conf.persistence = self.bool(line, option, args)?,
            "persistence_location" => {
                let path = self.path_of(line, option, args, FileKind::Directory)?;
                if !put_once(&mut self.conf.persistence_location, path) {
                    return Err(self.err(line, option, "given twice"));
                }
            }
            "autosave_interval" => {
                let n = self.int(line, option, args, i64::from(i32::MIN), i64::from(i32::MAX))?;
                self.conf.autosave_interval = Some(u32::try_from(n).unwrap_or(0));
            }
            "sys_interval" => {
                let n = self.int(line, option, args, 0, i64::from(u16::MAX))?;
                self.conf.sys_interval = u16::try_from(n).ok();
            }
            "log_dest" => self.log_dest(line, args)?,
            "log_type" => {
                let v = self.word(line, option, args)?;
                let t = match v {
                    "none" => {
                        self.conf.log_type = Some(Vec::new());
                        return Ok(());
                    }
                    "error" => LogType::Error,
                    "warning" => LogType::Warning,
                    "notice" => LogType::Notice,
                    "information" => LogType::Information,
                    "debug" => LogType::Debug,
                    "subscribe" => LogType::Subscribe,
                    "unsubscribe" => LogType::Unsubscribe,
                    "websockets" => LogType::WebSockets,
                    "internal" => LogType::Internal,
                    "all" => LogType::All,
                    v => return Err(self.err(line, option, format!("invalid value {v:?}"))),
                };
                let types = self.conf.log_type.get_or_insert_with(Vec::new);
                if !types.contains(&t) {
                    types.push(t);
                }
            }
            "allow_anonymous" => {
                let v = self.bool(line, option, args)?;
                if let Some(s) = self.security(line, option)? {
                    s.allow_anonymous = v;
                }
            }
            "password_file" | "acl_file" => {
                let path = self.path(line, option, args)?;
                if let Some(s) = self.security(line, option)? {
                    let slot = if option == "password_file" { &mut s.password_file } else { &mut s.acl_file };
                    if !put_once(slot, path) {
                        return Err(self.err(line, option, "given twice"));
                    }
                }
            }
            "per_listener_settings" => {
                let v = self.bool(line, option, args)?;
                if v && self.security_seen && !self.conf.per_listener_settings {
                    return Err(self.err(line, option, "must be set before any security option"));
                }
                self.conf.per_listener_settings = v;
            }
            "include_dir" => self.warn(line, option, "not supported; the included files are not read"),
            "port" | "bind_address" => {
                self.warn(line, option, "deprecated default-listener option, not supported; use listener PORT ADDRESS")
            }
            o if UNSUPPORTED.contains(&o) || o.starts_with("auth_opt_") || o.starts_with("plugin_opt_") => {
                self.warn(line, option, "not supported by Alicia; ignored")
            }
            _ => return Err(self.err(line, option, "unknown option")),
        }
        Ok(())
    }

    fn listener_line(&mut self, line: usize, args: &str) -> Result<(), Error> {
        let (port, rest) = first_word(args);
        let (address, rest) = first_word(rest);
        if port.is_empty() {
            return Err(self.err(line, "listener", "missing port"));
        }
        let address = (!address.is_empty() && !address.starts_with('#')).then(|| address.to_string());
        if address.is_some() && !rest.is_empty() && !rest.starts_with('#') {
            return Err(self.err(line, "listener", format!("unexpected {rest:?} after the address")));
        }
        let port = match port.parse::<u32>() {
            Ok(0) if address.is_some() => {
                self.warn(line, "listener", "Unix socket listeners are not supported; this listener is ignored");
                self.scope = Scope::Skipped;
                return Ok(());
            }
            Ok(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => p,
                _ => return Err(self.err(line, "listener", format!("invalid port {p} (expected 1 to 65535)"))),
            },
            Err(_) => return Err(self.err(line, "listener", format!("invalid port {port:?}"))),
        };
        if let Some(other) = self.conf.listeners.iter().find(|l| l.port == port && l.address == address) {
            return Err(self.err(
                line,
                "listener",
                format!("same port and address as the listener on line {}", other.line),
            ));
        }
        self.conf.listeners.push(ListenerConf::new(line, port, address));
        self.scope = Scope::Listener(self.conf.listeners.len() - 1);
        Ok(())
    }

    fn log_dest(&mut self, line: usize, args: &str) -> Result<(), Error> {
        let (kind, rest) = first_word(args);
        let dest = match kind {
            "none" => {
                self.word(line, "log_dest", args)?;
                self.conf.log_dest = Some(Vec::new());
                return Ok(());
            }
            "file" => {
                if self.log_file_seen {
                    return Err(self.err(line, "log_dest", "log_dest file given twice"));
                }
                self.log_file_seen = true;
                LogDest::File(self.path_of(line, "log_dest file", rest, FileKind::Append)?)
            }
            _ => match self.word(line, "log_dest", args)? {
                "stdout" => LogDest::Stdout,
                "stderr" => LogDest::Stderr,
                "syslog" => LogDest::Syslog,
                "topic" => LogDest::Topic,
                "dlt" => LogDest::Dlt,
                v => return Err(self.err(line, "log_dest", format!("invalid value {v:?}"))),
            },
        };
        let dests = self.conf.log_dest.get_or_insert_with(Vec::new);
        if !dests.contains(&dest) {
            dests.push(dest);
        }
        Ok(())
    }

    /// Checks each listener's TLS options fit together.
    fn check_listeners(&mut self) -> Result<(), Error> {
        for i in 0..self.conf.listeners.len() {
            let l = &self.conf.listeners[i];
            let line = l.line;
            match (&l.certfile, &l.keyfile) {
                (Some(_), None) => return Err(self.err(line, "certfile", "set without keyfile on this listener")),
                (None, Some(_)) => return Err(self.err(line, "keyfile", "set without certfile on this listener")),
                (Some(_), Some(_)) => {
                    if l.require_certificate && l.cafile.is_none() {
                        return Err(self.err(
                            line,
                            "require_certificate",
                            "needs cafile on this listener, or no client certificate can be verified",
                        ));
                    }
                }
                (None, None) => {
                    let tls_only = [
                        ("cafile", l.cafile.is_some()),
                        ("crlfile", l.crlfile.is_some()),
                        ("require_certificate", l.require_certificate),
                        ("use_identity_as_username", l.use_identity_as_username),
                    ];
                    for (option, set) in tls_only {
                        if set {
                            self.warn(line, option, "ignored: TLS is off on this listener (no certfile and keyfile)");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MosquittoConf, Error> {
        MosquittoConf::parse(text, "/etc/alicia/mosquitto.conf")
    }

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples")
    }

    #[test]
    fn example_files_parse() {
        let dir = examples();
        let conf = MosquittoConf::load(dir.join("mosquitto.conf")).unwrap();
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
        assert_eq!(conf.listeners.len(), 3);
        let ports: Vec<u16> = conf.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [1883, 8883, 9001]);
        assert_eq!(conf.listeners[0].address.as_deref(), Some("localhost"));
        let tls = conf.listeners[1].tls().unwrap();
        assert!(tls.require_certificate && tls.use_identity_as_username && tls.cafile.is_some());
        assert_eq!(conf.listeners[2].protocol, Transport::WebSockets);
        assert!(conf.listeners[0].tls().is_none() && conf.listeners[2].tls().is_none());
        assert_eq!(conf.sys_interval, Some(10));
        assert!(conf.persistence);
        let sec = conf.security_for(0);
        assert!(!sec.allow_anonymous);
        let acl_file = sec.acl_file.clone().unwrap();
        assert_eq!(acl_file, dir.join("acl"), "relative to the configuration's directory");
        let acl = crate::auth::Acl::load(&acl_file).unwrap();
        use crate::security::Access;
        assert!(acl.check("stt", Some("stt_service"), "alicia/services/stt/request", Access::Read));
        assert!(acl.check("kitchen", Some("device"), "alicia/devices/kitchen/audio", Access::Write));
        assert!(!acl.check("kitchen", Some("device"), "alicia/devices/hall/audio", Access::Write));
        assert!(acl.check("web", Some("dashboard"), "alicia/#", Access::Subscribe));
        assert!(!acl.check("web", Some("dashboard"), "alicia/devices/hall/audio/raw", Access::Read));
        assert!(acl.check("web", Some("dashboard"), "$SYS/broker/uptime", Access::Read));
        assert!(!acl.check("web", Some("dashboard"), "alicia/services/tts/say", Access::Write));
        assert!(!acl.check("x", None, "alicia/announcements", Access::Read), "no anonymous rules");
    }

    #[test]
    fn full_example() {
        let conf = parse(
            "# comment
per_listener_settings false
listener 1883 127.0.0.1
max_connections 10   # trailing comment
listener 8883
protocol mqtt
cafile certs/ca.pem
certfile /abs/server.pem
keyfile\tcerts/server.key
crlfile crl.pem
require_certificate true
use_identity_as_username 1
listener 9001 ::1
protocol websockets
max_connections -1
allow_anonymous true
password_file passwd
acl_file /etc/mosquitto/acl
max_inflight_messages 40
max_queued_messages 500
message_size_limit 1048576
max_keepalive 120
persistence true
persistence_location /var/lib/alicia/
autosave_interval 60
log_dest stdout
log_dest file log/alicia.log
log_type error
log_type warning
sys_interval 0
",
        )
        .unwrap();
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
        let l = &conf.listeners;
        assert_eq!((l[0].port, l[0].address.as_deref(), l[0].max_connections), (1883, Some("127.0.0.1"), Some(10)));
        assert_eq!((l[1].port, l[1].address.as_deref(), l[1].protocol), (8883, None, Transport::Mqtt));
        assert_eq!(l[1].cafile.as_deref(), Some(Path::new("/etc/alicia/certs/ca.pem")));
        assert_eq!(l[1].certfile.as_deref(), Some(Path::new("/abs/server.pem")));
        assert_eq!(l[1].keyfile.as_deref(), Some(Path::new("/etc/alicia/certs/server.key")));
        assert_eq!(l[1].crlfile.as_deref(), Some(Path::new("/etc/alicia/crl.pem")));
        assert!(l[1].require_certificate && l[1].use_identity_as_username);
        assert_eq!(
            (l[2].address.as_deref(), l[2].protocol, l[2].max_connections),
            (Some("::1"), Transport::WebSockets, None)
        );
        let s = &conf.security;
        assert!(s.allow_anonymous);
        assert_eq!(s.password_file.as_deref(), Some(Path::new("/etc/alicia/passwd")));
        assert_eq!(s.acl_file.as_deref(), Some(Path::new("/etc/mosquitto/acl")));
        assert_eq!(conf.security_for(2), s);
        assert_eq!(conf.max_inflight_messages, Some(40));
        assert_eq!(conf.max_queued_messages, Some(500));
        assert_eq!(conf.message_size_limit, Some(1_048_576));
        assert_eq!(conf.max_keepalive, Some(120));
        assert!(conf.persistence);
        assert_eq!(conf.persistence_location.as_deref(), Some(Path::new("/var/lib/alicia/")));
        assert_eq!(conf.autosave_interval, Some(60));
        assert_eq!(
            conf.log_dest,
            Some(vec![LogDest::Stdout, LogDest::File(PathBuf::from("/etc/alicia/log/alicia.log"))])
        );
        assert_eq!(conf.log_type, Some(vec![LogType::Error, LogType::Warning]));
        assert_eq!(conf.sys_interval, Some(0));
    }

    #[test]
    fn defaults_and_special_values() {
        let conf = parse("").unwrap();
        assert_eq!(conf, MosquittoConf::default());
        let conf = parse(
            "listener 1883\nmax_connections 0\nmax_inflight_messages -5\nmax_queued_messages -1\n\
             autosave_interval -3\nlog_dest stdout\nlog_dest none\nlog_type all\nlog_type none\n",
        )
        .unwrap();
        assert_eq!(conf.listeners[0].max_connections, None);
        assert_eq!(conf.max_inflight_messages, Some(0));
        assert_eq!(conf.max_queued_messages, Some(0));
        assert_eq!(conf.autosave_interval, Some(0));
        assert_eq!(conf.log_dest, Some(vec![]));
        assert_eq!(conf.log_type, Some(vec![]));
        assert_eq!(parse("max_inflight_messages 65535").unwrap().max_inflight_messages, Some(0));
        // Relative paths stay relative when the file has no directory.
        let conf = MosquittoConf::parse("acl_file acl", "mosquitto.conf").unwrap();
        assert_eq!(conf.security.acl_file.as_deref(), Some(Path::new("acl")));
    }

    #[test]
    fn per_listener_settings() {
        let conf = parse(
            "per_listener_settings true\nlistener 1883 localhost\nallow_anonymous true\n\
             listener 8883\npassword_file pw\nacl_file acl\n",
        )
        .unwrap();
        assert!(conf.security_for(0).allow_anonymous && conf.security_for(0).password_file.is_none());
        assert!(!conf.security_for(1).allow_anonymous);
        assert_eq!(conf.security_for(1).acl_file.as_deref(), Some(Path::new("/etc/alicia/acl")));
        assert_eq!(conf.security, SecurityConf::default());
        // Per-listener duplicates are per listener.
        assert!(parse("per_listener_settings true\nlistener 1\nacl_file a\nlistener 2\nacl_file a\n").is_ok());

        let err = parse("allow_anonymous true\nper_listener_settings true\n").unwrap_err().to_string();
        assert_eq!(err, "/etc/alicia/mosquitto.conf:2: per_listener_settings: must be set before any security option");
        let err = parse("per_listener_settings true\nacl_file acl\nlistener 1883\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/alicia/mosquitto.conf:2: acl_file: with per_listener_settings true"), "{err}");
    }

    #[test]
    fn warnings_name_file_line_and_option() {
        let conf = parse(
            "cafile ca.pem\nlistener 1883\ninclude_dir /etc/mosquitto/conf.d\nport 1884\nauth_opt_backend x\n\
             plugin /usr/lib/x.so\ncapath /etc/ssl\nrequire_certificate true\nlistener 0 /run/mqtt.sock\nprotocol websockets\n",
        )
        .unwrap();
        let w: Vec<String> = conf.warnings.iter().map(|w| w.to_string()).collect();
        let file = "/etc/alicia/mosquitto.conf";
        assert!(w[0].starts_with(&format!("{file}:1: cafile: applies to Mosquitto's default listener")), "{w:?}");
        assert!(w[1].starts_with(&format!("{file}:3: include_dir: not supported")), "{w:?}");
        assert!(w[2].starts_with(&format!("{file}:4: port: deprecated")), "{w:?}");
        assert_eq!(w[3], format!("{file}:5: auth_opt_backend: not supported by Alicia; ignored"));
        assert_eq!(w[4], format!("{file}:6: plugin: not supported by Alicia; ignored"));
        assert_eq!(w[5], format!("{file}:7: capath: not supported by Alicia; ignored"));
        assert!(w[6].starts_with(&format!("{file}:9: listener: Unix socket")), "{w:?}");
        assert!(w[7].starts_with(&format!("{file}:2: require_certificate: ignored: TLS is off")), "{w:?}");
        assert_eq!(w.len(), 8, "{w:?}");
        assert_eq!(conf.listeners.len(), 1);
        assert_eq!(conf.listeners[0].protocol, Transport::Mqtt, "options of a skipped listener go nowhere");
    }

    #[test]
    fn errors_name_file_line_and_option() {
        let cases = [
            ("max_connections abc", "max_connections: invalid number \"abc\""),
            ("max_connections", "max_connections: missing value"),
            ("max_connections 5 6", "max_connections: unexpected \"6\" after the value"),
            ("listener 99999", "listener: invalid port 99999"),
            ("listener 0", "listener: invalid port 0"),
            ("listener -1", "listener: invalid port \"-1\""),
            ("listener", "listener: missing port"),
            ("listener 1883 a b", "listener: unexpected \"b\""),
            ("protocol mqttsn", "protocol: invalid value \"mqttsn\""),
            ("allow_anonymous yes", "allow_anonymous: invalid value \"yes\""),
            ("max_keepalive 70000", "max_keepalive: 70000 is out of range (0 to 65535)"),
            ("max_inflight_messages 65536", "max_inflight_messages: 65536 is out of range"),
            ("message_size_limit -1", "message_size_limit: -1 is out of range"),
            ("sys_interval -1", "sys_interval: -1 is out of range"),
            ("max_queued_messages 99999999999", "max_queued_messages: 99999999999 is out of range"),
            ("log_dest carrier-pigeon", "log_dest: invalid value \"carrier-pigeon\""),
            ("log_dest file", "log_dest file: missing value"),
            ("log_dest file a\nlog_dest file b", "log_dest: log_dest file given twice"),
            ("log_type verbose", "log_type: invalid value \"verbose\""),
            ("password_file", "password_file: missing value"),
            ("password_file a\npassword_file b", "password_file: given twice"),
            ("persistence_location a\npersistence_location b", "persistence_location: given twice"),
            ("listener 1\ncafile a\ncafile b", "cafile: given twice"),
            ("alow_anonymous true", "alow_anonymous: unknown option"),
            ("listener 1 localhost\nlistener 1 localhost", "listener: same port and address as the listener on line 2"),
        ];
        for (text, want) in cases {
            let text = format!("# header\n{text}\n");
            let err = parse(&text).unwrap_err().to_string();
            let lines = text.lines().count();
            let want = format!("/etc/alicia/mosquitto.conf:{lines}: {want}");
            assert!(err.starts_with(&want), "{text:?}:\n got {err}\nwant {want}");
        }
        let err = parse("listener 8883\ncertfile a\n").unwrap_err().to_string();
        assert_eq!(err, "/etc/alicia/mosquitto.conf:1: certfile: set without keyfile on this listener");
        let err = parse("listener 8883\nkeyfile a\n").unwrap_err().to_string();
        assert_eq!(err, "/etc/alicia/mosquitto.conf:1: keyfile: set without certfile on this listener");
        let err = parse("listener 8883\ncertfile a\nkeyfile b\nrequire_certificate true\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/alicia/mosquitto.conf:1: require_certificate: needs cafile"), "{err}");
        let err = MosquittoConf::load("/nonexistent/mosquitto.conf").unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/mosquitto.conf: "), "{err}");
    }

    #[test]
    fn message_size_limit_over_the_maximum_is_clamped_with_a_warning() {
        let conf = parse("# x\nmessage_size_limit 268435456\n").unwrap();
        assert_eq!(conf.message_size_limit, Some(268_435_455));
        assert_eq!(
            conf.warnings[0].to_string(),
            "/etc/alicia/mosquitto.conf:2: message_size_limit: 268435456 is above MQTT's largest payload; using 268435455"
        );
        assert!(parse("message_size_limit -1").is_err());
    }

    #[test]
    fn missing_files_name_option_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let conf_path = dir.path().join("mosquitto.conf");
        std::fs::write(dir.path().join("passwords"), "").unwrap();
        let text = "persistence true\npersistence_location data/\nlog_dest file log/m.log\npassword_file passwords\n\
                    acl_file acl\nlistener 8883\ncafile ca.crt\ncertfile s.crt\nkeyfile s.key\n";
        let conf = MosquittoConf::parse(text, &conf_path).unwrap();
        let err = conf.check_files().unwrap_err().to_string();
        let want = format!(
            "{}:3: log_dest file: directory {} does not exist",
            conf_path.display(),
            dir.path().join("log").display()
        );
        assert_eq!(err, want);
        std::fs::create_dir(dir.path().join("log")).unwrap();
        let err = conf.check_files().unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}:5: acl_file: cannot read {}",
                conf_path.display(),
                dir.path().join("acl").display()
            )),
            "{err}"
        );
        std::fs::write(dir.path().join("acl"), "").unwrap();
        let err = conf.check_files().unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:7: cafile: cannot read", conf_path.display())), "{err}");
        for f in ["ca.crt", "s.crt", "s.key"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        conf.check_files().unwrap();
        assert!(!dir.path().join("data").exists(), "checking creates nothing");
    }

    #[test]
    fn paths_keep_spaces_and_hashes() {
        let conf = parse("password_file my files/pw # not a comment\n").unwrap();
        assert_eq!(conf.security.password_file.as_deref(), Some(Path::new("/etc/alicia/my files/pw # not a comment")));
    }

    #[test]
    fn never_panics_on_garbage() {
        let words = [
            "listener",
            "1883",
            "0",
            "-1",
            "99999",
            "localhost",
            "protocol",
            "websockets",
            "certfile",
            "keyfile",
            "cafile",
            "x",
            "max_connections",
            "per_listener_settings",
            "true",
            "acl_file",
            "log_dest",
            "file",
            "none",
            "#",
            " ",
            "\n",
            "\t",
            "é",
        ];
        let mut seed = 0x2545_f491_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as usize
        };
        for _ in 0..3000 {
            let text: String = (0..next() % 25).map(|_| words[next() % words.len()]).collect();
            let _ = parse(&text);
        }
    }
}
