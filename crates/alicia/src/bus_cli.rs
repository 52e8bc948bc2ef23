//! How the command-line tools (`alicia devices`, `ask`, `transcribe`, `say`) reach the bus:
//! one set of flags, one way to find the broker and the login, one way to ask a service and
//! to say why it did not answer.
//!
//! Where the broker is and who to log in as, in this order:
//! - `--broker HOST:PORT`, else the `mqtt` address of the `alicia up` running in the home
//!   (`<home>/alicia.addresses`), else the first plain MQTT listener of `<home>/alicia.yaml`
//!   (`0.0.0.0`/`::` read as loopback), else `127.0.0.1:1883`;
//! - `--user U --password-file F`; without `--user`, the first of `cli`, `api` that has a
//!   password in `<home>/secrets/<user>.password` (written by `alicia init`, mode 0600), else
//!   no login (anonymous). The password is never taken from the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope, Value};
use alicia_home::Home;
use alicia_sdk::{SdkError, Secret, ServiceConfig, ServiceHandle};
use anyhow::{anyhow, bail, Context};
use clap::Args;

/// The flags every bus command takes (global: they may follow a subcommand).
#[derive(Args, Clone, Debug)]
pub struct BusArgs {
    /// Broker address [default: the running `alicia up`'s, else the plain listener in the home's alicia.yaml, else 127.0.0.1:1883].
    #[arg(long, global = true)]
    pub broker: Option<SocketAddr>,
    /// MQTT user [default: `cli` or `api` when the home has its password].
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// File holding the MQTT password (first line) [default: <home>/secrets/<user>.password].
    #[arg(long, global = true)]
    pub password_file: Option<PathBuf>,
    /// Alicia's home directory [default: $ALICIA_HOME, else $XDG_CONFIG_HOME/alicia, else ~/.config/alicia].
    #[arg(long, global = true)]
    pub home: Option<PathBuf>,
    /// Topic prefix.
    #[arg(long, global = true, default_value = alicia_sdk::DEFAULT_PREFIX)]
    pub prefix: String,
}

impl BusArgs {
    /// The home directory (`--home`, else the default).
    pub fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(crate::init::default_home)
    }

    /// The broker and the login (see the module documentation), as a client's settings.
    pub fn service_config(&self) -> anyhow::Result<ServiceConfig> {
        let home = self.home();
        let broker = match self.broker {
            Some(b) => b,
            None => match crate::listening::running(&home, "mqtt") {
                Some(running) => running,
                None => home_broker(&home)?.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 1883))),
            },
        };
        let mut cfg = ServiceConfig {
            topic_prefix: self.prefix.clone(),
            ..ServiceConfig::broker(broker.ip().to_string(), broker.port())
        };
        let layout = Home::new(home);
        let secret = |user: &str| layout.password_file(user);
        let user = match &self.user {
            Some(u) => Some(u.clone()),
            None if self.password_file.is_some() => bail!("--password-file needs --user"),
            None => ["cli", "api"].into_iter().find(|u| secret(u).exists()).map(str::to_string),
        };
        if let Some(user) = user {
            let file = self.password_file.clone().unwrap_or_else(|| secret(&user));
            let password =
                if file.exists() || self.password_file.is_some() { Some(Secret::from_file(&file)?) } else { None };
            cfg.username = Some(user);
            cfg.password = password;
        }
        Ok(cfg.with_name(format!("cli-{}", std::process::id())))
    }
}

/// The broker of the home's alicia.yaml: its first listener without TLS speaking MQTT.
pub(crate) fn home_broker(home: &Path) -> anyhow::Result<Option<SocketAddr>> {
    let path = Home::new(home).config_file();
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))?;
    let Some(listeners) = yaml.get("broker").and_then(|b| b.get("listeners")).and_then(|l| l.as_sequence()) else {
        return Ok(None);
    };
    for l in listeners {
        let plain = l.get("tls").is_none_or(|t| t.is_null());
        let mqtt = l.get("protocol").and_then(|p| p.as_str()).is_none_or(|p| p == "mqtt");
        let Some(port) = l.get("port").and_then(|p| p.as_u64()).and_then(|p| u16::try_from(p).ok()) else { continue };
        if !(plain && mqtt) {
            continue;
        }
        let host = match l.get("address").and_then(|a| a.as_str()) {
            None | Some("0.0.0.0") | Some("") => "127.0.0.1",
            Some("::") => "::1",
            Some(a) => a,
        };
        let ip: std::net::IpAddr =
            host.parse().with_context(|| format!("{}: listener address {host:?}", path.display()))?;
        return Ok(Some(SocketAddr::new(ip, port)));
    }
    Ok(None)
}

