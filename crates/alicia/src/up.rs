//! The bus core services `alicia up` runs next to the embedded broker, and `alicia services`
//! runs against any other broker (Mosquitto, an EMQX cluster).
//!
//! Each service is a library crate that only speaks MQTT; this module gives each one its
//! settings from the Alicia home: the broker address, its MQTT user (its service name) and the
//! password `alicia init` wrote to `secrets/<name>.password`, its envelope keys, its data
//! files. Services connect over the network even inside `alicia up`: nothing in them may
//! depend on being inside the embedded broker, and this keeps it so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use alicia_sdk::{EnvelopeSecurity, Secret, ServiceConfig};
use anyhow::Context;
use clap::Args;

/// Where the services listen and how they behave; every address may use port 0 (a free
/// port, printed as `<what> listening on ADDR`).
#[derive(Args, Clone, Debug)]
pub struct ServicesArgs {
    /// The device registry's HTTP API (`GET /devices`, `POST /devices/register`, ...).
    #[arg(long, value_name = "ADDR", default_value_t = alicia_registry::DEFAULT_HTTP)]
    pub registry_http: SocketAddr,
    /// The discovery view (devices online and offline, last heartbeats).
    #[arg(long, value_name = "ADDR", default_value_t = alicia_registry::DEFAULT_DISCOVERY_HTTP)]
    pub discovery_http: SocketAddr,
    /// Seconds without a heartbeat after which a device is marked offline.
    #[arg(long, value_name = "SECS", default_value_t = alicia_registry::DEFAULT_HEARTBEAT_TIMEOUT.as_secs())]
    pub heartbeat_timeout: u64,
}

/// The services to start, from an Alicia home.
pub struct Services {
    pub home: PathBuf,
    pub args: ServicesArgs,
}

/// The running services, stopped in reverse order of start.
pub struct Running {
    registry: alicia_registry::RegistryHandle,
    router: alicia_router::RouterHandle,
}

impl Services {
    /// The settings of the service `name` for the broker at `broker`: user `name` with the
    /// password in `secrets/<name>.password` when the home has one (an external broker
    /// without authentication needs none), and the envelope keys of the home.
    fn config(&self, name: &str, broker: SocketAddr) -> anyhow::Result<ServiceConfig> {
        let host = if broker.ip().is_unspecified() { "127.0.0.1".to_string() } else { broker.ip().to_string() };
        let mut config = ServiceConfig::broker(host, broker.port());
        let secret = self.home.join("secrets").join(format!("{name}.password"));
        if secret.exists() {
            let password = Secret::from_file(&secret).with_context(|| format!("cannot read {}", secret.display()))?;
            config.username = Some(name.to_string());
            config.password = Some(password);
        }
        config.security = EnvelopeSecurity::from_home(&self.home, name)
            .with_context(|| format!("envelope keys of {name} in {}", self.home.display()))?;
        Ok(config)
    }

    /// Starts every service against the broker at `broker` and prints where each listens.
    pub async fn start(&self, broker: SocketAddr) -> anyhow::Result<Running> {
        let mut registry = alicia_registry::RegistryConfig::new(
            self.config(alicia_registry::SERVICE_NAME, broker)?,
            self.home.join("data").join("registry.db"),
        );
        registry.heartbeat_timeout = Duration::from_secs(self.args.heartbeat_timeout);
        registry.http = Some(self.args.registry_http);
        registry.discovery_http = Some(self.args.discovery_http);
        let registry = alicia_registry::start(registry).await.context("cannot start the device registry")?;
        print_listening("registry", registry.http_addr());
        print_listening("discovery", registry.discovery_addr());
        let router = alicia_router::RouterConfig::new(self.config(alicia_sdk::ROUTER_SERVICE, broker)?);
        let router = alicia_router::start(router).await.context("cannot start the router")?;
        Ok(Running { registry, router })
    }
}

fn print_listening(what: &str, addr: Option<SocketAddr>) {
    if let Some(addr) = addr {
        println!("{what} listening on {addr}");
    }
}

impl Running {
    /// Stops every service: each says `offline` and closes its connection while the broker
    /// is still there to hear it.
    pub async fn stop(self) {
        self.router.shutdown().await;
        self.registry.shutdown().await;
    }
}

/// The broker the services of `alicia up` use: its first plain MQTT listener (loopback when it
/// listens on every address).
pub fn local_broker(listeners: &[(&'static str, SocketAddr)]) -> anyhow::Result<SocketAddr> {
    listeners.iter().find(|(kind, _)| *kind == "mqtt").map(|(_, a)| *a).context(
        "the bus services need a plain MQTT listener on this machine (add one on 127.0.0.1 to the configuration)",
    )
}

/// `alicia services`: the services against the broker at `broker` (HOST:PORT) until SIGINT or
/// SIGTERM.
pub async fn run_against(broker: &str, services: Services) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let addr = tokio::net::lookup_host(broker)
        .await
        .with_context(|| format!("cannot resolve the broker address {broker}"))?
        .next()
        .with_context(|| format!("{broker} resolves to no address"))?;
    let running = services.start(addr).await?;
    println!("alicia ready");
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    running.stop().await;
    Ok(())
}
