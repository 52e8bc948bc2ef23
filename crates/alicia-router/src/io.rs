//! The router's plain MQTT connection, next to the SDK's: the registry's inventory and events
//! in (documents, not envelopes), forwarded envelopes and metrics out.
//!
//! Why a second connection: the SDK's connection handles envelopes and dead-letters anything
//! else, and it re-seals what it publishes, while the router must pass envelopes on exactly as
//! their sender protected them (the signature is the sender's, over everything but `routing`),
//! with the sender's MQTT 5 response topic and correlation data. It also keeps forwarding off
//! the connection that reads the inbox, so the two directions do not queue behind each other.

use std::sync::Arc;

use alicia_sdk::{Link, LinkEvent, LinkOptions, ServiceConfig};
use tokio::task::JoinHandle;

use crate::route::Shared;

/// Requests (mostly forwarded envelopes) waiting for the connection task.
const CHANNEL_CAPACITY: usize = 4096;

/// Topic names the plain connection uses.
#[derive(Clone, Debug)]
pub(crate) struct IoTopics {
    pub inventory: String,
    pub events: String,
    pub metrics: String,
}

impl IoTopics {
    pub fn new(prefix: &str, service: &str) -> Self {
        IoTopics {
            inventory: format!("{prefix}/system/registry/devices"),
            events: format!("{prefix}/system/registry/events"),
            metrics: format!("{prefix}/system/metrics/{service}"),
        }
    }
}

/// Connects (client id `client_id`, the service's credentials), subscribed to the registry's
/// topics on every connect, and applies what arrives to the inventory.
pub(crate) fn connect(
    config: &ServiceConfig,
    client_id: String,
    shared: Arc<Shared>,
    topics: IoTopics,
) -> (Link, JoinHandle<()>) {
    let opts = LinkOptions::new(client_id, [topics.inventory.clone(), topics.events.clone()])
        .with_capacity(CHANNEL_CAPACITY)
        .with_label("router/forwarding");
    let (link, mut events) = Link::connect(config, opts);
    let task = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            // Online/offline: the link's own state says it (`Link::wait_online`).
            match event {
                LinkEvent::Online | LinkEvent::Offline { .. } => {}
                LinkEvent::Message(p) => {
                    let topic = String::from_utf8_lossy(&p.topic);
                    shared.apply(&topic, &p.payload, &topics.inventory);
                }
            }
        }
    });
    (link, task)
}
