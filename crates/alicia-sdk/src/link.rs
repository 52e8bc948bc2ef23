//! One MQTT 5 connection, kept up: the one piece of code in Alicia that connects, reconnects and
//! resubscribes.
//!
//! Every service needs the same things from its connection to the broker, and they are easy to
//! get subtly wrong, so they live here once:
//!
//! - **Reconnect with jittered, capped backoff.** After a failure the next attempt waits
//!   between half and all of a step that doubles from `reconnect_min` up to `reconnect_max`
//!   ("equal jitter"), so instances that lost the broker together do not return together.
//! - **Resubscribe on every CONNACK.** Sessions are clean by default, and a restarted broker
//!   may have lost a persistent one: the link subscribes to its whole filter set each time,
//!   including filters added while it ran ([`Link::subscribe`]).
//! - **An online watch.** [`LinkState::Online`] means connected *and* subscribed (the SUBACK of
//!   the initial subscription arrived), so a request sent once online cannot miss its answer.
//!   [`Link::wait_online`] waits through failures; [`Link::connect_outcome`] reports the first
//!   failure at once (for command-line tools).
//! - **A clean stop.** [`Link::close`] sends DISCONNECT after what is queued, so the last
//!   documents are written and the broker does not publish the will.
//!
//! The link's task only drives the connection; everything that arrives is handed on as a
//! [`LinkEvent`] through an unbounded channel, in order. Unbounded because the consumer may
//! publish through the same link, which needs this task to keep polling: a bounded channel
//! could deadlock the two (the broker's flow control still bounds what is in flight).
//!
//! The SDK's own runtime (envelopes, inbox, status, heartbeats) is built on it, and so is
//! every service's plain connection for what is not an envelope: the registry's status topics
//! and retained inventory, the router's forwarding, the configuration's and monitor's
//! documents.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rumqttc_notls::v5::mqttbytes::v5::{ConnectProperties, Filter, LastWill, Packet, Publish, PublishProperties};
use rumqttc_notls::v5::{AsyncClient, ClientError, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc_notls::{Outgoing, Transport};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::config::{PasswordSource, ServiceConfig};
use crate::error::SdkError;
use crate::tls::Bridge;
use crate::QoS;

/// The state of a connection to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or reconnecting after a failure (with backoff).
    Connecting,
    /// Connected and subscribed.
    Online,
    /// Closed.
    Stopped,
}

/// What a link reports to its owner, in the order it happened.
#[derive(Debug)]
pub enum LinkEvent {
    /// Connected and subscribed (again): republish retained documents now, a restarted broker
    /// without persistence lost them.
    Online,
    /// The connection dropped, or an attempt failed (sent for each failure).
    Offline {
        /// Why, for people.
        reason: String,
        /// Whether it was online before (a drop rather than a failed attempt).
        was_online: bool,
    },
    /// A message on one of the filters.
    Message(Publish),
}

/// How a link connects.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// MQTT client id.
    pub client_id: String,
    /// Subscribed on every connect.
    pub filters: Vec<Filter>,
    /// The will, if any.
    pub will: Option<LastWill>,
    /// Requests (publishes, subscribes) that may wait for the connection task.
    pub channel_capacity: usize,
    /// Name used in log lines (`router`, `device_registry/io`, ...).
    pub label: String,
}

impl LinkOptions {
    /// A link with client id `client_id`, subscribing to `filters` (QoS 1 each).
    pub fn new(client_id: impl Into<String>, filters: impl IntoIterator<Item = String>) -> Self {
        let client_id = client_id.into();
        LinkOptions {
            label: client_id.clone(),
            client_id,
            filters: filters.into_iter().map(|f| Filter::new(f, QoS::AtLeastOnce)).collect(),
            will: None,
            channel_capacity: 1024,
        }
    }

    /// Sets the will.
    pub fn with_will(mut self, will: LastWill) -> Self {
        self.will = Some(will);
        self
    }

    /// Sets the request channel's capacity.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.channel_capacity = capacity.max(1);
        self
    }

    /// Sets the label of log lines.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }
}

/// Why a connection attempt failed, in words a person can act on.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// The broker answered and refused the login (as opposed to not answering at all).
    refused: bool,
    reason: String,
}

