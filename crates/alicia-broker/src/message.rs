//! The unit that flows through the broker: a [`Message`] is stored once (behind an `Arc`) and
//! every subscriber gets a small [`Delivery`] that points at it.

use std::sync::Arc;
use std::time::Instant;

use alicia_codec::{ByteString, Bytes, Properties, QoS};

/// A published application message, as the broker keeps it.
#[derive(Debug)]
pub struct Message {
    /// Topic name (never an alias).
    pub topic: ByteString,
    /// Payload, shared with the buffer it was read from.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag it was published with.
    pub retain: bool,
    /// Properties to forward (v5). Topic alias and subscription identifiers are per-hop and are
    /// stripped; the message expiry interval is kept as `expires_at` instead.
    pub properties: Properties,
    /// When the message expires, from its Message Expiry Interval.
    pub expires_at: Option<Instant>,
    /// Session id of the publishing client, for the No Local option (0 = the broker itself).
    pub origin: u64,
}

impl Message {
    /// Remaining expiry in whole seconds, rounded up; `Some(0)` means expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            if left.is_zero() {
                0
            } else {
                u32::try_from(left.as_secs().max(1)).unwrap_or(u32::MAX)
            }
        })
    }

    /// Whether the message has expired.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message.
    pub msg: Arc<Message>,
    /// QoS of this delivery: the lower of the published QoS and the subscription's.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (v5).
    pub sub_ids: Box<[u32]>,
    /// Sequence number in the persistence store (0 = not stored).
    pub seq: u64,
}
