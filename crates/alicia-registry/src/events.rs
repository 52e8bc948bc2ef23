//! Following the registry's events from outside (`alicia devices watch`, tools).

use std::future::Future;
use std::time::Duration;

use alicia_sdk::ServiceConfig;
use rumqttc_notls::v5::mqttbytes::v5::Packet;
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::{AsyncClient, Event};
use serde_json::Value;

use crate::RegistryError;

/// What [`watch_events`] reports.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// Connected (again) and subscribed to the events topic (given).
    Subscribed(String),
    /// A registry event: `{"event", "device_id", "device", "reason", "timestamp"}`.
    Event(Value),
    /// Something on the events topic that is not JSON (its size).
    Garbage(usize),
    /// The connection dropped after having worked; it is retried every second.
    Lost(String),
}

/// Follows `<prefix>/system/registry/events` with `config`'s broker and credentials (client id
/// `<name>-watch-<random>`), calling `on_event` for each event, until `stop` completes. Fails
/// only when the very first connection attempt fails.
pub async fn watch_events(
    config: &ServiceConfig,
    mut on_event: impl FnMut(WatchEvent),
    stop: impl Future<Output = ()>,
) -> Result<(), RegistryError> {
    let topic = format!("{}/system/registry/events", config.topic_prefix);
    let name = config.name.clone().unwrap_or_else(|| "watch".into());
    let id = format!("{name}-watch-{:08x}", fastrand::u32(..));
    let options = config.plain_mqtt_options(id);
    let (client, mut events) = AsyncClient::new(options, 16);
    let mut connected = false;
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            e = events.poll() => e,
            _ = &mut stop => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                let (c, t) = (client.clone(), topic.clone());
                // Not awaited here: the request is served by this same poll loop.
                tokio::spawn(async move { c.subscribe(t, QoS::AtLeastOnce).await });
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => on_event(WatchEvent::Subscribed(topic.clone())),
            Ok(Event::Incoming(Packet::Publish(p))) => match serde_json::from_slice::<Value>(&p.payload) {
                Ok(v) => on_event(WatchEvent::Event(v)),
                Err(_) => on_event(WatchEvent::Garbage(p.payload.len())),
            },
            Ok(_) => {}
            Err(e) if !connected => {
                return Err(RegistryError::Connect(format!("{}:{}: {e}", config.host, config.port)))
            }
            Err(e) => {
                on_event(WatchEvent::Lost(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = &mut stop => break,
                }
            }
        }
    }
    // Leave cleanly: the DISCONNECT goes out through the event loop.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(e) = events.poll().await {
                if matches!(e, Event::Outgoing(rumqttc_notls::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
}
