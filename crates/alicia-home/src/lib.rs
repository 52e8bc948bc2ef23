//! The Alicia home: one directory holding everything a deployment keeps (certificates,
//! secrets, keys, configuration, data), and the one way Alicia writes files into it.
//!
//! ```text
//! <home>/                   ($ALICIA_HOME, else $XDG_CONFIG_HOME/alicia, else ~/.config/alicia)
//!   alicia.yaml             the broker's and gateway's configuration (written by `alicia init`)
//!   passwd, acl             the broker's password file and ACL (Mosquitto formats)
//!   secrets/ (0700)         <user>.password (0600): the broker login of each service
//!   keys/ (0700)            jwt.key, enc-<N>.key (0600); signing/<service>.key (0600) and .pub
//!   certs/                  ca.crt, ca.key (0600), server.crt/.key, crl.pem,
//!                           devices/<id>.crt/.key/.registration.json, services/<name>.crt/.key
//!   config/                 <env>.yaml: development, staging, production
//!   data/ (0700)            registry.db, config-<env>.json, the broker's store, ...
//!   alicia.pid              the running `alicia up` (for `alicia certs revoke`)
//!   alicia.addresses        its bound addresses, JSON (for the CLI)
//! ```
//!
//! [`Home`] names every one of these paths, so no other crate spells the layout out;
//! [`write_file`] is how they are written.
//!
//! # Why state files are written this way
//!
//! A crash or a power cut while a file is being rewritten must leave the old file or the new
//! one, never half of either, and what was acknowledged must survive: [`write_file`] writes a
//! temporary file in the same directory (a rename is atomic only within one file system),
//! fsyncs it, renames it over the target, then fsyncs the directory (so the rename itself is
//! on disk). A secret is created with mode 0600 from the start, never readable for an instant.
//! The temporary name carries the process id and a counter, so two writers never share one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file system error, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct HomeError {
    /// The file or directory.
    pub path: PathBuf,
    /// What the operating system said.
    #[source]
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |source| HomeError { path: path.to_path_buf(), source }
}

/// Who may read a file written with [`write_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only its owner (0600): passwords, keys, anything secret.
    Secret,
    /// Its owner writes, everyone reads (0644): certificates, configuration, documents.
    Public,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Secret => 0o600,
            Access::Public => 0o644,
        }
    }
}

