//! The broker: shared state, the client registry, message routing and the accept loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_codec::{topic, Properties, Will};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::Config;
use crate::index::{Index, Matches};
use crate::listener::{Listener, ListenerConfig};
use crate::message::{Delivery, Message};
use crate::outbox::SessionHandle;
use crate::persist::{Event, Store};
use crate::retained::Retained;
use crate::security::{AllowAll, Security};
use crate::session::SessionState;
use crate::stats::Stats;
use alicia_codec::QoS;
use arc_swap::ArcSwap;

/// Deliveries produced by one read batch, grouped by target session so each outbox is locked
/// (and its connection woken) once per batch instead of once per message.
#[derive(Default)]
pub(crate) struct Batch {
    targets: Vec<(Arc<SessionHandle>, Vec<Delivery>)>,
    by_id: HashMap<u64, usize>,
}

impl Batch {
    fn add(&mut self, session: &Arc<SessionHandle>, d: Delivery) {
        if let Some((s, v)) = self.targets.last_mut() {
            if s.id == session.id {
                v.push(d);
                return;
            }
        }
        let found = if self.targets.len() <= 8 {
            self.targets.iter().position(|(s, _)| s.id == session.id)
        } else {
            if self.by_id.is_empty() {
                self.by_id.extend(self.targets.iter().enumerate().map(|(i, (s, _))| (s.id, i)));
            }
            self.by_id.get(&session.id).copied()
        };
        match found {
            Some(i) => self.targets[i].1.push(d),
            None => {
                if !self.by_id.is_empty() {
                    self.by_id.insert(session.id, self.targets.len());
                }
                self.targets.push((session.clone(), vec![d]));
            }
        }
    }

    /// Pushes everything collected into the target outboxes, first recording QoS 1/2
    /// deliveries to persistent sessions in the store. Returns true if anything was recorded
    /// (the caller must [`Store::sync`] before acknowledging).
    pub(crate) fn flush(&mut self, store: Option<&Store>) -> bool {
        let mut recorded = false;
        for (session, mut deliveries) in self.targets.drain(..) {
            if let Some(store) = store {
                if session.durable.load(Ordering::Relaxed) {
                    for d in deliveries.iter_mut().filter(|d| d.qos != QoS::AtMostOnce) {
                        d.seq = session.seq.fetch_add(1, Ordering::Relaxed) + 1;
                        store.record(Event::Enqueue { client_id: &session.client_id, seq: d.seq, delivery: d });
                        recorded = true;
                    }
                }
            }
            session.push_all(deliveries);
        }
        self.by_id.clear();
        recorded
    }
}

/// A registered client id: its live connection (if any) and its parked session (if offline).
pub(crate) struct Entry {
    /// Bumped by every connection that takes this client id; timers compare it.
    pub generation: u64,
    /// Signal that asks the live connection to end (session takeover).
    pub active: Option<Arc<Notify>>,
    /// Session state while no connection holds it.
    pub parked: Option<SessionState>,
}

/// State shared by every connection of one broker.
pub struct Shared {
    pub(crate) config: Config,
    pub(crate) index: Index,
    pub(crate) retained: Retained,
    pub(crate) stats: Arc<Stats>,
    pub(crate) registry: Mutex<HashMap<Arc<str>, Entry>>,
    pub(crate) security: ArcSwap<Box<dyn Security>>,
    pub(crate) store: Option<Store>,
    /// Set once when the broker shuts down; every connection watches it.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    next_id: AtomicU64,
    started: Instant,
}

