//! The runtime: one task drives the MQTT connection, one sends heartbeats, and each incoming
//! envelope is handled in a task of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use alicia_envelope::{Destination, Envelope, EnvelopeError, MessageId, MessageType, ReplyStatus, Uuid, Value};
use bytes::Bytes;
use parking_lot::Mutex;
use rumqttc_notls::v5::mqttbytes::v5::{Filter, LastWill, Publish, PublishProperties};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::config::ServiceConfig;
use crate::deadletter::DeadLetter;
use crate::error::SdkError;
use crate::identity::Sender;
use crate::link::{Link, LinkEvent, LinkOptions, LinkState};
use crate::service::{BusService, Context, HandlerResult, Refusal, ServiceError, Subscription};
use crate::topics::Topics;
use crate::QoS;

/// Payload of the retained status topic while an instance is connected.
pub const ONLINE: &str = "online";
/// Payload of the retained status topic when the service is gone (also its MQTT will).
pub const OFFLINE: &str = "offline";

/// Requests in flight through the client's channel to its connection task.
const CHANNEL_CAPACITY: usize = 1024;

/// Starts `service`: connects to the broker in `config` (in the background, retrying with
/// backoff until it succeeds), subscribes to its inbox and subscriptions, announces it online
/// and sends heartbeats. Must be called inside a tokio runtime.
pub fn start<S: BusService>(config: ServiceConfig, service: S) -> Result<ServiceHandle, SdkError> {
    let name = config.name.clone().unwrap_or_else(|| service.name().to_string());
    let subscriptions = service.subscriptions();
    launch(config, name, Some((Arc::new(service), subscriptions)))
}

/// Connects a client that only publishes and makes requests: no inbox, no status, no
/// heartbeats (for command-line tools and tests). Its name is `config.name`, or `client`.
pub fn connect(config: ServiceConfig) -> Result<ServiceHandle, SdkError> {
    let name = config.name.clone().unwrap_or_else(|| "client".to_string());
    launch::<NoService>(config, name, None)
}

/// The service type of a client started with [`connect`]; never asked to handle anything.
struct NoService;

impl BusService for NoService {
    fn name(&self) -> &str {
        "client"
    }

    async fn handle(&self, _: &Context, _: Envelope) -> HandlerResult {
        Ok(None)
    }
}

fn launch<S: BusService>(
    config: ServiceConfig,
    name: String,
    service: Option<(Arc<S>, Vec<Subscription>)>,
) -> Result<ServiceHandle, SdkError> {
    config.validate()?;
    alicia_envelope::check_service_name(&name).map_err(|p| SdkError::Config(format!("service name: {p}")))?;
    let topics = Topics::new(config.topic_prefix.clone())?;
    let instance = config.instance_id.clone().unwrap_or_else(|| Uuid::new_v4().simple().to_string()[..12].to_string());
    let reply_topic = topics.reply(&name, &instance);
    let status_topic = topics.status(&name);
    let announce = service.is_some();

    let mut filters = vec![Filter::new(reply_topic.clone(), QoS::AtLeastOnce)];
    if let Some((_, subs)) = &service {
        filters.push(Filter::new(topics.shared_inbox(&name), QoS::AtLeastOnce));
        // Other instances' wills and shutdowns: an instance that sees `offline` while it is
        // alive says `online` again (no-local: our own `offline` at shutdown is not echoed).
        let mut status = Filter::new(status_topic.clone(), QoS::AtLeastOnce);
        status.nolocal = true;
        filters.push(status);
        for s in subs {
            if s.filter.starts_with("$share/") {
                return Err(SdkError::Config(format!("subscription {:?}: use Subscription::shared", s.filter)));
            }
            if !valid_filter(&s.filter) {
                return Err(SdkError::Config(format!("subscription {:?} is not a valid MQTT topic filter", s.filter)));
            }
            let path = if s.shared { format!("$share/{name}/{}", s.filter) } else { s.filter.clone() };
            filters.push(Filter::new(path, s.qos));
        }
    }

    let mut opts = LinkOptions::new(format!("{name}-{instance}"), []).with_capacity(CHANNEL_CAPACITY).with_label(&name);
    opts.filters = filters;
    if announce {
        opts = opts.with_will(LastWill::new(status_topic.clone(), OFFLINE, QoS::AtLeastOnce, true, None));
    }
    let (link, events) = Link::connect(&config, opts);

    let inner = Arc::new(Inner {
        name,
        instance,
        topics,
        reply_topic,
        status_topic,
        link,
        pending: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
        handled: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        started: Instant::now(),
        announce,
        heartbeat_interval: config.heartbeat_interval,
        security: config.security.clone(),
        trust_identity: config.trust_broker_identity,
    });
    let limiter = Arc::new(Semaphore::new(config.max_concurrent_handlers));
    let driver = tokio::spawn(consume(inner.clone(), events, service.map(|(s, _)| s), limiter));
    let heartbeat = (announce && !config.heartbeat_interval.is_zero()).then(|| tokio::spawn(heartbeats(inner.clone())));
    tracing::info!(service = %inner.name, instance = %inner.instance, broker = %inner.link.broker(), "starting");
    Ok(ServiceHandle { bus: Bus { inner }, driver: Some(driver), heartbeat })
}

