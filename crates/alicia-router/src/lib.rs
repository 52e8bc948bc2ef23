//! Alicia's message router: the service `router` that delivers envelopes whose destination
//! needs knowledge of the home's devices.
//!
//! Services send envelopes for other services straight to their inboxes (the SDK does that);
//! what needs the registry, `device_id:ID` and `capability:NAME`, goes to the router's inbox
//! `<prefix>/services/router/inbox`, the routing entry topic. Devices, which do not know where
//! services live either, may send anything there. Instances share the inbox through
//! `$share/router/...`, so several routers split the traffic.
//!
//! # Destinations
//!
//! | destination | forwarded to |
//! |-------------|--------------|
//! | `device_id:ID` | that device's `endpoints.command` topic, if it is online |
//! | `capability:NAME` | the command topic of one online provider, round robin (per capability and location), preferring the sender's location |
//! | `broadcast` | `<prefix>/broadcast` |
//! | a service name | that service's inbox |
//!
//! **Location preference.** The location is `payload.metadata.location` when the sender sets
//! it (a voice service knows which room an utterance came from), else the registered location
//! of the sending device (`source` = `device_id:X`). If no online provider is in that
//! location, any online provider is used.
//!
//! # What it learns devices from
//!
//! Only the bus: the registry's retained inventory on `<prefix>/system/registry/devices` (the
//! authority: each one replaces what the router knew) and its events on
//! `<prefix>/system/registry/events` (`registered`, `updated`, `online`, `offline`, `removed`;
//! applied at once, so a device that went offline is skipped before the next inventory). For
//! [`RouterConfig::inventory_wait`] after start, a `device_id:`/`capability:` message waits for
//! the first inventory instead of being refused because the router has not heard it yet.
//!
//! # Rules
//!
//! - `routing.hops` is incremented and the router's name appended to `routing.route`; beyond
//!   `routing.max_hops` (a loop), or beyond [`RouterConfig::hop_limit`] whatever the envelope
//!   allows, the envelope is refused.
//! - `ttl`: expired on arrival (the SDK checks) or while waiting in the queue → refused.
//! - Priority: between receiving and forwarding is a bounded priority queue
//!   ([`RouterConfig::queue_capacity`]); under backlog `critical`, then `high`, go first. When
//!   it is full, a message evicts the newest less urgent one (dead-lettered `queue_full`), or
//!   waits for room (backpressure on the inbox). Without a backlog (the queue is empty) an
//!   envelope goes straight to the forwarding connection ([`RouterConfig::direct_when_idle`]).
//! - Forwarded envelopes keep their `message_id`, signature and encrypted payload (the router
//!   reads only the clear fields), and the sender's MQTT 5 response topic and correlation data,
//!   so replies go straight back to the requester, not through the router.
//! - Nothing is dropped silently. A refused envelope goes to `<prefix>/system/deadletter`
//!   ([`alicia_sdk::DeadLetter`]) with the reason, prefixed by its code: `invalid_envelope`
//!   (not JSON or not a valid envelope: the original bytes), `expired`, `security`,
//!   `max_hops`, `unknown_device`, `device_offline`, `no_provider`, `no_endpoint` (a device
//!   without a usable command topic), `queue_full`, `stopping`. A request that cannot be routed
//!   (`max_hops`, `unknown_device`, `device_offline`, `no_provider`, `no_endpoint`) also gets
//!   an error response with that code, to its MQTT 5 response topic and correlation data if
//!   it has them, else to the sender's inbox derived from `source`, so it does not wait for a
//!   timeout.
//!
//! # Metrics
//!
//! Every [`RouterConfig::metrics_interval`] (10 s) and at shutdown, retained, QoS 0, on
//! `<prefix>/system/metrics/router`: `alicia_router_routed_total{destination}`,
//! `alicia_router_dead_letters_total{reason}`, `alicia_router_latency_seconds` (histogram,
//! from the handler receiving the parsed envelope to handing it to the MQTT client),
//! `alicia_router_queue_depth`, `alicia_router_devices`.
//!
//! # Why it is built this way
//!
//! - **Built on the SDK** for the inbox: shared subscription, presence, heartbeats, envelope
//!   validation, expiry and signature checks are the same as every service's (with
//!   [`alicia_sdk::EnvelopeSecurity::pass_through_encrypted`] forced on: the router routes
//!   what it cannot read). A **second, plain MQTT connection** (client id
//!   `router-<instance>-io`, same credentials) reads the registry's documents and forwards:
//!   the SDK re-seals what it publishes and has no way to pass on another sender's response
//!   topic, and forwarding on its own connection keeps the two directions apart.
//! - **Resolution happens on receipt**, against an immutable inventory snapshot (an `Arc`
//!   swapped on every change): a lookup is a hash-map read with no lock held across an await.
//! - **No dependency on the registry crate**: the inventory document is the contract, so a
//!   registry written in another language, or a test's fake one, works the same.

