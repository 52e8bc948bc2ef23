//! The example service (`examples/hello_service/`) on Alicia's broker and on Mosquitto, driven
//! by a plain MQTT 5 client over a socket, as a device or another program would: a request
//! gets its answer, a bad request a typed error, a malformed envelope goes to the dead-letter
//! topic with a readable reason, the metrics snapshot counts all of it, and the status goes
//! `online` then `offline`. The example's own code is compiled in here, so CI tests what a
//! newcomer copies.

#[path = "../examples/hello_service/service.rs"]
mod hello_service;

use std::net::SocketAddr;

use alicia_envelope::{Destination, Envelope, MessageType};
use alicia_sdk::{DeadLetter, Topics};
use alicia_testkit::{config, Mosquitto, Observer, WAIT};
use hello_service::{HelloConfig, HelloSection, NAME};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_service_on_alicias_broker() {
    let (_broker, addr) = alicia_testkit::alicia_broker().await;
    scenario(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_service_on_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    scenario(mosquitto.addr).await;
}

#[test]
fn the_section_has_defaults_and_rejects_typos_with_their_line() {
    assert_eq!(HelloSection::from_yaml("router:\n  max_hops: 4\n").unwrap(), HelloSection::default());
    let s = HelloSection::from_yaml("hello_service:\n  greeting: Hi\n").unwrap();
    assert_eq!((s.greeting.as_str(), s.max_name_chars), ("Hi", 64));
    let typo = HelloSection::from_yaml("router: {}\nhello_service:\n  greting: Hi\n").unwrap_err().to_string();
    assert!(typo.contains("unknown field `greting`") && typo.contains("line 3"), "{typo}");
    let zero = HelloSection::from_yaml("hello_service:\n  metrics_interval_secs: 0\n").unwrap_err().to_string();
    assert!(zero.contains("metrics_interval_secs must be at least 1"), "{zero}");
}

/// The value of `metric` with `labels` in a snapshot (0 when absent).
fn sample(snapshot: &Value, metric: &str, labels: Value) -> u64 {
    let family = snapshot["metrics"].as_array().unwrap().iter().find(|m| m["name"] == metric).unwrap();
    family["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["labels"] == labels)
        .map_or(0, |s| s["value"].as_u64().unwrap())
}

async fn scenario(addr: SocketAddr) {
    let topics = Topics::default();
    let (inbox, status, deadletter) = (topics.inbox(NAME), topics.status(NAME), topics.deadletter());
    let metrics_topic = format!("alicia/system/metrics/{NAME}");
    let replies = "tester/replies";
    let mut mqtt = Observer::start(addr, &[&status, &deadletter, &topics.heartbeat(), &metrics_topic, replies]).await;

    let section = HelloSection { metrics_interval_secs: 1, ..HelloSection::default() };
    let running = hello_service::start(HelloConfig { service: config(addr), section }).unwrap();
    running.wait_online(WAIT).await.unwrap();

    // Health: the SDK says `online` (retained) and sends heartbeats naming the service.
    assert_eq!(&mqtt.next_on(&status).await.payload[..], b"online");
    let beat = Envelope::parse(&mqtt.next_on(&topics.heartbeat()).await.payload).unwrap();
    assert_eq!(beat.payload.data["service"], NAME);

    // A request, answered on its response topic with its correlation data.
    let ask = |data: Value| Envelope::request("tester", Destination::service(NAME), data);
    let request = ask(json!({"name": "Ada"}));
    mqtt.publish(&inbox, request.to_vec(), Some((replies, b"c-1"))).await;
    let p = mqtt.next_on(replies).await;
    assert_eq!(p.properties.as_ref().and_then(|p| p.correlation_data.as_deref()), Some(&b"c-1"[..]));
    let answer = Envelope::parse(&p.payload).unwrap();
    assert_eq!(answer.message_type, MessageType::Response);
    assert_eq!(answer.correlation_id.as_ref(), Some(&request.message_id));
    assert_eq!(answer.payload.data, json!({"greeting": "Hello, Ada!"}));

    // A bad request: an error response naming the field.
    mqtt.publish(&inbox, ask(json!({"name": 7})).to_vec(), Some((replies, b"c-2"))).await;
    let error = Envelope::parse(&mqtt.next_on(replies).await.payload).unwrap();
    let e = error.reply_error().expect("an error response");
    assert_eq!((e.code.as_str(), e.message.as_str()), ("invalid_request", "`name` must be text"));
    assert_eq!(error.payload.data["errors"], json!([{"field": "name", "reason": "`name` must be text"}]));

    // Not an envelope: dead-lettered by the SDK with the reason and the bytes as sent.
    let junk = br#"{"message_id": "m-1", "source": "tester"}"#;
    mqtt.publish(&inbox, &junk[..], None).await;
    let dead: DeadLetter = serde_json::from_slice(&mqtt.next_on(&deadletter).await.payload).unwrap();
    assert_eq!((dead.topic.as_str(), dead.original().unwrap()), (inbox.as_str(), junk.to_vec()));
    assert!(dead.reported_by.starts_with("hello_service/"), "{dead:?}");
    assert_eq!(dead.code, "invalid_envelope");
    assert!(
        dead.reason.starts_with("invalid envelope:") && dead.reason.contains("`payload` is missing"),
        "the reason says what is wrong: {}",
        dead.reason
    );

    // A valid event with bad data: nobody waits for an answer, so the handler dead-letters it.
    let event = Envelope::event("tester", Destination::service(NAME), json!({"nom": "Ada"}));
    mqtt.publish(&inbox, event.to_vec(), None).await;
    let dead: DeadLetter = serde_json::from_slice(&mqtt.next_on(&deadletter).await.payload).unwrap();
    assert_eq!((dead.code.as_str(), dead.reason.as_str()), ("invalid_request", "`name` is missing"));
    assert_eq!(Envelope::parse(&dead.original().unwrap()).unwrap().message_id, event.message_id);

    // The subscription: a broadcast is heard.
    let hello_all = Envelope::event("tester", Destination::Broadcast, json!({"announce": "dinner"}));
    mqtt.publish(&topics.broadcast(), hello_all.to_vec(), None).await;

    // The metrics snapshot (retained, every second here) counts all of the above.
    let expected = |s: &Value| {
        sample(s, "alicia_hello_requests_total", json!({"result": "greeted"})) == 1
            && sample(s, "alicia_hello_requests_total", json!({"result": "invalid"})) == 2
            && sample(s, "alicia_hello_refused_total", json!({"code": "invalid_envelope"})) == 1
            && sample(s, "alicia_hello_broadcasts_total", json!({})) == 1
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let p = mqtt.next_on(&metrics_topic).await;
        let snapshot: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(snapshot["service"], NAME);
        if expected(&snapshot) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the snapshot never counted everything: {snapshot}");
    }
    assert!(expected(&running.metrics()));

    // A clean stop says `offline`.
    running.shutdown().await;
    assert_eq!(&mqtt.next_on(&status).await.payload[..], b"offline");
}
