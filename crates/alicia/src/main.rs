//! The `alicia` binary: wires the embedded broker and (later) the bus services together, and
//! hosts the command-line tools. Library crates hold the logic; this crate only parses
//! arguments, sets up logging and runs things.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "alicia", version, about = "Alicia: a local-first message bus for a private home voice assistant")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole bus on this machine (for now: the embedded broker).
    Up(BrokerArgs),
    /// Run the embedded MQTT broker alone.
    Broker(BrokerArgs),
}

#[derive(Args, Clone)]
struct BrokerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// MQTT port (0 picks a free one; the chosen address is printed on stdout).
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Longest keep-alive a client may use, in seconds; MQTT 5 clients asking for more are told
    /// this value (Server Keep Alive).
    #[arg(long, default_value_t = 65535)]
    max_keepalive: u16,
    /// Largest packet accepted, in bytes (0 = no limit below the protocol's).
    #[arg(long, default_value_t = 0)]
    max_packet_size: u32,
    /// Messages queued per offline session.
    #[arg(long, default_value_t = 1000)]
    max_queued: usize,
    /// QoS 1/2 messages in flight per client.
    #[arg(long, default_value_t = 20)]
    max_inflight: u16,
    /// Maximum simultaneous connections (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
    /// Keep sessions, queued messages and retained messages in this directory across restarts.
    #[arg(long, value_name = "DIR")]
    persistence: Option<std::path::PathBuf>,
    /// Seconds between full rewrites of the persistence store.
    #[arg(long, default_value_t = 1800)]
    autosave_interval: u64,
    /// Seconds between `$SYS/broker/...` statistics updates (0 = off).
    #[arg(long, default_value_t = 10)]
    sys_interval: u64,
    /// Refuse subscriptions to this exact topic filter (repeatable).
    #[arg(long = "deny-subscribe", value_name = "FILTER")]
    deny_subscribe: Vec<String>,
}

impl BrokerArgs {
    fn config(&self) -> alicia_broker::Config {
        alicia_broker::Config {
            max_keepalive: self.max_keepalive,
            max_packet_size: self.max_packet_size,
            max_queued: self.max_queued,
            max_inflight: self.max_inflight,
            max_connections: self.max_connections,
            deny_subscribe: self.deny_subscribe.clone(),
            persistence: self.persistence.clone(),
            autosave_interval: self.autosave_interval,
            ..alicia_broker::Config::default()
        }
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("ALICIA_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Up(args) | Command::Broker(args) => run_broker(args).await,
        }
    })
}

async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let broker = alicia_broker::Broker::open(args.config()).context("cannot open the persistence store")?;
    let addr = SocketAddr::new(args.bind, args.port);
    broker.spawn_sys(std::time::Duration::from_secs(args.sys_interval));
    let listener = broker.listen(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, "MQTT listener ready");
    // Scripts and tests read this line to learn the port chosen for --port 0.
    println!("mqtt listening on {local}");
    use std::io::Write;
    std::io::stdout().flush()?;
    tokio::select! {
        r = listener.serve() => r.context("listener failed")?,
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    broker.save();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
