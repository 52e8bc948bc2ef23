//! Alerts in the monitor's format (see `alicia_monitor`'s crate documentation), published on
//! `P/system/alerts` when they fire and when they resolve:
//! `{"alert", "severity", "state": "firing"|"resolved", "service", "message", "since", "context"}`.
//! One condition per (alert, subject): while it fires nothing more is published.

use std::collections::HashMap;

use alicia_config::{Severity, ThresholdRule};
use alicia_envelope::Timestamp;
use serde_json::{json, Value};

/// One alert document.
pub fn alert(
    name: &str,
    severity: Severity,
    state: &str,
    service: &str,
    message: &str,
    since: &str,
    context: Value,
) -> Value {
    json!({
        "alert": name,
        "severity": severity.as_str(),
        "state": state,
        "service": service,
        "message": message,
        "since": since,
        "context": context,
    })
}

/// The firing conditions, by (alert, subject), with when they started.
#[derive(Debug, Default)]
pub struct Conditions {
    firing: HashMap<(String, String), String>,
}

impl Conditions {
    /// Reports whether the condition holds; returns the alert to publish when it starts or
    /// ends. `make(state, since)` builds the document.
    pub fn set(
        &mut self,
        name: &str,
        subject: &str,
        active: bool,
        make: impl Fn(&str, &str) -> Value,
    ) -> Option<Value> {
        let key = (name.to_string(), subject.to_string());
        match (active, self.firing.contains_key(&key)) {
            (true, false) => {
                let since = Timestamp::now().to_string();
                let a = make("firing", &since);
                self.firing.insert(key, since);
                Some(a)
            }
            (false, true) => {
                let since = self.firing.remove(&key).unwrap_or_default();
                Some(make("resolved", &since))
            }
            _ => None,
        }
    }

    pub fn is_firing(&self, name: &str, subject: &str) -> bool {
        self.firing.contains_key(&(name.to_string(), subject.to_string()))
    }
}

/// Whether `value` is past the rule's limit, counting the hysteresis when the alert already
/// fires (it resolves only once the value is back inside by that much).
pub fn crossed(rule: &ThresholdRule, value: f64, firing: bool) -> bool {
    let h = if firing { rule.hysteresis } else { 0.0 };
    rule.above.is_some_and(|a| value > a - h) || rule.below.is_some_and(|b| value < b + h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> ThresholdRule {
        serde_json::from_value(json!({"name": "hot", "capability": "temperature", "above": 30.0, "hysteresis": 1.0}))
            .unwrap()
    }

    #[test]
    fn fires_once_and_resolves_past_the_hysteresis() {
        let r = rule();
        let mut c = Conditions::default();
        let doc = |s: &str, since: &str| alert("hot", Severity::Warning, s, "sensor_data", "m", since, json!({}));
        let mut states = vec![];
        for v in [29.0, 31.0, 32.0, 29.5, 28.9, 31.0] {
            let active = crossed(&r, v, c.is_firing("hot", "t1"));
            if let Some(a) = c.set("hot", "t1", active, doc) {
                states.push((v, a["state"].as_str().unwrap().to_string()));
            }
        }
        assert_eq!(
            states,
            [(31.0, "firing".to_string()), (28.9, "resolved".to_string()), (31.0, "firing".to_string())]
        );
    }
}
