//! The `alicia` binary: wires the embedded broker and (as they land) the bus services together,
//! and hosts the command-line tools. Library crates hold the logic; this crate parses
//! arguments, sets up logging and runs things.

mod ask_cmd;
mod broker_cmd;
mod broker_log;
mod broker_yaml;
mod bus_cli;
mod certs;
mod devices_cmd;
mod init;
mod intents_data;
mod listening;
mod models_cmd;
mod satellite_cmd;
mod simulate_cmd;
mod up;
mod voice;
mod voice_cmd;
mod wyoming_cmd;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use broker_cmd::{BrokerArgs, BrokerCommand};

#[derive(Parser)]
#[command(name = "alicia", version, about = "Alicia: a local-first message bus for a private home voice assistant")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start and matched once: the size of `Up` (its flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the whole bus on this machine: the embedded broker, the security gateway, and the
    /// bus services (router, device registry and discovery, configuration, monitor), secured
    /// with the configuration in the Alicia home directory, which is created on first start.
    Up {
        /// Alicia's home directory [default: $ALICIA_HOME, else $XDG_CONFIG_HOME/alicia, else
        /// ~/.config/alicia].
        #[arg(long)]
        home: Option<std::path::PathBuf>,
        /// Address of the security gateway's HTTP API (device login, encryption).
        #[arg(long, default_value = "127.0.0.1:8080")]
        gateway: std::net::SocketAddr,
        #[command(flatten)]
        services: up::ServicesArgs,
        #[command(flatten)]
        args: BrokerArgs,
    },
    /// Run the bus core services (router, device registry and discovery, configuration,
    /// monitor) against another MQTT broker: Mosquitto, an EMQX cluster. They log in as their
    /// own users with the passwords in the home's secrets/ (when there) and listen where
    /// `alicia up` would.
    Services {
        /// The broker (HOST:PORT, plain MQTT) [default: `mqtt.host`:`mqtt.port` of the
        /// environment's file].
        #[arg(long)]
        broker: Option<String>,
        /// Alicia's home directory (secrets/, keys/, data/) [default as for `up`].
        #[arg(long)]
        home: Option<std::path::PathBuf>,
        /// Serve the monitor's /health, /ready, /metrics, /alerts and /history here.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8093")]
        http: std::net::SocketAddr,
        #[command(flatten)]
        services: up::ServicesArgs,
    },
    /// Create a ready, secure configuration: certificate authority and broker certificate,
    /// random service passwords, ACL, JWT and encryption keys. Prints no secret.
    Init {
        /// Directory to create it in [default: the Alicia home directory].
        dir: Option<std::path::PathBuf>,
        /// Host name or IP address devices use to reach this machine (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Run the embedded MQTT broker alone, or control a running one.
    #[command(args_conflicts_with_subcommands = true)]
    Broker {
        #[command(subcommand)]
        action: Option<BrokerCommand>,
        #[command(flatten)]
        args: BrokerArgs,
    },
    /// Issue certificates from the home certificate authority (CA, broker, devices, services).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Load-test an MQTT broker on this machine (loopback only): fan-in, fan-out, pairs, or
    /// fixed-rate latency.
    Bench(alicia_bench::BenchArgs),
    /// The device registry: list devices, show one, or watch changes live (over the bus).
    Devices(devices_cmd::DevicesCommand),
    /// Run a simulated device (speaker, sensor, light, switch) that registers, heartbeats and
    /// obeys commands as docs/device-protocol.md says; prints its events as JSON lines.
    Simulate(simulate_cmd::SimulateArgs),
    /// The speech models (Whisper, Piper voice, Silero VAD, ONNX Runtime): list, fetch, verify.
    Models(models_cmd::ModelsCommand),
    /// Serve speech to text and text to speech over the Wyoming protocol (Home Assistant's),
    /// on the fetched models (fetched first when missing).
    Wyoming(wyoming_cmd::WyomingArgs),
    /// Speech to text over the bus: the WAV file's transcript, from the running stt_service
    /// (through the router to `capability:speech_to_text`), with timings.
    Transcribe(voice_cmd::TranscribeArgs),
    /// Text to speech over the bus: the running tts_service's speech as a WAV file (or streamed
    /// to a satellite), with timings.
    Say(voice_cmd::SayArgs),
    /// Ask the assistant (`ai_service`, over the bus): prints each stage's result and time.
    Ask(ask_cmd::AskCommand),
    /// A satellite without hardware: registers (microphone, audio_playback), streams a WAV in
    /// real time as an ESP32 satellite does, and prints the transcript, the answer and when
    /// each stage arrived; `--out` keeps the spoken answer.
    Satellite(satellite_cmd::SatelliteArgs),
    /// Add or change a user in a Mosquitto-format password file (the password is read from
    /// standard input, one line). Mosquitto accepts the entries this writes.
    Passwd {
        /// The password file (created with mode 0600 if missing).
        file: std::path::PathBuf,
        /// The user name.
        user: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The broker's configuration decides where its log goes (log_dest, log_type); it is
    // checked whole first, so a bad one is refused before a log file or a store is created.
    let log_plan = match &cli.command {
        // whisper.cpp reports every model load at info.
        Command::Up { args: a, .. } => {
            let mut plan = broker_cmd::log_plan(a)?;
            plan.filter = format!("{},whisper_rs=warn", plan.filter);
            plan
        }
        Command::Broker { args: a, action: None } => broker_cmd::log_plan(a)?,
        // The bus client's connection retries are reported as one clear error instead.
        Command::Devices(_) | Command::Ask(_) | Command::Transcribe(_) | Command::Say(_) | Command::Satellite(_) => {
            broker_log::LogPlan { filter: "error".into(), outputs: vec![broker_log::Output::Stderr], notes: Vec::new() }
        }
        // whisper.cpp reports every model load at info.
        Command::Wyoming(_) | Command::Services { .. } => broker_log::LogPlan {
            filter: "info,whisper_rs=warn".into(),
            outputs: vec![broker_log::Output::Stderr],
            notes: Vec::new(),
        },
        _ => broker_log::plan(None),
    };
    // The bus services analyse this process's own log lines (alert rules): `up` and
    // `services` feed them to the monitor.
    let (log_layer, log_feed) = match &cli.command {
        Command::Up { .. } | Command::Services { .. } => {
            let (layer, feed) = alicia_monitor::log_layer();
            (Some(layer), Some(feed))
        }
        _ => (None, None),
    };
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        type Base = tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>;
        let mut outputs: Vec<Box<dyn Layer<Base> + Send + Sync>> = Vec::new();
        for o in &log_plan.outputs {
            let fmt = tracing_subscriber::fmt::layer();
            outputs.push(match o {
                broker_log::Output::Stderr => fmt
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .boxed(),
                broker_log::Output::Stdout => fmt.with_writer(std::io::stdout).with_ansi(false).boxed(),
                broker_log::Output::File(path) => {
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("log_dest file: cannot open {}", path.display()))?;
                    // No lock: `&File` is `Write`, and each event is one write to a file opened to append.
                    fmt.with_writer(std::sync::Arc::new(file)).with_ansi(false).boxed()
                }
                broker_log::Output::Syslog(socket) => {
                    let syslog = broker_log::Syslog::connect(socket)
                        .with_context(|| format!("log_dest syslog: cannot reach {}", socket.display()))?;
                    fmt.with_writer(syslog).with_ansi(false).without_time().boxed()
                }
            });
        }
        tracing_subscriber::registry()
            .with(EnvFilter::try_from_env("ALICIA_LOG").unwrap_or_else(|_| EnvFilter::new(&log_plan.filter)))
            .with(outputs)
            .with(log_layer)
            .init();
        for note in &log_plan.notes {
            tracing::warn!("{note}");
        }
    }
    match cli.command {
        Command::Passwd { file, user } => passwd(&file, &user),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Devices(cmd) => devices_cmd::run(cmd),
        Command::Models(cmd) => models_cmd::run(cmd),
        Command::Wyoming(args) => wyoming_cmd::run(args),
        Command::Transcribe(args) => voice_cmd::transcribe(args),
        Command::Say(args) => voice_cmd::say(args),
        Command::Ask(cmd) => ask_cmd::run(cmd),
        Command::Satellite(args) => satellite_cmd::run(args),
        Command::Init { dir, hosts } => {
            let dir = dir.unwrap_or_else(init::default_home);
            let config = init::init(&dir, &with_default_hosts(hosts), init::Ports { mqtt: 1883, mqtts: 8883 })?;
            let secrets = alicia_home::Home::new(&dir).secrets_dir();
            eprintln!("created {} (secrets are in {}, mode 0600)", config.display(), secrets.display());
            Ok(())
        }
        Command::Up { home, gateway, services, mut args } => {
            let home = home.unwrap_or_else(init::default_home);
            if args.config.is_none() {
                let config = alicia_home::Home::new(&home).config_file();
                if !config.exists() {
                    init::init(&home, &with_default_hosts(Vec::new()), init::Ports { mqtt: 1883, mqtts: 8883 })?;
                    tracing::info!(home = %home.display(), "first start: created a configuration (see `alicia init --help`)");
                }
                args.config = Some(config);
            }
            if args.jwt_key.is_none() {
                let key = alicia_home::Home::new(&home).jwt_key();
                args.jwt_key = key.exists().then_some(key);
            }
            if args.http.is_none() {
                args.http = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8090)));
            }
            // Services know who published what: the broker says (a device speaks only as itself).
            args.identity_properties = true;
            let services = up::Services::new(home.clone(), services, log_feed).on_embedded_broker();
            let gateway = broker_cmd::GatewaySetup { addr: gateway, home };
            broker_runtime()?.block_on(broker_cmd::run(args, Some(gateway), Some(services)))
        }
        Command::Services { broker, home, http, services } => {
            let home = home.unwrap_or_else(init::default_home);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(up::run_against(broker, Some(http), up::Services::new(home, services, log_feed)))
        }
        Command::Simulate(args) => {
            let home = args.home.clone().unwrap_or_else(init::default_home);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(simulate_cmd::run(args, home))
        }
        Command::Bench(mut args) => {
            let needs_intents =
                matches!(args.scenario, alicia_bench::Scenario::AssistantText | alicia_bench::Scenario::Assistant);
            if needs_intents && args.intents.is_none() {
                args.intents = Some(intents_data::locate(None, "en")?);
            }
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(alicia_bench::cli(&args))
        }
        Command::Broker { action: Some(action), .. } => broker_cmd::control(action),
        Command::Broker { args, action: None } => broker_runtime()?.block_on(broker_cmd::run(args, None, None)),
    }
}

/// The runtime the broker runs on. Without the LIFO slot, connections whose packets arrived
/// together are served in arrival order: a SUBSCRIBE that reached the broker before another
/// client's PUBLISH takes effect first, as it would in a single-threaded broker.
fn broker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().disable_lifo_slot().build()
}

/// `localhost`, `127.0.0.1` and this machine's host name, plus any given.
fn with_default_hosts(mut hosts: Vec<String>) -> Vec<String> {
    let mut all = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(name) = std::fs::read_to_string("/etc/hostname") {
        let name = name.trim();
        if !name.is_empty() {
            all.push(name.to_string());
        }
    }
    all.append(&mut hosts);
    all.dedup();
    all
}

fn passwd(file: &std::path::Path, user: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("Password for {user}: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!("empty password (give it on standard input)");
    }
    alicia_broker::auth::set_user(file, user, password).with_context(|| format!("cannot update {}", file.display()))?;
    eprintln!("{user} set in {}", file.display());
    Ok(())
}