impl Failure {
    fn of(e: &ConnectionError) -> Failure {
        use rumqttc_notls::v5::mqttbytes::v5::ConnectReturnCode as Code;
        match e {
            ConnectionError::ConnectionRefused(code) => {
                let reason = match code {
                    Code::BadUserNamePassword => "wrong user name or password".to_string(),
                    Code::NotAuthorized => "not authorised".to_string(),
                    other => format!("{other:?}"),
                };
                Failure { refused: true, reason }
            }
            ConnectionError::Io(io) => Failure { refused: false, reason: io.to_string() },
            other => Failure { refused: false, reason: other.to_string() },
        }
    }
}

struct Shared {
    client: AsyncClient,
    broker: String,
    label: String,
    /// The TLS bridge the client connects through, if TLS is on.
    bridge: Option<Bridge>,
    /// Why the link cannot even try (the TLS bridge could not start): it stops at once.
    setup_error: Option<String>,
    /// The user name and where each attempt's password comes from, if it changes.
    password_source: Option<(String, PasswordSource)>,
    filters: Mutex<Vec<Filter>>,
    state: watch::Sender<LinkState>,
    failure: watch::Sender<Option<Failure>>,
    connects: AtomicU64,
    /// Set by [`Link::close`] before its DISCONNECT: the end that follows is no failure.
    stopping: AtomicBool,
    /// Wakes the task out of a reconnect delay.
    stop: Notify,
}

