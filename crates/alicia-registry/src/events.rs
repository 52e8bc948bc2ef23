//! Following the registry's events from outside (`alicia devices watch`, tools).

use std::future::Future;

use alicia_sdk::{Link, LinkEvent, LinkOptions, ServiceConfig};
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
    /// The connection dropped after having worked; it is retried with backoff.
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
    let (link, mut events) = Link::connect(config, LinkOptions::new(id, [topic.clone()]).with_label("registry watch"));
    tokio::pin!(stop);
    let mut connected = false;
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = &mut stop => break,
        };
        match event {
            None => break,
            Some(LinkEvent::Online) => {
                connected = true;
                on_event(WatchEvent::Subscribed(topic.clone()));
            }
            Some(LinkEvent::Message(p)) => match serde_json::from_slice::<Value>(&p.payload) {
                Ok(v) => on_event(WatchEvent::Event(v)),
                Err(_) => on_event(WatchEvent::Garbage(p.payload.len())),
            },
            Some(LinkEvent::Offline { reason, .. }) if !connected => {
                link.close().await;
                return Err(RegistryError::Connect(format!("{}: {reason}", link.broker())));
            }
            Some(LinkEvent::Offline { reason, .. }) => on_event(WatchEvent::Lost(reason)),
        }
    }
    link.close().await;
    Ok(())
}
