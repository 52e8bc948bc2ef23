//! Counters shared by the tasks of one run, read by subscribers (to know when they are done)
//! and by the progress printer.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Progress of one publisher.
#[derive(Default)]
pub(crate) struct PubCounter {
    /// Messages written so far.
    pub sent: AtomicU64,
    /// Set once the publisher will send nothing more; `sent` is final then.
    pub done: AtomicBool,
}

/// State shared by every task of a run.
pub(crate) struct Shared {
    /// Time zero of the run; payload timestamps are nanoseconds since this instant.
    pub origin: Instant,
    pub publishers: Vec<PubCounter>,
    /// Deliveries received by all subscribers.
    pub received: AtomicU64,
    backlog: Option<u64>,
    fanout: u64,
    /// Set by publishers waiting for the backlog to shrink.
    waiting: AtomicBool,
    /// Woken when subscribers make progress while publishers wait.
    pub caught_up: Notify,
}

impl Shared {
    /// `backlog`: deliveries that may be outstanding (`None`: unbounded); `fanout`: deliveries
    /// per message.
    pub fn new(publishers: usize, backlog: Option<u64>, fanout: u64) -> Shared {
        Shared {
            backlog,
            fanout,
            origin: Instant::now(),
            publishers: (0..publishers).map(|_| PubCounter::default()).collect(),
            received: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            caught_up: Notify::new(),
        }
    }

    /// Nanoseconds since `origin`.
    pub fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }

    /// Messages sent by all publishers so far.
    pub fn sent(&self) -> u64 {
        self.publishers.iter().map(|p| p.sent.load(Relaxed)).sum()
    }

    /// Messages a publisher may send now without the subscribers' backlog exceeding
    /// `--backlog`: 0 until at least a quarter of the backlog is free, so that publishers
    /// resume with sizeable batches rather than one message per delivery.
    pub fn backlog_room(&self) -> u64 {
        let Some(limit) = self.backlog else {
            return u64::MAX;
        };
        let outstanding = (self.sent() * self.fanout).saturating_sub(self.received.load(SeqCst));
        let room = limit.saturating_sub(outstanding) / self.fanout;
        if room >= (limit / self.fanout / 4).max(1) {
            room
        } else {
            0
        }
    }

    /// Registers a publisher as waiting for room; call with an enabled `caught_up.notified()`.
    /// Returns false if room appeared meanwhile (then there is no need to wait).
    pub fn wait_for_room(&self) -> bool {
        self.waiting.store(true, SeqCst);
        self.backlog_room() == 0
    }

    /// Counts deliveries and wakes waiting publishers once there is room.
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, SeqCst);
        if self.waiting.load(SeqCst) && self.backlog_room() > 0 && self.waiting.swap(false, SeqCst) {
            self.caught_up.notify_waiters();
        }
    }

    /// Total sent by `sources` once all of them are done, `None` before.
    pub fn final_sent(&self, sources: Range<usize>) -> Option<u64> {
        let pubs = &self.publishers[sources];
        pubs.iter().all(|p| p.done.load(Relaxed)).then(|| pubs.iter().map(|p| p.sent.load(Relaxed)).sum())
    }
}

/// Prints a progress line to stderr every second until aborted.
pub(crate) async fn progress(shared: std::sync::Arc<Shared>) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let (mut last_sent, mut last_received) = (0, 0);
    loop {
        tick.tick().await;
        let sent = shared.sent();
        let received = shared.received.load(Relaxed);
        eprintln!(
            "bench: {:>5.1}s  sent {sent} ({}/s)  received {received} ({}/s)",
            shared.origin.elapsed().as_secs_f64(),
            sent - last_sent,
            received - last_received,
        );
        (last_sent, last_received) = (sent, received);
    }
}
