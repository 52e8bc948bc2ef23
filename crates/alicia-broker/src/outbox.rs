//! Per-session delivery queue, and the backpressure that keeps it bounded.
//!
//! Publishers push into the outbox of every matching session; the session's connection task
//! drains it in batches. Each outbox has its own small mutex, so there is no global lock on the
//! publish path, and a consumer takes everything queued in one lock. The outbox outlives
//! connections: while a persistent session is offline, messages wait here.
//!
//! Limits. While the session's client is online, QoS 1/2 messages are never dropped: a push
//! that leaves the queue at or over `max_buffered` tells the publishing connection, which then
//! stops reading from its own client until [`SessionHandle::wait_for_room`] says the queue has
//! room again (half of `max_buffered`). The publisher's own TCP window then slows it down, as far
//! back as the client that sends too fast. A publisher may overshoot by what it had already read
//! (one read buffer). QoS 0 messages to a full online queue are dropped. While the client is
//! offline, the queue holds `max_queued` messages (Mosquitto's `max_queued_messages`): the oldest
//! QoS 0 message makes room for a QoS 1/2 one, otherwise the new message is dropped. Every drop
//! is counted, for the broker and for the session.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use alicia_codec::QoS;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::message::Delivery;
use crate::stats::Stats;

/// The part of a session that other connections can reach.
#[derive(Debug)]
pub(crate) struct SessionHandle {
    /// Unique id of this session (a new one for every fresh session).
    pub id: u64,
    /// Client identifier.
    pub client_id: Arc<str>,
    /// Whether a connection currently serves this session.
    online: AtomicBool,
    queue: Mutex<VecDeque<Delivery>>,
    /// Length of `queue`, readable without the lock (for the backpressure check).
    len: AtomicUsize,
    /// Wakes the consumer: something was queued.
    notify: Notify,
    /// Wakes blocked publishers: the queue has room again, or the session went offline.
    room: Notify,
    /// A publisher waits on `room`; the consumer signals only then.
    wanted: AtomicBool,
    max_queued: usize,
    max_buffered: usize,
    stats: Arc<Stats>,
    /// Messages dropped for this session.
    pub dropped: AtomicU64,
    /// Whether this session's QoS 1/2 messages are written to the persistence store.
    pub durable: AtomicBool,
    /// Last persistence sequence number used.
    pub seq: AtomicU64,
}

/// What a push did.
#[derive(Debug, Default)]
pub(crate) struct Pushed {
    /// The client is online and its queue is at or over `max_buffered`: the publisher should
    /// wait for room before reading more.
    pub full: bool,
    /// Store sequence numbers of stored deliveries that were dropped (offline queue full).
    pub dropped_seqs: Vec<u64>,
}

impl SessionHandle {
    pub(crate) fn new(id: u64, client_id: Arc<str>, limits: (usize, usize), stats: Arc<Stats>) -> Arc<Self> {
        Arc::new(SessionHandle {
            id,
            client_id,
            online: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            notify: Notify::new(),
            room: Notify::new(),
            wanted: AtomicBool::new(false),
            max_queued: limits.0,
            max_buffered: limits.1.max(1),
            stats,
            dropped: AtomicU64::new(0),
            durable: AtomicBool::new(false),
            seq: AtomicU64::new(0),
        })
    }