type Pending = oneshot::Sender<Result<Envelope, EnvelopeError>>;

struct Inner {
    name: String,
    instance: String,
    topics: Topics,
    reply_topic: String,
    status_topic: String,
    /// The connection (reconnects, subscriptions, online state).
    link: Link,
    pending: Mutex<HashMap<MessageId, Pending>>,
    stopping: AtomicBool,
    handled: AtomicU64,
    failed: AtomicU64,
    started: Instant,
    /// A service (status, will, heartbeats) rather than a plain client.
    announce: bool,
    heartbeat_interval: Duration,
    /// Signing, checks and encryption of envelopes.
    security: crate::protection::EnvelopeSecurity,
    /// Read the broker's identity properties ([`Sender`]).
    trust_identity: bool,
}

/// A handle on the bus for one service instance: publish, send requests. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

impl Bus {
    /// The service's name (the `source` of what it sends).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This instance's id.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The topic names in use.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// This instance's reply topic (the MQTT 5 Response Topic of its requests).
    pub fn reply_topic(&self) -> &str {
        &self.inner.reply_topic
    }

    /// The connection state now.
    pub fn state(&self) -> LinkState {
        self.inner.link.state()
    }

    /// How many times the connection has been established (1 after the first connect).
    pub fn connects(&self) -> u64 {
        self.inner.link.connects()
    }

    /// Waits for the outcome of connecting, at most `timeout`: `Ok` once connected and
    /// subscribed, or at once after the first failed attempt, saying why
    /// ([`SdkError::LoginRefused`] or [`SdkError::Unreachable`]). For command-line tools, which
    /// should tell a wrong password from a broker that is not there without waiting; services
    /// use [`Bus::wait_online`], which keeps waiting through failures.
    pub async fn connect_outcome(&self, timeout: Duration) -> Result<(), SdkError> {
        self.inner.link.connect_outcome(timeout).await
    }

    /// Waits until the service is connected and subscribed, at most `timeout`.
    pub async fn wait_online(&self, timeout: Duration) -> Result<(), SdkError> {
        self.inner.link.wait_online(timeout).await
    }

    /// Publishes `data` as an `event` envelope to `destination` (filled in: `source`,
    /// `message_id`, `timestamp`). Returns the `message_id`. QoS 1; while the broker is
    /// unreachable, messages wait in a bounded queue and this call waits when it is full.
    pub async fn publish(&self, destination: Destination, data: Value) -> Result<MessageId, SdkError> {
        let envelope = Envelope::event(self.name(), destination, data);
        let id = envelope.message_id.clone();
        self.send(&envelope).await?;
        Ok(id)
    }

    /// Publishes a ready-made envelope to the topic of its destination (see
    /// [`Topics::for_destination`]), after validating it.
    pub async fn send(&self, envelope: &Envelope) -> Result<(), SdkError> {
        envelope.validate()?;
        let topic = self.inner.topics.for_destination(&envelope.destination);
        self.inner.publish_envelope(&topic, envelope, None, None).await
    }