/// A command-line tool's connection to the bus.
pub struct Cli {
    client: ServiceHandle,
    broker: String,
    user: Option<String>,
    timeout: Duration,
}

impl Cli {
    /// Connects with `args`; a refused login or an absent broker is reported at once (not after
    /// `timeout`), in words that name the flag to change.
    pub async fn connect(args: &BusArgs, timeout: Duration) -> anyhow::Result<Cli> {
        let cfg = args.service_config()?;
        let broker = format!("{}:{}", cfg.host, cfg.port);
        let user = cfg.username.clone();
        let timeout = timeout.max(Duration::from_secs(1));
        let client = alicia_sdk::connect(cfg)?;
        let cli = Cli { client, broker, user, timeout };
        if let Err(e) = cli.client.connect_outcome(timeout).await {
            let err = cli.explain(e);
            cli.close().await;
            return Err(err);
        }
        Ok(cli)
    }

    /// Sends one request and waits for the answer, returning it and the round trip in
    /// milliseconds. While the router knows no provider yet (a service still loading its
    /// model), asks again until the timeout.
    pub async fn ask(&self, to: Destination, data: Value) -> anyhow::Result<(Envelope, f64)> {
        let deadline = Instant::now() + self.timeout;
        let mut told = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
            let sent = Instant::now();
            match self.client.request(to.clone(), data.clone(), left).await {
                Ok(answer) => return Ok((answer, sent.elapsed().as_secs_f64() * 1000.0)),
                Err(SdkError::Remote { code, .. })
                    if code == "no_provider" && Instant::now() + Duration::from_millis(500) < deadline =>
                {
                    if !told {
                        eprintln!("waiting for a provider of {to} (the service may still be starting)…");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(self.explain(e)),
            }
        }
    }

    /// Sends DISCONNECT after what is queued.
    pub async fn close(self) {
        self.client.shutdown().await;
    }

    fn explain(&self, e: SdkError) -> anyhow::Error {
        let broker = &self.broker;
        match e {
            SdkError::Remote { from, code, message, .. } => anyhow!("{from}: {code}: {message}"),
            SdkError::Timeout { destination, .. } => {
                anyhow!("no answer from {destination} within {:?}: is it running (`alicia up`)?", self.timeout)
            }
            SdkError::LoginRefused { reason, .. } => {
                let who =
                    self.user.as_ref().map(|u| format!(" as {u:?}")).unwrap_or_else(|| " without a user name".into());
                anyhow!("the broker at {broker} refused the login{who}: {reason} (see --user, --password-file)")
            }
            SdkError::Unreachable { reason, .. } => {
                anyhow!("cannot reach the broker at {broker}: {reason} (is `alicia up` running? see --broker)")
            }
            SdkError::NotConnected { .. } => {
                anyhow!("cannot reach the broker at {broker} (see --broker, --user, --password-file)")
            }
            e => e.into(),
        }
    }
}

/// Runs `f` on a one-thread runtime (what every bus command needs).
pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_broker_is_the_plain_listener() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("alicia.yaml"),
            "broker:\n  listeners:\n    - port: 8883\n      tls: { certfile: a, keyfile: b }\n    - { port: 1884, address: 127.0.0.1 }\n",
        )
        .unwrap();
        assert_eq!(home_broker(dir.path()).unwrap(), Some("127.0.0.1:1884".parse().unwrap()));
        assert_eq!(home_broker(&dir.path().join("none")).unwrap(), None);
    }
}
