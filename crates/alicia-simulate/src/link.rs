//! The device's MQTT connection: plain TCP or TLS, logging in with a user name and password,
//! a gateway token, or a client certificate; the status will; reconnecting with backoff.
//!
//! Why TLS goes through a private Unix socket: the services' MQTT client (rumqttc) is built
//! without its TLS feature in this workspace (it would bring a second rustls-webpki; see the
//! workspace `Cargo.toml`). A device needs TLS, so [`TlsBridge`] listens on a socket in a fresh
//! directory only this process's user can enter (mode 0700), and wraps each connection rumqttc
//! makes there in a TLS connection to the broker (tokio-rustls, the workspace's rustls 0.23).
//! It is the one place to change when the SDK gains a TLS transport (issue 12).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc_notls::v5::mqttbytes::v5::{LastWill, Packet, PublishProperties};
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc_notls::{Outgoing, Transport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::SimError;

/// Makes a fresh gateway token for each connection attempt (tokens expire; see
/// `alicia_gateway::tokens`). Returns the token, or why none could be made.
pub type TokenSource = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// How the device proves who it is.
#[derive(Clone, Default)]
pub enum Credentials {
    /// None (a broker that allows anonymous clients).
    #[default]
    Anonymous,
    /// A user name and password (a password file on Mosquitto).
    Password { username: String, password: String },
    /// A gateway token as the password, the device id as the user name (`alicia up` accepts
    /// it on every listener).
    Token(TokenSource),
    /// The client certificate of [`Tls::client_cert`]: the broker takes its CN as the user
    /// name (`use_identity_as_username`); nothing is sent in CONNECT.
    Certificate,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::Anonymous => "Anonymous",
            Credentials::Password { .. } => "Password(***)",
            Credentials::Token(_) => "Token(***)",
            Credentials::Certificate => "Certificate",
        })
    }
}

/// TLS to the broker.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The certificate authority the broker's certificate must chain to (an Alicia home's
    /// `certs/ca.crt`).
    pub ca_file: PathBuf,
    /// The device's certificate and key (`alicia certs device ID` writes
    /// `certs/devices/ID.crt` and `.key`).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the broker's certificate must carry (default: the broker host).
    pub server_name: Option<String>,
}

/// What the link tells the device.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    /// CONNACK: subscribe, say `online`, register.
    Connected,
    /// The connection dropped; retrying.
    Disconnected(String),
    /// A message on a subscription.
    Message { topic: String, payload: Bytes, props: Option<PublishProperties> },
}

pub(crate) struct Link {
    pub client: AsyncClient,
    pub task: JoinHandle<()>,
    /// Keeps the TLS bridge (its socket directory and accept loop) alive.
    _bridge: Option<TlsBridge>,
}

pub(crate) struct LinkSettings<'a> {
    pub client_id: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub tls: Option<&'a Tls>,
    pub credentials: &'a Credentials,
    pub keep_alive: Duration,
    pub reconnect: (Duration, Duration),
    pub will_topic: String,
}

