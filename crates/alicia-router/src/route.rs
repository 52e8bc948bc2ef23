//! Receiving (the SDK handler: hops, resolution, refusal) and forwarding (the task that drains
//! the priority queue onto the router's plain MQTT connection).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use alicia_envelope::{Destination, Envelope, MessageType, Value};
use alicia_sdk::{Bus, BusService, Context, HandlerResult, Refusal, Topics};
use bytes::Bytes;
use parking_lot::RwLock;
use rumqttc_notls::v5::mqttbytes::v5::PublishProperties;
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::AsyncClient;
use tokio::sync::watch;

use crate::inventory::{Inventory, RoundRobin, Unroutable};
use crate::metrics::{Kind, Metrics};
use crate::queue::{PriorityQueue, Pushed};

/// One envelope on its way out.
pub(crate) struct Item {
    topic: String,
    payload: Bytes,
    props: PublishProperties,
    kind: Kind,
    received: Instant,
    /// `None`: the envelope has no ttl.
    expires_at: Option<SystemTime>,
    /// Where it came in (for a dead letter).
    source_topic: String,
}

/// How long a message for an unknown or offline device waits for the registry to announce it.
const LATE_DEVICE: Duration = Duration::from_millis(500);

/// State shared by the handler, the forwarder and the plain connection.
pub(crate) struct Shared {
    pub inventory: RwLock<Arc<Inventory>>,
    /// Becomes true when the first inventory document arrives.
    pub inventory_seen: watch::Sender<bool>,
    /// Inventory documents and events applied.
    pub updates: AtomicU64,
    /// Bumped on every applied inventory document or event (see [`Shared::device_topic`]).
    pub version: watch::Sender<u64>,
    pub turns: RoundRobin,
    pub queue: PriorityQueue<Item>,
    pub metrics: Metrics,
    pub topics: Topics,
    /// How long after start a device or capability message waits for the first inventory.
    pub inventory_wait: Duration,
    /// Hops the router allows at most, whatever an envelope's `max_hops` says.
    pub hop_limit: u32,
    /// Forward straight from the receiving task when the queue is empty.
    pub direct_when_idle: bool,
    pub started: Instant,
}

impl Shared {
    pub fn new(topics: Topics, queue_capacity: usize, inventory_wait: Duration, hop_limit: u32) -> Self {
        Shared {
            inventory: RwLock::new(Arc::new(Inventory::default())),
            inventory_seen: watch::Sender::new(false),
            updates: AtomicU64::new(0),
            version: watch::Sender::new(0),
            turns: RoundRobin::default(),
            queue: PriorityQueue::new(queue_capacity),
            metrics: Metrics::default(),
            topics,
            inventory_wait,
            hop_limit,
            direct_when_idle: true,
            started: Instant::now(),
        }
    }

    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.read().clone()
    }

    /// A message on the registry's inventory or events topic.
    pub fn apply(&self, topic: &str, payload: &[u8], inventory_topic: &str) {
        let outcome = if topic == inventory_topic {
            Inventory::from_document(payload).map(|inv| {
                tracing::debug!(devices = inv.len(), "registry inventory");
                *self.inventory.write() = Arc::new(inv);
                self.inventory_seen.send_replace(true);
            })
        } else {
            let mut inv = (*self.inventory()).clone();
            inv.apply_event(payload).map(|changed| {
                if changed {
                    *self.inventory.write() = Arc::new(inv);
                }
            })
        };
        match outcome {
            Ok(()) => {
                self.updates.fetch_add(1, Ordering::Release);
                self.version.send_modify(|v| *v += 1);
            }
            Err(why) => tracing::warn!(%topic, %why, "ignoring a registry message the router cannot read"),
        }
    }

    /// The command topic of device `id`. A device that is unknown or offline gets a moment
    /// ([`LATE_DEVICE`]) for the registry's event to arrive: the registry answers a registration
    /// (to `device_id:<it>`, through this router) on one connection and announces it on
    /// another, so the answer can overtake the announcement. Without the wait, a device's
    /// first answer would now and then be refused as `unknown_device`.
    async fn device_topic(&self, id: &str) -> Result<String, Unroutable> {
        let deadline = tokio::time::Instant::now() + LATE_DEVICE;
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            let found = self.inventory().device_topic(id);
            match &found {
                Err(u) if u.code == "unknown_device" || u.code == "device_offline" => {
                    if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                        return found;
                    }
                }
                _ => return found,
            }
        }
    }

    /// Right after start, waits (at most `inventory_wait` from the start) for the registry's
    /// retained inventory, so the first messages are not refused for want of it.
    async fn wait_inventory(&self) {
        let left = self.inventory_wait.saturating_sub(self.started.elapsed());
        if left.is_zero() || *self.inventory_seen.borrow() {
            return;
        }
        let mut rx = self.inventory_seen.subscribe();
        let _ = tokio::time::timeout(left, rx.wait_for(|seen| *seen)).await;
    }
}

