//! TLS to the broker, for every client built on the SDK (services against a remote broker,
//! simulated devices, command-line tools).
//!
//! Why TLS goes through a private Unix socket: the MQTT client (rumqttc) is built without its
//! TLS feature in this workspace (that feature brings a second, older rustls-webpki and, by
//! default, aws-lc-rs; see the workspace `Cargo.toml`). So a link with [`Tls`] gets a
//! [`Bridge`]: a Unix socket in a fresh directory only this process's user can enter (mode
//! 0700), whose every connection (rumqttc makes one per attempt) is wrapped in a TLS connection
//! to the broker with tokio-rustls and the workspace's rustls 0.23. The bridge is the one place
//! that knows; the link sees a Unix socket, the broker a TLS client, and the client certificate
//! (if any) is presented in that handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::task::JoinHandle;

use crate::error::SdkError;

/// TLS to the broker: whom to trust, and the client certificate if the client logs in with one
/// (the broker then takes the certificate's CN as the user name, `use_identity_as_username`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// The certificate authority the broker's certificate must chain to (an Alicia home's
    /// `certs/ca.crt`).
    pub ca_file: PathBuf,
    /// The client's certificate and key, PEM (`alicia devices add ID` writes
    /// `certs/devices/ID.crt` and `.key`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the broker's certificate must carry (default: the broker host).
    pub server_name: Option<String>,
}

impl Tls {
    /// Trust `ca_file`; no client certificate; the broker host as the server name.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        Tls { ca_file: ca_file.into(), client_cert: None, server_name: None }
    }

    /// Presents `cert` (with its `key`) in the handshake.
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Expects `name` in the broker's certificate instead of the host connected to.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Reads the files into a rustls client configuration: every error names the file.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, SdkError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_file).map_err(|e| bad(&self.ca_file, e))? {
            roots.add(cert.map_err(|e| bad(&self.ca_file, e))?).map_err(|e| bad(&self.ca_file, e))?;
        }
        if roots.is_empty() {
            return Err(bad(&self.ca_file, "no certificate in the file"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SdkError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        Ok(match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .map_err(|e| bad(cert, e))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(cert, e))?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e))?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| bad(cert, e))?
            }
        })
    }

    /// The server name checked for a broker at `host`.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>, SdkError> {
        let name = self.server_name.clone().unwrap_or_else(|| host.to_string());
        ServerName::try_from(name.clone())
            .map_err(|_| SdkError::Config(format!("TLS: {name:?} is not a valid server name")))
    }
}

fn bad(path: &Path, e: impl std::fmt::Display) -> SdkError {
    SdkError::Config(format!("TLS: {}: {e}", path.display()))
}

/// A Unix socket whose connections are forwarded over TLS to the broker (see the module
/// documentation). Ends (socket directory removed, accept loop stopped) when dropped.
pub(crate) struct Bridge {
    socket: PathBuf,
    /// Why the last handshake failed: the MQTT client only sees its socket closed.
    failed: Arc<parking_lot::Mutex<Option<String>>>,
    _dir: tempfile::TempDir,
    accept: JoinHandle<()>,
}

impl Bridge {
    /// Starts a bridge to `host:port`. Must be called inside a tokio runtime.
    pub(crate) fn start(tls: &Tls, host: &str, port: u16) -> Result<Bridge, SdkError> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.client_config()?));
        let server_name = tls.server_name(host)?;
        let io = |what: &str, e: std::io::Error| SdkError::Config(format!("TLS bridge: {what}: {e}"));
        let dir = tempfile::Builder::new().prefix("alicia-tls-").tempdir().map_err(|e| io("temporary directory", e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io(&dir.path().display().to_string(), e))?;
        }
        let socket = dir.path().join("broker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).map_err(|e| io(&socket.display().to_string(), e))?;
        let target = format!("{host}:{port}");
        let failed = Arc::new(parking_lot::Mutex::new(None));
        let last = failed.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut local, _)) = listener.accept().await else { return };
                let (connector, target, server_name) = (connector.clone(), target.clone(), server_name.clone());
                let last = last.clone();
                tokio::spawn(async move {
                    let tcp = match tokio::net::TcpStream::connect(&target).await {
                        Ok(t) => t,
                        Err(e) => {
                            *last.lock() = Some(e.to_string());
                            return;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    match connector.connect(server_name, tcp).await {
                        Ok(mut remote) => {
                            *last.lock() = None;
                            let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                        }
                        Err(e) => *last.lock() = Some(format!("TLS handshake failed: {e}")),
                    }
                });
            }
        });
        Ok(Bridge { socket, failed, _dir: dir, accept })
    }

    /// Why the last connection to the broker failed, if it did (taken: asked once per failure).
    pub(crate) fn take_failure(&self) -> Option<String> {
        self.failed.lock().take()
    }

    /// Where the MQTT client connects.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
