//! The router's plain MQTT connection, next to the SDK's: the registry's inventory and events
//! in (documents, not envelopes), forwarded envelopes and metrics out.
//!
//! Why a second connection: the SDK's connection handles envelopes and dead-letters anything
//! else, and it re-seals what it publishes, while the router must pass envelopes on exactly as
//! their sender protected them (the signature is the sender's, over everything but `routing`),
//! with the sender's MQTT 5 response topic and correlation data. It also keeps forwarding off
//! the connection that reads the inbox, so the two directions do not queue behind each other.

use std::sync::Arc;
use std::time::Duration;

use alicia_sdk::ServiceConfig;
use rumqttc_notls::v5::mqttbytes::v5::{ConnectProperties, Filter, Packet};
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::{AsyncClient, Event, EventLoop};
use rumqttc_notls::Outgoing;
use tokio::sync::watch;
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

/// Connects (client id `client_id`, the service's credentials) and keeps the connection up:
/// reconnects with backoff and subscribes to the registry's topics on every connect.
pub(crate) fn connect(
    config: &ServiceConfig,
    client_id: String,
    shared: Arc<Shared>,
    topics: IoTopics,
    stop: watch::Receiver<bool>,
) -> (AsyncClient, JoinHandle<()>) {
    let mut options = config.plain_mqtt_options(client_id);
    options.set_request_channel_capacity(CHANNEL_CAPACITY);
    let mut props = ConnectProperties::new();
    props.max_packet_size = Some(config.max_packet_size);
    options.set_connect_properties(props);
    let (client, events) = AsyncClient::new(options, CHANNEL_CAPACITY);
    let backoff = (config.reconnect_min, config.reconnect_max);
    let task = tokio::spawn(drive(client.clone(), events, shared, topics, stop, backoff));
    (client, task)
}

async fn drive(
    client: AsyncClient,
    mut events: EventLoop,
    shared: Arc<Shared>,
    topics: IoTopics,
    mut stop: watch::Receiver<bool>,
    (min, max): (Duration, Duration),
) {
    let filters = vec![
        Filter::new(topics.inventory.clone(), QoS::AtLeastOnce),
        Filter::new(topics.events.clone(), QoS::AtLeastOnce),
    ];
    let mut delay = min;
    loop {
        let event = events.poll().await;
        let stopping = *stop.borrow();
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                delay = min;
                if client.try_subscribe_many(filters.clone()).is_err() {
                    // The channel is full of forwards queued while offline: wait in a task
                    // (this task drains the channel, so it must not wait itself).
                    let (c, f) = (client.clone(), filters.clone());
                    tokio::spawn(async move { c.subscribe_many(f).await });
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                shared.io_online.send_replace(true);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic);
                shared.apply(&topic, &p.payload, &topics.inventory);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stopping => break,
            Ok(_) => {}
            Err(_) if stopping => break,
            Err(e) => {
                let was = shared.io_online.send_replace(false);
                if was {
                    tracing::warn!(error = %e, "router: forwarding connection lost; reconnecting");
                } else {
                    tracing::debug!(error = %e, retry_in = ?delay, "router: cannot connect the forwarding connection");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => break,
                }
                delay = (delay * 2).min(max);
            }
        }
    }
    shared.io_online.send_replace(false);
}
