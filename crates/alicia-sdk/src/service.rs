//! What a service implements: its name, what it listens to, and how it handles an envelope.

use std::borrow::Cow;
use std::future::Future;

use alicia_envelope::{Envelope, Value};
use bytes::Bytes;

use crate::identity::Sender;
use crate::runtime::Bus;
use crate::QoS;

/// Any error a handler returns. `?` converts every error type into it; return a
/// [`ServiceError`] to choose the error code the requester sees.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler returns: `Ok(Some(data))` to answer (see [`BusService::handle`]), `Ok(None)`
/// for no answer, `Err` for an error response.
pub type HandlerResult = Result<Option<Value>, BoxError>;

/// A service on the Alicia bus.
///
/// ```no_run
/// use alicia_sdk::{BusService, Context, HandlerResult, ServiceConfig, ServiceError};
/// use alicia_envelope::Envelope;
/// use serde_json::json;
///
/// struct Echo;
///
/// impl BusService for Echo {
///     fn name(&self) -> &str {
///         "echo"
///     }
///
///     async fn handle(&self, _ctx: &Context, envelope: Envelope) -> HandlerResult {
///         match envelope.payload.data.get("text") {
///             Some(text) => Ok(Some(json!({ "echo": text }))),
///             None => Err(ServiceError::new("invalid_request", "`text` is missing").into()),
///         }
///     }
/// }
///
/// # async fn run() -> Result<(), alicia_sdk::SdkError> {
/// let running = alicia_sdk::start(ServiceConfig::from_env()?, Echo)?;
/// running.join().await;
/// # Ok(()) }
/// ```
pub trait BusService: Send + Sync + 'static {
    /// The service's name: its inbox is `<prefix>/services/<name>/inbox`. A valid service name
    /// (no `/`, `+`, `#`, `:`); [`crate::ServiceConfig::name`] can override it.
    fn name(&self) -> &str;

    /// Topic filters to receive envelopes from, besides the inbox (which is always
    /// subscribed). Asked once at start; subscribed again on every connect.
    fn subscriptions(&self) -> Vec<Subscription> {
        Vec::new()
    }

    /// Handles one envelope from the inbox or a subscription. Handlers run concurrently (up to
    /// [`crate::ServiceConfig::max_concurrent_handlers`]), each in its own task.
    ///
    /// For a `request` (or any message that carries an MQTT 5 response topic), `Ok(Some(data))`
    /// is sent back as the response and `Err(e)` as an error response (code from a
    /// [`ServiceError`], `internal` otherwise); `Ok(None)` sends nothing. For other message
    /// types the returned data is ignored and errors are logged.
    fn handle(&self, ctx: &Context, envelope: Envelope) -> impl Future<Output = HandlerResult> + Send;

    /// Told about each message the runtime refused before [`BusService::handle`] (it has
    /// already gone to the dead-letter topic with the refusal): for a service's own metrics,
    /// e.g. the router's dead letters by code. Default: nothing.
    fn refused(&self, _topic: &str, _refusal: &Refusal) {}
}

/// Why a message was not handled: a stable machine-readable `code` and a `reason` for people.
///
/// Every dead letter carries one (`{"code", "reason", ...}` on the dead-letter topic, see
/// [`crate::DeadLetter`]), so tools count and filter by code without parsing prose, and a
/// code is never glued onto the text. Codes are `snake_case` constants chosen by the code
/// that refuses; the runtime's own are the associated constants below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `invalid_envelope`, `expired`, `max_hops`, `invalid_telemetry`, ...
    pub code: Cow<'static, str>,
    /// What was wrong, for people (and for the sender, where the refusal is answered).
    pub reason: String,
}

impl Refusal {
    /// Not JSON, or not a valid envelope.
    pub const INVALID_ENVELOPE: &'static str = "invalid_envelope";
    /// `timestamp + ttl` had passed.
    pub const EXPIRED: &'static str = "expired";
    /// A bad or (if required) missing signature, or a payload that cannot be decrypted.
    pub const SECURITY: &'static str = "security";
    /// A device (by its broker login) sent an envelope under another `source`.
    pub const IDENTITY: &'static str = "identity";
    /// A response that is not a valid envelope, or that no request waits for.
    pub const INVALID_RESPONSE: &'static str = "invalid_response";
    /// A message for a client without a handler.
    pub const NO_HANDLER: &'static str = "no_handler";

