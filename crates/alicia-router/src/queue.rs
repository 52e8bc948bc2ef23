//! The bounded priority queue between receiving an envelope and forwarding it.
//!
//! Four FIFO lanes, one per priority; the forwarder always takes from the most urgent lane
//! that has something, so under backlog `critical` and `high` go first and messages of one
//! priority keep their order. When the queue is full, a message evicts the newest message of
//! a lower priority (returned to the caller, who dead-letters it: nothing is dropped
//! silently); when there is nothing less urgent to evict, the caller waits for room, which
//! slows down the router's reading of its inbox (backpressure) instead of growing memory.

use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;

use alicia_envelope::Priority;
use tokio::sync::Notify;

/// See the module documentation.
pub struct PriorityQueue<T> {
    state: Mutex<State<T>>,
    items: Notify,
    space: Notify,
    capacity: usize,
}

struct State<T> {
    lanes: [VecDeque<T>; 4],
    len: usize,
    closed: bool,
}

fn lane(p: Priority) -> usize {
    match p {
        Priority::Low => 0,
        Priority::Normal => 1,
        Priority::High => 2,
        Priority::Critical => 3,
    }
}

/// What became of a pushed item.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Queued.
    Queued,
    /// Queued, in place of this less urgent item (the queue was full).
    Evicted(T),
    /// The queue is closed (the router is stopping): the item is handed back.
    Closed(T),
}

impl<T> PriorityQueue<T> {
    /// An empty queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        PriorityQueue {
            state: Mutex::new(State { lanes: Default::default(), len: 0, closed: false }),
            items: Notify::new(),
            space: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock()
    }

    /// Queues `item` at `priority`, waiting for room if the queue is full of items at least as
    /// urgent.
    pub async fn push(&self, priority: Priority, item: T) -> Pushed<T> {
        let l = lane(priority);
        let mut item = Some(item);
        loop {
            {
                let mut s = self.lock();
                let it = item.take().expect("item present until queued");
                if s.closed {
                    return Pushed::Closed(it);
                }
                if s.len < self.capacity {
                    s.lanes[l].push_back(it);
                    s.len += 1;
                    drop(s);
                    self.items.notify_one();
                    return Pushed::Queued;
                }
                if let Some(lower) = (0..l).find(|&i| !s.lanes[i].is_empty()) {
                    let old = s.lanes[lower].pop_back().expect("lane is not empty");
                    s.lanes[l].push_back(it);
                    drop(s);
                    self.items.notify_one();
                    return Pushed::Evicted(old);
                }
                item = Some(it);
            }
            // notify_one keeps a permit when nobody waits, so a pop between the unlock and
            // here is not missed.
            self.space.notified().await;
        }
    }

    /// The most urgent item, waiting for one; `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<T> {
        loop {
            {
                let mut s = self.lock();
                if let Some(item) = s.lanes.iter_mut().rev().find_map(VecDeque::pop_front) {
                    s.len -= 1;
                    drop(s);
                    self.space.notify_one();
                    return Some(item);
                }
                if s.closed {
                    return None;
                }
            }
            self.items.notified().await;
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses new items; [`PriorityQueue::pop`] still drains what is queued, then says `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.items.notify_waiters();
        self.items.notify_one();
        self.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn urgent_first_fifo_within_a_priority() {
        let q = PriorityQueue::new(16);
        for (p, x) in [
            (Priority::Low, "l1"),
            (Priority::Normal, "n1"),
            (Priority::Critical, "c1"),
            (Priority::Normal, "n2"),
            (Priority::High, "h1"),
            (Priority::Critical, "c2"),
        ] {
            assert_eq!(q.push(p, x).await, Pushed::Queued);
        }
        assert_eq!(q.len(), 6);
        let mut out = Vec::new();
        while !q.is_empty() {
            out.push(q.pop().await.unwrap());
        }
        assert_eq!(out, ["c1", "c2", "h1", "n1", "n2", "l1"]);
    }

    #[tokio::test]
    async fn full_queue_evicts_the_newest_less_urgent_item_or_waits() {
        let q = Arc::new(PriorityQueue::new(3));
        q.push(Priority::Low, 1).await;
        q.push(Priority::Low, 2).await;
        q.push(Priority::Normal, 3).await;
        assert_eq!(q.push(Priority::Critical, 4).await, Pushed::Evicted(2));
        assert_eq!(q.push(Priority::High, 5).await, Pushed::Evicted(1));
        // Nothing below normal left: a normal message waits for room.
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.push(Priority::Normal, 6).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        assert_eq!(q.pop().await, Some(4));
        assert_eq!(tokio::time::timeout(Duration::from_secs(2), waiting).await.unwrap().unwrap(), Pushed::Queued);
        assert_eq!([q.pop().await, q.pop().await, q.pop().await], [Some(5), Some(3), Some(6)]);
    }

    #[tokio::test]
    async fn close_drains_then_ends_and_wakes_the_consumer() {
        let q = Arc::new(PriorityQueue::new(4));
        q.push(Priority::Normal, 1).await;
        q.close();
        assert_eq!(q.push(Priority::Normal, 2).await, Pushed::Closed(2));
        assert_eq!(q.pop().await, Some(1));
        assert_eq!(q.pop().await, None);
        let q = Arc::new(PriorityQueue::<u8>::new(4));
        let q2 = q.clone();
        let consumer = tokio::spawn(async move { q2.pop().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.close();
        assert_eq!(tokio::time::timeout(Duration::from_secs(2), consumer).await.unwrap().unwrap(), None);
    }
}
