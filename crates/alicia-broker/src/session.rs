//! Session state: what MQTT says survives a reconnect.
//!
//! While a client is connected its connection task owns the [`SessionState`] outright (no
//! locks); when it goes away with a non-zero session expiry the state is parked in the
//! registry until the client returns or the session expires.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use alicia_codec::SubscriptionOptions;

use crate::message::Delivery;
use crate::outbox::SessionHandle;

/// One subscription as the session remembers it (keyed by the raw filter, `$share/..` included).
#[derive(Debug, Clone, Copy)]
pub struct Subscription {
    /// Options granted.
    pub options: SubscriptionOptions,
    /// Subscription identifier.
    pub id: Option<u32>,
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// An outgoing message not yet fully acknowledged.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// Packet identifier.
    pub id: u16,
    /// The delivery (kept for resending).
    pub delivery: Delivery,
    /// Handshake stage.
    pub stage: Stage,
    /// Value of [`SessionState::allocated`] when the id was chosen.
    pub alloc: u64,
}

/// The session state of one client.
#[derive(Debug)]
pub struct SessionState {
    /// The shared half: outbox and identity.
    pub handle: Arc<SessionHandle>,
    /// Subscriptions by raw filter.
    pub subscriptions: HashMap<String, Subscription>,
    /// Outgoing QoS 1/2 messages in send order.
    pub inflight: VecDeque<Inflight>,
    /// Last packet identifier used.
    pub last_id: u16,
    /// Packet identifiers handed out so far.
    pub allocated: u64,
    /// Incoming QoS 2 packet ids that were received but not yet released.
    pub incoming_qos2: HashSet<u16>,
    /// Deliveries taken from the outbox that wait for a free inflight slot.
    pub pending: VecDeque<Delivery>,
    /// Session expiry interval in seconds (`u32::MAX` = never).
    pub expiry: u32,
}

impl SessionState {
    pub(crate) fn new(handle: Arc<SessionHandle>) -> Self {
        SessionState {
            handle,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            last_id: 0,
            allocated: 0,
            incoming_qos2: HashSet::new(),
            pending: VecDeque::new(),
            expiry: 0,
        }
    }

    /// A packet identifier not used by any in-flight message.
    ///
    /// Identifiers are handed out in sequence and in-flight entries stay in allocation order,
    /// so a new identifier can only collide with an entry allocated a full cycle (65,535
    /// identifiers) ago, and only the oldest entry needs looking at before a full scan.
    pub(crate) fn next_id(&mut self) -> u16 {
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id == 0 {
                continue;
            }
            self.allocated += 1;
            let id = self.last_id;
            let may_collide = self.inflight.front().is_some_and(|f| self.allocated - f.alloc >= 65_535);
            if !may_collide || !self.inflight.iter().any(|f| f.id == id) {
                return id;
            }
        }
    }

    /// Index of the in-flight entry with packet id `id`; acks usually arrive in order, so the
    /// front is checked first.
    pub(crate) fn find(&self, id: u16) -> Option<usize> {
        match self.inflight.front() {
            Some(f) if f.id == id => Some(0),
            _ => self.inflight.iter().position(|f| f.id == id),
        }
    }
}