    /// Publishes a ready-made envelope to an explicit topic, e.g. a device's command topic or
    /// a response topic (the router uses this).
    pub async fn send_to(
        &self,
        topic: &str,
        envelope: &Envelope,
        correlation_data: Option<Bytes>,
    ) -> Result<(), SdkError> {
        envelope.validate()?;
        self.inner.publish_envelope(topic, envelope, None, correlation_data).await
    }

    /// Sends `data` as a `request` to `destination` and waits for the response, at most
    /// `timeout`. The request's ttl is the timeout (rounded up to whole seconds), so it is not
    /// handled after the caller has given up.
    ///
    /// Returns the response envelope; an error response becomes [`SdkError::Remote`], no
    /// response [`SdkError::Timeout`], no broker connection during the whole timeout
    /// [`SdkError::NotConnected`].
    pub async fn request(
        &self,
        destination: Destination,
        data: Value,
        timeout: Duration,
    ) -> Result<Envelope, SdkError> {
        let ttl = u32::try_from(timeout.as_millis().div_ceil(1000)).unwrap_or(u32::MAX).max(1);
        let envelope = Envelope::request(self.name(), destination, data).with_ttl(ttl);
        self.request_envelope(envelope, timeout).await
    }

    /// [`Bus::request`] with a ready-made envelope (its own priority, ttl, metadata).
    ///
    /// The request goes out with MQTT 5 Response Topic = this instance's reply topic and
    /// Correlation Data = the request's `message_id` (as text); the response is matched by the
    /// correlation data, or by its `correlation_id` when it arrives without one.
    pub async fn request_envelope(&self, envelope: Envelope, timeout: Duration) -> Result<Envelope, SdkError> {
        envelope.validate()?;
        let deadline = tokio::time::Instant::now() + timeout;
        let id = envelope.message_id.clone();
        let destination = envelope.destination.clone();
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(id.clone(), tx);
        let _forget = PendingGuard { inner: &self.inner, id: id.clone() };

        // The reply topic is subscribed on every connect: wait for that before sending, or a
        // fast answer could arrive before the subscription.
        self.wait_online(timeout).await?;
        let topic = self.inner.topics.for_destination(&envelope.destination);
        let correlation = Bytes::copy_from_slice(id.as_str().as_bytes());
        self.inner.publish_envelope(&topic, &envelope, Some(self.inner.reply_topic.clone()), Some(correlation)).await?;

        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(response))) => match response.reply_error() {
                Some(e) => {
                    Err(SdkError::Remote { from: response.source, message_id: id, code: e.code, message: e.message })
                }
                None => Ok(response),
            },
            Ok(Ok(Err(e))) => Err(SdkError::Remote {
                from: destination.to_string(),
                message_id: id,
                code: "invalid_response".into(),
                message: e.to_string(),
            }),
            Ok(Err(_)) => Err(SdkError::Closed),
            Err(_) => Err(SdkError::Timeout { destination, message_id: id, timeout }),
        }
    }

    /// Publishes a [`DeadLetter`] for `payload` received on `topic`, with the refusal's code
    /// and reason.
    pub async fn dead_letter(&self, refusal: Refusal, topic: &str, payload: &[u8]) -> Result<(), SdkError> {
        self.inner.dead_letter(refusal, topic, payload).await
    }
}

/// Removes a pending request when its caller stops waiting (answered, timed out, cancelled).
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: MessageId,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.lock().remove(&self.id);
    }
}

impl Inner {
    fn reported_by(&self) -> String {
        format!("{}/{}", self.name, self.instance)
    }

    /// `envelope` as this service sends it: signed when it has a key (heartbeats are never
    /// encrypted, so monitors without the keys can read them). Sealing a heartbeat cannot
    /// fail in practice; if it did, the plain envelope is better than none.
    fn sealed(&self, envelope: &Envelope) -> Vec<u8> {
        self.security.seal(envelope).unwrap_or_else(|e| {
            tracing::warn!(service = %self.name, error = %e, "heartbeat sent unsigned");
            envelope.to_vec()
        })
    }

