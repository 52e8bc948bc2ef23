//! `actuator_control`: a command to a device, acknowledged (the device answers a request with
//! its new state), retried on silence with the same message id, and confirmed by the state the
//! device reports; "sent but the state did not change" is said, not hidden.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope, Timestamp};
use alicia_sdk::{Bus, BusService, Context, HandlerResult, QoS, SdkError, ServiceConfig, ServiceError, ServiceHandle};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::alerts::{self, Conditions};
use crate::home::Home;
use crate::DeviceError;

/// The service's name on the bus.
pub const SERVICE_NAME: &str = "actuator_control";

/// How to run it.
#[derive(Debug, Clone)]
pub struct ActuatorConfig {
    pub service: ServiceConfig,
    pub settings: alicia_config::ActuatorControlConfig,
}

impl ActuatorConfig {
    pub fn new(service: ServiceConfig) -> Self {
        ActuatorConfig { service, settings: alicia_config::ActuatorControlConfig::default() }
    }
}

/// What the reported state must show after a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// `key` equals `value` (numbers compared as numbers).
    Key(String, Value),
    /// Any new state (a newer `updated`).
    Changed(Option<String>),
}

impl Expect {
    /// The expectation of `command` with `params`, given the state before.
    pub fn of(command: &str, params: &Map<String, Value>, before: Option<&Value>) -> Expect {
        let key = |k: &str, v: Value| Expect::Key(k.to_string(), v);
        let param = |k: &str| params.get(k).cloned();
        let updated = before.and_then(|s| s.get("updated")).and_then(Value::as_str).map(str::to_string);
        match command {
            "turn_on" => key("power", json!("on")),
            "turn_off" => key("power", json!("off")),
            "toggle" => match before.and_then(|s| s.get("power")).and_then(Value::as_str) {
                Some("on") => key("power", json!("off")),
                Some("off") => key("power", json!("on")),
                _ => Expect::Changed(updated),
            },
            "mute" => key("muted", json!(true)),
            "unmute" => key("muted", json!(false)),
            "set_brightness" | "set_volume" | "set_level" | "set_color_temp" => {
                let (p, k) = match command {
                    "set_brightness" => ("brightness", "brightness"),
                    "set_volume" => ("volume", "volume"),
                    "set_level" => ("level", "level"),
                    _ => ("kelvin", "color_temp_kelvin"),
                };
                match param(p) {
                    Some(v) => key(k, v),
                    None => Expect::Changed(updated),
                }
            }
            _ => Expect::Changed(updated),
        }
    }

    pub fn met(&self, state: &Value) -> bool {
        match self {
            Expect::Key(k, want) => match (state.get(k), want) {
                (Some(Value::Number(a)), Value::Number(b)) => {
                    (a.as_f64().unwrap_or(f64::NAN) - b.as_f64().unwrap_or(f64::NAN)).abs() < 1e-9
                }
                (Some(v), w) => v == w,
                (None, _) => false,
            },
            Expect::Changed(before) => {
                let now = state.get("updated").and_then(Value::as_str);
                match (before, now) {
                    (Some(b), Some(n)) => n > b.as_str(),
                    (None, Some(_)) => true,
                    _ => false,
                }
            }
        }
    }
}

type Outcome = Result<Value, ServiceError>;
/// A request's outcome, once known, and when the request came.
type Seen = (Instant, watch::Receiver<Option<Outcome>>);

struct State {
    home: Arc<Home>,
    settings: alicia_config::ActuatorControlConfig,
    /// Outcomes by request key, for repeated requests (with when they were made).
    seen: Mutex<HashMap<String, Seen>>,
    last: Mutex<HashMap<String, Value>>,
    conditions: Mutex<Conditions>,
    prefix: String,
}

struct Service {
    state: Arc<State>,
}

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::new("invalid_request", message)
}