static TEMP: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes`, atomically and durably (see the crate documentation), with the
/// permissions `access` says. The directory must exist: which directories exist, with which
/// modes, is [`Home::create_dirs`]'s business, and a typo in a path should fail, not create one.
pub fn write_file(path: &Path, bytes: &[u8], access: Access) -> Result<(), HomeError> {
    write_with(path, access, |f| f.write_all(bytes)).map_err(|e| match e {
        WriteError::Home(e) => e,
        WriteError::Content(source) => HomeError { path: path.to_path_buf(), source },
    })
}

/// Why [`write_with`] failed: the file system, or the content callback.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E: std::error::Error + 'static> {
    /// Creating, syncing or renaming failed.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The callback refused (a download that did not match its hash, say).
    #[error(transparent)]
    Content(E),
}

/// [`write_file`] for content too large to hold in memory, or checked while it is written:
/// `fill` writes into the temporary file; if it fails, the temporary file is removed and the
/// old file is left as it was.
pub fn write_with<E: std::error::Error + 'static>(
    path: &Path,
    access: Access,
    fill: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), WriteError<E>> {
    let mut w = AtomicWriter::create(path, access)?;
    fill(w.file()).map_err(WriteError::Content)?;
    Ok(w.commit()?)
}

/// The writer behind [`write_file`] and [`write_with`], for content that arrives in pieces
/// over time (a download): write into it, then [`AtomicWriter::commit`]. Dropped without a
/// commit, it removes its temporary file and leaves the old file as it was.
#[derive(Debug)]
pub struct AtomicWriter {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    access: Access,
    committed: bool,
}

impl AtomicWriter {
    /// A temporary file next to `path` (same directory, so the rename is atomic), created with
    /// the mode `access` says. The directory must exist.
    pub fn create(path: &Path, access: Access) -> Result<Self, HomeError> {
        let dir = parent(path);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp =
            dir.join(format!(".{name}{TEMP_MARK}{}-{}", std::process::id(), TEMP.fetch_add(1, Ordering::Relaxed)));
        let file = OpenOptions::new().write(true).create_new(true).mode(access.mode()).open(&tmp).map_err(err(&tmp))?;
        Ok(AtomicWriter { file, tmp, path: path.to_path_buf(), access, committed: false })
    }

    /// The temporary file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The file it will replace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// fsync the temporary file, give it its mode, rename it over the target, fsync the
    /// directory.
    pub fn commit(mut self) -> Result<(), HomeError> {
        self.file.sync_all().map_err(err(&self.tmp))?;
        // The mode given at creation is masked by the umask; a secret must not depend on it.
        std::fs::set_permissions(&self.tmp, std::fs::Permissions::from_mode(self.access.mode()))
            .map_err(err(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(err(&self.path))?;
        self.committed = true;
        // The rename is durable once the directory is; some file systems refuse to fsync one.
        if let Ok(d) = File::open(parent(&self.path)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Write for AtomicWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Whether `name` is the temporary file of an [`AtomicWriter`] (one a crash left behind can
/// be removed).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARK)
}

const TEMP_MARK: &str = ".tmp-";

fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Creates `dir` (and its parents) and sets its mode.
pub fn create_dir(dir: &Path, mode: u32) -> Result<(), HomeError> {
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(err(dir))
}

/// A certificate directory: a home's `certs/`, or any directory `alicia certs --dir` manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// The certificates in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Certs { dir: dir.into() }
    }
    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `ca.crt`: the certificate authority's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// `ca.key` (0600): the certificate authority's key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// `server.crt`: the broker's and the gateway's certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// `server.key` (0600).
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// `crl.pem`: the certificate revocation list.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    /// `devices/`: device certificates, keys and registrations.
    pub fn devices_dir(&self) -> PathBuf {
        self.dir.join("devices")
    }
    /// `services/`: service certificates and keys.
    pub fn services_dir(&self) -> PathBuf {
        self.dir.join("services")
    }
    /// `devices/<id>.crt`.
    pub fn device_cert(&self, id: &str) -> PathBuf {
        self.devices_dir().join(format!("{id}.crt"))
    }
    /// `devices/<id>.key`.
    pub fn device_key(&self, id: &str) -> PathBuf {
        self.devices_dir().join(format!("{id}.key"))
    }
    /// `devices/<id>.registration.json`.
    pub fn device_registration(&self, id: &str) -> PathBuf {
        self.devices_dir().join(format!("{id}.registration.json"))
    }
}

/// The Alicia home directory and the paths inside it (see the crate documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// The home at its default place: `$ALICIA_HOME`, else `$XDG_CONFIG_HOME/alicia`, else
    /// `~/.config/alicia`.
    pub fn default_location() -> Self {
        Home::new(Self::default_path())
    }

    /// `--home DIR` if given, else [`Home::default_location`].
    pub fn or_default(dir: Option<PathBuf>) -> Self {
        dir.map(Home::new).unwrap_or_else(Home::default_location)
    }

    fn default_path() -> PathBuf {
        if let Some(h) = std::env::var_os("ALICIA_HOME") {
            return PathBuf::from(h);
        }
        if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
            return PathBuf::from(x).join("alicia");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".config").join("alicia")
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether `alicia init` made this home (its `alicia.yaml` exists).
    pub fn exists(&self) -> bool {
        self.config_file().exists()
    }

    /// `alicia.yaml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("alicia.yaml")
    }

    /// The broker's password file.
    pub fn passwd(&self) -> PathBuf {
        self.root.join("passwd")
    }

    /// The broker's ACL file.
    pub fn acl(&self) -> PathBuf {
        self.root.join("acl")
    }

    /// `secrets/`.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// `secrets/<user>.password`: the broker login of a service.
    pub fn password_file(&self, user: &str) -> PathBuf {
        self.secrets_dir().join(format!("{user}.password"))
    }

    /// `keys/`: the JWT key, the encryption key ring (`enc-<N>.key`).
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    /// `keys/jwt.key`: signs the gateway's tokens.
    pub fn jwt_key(&self) -> PathBuf {
        self.keys_dir().join("jwt.key")
    }

    /// `keys/signing/`: envelope signing keys, `<service>.key` and `<service>.pub`.
    pub fn signing_dir(&self) -> PathBuf {
        self.keys_dir().join("signing")
    }

    /// `keys/signing/<service>.key`.
    pub fn signing_key(&self, service: &str) -> PathBuf {
        self.signing_dir().join(format!("{service}.key"))
    }

    /// `keys/signing/<service>.pub`.
    pub fn verifying_key(&self, service: &str) -> PathBuf {
        self.signing_dir().join(format!("{service}.pub"))
    }

    /// `certs/`.
    pub fn certs_dir(&self) -> PathBuf {
        self.root.join("certs")
    }
    /// The certificate directory's files (see [`Certs`]).
    pub fn certs(&self) -> Certs {
        Certs::new(self.certs_dir())
    }
    /// The certificate authority's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.certs().ca_cert()
    }
    /// The broker's server certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.certs().server_cert()
    }
    /// The broker's server key.
    pub fn server_key(&self) -> PathBuf {
        self.certs().server_key()
    }
    /// The certificate revocation list.
    pub fn crl(&self) -> PathBuf {
        self.certs().crl()
    }
    /// `certs/devices/<id>.crt`.
    pub fn device_cert(&self, id: &str) -> PathBuf {
        self.certs().device_cert(id)
    }
    /// `certs/devices/<id>.key`.
    pub fn device_key(&self, id: &str) -> PathBuf {
        self.certs().device_key(id)
    }
    /// `certs/devices/<id>.registration.json`: the registration `alicia devices add` wrote.
    pub fn device_registration(&self, id: &str) -> PathBuf {
        self.certs().device_registration(id)
    }
    /// `keys/enc-<n>.key`: one key of the encryption key ring.
    pub fn encryption_key(&self, n: u32) -> PathBuf {
        self.keys_dir().join(format!("enc-{n}.key"))
    }
    /// `config/`: the environment files.
    pub fn environments_dir(&self) -> PathBuf {
        self.root.join("config")
    }

    /// `data/`: databases and persisted state.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `alicia.pid`: the process id of the running `alicia up`.
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("alicia.pid")
    }

    /// `alicia.addresses`: the running `alicia up`'s bound addresses.
    pub fn addresses_file(&self) -> PathBuf {
        self.root.join("alicia.addresses")
    }

    /// A path relative to the home (as configuration files write them), or `path` itself
    /// when absolute.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        }
    }

    /// Creates the home's directories with their modes: `secrets/`, `keys/`, `keys/signing/`
    /// and `data/` only for the owner (0700), the others 0755.
    pub fn create_dirs(&self) -> Result<(), HomeError> {
        // The root keeps the mode it has (a user's 0700 home must not become readable).
        std::fs::create_dir_all(&self.root).map_err(err(&self.root))?;
        for d in [self.secrets_dir(), self.keys_dir(), self.signing_dir(), self.data_dir()] {
            create_dir(&d, 0o700)?;
        }
        for d in [self.certs_dir(), self.environments_dir()] {
            create_dir(&d, 0o755)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_replace_whole_files_with_the_right_mode() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("sub").join("a.password");
        assert!(write_file(&secret, b"one", Access::Secret).is_err(), "no directory is created");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        write_file(&secret, b"one", Access::Secret).unwrap();
        assert_eq!((std::fs::read(&secret).unwrap(), mode(&secret)), (b"one".to_vec(), 0o600));
        write_file(&secret, b"two", Access::Secret).unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"two");
        let public = dir.path().join("doc.json");
        write_file(&public, b"{}", Access::Public).unwrap();
        assert_eq!(mode(&public), 0o644);
        // Nothing is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a.password"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("taken");
        std::fs::create_dir(&target).unwrap(); // a directory cannot be replaced by a file
        let e = write_file(&target, b"x", Access::Public).unwrap_err();
        assert!(e.to_string().contains("taken"), "{e}");
        assert!(target.is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn the_layout() {
        let h = Home::new("/h");
        assert_eq!(h.password_file("router"), Path::new("/h/secrets/router.password"));
        assert_eq!(h.signing_key("router"), Path::new("/h/keys/signing/router.key"));
        assert_eq!(h.device_cert("d1"), Path::new("/h/certs/devices/d1.crt"));
        assert_eq!(h.resolve(Path::new("data/registry.db")), Path::new("/h/data/registry.db"));
        assert_eq!(h.resolve(Path::new("/x/y")), Path::new("/x/y"));
        let dir = tempfile::tempdir().unwrap();
        let h = Home::new(dir.path().join("home"));
        h.create_dirs().unwrap();
        assert_eq!((mode(&h.secrets_dir()), mode(&h.data_dir()), mode(&h.certs_dir())), (0o700, 0o700, 0o755));
        assert!(!h.exists());
    }
}
