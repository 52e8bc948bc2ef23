//! The broker handle: what the binary and tests hold. It owns nothing itself; every clone
//! points at the same [`Shared`] state, and listeners hand sockets to connection tasks.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use alicia_codec::topic;

use crate::config::Config;
use crate::listener::{Listener, ListenerConfig};
use crate::persist::Store;
use crate::security::{AllowAll, Security};
use crate::session::SessionState;
use crate::shared::{Entry, Shared};
use crate::stats::Stats;

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
        Broker { shared: Arc::new(Shared::new(config, store, Box::new(AllowAll))) }
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
            let entry = Entry { generation: 1, active: None, parked: Some(state), handle };
            shared.registry.lock().insert(client_id.clone(), entry);
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
        loop {
            // Registered before looking, so the last disconnect cannot slip between the two.
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.shared.stats.clients_connected.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                break;
            }
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
