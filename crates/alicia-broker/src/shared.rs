//! State shared by every connection of one broker, and what they do with it: route a message
//! to the sessions that subscribed, publish wills, park and expire sessions.
//!
//! Everything here is reached from many connection tasks at once, so the rules are strict: the
//! publish path takes no global lock (the subscription index is an `ArcSwap` snapshot, each
//! outbox has its own mutex), and the client registry's mutex is held only for a few map
//! operations on connect and disconnect, never across an `.await`. This module knows nothing of
//! sockets or of the protocol state machine (`protocol`), which is what keeps the crate's
//! modules from importing each other in a circle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_codec::{topic, ByteString, Bytes, Properties, QoS, Will};
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::Config;
use crate::index::{Index, Matches};
use crate::message::{Delivery, Message};
use crate::outbox::{Pushed, SessionHandle};
use crate::persist::{Event, Store};
use crate::retained::Retained;
use crate::security::Security;
use crate::session::SessionState;
use crate::stats::Stats;

/// Topic prefix of presence events: `$SYS/broker/presence/<client id>`.
pub(crate) const PRESENCE_PREFIX: &str = "$SYS/broker/presence/";

/// Longest topic name MQTT can carry (a 16-bit length).
const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Deliveries produced by one read batch, grouped by target session so each outbox is locked
/// (and its connection woken) once per batch instead of once per message.
#[derive(Default)]
pub(crate) struct Batch {
    targets: Vec<(Arc<SessionHandle>, Vec<Delivery>)>,
    by_id: HashMap<u64, usize>,
}

/// What [`Batch::flush`] did.
#[derive(Default)]
pub(crate) struct Flushed {
    /// QoS 1/2 deliveries were recorded in the store: [`Store::sync`] before acknowledging.
    pub recorded: bool,
    /// Online sessions whose queue is now over its limit. The connection that published
    /// stops reading from its client until they have room again (backpressure), instead of
    /// the broker dropping acknowledged messages.
    pub full: Vec<Arc<SessionHandle>>,
}

impl Batch {
    fn add(&mut self, session: &Arc<SessionHandle>, d: Delivery) {
        if let Some((s, v)) = self.targets.last_mut() {
            if s.id == session.id {
                v.push(d);
                return;
            }
        }
        // A short list is searched; past a few targets a map keeps fan-out linear.
        let found = if self.targets.len() <= 8 {
            self.targets.iter().position(|(s, _)| s.id == session.id)
        } else {
            if self.by_id.is_empty() {
                self.by_id.extend(self.targets.iter().enumerate().map(|(i, (s, _))| (s.id, i)));
            }
            self.by_id.get(&session.id).copied()
        };
        match found.and_then(|i| self.targets.get_mut(i)) {
            Some((_, v)) => v.push(d),
            None => {
                if !self.by_id.is_empty() {
                    self.by_id.insert(session.id, self.targets.len());
                }
                self.targets.push((session.clone(), vec![d]));
            }
        }
    }

    /// Whether nothing was collected.
    pub(crate) fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Pushes everything collected into the target outboxes, first recording QoS 1/2
    /// deliveries to persistent sessions in the store.
    pub(crate) fn flush(&mut self, store: Option<&Store>) -> Flushed {
        let mut out = Flushed::default();
        for (session, mut deliveries) in self.targets.drain(..) {
            if let Some(store) = store {
                if session.durable.load(Ordering::Relaxed) {
                    for d in deliveries.iter_mut().filter(|d| d.qos != QoS::AtMostOnce) {
                        d.seq = session.seq.fetch_add(1, Ordering::Relaxed) + 1;
                        store.record(Event::Enqueue { client_id: &session.client_id, seq: d.seq, delivery: d });
                        out.recorded = true;
                    }
                }
            }
            let Pushed { full, dropped_seqs } = session.push_all(deliveries);
            if let Some(store) = store {
                // A stored delivery the offline queue had no room for is done with.
                for seq in dropped_seqs {
                    store.record(Event::Done { client_id: &session.client_id, seq });
                }
            }
            if full {
                out.full.push(session);
            }
        }
        self.by_id.clear();
        out
    }
}

/// A live connection as the registry knows it.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Asks the connection to end: another one takes over its client id.
    pub kick: Notify,
    /// Signalled once the connection has given up the client id.
    pub gone: Notify,
}

/// A registered client id: its live connection (if any) and its parked session (if offline).
pub(crate) struct Entry {
    /// Bumped by every connection that takes this client id; timers compare it.
    pub generation: u64,
    /// The connection holding the client id now.
    pub active: Option<Arc<Live>>,
    /// Session state while no connection holds it.
    pub parked: Option<SessionState>,
    /// The current session's shared half, online or not (for per-client counters).
    pub handle: Arc<SessionHandle>,
}