mod inventory;
mod io;
mod metrics;
mod queue;
mod route;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use alicia_sdk::Link;
use alicia_sdk::{Bus, SdkError, ServiceConfig, ServiceHandle, Topics};
use rumqttc_notls::v5::mqttbytes::QoS;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use inventory::{Device, Inventory};
pub use metrics::LATENCY_BUCKETS;
pub use queue::{PriorityQueue, Pushed};

use route::{Router, Shared};

/// Settings of a router instance.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The bus connection (broker, credentials, prefix, security). The service name defaults
    /// to [`alicia_sdk::ROUTER_SERVICE`].
    pub service: ServiceConfig,
    /// Envelopes that may wait between receiving and forwarding (default 10 000).
    pub queue_capacity: usize,
    /// Period of the metrics snapshot (default 10 s).
    pub metrics_interval: Duration,
    /// How long after start a `device_id:`/`capability:` message waits for the registry's
    /// first inventory (default 2 s).
    pub inventory_wait: Duration,
    /// Hops allowed at most, whatever an envelope's `routing.max_hops` says (default 32): an
    /// envelope that asks for billions of hops and loops must not keep the router busy.
    pub hop_limit: u32,
    /// Without a backlog, forward straight from the receiving task instead of through the
    /// queue and the forwarding task (default true: one task wake-up less per envelope).
    pub direct_when_idle: bool,
}

impl RouterConfig {
    /// The defaults, on the bus connection `service`.
    pub fn new(service: ServiceConfig) -> Self {
        RouterConfig {
            service,
            queue_capacity: 10_000,
            metrics_interval: Duration::from_secs(10),
            inventory_wait: Duration::from_secs(2),
            hop_limit: 32,
            direct_when_idle: true,
        }
    }
}

/// Why the router cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The bus configuration is unusable.
    #[error(transparent)]
    Sdk(#[from] SdkError),
    /// A router setting is unusable.
    #[error("invalid router configuration: {0}")]
    Config(String),
}

/// Starts a router instance: connects (in the background, retrying with backoff) and routes
/// until [`RouterHandle::shutdown`]. Must be called inside a tokio runtime.
pub async fn start(config: RouterConfig) -> Result<RouterHandle, RouterError> {
    if config.queue_capacity == 0 {
        return Err(RouterError::Config("queue_capacity must be at least 1".into()));
    }
    if config.metrics_interval.is_zero() {
        return Err(RouterError::Config("metrics_interval must be more than zero".into()));
    }
    let mut service = config.service.clone();
    service.security = service.security.pass_through_encrypted(true);
    let topics = Topics::new(service.topic_prefix.clone())?;
    if config.hop_limit == 0 {
        return Err(RouterError::Config("hop_limit must be at least 1".into()));
    }
    let mut shared = Shared::new(topics, config.queue_capacity, config.inventory_wait, config.hop_limit);
    shared.direct_when_idle = config.direct_when_idle;
    let shared = Arc::new(shared);
    // The forwarding connection exists before the service starts receiving, so one instance id
    // names both connections.
    let name = service.name.clone().unwrap_or_else(|| alicia_sdk::ROUTER_SERVICE.to_string());
    let instance = service
        .instance_id
        .get_or_insert_with(|| alicia_envelope::Uuid::new_v4().simple().to_string()[..12].to_string())
        .clone();
    let io_topics = io::IoTopics::new(&service.topic_prefix, &name);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (link, io_task) = io::connect(&service, format!("{name}-{instance}-io"), shared.clone(), io_topics.clone());
    let client = link.client().clone();
    let sdk = match alicia_sdk::start(service.clone(), Router { shared: shared.clone(), client: client.clone() }) {
        Ok(sdk) => sdk,
        Err(e) => {
            link.abort();
            io_task.abort();
            return Err(e.into());
        }
    };
    let forwarder = tokio::spawn(route::forward(shared.clone(), client.clone(), sdk.bus().clone()));
    let metrics = tokio::spawn(publish_metrics(
        shared.clone(),
        link.clone(),
        io_topics.metrics.clone(),
        (name, instance),
        config.metrics_interval,
        stop_rx,
    ));
    Ok(RouterHandle {
        sdk: Some(sdk),
        shared,
        link,
        metrics_topic: io_topics.metrics,
        stop: stop_tx,
        tasks: Some(Tasks { io: io_task, forwarder, metrics }),
    })
}