    /// Whether a connection serves this session.
    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Marks the session online or offline. Going offline releases blocked publishers: an
    /// offline queue is bounded by dropping, not by waiting.
    pub(crate) fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::SeqCst);
        if !online {
            self.room.notify_waiters();
        }
    }

    /// Queues one delivery (see [`SessionHandle::push_all`]).
    #[cfg(test)]
    pub(crate) fn push(&self, d: Delivery) -> Pushed {
        self.push_all(std::iter::once(d))
    }

    /// Queues several deliveries under one lock and with at most one wake-up, following the
    /// module's limits.
    pub(crate) fn push_all(&self, ds: impl IntoIterator<Item = Delivery>) -> Pushed {
        let online = self.is_online();
        let mut pushed = Pushed::default();
        let mut q = self.queue.lock();
        let was_empty = q.is_empty();
        let mut dropped = 0;
        for d in ds {
            if online {
                if q.len() >= self.max_buffered && d.qos == QoS::AtMostOnce {
                    dropped += 1;
                    continue;
                }
            } else if q.len() >= self.max_queued {
                dropped += 1;
                let victim =
                    if d.qos == QoS::AtMostOnce { None } else { q.iter().position(|x| x.qos == QoS::AtMostOnce) };
                match victim.and_then(|i| q.remove(i)) {
                    Some(old) => {
                        if old.seq != 0 {
                            pushed.dropped_seqs.push(old.seq);
                        }
                    }
                    None => {
                        if d.seq != 0 {
                            pushed.dropped_seqs.push(d.seq);
                        }
                        continue;
                    }
                }
            }
            q.push_back(d);
        }
        let len = q.len();
        self.len.store(len, Ordering::SeqCst);
        let wake = was_empty && len > 0;
        drop(q);
        pushed.full = online && len >= self.max_buffered;
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        if wake {
            self.notify.notify_one();
        }
        pushed
    }

    /// Moves everything queued into `into`, keeping order, and releases publishers waiting for
    /// room.
    pub(crate) fn drain_into(&self, into: &mut VecDeque<Delivery>) {
        let mut q = self.queue.lock();
        if q.is_empty() {
            return;
        }
        if into.is_empty() {
            std::mem::swap(&mut *q, into);
        } else {
            into.extend(q.drain(..));
        }
        self.len.store(0, Ordering::SeqCst);
        drop(q);
        if self.wanted.swap(false, Ordering::SeqCst) {
            self.room.notify_waiters();
        }
    }

    /// Whether a publisher must still wait before sending this session more: online and over
    /// the low-water mark (half of `max_buffered`).
    pub(crate) fn needs_room(&self) -> bool {
        self.is_online() && self.len.load(Ordering::SeqCst) > self.max_buffered / 2
    }

    /// Waits until the queue has room again or the session went offline.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            // Register before looking, so a drain between the look and the wait still wakes
            // this waiter (Notify::notify_waiters wakes only registered futures).
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.wanted.store(true, Ordering::SeqCst);
            if !self.needs_room() {
                return;
            }
            notified.await;
        }
    }

    /// Number of queued deliveries.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Waits until something may have been queued.
    pub(crate) async fn ready(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use std::time::Duration;

    fn delivery(qos: QoS) -> Delivery {
        let msg = Arc::new(Message {
            topic: "t".into(),
            payload: alicia_codec::Bytes::from_static(b"x"),
            qos,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            origin: 0,
        });
        Delivery { msg, qos, retain: false, sub_ids: Box::new([]), seq: 0 }
    }

    #[test]
    fn online_queues_never_drop_qos1_and_say_when_full() {
        let h = SessionHandle::new(1, "c".into(), (2, 4), Arc::new(Stats::default()));
        h.set_online(true);
        for i in 0..10 {
            let p = h.push(delivery(QoS::AtLeastOnce));
            assert_eq!(p.full, i >= 3, "push {i}");
        }
        assert_eq!(h.queued(), 10);
        assert!(h.push(delivery(QoS::AtMostOnce)).full);
        assert_eq!((h.queued(), h.dropped.load(Ordering::Relaxed)), (10, 1), "QoS 0 to a full queue is dropped");
    }

    #[test]
    fn offline_queues_drop_by_max_queued_oldest_qos0_first() {
        let h = SessionHandle::new(1, "c".into(), (2, 4), Arc::new(Stats::default()));
        h.push(delivery(QoS::AtMostOnce));
        h.push(delivery(QoS::AtLeastOnce));
        assert!(!h.push(delivery(QoS::AtLeastOnce)).full, "offline: never full, only dropping");
        let mut all = VecDeque::new();
        h.drain_into(&mut all);
        assert!(all.iter().all(|d| d.qos == QoS::AtLeastOnce) && all.len() == 2);
        assert_eq!(h.dropped.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_waiting_publisher_is_released_by_a_drain_or_going_offline() {
        let h = SessionHandle::new(1, "c".into(), (2, 4), Arc::new(Stats::default()));
        h.set_online(true);
        for _ in 0..6 {
            h.push(delivery(QoS::AtLeastOnce));
        }
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        h.drain_into(&mut VecDeque::new());
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();

        for _ in 0..6 {
            h.push(delivery(QoS::AtLeastOnce));
        }
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        h.set_online(false);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
    }
}