/// State shared by every connection of one broker.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) index: Index,
    pub(crate) retained: Retained,
    pub(crate) stats: Arc<Stats>,
    pub(crate) registry: Mutex<HashMap<Arc<str>, Entry>>,
    pub(crate) security: ArcSwap<Box<dyn Security>>,
    pub(crate) store: Option<Store>,
    /// Set once when the broker shuts down; every connection watches it.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// Signalled whenever the last client disconnects (shutdown waits for it).
    pub(crate) idle: Notify,
    next_id: AtomicU64,
    started: Instant,
}

impl Shared {
    pub(crate) fn new(config: Config, store: Option<Store>, security: Box<dyn Security>) -> Shared {
        Shared {
            config,
            index: Index::default(),
            retained: Retained::default(),
            stats: Arc::new(Stats::default()),
            registry: Mutex::new(HashMap::new()),
            security: ArcSwap::from_pointee(security),
            store,
            shutdown: tokio::sync::watch::channel(false).0,
            idle: Notify::new(),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
        }
    }

    /// Writes recorded changes to the store; a failure is logged, never fatal.
    pub(crate) fn sync_store(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.sync() {
                tracing::error!(error = %e, "cannot write the persistence store");
            }
        }
    }

    /// Records a change if persistence is on.
    pub(crate) fn record(&self, event: Event<'_>) {
        if let Some(store) = &self.store {
            store.record(event);
        }
    }

    pub(crate) fn new_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn new_handle(&self, client_id: Arc<str>) -> Arc<SessionHandle> {
        let limits = (self.config.max_queued, self.config.max_buffered);
        SessionHandle::new(self.new_session_id(), client_id, limits, self.stats.clone())
    }

    /// A client went away: one fewer connected, and shutdown learns when none is left.
    pub(crate) fn disconnected(&self) {
        if self.stats.disconnected() == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Routes one message to every matching session, collecting the deliveries in `batch`
    /// (pushed to the outboxes by [`Batch::flush`]). Returns the number of sessions reached.
    pub(crate) fn route(&self, msg: Arc<Message>, batch: &mut Batch) -> usize {
        if msg.retain {
            self.retained.set(&msg);
            if let Some(store) = &self.store {
                if !msg.topic.starts_with("$SYS/") {
                    store.record(Event::Retain(&msg));
                }
            }
        }
        let snapshot = self.index.snapshot();
        let mut m = Matches { subs: Vec::new(), groups: Vec::new() };
        snapshot.matches(&msg.topic, &mut m);
        let mut reached = 0;
        let subs = &mut m.subs;
        subs.retain(|s| !(s.options.no_local && s.session.id == msg.origin));
        if subs.len() > 1 {
            subs.sort_unstable_by_key(|s| s.session.id);
        }
        // Overlapping subscriptions of one session (adjacent after the sort): one copy at the
        // highest QoS, carrying every subscription identifier.
        for same in subs.chunk_by(|a, b| a.session.id == b.session.id) {
            let Some(first) = same.first() else { continue };
            let qos = same.iter().map(|s| s.options.qos).max().unwrap_or(QoS::AtMostOnce);
            let rap = same.iter().any(|s| s.options.retain_as_published);
            let ids: Box<[u32]> = same.iter().filter_map(|s| s.id).collect();
            let d =
                Delivery { msg: msg.clone(), qos: qos.min(msg.qos), retain: rap && msg.retain, sub_ids: ids, seq: 0 };
            batch.add(&first.session, d);
            reached += 1;
        }
        for g in m.groups {
            if let Some(s) = g.pick() {
                if s.options.no_local && s.session.id == msg.origin {
                    continue;
                }
                let d = Delivery {
                    msg: msg.clone(),
                    qos: s.options.qos.min(msg.qos),
                    retain: s.options.retain_as_published && msg.retain,
                    sub_ids: s.id.into_iter().collect(),
                    seq: 0,
                };
                batch.add(&s.session, d);
                reached += 1;
            }
        }
        reached
    }

    /// Publishes a client's will message.
    pub(crate) fn publish_will(&self, will: Will) {
        let mut properties = will.properties;
        properties.will_delay_interval = None;
        let expires_at =
            properties.message_expiry_interval.take().map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        let msg = Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
            expires_at,
            origin: 0,
        };
        self.route_now(msg);
    }

    /// Routes a message the broker itself publishes (wills, `$SYS`) and delivers it at once,
    /// recording it in the store first where persistent sessions need it. Nobody waits on a
    /// full queue here: the broker's own messages are few.
    pub(crate) fn route_now(&self, msg: Message) {
        let mut batch = Batch::default();
        self.route(Arc::new(msg), &mut batch);
        if batch.flush(self.store.as_ref()).recorded {
            self.sync_store();
        }
    }

    /// Publishes a QoS 0 message from the broker itself.
    pub(crate) fn publish_internal(&self, topic: String, payload: impl Into<Bytes>, retain: bool) {
        if topic.len() > MAX_TOPIC_LEN {
            // Cannot go on the wire (a 16-bit length); never build a frame for it.
            return;
        }
        let msg = Message {
            topic: ByteString::from(topic),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain,
            properties: Properties::default(),
            expires_at: None,
            origin: 0,
        };
        self.route_now(msg);
    }

    /// Announces that a client connected or disconnected, as a small JSON object on
    /// `$SYS/broker/presence/<client id>`. A client id that would make that topic longer than
    /// MQTT allows (65,535 bytes) gets no event.
    pub(crate) fn presence(&self, client_id: &str, event: &str, detail: &[(&str, &str)]) {
        if client_id.contains(['+', '#']) || PRESENCE_PREFIX.len() + client_id.len() > MAX_TOPIC_LEN {
            return;
        }
        let mut json = format!("{{\"client_id\":{},\"event\":\"{event}\"", json_str(client_id));
        for (k, v) in detail {
            json.push_str(&format!(",\"{k}\":{}", json_str(v)));
        }
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        json.push_str(&format!(",\"timestamp_ms\":{ts}}}"));
        self.publish_internal(format!("{PRESENCE_PREFIX}{client_id}"), json, false);
    }

    /// Removes every subscription of a session from the index.
    pub(crate) fn drop_subscriptions(&self, state: &SessionState) {
        for raw in state.subscriptions.keys() {
            if let Ok(f) = topic::parse_filter(raw) {
                self.index.unsubscribe(f.group, f.filter, state.handle.id);
            }
        }
    }

    /// Ends a session for good: its subscriptions go, the store forgets it, and publishers
    /// waiting for room in its queue are released.
    pub(crate) fn end_session(&self, client_id: &str, state: &SessionState) {
        self.drop_subscriptions(state);
        state.handle.set_online(false);
        if state.handle.durable.load(Ordering::Relaxed) {
            self.record(Event::SessionEnd { client_id });
            self.sync_store();
        }
    }

    /// Called when a client went away without taking its session along: publishes the will
    /// after its delay (or when the session ends, if sooner) and expires the session.
    pub(crate) fn schedule_expiry(
        self: &Arc<Self>,
        client_id: Arc<str>,
        generation: u64,
        will: Option<Will>,
        expiry: u32,
    ) {
        let shared = self.clone();
        tokio::spawn(async move {
            let mut waited = 0u64;
            if let Some(will) = will {
                let delay = u64::from(will.properties.will_delay_interval.unwrap_or(0).min(expiry));
                tokio::time::sleep(Duration::from_secs(delay)).await;
                waited = delay;
                if !shared.still_parked(&client_id, generation) {
                    return; // the client came back: the will is cancelled.
                }
                shared.publish_will(will);
            }
            if expiry == u32::MAX {
                return;
            }
            tokio::time::sleep(Duration::from_secs(u64::from(expiry).saturating_sub(waited))).await;
            let state = {
                let mut reg = shared.registry.lock();
                match reg.get(&client_id) {
                    Some(e) if e.generation == generation && e.active.is_none() => {
                        reg.remove(&client_id).and_then(|e| e.parked)
                    }
                    _ => None,
                }
            };
            if let Some(state) = state {
                tracing::debug!(client = %client_id, "session expired");
                shared.end_session(&client_id, &state);
            }
        });
    }

    fn still_parked(&self, client_id: &str, generation: u64) -> bool {
        let reg = self.registry.lock();
        reg.get(client_id).is_some_and(|e| e.generation == generation && e.active.is_none())
    }

    pub(crate) fn save(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.sync().and_then(|_| store.compact()) {
                tracing::error!(error = %e, "cannot save the persistence store");
            }
        }
    }

    /// Time since start.
    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Merged properties of one delivery: the message's, plus what is per subscriber.
pub(crate) fn delivery_properties(
    base: &Properties,
    expiry: Option<u32>,
    alias: Option<u16>,
    ids: &[u32],
) -> Properties {
    let mut p = base.clone();
    p.message_expiry_interval = expiry;
    p.topic_alias = alias;
    p.subscription_identifiers = ids.to_vec();
    p
}

/// JSON string literal with escaping.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
