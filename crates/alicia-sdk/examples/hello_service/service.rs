//! `hello_service`: the smallest complete Alicia service, the shape every new service follows.
//!
//! What it does is trivial on purpose: a request `{"name": "Ada"}` to its inbox is answered
//! `{"greeting": "Hello, Ada!"}`, and it counts the broadcasts it hears. Everything around that
//! is what a real service needs, in the order a reader meets it:
//!
//! 1. [`HelloSection`]: its section of the configuration, typed, every key with a default.
//! 2. [`HelloConfig`]: the bus connection plus the section, what [`start`] takes.
//! 3. [`Hello`]: the [`BusService`] (inbox requests, a subscription, refusals).
//! 4. [`Metrics`]: counters, published as the monitor's metrics snapshot.
//! 5. [`start`] / [`HelloHandle`]: runs it; health (status, heartbeats) comes from the SDK.
//!
//! `main.rs` next to this file runs it as a program; `crates/alicia-sdk/tests/hello_service.rs`
//! runs it against Alicia's broker and Mosquitto.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alicia_envelope::{Envelope, MessageType, Value};
use alicia_sdk::{
    BusService, Context, HandlerResult, Link, LinkEvent, LinkOptions, QoS, Refusal, SdkError, ServiceConfig,
    ServiceError, ServiceHandle, Subscription,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The service's name on the bus: its inbox is `P/services/hello_service/inbox`, its status
/// `P/system/services/hello_service/status`, its configuration section `hello_service`.
pub const NAME: &str = "hello_service";

/// The `hello_service:` section of the configuration.
///
/// Written like every section of `alicia-config`'s model: `default` so a file names only what
/// differs, `deny_unknown_fields` so a typo (`greting:`) is an error rather than a silent
/// default. A real service adds this struct to `crates/alicia-config/src/model.rs` (and its
/// name to `SECTIONS`), so `alicia config` validates it and the configuration service can
/// change it at run time; the example keeps it here to stay in one crate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HelloSection {
    /// The word before the name.
    pub greeting: String,
    /// Longest name accepted, in characters: what comes from the network is bounded.
    pub max_name_chars: usize,
    /// Seconds between metrics snapshots (the monitor's contract says 10).
    pub metrics_interval_secs: u64,
}

impl Default for HelloSection {
    fn default() -> Self {
        HelloSection { greeting: "Hello".into(), max_name_chars: 64, metrics_interval_secs: 10 }
    }
}

impl HelloSection {
    /// The section from a configuration file's text (YAML, as `config/<env>.yaml`): its
    /// `hello_service:` key, or the defaults without one; other sections are not this
    /// service's business. Errors carry the line and column (serde_yaml_ng's). Under the
    /// configuration service the same struct comes from JSON instead
    /// (`alicia_config::ConfigWatch::get::<HelloSection>()`, to reload without a restart).
    pub fn from_yaml(text: &str) -> Result<HelloSection, HelloError> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            hello_service: HelloSection,
        }
        let file: File = serde_yaml_ng::from_str(text).map_err(|e| HelloError::Config(e.to_string()))?;
        file.hello_service.validate()?;
        Ok(file.hello_service)
    }

    /// Values serde cannot check: a zero interval would make the metrics loop spin.
    pub fn validate(&self) -> Result<(), HelloError> {
        if self.metrics_interval_secs == 0 {
            return Err(HelloError::Config(format!("{NAME}.metrics_interval_secs must be at least 1")));
        }
        if self.max_name_chars == 0 {
            return Err(HelloError::Config(format!("{NAME}.max_name_chars must be at least 1")));
        }
        Ok(())
    }
}

/// What [`start`] takes: like `alicia_router::RouterConfig`, the SDK's bus connection (broker,
/// credentials, prefix, heartbeats, security: the binary fills it the same way for every
/// service) plus the service's own section.
#[derive(Debug, Clone)]
pub struct HelloConfig {
    /// The bus connection. Its name defaults to [`NAME`].
    pub service: ServiceConfig,
    /// This service's settings.
    pub section: HelloSection,
}

