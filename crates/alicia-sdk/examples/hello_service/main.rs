//! Runs the example service against a broker:
//!
//! ```text
//! cargo run -p alicia-sdk --example hello_service [-- config.yaml]
//! mosquitto_sub -t 'alicia/system/#' -v &
//! mosquitto_pub -t alicia/services/hello_service/inbox -m '{"message_id":"…", …}'
//! ```
//!
//! The bus connection comes from the `ALICIA_MQTT_*` variables ([`ServiceConfig::from_env`]),
//! the `hello_service:` section from the optional YAML file (defaults without one). Under
//! `alicia up` the binary does both from the Alicia home instead (`crates/alicia/src/up.rs`).

mod service;

use std::time::Duration;

use alicia_sdk::ServiceConfig;
use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();

    let section = match std::env::args_os().nth(1) {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            // "file:line:column: what" (the error carries line and column), like alicia-config's.
            service::HelloSection::from_yaml(&text).with_context(|| path.display().to_string())?
        }
        None => service::HelloSection::default(),
    };
    let config = service::HelloConfig { service: ServiceConfig::from_env()?, section };
    let running = service::start(config)?;
    running.wait_online(Duration::from_secs(30)).await.context("no broker")?;
    tracing::info!(metrics = %running.metrics(), "hello_service is online; Ctrl-C stops it");

    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}
