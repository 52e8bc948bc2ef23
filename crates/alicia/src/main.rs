//! The `alicia` binary: wires the embedded broker and (as they land) the bus services together,
//! and hosts the command-line tools. Library crates hold the logic; this crate parses
//! arguments, sets up logging and runs things.

mod broker_cmd;
mod broker_yaml;
mod certs;

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

#[derive(Subcommand)]
enum Command {
    /// Run the whole bus on this machine (for now: the embedded broker).
    Up(BrokerArgs),
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
    let default_level = match &cli.command {
        Command::Up(a) | Command::Broker { args: a, action: None } => broker_cmd::log_level(a),
        _ => "info".to_string(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("ALICIA_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Passwd { file, user } => passwd(&file, &user),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Bench(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(alicia_bench::cli(&args))
        }
        Command::Broker { action: Some(action), .. } => broker_cmd::control(action),
        Command::Up(args) | Command::Broker { args, action: None } => {
            // Without the LIFO slot, connections whose packets arrived together are served in
            // arrival order: a SUBSCRIBE that reached the broker before another client's
            // PUBLISH takes effect first, as it would in a single-threaded broker.
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().disable_lifo_slot().build()?;
            runtime.block_on(broker_cmd::run(args))
        }
    }
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
