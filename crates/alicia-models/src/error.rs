//! Errors. Each one a service may meet at start carries the command that fixes it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration names a model the manifest does not have.
    #[error("{kind} model `{name}` is not available; available: {}", available.join(", "))]
    Unknown { kind: &'static str, name: String, available: Vec<String> },

    /// The model is in the manifest but not (completely) in the store.
    #[error("model {id} is not in {}; run `{fix}`", dir.display())]
    NotFetched { id: &'static str, dir: PathBuf, fix: String },

    /// A file in the store does not have any of the manifest's hashes for it.
    #[error("{} is corrupt (sha256 {actual}, expected {expected}); run `{fix}` to fetch it again", path.display())]
    Corrupt { path: PathBuf, expected: String, actual: String, fix: String },

    /// Every source failed; one line per source says why.
    #[error("could not fetch {id}:\n  {}\nrun `{fix}` when one of them is reachable", attempts.join("\n  "))]
    AllSourcesFailed { id: &'static str, attempts: Vec<String>, fix: String },

    /// The manifest has no source for this platform (ONNX Runtime off Linux x86_64/aarch64).
    #[error("no source of {id} for this platform ({os}/{arch}); {hint}")]
    NoSource { id: &'static str, os: &'static str, arch: &'static str, hint: &'static str },

    /// No cache directory could be found (no HOME, no XDG_CACHE_HOME, no ALICIA_MODELS).
    #[error("no model directory: set ALICIA_MODELS (or XDG_CACHE_HOME, or HOME)")]
    NoStore,

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// One source's failure (collected into `AllSourcesFailed`).
    #[error("{0}")]
    Source(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }

    /// The one command that fixes this, when there is one.
    pub fn fix(&self) -> Option<&str> {
        match self {
            ModelError::NotFetched { fix, .. }
            | ModelError::Corrupt { fix, .. }
            | ModelError::AllSourcesFailed { fix, .. } => Some(fix),
            _ => None,
        }
    }
}
