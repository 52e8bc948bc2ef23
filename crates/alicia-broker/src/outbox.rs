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
}

impl SessionHandle {
    pub(crate) fn new(
        id: u64,
        client_id: Arc<str>,
        limits: (usize, usize),
        stats: Arc<Stats>,
    ) -> Arc<Self> {
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
        })
    }

    /// Queues a delivery. When the queue is full the oldest QoS 0 message is dropped to make
    /// room; if there is none, the new message is dropped. Drops are counted.
    pub fn push(&self, d: Delivery) {
        let mut q = self.queue.lock();
        let limit = if self.online.load(Ordering::Relaxed) {
            self.max_buffered
        } else {
            self.max_queued
        };
        if q.len() >= limit {
            let victim = if d.qos == QoS::AtMostOnce {
                None
            } else {
                q.iter().position(|x| x.qos == QoS::AtMostOnce)
            };
            match victim {
                Some(i) => {
                    q.remove(i);
                }
                None => {
                    drop(q);
                    self.count_drop();
                    return;
                }
            }
            self.count_drop();
        }
        let was_empty = q.is_empty();
        q.push_back(d);
        drop(q);
        if was_empty {
            self.notify.notify_one();
        }
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
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
