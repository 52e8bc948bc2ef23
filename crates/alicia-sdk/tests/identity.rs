//! Who sent what: with `trust_broker_identity`, the broker's `alicia-user`/`alicia-auth` user
//! properties tell a handler who published, a device may send only as itself, and every
//! refusal a device caused is answered on its errors topic with every problem.
//!
//! Alicia's broker sets those properties itself (`identity_properties`); here a test client
//! sets them by hand, as such a broker would, so the SDK's side is checked on any broker that
//! passes user properties through (both do).

mod common;

use std::sync::Arc;

use alicia_envelope::{Destination, Envelope};
use alicia_sdk::{AuthMethod, BusService, Context, HandlerResult, Sender};
use common::*;
use parking_lot::Mutex;
use rumqttc_notls::v5::mqttbytes::v5::PublishProperties;
use serde_json::json;

/// Remembers who each message came from.
#[derive(Clone, Default)]
struct Who(Arc<Mutex<Vec<Option<Sender>>>>);

impl BusService for Who {
    fn name(&self) -> &str {
        "who"
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        self.0.lock().push(ctx.sender().cloned());
        if envelope.payload.data.get("fail").is_some() {
            return Err(alicia_sdk::ServiceError::new("refused", "asked to fail").into());
        }
        Ok(None)
    }
}

fn stamped(user: &str, auth: &str) -> PublishProperties {
    PublishProperties {
        user_properties: vec![("alicia-user".into(), user.into()), ("alicia-auth".into(), auth.into())],
        ..PublishProperties::default()
    }
}

async fn identity(addr: std::net::SocketAddr) {
    let who = Who::default();
    let mut cfg = config(addr);
    cfg.trust_broker_identity = true;
    let svc = alicia_sdk::start(cfg, who.clone()).unwrap();
    svc.wait_online(WAIT).await.unwrap();
    let mut watch = Observer::start(addr, &["alicia/devices/+/errors", "alicia/system/deadletter"]).await;
    let inbox = "alicia/services/who/inbox";

    // A device speaking as itself: the handler learns who it is.
    let own = Envelope::event("sonos_kitchen_001", Destination::service("who"), json!({}));
    watch.publish_with(inbox, own.to_vec(), stamped("sonos_kitchen_001", "certificate")).await;
    // A service acting under any name.
    let svc_msg = Envelope::event("bridge", Destination::service("who"), json!({}));
    watch.publish_with(inbox, svc_msg.to_vec(), stamped("zigbee_bridge", "password")).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while who.0.lock().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "handled in time");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let seen = who.0.lock().clone();
    assert!(seen.contains(&Some(Sender { user: Some("sonos_kitchen_001".into()), auth: AuthMethod::Certificate })));
    assert!(seen.contains(&Some(Sender { user: Some("zigbee_bridge".into()), auth: AuthMethod::Password })));

    // A device claiming to be another: refused before the handler, dead-lettered, and told.
    let lie = Envelope::event("device_id:front_door_lock", Destination::service("who"), json!({"unlock": true}));
    watch.publish_with(inbox, lie.to_vec(), stamped("sonos_kitchen_001", "token")).await;
    let letter = watch.next_on("alicia/system/deadletter").await;
    assert!(String::from_utf8_lossy(&letter.payload).contains("a device speaks only as itself"));
    let p = watch.next_on("alicia/devices/sonos_kitchen_001/errors").await;
    let answer = Envelope::parse(&p.payload).unwrap();
    assert_eq!(answer.reply_error().unwrap().code, "forbidden");
    assert_eq!(answer.correlation_id.as_ref(), Some(&lie.message_id));
    assert_eq!(who.0.lock().len(), 2, "the handler never saw it");

    // Not an envelope at all, from a device: every problem, on its errors topic.
    let broken = json!({"message_id": "", "source": "sonos_kitchen_001", "message_type": "shout"}).to_string();
    watch.publish_with(inbox, broken, stamped("sonos_kitchen_001", "certificate")).await;
    let p = watch.next_on("alicia/devices/sonos_kitchen_001/errors").await;
    let answer = Envelope::parse(&p.payload).unwrap();
    assert_eq!(answer.reply_error().unwrap().code, "invalid_envelope");
    let fields: Vec<&str> =
        answer.payload.data["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["message_id", "timestamp", "destination", "message_type", "payload"]);

    // A device's event the handler refuses: answered on its errors topic too.
    let fail = Envelope::event("sonos_kitchen_001", Destination::service("who"), json!({"fail": true}));
    watch.publish_with(inbox, fail.to_vec(), stamped("sonos_kitchen_001", "certificate")).await;
    let p = watch.next_on("alicia/devices/sonos_kitchen_001/errors").await;
    let answer = Envelope::parse(&p.payload).unwrap();
    assert_eq!(
        (answer.reply_error().unwrap().code.as_str(), answer.correlation_id.as_ref()),
        ("refused", Some(&fail.message_id))
    );
    svc.shutdown().await;

    // Without trust the properties mean nothing: anyone could have set them.
    let who = Who::default();
    let svc = alicia_sdk::start(config(addr), who.clone()).unwrap();
    svc.wait_online(WAIT).await.unwrap();
    watch.publish_with(inbox, lie.to_vec(), stamped("sonos_kitchen_001", "token")).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while who.0.lock().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "handled in time");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(who.0.lock()[0], None);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_speak_only_as_themselves_and_hear_why_over_alicia() {
    let (_broker, addr) = alicia_broker().await;
    identity(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_speak_only_as_themselves_and_hear_why_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    identity(mosquitto.addr).await;
}
