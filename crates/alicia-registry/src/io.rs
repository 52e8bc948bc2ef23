//! The registry's plain MQTT side: device status topics (wills) in, and the retained
//! inventory, events and metrics out. These are not envelopes (a will is the text `offline`;
//! the inventory is a document like Zigbee2MQTT's `bridge/devices`), so they use a second MQTT
//! connection next to the SDK's, with the same credentials.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use alicia_sdk::{Filter, Link, LinkEvent, LinkOptions, QoS, ServiceConfig};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::model::{rfc3339, Status};
use crate::registry::{Out, Registry};

/// Topic names of the registry (all under the prefix).
#[derive(Clone, Debug)]
pub(crate) struct RegistryTopics {
    pub devices_status: String,
    pub inventory: String,
    pub events: String,
    pub metrics: String,
}

impl RegistryTopics {
    pub fn new(prefix: &str, service: &str) -> Self {
        RegistryTopics {
            devices_status: format!("{prefix}/devices/+/status"),
            inventory: format!("{prefix}/system/registry/devices"),
            events: format!("{prefix}/system/registry/events"),
            metrics: format!("{prefix}/system/metrics/{service}"),
        }
    }
}

/// Who publishes the metrics: the service name and this instance's id.
pub(crate) struct Identity {
    pub service: String,
    pub instance: String,
}

/// `online` / `offline` as plain text, or JSON `{"status": "online" | "offline"}`; anything
/// else (a device's own status document, an emptied retained message) says nothing.
pub(crate) fn parse_status(payload: &[u8]) -> Option<Status> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let word = match text {
        "online" | "offline" => text.to_string(),
        _ => serde_json::from_str::<Value>(text).ok()?.get("status")?.as_str()?.to_string(),
    };
    match word.as_str() {
        "online" => Some(Status::Online),
        "offline" => Some(Status::Offline),
        _ => None,
    }
}

/// Connects the second client (client id `<service>-<instance>-io`), subscribed on every
/// connect to the status topics (and those added later with [`Link::subscribe`]); at every
/// (re)connect it asks for the inventory again (a restarted broker without persistence lost the
/// retained copy).
pub(crate) fn connect(
    config: &ServiceConfig,
    client_id: String,
    reg: Arc<Registry>,
    topics: RegistryTopics,
    republish: Arc<Notify>,
) -> (Link, JoinHandle<()>) {
    let mut filters = vec![topics.devices_status.clone()];
    filters.extend(reg.extra_status_topics());
    let (link, mut events) =
        Link::connect(config, LinkOptions::new(client_id, filters).with_label("device_registry/io"));
    let task = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                LinkEvent::Online => republish.notify_one(),
                LinkEvent::Offline { .. } => {}
                LinkEvent::Message(p) => {
                    let topic = String::from_utf8_lossy(&p.topic);
                    if let Some(status) = parse_status(&p.payload) {
                        if let Err(e) = reg.status_message(&topic, status) {
                            tracing::error!(error = %e, "cannot record a device status");
                        }
                    }
                }
            }
        }
    });
    (link, task)
}

/// Publishes events, then the inventory (retained) after each burst of changes, and the
/// metrics every 10 s and once more when stopping.
pub(crate) async fn publisher(
    reg: Arc<Registry>,
    client: Link,
    mut rx: mpsc::UnboundedReceiver<Out>,
    topics: RegistryTopics,
    republish: Arc<Notify>,
    who: Identity,
    mut stop: watch::Receiver<bool>,
) {
    let (service, instance) = (who.service, who.instance);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(mut out) = out else { break };
                loop {
                    match out {
                        Out::Event(e) => {
                            let _ = client.publish(topics.events.clone(), QoS::AtLeastOnce, false, e.to_string(), None).await;
                        }
                        Out::WatchStatus(t) => {
                            let _ = client.subscribe(Filter::new(t, QoS::AtLeastOnce)).await;
                        }
                    }
                    match rx.try_recv() {
                        Ok(next) => out = next,
                        Err(_) => break,
                    }
                }
                publish_inventory(&reg, &client, &topics).await;
            }
            _ = republish.notified() => publish_inventory(&reg, &client, &topics).await,
            _ = tick.tick() => publish_metrics(&reg, &client, &topics, &service, &instance).await,
            _ = stop.changed() => break,
        }
    }
    // Changes made just before stopping are still announced.
    let mut changed = false;
    while let Ok(out) = rx.try_recv() {
        if let Out::Event(e) = out {
            let _ = client.publish(topics.events.clone(), QoS::AtLeastOnce, false, e.to_string(), None).await;
            changed = true;
        }
    }
    if changed {
        publish_inventory(&reg, &client, &topics).await;
    }
    publish_metrics(&reg, &client, &topics, &service, &instance).await;
}

async fn publish_inventory(reg: &Registry, client: &Link, topics: &RegistryTopics) {
    let body = Bytes::from(reg.inventory().to_string());
    let _ = client.publish(topics.inventory.clone(), QoS::AtLeastOnce, true, body, None).await;
}

async fn publish_metrics(reg: &Registry, client: &Link, topics: &RegistryTopics, service: &str, instance: &str) {
    let body = metrics_snapshot(reg, service, instance).to_string();
    let _ = client.publish(topics.metrics.clone(), QoS::AtMostOnce, true, body, None).await;
}

/// The metrics contract's snapshot.
pub(crate) fn metrics_snapshot(reg: &Registry, service: &str, instance: &str) -> Value {
    let m = &reg.metrics;
    let v = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let (online, offline, unknown) = reg.counts();
    json!({
        "service": service,
        "instance": instance,
        "timestamp": rfc3339(SystemTime::now()),
        "metrics": [
            {"name": "alicia_registry_devices", "type": "gauge", "help": "Registered devices by status.",
             "samples": [{"labels": {"status": "online"}, "value": online},
                         {"labels": {"status": "offline"}, "value": offline},
                         {"labels": {"status": "unknown"}, "value": unknown}]},
            {"name": "alicia_registry_registrations_total", "type": "counter",
             "help": "Registrations received, by result (registered: new device; updated: known device; rejected: invalid).",
             "samples": [{"labels": {"result": "registered"}, "value": v(&m.registered)},
                         {"labels": {"result": "updated"}, "value": v(&m.updated)},
                         {"labels": {"result": "rejected"}, "value": v(&m.rejected)}]},
            {"name": "alicia_registry_heartbeats_total", "type": "counter",
             "help": "Heartbeats received, by sender (device: a registered device; unknown: an unregistered device; service: a bus service).",
             "samples": [{"labels": {"kind": "device"}, "value": v(&m.hb_device)},
                         {"labels": {"kind": "unknown"}, "value": v(&m.hb_unknown)},
                         {"labels": {"kind": "service"}, "value": v(&m.hb_service)}]},
            {"name": "alicia_registry_removals_total", "type": "counter", "help": "Devices unregistered.",
             "samples": [{"labels": {}, "value": v(&m.removed)}]},
            {"name": "alicia_registry_status_changes_total", "type": "counter",
             "help": "Devices that went offline or came back online.",
             "samples": [{"labels": {"status": "offline"}, "value": v(&m.went_offline)},
                         {"labels": {"status": "online"}, "value": v(&m.came_online)}]},
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_payloads() {
        assert_eq!(parse_status(b"offline"), Some(Status::Offline));
        assert_eq!(parse_status(b" online\n"), Some(Status::Online));
        assert_eq!(parse_status(br#"{"status":"offline","since":3}"#), Some(Status::Offline));
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(br#"{"volume":3}"#), None);
        assert_eq!(parse_status(&[0xff, 0xfe]), None);
    }
}
