//! Listeners: plain TCP, TLS (rustls, optional client certificates), and WebSockets over
//! either. Each accepted socket goes through the transport layers its listener asks for and
//! then into [`crate::connection::serve`], which sees only a byte stream and a [`ConnInfo`].

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::info::{ConnInfo, Slots};
use crate::shared::Shared;

/// How MQTT is carried on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// MQTT directly on TCP (or TLS).
    #[default]
    Mqtt,
    /// MQTT inside WebSocket binary frames (on TCP or TLS).
    WebSockets,
}

/// TLS settings of a listener, in Mosquitto's terms.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA certificates (PEM) that client certificates must chain to; also where the issuers of
    /// a `certfile` holding only the server's certificate are found (as with Mosquitto).
    pub cafile: Option<PathBuf>,
    /// Server certificate, or its chain (PEM).
    pub certfile: PathBuf,
    /// Server private key (PEM).
    pub keyfile: PathBuf,
    /// Refuse clients without a certificate signed by `cafile`.
    pub require_certificate: bool,
    /// Use the client certificate's Common Name as the MQTT username.
    pub use_identity_as_username: bool,
    /// Certificate revocation lists (PEM) checked for client certificates.
    pub crlfile: Option<PathBuf>,
}

/// One listener's settings.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Address and port (port 0 picks a free one).
    pub addr: SocketAddr,
    /// MQTT or WebSockets.
    pub transport: Transport,
    /// TLS, if the listener is encrypted.
    pub tls: Option<TlsFiles>,
    /// Clients this listener serves at once (0 = no limit of its own).
    pub max_connections: usize,
}

impl ListenerConfig {
    /// A plain MQTT-over-TCP listener.
    pub fn tcp(addr: SocketAddr) -> Self {
        ListenerConfig { addr, transport: Transport::Mqtt, tls: None, max_connections: 0 }
    }
}

pub use alicia_tls::TlsError;

/// Builds a rustls server configuration from Mosquitto-style files, through `alicia-tls`: X.509
/// v1 certificates (the server's and clients') are accepted with the same checks as v3 ones,
/// and a `certfile` with only the server's certificate is sent with its issuers from `cafile`,
/// as Mosquitto does (`alicia_tls::chain`).
pub fn server_config(t: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let trust = t.cafile.as_deref().map(|ca| alicia_tls::Trust::load(ca, t.crlfile.as_deref())).transpose()?;
    let cas = trust.as_ref().map_or(&[][..], |t| &t.roots[..]);
    let key = alicia_tls::certified_key_with_cas(&t.certfile, &t.keyfile, cas)?;
    let clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>> = match (&t.cafile, trust) {
        (Some(ca), Some(trust)) => {
            let policy = alicia_tls::Policy {
                mandatory: t.require_certificate,
                allow_unknown_revocation: false,
                end_entity_only: false,
            };
            Some(Arc::new(alicia_tls::ClientVerifier::new(trust, policy, ca)?))
        }
        _ if t.require_certificate => {
            return Err(TlsError::Rustls("require_certificate needs a cafile".into()));
        }
        _ => None,
    };
    alicia_tls::server_config(key, clients)
}

/// A bound listener; [`Listener::serve`] accepts connections until its task is dropped.
pub struct Listener {
    inner: TcpListener,
    config: ListenerConfig,
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    shared: Arc<Shared>,
    slots: Option<Arc<Slots>>,
}

impl Listener {
    pub(crate) async fn bind(shared: Arc<Shared>, config: ListenerConfig) -> io::Result<Listener> {
        let tls = match &config.tls {
            Some(files) => {
                let sc = server_config(files).map_err(io::Error::other)?;
                Some(Arc::new(ArcSwap::from_pointee(TlsAcceptor::from(Arc::new(sc)))))
            }
            None => None,
        };
        let inner = TcpListener::bind(config.addr).await?;
        let slots = (config.max_connections > 0).then(|| Slots::new(config.max_connections));
        Ok(Listener { inner, config, tls, shared, slots })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// A handle that replaces this listener's certificates (for reloads). `None` for plain
    /// listeners.
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        Some(TlsReloader { files: self.config.tls.clone()?, acceptor: self.tls.clone()? })
    }

    /// Accepts connections forever, one task each.
    pub async fn serve(self) -> io::Result<()> {
        let local = self.inner.local_addr()?;
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            let transport = self.config.transport;
            let identity = self.config.tls.as_ref().is_some_and(|t| t.use_identity_as_username);
            let acceptor = self.tls.as_ref().map(|a| a.load_full());
            let slots = self.slots.clone();
            tokio::spawn(async move {
                let info = ConnInfo { peer, local, cert_identity: None, has_certificate: false, slots };
                let handshake = Duration::from_secs(shared.config.connect_timeout);
                match acceptor {
                    None => over_transport(shared, stream, info, transport).await,
                    Some(acceptor) => {
                        let tls = match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::info!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                        let mut info = info;
                        info.has_certificate = cert.is_some();
                        if identity {
                            info.cert_identity = cert.as_deref().and_then(alicia_tls::common_name);
                        }
                        over_transport(shared, tls, info, transport).await
                    }
                }
            });
        }
    }
}

async fn over_transport<S>(shared: Arc<Shared>, stream: S, info: ConnInfo, transport: Transport)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match transport {
        Transport::Mqtt => crate::connection::serve(shared, stream, info).await,
        Transport::WebSockets => {
            let handshake = Duration::from_secs(shared.config.connect_timeout);
            match tokio::time::timeout(handshake, crate::ws::accept(stream)).await {
                Ok(Ok(ws)) => crate::connection::serve(shared, ws, info).await,
                Ok(Err(e)) => {
                    tracing::info!(peer = %info.peer, error = %e, "WebSocket handshake failed")
                }
                Err(_) => {}
            }
        }
    }
}

/// Replaces a TLS listener's certificates atomically: on any error the old ones stay.
#[derive(Clone)]
pub struct TlsReloader {
    files: TlsFiles,
    acceptor: Arc<ArcSwap<TlsAcceptor>>,
}

impl TlsReloader {
    /// Reads the certificate files again. Nothing changes until [`PreparedTls::install`], so a
    /// reload of several parts can check them all before switching any.
    pub fn prepare(&self) -> Result<PreparedTls, TlsError> {
        let sc = server_config(&self.files)?;
        Ok(PreparedTls { acceptor: Arc::new(TlsAcceptor::from(Arc::new(sc))), target: self.acceptor.clone() })
    }
}

/// Certificates loaded by [`TlsReloader::prepare`], ready to be used.
pub struct PreparedTls {
    acceptor: Arc<TlsAcceptor>,
    target: Arc<ArcSwap<TlsAcceptor>>,
}

impl PreparedTls {
    /// Uses these certificates for every new connection from now on.
    pub fn install(self) {
        self.target.store(self.acceptor);
    }
}

/// Keeps generic code honest about what a transport stream must offer.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}
#[allow(dead_code)]
fn _assert_stream(_: impl ByteStream) {}
#[allow(dead_code)]
fn _tcp_is_stream(s: TcpStream) {
    _assert_stream(s)
}
