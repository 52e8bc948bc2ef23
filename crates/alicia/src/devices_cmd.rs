//! `alicia devices list | show ID | watch | add ID | remove ID`: the device registry from the
//! command line, over the bus (requests to `device_registry`; `watch` follows
//! `<prefix>/system/registry/events`). `add` issues a device's certificate from the home's CA and
//! prints the exact `mosquitto_sub`/`mosquitto_pub` lines with which it connects and registers;
//! `remove` unregisters it and revokes its certificate.
//!
//! The broker and the login are found as for every bus command ([`crate::bus_cli`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use alicia_envelope::{Destination, Value};
use alicia_home::Home;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::bus_cli::{BusArgs, Cli};
use serde_json::json;

#[derive(Args)]
pub struct DevicesCommand {
    #[command(subcommand)]
    action: DevicesAction,
    #[command(flatten)]
    bus: BusArgs,
    /// How long to wait for the registry's answer, in seconds.
    #[arg(long, global = true, default_value_t = 5)]
    timeout: u64,
}

#[derive(Subcommand)]
enum DevicesAction {
    /// Registered devices, as a table (or JSON).
    List {
        /// Print the registry's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One device: status, endpoints, and its full registration.
    Show {
        /// The device id.
        id: String,
        /// Print the registry's JSON answer only.
        #[arg(long)]
        json: bool,
    },
    /// Print registry events (registered, updated, online, offline, removed) as they happen,
    /// until Ctrl-C.
    Watch {
        /// Print each event as one line of JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prepare a new device: issue its client certificate from the home's CA, write its
    /// registration message, and print the commands with which it connects (TLS, the
    /// certificate's CN as its user name) and registers.
    Add {
        /// The device id (letters, digits, `_`, `-`, `.`, `:`): its MQTT user name and topic level.
        id: String,
        /// What it is: speaker, light, switch, sensor, or anything else.
        #[arg(long = "type", default_value = "sensor")]
        device_type: String,
        /// Where it is (a room: kitchen, living_room, ...).
        #[arg(long)]
        location: Option<String>,
        /// A capability besides the type's usual ones (repeatable).
        #[arg(long = "capability")]
        capabilities: Vec<String>,
        /// Host name devices use to reach this machine [default: the first name in the broker's certificate].
        #[arg(long)]
        host: Option<String>,
    },
    /// Remove a device: unregister it and revoke its certificate.
    Remove {
        /// The device id.
        id: String,
        /// Keep its certificate valid (it could register again).
        #[arg(long)]
        keep_certificate: bool,
    },
}

/// The port of the home's first MQTT-over-TLS listener (devices connect there).
fn home_tls_port(home: &Path) -> anyhow::Result<Option<u16>> {
    let path = Home::new(home).config_file();
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    let listeners = yaml.get("broker").and_then(|b| b.get("listeners")).and_then(|l| l.as_sequence());
    Ok(listeners.into_iter().flatten().find_map(|l| {
        let tls = l.get("tls").is_some_and(|t| !t.is_null());
        let mqtt = l.get("protocol").and_then(|p| p.as_str()).is_none_or(|p| p == "mqtt");
        (tls && mqtt).then(|| l.get("port").and_then(|p| p.as_u64()).and_then(|p| u16::try_from(p).ok())).flatten()
    }))
}

/// The design document's registration message for a new device of `device_type`, with the
/// capabilities (and their parameters) such a device usually has.
pub fn registration(id: &str, device_type: &str, location: Option<&str>, extra: &[String]) -> Value {
    let cap = |name: &str, parameters: Value| json!({"name": name, "version": "1.0.0", "parameters": parameters});
    let mut caps = match device_type {
        "speaker" => vec![
            cap(
                "audio_playback",
                json!({"supported_formats": ["wav", "mp3", "flac"], "min_volume": 0, "max_volume": 100}),
            ),
            cap("volume_control", json!({"step_size": 5, "mute_support": true})),
            cap("media_control", json!({})),
            cap("announce", json!({})),
        ],
        "light" => vec![cap("on_off", json!({})), cap("brightness", json!({"min": 0, "max": 100}))],
        "switch" | "plug" => vec![cap("on_off", json!({}))],
        "sensor" => vec![cap("temperature", json!({"unit": "°C", "device_class": "temperature"}))],
        // docs/voice-protocol.md: audio on alicia/voice/sat/<id>/mic and .../snd.
        "satellite" => vec![
            cap("microphone", json!({"formats": ["pcm"], "sample_rate": 16000, "width": 2, "channels": 1})),
            cap("audio_playback", json!({"supported_formats": ["pcm"], "min_volume": 0, "max_volume": 100})),
        ],
        _ => Vec::new(),
    };
    for name in extra {
        if !caps.iter().any(|c| c["name"] == json!(name)) {
            caps.push(cap(name, json!({})));
        }
    }
    let mut metadata = serde_json::Map::new();
    if let Some(l) = location {
        metadata.insert("location".into(), json!(l));
    }
    json!({
        "message_id": format!("{id}-registration"),
        "timestamp": alicia_envelope::Timestamp::now().to_string(),
        "source": id,
        "destination": "alicia/system/discovery/register",
        "message_type": "event",
        "payload": {"data": {
            "device_id": id,
            "device_type": device_type,
            "capabilities": caps,
            "endpoints": {
                "control": format!("alicia/devices/{id}/command"),
                "status": format!("alicia/devices/{id}/status"),
            },
            "metadata": metadata,
        }}
    })
}

/// `alicia devices add`: the certificate, the registration file, and what to run.
fn add(
    home: &Path,
    id: &str,
    device_type: &str,
    location: Option<&str>,
    extra: &[String],
    host: Option<&str>,
) -> anyhow::Result<()> {
    let layout = Home::new(home);
    if !layout.exists() {
        bail!("no Alicia home at {}: run `alicia up` (or `alicia init`) first", home.display());
    }
    alicia_registry::check_device_id("device id", id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let certs = layout.certs_dir();
    let (crt, key) = (layout.device_cert(id), layout.device_key(id));
    if crt.exists() && key.exists() {
        println!("{id} already has a certificate: {}", crt.display());
    } else {
        crate::certs::issue_device(&certs, id, &crate::certs::Validity::default())?;
        println!("issued {} (key {}, mode 0600)", crt.display(), key.display());
    }
    let message = registration(id, device_type, location, extra);
    let file = layout.device_registration(id);
    crate::certs::write_public(&file, (serde_json::to_string_pretty(&message)? + "\n").as_bytes())?;
    println!("wrote its registration message (the design document's format) to {}", file.display());
    // The running instance's port first (it may have been started with other ports).
    let port = match crate::listening::running(home, "mqtts") {
        Some(a) => a.port(),
        None => home_tls_port(home)?.unwrap_or(8883),
    };
    let hosts = crate::certs::server_hosts(&certs);
    let host = host.map(str::to_string).or_else(|| hosts.first().cloned()).unwrap_or_else(|| "localhost".into());
    let ca = layout.ca_cert();
    let tls = format!(
        "-h {host} -p {port} --cafile {} --cert {} --key {}",
        shell(&ca.display().to_string()),
        shell(&crt.display().to_string()),
        shell(&key.display().to_string())
    );
    println!();
    println!("1. Listen for its commands and for errors about it (leave this running):");
    println!("   mosquitto_sub {tls} -i {id}-listen -t 'alicia/devices/{id}/#' -v");
    println!("2. Register it:");
    println!(
        "   mosquitto_pub {tls} -i {id} -t alicia/system/discovery/register -q 1 -f {}",
        shell(&file.display().to_string())
    );
    println!("3. See it:");
    println!("   alicia devices show {id}");
    println!();
    println!("The broker takes the certificate's CN ({id}) as the device's user name: it may use");
    println!(
        "alicia/devices/{id}/#, announce itself, and hear broadcasts. Remove it with `alicia devices remove {id}`."
    );
    Ok(())
}

/// `s` quoted for a POSIX shell when it needs it.
fn shell(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:@%+=,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl DevicesCommand {
    fn home(&self) -> PathBuf {
        self.bus.home()
    }

    #[cfg(test)]
    fn service_config(&self) -> anyhow::Result<alicia_sdk::ServiceConfig> {
        self.bus.service_config()
    }
}

pub fn run(cmd: DevicesCommand) -> anyhow::Result<()> {
    crate::bus_cli::block_on(run_async(cmd))
}

async fn ask(cmd: &DevicesCommand, data: Value) -> anyhow::Result<Value> {
    let bus = Cli::connect(&cmd.bus, Duration::from_secs(cmd.timeout)).await?;
    let answer = bus.ask(Destination::service(alicia_registry::SERVICE_NAME), data).await;
    bus.close().await;
    Ok(answer?.0.payload.data)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        // A capability object: its name.
        Value::Object(o) if o.get("name").is_some_and(Value::is_string) => text(&o["name"]),
        other => other.to_string(),
    }
}

/// Devices as a table, columns as wide as their widest cell.
pub fn table(devices: &[Value]) -> String {
    let head = ["DEVICE", "TYPE", "NAME", "LOCATION", "STATUS", "LAST SEEN", "CAPABILITIES"];
    let keys = ["device_id", "device_type", "name", "location", "status", "last_seen_at", "capabilities"];
    let rows: Vec<Vec<String>> = devices.iter().map(|d| keys.iter().map(|k| text(&d[*k])).collect()).collect();
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

async fn run_async(cmd: DevicesCommand) -> anyhow::Result<()> {
    match &cmd.action {
        DevicesAction::List { json } => {
            let answer = ask(&cmd, json!({"action": "list"})).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let devices = answer["devices"].as_array().cloned().unwrap_or_default();
                print!("{}", table(&devices));
                println!("{} device(s)", devices.len());
            }
        }
        DevicesAction::Show { id, json } => {
            let d = ask(&cmd, json!({"action": "get", "device_id": id})).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                for (label, key) in [
                    ("device", "device_id"),
                    ("type", "device_type"),
                    ("name", "name"),
                    ("location", "location"),
                    ("status", "status"),
                    ("last seen", "last_seen_at"),
                    ("registered", "registered_at"),
                    ("capabilities", "capabilities"),
                ] {
                    println!("{label:<13} {}", text(&d[key]));
                }
                if let Some(endpoints) = d["endpoints"].as_object() {
                    for (name, topic) in endpoints {
                        println!("{:<13} {}", format!("{name} topic"), text(topic));
                    }
                }
                println!("registration:\n{}", serde_json::to_string_pretty(&d["registration"])?);
            }
        }
        DevicesAction::Watch { json } => watch(&cmd, *json).await?,
        DevicesAction::Add { id, device_type, location, capabilities, host } => {
            add(&cmd.home(), id, device_type, location.as_deref(), capabilities, host.as_deref())?
        }
        DevicesAction::Remove { id, keep_certificate } => {
            match ask(&cmd, json!({"action": "unregister", "device_id": id})).await {
                Ok(_) => println!("unregistered {id}"),
                Err(e) if e.to_string().contains("not_found") => println!("{id} was not registered"),
                Err(e) => return Err(e),
            }
            let home = Home::new(cmd.home());
            let certs = home.certs_dir();
            if !*keep_certificate && home.device_cert(id).exists() {
                let newly = crate::certs::revoke_named(&certs, id)?;
                println!("{} its certificate", if newly { "revoked" } else { "already revoked" });
            }
        }
    }
    Ok(())
}

async fn watch(cmd: &DevicesCommand, as_json: bool) -> anyhow::Result<()> {
    use alicia_registry::WatchEvent;
    use std::io::Write;

    let cfg = cmd.bus.service_config()?;
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let print = |e: WatchEvent| match e {
        WatchEvent::Subscribed(topic) => eprintln!("watching {topic} on {broker} (Ctrl-C to stop)"),
        WatchEvent::Event(v) if as_json => println!("{v}"),
        WatchEvent::Event(v) => {
            let line = format!(
                "{}  {:<10}  {}  {}",
                text(&v["timestamp"]),
                text(&v["event"]),
                text(&v["device_id"]),
                text(&v["reason"])
            );
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
        WatchEvent::Garbage(n) => eprintln!("(a message of {n} bytes that is not JSON)"),
        WatchEvent::Lost(why) => eprintln!("connection lost ({why}); reconnecting"),
    };
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    alicia_registry::watch_events(&cfg, print, stop).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up() {
        let t = table(&[
            json!({"device_id": "sonos_kitchen_001", "device_type": "speaker", "name": "Kitchen Speaker",
                   "location": "kitchen", "status": "online", "last_seen_at": "2026-01-01T00:00:00.000Z",
                   "capabilities": [{"name": "audio_playback", "version": "1.0.0"}, {"name": "volume_control"}]}),
            json!({"device_id": "t1", "device_type": "sensor", "name": "T", "location": null, "status": "offline",
                   "last_seen_at": "2026-01-01T00:00:00.000Z", "capabilities": []}),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("DEVICE             TYPE"), "{t}");
        assert!(lines[1].ends_with("audio_playback,volume_control"), "{t}");
        assert!(lines[2].contains(" -  "), "a missing location shows as -: {t}");
        assert_eq!(lines[1].find("speaker"), lines[2].find("sensor"));
    }

    #[test]
    fn credentials_come_from_the_home() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            cmd: DevicesCommand,
        }
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        let parse = |args: &[&str]| T::try_parse_from([&["t"], args].concat()).unwrap().cmd.service_config();
        // No secrets: anonymous, default broker.
        let c = parse(&["list", "--home", home]).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.username.as_deref()), ("127.0.0.1", 1883, None));
        // `api` has a password: used; `cli` wins when it has one too.
        std::fs::create_dir_all(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/api.password"), "pw-api\n").unwrap();
        let c = parse(&["list", "--home", home]).unwrap();
        assert_eq!((c.username.as_deref(), c.password.as_ref().map(|p| p.expose())), (Some("api"), Some("pw-api")));
        std::fs::write(dir.path().join("secrets/cli.password"), "pw-cli").unwrap();
        let c = parse(&["list", "--home", home]).unwrap();
        assert_eq!(c.username.as_deref(), Some("cli"));
        // Explicit user and file.
        let file = dir.path().join("other");
        std::fs::write(&file, "pw-x").unwrap();
        let c =
            parse(&["show", "d1", "--home", home, "--user", "x", "--password-file", file.to_str().unwrap()]).unwrap();
        assert_eq!((c.username.as_deref(), c.password.as_ref().map(|p| p.expose())), (Some("x"), Some("pw-x")));
        assert!(parse(&["list", "--home", home, "--password-file", file.to_str().unwrap()]).is_err());
        assert!(!format!("{c:?}").contains("pw-x"), "the password stays out of Debug output");
    }
}
