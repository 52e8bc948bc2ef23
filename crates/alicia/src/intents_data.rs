//! Where the assistant's sentences come from: Home Assistant's `home-assistant-intents`
//! package (PyPI, Apache-2.0), never committed, fetched like the speech models: it is an entry of
//! `alicia-models`' manifest (`ha-intents-en`, the wheel and `en.json` pinned by sha256), so
//! `alicia models fetch` fetches it and the shared model store keeps it.
//!
//! In this order: `ai_service.intents` (a `<lang>.json` file, or the package's `data`
//! directory), else `ALICIA_HA_INTENTS` (the same; the tests set it), else the model store
//! (fetched there when missing).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// `<lang>.json` in `path` when it is a directory, else `path` itself.
fn language_file(path: &Path, language: &str) -> PathBuf {
    if path.is_dir() {
        path.join(format!("{language}.json"))
    } else {
        path.to_path_buf()
    }
}

/// The data file for `language`, fetching it into the model store when nothing else has it.
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
    let store = alicia_models::ModelStore::locate(None, None)?;
    alicia_models::ha_intents(&store, language, alicia_models::FetchPolicy::Fetch, alicia_models::Progress::Lines)
        .context("Home Assistant's intents (set ai_service.intents or ALICIA_HA_INTENTS to a copy)")
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

#[cfg(test)]
mod tests {
    /// The manifest fetches the version alicia-intents is tested with.
    #[test]
    fn the_model_store_pins_the_tested_version() {
        let tested = include_str!("../../alicia-intents/tests/ha-intents-version.txt").trim();
        let spec = alicia_models::find("ha-intents-en").expect("in the manifest");
        let alicia_models::manifest::How::PyPi { wheels, .. } = &spec.sources[0].how else { panic!("a wheel") };
        assert_eq!(wheels[0].version, tested);
    }
}
