//! The service wrapper every Alicia service is built on.
//!
//! A service implements [`BusService`] (a name, optional extra subscriptions, and an `async`
//! handler from an [`alicia_envelope::Envelope`] to an optional reply), and [`start`] runs it:
//!
//! ```no_run
//! # use alicia_sdk::*;
//! # use alicia_envelope::{Destination, Envelope};
//! # use std::time::Duration;
//! struct Stt;
//! impl BusService for Stt {
//!     fn name(&self) -> &str { "stt_service" }
//!     async fn handle(&self, _ctx: &Context, _request: Envelope) -> HandlerResult {
//!         Ok(Some(serde_json::json!({ "text": "turn on the lights" })))
//!     }
//! }
//! # async fn main_() -> Result<(), SdkError> {
//! let stt = start(ServiceConfig::from_env()?, Stt)?;
//! let _answer = stt.request(Destination::service("intent_service"), serde_json::json!({}), Duration::from_secs(2)).await?;
//! # Ok(()) }
//! ```
//!
//! [`connect`] gives a plain client (requests and publishing only) for tools and tests.
//!
//! A new service starts from the template in `examples/hello_service/` (configuration section,
//! `BusService`, metrics snapshot, health, tests on both brokers); `examples/README.md` is
//! "writing a new service" in ten steps.
//!
//! # Topics
//!
//! `P` is the topic prefix (`alicia` by default, [`ServiceConfig::topic_prefix`]); `NAME` the
//! service name, `ID` the instance id. See [`Topics`].
//!
//! | topic | what | QoS / retain |
//! |-------|------|--------------|
//! | `P/services/NAME/inbox` | envelopes for the service; each instance subscribes to `$share/NAME/P/services/NAME/inbox`, so every message is handled by one instance | 1 |
//! | `P/services/NAME/reply/ID` | responses to one instance's requests (their MQTT 5 Response Topic) | 1 |
//! | `P/system/services/NAME/status` | `online` / `offline` (plain text); `offline` is also the MQTT will | 1, retained |
//! | `P/system/discovery/heartbeat` | heartbeat envelopes, every [`ServiceConfig::heartbeat_interval`] | 0 |
//! | `P/system/deadletter` | [`DeadLetter`] records: what could not be handled, where from, why | 1 |
//! | `P/devices/<id>/errors` | error responses to a device's refused messages, when it named no response topic | 1 |
//! | `P/broadcast` | envelopes for `broadcast` | 1 |
//! | `P/services/router/inbox` | envelopes for `capability:…` and `device_id:…`, resolved by the router | 1 |
//!
//! # What the runtime does
//!
//! - **Connects and stays connected.** MQTT 5, client id `NAME-ID`, credentials from the
//!   configuration only. When the connection fails or drops it retries with exponential backoff
//!   (from [`ServiceConfig::reconnect_min`], doubling, capped at
//!   [`ServiceConfig::reconnect_max`], with jitter so instances that lost the broker together do
//!   not return together) and subscribes again on every connect: by default sessions are clean
//!   ([`ServiceConfig::session_expiry`] = 0), so a dead instance leaves no session behind that
//!   would keep receiving its share of the inbox, and a restarted or replaced broker needs
//!   nothing from before. Publishes made while disconnected wait in a bounded queue.
//! - **Says whether the service is there.** The will is a retained `offline` on the status
//!   topic; on every connect, once subscribed, the instance publishes a retained `online` and a
//!   heartbeat; [`ServiceHandle::shutdown`] publishes `offline` before DISCONNECT. Several
//!   instances share one status topic, so each one watches it: when another instance's will (or
//!   shutdown) says `offline` while this one is alive, it says `online` again. The plain
//!   `online`/`offline` payloads are what Home Assistant's availability topics expect.
//! - **Heartbeats.** A `heartbeat` envelope to `broadcast` on the discovery heartbeat topic,
//!   with data `{service, instance, status, uptime_secs, interval_secs, handled, failed}` and a
//!   ttl of three intervals (a reader that sees none for that long may call the service gone).
//! - **Handles envelopes.** Inbox messages and extra subscriptions are parsed and validated; each
//!   valid one runs the handler in its own task (at most
//!   [`ServiceConfig::max_concurrent_handlers`] at once). Invalid envelopes and expired ones
//!   (`timestamp + ttl` passed) go to the dead-letter topic with the original bytes, the reason
//!   and the topic; an invalid request that named a response topic also gets an error response
//!   there, so its sender does not wait for a timeout. A panicking handler is reported like an
//!   error.
//! - **Replies.** For a `request` (or anything with an MQTT 5 response topic), `Ok(Some(data))`
//!   becomes a `response` ([`alicia_envelope::Envelope::reply_to`]) and `Err` an error response
//!   (code from [`ServiceError`], else `internal`), published to the response topic with the
//!   request's correlation data, or, without a response topic, to the requester's inbox.
//! - **Publishes and requests.** [`Bus::publish`] sends an `event` with `source`, `message_id`
//!   and `timestamp` filled in; [`Bus::request`] sends a `request` with Response Topic = this
//!   instance's reply topic and Correlation Data = the request's `message_id` (text), waits for
//!   the response at most the given timeout, and returns it, or [`SdkError::Timeout`] (nobody
//!   answered), [`SdkError::Remote`] (an error response), [`SdkError::NotConnected`] (no broker
//!   during the whole timeout). The request's ttl is the timeout, so a handler that gets it too
//!   late drops it; a response that arrives after the timeout goes to the dead-letter topic.
//!   Responses that come back through an inbox instead (sent by the router for a requester's
//!   `correlation_id`) are matched too, if this instance is the one waiting.
//! - **Protects envelopes** when [`ServiceConfig::security`] says so: Ed25519 signatures in
//!   `security.signature`, AES-256-GCM encryption of `payload.data` only (the router still reads
//!   destination, ttl, priority and routing), and on receipt bad or (if required) missing
//!   signatures and undecryptable payloads dead-lettered with the reason. See
//!   [`EnvelopeSecurity`] for the format and the rules.
//! - **Knows who sent what, when the broker says.** With
//!   [`ServiceConfig::trust_broker_identity`] (Alicia's broker, which stamps every message with
//!   its publisher's login: see [`Sender`]), [`Context::sender`] tells the handler who published
//!   the message, and the runtime refuses an envelope from a device (a certificate or token
//!   login) whose `source` is not that device: a device speaks only as itself.
//! - **Answers refusals where a device can read them.** A refused message (invalid, expired,
//!   failing the security or identity checks) goes to the dead-letter topic with the reason and
//!   is answered with an error response: to the MQTT 5 response topic if the sender gave one,
//!   else, for a device (known from the broker's identity or a `device_id:ID` source), to
//!   `P/devices/<id>/errors`, with every problem found (`data.errors`).
//! - **MQTT properties.** Every envelope is published with Message Expiry Interval = its
//!   remaining ttl (a broker drops it from offline queues when it would be dead on arrival) and
//!   Content Type `application/json`.
//!
//! # Why it is built this way
//!
//! - **rumqttc, MQTT 5 only.** rumqttc is the maintained pure-Rust async client with MQTT 5;
//!   Response Topic, Correlation Data, shared subscriptions and no-local are MQTT 5 features,
//!   and Mosquitto (since 1.6) and EMQX have them. Devices may still speak 3.1.1: they only
//!   need the envelope format, not this crate.
//! - **No dependency on the broker crate.** Services see MQTT only, so they run unchanged
//!   against the embedded broker, Mosquitto or an EMQX cluster (the tests run against Alicia's
//!   broker and Debian's Mosquitto).
//! - **No TLS yet.** rumqttc 0.24's TLS feature brings rustls 0.22, a second TLS stack next to
//!   the broker's rustls 0.23, so it is off (`default-features = false`); TLS to the broker
//!   comes with a rumqttc on rustls 0.23.
//! - **Services are addressed directly.** An envelope for a service goes straight to its inbox:
//!   no hop through the router for the most common traffic, and two services can talk before
//!   the router exists. Destinations that need the registry (`capability:`, `device_id:`) go to
//!   the router's inbox, where the router (a service named [`ROUTER_SERVICE`]) resolves them.
//! - **A dead letter is plain JSON**, not an envelope: what it reports is often not a valid
//!   envelope, and `mosquitto_sub … | jq` should read it.
//! - **QoS 1** for envelopes (handlers must tolerate a rare duplicate; exactly-once across a
//!   reconnect is not worth QoS 2's extra round trip here), QoS 0 for heartbeats (the next one
//!   comes soon).