/// The router as a bus service: the SDK delivers each valid, unexpired envelope of the inbox.
pub(crate) struct Router {
    pub shared: Arc<Shared>,
    /// The forwarding connection, for the fast path (see [`route`]).
    pub client: AsyncClient,
}

impl BusService for Router {
    fn name(&self) -> &str {
        alicia_sdk::ROUTER_SERVICE
    }

    fn refused(&self, _topic: &str, refusal: &Refusal) {
        // The runtime's codes are its constants; anything else is counted as `other`.
        let code = match refusal.code {
            std::borrow::Cow::Borrowed(code) => code,
            std::borrow::Cow::Owned(_) => "other",
        };
        self.shared.metrics.dead_letter(code);
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        let received = Instant::now();
        route(&self.shared, &self.client, ctx, envelope, received).await;
        Ok(None)
    }
}

/// Where the location hint of a `capability:` message comes from: `payload.metadata.location`
/// if the sender set it, else the registered location of the sending device.
fn location_hint(envelope: &Envelope, inventory: &Inventory) -> Option<String> {
    if let Some(Value::String(loc)) = envelope.payload.metadata.extra.get("location") {
        if !loc.is_empty() {
            return Some(loc.clone());
        }
    }
    let id = envelope.source.strip_prefix("device_id:")?;
    inventory.device(id)?.location.clone()
}

/// Resolves and forwards one envelope. With no backlog (the queue is empty) it goes straight
/// to the forwarding connection: there is nothing to put it before or after, and skipping the
/// forwarder saves a task wake-up. Otherwise it joins the priority queue.
async fn route(shared: &Shared, client: &AsyncClient, ctx: &Context, mut envelope: Envelope, received: Instant) {
    let me = ctx.bus().name().to_string();
    envelope.routing.hops = envelope.routing.hops.saturating_add(1);
    envelope.routing.route.push(me);
    let limit = envelope.routing.max_hops.min(shared.hop_limit);
    if envelope.routing.hops > limit {
        let whose = if limit < envelope.routing.max_hops {
            format!(" (the router's limit; the envelope allows {})", envelope.routing.max_hops)
        } else {
            String::new()
        };
        let why = format!(
            "routing.max_hops exceeded: this would be hop {} of at most {limit}{whose} (route: {}); a routing loop?",
            envelope.routing.hops,
            envelope.routing.route.join(" > ")
        );
        refuse(shared, ctx, envelope, "max_hops", why).await;
        return;
    }
    let resolved = match &envelope.destination {
        Destination::Service(name) => Ok((Kind::Service, shared.topics.inbox(name))),
        Destination::Broadcast => Ok((Kind::Broadcast, shared.topics.broadcast())),
        Destination::DeviceId(id) => {
            shared.wait_inventory().await;
            shared.device_topic(id).await.map(|t| (Kind::Device, t))
        }
        Destination::Capability(cap) => {
            shared.wait_inventory().await;
            let inventory = shared.inventory();
            let near = location_hint(&envelope, &inventory);
            inventory.pick_provider(cap, near.as_deref(), &shared.turns).map(|(_, t)| (Kind::Capability, t))
        }
        // Forwarding to any topic would let a sender publish, with the router's rights, where
        // its own ACL does not let it: a topic destination is delivered by publishing there.
        Destination::Topic(topic) => Err(Unroutable {
            code: "topic_destination",
            reason: format!(
                "the destination `{topic}` is a topic: publish the envelope to that topic itself; \
                 the router forwards only to `device_id:`, `capability:`, `broadcast` and services"
            ),
        }),
    };
    let (kind, topic) = match resolved {
        Ok(r) => r,
        Err(Unroutable { code, reason }) => {
            refuse(shared, ctx, envelope, code, reason).await;
            return;
        }
    };
    let props = PublishProperties {
        content_type: Some("application/json".into()),
        response_topic: ctx.response_topic().map(str::to_string),
        correlation_data: ctx.correlation_data().map(Bytes::copy_from_slice),
        ..PublishProperties::default()
    };
    let priority = envelope.priority;
    let payload = Bytes::from(envelope.to_vec());
    if shared.direct_when_idle && shared.queue.is_empty() {
        let mut fast = props.clone();
        fast.message_expiry_interval = envelope.remaining_ttl(SystemTime::now()).map(expiry_secs);
        if client.try_publish_with_properties(topic.clone(), QoS::AtLeastOnce, false, payload.clone(), fast).is_ok() {
            shared.metrics.routed(kind, received.elapsed());
            return;
        }
    }
    let item = Item {
        topic,
        payload,
        props,
        kind,
        received,
        expires_at: envelope.expires_at(),
        source_topic: ctx.topic().to_string(),
    };
    match shared.queue.push(priority, item).await {
        Pushed::Queued => {}
        Pushed::Evicted(old) => {
            shared.metrics.dead_letter("queue_full");
            let why = format!("the router's queue was full and a {} message took its place", priority.as_str());
            let _ = ctx.bus().dead_letter(Refusal::new("queue_full", why), &old.source_topic, &old.payload).await;
        }
        Pushed::Closed(item) => {
            shared.metrics.dead_letter("stopping");
            let refusal = Refusal::new("stopping", "the router is shutting down");
            let _ = ctx.bus().dead_letter(refusal, &item.source_topic, &item.payload).await;
        }
    }
}

