//! Envelope protection over real brokers: signed and encrypted requests between two services,
//! what a router-like observer sees on the wire, and tampered or unsigned envelopes
//! dead-lettered with the reason. Run against Alicia's broker and Debian's Mosquitto.

mod common;

use std::net::SocketAddr;

use alicia_envelope::{Destination, Envelope, MessageType};
use alicia_sdk::seal::SigningKey;
use alicia_sdk::{DeadLetter, EnvelopeSecurity, SdkError, ENCRYPTION_SCHEME};
use common::*;
use serde_json::{json, Value};

async fn signed_and_encrypted(addr: SocketAddr) {
    let home = home_with_keys(&["stt", "tester"]);
    let mut wire = Observer::start(addr, &["alicia/services/stt/inbox", "alicia/services/tester/reply/+"]).await;
    let mut dead = Observer::start(addr, &["alicia/system/deadletter"]).await;

    let (stt, log) = Echo::new("stt");
    let mut stt_config = config(addr);
    stt_config.security = protected(home.path(), "stt");
    let _stt = online(stt_config, stt).await;
    let mut tester_config = config(addr);
    tester_config.security = protected(home.path(), "tester");
    let tester = client(tester_config).await;

    // A round trip: both directions signed and encrypted, the handler and the caller see plaintext.
    let secret = "the door code is 4321";
    let answer = tester.request(Destination::service("stt"), json!({ "text": secret }), WAIT).await.unwrap();
    assert_eq!(answer.payload.data["echo"]["text"], secret);
    assert_eq!(log.lock().len(), 1);

    // What the router (or anyone on the bus) sees: addressing in clear, the content not.
    let request = wire.next_on("alicia/services/stt/inbox").await;
    assert!(!String::from_utf8_lossy(&request.payload).contains("4321"));
    let seen = Envelope::parse(&request.payload).unwrap();
    assert_eq!(seen.destination, Destination::service("stt"));
    assert_eq!(seen.message_type, MessageType::Request);
    assert_eq!(seen.ttl.map(u64::from), Some(WAIT.as_secs()));
    assert_eq!(seen.payload.data["key_id"], "enc-1");
    let security = seen.security.clone().unwrap();
    assert_eq!(security.encryption.as_deref(), Some(ENCRYPTION_SCHEME));
    assert_eq!(security.key_id.as_deref(), Some("tester"));
    assert!(security.signature.is_some());
    let reply = wire.next().await;
    assert!(String::from_utf8_lossy(&reply.topic).starts_with("alicia/services/tester/reply/"));
    assert!(!String::from_utf8_lossy(&reply.payload).contains("4321"));
    assert_eq!(Envelope::parse(&reply.payload).unwrap().security.unwrap().key_id.as_deref(), Some("stt"));

    // The same bytes with a longer ttl: the signature no longer matches. Dead-lettered with the
    // reason, and the requester that named a response topic is told at once.
    let mut tampered: Value = serde_json::from_slice(&request.payload).unwrap();
    tampered["ttl"] = json!(3600);
    let tampered = serde_json::to_vec(&tampered).unwrap();
    wire.publish("alicia/services/stt/inbox", tampered.clone(), Some(("alicia/tamper/answer", b"c-1"))).await;
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert!(letter.reason.starts_with("bad signature by \"tester\""), "{}", letter.reason);
    assert_eq!(letter.original().unwrap(), tampered);
    assert!(letter.reported_by.starts_with("stt/"));
    assert_eq!(log.lock().len(), 1, "the handler never saw it");

    // Unsigned (a client without keys): refused, and its request fails with code `security`.
    let plain = client(config(addr)).await;
    let err = plain.request(Destination::service("stt"), json!({ "text": "hi" }), WAIT).await.unwrap_err();
    match &err {
        SdkError::Remote { code, message, .. } => {
            assert_eq!(code, "security");
            assert!(message.starts_with("unsigned envelope"), "{message}");
        }
        other => panic!("expected a security error, got {other:?}"),
    }
    let letter: DeadLetter = serde_json::from_slice(&dead.next_on("alicia/system/deadletter").await.payload).unwrap();
    assert!(letter.reason.starts_with("unsigned envelope"), "{}", letter.reason);

    // Encrypted for a key this service does not have: dead-lettered as undecryptable.
    let mut other_config = config(addr);
    let other_home = home_with_keys(&["tester"]);
    std::fs::write(other_home.path().join("keys").join("enc-1.key"), "11".repeat(32)).unwrap();
    other_config.security = EnvelopeSecurity::from_home(other_home.path(), "tester").unwrap().encrypt_payloads(true);
    let other = alicia_sdk::connect(other_config.with_name("tester")).unwrap();
    other.wait_online(WAIT).await.unwrap();
    other.publish(Destination::service("stt"), json!({ "text": "x" })).await.unwrap();
    let letter: DeadLetter = serde_json::from_slice(&dead.next_on("alicia/system/deadletter").await.payload).unwrap();
    // Signed by a key stt does not trust for `tester`, so that is found first.
    assert!(letter.reason.starts_with("bad signature by \"tester\""), "{}", letter.reason);
    assert_eq!(log.lock().len(), 1);
}

