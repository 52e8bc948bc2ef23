//! Wyoming, the voice protocol Home Assistant speaks, so Home Assistant can use Alicia's speech
//! engines as its speech-to-text and text-to-speech.
//!
//! - [`protocol`]: the framing and the event type.
//! - [`asr`]: the speech-to-text server (default port 10300): `describe` → `info`; `transcribe`
//!   (language), `audio-start`, `audio-chunk`s in any PCM format, `audio-stop` → `transcript`.
//! - [`tts`]: the text-to-speech server (default port 10200): `describe` → `info`; `synthesize`
//!   (text, voice by name or language) → `audio-start`, `audio-chunk`s as each sentence is ready,
//!   `audio-stop`.
//! - [`wake`]: the wake word server (default port 10400): `describe` → `info`; `detect`
//!   (names), `audio-start`, `audio-chunk`s → `detection` for each wake word heard, and
//!   `not-detected` at `audio-stop` when none was.
//! - [`zeroconf`]: `_wyoming._tcp` advertisement (mDNS), when enabled.
//!
//! Requests that fail (busy engine, audio too long, unknown voice) are answered with an
//! `error` event and the connection stays usable; a malformed frame closes that connection
//! only. Connections are bounded ([`ServerConfig::max_connections`]).

pub mod asr;
pub mod info;
pub mod protocol;
pub mod tts;
pub mod wake;
pub mod zeroconf;

use std::future::Future;
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;

use protocol::{Event, Limits};

pub const DEFAULT_ASR_PORT: u16 = 10300;
pub const DEFAULT_TTS_PORT: u16 = 10200;
pub use wake::DEFAULT_WAKE_PORT;

/// What both servers share.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Connections served at once; more are told `busy` and closed.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { limits: Limits::default(), max_connections: 32 }
    }
}

/// The writing half of a connection, buffered; each event is flushed as it is sent.
pub struct Conn {
    w: BufWriter<OwnedWriteHalf>,
}

impl Conn {
    pub async fn send(&mut self, e: &Event) -> std::io::Result<()> {
        protocol::write_event(&mut self.w, e).await?;
        self.w.flush().await
    }
}

/// One connection's handler: called for every event, in order.
pub trait Session: Send {
    fn on_event(&mut self, event: Event, conn: &mut Conn) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Accepts connections until the listener fails, running a session made by `make` on each.
pub async fn serve<S, F>(listener: TcpListener, cfg: ServerConfig, make: F) -> std::io::Result<()>
where
    S: Session + 'static,
    F: Fn() -> S + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let permits = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "wyoming: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let mut conn = Conn { w: BufWriter::new(w) };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = conn.send(&Event::error("too many connections", "busy")).await;
            });
            continue;
        };
        let session = make();
        let limits = cfg.limits;
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = run(BufReader::new(r), conn, session, limits).await {
                tracing::debug!(%peer, error = %e, "wyoming connection ended");
            }
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock) || e.raw_os_error() == Some(24)
}

async fn run<S: Session>(
    mut r: BufReader<OwnedReadHalf>,
    mut conn: Conn,
    mut session: S,
    limits: Limits,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    loop {
        match protocol::read_event(&mut r, &limits).await {
            Ok(Some(event)) => session.on_event(event, &mut conn).await?,
            Ok(None) => return Ok(()),
            Err(e) => {
                // A frame we cannot parse leaves us out of step with the stream: say why, close.
                let _ = conn.send(&Event::error(&e.to_string(), "protocol_error")).await;
                return Err(e.into());
            }
        }
    }
}
