//! A plain MQTT 5 connection for documents (retained configuration, alerts, metrics): these are
//! JSON documents, not envelopes, so they do not go through the SDK's envelope connection. It
//! uses the same broker and credentials as the service's [`ServiceConfig`], reconnects with
//! backoff, and subscribes again on every connect.

use std::time::Duration;

use alicia_sdk::ServiceConfig;
use bytes::Bytes;
use rumqttc_notls::v5::mqttbytes::v5::Packet;
use rumqttc_notls::v5::mqttbytes::QoS;
use rumqttc_notls::v5::{AsyncClient, Event};
use rumqttc_notls::Outgoing;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the connection reports.
#[derive(Debug, Clone)]
pub enum DocEvent {
    /// Connected (again) and subscriptions requested: republish retained documents now (a
    /// restarted broker without persistence lost them).
    Connected,
    /// The connection dropped (sent once per drop; reconnecting with backoff).
    Disconnected,
    /// A message on one of the filters.
    Message { topic: String, payload: Bytes, retain: bool },
}

/// The document connection. Dropping it stops the connection task.
pub struct DocClient {
    client: AsyncClient,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Subscribed again on every connect (the filters given at connect, and later ones).
    filters: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl DocClient {
    /// Connects as `client_id` to `config`'s broker, subscribing to `filters` (QoS 1) on every
    /// connect. Events arrive on the returned channel.
    pub fn connect(
        config: &ServiceConfig,
        client_id: String,
        filters: Vec<String>,
    ) -> (DocClient, mpsc::UnboundedReceiver<DocEvent>) {
        let mut options = config.plain_mqtt_options(client_id);
        options.set_max_packet_size(Some(config.max_packet_size));
        let (client, mut events) = AsyncClient::new(options, 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = client.clone();
        let (min, max) = (config.reconnect_min.max(Duration::from_millis(10)), config.reconnect_max);
        let filters = std::sync::Arc::new(std::sync::Mutex::new(filters));
        let all = filters.clone();
        let task = tokio::spawn(async move {
            let mut delay = min;
            let mut up = false;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        delay = min;
                        up = true;
                        let sub = sub.clone();
                        let filters = all.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        // Not awaited here: requests are served by this same poll loop.
                        tokio::spawn(async move {
                            for f in filters {
                                let _ = sub.subscribe(f, QoS::AtLeastOnce).await;
                            }
                        });
                        if tx.send(DocEvent::Connected).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        if tx.send(DocEvent::Message { topic, payload: p.payload, retain: p.retain }).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => {
                        if std::mem::take(&mut up) && tx.send(DocEvent::Disconnected).is_err() {
                            return;
                        }
                        tracing::debug!(error = %e, "document connection lost; retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(max);
                    }
                }
            }
        });
        (DocClient { client, task: std::sync::Mutex::new(Some(task)), filters }, rx)
    }

    /// Adds a filter (QoS 1): subscribed now and again on every connect. Returns false when it
    /// was already there.
    pub async fn subscribe(&self, filter: &str) -> bool {
        {
            let mut f = self.filters.lock().unwrap_or_else(|p| p.into_inner());
            if f.iter().any(|x| x == filter) {
                return false;
            }
            f.push(filter.to_string());
        }
        if let Err(e) = self.client.subscribe(filter, QoS::AtLeastOnce).await {
            tracing::debug!(error = %e, filter, "subscription queued for the next connect");
        }
        true
    }

    /// Publishes a document (queued while disconnected, within the client's bounded queue).
    pub async fn publish(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS, retain: bool) {
        if let Err(e) = self.client.publish(topic, qos, retain, payload.into()).await {
            tracing::debug!(error = %e, topic, "document not published");
        }
    }

    /// Publishes without waiting (dropped if the queue is full).
    pub fn try_publish(&self, topic: &str, payload: impl Into<Bytes>, qos: QoS, retain: bool) {
        let _ = self.client.try_publish(topic, qos, retain, payload.into());
    }

    /// Sends DISCONNECT after what is queued, and waits (at most 2 s) for the task to end.
    pub async fn close(&self) {
        let _ = self.client.disconnect().await;
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut t) = task {
            if tokio::time::timeout(Duration::from_secs(2), &mut t).await.is_err() {
                tracing::debug!("document connection did not close in time");
                t.abort();
            }
        }
    }
}

impl Drop for DocClient {
    fn drop(&mut self) {
        if let Some(t) = self.task.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
    }
}