/// A connection kept up (see the module documentation). Cheap to clone; the connection ends
/// with [`Link::close`], or when every clone and the task's owner are dropped.
#[derive(Clone)]
pub struct Link {
    shared: Arc<Shared>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Link {
    /// Connects to `config`'s broker with its credentials, keep-alive and session settings
    /// (in the background, retrying until it succeeds). Must be called inside a tokio runtime.
    pub fn connect(config: &ServiceConfig, opts: LinkOptions) -> (Link, mpsc::UnboundedReceiver<LinkEvent>) {
        // TLS: the MQTT client talks to a local bridge that does the handshake (see `tls`).
        let (bridge, setup_error) = match config.tls.as_ref().map(|t| Bridge::start(t, &config.host, config.port)) {
            None => (None, None),
            Some(Ok(b)) => (Some(b), None),
            Some(Err(e)) => (None, Some(e.to_string())),
        };
        let mut options = match &bridge {
            Some(b) => {
                let mut o = MqttOptions::new(opts.client_id.clone(), b.socket().display().to_string(), 0);
                o.set_transport(Transport::Unix);
                o
            }
            None => MqttOptions::new(opts.client_id.clone(), config.host.clone(), config.port),
        };
        options.set_keep_alive(config.keep_alive);
        // TCP_NODELAY: envelopes and documents are small packets; with Nagle's algorithm one
        // written while another is unacknowledged waits for the peer's delayed ACK (~40 ms).
        let mut network = options.network_options();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        options.set_clean_start(config.session_expiry.is_zero());
        options.set_request_channel_capacity(opts.channel_capacity);
        options.set_max_packet_size(Some(config.max_packet_size));
        let mut props = ConnectProperties::new();
        props.max_packet_size = Some(config.max_packet_size);
        if !config.session_expiry.is_zero() {
            props.session_expiry_interval = Some(u32::try_from(config.session_expiry.as_secs()).unwrap_or(u32::MAX));
        }
        options.set_connect_properties(props);
        let password_source = match (&config.username, &config.password_source) {
            (Some(user), Some(source)) => Some((user.clone(), source.clone())),
            _ => None,
        };
        if let Some(user) = &config.username {
            let password = match &password_source {
                Some((_, source)) => fresh(source, &opts.label),
                None => config.password.as_ref().map(|p| p.expose().to_string()).unwrap_or_default(),
            };
            options.set_credentials(user.clone(), password);
        }
        if let Some(will) = opts.will.clone() {
            options.set_last_will(will);
        }
        let (client, events) = AsyncClient::new(options, opts.channel_capacity);
        let shared = Arc::new(Shared {
            client,
            broker: format!("{}:{}", config.host, config.port),
            label: opts.label,
            bridge,
            setup_error,
            password_source,
            filters: Mutex::new(opts.filters),
            state: watch::Sender::new(LinkState::Connecting),
            failure: watch::Sender::new(None),
            connects: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            stop: Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let backoff = Backoff::new(config.reconnect_min, config.reconnect_max);
        let task = tokio::spawn(drive(shared.clone(), events, tx, backoff));
        (Link { shared, task: Arc::new(Mutex::new(Some(task))) }, rx)
    }

    /// The MQTT client, to publish (with properties) and subscribe.
    pub fn client(&self) -> &AsyncClient {
        &self.shared.client
    }

    /// `host:port` of the broker.
    pub fn broker(&self) -> &str {
        &self.shared.broker
    }

    /// The state now.
    pub fn state(&self) -> LinkState {
        *self.shared.state.borrow()
    }

    /// A watch of the state.
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.shared.state.subscribe()
    }

    /// How many times the connection has been established (1 after the first connect).
    pub fn connects(&self) -> u64 {
        self.shared.connects.load(Ordering::Relaxed)
    }

    /// Waits until connected and subscribed, at most `timeout`, through failed attempts.
    pub async fn wait_online(&self, timeout: Duration) -> Result<(), SdkError> {
        let mut rx = self.shared.state.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|s| *s != LinkState::Connecting).await.map(|s| *s).unwrap_or(LinkState::Stopped)
        })
        .await;
        match reached {
            Ok(LinkState::Online) => Ok(()),
            Ok(_) => Err(SdkError::Closed),
            Err(_) => Err(SdkError::NotConnected { broker: self.shared.broker.clone(), waited: timeout }),
        }
    }

    /// Waits for the outcome of connecting, at most `timeout`: `Ok` once online, or at once
    /// after the first failed attempt, saying why ([`SdkError::LoginRefused`],
    /// [`SdkError::Unreachable`]).
    pub async fn connect_outcome(&self, timeout: Duration) -> Result<(), SdkError> {
        let mut failures = self.shared.failure.subscribe();
        failures.mark_unchanged();
        tokio::select! {
            r = self.wait_online(timeout) => match (r, self.shared.failure.borrow().clone()) {
                // Stopped before it could try: the reason is the failure recorded.
                (Err(SdkError::Closed), Some(Failure { reason, .. })) if self.shared.setup_error.is_some() => {
                    Err(SdkError::Unreachable { broker: self.shared.broker.clone(), reason })
                }
                (r, _) => r,
            },
            changed = failures.changed() => {
                if self.state() == LinkState::Online {
                    return Ok(());
                }
                let failure = changed.ok().and_then(|()| failures.borrow().clone());
                let broker = self.shared.broker.clone();
                match failure {
                    Some(Failure { refused: true, reason }) => Err(SdkError::LoginRefused { broker, reason }),
                    Some(Failure { refused: false, reason }) => Err(SdkError::Unreachable { broker, reason }),
                    None => Err(SdkError::Closed),
                }
            }
        }
    }

    /// Adds `filter` to the set subscribed on every connect, and subscribes now.
    pub async fn subscribe(&self, filter: Filter) -> Result<(), SdkError> {
        {
            let mut filters = self.shared.filters.lock();
            if filters.iter().any(|f| f.path == filter.path) {
                return Ok(());
            }
            filters.push(filter.clone());
        }
        self.shared.client.subscribe_many([filter]).await.map_err(closed)
    }

    /// Publishes (QoS as given), waiting while the request channel is full.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
        props: Option<PublishProperties>,
    ) -> Result<(), SdkError> {
        let (topic, payload) = (topic.into(), payload.into());
        match props {
            Some(p) => self.shared.client.publish_with_properties(topic, qos, retain, payload, p).await,
            None => self.shared.client.publish(topic, qos, retain, payload).await,
        }
        .map_err(closed)
    }

    /// Publishes without waiting: `false` when the request channel is full (or closed).
    pub fn try_publish(&self, topic: impl Into<String>, qos: QoS, retain: bool, payload: impl Into<Bytes>) -> bool {
        self.shared.client.try_publish(topic.into(), qos, retain, payload.into()).is_ok()
    }

    /// Sends DISCONNECT after what is queued (when connected) and waits, at most 5 s, for the
    /// connection task to end.
    pub async fn close(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        if self.state() == LinkState::Online {
            let _ = self.shared.client.disconnect().await;
        }
        self.shared.stop.notify_one();
        let task = self.task.lock().take();
        if let Some(mut task) = task {
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                tracing::debug!(link = %self.shared.label, "the connection did not close in time");
                task.abort();
            }
        }
        self.shared.state.send_replace(LinkState::Stopped);
    }

    /// Ends the connection at once, without DISCONNECT (as a crash would: the broker publishes
    /// the will).
    pub fn abort(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
        self.shared.state.send_replace(LinkState::Stopped);
    }
}

/// A password from `source`; empty (the broker will refuse the login, and say so) if none
/// could be made.
fn fresh(source: &PasswordSource, label: &str) -> String {
    match source.make() {
        Ok(p) => p.expose().to_string(),
        Err(e) => {
            tracing::warn!(link = %label, error = %e, "cannot make a password for this attempt");
            String::new()
        }
    }
}

