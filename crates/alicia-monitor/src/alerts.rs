//! Alert state: one entry per condition (alert name + subject), with flap damping.
//!
//! A *held* condition (a missing service, a resource over its threshold) fires only after it
//! has been true for `fire_after`, and resolves only after it has been false for
//! `resolve_after`; a condition that flaps faster than that never fires, or never resolves, so
//! it produces no alert storm. An *event* condition (a log line matching a rule, the container
//! engine being unreachable) fires at its first occurrence and resolves after `window` without
//! one; repeats while firing only increase its `count` (dedup: one firing per condition).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use alicia_config::Severity;
use serde_json::{json, Value};

/// What an alert is about.
#[derive(Debug, Clone)]
pub struct AlertSpec {
    pub alert: String,
    pub severity: Severity,
    pub service: String,
    pub message: String,
    pub context: Value,
}

#[derive(Debug)]
struct Condition {
    spec: AlertSpec,
    firing: bool,
    since: String,
    pending_since: Option<Instant>,
    clear_since: Option<Instant>,
    last_event: Option<Instant>,
    window: Option<Duration>,
    count: u64,
}

impl Condition {
    fn json(&self, state: &str) -> Value {
        let mut context = self.spec.context.clone();
        if self.window.is_some() {
            if let Value::Object(m) = &mut context {
                m.insert("count".into(), json!(self.count));
            }
        }
        json!({
            "alert": self.spec.alert,
            "severity": self.spec.severity.as_str(),
            "state": state,
            "service": self.spec.service,
            "message": self.spec.message,
            "since": self.since,
            "context": context,
        })
    }
}

/// Every condition the monitor knows about, firing or pending.
#[derive(Debug)]
pub struct Alerts {
    fire_after: Duration,
    resolve_after: Duration,
    conditions: BTreeMap<(String, String), Condition>,
}

impl Alerts {
    pub fn new(fire_after: Duration, resolve_after: Duration) -> Self {
        Alerts { fire_after, resolve_after, conditions: BTreeMap::new() }
    }

    /// Changes the damping times (conditions already pending or clearing keep their start).
    pub fn set_damping(&mut self, fire_after: Duration, resolve_after: Duration) {
        self.fire_after = fire_after;
        self.resolve_after = resolve_after;
    }

    /// Reports whether a held condition is true now; returns the alerts to publish (firing or
    /// resolved), at most one.
    pub fn hold(&mut self, spec: AlertSpec, active: bool, now: Instant) -> Option<Value> {
        let key = (spec.alert.clone(), spec.service.clone());
        if !active {
            let c = self.conditions.get_mut(&key)?;
            c.pending_since = None;
            if !c.firing {
                self.conditions.remove(&key);
                return None;
            }
            let clear = *c.clear_since.get_or_insert(now);
            if now.duration_since(clear) >= self.resolve_after {
                let c = self.conditions.remove(&key).expect("present");
                return Some(c.json("resolved"));
            }
            return None;
        }
        let c = self.conditions.entry(key).or_insert_with(|| Condition {
            spec: spec.clone(),
            firing: false,
            since: crate::now_rfc3339(),
            pending_since: None,
            clear_since: None,
            last_event: None,
            window: None,
            count: 0,
        });
        c.clear_since = None;
        // The latest message and context, so the active list says what is true now.
        c.spec.message = spec.message;
        c.spec.context = spec.context;
        c.spec.severity = spec.severity;
        if c.firing {
            return None;
        }
        let pending = *c.pending_since.get_or_insert(now);
        if now.duration_since(pending) >= self.fire_after {
            c.firing = true;
            c.since = crate::now_rfc3339();
            return Some(c.json("firing"));
        }
        None
    }

    /// Reports an event condition: fires now unless already firing; resolves after `window`
    /// without another occurrence (see [`Alerts::tick`]).
    pub fn event(&mut self, spec: AlertSpec, window: Duration, now: Instant) -> Option<Value> {
        let key = (spec.alert.clone(), spec.service.clone());
        if let Some(c) = self.conditions.get_mut(&key) {
            c.last_event = Some(now);
            c.count += 1;
            return None;
        }
        let c = Condition {
            spec,
            firing: true,
            since: crate::now_rfc3339(),
            pending_since: None,
            clear_since: None,
            last_event: Some(now),
            window: Some(window),
            count: 1,
        };
        let out = c.json("firing");
        self.conditions.insert(key, c);
        Some(out)
    }

    /// Ends an event condition now (the thing it reported is over).
    pub fn clear(&mut self, alert: &str, service: &str) -> Option<Value> {
        let c = self.conditions.remove(&(alert.to_string(), service.to_string()))?;
        c.firing.then(|| c.json("resolved"))
    }

    /// Resolves event conditions whose window passed without an occurrence.
    pub fn tick(&mut self, now: Instant) -> Vec<Value> {
        let expired: Vec<_> = self
            .conditions
            .iter()
            .filter(|(_, c)| matches!((c.window, c.last_event), (Some(w), Some(t)) if now.duration_since(t) >= w))
            .map(|(k, _)| k.clone())
            .collect();
        expired.into_iter().filter_map(|k| self.conditions.remove(&k)).map(|c| c.json("resolved")).collect()
    }

    /// The firing alerts.
    pub fn active(&self) -> Vec<Value> {
        self.conditions.values().filter(|c| c.firing).map(|c| c.json("firing")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AlertSpec {
        AlertSpec {
            alert: "service_missing".into(),
            severity: Severity::Critical,
            service: "x".into(),
            message: "m".into(),
            context: json!({}),
        }
    }

    #[test]
    fn held_conditions_are_damped_and_deduplicated() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut a = Alerts::new(2 * s, 2 * s);
        assert!(a.hold(spec(), true, t0).is_none());
        assert!(a.hold(spec(), true, t0 + s).is_none(), "not held long enough");
        assert!(a.hold(spec(), false, t0 + s).is_none(), "flap: forgotten, never fired");
        assert!(a.hold(spec(), true, t0 + 2 * s).is_none());
        let fired = a.hold(spec(), true, t0 + 4 * s).expect("fires after 2 s");
        assert_eq!(fired["state"], "firing");
        assert!(a.hold(spec(), true, t0 + 5 * s).is_none(), "one firing per condition");
        assert_eq!(a.active().len(), 1);
        assert!(a.hold(spec(), false, t0 + 6 * s).is_none());
        assert!(a.hold(spec(), true, t0 + 7 * s).is_none(), "came back before resolving: still firing, no repeat");
        assert!(a.hold(spec(), false, t0 + 8 * s).is_none());
        let resolved = a.hold(spec(), false, t0 + 10 * s).expect("resolves after 2 s clear");
        assert_eq!(resolved["state"], "resolved");
        assert!(a.active().is_empty());
    }

    #[test]
    fn events_fire_once_and_expire() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut a = Alerts::new(s, s);
        assert_eq!(a.event(spec(), 5 * s, t0).unwrap()["state"], "firing");
        assert!(a.event(spec(), 5 * s, t0 + s).is_none());
        assert_eq!(a.active()[0]["context"]["count"], 2);
        assert!(a.tick(t0 + 5 * s).is_empty(), "window runs from the last occurrence");
        let r = a.tick(t0 + 6 * s);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["state"], "resolved");
    }
}
