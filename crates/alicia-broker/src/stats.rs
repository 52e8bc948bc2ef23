//! Broker-wide counters. Connections add to them in batches, not per byte.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters readable at any time (for `$SYS` and metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients connected now.
    pub clients_connected: AtomicU64,
    /// Highest number of clients connected at once.
    pub clients_maximum: AtomicU64,
    /// PUBLISH packets received.
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent.
    pub messages_sent: AtomicU64,
    /// Bytes received.
    pub bytes_received: AtomicU64,
    /// Bytes sent.
    pub bytes_sent: AtomicU64,
    /// Messages dropped: QoS 0 to a full queue, anything beyond an offline session's
    /// `max_queued`, too large for the client, expired. Never an acknowledged QoS 1/2 message to
    /// an online session.
    pub dropped: AtomicU64,
}

impl Stats {
    pub(crate) fn connected(&self) {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
    }

    /// One client fewer; returns how many are still connected.
    pub(crate) fn disconnected(&self) -> u64 {
        self.clients_connected.fetch_sub(1, Ordering::AcqRel).saturating_sub(1)
    }
}