    async fn publish_envelope(
        &self,
        topic: &str,
        envelope: &Envelope,
        response_topic: Option<String>,
        correlation_data: Option<Bytes>,
    ) -> Result<(), SdkError> {
        let props = envelope_properties(envelope, response_topic, correlation_data);
        let payload = self.security.seal(envelope)?;
        self.link.publish(topic, QoS::AtLeastOnce, false, payload, Some(props)).await
    }

    /// Publishes without waiting, from the task that consumes the link's events (which must
    /// not wait behind a full request channel): tries the channel, and hands the publish to a
    /// task when it is full.
    fn publish_nowait(&self, topic: String, qos: QoS, retain: bool, payload: Bytes) {
        if !self.link.try_publish(topic.clone(), qos, retain, payload.clone()) {
            let link = self.link.clone();
            tokio::spawn(async move {
                let _ = link.publish(topic, qos, retain, payload, None).await;
            });
        }
    }

    async fn dead_letter(&self, refusal: Refusal, topic: &str, payload: &[u8]) -> Result<(), SdkError> {
        tracing::warn!(service = %self.name, %topic, code = %refusal.code, reason = %refusal.reason, "dead letter");
        let record = DeadLetter::new(&refusal, topic, payload, self.reported_by());
        self.link.publish(self.topics.deadletter(), QoS::AtLeastOnce, false, record.to_vec(), None).await
    }

    fn take_pending(&self, id: &str) -> Option<Pending> {
        self.pending.lock().remove(id)
    }

    fn heartbeat(&self) -> Envelope {
        let ttl = u32::try_from(self.heartbeat_interval.as_secs().saturating_mul(3)).unwrap_or(u32::MAX).max(1);
        let data = json!({
            "service": self.name,
            "instance": self.instance,
            "status": ONLINE,
            "uptime_secs": self.started.elapsed().as_secs(),
            "interval_secs": self.heartbeat_interval.as_secs(),
            "handled": self.handled.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
        });
        Envelope::heartbeat(self.name.clone(), data).with_ttl(ttl)
    }
}

fn envelope_properties(
    envelope: &Envelope,
    response_topic: Option<String>,
    correlation_data: Option<Bytes>,
) -> PublishProperties {
    // The broker drops the message from queues once the envelope has expired anyway; one
    // without a ttl does not expire, so neither does the MQTT message.
    let remaining = envelope.remaining_ttl(SystemTime::now()).map(|left| left.as_secs().max(1));
    PublishProperties {
        message_expiry_interval: remaining.map(|secs| u32::try_from(secs).unwrap_or(u32::MAX)),
        content_type: Some("application/json".into()),
        response_topic,
        correlation_data,
        ..PublishProperties::default()
    }
}

/// An MQTT topic filter: not empty, `#` only as the whole last level, `+` only as a whole level.
fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && !filter.contains('\0')
        && levels.iter().enumerate().all(|(i, level)| match *level {
            "#" => i == levels.len() - 1,
            "+" => true,
            l => !l.contains(['+', '#']),
        })
}

/// What the runtime does with its link's events: says it is there once online, and hands
/// every message on.
async fn consume<S: BusService>(
    inner: Arc<Inner>,
    mut events: mpsc::UnboundedReceiver<LinkEvent>,
    service: Option<Arc<S>>,
    limiter: Arc<Semaphore>,
) {
    while let Some(event) = events.recv().await {
        match event {
            LinkEvent::Online => {
                if inner.announce && !inner.stopping.load(Ordering::Acquire) {
                    inner.publish_nowait(
                        inner.status_topic.clone(),
                        QoS::AtLeastOnce,
                        true,
                        Bytes::from_static(ONLINE.as_bytes()),
                    );
                    inner.publish_nowait(
                        inner.topics.heartbeat(),
                        QoS::AtMostOnce,
                        false,
                        inner.sealed(&inner.heartbeat()).into(),
                    );
                }
                tracing::info!(service = %inner.name, instance = %inner.instance, broker = %inner.link.broker(), "online");
            }
            LinkEvent::Message(publish) => on_publish(&inner, service.as_ref(), &limiter, publish),
            LinkEvent::Offline { .. } => {}
        }
    }
}

