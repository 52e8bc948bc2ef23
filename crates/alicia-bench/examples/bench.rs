//! Stand-alone `alicia bench`: `cargo run --release -p alicia-bench --example bench -- --help`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "bench", about = "MQTT load generator (loopback only)")]
struct Cli {
    #[command(flatten)]
    args: alicia_bench::BenchArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(alicia_bench::cli(&cli.args))
}