mod config;
mod deadletter;
mod error;
pub mod http;
mod identity;
mod link;
mod protection;
mod runtime;
mod service;
mod tls;
mod topics;

/// The key types [`EnvelopeSecurity`] is built from (`KeyRing`, `SigningKey`, `VerifyingKey`).
pub use alicia_seal as seal;
pub use config::{PasswordSource, Secret, ServiceConfig};
pub use deadletter::DeadLetter;
pub use error::SdkError;
pub use http::{ApiError, ApiResult};
pub use identity::{AuthMethod, Sender, AUTH_PROPERTY, USER_PROPERTY};
pub use link::{Link, LinkEvent, LinkOptions, LinkState};
pub use protection::{EnvelopeSecurity, ENCRYPTION_SCHEME};
/// MQTT types a service needs next to a [`Link`] (publish properties, wills, filters).
pub use rumqttc_notls::v5::mqttbytes::v5::{Filter, LastWill, Publish, PublishProperties};
pub use rumqttc_notls::v5::mqttbytes::QoS;
pub use runtime::{connect, start, Bus, ServiceHandle, OFFLINE, ONLINE};
pub use service::{BoxError, BusService, Context, HandlerResult, Refusal, ServiceError, Subscription};
pub use tls::Tls;
pub use topics::{check_prefix, Topics, DEFAULT_PREFIX, ROUTER_SERVICE};
