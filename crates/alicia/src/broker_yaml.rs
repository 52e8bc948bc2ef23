//! Alicia's own broker configuration, in YAML: the same settings as a `mosquitto.conf`, under a
//! `broker:` key so one file can also hold the other services' sections. It is turned into the
//! same [`MosquittoConf`] value, so both formats behave identically.
//!
//! ```yaml
//! broker:
//!   listeners:
//!     - { port: 1883, address: 127.0.0.1 }
//!     - port: 8883
//!       tls: { cafile: certs/ca.crt, certfile: certs/broker.crt, keyfile: certs/broker.key,
//!              require_certificate: true, use_identity_as_username: true }
//!     - { port: 9001, protocol: websockets, max_connections: 10 }
//!   allow_anonymous: false
//!   password_file: passwd
//!   acl_file: acl
//!   persistence: { location: /var/lib/alicia, autosave_interval: 1800 }
//!   sys_interval: 10
//!   identity_properties: true   # alicia-user / alicia-auth on every published message
//! ```

use std::path::{Path, PathBuf};

use alicia_broker::auth::{FileKind, FileOption, ListenerConf, MosquittoConf, SecurityConf};
use alicia_broker::Transport;
use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    broker: Broker,
    /// The security gateway's section, read by `broker_cmd::GatewayConf`.
    #[serde(default, rename = "gateway")]
    _gateway: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Broker {
    #[serde(default)]
    listeners: Vec<Listener>,
    #[serde(default)]
    allow_anonymous: bool,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    max_inflight_messages: Option<u16>,
    max_queued_messages: Option<usize>,
    message_size_limit: Option<u32>,
    max_keepalive: Option<u16>,
    persistence: Option<Persistence>,
    sys_interval: Option<u16>,
    /// Stamp published messages with `alicia-user`/`alicia-auth` user properties.
    #[serde(default)]
    identity_properties: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Listener {
    port: u16,
    address: Option<String>,
    #[serde(default)]
    protocol: Protocol,
    max_connections: Option<u32>,
    tls: Option<Tls>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    #[default]
    Mqtt,
    Websockets,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cafile: Option<PathBuf>,
    certfile: PathBuf,
    keyfile: PathBuf,
    crlfile: Option<PathBuf>,
    #[serde(default)]
    require_certificate: bool,
    #[serde(default)]
    use_identity_as_username: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Persistence {
    location: PathBuf,
    autosave_interval: Option<u32>,
}

/// Reads an Alicia YAML configuration. Errors name the file, line and key.
pub fn load(path: &Path) -> anyhow::Result<MosquittoConf> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: File = serde_yaml_ng::from_str(&text).map_err(|e| match e.location() {
        Some(l) => anyhow::anyhow!("{}:{}:{}: {}", path.display(), l.line(), l.column(), strip_location(&e)),
        None => anyhow::anyhow!("{}: {e}", path.display()),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: PathBuf| if p.is_absolute() { p } else { dir.join(p) };
    let b = file.broker;
    // Every path, with the line it is on, for MosquittoConf::check_files.
    let mut files = Vec::new();
    let mut note = |option: &str, raw: &Path, kind: FileKind| {
        let raw_s = raw.to_string_lossy();
        let line =
            text.lines().position(|l| l.contains(&format!("{option}:")) && l.contains(&*raw_s)).map_or(0, |i| i + 1);
        files.push(FileOption {
            origin: path.to_path_buf(),
            line,
            option: format!("broker.{option}"),
            path: resolve(raw.to_path_buf()),
            kind,
        });
    };
    for (option, p) in [("password_file", &b.password_file), ("acl_file", &b.acl_file)] {
        if let Some(p) = p {
            note(option, p, FileKind::Read);
        }
    }
    for l in &b.listeners {
        if let Some(t) = &l.tls {
            for (option, p) in [
                ("cafile", t.cafile.as_ref()),
                ("certfile", Some(&t.certfile)),
                ("keyfile", Some(&t.keyfile)),
                ("crlfile", t.crlfile.as_ref()),
            ] {
                if let Some(p) = p {
                    note(option, p, FileKind::Read);
                }
            }
        }
    }
    if let Some(p) = &b.persistence {
        note("location", &p.location, FileKind::Directory);
    }
    let security = SecurityConf {
        allow_anonymous: b.allow_anonymous,
        password_file: b.password_file.map(resolve),
        acl_file: b.acl_file.map(resolve),
    };
    let mut listeners = Vec::new();
    for (i, l) in b.listeners.into_iter().enumerate() {
        if l.port == 0 {
            bail!("{}: broker.listeners[{i}].port: must be 1-65535", path.display());
        }
        let tls = l.tls;
        listeners.push(ListenerConf {
            line: 0,
            port: l.port,
            address: l.address,
            protocol: match l.protocol {
                Protocol::Mqtt => Transport::Mqtt,
                Protocol::Websockets => Transport::WebSockets,
            },
            max_connections: l.max_connections,
            cafile: tls.as_ref().and_then(|t| t.cafile.clone()).map(resolve),
            certfile: tls.as_ref().map(|t| resolve(t.certfile.clone())),
            keyfile: tls.as_ref().map(|t| resolve(t.keyfile.clone())),
            crlfile: tls.as_ref().and_then(|t| t.crlfile.clone()).map(resolve),
            require_certificate: tls.as_ref().is_some_and(|t| t.require_certificate),
            use_identity_as_username: tls.as_ref().is_some_and(|t| t.use_identity_as_username),
            security: security.clone(),
        });
        if listeners.last().is_some_and(|l| l.require_certificate && l.cafile.is_none()) {
            bail!("{}: broker.listeners[{i}].tls: require_certificate needs a cafile", path.display());
        }
    }
    Ok(MosquittoConf {
        listeners,
        security,
        max_inflight_messages: b.max_inflight_messages,
        max_queued_messages: b.max_queued_messages,
        message_size_limit: b.message_size_limit,
        max_keepalive: b.max_keepalive,
        persistence: b.persistence.is_some(),
        autosave_interval: b.persistence.as_ref().and_then(|p| p.autosave_interval),
        persistence_location: b.persistence.map(|p| resolve(p.location)),
        sys_interval: b.sys_interval,
        identity_properties: b.identity_properties,
        files,
        ..MosquittoConf::default()
    })
}

/// serde_yaml_ng appends "at line X column Y" to its messages; the location is already given.
fn strip_location(e: &serde_yaml_ng::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<MosquittoConf> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alicia.yaml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn example_loads() {
        let conf = load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/examples/alicia.yaml"))).unwrap();
        assert_eq!(conf.listeners.len(), 3);
        assert!(conf.listeners[1].tls().is_some());
        assert_eq!(conf.listeners[2].protocol, Transport::WebSockets);
        assert!(conf.persistence);
        assert!(!conf.security.allow_anonymous);
    }

    #[test]
    fn identity_properties_key() {
        assert!(parse("broker:\n  identity_properties: true\n").unwrap().identity_properties);
        assert!(!parse("broker: {}\n").unwrap().identity_properties, "off by default");
    }

    #[test]
    fn errors_name_line_and_key() {
        let err = parse("broker:\n  listeners:\n    - port: 1883\n      protocl: mqtt\n").unwrap_err().to_string();
        assert!(err.contains("alicia.yaml:4:") && err.contains("protocl"), "{err}");
        let err = parse("broker:\n  max_keepalive: lots\n").unwrap_err().to_string();
        assert!(err.contains("alicia.yaml:2:") && err.contains("max_keepalive"), "{err}");
    }
}