fn on_publish<S: BusService>(inner: &Arc<Inner>, service: Option<&Arc<S>>, limiter: &Arc<Semaphore>, p: Publish) {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    if topic == inner.reply_topic {
        on_response(inner, &topic, p);
        return;
    }
    if inner.announce && topic == inner.status_topic {
        // Another instance's will (or shutdown) said the service is offline; this instance is
        // alive, so the service is not. A retained `offline` delivered on subscribing is old
        // news: the connection task says `online` right after the subscription anyway.
        let alive = inner.link.state() == LinkState::Online && !inner.stopping.load(Ordering::Acquire);
        if &p.payload[..] == OFFLINE.as_bytes() && !p.retain && alive {
            inner.publish_nowait(topic, QoS::AtLeastOnce, true, Bytes::from_static(ONLINE.as_bytes()));
        }
        return;
    }
    match service {
        Some(service) => {
            tokio::spawn(handle_message(inner.clone(), service.clone(), limiter.clone(), topic, p));
        }
        None => {
            let inner = inner.clone();
            tokio::spawn(async move {
                let _ = inner
                    .dead_letter(
                        Refusal::new(Refusal::NO_HANDLER, "no handler: a plain client received it"),
                        &topic,
                        &p.payload,
                    )
                    .await;
            });
        }
    }
}

/// A message on this instance's reply topic: the answer to one of its requests.
fn on_response(inner: &Arc<Inner>, topic: &str, p: Publish) {
    let by_property = p
        .properties
        .as_ref()
        .and_then(|props| props.correlation_data.as_ref())
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|s| MessageId::parse(s).ok());
    let mut parsed = Envelope::parse(&p.payload);
    if let Ok(response) = &mut parsed {
        if let Err(refusal) = inner.security.open(&p.payload, response) {
            // The waiter learns it (code `security`), and the bytes go to the dead-letter topic.
            let (inner2, topic2, payload) = (inner.clone(), topic.to_string(), p.payload.clone());
            response.payload.data = json!({ "code": refusal.code.as_ref(), "message": refusal.reason });
            tokio::spawn(async move { inner2.dead_letter(refusal, &topic2, &payload).await });
            response.payload.metadata.status = Some(ReplyStatus::Error);
            response.security = None;
            let id = by_property.or(response.correlation_id.clone());
            if let Some(waiter) = id.and_then(|id| inner.take_pending(id.as_str())) {
                let _ = waiter.send(parsed);
            }
            return;
        }
    }
    let id = by_property.or_else(|| parsed.as_ref().ok().and_then(|e| e.correlation_id.clone()));
    match id.and_then(|id| inner.take_pending(id.as_str())) {
        Some(waiter) => {
            if let Err(e) = &parsed {
                // The waiter gets the error, and the bytes go to the dead-letter topic too.
                let inner = inner.clone();
                let refusal = Refusal::new(Refusal::INVALID_RESPONSE, format!("invalid response envelope: {e}"));
                let (topic, payload) = (topic.to_string(), p.payload.clone());
                tokio::spawn(async move { inner.dead_letter(refusal, &topic, &payload).await });
            }
            let _ = waiter.send(parsed);
        }
        None => {
            let reason = match parsed {
                Err(e) => format!("invalid response envelope: {e}"),
                Ok(_) => "response matches no pending request (it came after the timeout, or twice)".to_string(),
            };
            let refusal = Refusal::new(Refusal::INVALID_RESPONSE, reason);
            let inner = inner.clone();
            let topic = topic.to_string();
            tokio::spawn(async move { inner.dead_letter(refusal, &topic, &p.payload).await });
        }
    }
}

