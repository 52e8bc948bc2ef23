//! `sensor_data`: telemetry checked against the sender's registered capabilities, the latest
//! value per sensor kept retained, thresholds from the configuration raised as alerts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alicia_config::ThresholdRule;
use alicia_envelope::{Envelope, Timestamp};
use alicia_sdk::{Bus, BusService, Context, HandlerResult, QoS, Refusal, ServiceConfig, ServiceError, ServiceHandle};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::alerts::{self, Conditions};
use crate::home::{Device, Home, Other};
use crate::DeviceError;

/// The service's name on the bus.
pub const SERVICE_NAME: &str = "sensor_data";

/// How to run it.
#[derive(Debug, Clone)]
pub struct SensorConfig {
    pub service: ServiceConfig,
    pub settings: alicia_config::SensorDataConfig,
}

impl SensorConfig {
    pub fn new(service: ServiceConfig) -> Self {
        SensorConfig { service, settings: alicia_config::SensorDataConfig::default() }
    }
}

/// One accepted reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub capability: String,
    pub value: Value,
    pub unit: Option<String>,
    pub timestamp: String,
}

/// A reading problem: which one, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub field: String,
    pub reason: String,
}

fn problem(field: impl Into<String>, reason: impl Into<String>) -> Problem {
    Problem { field: field.into(), reason: reason.into() }
}

/// Checks one telemetry document from `device` (sent on `topic_device`'s own topic when
/// given) against its registration: capability registered, unit the registered one, value a
/// number within `min..=max` (or a boolean). Returns the accepted readings and the problems.
pub fn check(device: &Device, doc: &Value, topic_device: Option<&str>) -> (Vec<Reading>, Vec<Problem>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    if let (Some(t), Some(d)) = (topic_device, doc.get("device_id").and_then(Value::as_str)) {
        if t != d {
            bad.push(problem("device_id", format!("{d:?} on the telemetry topic of {t:?}")));
            return (ok, bad);
        }
    }
    let default_ts = match doc.get("timestamp").and_then(Value::as_str) {
        Some(t) if t.parse::<Timestamp>().is_ok() => t.to_string(),
        Some(t) => {
            bad.push(problem("timestamp", format!("{t:?} is not an RFC 3339 time")));
            Timestamp::now().to_string()
        }
        None => Timestamp::now().to_string(),
    };
    let Some(readings) = doc.get("readings").and_then(Value::as_array) else {
        bad.push(problem("readings", "missing (an array of {capability, value, unit})"));
        return (ok, bad);
    };
    for (i, r) in readings.iter().enumerate() {
        let field = |k: &str| format!("readings[{i}].{k}");
        let Some(cap_name) = r.get("capability").and_then(Value::as_str) else {
            bad.push(problem(field("capability"), "missing"));
            continue;
        };
        let Some(cap) = device.capability(cap_name) else {
            let known: Vec<&str> = device.capabilities.iter().map(|c| c.name.as_str()).collect();
            bad.push(problem(
                field("capability"),
                format!("{cap_name:?} is not a capability of {} ({})", device.device_id, known.join(", ")),
            ));
            continue;
        };
        let registered_unit = cap.parameters.get("unit").and_then(Value::as_str);
        let unit = r.get("unit").and_then(Value::as_str);
        if let (Some(u), Some(reg)) = (unit, registered_unit) {
            if u != reg {
                bad.push(problem(field("unit"), format!("{u:?}, but {cap_name} is registered in {reg:?}")));
                continue;
            }
        }
        let value = match r.get("value") {
            Some(Value::Bool(b)) => json!(b),
            Some(v @ Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let (min, max) = (cap.number("min"), cap.number("max"));
                if min.is_some_and(|m| f < m) || max.is_some_and(|m| f > m) {
                    bad.push(problem(
                        field("value"),
                        format!(
                            "{f} is outside the registered range {}..={}",
                            min.map_or("-inf".into(), |m| m.to_string()),
                            max.map_or("inf".into(), |m| m.to_string())
                        ),
                    ));
                    continue;
                }
                v.clone()
            }
            Some(other) => {
                bad.push(problem(field("value"), format!("must be a number or a boolean, found {other}")));
                continue;
            }
            None => {
                bad.push(problem(field("value"), "missing"));
                continue;
            }
        };
        let timestamp = match r.get("timestamp").and_then(Value::as_str) {
            Some(t) if t.parse::<Timestamp>().is_ok() => t.to_string(),
            _ => default_ts.clone(),
        };
        ok.push(Reading {
            capability: cap_name.to_string(),
            value,
            unit: unit.or(registered_unit).map(str::to_string),
            timestamp,
        });
    }
    (ok, bad)
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    alerts: AtomicU64,
}