/// Connects (in the background: the first attempt is made by the returned task) and keeps
/// reconnecting until `stop` turns true or the client sends DISCONNECT.
pub(crate) async fn open(
    s: LinkSettings<'_>,
    events: mpsc::UnboundedSender<LinkEvent>,
    mut stop: watch::Receiver<bool>,
) -> Result<Link, SimError> {
    let (bridge, mut options) = match s.tls {
        Some(tls) => {
            let bridge = TlsBridge::start(tls, s.host, s.port).await?;
            let mut o = MqttOptions::new(s.client_id, bridge.socket.display().to_string(), 0);
            o.set_transport(Transport::Unix);
            (Some(bridge), o)
        }
        None => (None, MqttOptions::new(s.client_id, s.host, s.port)),
    };
    options.set_keep_alive(s.keep_alive);
    options.set_clean_start(true);
    let mut network = options.network_options();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    options.set_last_will(LastWill::new(s.will_topic, "offline", QoS::AtLeastOnce, true, None));
    let credentials = s.credentials.clone();
    let device = s.client_id.to_string();
    set_credentials(&mut options, &credentials, &device)?;
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let (min, max) = s.reconnect;
    let task = tokio::spawn(async move {
        let mut delay = min;
        loop {
            let polled = tokio::select! {
                p = eventloop.poll() => p,
                _ = stop.changed() => return,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    delay = min;
                    tracing::debug!(device = %device, code = ?ack.code, "connected");
                    if events.send(LinkEvent::Connected).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if events.send(LinkEvent::Message { topic, payload: p.payload, props: p.properties }).is_err() {
                        return;
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    if *stop.borrow() {
                        return;
                    }
                    let _ = events.send(LinkEvent::Disconnected(e.to_string()));
                    tracing::debug!(device = %device, error = %e, "connection lost; retrying in {delay:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                    delay = (delay * 2).min(max);
                    // A token may have expired meanwhile: the next attempt gets a fresh one.
                    if let Err(e) = refresh(&mut eventloop, &credentials, &device) {
                        tracing::warn!(device = %device, error = %e, "cannot make a new token");
                    }
                }
            }
        }
    });
    Ok(Link { client, task, _bridge: bridge })
}

fn refresh(eventloop: &mut EventLoop, credentials: &Credentials, device: &str) -> Result<(), SimError> {
    if matches!(credentials, Credentials::Token(_)) {
        set_credentials(&mut eventloop.options, credentials, device)?;
    }
    Ok(())
}

fn set_credentials(options: &mut MqttOptions, credentials: &Credentials, device: &str) -> Result<(), SimError> {
    match credentials {
        Credentials::Anonymous | Credentials::Certificate => {}
        Credentials::Password { username, password } => {
            options.set_credentials(username.clone(), password.clone());
        }
        Credentials::Token(source) => {
            let token = source().map_err(SimError::Credentials)?;
            options.set_credentials(device.to_string(), token);
        }
    }
    Ok(())
}

/// TLS for rumqttc: a Unix socket in a private directory whose connections are forwarded
/// over TLS to the broker (see the module documentation for why).
pub(crate) struct TlsBridge {
    socket: PathBuf,
    _dir: tempfile::TempDir,
    accept: JoinHandle<()>,
}

impl TlsBridge {
    async fn start(tls: &Tls, host: &str, port: u16) -> Result<TlsBridge, SimError> {
        let config = Arc::new(client_config(tls)?);
        let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|_| SimError::Tls(format!("{name:?} is not a valid server name")))?;
        let dir = tempfile::Builder::new()
            .prefix("alicia-device-")
            .tempdir()
            .map_err(|e| SimError::Tls(format!("cannot create the TLS bridge's directory: {e}")))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|e| SimError::Tls(format!("cannot protect {}: {e}", dir.path().display())))?;
        }
        let socket = dir.path().join("broker.sock");
        let listener = tokio::net::UnixListener::bind(&socket)
            .map_err(|e| SimError::Tls(format!("cannot listen on {}: {e}", socket.display())))?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let target = format!("{host}:{port}");
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut local, _)) = listener.accept().await else { return };
                let (connector, target, server_name) = (connector.clone(), target.clone(), server_name.clone());
                tokio::spawn(async move {
                    let tcp = match tokio::net::TcpStream::connect(&target).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(%target, error = %e, "cannot reach the broker");
                            return;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    match connector.connect(server_name, tcp).await {
                        Ok(mut remote) => {
                            let _ = tokio::io::copy_bidirectional(&mut local, &mut remote).await;
                        }
                        Err(e) => tracing::warn!(%target, error = %e, "TLS handshake with the broker failed"),
                    }
                });
            }
        });
        Ok(TlsBridge { socket, _dir: dir, accept })
    }
}

impl Drop for TlsBridge {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> SimError {
    SimError::Tls(format!("{}: {e}", path.display()))
}

fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, SimError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&tls.ca_file).map_err(|e| read_err(&tls.ca_file, e))? {
        roots.add(cert.map_err(|e| read_err(&tls.ca_file, e))?).map_err(|e| read_err(&tls.ca_file, e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SimError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    Ok(match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| read_err(cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| read_err(cert, e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| read_err(key, e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| read_err(cert, e))?
        }
    })
}