async fn handle_message<S: BusService>(
    inner: Arc<Inner>,
    service: Arc<S>,
    limiter: Arc<Semaphore>,
    topic: String,
    p: Publish,
) {
    let Ok(_permit) = limiter.acquire_owned().await else { return };
    let props = p.properties.unwrap_or_default();
    let sender = if inner.trust_identity { Sender::from_properties(&props.user_properties) } else { None };
    let (response_topic, correlation) = (props.response_topic, props.correlation_data);
    let refusal =
        Refused { inner: &inner, topic: &topic, payload: &p.payload, response_topic: &response_topic, sender: &sender };

    let mut envelope = match Envelope::parse(&p.payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            let refusal = Refusal::new(Refusal::INVALID_ENVELOPE, format!("invalid envelope: {e}"));
            service.refused(&topic, &refusal);
            let _ = inner.dead_letter(refusal, &topic, &p.payload).await;
            // A requester that said where to answer, or a device, learns at once (and learns
            // every problem) instead of timing out or never knowing.
            let device =
                sender.as_ref().and_then(Sender::device_id).map(str::to_string).or_else(|| raw_device(&p.payload));
            let target = response_topic.clone().or_else(|| device.map(|id| inner.topics.device_errors(&id)));
            if let Some(rt) = target {
                let answer = invalid_request_answer(&inner, &p.payload, &e, correlation.as_deref());
                let _ = inner.publish_envelope(&rt, &answer, None, correlation).await;
            }
            return;
        }
    };
    if let Some(s) = sender.as_ref().filter(|s| !s.may_speak_as(&envelope.source)) {
        let reason = format!(
            "identity: the envelope's source `{}` is not its sender: `{}` logged in as device `{}`, and a device speaks only as itself",
            envelope.source,
            s.user.as_deref().unwrap_or_default(),
            s.device_id().unwrap_or_default()
        );
        let refused = Refusal::new(Refusal::IDENTITY, reason);
        service.refused(&topic, &refused);
        refusal.answer(&envelope, correlation, "forbidden", refused).await;
        return;
    }
    if envelope.is_expired(SystemTime::now()) {
        let ttl = envelope.ttl.unwrap_or_default();
        let reason = format!("expired: sent at {} with a ttl of {ttl} s", envelope.timestamp);
        let refused = Refusal::new(Refusal::EXPIRED, reason.clone());
        service.refused(&topic, &refused);
        let _ = inner.dead_letter(refused, &topic, &p.payload).await;
        // A device with a wrong clock would otherwise never learn why nothing happens.
        if let Some(id) = sender.as_ref().and_then(Sender::device_id).or(envelope.source.strip_prefix("device_id:")) {
            let answer = error_answer(&envelope, &inner.name, &ServiceError::new("expired", reason));
            let target = response_topic.clone().unwrap_or_else(|| inner.topics.device_errors(id));
            let correlation = correlation.clone().or_else(|| Some(id_bytes(&envelope.message_id)));
            let _ = inner.publish_envelope(&target, &answer, None, correlation).await;
        }
        return;
    }
    if let Err(refused) = inner.security.open(&p.payload, &mut envelope) {
        service.refused(&topic, &refused);
        let reason = refused.reason.clone();
        let _ = inner.dead_letter(refused, &topic, &p.payload).await;
        let device = sender.as_ref().and_then(Sender::device_id).or(envelope.source.strip_prefix("device_id:"));
        if envelope.message_type == MessageType::Request || response_topic.is_some() || device.is_some() {
            envelope.payload.data = Value::Null;
            let mut answer = Envelope::error_reply(&envelope, inner.name.clone(), "security", &reason);
            // In clear (still signed): a requester that failed the checks may lack the keys,
            // and the reason is no secret.
            answer.security = Some(alicia_envelope::Security { encryption: Some("none".into()), ..Default::default() });
            let topic = match (&response_topic, device) {
                (Some(t), _) => t.clone(),
                (None, Some(id)) if envelope.message_type != MessageType::Request => inner.topics.device_errors(id),
                _ => inner.topics.for_destination(&answer.destination),
            };
            let correlation = correlation.or_else(|| Some(id_bytes(&envelope.message_id)));
            let _ = inner.publish_envelope(&topic, &answer, None, correlation).await;
        }
        return;
    }
    // The answer to one of this instance's requests, delivered to the inbox (sent without a
    // response topic, e.g. by the router on behalf of an MQTT 3.1.1 device).
    if envelope.message_type == MessageType::Response {
        if let Some(waiter) = envelope.correlation_id.as_ref().and_then(|id| inner.take_pending(id.as_str())) {
            let _ = waiter.send(Ok(envelope));
            return;
        }
    }

    let wants_reply = envelope.message_type == MessageType::Request || response_topic.is_some();
    let device = sender.as_ref().and_then(Sender::device_id).or(envelope.source.strip_prefix("device_id:"));
    let errors_topic = (!wants_reply).then(|| device.map(|id| inner.topics.device_errors(id))).flatten();
    // What a reply needs from the request, without a copy of its data.
    let request_head = (wants_reply || errors_topic.is_some()).then(|| {
        let data = std::mem::take(&mut envelope.payload.data);
        let head = envelope.clone();
        envelope.payload.data = data;
        head
    });
    let ctx = Context {
        bus: Bus { inner: inner.clone() },
        topic: topic.clone(),
        response_topic: response_topic.clone(),
        correlation_data: correlation.clone(),
        sender: sender.clone(),
    };
    let message_id = envelope.message_id.clone();
    // In a task of its own, so a panicking handler is reported like an error.
    let outcome = tokio::spawn(async move { service.handle(&ctx, envelope).await }).await;
    let result = match outcome {
        Ok(result) => result,
        Err(e) => Err(ServiceError::new("internal", format!("the handler panicked: {e}")).into()),
    };
    match &result {
        Ok(_) => inner.handled.fetch_add(1, Ordering::Relaxed),
        Err(e) => {
            tracing::warn!(service = %inner.name, %topic, %message_id, error = %e, "handler failed");
            inner.failed.fetch_add(1, Ordering::Relaxed)
        }
    };
    let Some(request) = request_head else { return };
    let answer = match result {
        Ok(Some(data)) if wants_reply => Envelope::reply_to(&request, inner.name.clone(), data),
        Ok(_) => return,
        Err(e) => match e.downcast_ref::<ServiceError>() {
            Some(se) => error_answer(&request, &inner.name, se),
            None => Envelope::error_reply(&request, inner.name.clone(), "internal", e),
        },
    };
    // A device's event that its handler refused is answered on the device's errors topic.
    let topic = match (response_topic, errors_topic) {
        (Some(t), _) => t,
        (None, Some(t)) if !wants_reply => t,
        _ => inner.topics.for_destination(&answer.destination),
    };
    let correlation = correlation.or_else(|| Some(id_bytes(&request.message_id)));
    if let Err(e) = inner.publish_envelope(&topic, &answer, None, correlation).await {
        tracing::warn!(service = %inner.name, %topic, error = %e, "cannot send the response");
    }
}

