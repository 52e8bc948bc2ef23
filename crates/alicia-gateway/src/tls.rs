//! The gateway over HTTPS with client certificates (mTLS, `alicia up` serves it on
//! 127.0.0.1:8443).
//!
//! A device that presents its certificate in the TLS handshake gets a token from
//! `POST /auth/device` with no body: the handshake already proved it holds the certificate's
//! key. The certificate is **optional at the TLS layer** and is **not judged there**: the
//! handshake only checks the client's signature (proof of possession), and the request
//! handler checks the chain, the dates and the CRL with [`DeviceAuthority::verify_chain`]. So
//! a client without a certificate, or with an expired, revoked or foreign one, still reaches
//! HTTP and is told why in a 401 (`{"error": "certificate has been revoked"}`) instead of a
//! bare TLS alert, and a certificate revoked a moment ago is refused on the next request,
//! because the authority re-reads its CRL file when it changes.
//!
//! Handshakes run in tasks of their own (at most [`MAX_HANDSHAKES`] at once, each at most
//! [`HANDSHAKE_TIMEOUT`]), so a slow or silent client cannot hold up others.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::serve::{IncomingStream, Listener};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::device_auth::DeviceAuthority;
use crate::http::{router, Gateway, PeerCertificates};

/// TLS handshakes in progress at once; further connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 256;
/// Longest a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the HTTPS listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Asks every client for a certificate (naming the home CA), accepts none or any at the TLS
/// layer, and checks the handshake signature of one that is sent.
#[derive(Debug)]
struct DeferredClientAuth {
    /// rustls' verifier for the home CA: its signature checks and CA names are used.
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged by the request handler, which can answer with the reason (module docs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server configuration of the HTTPS listener: the server certificate chain and key (PEM
/// files, e.g. `certs/server.crt` and `certs/server.key`; an X.509 v1 certificate as OpenSSL's
/// `x509 -req` makes is accepted, through `alicia-tls`), client certificates requested from
/// `devices`' CA but optional, HTTP/1.1 by ALPN.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
    devices: &DeviceAuthority,
) -> Result<ServerConfig, TlsSetupError> {
    let key = alicia_tls::certified_key(cert_file, key_file).map_err(|e| match e {
        alicia_tls::TlsError::File { path, why } => {
            TlsSetupError::File { path: path.display().to_string(), reason: why }
        }
        other => TlsSetupError::File { path: cert_file.display().to_string(), reason: other.to_string() },
    })?;
    let verifier = Arc::new(DeferredClientAuth { inner: devices.client_verifier() });
    let mut config = alicia_tls::server_config(key, Some(verifier))
        .map_err(|e| TlsSetupError::File { path: cert_file.display().to_string(), reason: e.to_string() })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Who is at the other end of a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The certificate chain it presented, if any (not yet judged).
    pub certificates: Option<PeerCertificates>,
}

/// Accepted, handshaken TLS connections, for `axum::serve`.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, TlsPeer)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Starts accepting on `listener` and handshaking with `config`.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else { return };
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of file descriptors and the like: let it pass.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                        return;
                    };
                    let certificates = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .filter(|c| !c.is_empty())
                        .map(|c| PeerCertificates(c.iter().map(|c| c.clone().into_owned()).collect()));
                    let _ = tx.send((tls, TlsPeer { addr, certificates })).await;
                });
            }
        });
        Ok(Self { local, ready, accept_task })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task ended (it only does when aborted): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(TlsPeer { addr: self.local, certificates: None })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Gives the gateway's handlers what they read: the client address (rate limiting) and the
/// presented certificate chain (`/auth/device`).
async fn peer_to_extensions(mut req: Request) -> Request {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<TlsPeer>>().cloned() {
        req.extensions_mut().insert(ConnectInfo(peer.addr));
        if let Some(certs) = peer.certificates {
            req.extensions_mut().insert(certs);
        }
    }
    req
}

/// Serves the gateway over HTTPS on `listener` until the future is dropped.
pub async fn serve_tls(listener: TcpListener, config: Arc<ServerConfig>, gateway: Arc<Gateway>) -> std::io::Result<()> {
    let listener = TlsListener::new(listener, config)?;
    let app = router(gateway).layer(axum::middleware::map_request(peer_to_extensions));
    axum::serve(listener, app.into_make_service_with_connect_info::<TlsPeer>()).await
}
