//! A trust whose CRL file is re-read when it changes.
//!
//! The file's size, modification time and inode are looked at before each use; when they
//! changed (also after a rename over it, as `alicia certs revoke` writes it), the CRL is read
//! again and a new verifier built. A CRL that cannot be read then makes every check fail
//! (fail closed) until it is fixed; a CRL path that does not exist counts as an empty list.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::load::Trust;
use crate::verify::{ClientVerifier, Policy};
use crate::{file_err, TlsError};

/// Size, modification time and inode: enough to notice a rewrite (also one by rename).
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp(u64, std::time::SystemTime, u64);

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp(m.len(), m.modified().ok()?, m.ino()))
}

/// CA certificates and a watched CRL file.
pub struct WatchedTrust {
    ca: Vec<u8>,
    cafile: PathBuf,
    crl: Option<PathBuf>,
    policy: Policy,
    state: Mutex<(Option<FileStamp>, Arc<ClientVerifier>)>,
}

impl std::fmt::Debug for WatchedTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedTrust").field("cafile", &self.cafile).field("crl", &self.crl).finish_non_exhaustive()
    }
}

fn read_crl(path: &Path) -> Result<Option<Vec<u8>>, TlsError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_err(path, e)),
    }
}

impl WatchedTrust {
    /// From a CA file (PEM) and an optional CRL file to watch.
    pub fn load(cafile: &Path, crl: Option<&Path>, policy: Policy) -> Result<WatchedTrust, TlsError> {
        let ca = std::fs::read(cafile).map_err(|e| file_err(cafile, e))?;
        WatchedTrust::from_pem(ca, cafile, crl, policy)
    }

    /// From CA text (PEM, `cafile` names it in errors) and an optional CRL file to watch.
    pub fn from_pem(ca: Vec<u8>, cafile: &Path, crl: Option<&Path>, policy: Policy) -> Result<WatchedTrust, TlsError> {
        let seen = crl.and_then(stamp);
        let verifier = build(&ca, cafile, crl, policy)?;
        Ok(WatchedTrust {
            ca,
            cafile: cafile.to_path_buf(),
            crl: crl.map(Path::to_path_buf),
            policy,
            state: Mutex::new((seen, verifier)),
        })
    }

    /// The verifier in force, rebuilt first if the CRL file changed.
    pub fn current(&self) -> Result<Arc<ClientVerifier>, TlsError> {
        let mut state = self.state.lock();
        if let Some(crl) = &self.crl {
            let now = stamp(crl);
            if now != state.0 {
                let verifier = build(&self.ca, &self.cafile, Some(crl), self.policy)?;
                *state = (now, verifier);
            }
        }
        Ok(state.1.clone())
    }

    /// The verifier as it is now, without looking at the file (for a TLS listener's handshake
    /// signature checks, which do not depend on the CRL).
    pub fn snapshot(&self) -> Arc<ClientVerifier> {
        self.state.lock().1.clone()
    }
}

fn build(ca: &[u8], cafile: &Path, crl: Option<&Path>, policy: Policy) -> Result<Arc<ClientVerifier>, TlsError> {
    let crl_text = match crl {
        Some(p) => read_crl(p)?,
        None => None,
    };
    let mut trust = Trust::from_pem(ca, None, cafile)?;
    if let (Some(text), Some(path)) = (crl_text, crl) {
        trust.crls = Trust::from_pem(ca, Some(&text), path)?.crls;
    }
    Ok(Arc::new(ClientVerifier::new(trust, policy, cafile)?))
}