/// What the runtime needs to refuse a message that reached it.
struct Refused<'a> {
    inner: &'a Inner,
    topic: &'a str,
    payload: &'a [u8],
    response_topic: &'a Option<String>,
    sender: &'a Option<Sender>,
}

impl Refused<'_> {
    /// Dead-letters the message with `reason` and answers the sender where it can read it:
    /// its response topic, else (for a device) its errors topic, else a request's `source`.
    async fn answer(&self, envelope: &Envelope, correlation: Option<Bytes>, code: &str, refusal: Refusal) {
        let inner = self.inner;
        let reason = refusal.reason.clone();
        let _ = inner.dead_letter(refusal, self.topic, self.payload).await;
        let device = self.sender.as_ref().and_then(Sender::device_id);
        let target = match (self.response_topic, device) {
            (Some(t), _) => t.clone(),
            (None, Some(id)) => inner.topics.device_errors(id),
            (None, None) if envelope.message_type == MessageType::Request => {
                inner.topics.for_destination(&Destination::parse(&envelope.source).unwrap_or(Destination::Broadcast))
            }
            (None, None) => return,
        };
        let mut head = envelope.clone();
        head.payload.data = Value::Null;
        let answer = error_answer(&head, &inner.name, &ServiceError::new(code, reason));
        let correlation = correlation.or_else(|| Some(id_bytes(&envelope.message_id)));
        let _ = inner.publish_envelope(&target, &answer, None, correlation).await;
    }
}

/// The error response to `request` for `error`: `data` = `{"code", "message"}`, plus
/// `"errors"` when the error carries details.
pub(crate) fn error_answer(request: &Envelope, source: &str, error: &ServiceError) -> Envelope {
    let mut answer = Envelope::error_reply(request, source.to_string(), &error.code, &error.message);
    if let (Some(errors), Value::Object(data)) = (&error.errors, &mut answer.payload.data) {
        data.insert("errors".into(), errors.clone());
    }
    answer
}