async fn publish_metrics(
    shared: Arc<Shared>,
    link: Link,
    topic: String,
    (name, instance): (String, String),
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let body = snapshot(&shared, &name, &instance).to_string();
        let _ = link.publish(topic.clone(), QoS::AtMostOnce, true, body, None).await;
    }
}

fn snapshot(shared: &Shared, name: &str, instance: &str) -> Value {
    shared.metrics.snapshot(name, instance, shared.queue.len(), shared.inventory().len())
}

struct Tasks {
    io: JoinHandle<()>,
    forwarder: JoinHandle<()>,
    metrics: JoinHandle<()>,
}

/// A running router. Dropping it ends its connections without a goodbye (as a crash would);
/// [`RouterHandle::shutdown`] leaves cleanly.
pub struct RouterHandle {
    sdk: Option<ServiceHandle>,
    shared: Arc<Shared>,
    /// The forwarding connection.
    link: Link,
    metrics_topic: String,
    stop: watch::Sender<bool>,
    tasks: Option<Tasks>,
}

impl RouterHandle {
    /// The router's bus connection (its name, instance id, topics).
    pub fn bus(&self) -> &Bus {
        self.sdk.as_ref().expect("present until shutdown").bus()
    }

    /// Waits until both connections are up and subscribed, at most `timeout`.
    pub async fn wait_online(&self, timeout: Duration) -> Result<(), SdkError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.bus().wait_online(timeout).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.link.wait_online(left).await.map_err(|e| match e {
            SdkError::NotConnected { broker, .. } => {
                SdkError::NotConnected { broker: format!("{broker} (forwarding connection)"), waited: timeout }
            }
            e => e,
        })
    }

    /// Inventory documents and registry events applied so far (tests wait for it to grow).
    pub fn inventory_updates(&self) -> u64 {
        self.shared.updates.load(Ordering::Acquire)
    }

    /// The inventory the router routes by now.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.shared.inventory()
    }

    /// Dead letters this instance sent for `reason` (`expired`, `max_hops`, ...) so far.
    pub fn dead_letter_count(&self, reason: &str) -> u64 {
        self.shared.metrics.dead_letter_count(reason)
    }

    /// The metrics snapshot, as published.
    pub fn metrics(&self) -> Value {
        let bus = self.bus();
        snapshot(&self.shared, bus.name(), bus.instance())
    }

    /// Leaves cleanly: stops reading the inbox (status `offline`), forwards what is queued (up
    /// to 5 s), publishes the final metrics and disconnects.
    pub async fn shutdown(mut self) {
        let (name, instance) = (self.bus().name().to_string(), self.bus().instance().to_string());
        if let Some(sdk) = self.sdk.take() {
            sdk.shutdown().await;
        }
        self.shared.queue.close();
        let Some(mut tasks) = self.tasks.take() else { return };
        if tokio::time::timeout(Duration::from_secs(5), &mut tasks.forwarder).await.is_err() {
            tasks.forwarder.abort();
        }
        let body = snapshot(&self.shared, &name, &instance).to_string();
        let _ = self.link.publish(self.metrics_topic.clone(), QoS::AtMostOnce, true, body, None).await;
        self.stop.send_replace(true);
        self.link.close().await;
        tasks.metrics.abort();
        if tokio::time::timeout(Duration::from_secs(5), &mut tasks.io).await.is_err() {
            tasks.io.abort();
        }
        tracing::info!(service = %name, %instance, "router stopped");
    }
}

impl Drop for RouterHandle {
    fn drop(&mut self) {
        self.link.abort();
        if let Some(t) = self.tasks.take() {
            t.io.abort();
            t.forwarder.abort();
            t.metrics.abort();
        }
    }
}