impl BusService for Service {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    async fn handle(&self, ctx: &Context, env: Envelope) -> HandlerResult {
        let data = env.payload.data.clone();
        match data.get("action").and_then(Value::as_str) {
            Some("command") | None if data.get("command").is_some() => {
                Ok(Some(self.command(ctx.bus(), &env, &data).await?))
            }
            Some("state") => {
                let id = data.get("device_id").and_then(Value::as_str).ok_or_else(|| bad("`device_id`: missing"))?;
                let home = &self.state.home;
                if home.device(id).is_none() {
                    return Err(ServiceError::new("unknown_device", format!("{id:?} is not registered")).into());
                }
                Ok(Some(json!({
                    "device_id": id,
                    "state": home.state(id),
                    "last_command": self.state.last.lock().get(id),
                })))
            }
            other => Err(ServiceError::new(
                "unknown_action",
                format!("action {other:?}: this service answers `command` (device_id, command, parameters) and `state` (device_id)"),
            )
            .into()),
        }
    }
}

impl Service {
    async fn command(&self, bus: &Bus, env: &Envelope, data: &Value) -> Result<Value, ServiceError> {
        let s = &self.state;
        let id = data.get("device_id").and_then(Value::as_str).ok_or_else(|| bad("`device_id`: missing"))?.to_string();
        let command = data.get("command").and_then(Value::as_str).ok_or_else(|| bad("`command`: missing"))?.to_string();
        let params = match data.get("parameters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(bad("`parameters` must be an object")),
        };
        // Idempotency: the caller's key, else the request's own message id (a redelivery).
        let key = data
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| env.message_id.to_string());
        let window = Duration::from_secs(s.settings.dedup_window_secs);
        let existing = {
            let mut seen = s.seen.lock();
            seen.retain(|_, (at, _)| at.elapsed() < window);
            match seen.get(&key) {
                Some((_, rx)) => Err(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    seen.insert(key.clone(), (Instant::now(), rx));
                    Ok(tx)
                }
            }
        };
        let tx = match existing {
            Ok(tx) => tx,
            Err(mut rx) => {
                // The same request again: its outcome, not a second command.
                let outcome = rx.wait_for(Option::is_some).await.ok().and_then(|o| o.clone());
                return match outcome {
                    Some(Ok(mut v)) => {
                        v["duplicate"] = json!(true);
                        Ok(v)
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(ServiceError::new("internal", "the first request with this id was abandoned")),
                };
            }
        };
        let outcome = self.run(bus, &id, &command, params, &key).await;
        let _ = tx.send(Some(outcome.clone()));
        outcome
    }

    async fn run(&self, bus: &Bus, id: &str, command: &str, params: Map<String, Value>, key: &str) -> Outcome {
        let s = &self.state;
        let Some(device) = s.home.device(id) else {
            return Err(ServiceError::new("unknown_device", format!("{id:?} is not registered")));
        };
        if !device.reachable() {
            return Err(ServiceError::new("device_offline", format!("{id} is offline")));
        }
        let before = s.home.state(id);
        let expect = Expect::of(command, &params, before.as_ref());
        let ack_timeout = Duration::from_millis(s.settings.ack_timeout_ms);
        let attempts_max = s.settings.retries + 1;
        let total = ack_timeout * attempts_max + Duration::from_millis(s.settings.confirm_timeout_ms);
        let ttl = u32::try_from(total.as_secs() + 1).unwrap_or(u32::MAX);
        // One envelope for every attempt: the same message id, so a device (and the router's
        // dead letters) can tell a retry from a new command.
        let envelope =
            Envelope::request(bus.name(), Destination::device(id), json!({ "command": command, "parameters": params }))
                .with_ttl(ttl);
        let started = Instant::now();
        let mut attempts = 0;
        let mut acked = None;
        while attempts < attempts_max {
            attempts += 1;
            match bus.request_envelope(envelope.clone(), ack_timeout).await {
                Ok(answer) => {
                    acked = Some(answer.payload.data);
                    break;
                }
                Err(SdkError::Remote { code, message, .. }) => {
                    let outcome = json!({ "code": code, "message": message, "attempts": attempts });
                    self.record(id, command, key, "refused", &outcome).await;
                    return Err(ServiceError::new(code, message).with_errors(json!({ "attempts": attempts })));
                }
                Err(e) => tracing::debug!(device = %id, command, attempts, error = %e, "no acknowledgement"),
            }
        }
        let confirm = Duration::from_millis(s.settings.confirm_timeout_ms);
        let confirmed = s.home.wait(confirm, |v| v.states.get(id).filter(|st| expect.met(st)).cloned()).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let (status, state) = match (&acked, confirmed) {
            (_, Some(st)) => ("confirmed", Some(st)),
            (Some(_), None) => ("unconfirmed", s.home.state(id)),
            (None, None) => ("failed", s.home.state(id)),
        };
        let result = json!({
            "status": status,
            "device_id": id,
            "command": command,
            "message_id": envelope.message_id.to_string(),
            "acknowledged": acked.is_some(),
            "attempts": attempts,
            "elapsed_ms": elapsed_ms,
            "state": state,
        });
        self.record(id, command, key, status, &result).await;
        match status {
            "failed" => Err(ServiceError::new(
                "timeout",
                format!("{id} did not acknowledge {command} in {attempts} attempts, and its state did not change"),
            )
            .with_errors(result)),
            _ => Ok(result),
        }
    }

