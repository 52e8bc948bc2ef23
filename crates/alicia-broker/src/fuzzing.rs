//! A handle on the protocol core for fuzz targets (`fuzz/`), behind the `fuzzing` feature: the
//! broker's internals stay private otherwise. Clients are connected from CONNECT bytes and fed
//! bytes; every frame the broker writes can be read back. No sockets: everything runs in the
//! calling thread, as `protocol`'s unit tests do. Call from inside a tokio runtime (a session
//! that ends with a non-zero expiry schedules its expiry).

use std::sync::Arc;

use alicia_codec::{decode, BytesMut, Packet, Protocol};

use crate::config::Config;
use crate::info::ConnInfo;
use crate::protocol::{admit, claim, Claim, Core};
use crate::security::AllowAll;
use crate::shared::{Live, Shared};

/// A broker without listeners and its connected clients.
pub struct Harness {
    shared: Arc<Shared>,
    clients: Vec<Option<(Protocol, Core)>>,
}

impl Harness {
    /// A broker with default settings and this topic depth limit (0 = none); small queues, so
    /// backpressure and dropping happen within a few messages.
    pub fn new(max_topic_levels: usize) -> Harness {
        let config = Config { max_topic_levels, max_buffered: 8, max_queued: 4, ..Config::default() };
        Harness { shared: Arc::new(Shared::new(config, None, Box::new(AllowAll))), clients: Vec::new() }
    }

    /// Connects a client with these CONNECT bytes; returns its number, or `None` if they are
    /// not a CONNECT the broker accepts (or the client id is held by a live client).
    pub fn connect(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut buf = BytesMut::from(bytes);
        let Ok(Some(Packet::Connect(c))) = decode(&mut buf, Protocol::V311, 0) else { return None };
        let protocol = c.protocol;
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let adm = admit(&self.shared, *c, &ConnInfo::new(peer, peer)).ok()?;
        let live = Arc::new(Live::default());
        let Claim::Taken(claimed) = claim(&self.shared, &adm, &live) else { return None };
        let core = Core::start(self.shared.clone(), adm, claimed, live, buf);
        self.clients.push(Some((protocol, core)));
        Some(self.clients.len() - 1)
    }

    /// Number of clients ever connected.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client ever connected.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Feeds bytes to client `i`. Returns false once its connection has ended (it is then
    /// closed as the driver would: notice written, session parked or ended).
    pub fn feed(&mut self, i: usize, bytes: &[u8]) -> bool {
        let Some(Some((_, core))) = self.clients.get_mut(i) else { return false };
        core.rbuf.extend_from_slice(bytes);
        match core.input() {
            None => {
                core.pump();
                true
            }
            Some(end) => {
                self.close(i, end);
                false
            }
        }
    }

    fn close(&mut self, i: usize, end: crate::protocol::End) {
        if let Some(slot) = self.clients.get_mut(i) {
            if let Some((protocol, mut core)) = slot.take() {
                core.closing(end);
                check_frames(protocol, &core.wbuf);
                core.end(end);
            }
        }
    }

    /// Lets every client write what is queued for it, and checks every frame it wrote
    /// decodes; returns the bytes written.
    pub fn pump(&mut self) -> usize {
        let mut total = 0;
        for (protocol, core) in self.clients.iter_mut().flatten() {
            core.pump();
            // As the driver does: write, then encode what waits next, until nothing does
            // (flow control bounds it).
            while !core.wbuf.is_empty() {
                check_frames(*protocol, &core.wbuf);
                total += core.wbuf.len();
                core.written();
            }
        }
        total
    }

    /// Drops client `i`'s connection as if its socket closed.
    pub fn disconnect(&mut self, i: usize) {
        self.close(i, crate::protocol::End::Closed);
    }
}

/// Everything the broker writes must be well-formed MQTT in the client's protocol.
fn check_frames(protocol: Protocol, bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    loop {
        match decode(&mut buf, protocol, 0) {
            Ok(Some(_)) => {}
            Ok(None) => {
                assert!(buf.is_empty(), "the broker wrote a partial frame");
                return;
            }
            Err(e) => panic!("the broker wrote a frame that does not decode: {e}"),
        }
    }
}
