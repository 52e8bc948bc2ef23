//! The service's plain MQTT connection, next to the SDK's: documents that are not envelopes
//! in — the registry's retained inventory, devices' retained states and their telemetry.
//!
//! Why a second connection: the SDK connection handles envelopes and dead-letters anything
//! else (as for the registry and the router). It runs on the SDK's [`Link`], which connects,
//! reconnects and resubscribes.

use std::sync::Arc;

use alicia_sdk::{Filter, Link, LinkEvent, LinkOptions, QoS, ServiceConfig};
use tokio::task::JoinHandle;

use crate::home::HomeModel;
use crate::service::Shared;

/// Connects (client id `client_id`, the service's credentials), subscribed on every connect
/// (the SDK's [`Link`]), and applies what arrives.
pub(crate) fn connect(config: &ServiceConfig, client_id: String, shared: Arc<Shared>) -> (Link, JoinHandle<()>) {
    let t = shared.topics.clone();
    let mut opts =
        LinkOptions::new(client_id, [t.inventory.clone(), t.device_states.clone()]).with_label("ai_service/documents");
    opts.filters.push(Filter::new(t.telemetry.clone(), QoS::AtMostOnce));
    // A large home's inventory is one document (500 devices are about 1 MB): the service's
    // configured packet limit (16 MiB by default) applies to the link.
    let (link, mut events) = Link::connect(config, opts);
    let task = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            // Online/offline: the link's own state says it (`Link::wait_online`).
            match event {
                LinkEvent::Online | LinkEvent::Offline { .. } => {}
                LinkEvent::Message(p) => {
                    let topic = String::from_utf8_lossy(&p.topic);
                    apply(&shared, &topic, &p.payload);
                }
            }
        }
    });
    (link, task)
}

/// A document: the inventory, a device's state or its telemetry.
fn apply(shared: &Shared, topic: &str, payload: &[u8]) {
    let t = &shared.topics;
    if topic == t.inventory {
        match serde_json::from_slice(payload).map_err(|e| e.to_string()).and_then(|v| HomeModel::from_inventory(&v)) {
            Ok(model) => {
                tracing::debug!(devices = model.len(), "ai_service: inventory applied");
                shared.home.send_replace(Arc::new(model));
            }
            Err(e) if payload.is_empty() => tracing::debug!(error = %e, "ai_service: the inventory was cleared"),
            Err(e) => tracing::warn!(error = %e, "ai_service: unreadable inventory ignored"),
        }
    } else if let Some(id) = device_of(topic, &t.prefix, "state") {
        shared.states.apply_state(id, payload);
    } else if let Some(id) = device_of(topic, &t.prefix, "telemetry") {
        // The design document's shared topic names the device in the document.
        let id = (id != "sensors").then_some(id);
        shared.states.apply_telemetry(id, payload);
    }
}

/// The device id in `<prefix>/devices/<id>/<leaf>`.
fn device_of<'a>(topic: &'a str, prefix: &str, leaf: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("/devices/")?;
    let id = rest.strip_suffix(leaf)?.strip_suffix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::device_of;

    #[test]
    fn device_ids_from_topics() {
        assert_eq!(device_of("alicia/devices/lamp_1/state", "alicia", "state"), Some("lamp_1"));
        assert_eq!(device_of("alicia/devices/sensors/telemetry", "alicia", "telemetry"), Some("sensors"));
        assert_eq!(device_of("alicia/devices/a/b/state", "alicia", "state"), None);
        assert_eq!(device_of("alicia/devices//state", "alicia", "state"), None);
        assert_eq!(device_of("other/devices/x/state", "alicia", "state"), None);
    }
}
