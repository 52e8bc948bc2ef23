//! One client connection's task: the I/O around the protocol core ([`crate::protocol`]).
//!
//! The task owns its socket and its [`Core`] (and with it, while connected, its session), so
//! the hot path takes no locks beyond pushing into other sessions' outboxes. The loop reads
//! whatever the socket has, lets the core decode and handle every complete packet, drains its
//! own outbox, and writes everything produced in one go: many packets per system call in both
//! directions. Everything that waits lives here: for CONNECT, for an old connection to give up
//! the client id, for room in a subscriber's queue, for keep-alive.

use std::sync::Arc;
use std::time::Duration;

use alicia_codec::{decode, BytesMut, Connect, DecodeError, Packet, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::info::ConnInfo;
use crate::protocol::{self, Claim, Claimed, Core, End};
use crate::shared::{Live, Shared};

/// Read in chunks of at least this much.
const READ_CHUNK: usize = 64 * 1024;
/// Longest a new connection waits for the old one holding its client id to end.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// Serves one accepted socket until it closes.
pub(crate) async fn serve<S>(shared: Arc<Shared>, mut stream: S, info: ConnInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let peer = info.peer;
    let mut rbuf = BytesMut::with_capacity(4096);
    let connect = match read_connect(&shared, &mut stream, &mut rbuf).await {
        Ok(c) => c,
        Err(why) => {
            tracing::debug!(%peer, why, "connection refused before CONNECT");
            return;
        }
    };
    let adm = match protocol::admit(&shared, *connect, &info) {
        Ok(a) => a,
        Err(refusal) => {
            if !refusal.is_empty() {
                let _ = write_out(&mut stream, &refusal).await;
            }
            return;
        }
    };
    let live = Arc::new(Live::default());
    let Some(claimed) = take_client_id(&shared, &adm, &live).await else {
        tracing::info!(client = %adm.client_id(), %peer, "the previous connection did not end in time");
        let _ = write_out(&mut stream, &protocol::busy(&shared, &adm)).await;
        return;
    };
    let mut core = Core::start(shared, adm, claimed, live, rbuf);
    let end = run(&mut core, &mut stream).await;
    let linger_after = core.closing(end);
    if !core.wbuf.is_empty() && end != End::Closed {
        let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut stream, &core.wbuf)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    core.end(end);
    if linger_after {
        linger(&mut stream).await;
    }
}

/// Takes the client id: asks a live connection holding it to end and waits (notified, not
/// polled) until it has, up to [`TAKEOVER_WAIT`]. `None` if it did not end in time.
async fn take_client_id(shared: &Shared, adm: &protocol::Admission, live: &Arc<Live>) -> Option<Claimed> {
    let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
    loop {
        let old = match protocol::claim(shared, adm, live) {
            Claim::Taken(c) => return Some(c),
            Claim::Busy(old) => old,
        };
        let gone = old.gone.notified();
        tokio::pin!(gone);
        // Registered before looking again: the old connection signals after it let go.
        gone.as_mut().enable();
        if protocol::still_held(shared, adm.client_id(), &old) {
            tokio::time::timeout_at(deadline, gone).await.ok()?;
        }
    }
}

/// Reads the first packet, which must be CONNECT.
async fn read_connect<S>(shared: &Shared, stream: &mut S, rbuf: &mut BytesMut) -> Result<Box<Connect>, &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Duration::from_secs(shared.config.connect_timeout);
    let max = shared.config.max_packet_size as usize;
    let read = async {
        loop {
            // MQTT-3.1.0-1: the first packet must be CONNECT. Its type is in the first byte, so
            // anything else is refused at once, before its body is read: a header may announce
            // 256 MiB, and waiting for it let every unauthenticated socket make the broker hold
            // that much (Mosquitto's 01-bad-initial-packets.py).
            if rbuf.first().is_some_and(|b| b >> 4 != 1) {
                return Err("first packet is not CONNECT");
            }
            match decode(rbuf, Protocol::V311, max) {
                Ok(Some(Packet::Connect(c))) => return Ok(c),
                Ok(Some(_)) => return Err("first packet is not CONNECT"),
                Ok(None) => {}
                Err(DecodeError::UnsupportedProtocol) => {
                    // Answer in 3.1.1 form: return code 1, unacceptable protocol version.
                    let _ = write_out(stream, &[0x20, 2, 0, 1]).await;
                    return Err("unsupported protocol version");
                }
                Err(_) => return Err("malformed CONNECT"),
            }
            match stream.read_buf(rbuf).await {
                Ok(0) | Err(_) => return Err("closed before CONNECT"),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(deadline, read).await.unwrap_or(Err("no CONNECT in time"))
}

/// Writes and flushes: TLS and WebSocket streams buffer until flushed.
async fn write_out<S: AsyncWrite + Unpin>(stream: &mut S, buf: &[u8]) -> std::io::Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await
}

/// The connection's loop: until the client leaves, breaks the protocol, times out, is taken
/// over or the broker shuts down.
async fn run<S>(core: &mut Core, stream: &mut S) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handle = core.handle();
    let live = core.live();
    let mut shutdown = core.shutdown_watch();
    if *shutdown.borrow_and_update() {
        return End::Shutdown;
    }
    let keep_alive = core.keep_alive();
    let mut last_read = tokio::time::Instant::now();
    let sleep = tokio::time::sleep(if keep_alive.is_zero() { Duration::from_secs(86400) } else { keep_alive });
    tokio::pin!(sleep);
    // Bytes of the CONNECT read may already hold further packets.
    if let Some(end) = core.input() {
        return end;
    }
    core.pump();
    loop {
        core.sync_store();
        while !core.wbuf.is_empty() {
            if let Err(e) = write_out(stream, &core.wbuf).await {
                tracing::debug!(client = %core.client_id(), error = %e, "write failed");
                return End::Closed;
            }
            core.written();
        }
        core.flush_counters();
        if core.rbuf.capacity() - core.rbuf.len() < 4096 {
            core.rbuf.reserve(READ_CHUNK);
        }
        // Backpressure: while a subscriber this client publishes to has no room, read
        // nothing from it (keep-alive is not held against it meanwhile: the broker is the one
        // not reading).
        let blocked = core.blocked_on();
        let waiting = blocked.is_some();
        tokio::select! {
            biased;
            _ = live.kick.notified() => return End::TakenOver,
            _ = shutdown.changed() => return End::Shutdown,
            _ = async { if let Some(b) = &blocked { b.wait_for_room().await } }, if waiting => {
                last_read = tokio::time::Instant::now();
            }
            r = stream.read_buf(&mut core.rbuf), if !waiting => {
                match r {
                    Ok(0) => return End::Closed,
                    Err(e) => {
                        tracing::debug!(client = %core.client_id(), error = %e, "read failed");
                        return End::Closed;
                    }
                    Ok(n) => {
                        core.read(n);
                        last_read = tokio::time::Instant::now();
                    }
                }
                if let Some(end) = core.input() {
                    return end;
                }
                core.pump();
            }
            _ = handle.ready() => core.pump(),
            _ = &mut sleep, if !keep_alive.is_zero() => {
                let deadline = last_read + keep_alive;
                if tokio::time::Instant::now() >= deadline && !waiting {
                    return End::KeepAlive;
                }
                sleep.as_mut().reset(deadline.max(tokio::time::Instant::now() + Duration::from_millis(10)));
            }
        }
    }
}

/// After the broker closed a connection on its own, reads and discards what the client still
/// sends, for a short while, before the socket is dropped. Dropping a socket with unread data
/// makes the kernel send a reset, and a client that is still writing would see that instead of
/// the DISCONNECT that says why.
async fn linger<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