/// The device named by the `source` of a payload that is not a valid envelope, if that much
/// can be read (`device_id:ID`).
fn raw_device(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    let id = v.get("source")?.as_str()?.strip_prefix("device_id:")?;
    Destination::device(id).validate().ok().map(|()| id.to_string())
}

/// The error response to a request that is not a valid envelope: addressed to its `source`
/// if that much can be read, correlated by the MQTT correlation data if it is a message id,
/// with every problem found in `data.errors`.
fn invalid_request_answer(
    inner: &Inner,
    payload: &[u8],
    error: &EnvelopeError,
    correlation: Option<&[u8]>,
) -> Envelope {
    let destination = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("source").and_then(Value::as_str).and_then(|s| Destination::parse(s).ok()))
        .filter(|d| matches!(d, Destination::Service(_) | Destination::DeviceId(_)))
        .unwrap_or(Destination::Broadcast);
    let errors: Vec<Value> =
        error.problems().iter().map(|p| json!({ "field": p.field, "reason": p.problem.to_string() })).collect();
    let data = json!({ "code": "invalid_envelope", "message": error.to_string(), "errors": errors });
    let mut answer = Envelope::new(inner.name.clone(), destination, MessageType::Response, data);
    answer.payload.metadata.status = Some(ReplyStatus::Error);
    answer.correlation_id = correlation.and_then(|c| std::str::from_utf8(c).ok()).and_then(|s| s.parse().ok());
    answer
}

/// A message id as MQTT correlation data (its text).
pub(crate) fn id_bytes(id: &MessageId) -> Bytes {
    Bytes::copy_from_slice(id.as_str().as_bytes())
}

/// The heartbeat task: one heartbeat per interval while online (the first one is sent by the
/// connection task as soon as the service is online).
async fn heartbeats(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if inner.link.state() == LinkState::Online {
            let beat = inner.heartbeat();
            let props = envelope_properties(&beat, None, None);
            let _ = inner
                .link
                .publish(inner.topics.heartbeat(), QoS::AtMostOnce, false, inner.sealed(&beat), Some(props))
                .await;
        }
    }
}

/// A running service (or client). Dereferences to its [`Bus`].
///
/// Dropping it ends the connection without a DISCONNECT, as a crash would (the broker then
/// publishes the will: the service is `offline`); [`ServiceHandle::shutdown`] leaves cleanly.
pub struct ServiceHandle {
    bus: Bus,
    driver: Option<JoinHandle<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

impl std::ops::Deref for ServiceHandle {
    type Target = Bus;
    fn deref(&self) -> &Bus {
        &self.bus
    }
}

impl ServiceHandle {
    /// The bus handle (clone it into other tasks).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Leaves the bus cleanly: publishes `offline` on the status topic (a service), sends
    /// DISCONNECT and waits (up to 5 s) for the connection task to end. Requests still waiting
    /// fail with [`SdkError::Closed`].
    pub async fn shutdown(mut self) {
        let inner = &self.bus.inner;
        inner.stopping.store(true, Ordering::Release);
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if inner.announce && inner.link.state() == LinkState::Online {
            let _ = inner.link.publish(inner.status_topic.clone(), QoS::AtLeastOnce, true, OFFLINE, None).await;
        }
        inner.link.close().await;
        if let Some(mut driver) = self.driver.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut driver).await.is_err() {
                driver.abort();
            }
        }
        inner.pending.lock().clear();
        tracing::info!(service = %inner.name, instance = %inner.instance, "stopped");
    }

    /// Waits until the service stops (after a shutdown from another task, or never): for a
    /// service's `main`.
    pub async fn join(mut self) {
        if let Some(driver) = self.driver.take() {
            let _ = driver.await;
        }
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        self.bus.inner.link.abort();
        self.bus.inner.pending.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        for ok in ["a", "a/+/b", "#", "a/#", "+", "$SYS/broker/#"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a/#/b", "a+", "a/b#", "#/a"] {
            assert!(!valid_filter(bad), "{bad}");
        }
    }
}