struct State {
    /// Latest readings per device: capability → {value, unit, timestamp, device_class}.
    latest: Mutex<HashMap<String, Map<String, Value>>>,
    conditions: Mutex<Conditions>,
    rules: Vec<ThresholdRule>,
    counters: Counters,
    prefix: String,
}

struct Service {
    state: Arc<State>,
}

impl BusService for Service {
    fn name(&self) -> &str {
        SERVICE_NAME
    }

    async fn handle(&self, _ctx: &Context, env: Envelope) -> HandlerResult {
        let data = &env.payload.data;
        match data.get("action").and_then(Value::as_str) {
            Some("latest") => {
                let latest = self.state.latest.lock();
                match data.get("device_id").and_then(Value::as_str) {
                    Some(id) => match latest.get(id) {
                        Some(r) => Ok(Some(json!({ "device_id": id, "readings": r }))),
                        None => Err(ServiceError::new("not_found", format!("no readings from {id:?}")).into()),
                    },
                    None => Ok(Some(json!({ "sensors": *latest }))),
                }
            }
            Some("thresholds") => {
                let rules = serde_json::to_value(&self.state.rules).unwrap_or_default();
                Ok(Some(json!({ "thresholds": rules })))
            }
            other => Err(ServiceError::new(
                "unknown_action",
                format!("action {other:?}: this service answers `latest` (optional device_id) and `thresholds`"),
            )
            .into()),
        }
    }
}

/// The running service.
pub struct SensorHandle {
    service: ServiceHandle,
    home: Arc<Home>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SensorHandle {
    pub fn bus(&self) -> &Bus {
        self.service.bus()
    }

    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.home.close().await;
        self.service.shutdown().await;
    }
}

/// Starts `sensor_data`.
pub async fn start(cfg: SensorConfig) -> Result<SensorHandle, DeviceError> {
    let prefix = cfg.service.topic_prefix.clone();
    let state = Arc::new(State {
        latest: Mutex::default(),
        conditions: Mutex::default(),
        rules: cfg.settings.thresholds.clone(),
        counters: Counters::default(),
        prefix: prefix.clone(),
    });
    let service = alicia_sdk::start(cfg.service.clone(), Service { state: state.clone() })?;
    let instance = service.bus().instance().to_string();
    let filters = vec![format!("{prefix}/devices/+/telemetry"), format!("{prefix}/devices/sensors/telemetry")];
    let (home, mut others) = Home::follow(&cfg.service, format!("{SERVICE_NAME}-{instance}-io"), filters, None);
    let home = Arc::new(home);
    let mut tasks = Vec::new();
    {
        let (home, state, bus) = (home.clone(), state.clone(), service.bus().clone());
        tasks.push(tokio::spawn(async move {
            while let Some(m) = others.recv().await {
                telemetry(&home, &state, &bus, m).await;
            }
        }));
    }
    {
        let (home, state) = (home.clone(), state.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            loop {
                tick.tick().await;
                let snapshot = metrics(&state, &instance);
                home.docs
                    .publish(
                        &format!("{}/system/metrics/{SERVICE_NAME}", state.prefix),
                        snapshot.to_string(),
                        QoS::AtMostOnce,
                        true,
                    )
                    .await;
            }
        }));
    }
    tracing::info!(thresholds = cfg.settings.thresholds.len(), "sensor data service started");
    Ok(SensorHandle { service, home, tasks })
}