fn closed(_: ClientError) -> SdkError {
    SdkError::Closed
}

/// The connection task.
async fn drive(shared: Arc<Shared>, mut events: EventLoop, tx: mpsc::UnboundedSender<LinkEvent>, mut backoff: Backoff) {
    if let Some(reason) = &shared.setup_error {
        tracing::error!(link = %shared.label, broker = %shared.broker, error = %reason, "cannot connect");
        shared.failure.send_replace(Some(Failure { refused: false, reason: reason.clone() }));
        let _ = tx.send(LinkEvent::Offline { reason: reason.clone(), was_online: false });
        shared.state.send_replace(LinkState::Stopped);
        return;
    }
    // The packet id of the subscription sent after the last CONNACK: its SUBACK means online.
    let mut initial: Option<Option<u16>> = None;
    // Consecutive failed attempts, to log a broker that stays away without flooding the log.
    let mut failures: u64 = 0;
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            _ = shared.stop.notified() => {
                // Connected: drain what is queued, the DISCONNECT among it, before ending.
                // Not connected: there is nothing to send.
                if *shared.state.borrow() != LinkState::Online {
                    break;
                }
                continue;
            }
        };
        let stopping = shared.stopping.load(Ordering::Acquire);
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                failures = 0;
                shared.connects.fetch_add(1, Ordering::Relaxed);
                let filters = shared.filters.lock().clone();
                if filters.is_empty() {
                    shared.state.send_replace(LinkState::Online);
                    let _ = tx.send(LinkEvent::Online);
                    initial = None;
                } else {
                    initial = Some(None);
                    if shared.client.try_subscribe_many(filters.clone()).is_err() {
                        // The channel is full of requests queued while offline: wait in a task
                        // (this one drains the channel, so it must not wait itself).
                        let client = shared.client.clone();
                        tokio::spawn(async move { client.subscribe_many(filters).await });
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Subscribe(pkid))) if initial == Some(None) => initial = Some(Some(pkid)),
            Ok(Event::Incoming(Packet::SubAck(ack))) if initial == Some(Some(ack.pkid)) => {
                initial = None;
                shared.state.send_replace(LinkState::Online);
                tracing::debug!(link = %shared.label, broker = %shared.broker, "online");
                if tx.send(LinkEvent::Online).is_err() && !stopping {
                    // Nobody listens any more: the owner is gone.
                    break;
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = tx.send(LinkEvent::Message(p));
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => break,
            Ok(_) => {}
            Err(_) if stopping => break,
            Err(e) => {
                initial = None;
                let mut failure = Failure::of(&e);
                if let Some(why) = shared.bridge.as_ref().and_then(Bridge::take_failure) {
                    // The client saw its socket closed; the bridge knows why.
                    failure = Failure { refused: false, reason: why };
                }
                let was_online = shared.state.send_replace(LinkState::Connecting) == LinkState::Online;
                let delay = backoff.delay();
                failures += 1;
                let error = &failure.reason;
                if was_online {
                    tracing::warn!(link = %shared.label, broker = %shared.broker, %error, "connection lost; reconnecting");
                } else if failures.is_power_of_two() {
                    // A refused CONNECT (credentials) or SUBSCRIBE (ACL) also ends here.
                    tracing::warn!(link = %shared.label, broker = %shared.broker, %error, failures, retry_in = ?delay, "cannot connect");
                } else {
                    tracing::debug!(link = %shared.label, broker = %shared.broker, %error, retry_in = ?delay, "cannot connect");
                }
                shared.failure.send_replace(Some(failure.clone()));
                let _ = tx.send(LinkEvent::Offline { reason: failure.reason, was_online });
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.stop.notified() => break,
                }
                if let Some((user, source)) = &shared.password_source {
                    // A token may have expired meanwhile: the next attempt gets a fresh one.
                    events.options.set_credentials(user.clone(), fresh(source, &shared.label));
                }
            }
        }
    }
    shared.state.send_replace(LinkState::Stopped);
}

/// Exponential backoff with jitter between `min` and `max`.
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff { min, max: max.max(min), next: min }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay to wait now: between half and all of the current step ("equal jitter", so
    /// instances that lost the broker together do not come back together), then the step
    /// doubles up to `max`.
    fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for step in [100u64, 200, 400, 800, 1000, 1000] {
            let d = b.delay().as_millis() as u64;
            assert!(d >= step / 2 && d <= step, "{d} for step {step}");
        }
        b.reset();
        assert!(b.delay() <= Duration::from_millis(100));
    }
}
