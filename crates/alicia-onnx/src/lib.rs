//! ONNX Runtime for Alicia's ONNX models (Piper voices, Silero VAD), loaded at run time.
//!
//! `ort` is built with `load-dynamic`: nothing is downloaded at build time, and the shared
//! library (fetched by `alicia models fetch onnxruntime`, or a system one named by
//! `ORT_DYLIB_PATH`) is opened by [`init`] with `ort::init_from`, which returns an error for a
//! missing or wrong library instead of panicking on first use. A process has one ONNX Runtime:
//! the first `init` wins and later calls (from the other engine) reuse it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::Mutex;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

pub use ort;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot load ONNX Runtime from {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("ONNX Runtime is not loaded (call alicia_onnx::init first)")]
    NotLoaded,
    #[error("cannot load the model {}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Run(String),
}

struct Loaded {
    path: PathBuf,
    env: Environment,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime from `library` (once per process); returns the library actually in use.
pub fn init(library: &Path) -> Result<PathBuf, OnnxError> {
    let _guard = LOADING.lock();
    if let Some(l) = LOADED.get() {
        return Ok(l.path.clone());
    }
    let load = |reason: String| OnnxError::Load { path: library.to_path_buf(), reason };
    if !library.is_file() {
        return Err(load("no such file".into()));
    }
    let env = ort::init_from(library)
        .map_err(|e| load(e.to_string()))?
        .with_name("alicia")
        .with_telemetry(false)
        .build()
        .map_err(|e| load(e.to_string()))?;
    tracing::debug!(library = %library.display(), "ONNX Runtime loaded");
    let _ = LOADED.set(Loaded { path: library.to_path_buf(), env });
    Ok(library.to_path_buf())
}

/// Whether [`init`] has succeeded.
pub fn is_loaded() -> bool {
    LOADED.get().is_some()
}

/// A session for the model at `path`, with `threads` intra-op threads (one session runs on
/// one request at a time; parallelism comes from several sessions or from these threads).
pub fn session(path: &Path, threads: usize) -> Result<Session, OnnxError> {
    let loaded = LOADED.get().ok_or(OnnxError::NotLoaded)?;
    let model = |reason: String| OnnxError::Model { path: path.to_path_buf(), reason };
    Session::builder(&loaded.env)
        .map_err(|e| model(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| model(e.to_string()))?
        .with_intra_threads(threads.max(1))
        .map_err(|e| model(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| model(e.to_string()))?
        .commit_from_file(path)
        .map_err(|e| model(e.to_string()))
}