fn metrics(state: &State, instance: &str) -> Value {
    let c = &state.counters;
    json!({
        "service": SERVICE_NAME, "instance": instance, "timestamp": Timestamp::now().to_string(),
        "metrics": [
            {"name": "alicia_sensor_readings_total", "type": "counter", "help": "Telemetry readings by result.",
             "samples": [{"labels": {"result": "accepted"}, "value": c.accepted.load(Ordering::Relaxed)},
                         {"labels": {"result": "rejected"}, "value": c.rejected.load(Ordering::Relaxed)}]},
            {"name": "alicia_sensor_alerts_total", "type": "counter", "help": "Threshold alerts fired.",
             "samples": [{"labels": {}, "value": c.alerts.load(Ordering::Relaxed)}]},
            {"name": "alicia_sensor_sensors", "type": "gauge", "help": "Sensors with a latest reading.",
             "samples": [{"labels": {}, "value": state.latest.lock().len()}]},
        ]
    })
}

/// The device id of `P/devices/ID/telemetry` (`None` for the shared `P/devices/sensors/telemetry`).
fn topic_device<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    let id = topic.strip_prefix(prefix)?.strip_prefix("/devices/")?.strip_suffix("/telemetry")?;
    (id != "sensors" && !id.contains('/')).then_some(id)
}

async fn telemetry(home: &Home, state: &State, bus: &Bus, m: Other) {
    let (topic, payload) = (m.topic.as_str(), &m.payload[..]);
    let reject = |reason: String| async move {
        state.counters.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%topic, %reason, "telemetry refused");
        let _ = bus.dead_letter(Refusal::new("invalid_telemetry", reason), topic, payload).await;
    };
    let mut doc: Value = match serde_json::from_slice(&m.payload) {
        Ok(v) => v,
        Err(e) => return reject(format!("telemetry is not JSON: {e}")).await,
    };
    // The shared topic may carry envelopes (the design document's style): read their data.
    if doc.get("message_id").is_some() && doc.get("payload").is_some() {
        match Envelope::from_value(doc) {
            Ok(env) => doc = env.payload.data,
            Err(e) => return reject(format!("telemetry envelope refused: {e}")).await,
        }
    }
    let on_topic = topic_device(&state.prefix, &m.topic);
    let Some(id) = on_topic.or_else(|| doc.get("device_id").and_then(Value::as_str)).map(str::to_string) else {
        return reject("telemetry on the shared topic names no device_id".into()).await;
    };
    let Some(device) = home.device(&id) else {
        return reject(format!("telemetry from {id:?}, which is not registered")).await;
    };
    let (readings, problems) = check(&device, &doc, on_topic);
    if !problems.is_empty() {
        let all: Vec<String> = problems.iter().map(|p| format!("`{}`: {}", p.field, p.reason)).collect();
        state.counters.rejected.fetch_add(problems.len() as u64, Ordering::Relaxed);
        let refusal = Refusal::new("invalid_telemetry", format!("invalid telemetry from {id}: {}", all.join("; ")));
        let _ = bus.dead_letter(refusal, &m.topic, &m.payload).await;
    }
    if readings.is_empty() {
        return;
    }
    state.counters.accepted.fetch_add(readings.len() as u64, Ordering::Relaxed);
    let doc = {
        let mut latest = state.latest.lock();
        let entry = latest.entry(id.clone()).or_default();
        for r in &readings {
            let class = device.capability(&r.capability).and_then(|c| c.parameters.get("device_class").cloned());
            entry.insert(
                r.capability.clone(),
                json!({ "value": r.value, "unit": r.unit, "timestamp": r.timestamp, "device_class": class }),
            );
        }
        json!({
            "device_id": id, "location": device.location, "updated": Timestamp::now().to_string(),
            "readings": entry.clone(),
        })
    };
    home.docs.publish(&latest_topic(&state.prefix, &id), doc.to_string(), QoS::AtLeastOnce, true).await;
    for r in &readings {
        let Some(v) = r.value.as_f64() else { continue };
        for rule in state.rules.iter().filter(|rule| applies(rule, &device, &r.capability)) {
            let subject = format!("{id}/{}", r.capability);
            let alert = {
                let mut c = state.conditions.lock();
                let active = alerts::crossed(rule, v, c.is_firing(&rule.name, &subject));
                c.set(&rule.name, &subject, active, |st, since| {
                    let message = rule.message.clone().unwrap_or_else(|| describe(rule, &device, r, v));
                    alerts::alert(
                        &rule.name,
                        rule.severity,
                        st,
                        SERVICE_NAME,
                        &message,
                        since,
                        json!({
                            "device_id": id, "location": device.location, "capability": r.capability,
                            "value": v, "unit": r.unit, "above": rule.above, "below": rule.below,
                        }),
                    )
                })
            };
            if let Some(a) = alert {
                if a["state"] == "firing" {
                    state.counters.alerts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(alert = %rule.name, device = %id, value = v, "threshold crossed");
                }
                home.docs
                    .publish(&format!("{}/system/alerts", state.prefix), a.to_string(), QoS::AtLeastOnce, false)
                    .await;
            }
        }
    }
}