/// Sends an envelope that cannot be routed to the dead-letter topic (as it arrived: the hop
/// this router added is taken back), and answers a request with an error response so that its
/// sender does not wait for a timeout: to the MQTT 5 response topic with the correlation data
/// if there are any, else to the sender's inbox derived from `source` (through this router
/// again for a `device_id:` sender).
async fn refuse(shared: &Shared, ctx: &Context, mut envelope: Envelope, code: &'static str, reason: String) {
    shared.metrics.dead_letter(code);
    envelope.routing.hops = envelope.routing.hops.saturating_sub(1);
    envelope.routing.route.pop();
    let bus = ctx.bus();
    let _ = bus.dead_letter(Refusal::new(code, reason.clone()), ctx.topic(), &envelope.to_vec()).await;
    let wants_answer = envelope.message_type == MessageType::Request
        || (ctx.response_topic().is_some() && envelope.message_type != MessageType::Response);
    if !wants_answer {
        return;
    }
    envelope.payload.data = Value::Null;
    let answer = Envelope::error_reply(&envelope, bus.name(), code, &reason);
    let topic = match ctx.response_topic() {
        Some(t) => t.to_string(),
        None => bus.topics().for_destination(&answer.destination),
    };
    let correlation = ctx
        .correlation_data()
        .map(Bytes::copy_from_slice)
        .unwrap_or_else(|| Bytes::copy_from_slice(envelope.message_id.as_str().as_bytes()));
    if let Err(e) = bus.send_to(&topic, &answer, Some(correlation)).await {
        tracing::warn!(%topic, error = %e, "cannot send the error response");
    }
}

/// The forwarding task: takes the most urgent envelope, drops it to the dead-letter topic if
/// it expired while waiting, else publishes it (QoS 1, message expiry = its remaining ttl,
/// response topic and correlation data as they came).
pub(crate) async fn forward(shared: Arc<Shared>, client: AsyncClient, bus: Bus) {
    while let Some(item) = shared.queue.pop().await {
        let now = SystemTime::now();
        let remaining = match item.expires_at.map(|at| at.duration_since(now)) {
            None => None,
            Some(Ok(left)) => Some(left),
            Some(Err(_)) => {
                shared.metrics.dead_letter("expired");
                let why = Refusal::new(Refusal::EXPIRED, "its ttl ran out while it waited in the router's queue");
                let _ = bus.dead_letter(why, &item.source_topic, &item.payload).await;
                continue;
            }
        };
        let mut props = item.props;
        props.message_expiry_interval = remaining.map(expiry_secs);
        match client.publish_with_properties(item.topic, QoS::AtLeastOnce, false, item.payload.clone(), props).await {
            Ok(()) => shared.metrics.routed(item.kind, item.received.elapsed()),
            Err(e) => {
                // Only when the connection task is gone (shutdown).
                shared.metrics.dead_letter("stopping");
                let why = Refusal::new("stopping", format!("the router could not forward it ({e})"));
                let _ = bus.dead_letter(why, &item.source_topic, &item.payload).await;
            }
        }
    }
}

/// MQTT message expiry for what is left of an envelope's ttl: whole seconds, at least one.
fn expiry_secs(left: Duration) -> u32 {
    u32::try_from(left.as_secs().max(1)).unwrap_or(u32::MAX)
}