/// Why the service cannot start. `thiserror` in libraries; `anyhow` only at the binary's edge.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The bus configuration is unusable (bad prefix, unreadable key files, ...).
    #[error(transparent)]
    Sdk(#[from] SdkError),
    /// A `hello_service` setting is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The counters behind the metrics snapshot. Atomics for the hot counters; one short
/// `parking_lot` lock for the map keyed by refusal (never held across an `.await`).
#[derive(Default)]
pub struct Metrics {
    greeted: AtomicU64,
    invalid: AtomicU64,
    broadcasts: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// The monitor's metrics snapshot contract (see `alicia-monitor`): `{service, instance,
    /// timestamp, metrics: [{name, type, help, samples: [{labels, value}]}]}`. Names start
    /// with `alicia_<service>_`; counters end in `_total`.
    pub fn snapshot(&self, instance: &str) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let refused: Vec<Value> =
            self.refused.lock().iter().map(|(code, n)| json!({"labels": {"code": code}, "value": n})).collect();
        json!({
            "service": NAME,
            "instance": instance,
            "timestamp": alicia_envelope::Timestamp::now().to_string(),
            "metrics": [
                {"name": "alicia_hello_requests_total", "type": "counter", "help": "Requests answered, by result.",
                 "samples": [{"labels": {"result": "greeted"}, "value": n(&self.greeted)},
                             {"labels": {"result": "invalid"}, "value": n(&self.invalid)}]},
                {"name": "alicia_hello_broadcasts_total", "type": "counter", "help": "Broadcast envelopes heard.",
                 "samples": [{"labels": {}, "value": n(&self.broadcasts)}]},
                {"name": "alicia_hello_refused_total", "type": "counter",
                 "help": "Messages the SDK refused before the handler (dead-lettered), by code.", "samples": refused},
            ]
        })
    }
}

/// The [`BusService`]: what the SDK runtime calls. It holds only what handlers need; the
/// connection, reconnects, status, heartbeats and envelope checks are the runtime's.
pub struct Hello {
    section: HelloSection,
    /// `P/broadcast`, the extra subscription (the prefix is the deployment's, not a constant).
    broadcast: String,
    metrics: Arc<Metrics>,
}

impl BusService for Hello {
    fn name(&self) -> &str {
        NAME
    }

    /// The inbox is always subscribed (shared among instances); this adds the broadcast topic,
    /// which every instance hears. Subscribed again on every reconnect by the SDK.
    fn subscriptions(&self) -> Vec<Subscription> {
        vec![Subscription::new(self.broadcast.clone())]
    }