    /// Remembers the outcome, publishes it on `P/system/actuators/events`, and raises (or
    /// resolves) the `actuator_no_state_change` alert.
    async fn record(&self, id: &str, command: &str, key: &str, status: &str, outcome: &Value) {
        let s = &self.state;
        let mut ev = outcome.clone();
        ev["event"] = json!(status);
        ev["device_id"] = json!(id);
        ev["command"] = json!(command);
        ev["request_id"] = json!(key);
        ev["timestamp"] = json!(Timestamp::now().to_string());
        s.last.lock().insert(id.to_string(), ev.clone());
        s.home
            .docs
            .publish(&format!("{}/system/actuators/events", s.prefix), ev.to_string(), QoS::AtLeastOnce, false)
            .await;
        if status == "unconfirmed" {
            tracing::warn!(device = %id, command, "command acknowledged but the reported state did not change");
        }
        let alert = s.conditions.lock().set("actuator_no_state_change", id, status == "unconfirmed", |st, since| {
            alerts::alert(
                "actuator_no_state_change",
                alicia_config::Severity::Warning,
                st,
                SERVICE_NAME,
                &format!("{id} acknowledged {command} but its reported state did not change"),
                since,
                json!({ "device_id": id, "command": command, "request_id": key }),
            )
        });
        if let Some(a) = alert {
            s.home.docs.publish(&format!("{}/system/alerts", s.prefix), a.to_string(), QoS::AtLeastOnce, false).await;
        }
    }
}

/// The running service.
pub struct ActuatorHandle {
    service: ServiceHandle,
    home: Arc<Home>,
}

impl ActuatorHandle {
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    pub async fn shutdown(self) {
        self.home.close().await;
        self.service.shutdown().await;
    }
}

/// Starts `actuator_control`.
pub async fn start(cfg: ActuatorConfig) -> Result<ActuatorHandle, DeviceError> {
    let prefix = cfg.service.topic_prefix.clone();
    alicia_sdk::check_prefix(&prefix)?;
    let id = format!("{SERVICE_NAME}-{}-io", crate::random_suffix());
    let (home, _others) = Home::follow(&cfg.service, id, Vec::new(), None);
    let home = Arc::new(home);
    let state = Arc::new(State {
        home: home.clone(),
        settings: cfg.settings.clone(),
        seen: Mutex::default(),
        last: Mutex::default(),
        conditions: Mutex::default(),
        prefix,
    });
    let service = alicia_sdk::start(cfg.service.clone(), Service { state })?;
    tracing::info!("actuator control started");
    Ok(ActuatorHandle { service, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations() {
        let p = |v: Value| v.as_object().cloned().unwrap();
        let before = json!({"power": "on", "updated": "2025-01-01T00:00:00.000Z"});
        assert_eq!(Expect::of("toggle", &Map::new(), Some(&before)), Expect::Key("power".into(), json!("off")));
        let e = Expect::of("set_brightness", &p(json!({"brightness": 40})), None);
        assert!(e.met(&json!({"brightness": 40.0})));
        assert!(!e.met(&json!({"brightness": 41})));
        let e = Expect::of("play_audio", &Map::new(), Some(&before));
        assert!(!e.met(&before));
        assert!(e.met(&json!({"updated": "2025-01-01T00:00:01.000Z"})));
        assert_eq!(
            Expect::of("set_color_temp", &p(json!({"kelvin": 3000})), None),
            Expect::Key("color_temp_kelvin".into(), json!(3000))
        );
    }
}
