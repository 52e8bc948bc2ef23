//! Spoken responses. Home Assistant's response templates are Jinja (sets, dict literals,
//! `is defined`, filters such as `join`, `select`, `map(attribute=)`, `sort`, loops, whitespace
//! control, and Python methods: `.replace`, `.get`, `.format`). They are rendered with
//! minijinja (a well-kept Jinja implementation) and its `pycompat` methods rather than a
//! hand-written subset: the English templates already need most of Jinja.
//!
//! Two adaptations, both Home Assistant's dialect rather than Jinja's: a colon ending a block
//! tag (`{% if x: %}`, `{% else: %}`), which Python's Jinja tolerates, is dropped; and
//! `state_attr(entity_id, name)` reads the `state` given to the render.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior, Value as JValue};
use serde_json::{Map, Value};

use crate::result::{IntentMatch, Targets};

/// A response template that does not compile or render.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("response {intent}.{key}: {error}")]
    Template { intent: String, key: String, error: String },
    #[error("no response {key:?} for intent {intent} (have: {have})")]
    Missing { intent: String, key: String, have: String },
}

/// What the caller knows that the match does not: the device's state for "what is …",
/// query results for "are any lights on", timers, the time.
#[derive(Debug, Clone, Default)]
pub struct ResponseContext {
    /// Home Assistant's `state` object: `state`, `state_with_unit`, `domain`, `entity_id`,
    /// `name`, `attributes`. When absent, the first target's domain, id and name are given.
    pub state: Option<Value>,
    /// `query.matched` / `query.unmatched`: lists of `{name: ...}`.
    pub query: Option<Value>,
    /// Extra slots (`timers`, `canceled`, `time`, `date`), added to the match's.
    pub slots: Map<String, Value>,
}

pub(crate) struct Responder {
    env: Environment<'static>,
    /// intent → keys present, for error messages.
    keys: BTreeMap<String, Vec<String>>,
}

/// Drops the `:` Home Assistant writes before `%}` in `{% if x: %}` and `{% else: %}`.
fn ha_dialect(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("%}") {
        let (head, tail) = rest.split_at(i);
        let trimmed = head.trim_end();
        let trimmed = trimmed.strip_suffix('-').map(str::trim_end).unwrap_or(trimmed);
        if let Some(before) = trimmed.strip_suffix(':') {
            out.push_str(before);
            out.push_str(&head[trimmed.len()..]);
        } else {
            out.push_str(head);
        }
        out.push_str("%}");
        rest = &tail[2..];
    }
    out.push_str(rest);
    out
}

fn name(intent: &str, key: &str) -> String {
    format!("{intent}/{key}")
}

impl Responder {
    pub fn new(
        intents: &BTreeMap<String, BTreeMap<String, String>>,
        errors: &BTreeMap<String, String>,
    ) -> Result<Responder, ResponseError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // Jinja's `float` and `int` give 0 for what is not a number (minijinja's fail);
        // templates rely on it (`slots.temperature | float` with "twenty point five").
        env.add_filter("float", |v: JValue| -> f64 {
            match v.as_str() {
                Some(s) => s.trim().parse().unwrap_or(0.0),
                None => f64::try_from(v).unwrap_or(0.0),
            }
        });
        env.add_filter("int", |v: JValue| -> i64 {
            match v.as_str() {
                Some(s) => s.trim().parse::<f64>().map(|f| f as i64).unwrap_or(0),
                None => i64::try_from(v.clone()).or_else(|_| f64::try_from(v).map(|f| f as i64)).unwrap_or(0),
            }
        });
        env.add_function("state_attr", |st: &minijinja::State, _entity: JValue, attr: String| -> JValue {
            // Missing is `none`, as in Home Assistant (`... is none` tests it).
            st.lookup("state")
                .and_then(|s| s.get_attr("attributes").ok())
                .and_then(|a| a.get_attr(&attr).ok())
                .filter(|v| !v.is_undefined())
                .unwrap_or(JValue::from(()))
        });
        let mut keys = BTreeMap::new();
        let errors_name = "_errors".to_string();
        let all = intents.iter().chain(std::iter::once((&errors_name, errors)));
        for (intent, templates) in all {
            for (key, source) in templates {
                env.add_template_owned(name(intent, key), ha_dialect(source)).map_err(|e| ResponseError::Template {
                    intent: intent.clone(),
                    key: key.clone(),
                    error: e.to_string(),
                })?;
                keys.entry(intent.clone()).or_insert_with(Vec::new).push(key.clone());
            }
        }
        Ok(Responder { env, keys })
    }

    fn render(&self, intent: &str, key: &str, ctx: JValue) -> Result<String, ResponseError> {
        let t = self.env.get_template(&name(intent, key)).map_err(|_| ResponseError::Missing {
            intent: intent.to_string(),
            key: key.to_string(),
            have: self.keys.get(intent).map(|k| k.join(", ")).unwrap_or_else(|| "none".into()),
        })?;
        let text = t.render(ctx).map_err(|e| ResponseError::Template {
            intent: intent.to_string(),
            key: key.to_string(),
            error: format!("{e:#}"),
        })?;
        Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    pub fn respond(&self, m: &IntentMatch, extra: &ResponseContext) -> Result<String, ResponseError> {
        let mut slots = Map::new();
        for (k, s) in &m.slots {
            // As Home Assistant: a number as it was said ("one", "half", "25"), the name of an
            // area or device, otherwise the value (`curtain` for "curtains").
            let v = match (&s.display, &s.value) {
                (Some(d), _) => Value::from(d.clone()),
                (None, Value::Number(_)) if !s.text.is_empty() => Value::from(s.text.clone()),
                (None, v) => v.clone(),
            };
            slots.insert(k.clone(), v);
        }
        for (k, c) in &m.captures {
            slots.insert(k.clone(), Value::from(c.clone()));
        }
        slots.extend(extra.slots.clone());
        let first = match &m.targets {
            Targets::Devices { devices } => devices.first(),
            _ => None,
        };
        let mut state = Map::new();
        state.insert("state".into(), Value::from(""));
        state.insert("state_with_unit".into(), Value::from(""));
        state.insert("attributes".into(), Value::Object(Map::new()));
        if let Some(t) = first {
            state.insert("entity_id".into(), Value::from(t.device_id.clone()));
            state.insert("domain".into(), Value::from(t.domain.clone()));
            state.insert("name".into(), Value::from(t.name.clone()));
        }
        if let Some(Value::Object(given)) = &extra.state {
            state.extend(given.clone());
        }
        let mut ctx = Map::new();
        ctx.insert("slots".into(), Value::Object(slots));
        ctx.insert("state".into(), Value::Object(state));
        if let Some(q) = &extra.query {
            ctx.insert("query".into(), q.clone());
        }
        self.render(&m.intent, &m.response, JValue::from_serialize(&ctx))
    }

    pub fn error(&self, key: &str, args: &Map<String, Value>) -> Result<String, ResponseError> {
        self.render("_errors", key, JValue::from_serialize(args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colons_before_block_ends_are_dropped() {
        assert_eq!(ha_dialect("{% if x == 1: %}a{% else: %}b{% endif %}"), "{% if x == 1 %}a{% else %}b{% endif %}");
        assert_eq!(ha_dialect("{% if x: -%}a{%- endif %}"), "{% if x -%}a{%- endif %}");
        assert_eq!(ha_dialect("{% set d = {'a': 'b'} %}{{ d.a }}"), "{% set d = {'a': 'b'} %}{{ d.a }}");
    }
}
