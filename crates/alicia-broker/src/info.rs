//! What a connection knows about how it arrived: [`ConnInfo`], filled in by the listener (peer,
//! TLS identity, the listener's connection limit) and read by security and the protocol.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What a connection knows about how it arrived.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Remote address.
    pub peer: SocketAddr,
    /// Local address of the listener.
    pub local: SocketAddr,
    /// Common Name of a verified client certificate, when the listener uses it as identity.
    pub cert_identity: Option<String>,
    /// Whether a verified client certificate was presented.
    pub has_certificate: bool,
    /// The listener's connection count and limit.
    pub(crate) slots: Option<Arc<Slots>>,
}

impl ConnInfo {
    /// A connection from `peer` to `local` without a client certificate (for tests of
    /// [`crate::Security`] implementations; listeners fill in the rest).
    pub fn new(peer: SocketAddr, local: SocketAddr) -> Self {
        ConnInfo { peer, local, cert_identity: None, has_certificate: false, slots: None }
    }
}

/// Counts a listener's connected clients against its `max_connections`.
#[derive(Debug)]
pub(crate) struct Slots {
    active: AtomicUsize,
    max: usize,
}

impl Slots {
    /// A limit of `max` connections.
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { active: AtomicUsize::new(0), max })
    }
}

/// One taken slot; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Slots {
    /// Takes a slot if the listener has room.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Slot> {
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.active.fetch_sub(1, Ordering::AcqRel);
            None
        } else {
            Some(Slot(self.clone()))
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