    /// A refusal with this code and reason.
    pub fn new(code: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Refusal { code: code.into(), reason: reason.into() }
    }
}

/// A handler's error, dead-lettered: its code and message.
impl From<&ServiceError> for Refusal {
    fn from(e: &ServiceError) -> Self {
        Refusal::new(e.code.clone(), e.message.clone())
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for Refusal {}

/// An extra topic filter for [`BusService::subscriptions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The MQTT topic filter (wildcards allowed).
    pub filter: String,
    /// Maximum QoS (default 1).
    pub qos: QoS,
    /// Subscribe as `$share/<service>/<filter>`, so each message goes to one instance of the
    /// service instead of every instance.
    pub shared: bool,
}

impl Subscription {
    /// Every instance receives every message (QoS 1).
    pub fn new(filter: impl Into<String>) -> Self {
        Subscription { filter: filter.into(), qos: QoS::AtLeastOnce, shared: false }
    }

    /// One instance of the service receives each message (QoS 1).
    pub fn shared(filter: impl Into<String>) -> Self {
        Subscription { shared: true, ..Subscription::new(filter) }
    }

    /// Sets the maximum QoS.
    pub fn with_qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }
}

/// An error with a code, for handlers: the requester receives `code` and `message` in the
/// error response (and sees them in [`crate::SdkError::Remote`]), and `errors`, when set, as
/// `data.errors` (e.g. every invalid field of a request).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    /// Short machine-readable code (`not_found`, `invalid_request`, `unavailable`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Details for programs, sent as `data.errors` (e.g. `[{"field", "reason"}]`).
    pub errors: Option<Value>,
}

impl ServiceError {
    /// A new error.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError { code: code.into(), message: message.into(), errors: None }
    }

    /// Adds details, sent as `data.errors` of the error response.
    pub fn with_errors(mut self, errors: Value) -> Self {
        self.errors = Some(errors);
        self
    }
}

/// What a handler knows besides the envelope: the bus (to publish and make requests of its
/// own) and how the message arrived.
#[derive(Clone)]
pub struct Context {
    pub(crate) bus: Bus,
    pub(crate) topic: String,
    pub(crate) response_topic: Option<String>,
    pub(crate) correlation_data: Option<Bytes>,
    pub(crate) sender: Option<Sender>,
}

impl Context {
    /// Who published the message, when the broker says and the service trusts it to
    /// ([`crate::ServiceConfig::trust_broker_identity`]); see [`Sender`].
    pub fn sender(&self) -> Option<&Sender> {
        self.sender.as_ref()
    }

    /// The device that sent `envelope`: the broker's word if the publisher logged in as a
    /// device, else the envelope's `source` when it is `device_id:ID`. `None` for services and
    /// for senders nobody vouches for.
    pub fn sending_device<'a>(&'a self, envelope: &'a Envelope) -> Option<&'a str> {
        match &self.sender {
            Some(s) => s.device_id(),
            None => envelope.source.strip_prefix("device_id:"),
        }
    }

    /// Answers a refusal of `envelope` where its sender can read it: the MQTT 5 response
    /// topic if it gave one, else `device`'s errors topic (`P/devices/<id>/errors`). The answer
    /// is an error response with `code`, `message` and, when given, `errors`. Returns whether
    /// an answer was sent (not when there is nowhere to send it).
    pub async fn answer_refusal(
        &self,
        envelope: &Envelope,
        device: Option<&str>,
        error: &ServiceError,
    ) -> Result<bool, crate::SdkError> {
        let topic = match (self.response_topic(), device) {
            (Some(t), _) => t.to_string(),
            (None, Some(id)) => self.bus.topics().device_errors(id),
            (None, None) => return Ok(false),
        };
        let answer = crate::runtime::error_answer(envelope, self.bus.name(), error);
        let correlation =
            self.correlation_data.clone().unwrap_or_else(|| crate::runtime::id_bytes(&envelope.message_id));
        self.bus.send_to(&topic, &answer, Some(correlation)).await?;
        Ok(true)
    }
    /// The bus, to publish and send requests.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The topic the envelope arrived on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The MQTT 5 Response Topic of the message, if the sender set one.
    pub fn response_topic(&self) -> Option<&str> {
        self.response_topic.as_deref()
    }

    /// The MQTT 5 Correlation Data of the message, if any.
    pub fn correlation_data(&self) -> Option<&[u8]> {
        self.correlation_data.as_deref()
    }
}