fn describe(rule: &ThresholdRule, device: &Device, r: &Reading, v: f64) -> String {
    let unit = r.unit.clone().unwrap_or_default();
    let limit = match (rule.above, rule.below) {
        (Some(a), _) if v > a => format!("above {a}{unit}"),
        (_, Some(b)) if v < b => format!("below {b}{unit}"),
        (Some(a), Some(b)) => format!("within {b}..{a}{unit}"),
        (Some(a), None) => format!("back under {a}{unit}"),
        (None, Some(b)) => format!("back over {b}{unit}"),
        (None, None) => String::new(),
    };
    format!("{} {} is {v}{unit}: {limit}", device.name, r.capability)
}

fn applies(rule: &ThresholdRule, device: &Device, capability: &str) -> bool {
    rule.capability == capability
        && rule.device_id.as_deref().is_none_or(|d| d == device.device_id)
        && rule.location.as_deref().is_none_or(|l| device.location.as_deref() == Some(l))
}

/// Where the latest readings of a sensor are retained: `P/sensors/<id>`.
pub fn latest_topic(prefix: &str, device_id: &str) -> String {
    format!("{prefix}/sensors/{device_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor() -> Device {
        Device::from_json(&json!({
            "device_id": "t1", "status": "online",
            "capabilities": [
                {"name": "temperature", "parameters": {"unit": "°C", "min": -40, "max": 85}},
                {"name": "motion", "parameters": {}}]
        }))
        .unwrap()
    }

    #[test]
    fn readings_are_checked_against_the_registration() {
        let doc = json!({"device_id": "t1", "timestamp": "2025-01-08T14:30:00Z", "readings": [
            {"capability": "temperature", "value": 21.5, "unit": "°C"},
            {"capability": "temperature", "value": 120, "unit": "°C"},
            {"capability": "temperature", "value": 20, "unit": "°F"},
            {"capability": "humidity", "value": 40},
            {"capability": "motion", "value": true},
            {"capability": "temperature", "value": "warm"}]});
        let (ok, bad) = check(&sensor(), &doc, Some("t1"));
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].unit.as_deref(), Some("°C"));
        assert_eq!(ok[0].timestamp, "2025-01-08T14:30:00Z");
        let fields: Vec<&str> = bad.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["readings[1].value", "readings[2].unit", "readings[3].capability", "readings[5].value"]);
        assert!(bad[0].reason.contains("-40..=85"), "{}", bad[0].reason);
        let (ok, bad) = check(&sensor(), &json!({"device_id": "t2", "readings": []}), Some("t1"));
        assert!(ok.is_empty() && bad[0].field == "device_id");
        assert_eq!(topic_device("alicia", "alicia/devices/t1/telemetry"), Some("t1"));
        assert_eq!(topic_device("alicia", "alicia/devices/sensors/telemetry"), None);
    }
}