    /// Runs for each valid envelope (already parsed, unexpired, signature-checked), each in
    /// its own task. For a request, `Ok(Some(data))` becomes the response and `Err` an error
    /// response: the SDK sends both to the requester's response topic with its correlation data.
    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        if ctx.topic() == self.broadcast {
            self.metrics.broadcasts.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        match self.name_in(&envelope) {
            Ok(name) => {
                self.metrics.greeted.fetch_add(1, Ordering::Relaxed);
                Ok(Some(json!({ "greeting": format!("{}, {name}!", self.section.greeting) })))
            }
            // An event has nobody waiting for an error response: dead-letter it, so the bad
            // input is kept and visible (`mosquitto_sub -t alicia/system/deadletter`).
            Err(e) if envelope.message_type != MessageType::Request && ctx.response_topic().is_none() => {
                self.metrics.invalid.fetch_add(1, Ordering::Relaxed);
                ctx.bus().dead_letter(Refusal::from(&e), ctx.topic(), &envelope.to_vec()).await?;
                Ok(None)
            }
            // A request gets a typed error: code, message, and which field was wrong.
            Err(e) => {
                self.metrics.invalid.fetch_add(1, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// The SDK refused a message before `handle` (not an envelope, expired, bad signature) and
    /// has already dead-lettered it with its code and reason; the service only counts it.
    fn refused(&self, _topic: &str, refusal: &Refusal) {
        *self.metrics.refused.lock().entry(refusal.code.to_string()).or_default() += 1;
    }
}

impl Hello {
    /// The `name` of a greeting request, or an error naming the field and what is wrong.
    fn name_in<'a>(&self, envelope: &'a Envelope) -> Result<&'a str, ServiceError> {
        let refuse = |reason: String| {
            ServiceError::new("invalid_request", reason.clone())
                .with_errors(json!([{"field": "name", "reason": reason}]))
        };
        match envelope.payload.data.get("name") {
            Some(Value::String(s)) if s.is_empty() => Err(refuse("`name` is empty".into())),
            Some(Value::String(s)) if s.chars().count() > self.section.max_name_chars => {
                Err(refuse(format!("`name` is longer than {} characters", self.section.max_name_chars)))
            }
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(refuse("`name` must be text".into())),
            None => Err(refuse("`name` is missing".into())),
        }
    }
}

/// The running service: the SDK's handle (status, heartbeats, inbox) and the metrics task.
pub struct HelloHandle {
    service: ServiceHandle,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    publisher: JoinHandle<()>,
}

/// Starts the service: checks the section, starts the SDK runtime with [`Hello`], and the
/// metrics publisher. Returns at once; the connection comes up in the background
/// ([`HelloHandle::wait_online`]).
pub fn start(config: HelloConfig) -> Result<HelloHandle, HelloError> {
    config.section.validate()?;
    let mut sdk = config.service;
    sdk.name.get_or_insert_with(|| NAME.to_string());
    let topics = alicia_sdk::Topics::new(sdk.topic_prefix.clone())?;
    let metrics = Arc::new(Metrics::default());
    let every = Duration::from_secs(config.section.metrics_interval_secs);
    let hello = Hello { section: config.section, broadcast: topics.broadcast(), metrics: metrics.clone() };
    let service = alicia_sdk::start(sdk.clone(), hello)?;

    // The snapshot is a retained JSON document, not an envelope, so it goes over a plain
    // `Link` (the SDK's one reconnecting connection) rather than the envelope `Bus`.
    let name = sdk.name.clone().unwrap_or_else(|| NAME.into());
    let client_id = format!("{name}-{}-metrics", service.instance());
    let (link, events) = Link::connect(&sdk, LinkOptions::new(client_id, []).with_label(format!("{name}/metrics")));
    let topic = format!("{}/system/metrics/{name}", topics.prefix());
    let (stop, stopped) = watch::channel(false);
    let snapshot = {
        let (metrics, instance) = (metrics.clone(), service.instance().to_string());
        move || metrics.snapshot(&instance).to_string()
    };
    let publisher = tokio::spawn(publish_metrics(link, events, topic, snapshot, every, stopped));
    Ok(HelloHandle { service, metrics, stop, publisher })
}

/// Publishes the snapshot every `every`, on every (re)connect (a restarted broker without
/// persistence lost the retained one), and once more when stopping. QoS 0, retained: the
/// next one comes soon, and a monitor that starts later reads the last one at once.
async fn publish_metrics(
    link: Link,
    mut events: tokio::sync::mpsc::UnboundedReceiver<LinkEvent>,
    topic: String,
    snapshot: impl Fn() -> String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(ev) = events.recv() => if !matches!(ev, LinkEvent::Online) { continue },
            _ = stop.changed() => break,
        }
        let _ = link.publish(topic.clone(), QoS::AtMostOnce, true, snapshot(), None).await;
    }
    let _ = link.publish(topic, QoS::AtMostOnce, true, snapshot(), None).await;
    link.close().await;
}

impl HelloHandle {
    /// Waits until the service is connected and subscribed (then its status is `online`).
    pub async fn wait_online(&self, timeout: Duration) -> Result<(), SdkError> {
        self.service.wait_online(timeout).await
    }

    /// The metrics snapshot now, as published.
    pub fn metrics(&self) -> Value {
        self.metrics.snapshot(self.service.instance())
    }

    /// Leaves cleanly: a last metrics snapshot, then the SDK publishes `offline` on the status
    /// topic and disconnects (without this, the broker publishes the will: also `offline`).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.publisher.await;
        self.service.shutdown().await;
    }
}
