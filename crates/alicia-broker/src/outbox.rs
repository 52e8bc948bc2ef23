//! Per-session delivery queue.
//!
//! Publishers push into the outbox of every matching session; the session's connection task
//! drains it in batches. Each outbox has its own small mutex, so there is no global lock on the
//! publish path, and a consumer takes everything queued in one lock. The outbox outlives
//! connections: while a persistent session is offline, messages wait here.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use alicia_codec::QoS;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::message::Delivery;
use crate::stats::Stats;

/// The part of a session that other connections can reach.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique id of this session (a new one for every fresh session).
    pub id: u64,
    /// Client identifier.
    pub client_id: Arc<str>,
    /// Whether a connection currently serves this session.
    pub online: AtomicBool,
    queue: Mutex<VecDeque<Delivery>>,
    notify: Notify,
    max_queued: usize,
    max_buffered: usize,
    stats: Arc<Stats>,
    /// Messages dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Whether this session's QoS 1/2 messages are written to the persistence store.
    pub durable: AtomicBool,
    /// Last persistence sequence number used.
    pub seq: AtomicU64,
}

impl SessionHandle {
    pub(crate) fn new(id: u64, client_id: Arc<str>, limits: (usize, usize), stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(SessionHandle {
            id,
            client_id,
            online: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            max_queued: limits.0,
            max_buffered: limits.1,
            stats,
            dropped: AtomicU64::new(0),
            durable: AtomicBool::new(false),
            seq: AtomicU64::new(0),
        })
    }

    /// Queues a delivery. When the queue is full the oldest QoS 0 message is dropped to make
    /// room; if there is none, the new message is dropped. Drops are counted.
    pub fn push(&self, d: Delivery) {
        self.push_all(std::iter::once(d));
    }

    /// Queues several deliveries under one lock and with at most one wake-up.
    pub fn push_all(&self, ds: impl IntoIterator<Item = Delivery>) {
        let limit = if self.online.load(Ordering::Relaxed) { self.max_buffered } else { self.max_queued };
        let mut q = self.queue.lock();
        let was_empty = q.is_empty();
        let mut dropped = 0;
        for d in ds {
            if q.len() >= limit {
                dropped += 1;
                let victim =
                    if d.qos == QoS::AtMostOnce { None } else { q.iter().position(|x| x.qos == QoS::AtMostOnce) };
                match victim {
                    Some(i) => {
                        q.remove(i);
                    }
                    None => continue,
                }
            }
            q.push_back(d);
        }
        let wake = was_empty && !q.is_empty();
        drop(q);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if wake {
            self.notify.notify_one();
        }
    }

    /// Moves everything queued into `into`, keeping order.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Delivery>) {
        let mut q = self.queue.lock();
        if into.is_empty() {
            std::mem::swap(&mut *q, into);
        } else {
            into.extend(q.drain(..));
        }
    }

    /// Number of queued deliveries.
    pub fn queued(&self) -> usize {
        self.queue.lock().len()
    }

    /// Waits until something may have been queued.
    pub(crate) async fn ready(&self) {
        self.notify.notified().await
    }
}
