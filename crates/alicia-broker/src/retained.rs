//! Retained messages, one per topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use alicia_codec::topic;
use parking_lot::RwLock;

use crate::message::Message;

/// The retained-message store. Writes happen only for PUBLISHes with the RETAIN flag, so a
/// read-write lock is enough here; the normal publish path never touches it.
#[derive(Default)]
pub struct Retained {
    map: RwLock<HashMap<Arc<str>, Arc<Message>>>,
}

impl Retained {
    /// Stores `msg` for its topic, or clears the topic if the payload is empty.
    pub fn set(&self, msg: &Arc<Message>) {
        let mut map = self.map.write();
        if msg.payload.is_empty() {
            map.remove(&*msg.topic);
        } else {
            map.insert(Arc::from(&*msg.topic), msg.clone());
        }
    }

    /// Retained messages whose topic matches `filter` and that have not expired.
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = Instant::now();
        self.map
            .read()
            .iter()
            .filter(|(t, m)| topic::matches(filter, t) && !m.expired(now))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }
}