/// A service that trusts signatures but does not require them, with encryption only on the
/// sender: the signed event is delivered verified, a forged source is refused.
async fn signed_events(addr: SocketAddr) {
    let home = home_with_keys(&["alarm", "lamp"]);
    let mut dead = Observer::start(addr, &["alicia/system/deadletter"]).await;
    let (lamp, log) = Echo::new("lamp");
    let mut lamp_config = config(addr);
    lamp_config.security = EnvelopeSecurity::from_home(home.path(), "lamp").unwrap();
    let _lamp = online(lamp_config, lamp).await;

    let mut alarm_config = config(addr);
    alarm_config.security = EnvelopeSecurity::from_home(home.path(), "alarm").unwrap();
    let alarm = alicia_sdk::connect(alarm_config.with_name("alarm")).unwrap();
    alarm.wait_online(WAIT).await.unwrap();
    let id = alarm.publish(Destination::service("lamp"), json!({ "flash": true })).await.unwrap();
    for _ in 0..100 {
        if !log.lock().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(log.lock().iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(), vec![id]);

    // `alarm`'s key signing as `lamp`: the key id must be the source.
    let key = SigningKey::load(&home.path().join("keys/signing/alarm.key")).unwrap();
    let mut forged = Envelope::event("lamp", Destination::service("lamp"), json!({ "flash": false })).to_value();
    forged["security"] = json!({ "key_id": "lamp" });
    key.sign_in_place(&mut forged).unwrap();
    let bytes = serde_json::to_vec(&forged).unwrap();
    dead.publish("alicia/services/lamp/inbox", bytes, None).await;
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert!(letter.reason.starts_with("bad signature by \"lamp\""), "{}", letter.reason);
    assert_eq!(log.lock().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_encrypted_round_trip_and_tampering() {
    let (_broker, addr) = alicia_broker().await;
    signed_and_encrypted(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_encrypted_round_trip_and_tampering_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    signed_and_encrypted(mosquitto.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_verified_forged_source_refused() {
    let (_broker, addr) = alicia_broker().await;
    signed_events(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_verified_forged_source_refused_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    signed_events(mosquitto.addr).await;
}

/// Heartbeats of a service with a signing key are signed (not encrypted), so a service that
/// requires signatures accepts them and a monitor without the keys can still read them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_signed_in_clear() {
    let (_broker, addr) = alicia_broker().await;
    let home = home_with_keys(&["beating"]);
    let mut wire = Observer::start(addr, &["alicia/system/discovery/heartbeat"]).await;
    let (echo, _) = Echo::new("beating");
    let mut cfg = config(addr);
    cfg.security = protected(home.path(), "beating");
    let _svc = online(cfg, echo).await;
    let beat = Envelope::parse(&wire.next_on("alicia/system/discovery/heartbeat").await.payload).unwrap();
    assert_eq!(beat.message_type, MessageType::Heartbeat);
    assert_eq!(beat.payload.data["service"], "beating");
    let security = beat.security.unwrap();
    assert_eq!(security.key_id.as_deref(), Some("beating"));
    assert!(security.signature.is_some() && security.encryption.is_none());
    // The next one, from the periodic task, is signed too.
    let beat = Envelope::parse(&wire.next_on("alicia/system/discovery/heartbeat").await.payload).unwrap();
    assert!(beat.security.unwrap().signature.is_some());
}