impl Shared {
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
        let mut i = 0;
        while i < subs.len() {
            // Overlapping subscriptions of one session: one copy at the highest QoS, carrying
            // every subscription identifier.
            let first = subs[i];
            let mut qos = first.options.qos;
            let mut rap = first.options.retain_as_published;
            let mut ids: Vec<u32> = first.id.into_iter().collect();
            let mut j = i + 1;
            while j < subs.len() && subs[j].session.id == first.session.id {
                qos = qos.max(subs[j].options.qos);
                rap |= subs[j].options.retain_as_published;
                ids.extend(subs[j].id);
                j += 1;
            }
            let d = Delivery {
                msg: msg.clone(),
                qos: qos.min(msg.qos),
                retain: rap && msg.retain,
                sub_ids: ids.into_boxed_slice(),
                seq: 0,
            };
            batch.add(&first.session, d);
            reached += 1;
            i = j;
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
            properties.message_expiry_interval.take().map(|s| Instant::now() + Duration::from_secs(s as u64));
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
    /// recording it in the store first where persistent sessions need it.
    pub(crate) fn route_now(&self, msg: Message) {
        let mut batch = Batch::default();
        self.route(Arc::new(msg), &mut batch);
        if batch.flush(self.store.as_ref()) {
            self.sync_store();
        }
    }

    /// Removes every subscription of a session from the index.
    pub(crate) fn drop_subscriptions(&self, state: &SessionState) {
        for raw in state.subscriptions.keys() {
            if let Ok(f) = topic::parse_filter(raw) {
                self.index.unsubscribe(f.group, f.filter, state.handle.id);
            }
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
                let delay = will.properties.will_delay_interval.unwrap_or(0).min(expiry) as u64;
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
            tokio::time::sleep(Duration::from_secs((expiry as u64).saturating_sub(waited))).await;
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
                shared.drop_subscriptions(&state);
                shared.record(Event::SessionEnd { client_id: &client_id });
                shared.sync_store();
            }
        });
    }

    fn still_parked(&self, client_id: &str, generation: u64) -> bool {
        let reg = self.registry.lock();
        reg.get(client_id).is_some_and(|e| e.generation == generation && e.active.is_none())
    }

    fn save(&self) {
        if let Some(store) = &self.store {
            if let Err(e) = store.sync().and_then(|_| store.compact()) {
                tracing::error!(error = %e, "cannot save the persistence store");
            }
        }
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// A broker instance. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

impl Broker {
    /// Creates a broker with the given settings. Nothing listens until [`Broker::listen`].
    ///
    /// `config.persistence` is ignored here; use [`Broker::open`] for a persistent broker.
    pub fn new(config: Config) -> Broker {
        Broker::build(config, None)
    }

    fn build(config: Config, store: Option<Store>) -> Broker {
        Broker {
            shared: Arc::new(Shared {
                config,
                index: Index::default(),
                retained: Retained::default(),
                stats: Arc::new(Stats::default()),
                registry: Mutex::new(HashMap::new()),
                security: ArcSwap::from_pointee(Box::new(AllowAll)),
                store,
                shutdown: tokio::sync::watch::channel(false).0,
                next_id: AtomicU64::new(1),
                started: Instant::now(),
            }),
        }
    }

    /// Creates a broker and, when `config.persistence` names a directory, restores its
    /// sessions, queued messages and retained messages from the store there and saves them
    /// every `autosave_interval`. Must be called inside a tokio runtime.
    pub fn open(config: Config) -> std::io::Result<Broker> {
        let Some(dir) = config.persistence.clone() else { return Ok(Broker::new(config)) };
        let (store, recovered) = Store::open(&dir)?;
        let autosave = Duration::from_secs(config.autosave_interval.max(1));
        let broker = Broker::build(config, Some(store));
        let shared = &broker.shared;
        for (topic, msg) in recovered.retained {
            debug_assert_eq!(&*topic, &*msg.topic);
            shared.retained.set(&msg);
        }
        let sessions = recovered.sessions.len();
        for (client_id, durable) in recovered.sessions {
            let handle = shared.new_handle(client_id.clone());
            handle.durable.store(true, Ordering::Relaxed);
            handle.seq.store(durable.msgs.keys().next_back().copied().unwrap_or(0), Ordering::Relaxed);
            let mut state = SessionState::new(handle.clone());
            state.expiry = durable.expiry;
            for (raw, sub) in durable.subs {
                if let Ok(f) = topic::parse_filter(&raw) {
                    let s = crate::index::Sub { session: handle.clone(), options: sub.options, id: sub.id };
                    shared.index.subscribe(f.group, f.filter, s);
                    state.subscriptions.insert(raw, sub);
                }
            }
            handle.push_all(durable.msgs.into_values());
            shared
                .registry
                .lock()
                .insert(client_id.clone(), Entry { generation: 1, active: None, parked: Some(state) });
            // The restart counts as the moment these clients went away.
            shared.schedule_expiry(client_id, 1, None, durable.expiry);
        }
        tracing::info!(store = %dir.display(), sessions, retained = shared.retained.len(), "persistence store loaded");
        let weak = Arc::downgrade(&broker.shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(autosave);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                // Compaction fsyncs: keep it off the runtime's worker threads.
                let _ = tokio::task::spawn_blocking(move || shared.save()).await;
            }
        });
        Ok(broker)
    }

    /// Ends every connection (MQTT 5 clients get DISCONNECT 0x8B "server shutting down"),
    /// waits up to `grace` for them to finish, then saves the store.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.shared.stats.clients_connected.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.save();
    }

    /// Writes everything to the persistence store now (also done every `autosave_interval`).
    /// Call it before a planned shutdown.
    pub fn save(&self) {
        self.shared.save();
    }

    /// Replaces the authentication and authorisation in force. Connections already
    /// established keep their identity; every later decision uses the new rules.
    pub fn set_security(&self, security: Box<dyn Security>) {
        self.shared.security.store(Arc::new(security));
    }

    /// Publishes the `$SYS/broker/...` statistics every `interval` (Mosquitto's
    /// `sys_interval`) for as long as the broker exists.
    pub fn spawn_sys(&self, interval: Duration) {
        if !interval.is_zero() {
            tokio::spawn(crate::sys::run(Arc::downgrade(&self.shared), interval));
        }
    }

    /// Publishes a QoS 0 message from the broker itself (for example `$SYS` notices).
    pub fn publish(&self, topic: &str, payload: impl Into<bytes::Bytes>, retain: bool) {
        self.shared.publish_internal(topic.to_string(), payload, retain);
    }

    /// The broker's metrics in Prometheus text format.
    pub fn metrics(&self) -> String {
        self.shared.prometheus()
    }

    /// Counters of this broker.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Binds a plain MQTT-over-TCP listener. Port 0 picks a free port; see
    /// [`Listener::local_addr`].
    pub async fn listen(&self, addr: SocketAddr) -> std::io::Result<Listener> {
        self.listen_with(ListenerConfig::tcp(addr)).await
    }

    /// Binds a listener with its own transport and TLS settings.
    pub async fn listen_with(&self, config: ListenerConfig) -> std::io::Result<Listener> {
        Listener::bind(self.shared.clone(), config).await
    }

    /// Number of subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.shared.index.len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.shared.retained.len()
    }

    /// Seconds since the broker was created.
    pub fn uptime(&self) -> Duration {
        self.shared.uptime()
    }
}

/// Merged properties helper used when a delivery needs per-subscriber additions.
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
