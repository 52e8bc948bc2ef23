//! `alicia simulate`: one simulated device (alicia-simulate) until SIGINT/SIGTERM, printing
//! what happens to it as JSON lines on standard output.
//!
//! How it logs in, first match wins: `--cert`/`--key` (TLS with a client certificate), `--tls`
//! with the home's `certs/devices/ID.crt` (what `alicia certs device ID --dir <home>/certs`
//! writes), `--token-file`, `--username` with `--password-file`, a gateway token made for each
//! connection from the home's `keys/jwt.key` (on the machine that runs `alicia up`), else no
//! credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alicia_simulate::{Credentials, Kind, SimConfig, Tls};
use anyhow::Context;
use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct SimulateArgs {
    /// speaker, sensor, light or switch.
    pub kind: String,
    /// The device id (also its MQTT client id and, with a certificate or token, its login).
    pub id: String,
    /// Where it is (the registration's metadata.location).
    #[arg(long)]
    pub location: Option<String>,
    /// A name for people.
    #[arg(long)]
    pub name: Option<String>,
    /// The broker, HOST:PORT [default: the home's running `alicia up` (mqtt, with TLS mqtts),
    /// else 127.0.0.1:1883, with TLS 127.0.0.1:8883].
    #[arg(long)]
    pub broker: Option<String>,
    /// The Alicia home (certs/, keys/jwt.key, data/) [default: as for `alicia up`].
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Connect over TLS (the broker's certificate checked against --ca).
    #[arg(long)]
    pub tls: bool,
    /// The CA for TLS and for https audio URLs [default: <home>/certs/ca.crt].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (implies --tls) [default with --tls: <home>/certs/devices/<ID>.crt].
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// A file with a gateway token (read again on every reconnect).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// User name for a password login.
    #[arg(long, requires = "password_file")]
    pub username: Option<String>,
    /// The password, first line of this file.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Where the speaker writes what it plays [default: <home>/data/simulate/<ID>].
    #[arg(long, value_name = "DIR")]
    pub audio_dir: Option<PathBuf>,
    /// Seconds between sensor reports.
    #[arg(long, default_value_t = 10.0)]
    pub interval: f64,
    /// Seconds between heartbeats.
    #[arg(long, default_value_t = 30)]
    pub heartbeat: u64,
    /// Play audio this many times faster than real time.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// The speaker pauses music for announcements instead of ducking it.
    #[arg(long)]
    pub no_ducking: bool,
    /// The topic prefix.
    #[arg(long, default_value = "alicia")]
    pub prefix: String,
}

fn token_from_key(key: PathBuf, id: String) -> alicia_simulate::TokenSource {
    Arc::new(move || {
        let issuer = alicia_gateway::tokens::TokenIssuer::from_key_file(&key).map_err(|e| e.to_string())?;
        Ok(issuer.issue(&id))
    })
}

fn token_from_file(file: PathBuf) -> alicia_simulate::TokenSource {
    Arc::new(move || {
        let text = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Ok(text.trim().to_string())
    })
}

fn existing(p: PathBuf) -> Option<PathBuf> {
    p.exists().then_some(p)
}

/// The simulator's settings from the command line and the home.
pub fn config(args: &SimulateArgs, home: &Path) -> anyhow::Result<SimConfig> {
    let kind: Kind = args.kind.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let layout = alicia_home::Home::new(home);
    let device_cert = args.cert.clone().zip(args.key.clone()).or_else(|| {
        let (c, k) = (layout.device_cert(&args.id), layout.device_key(&args.id));
        (args.tls && c.exists() && k.exists() && args.token_file.is_none()).then_some((c, k))
    });
    let tls = args.tls || device_cert.is_some();
    // Default: the running `alicia up` of the home (its alicia.addresses), else the usual ports.
    let broker = args.broker.clone().unwrap_or_else(|| {
        let (what, port) = if tls { ("mqtts", 8883) } else { ("mqtt", 1883) };
        crate::listening::running(home, what).map_or_else(|| format!("127.0.0.1:{port}"), |a| a.to_string())
    });
    let (host, port) = broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_string(), p.parse::<u16>().ok()?)))
        .with_context(|| format!("--broker {broker:?}: expected HOST:PORT"))?;
    // `alicia up` prints its listeners as 0.0.0.0:PORT: that is this machine, whose certificate
    // names 127.0.0.1, not 0.0.0.0.
    let host = if matches!(host.as_str(), "0.0.0.0" | "::") { "127.0.0.1".to_string() } else { host };
    let mut c = SimConfig::new(kind, &args.id, host, port);
    c.location = args.location.clone();
    c.name = args.name.clone();
    c.topic_prefix = args.prefix.clone();
    c.heartbeat_interval = Duration::from_secs(args.heartbeat);
    c.telemetry_interval = Duration::try_from_secs_f64(args.interval).context("--interval")?;
    c.playback_speed = args.speed;
    c.ducking = !args.no_ducking;
    c.audio_dir = args.audio_dir.clone().unwrap_or_else(|| layout.data_dir().join("simulate").join(&args.id));
    let ca = args.ca.clone().or_else(|| existing(layout.ca_cert()));
    c.audio_ca = ca.clone();
    if tls {
        let ca_file = ca.context("TLS needs a CA: --ca FILE, or a home with certs/ca.crt")?;
        c.tls = Some(Tls { ca_file, client_cert: device_cert.clone(), server_name: None });
    }
    let jwt = layout.jwt_key();
    c.credentials = if device_cert.is_some() {
        Credentials::Certificate
    } else if let Some(f) = &args.token_file {
        Credentials::Token(token_from_file(f.clone()))
    } else if let (Some(user), Some(file)) = (&args.username, &args.password_file) {
        let password = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        Credentials::Password { username: user.clone(), password: password.lines().next().unwrap_or("").into() }
    } else if jwt.exists() {
        Credentials::Token(token_from_key(jwt, args.id.clone()))
    } else {
        Credentials::Anonymous
    };
    Ok(c)
}

pub async fn run(args: SimulateArgs, home: PathBuf) -> anyhow::Result<()> {
    use std::io::Write;
    use tokio::signal::unix::{signal, SignalKind};
    let cfg = config(&args, &home)?;
    let login = format!("{:?}", cfg.credentials);
    let broker: Option<SocketAddr> = format!("{}:{}", cfg.host, cfg.port).parse().ok();
    tracing::info!(kind = %args.kind, id = %args.id, ?broker, tls = cfg.tls.is_some(), %login, "starting a simulated device");
    let device = alicia_simulate::start(cfg).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut events = device.events();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", ev.to_json())?;
                    out.flush()?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => tracing::warn!("{n} events not shown"),
                Err(_) => break,
            },
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    device.stop().await;
    Ok(())
}
