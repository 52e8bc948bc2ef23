//! The SDK over real sockets against Alicia's broker, started in this process.

mod common;

use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope, MessageType};
use alicia_sdk::{DeadLetter, LinkState, SdkError, ServiceConfig};
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_talk_request_response() {
    let (_broker, addr) = alicia_broker().await;
    request_response(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_inbox() {
    let (_broker, addr) = alicia_broker().await;
    shared_inbox(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_marks_a_dead_service_offline() {
    let (_broker, addr) = alicia_broker().await;
    will_marks_offline(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_nobody_times_out() {
    let (_broker, addr) = alicia_broker().await;
    let tester = client(config(addr)).await;
    let started = Instant::now();
    let err = tester.request(Destination::service("nobody"), json!({}), Duration::from_millis(300)).await.unwrap_err();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
    match &err {
        SdkError::Timeout { destination, timeout, .. } => {
            assert_eq!((destination, *timeout), (&Destination::service("nobody"), Duration::from_millis(300)))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("no response from `nobody` to request ") && text.ends_with(" within 300ms"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_a_request_says_so() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tester = alicia_sdk::connect(ServiceConfig::broker("127.0.0.1", port)).unwrap();
    let err = tester.request(Destination::service("stt"), json!({}), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, SdkError::NotConnected { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("not connected to the broker at 127.0.0.1:{port}")), "{err}");
    assert_eq!(tester.state(), LinkState::Connecting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelopes_land_in_the_dead_letter_topic() {
    let (_broker, addr) = alicia_broker().await;
    let (echo, log) = Echo::new("echo");
    let _echo = online(config(addr), echo).await;
    let mut dead = Observer::start(addr, &["alicia/system/deadletter"]).await;
    let inbox = "alicia/services/echo/inbox";

    // Not JSON.
    dead.publish(inbox, "{\"message_id\": oops", None).await;
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert_eq!(letter.topic, inbox);
    assert_eq!(letter.payload, "{\"message_id\": oops");
    assert_eq!(letter.payload_encoding, "utf-8");
    assert!(letter.reason.starts_with("invalid envelope: not valid JSON at line 1, column 16"), "{}", letter.reason);
    assert!(letter.reported_by.starts_with("echo/"), "{}", letter.reported_by);

    // JSON, but not a valid envelope: the reason names the field.
    let mut bad = Envelope::request("tester", Destination::service("echo"), json!({})).to_value();
    bad["ttl"] = json!(0);
    let bytes = serde_json::to_vec(&bad).unwrap();
    dead.publish(inbox, bytes.clone(), None).await;
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert_eq!(letter.reason, "invalid envelope: `ttl` must be a whole number from 1 to 4294967295, found 0");
    assert_eq!(letter.original().unwrap(), bytes);

    // Binary: kept in base64.
    dead.publish(inbox, vec![0xff, 0xfe, 0x00], None).await;
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert_eq!(letter.payload_encoding, "base64");
    assert_eq!(letter.original().unwrap(), [0xff, 0xfe, 0x00]);

    // Expired: not handled, dead-lettered.
    let mut old = Envelope::request("tester", Destination::service("echo"), json!({})).with_ttl(1).to_value();
    old["timestamp"] = json!("2020-01-01T00:00:00Z");
    dead.publish(inbox, serde_json::to_vec(&old).unwrap(), None).await;
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert!(letter.reason.starts_with("expired: sent at 2020-01-01T00:00:00Z"), "{}", letter.reason);

    assert!(log.lock().is_empty(), "the handler saw none of them");

    // A malformed request that names a response topic gets an error answer at once.
    let mut asker = Observer::start(addr, &["test/answers"]).await;
    asker.publish(inbox, "not json", Some(("test/answers", b"corr-1"))).await;
    let answer = asker.next_on("test/answers").await;
    let props = answer.properties.clone().unwrap();
    assert_eq!(props.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    let answer = Envelope::parse(&answer.payload).unwrap();
    let e = answer.reply_error().expect("an error response");
    assert_eq!(e.code, "invalid_envelope");
    assert!(e.message.starts_with("not valid JSON at line 1, column 2"), "{}", e.message);
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert_eq!(letter.payload, "not json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_response_is_not_lost_silently() {
    let (_broker, addr) = alicia_broker().await;
    let (echo, _) = Echo::new("slow");
    let _slow = online(config(addr), echo).await;
    let tester = client(config(addr)).await;
    let mut dead = Observer::start(addr, &["alicia/system/deadletter"]).await;
    // ttl rounds up to 1 s, so the handler still answers, after the caller gave up.
    let err = tester
        .request(Destination::service("slow"), json!({ "sleep_ms": 400 }), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::Timeout { .. }), "{err:?}");
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert!(letter.reason.starts_with("response matches no pending request"), "{}", letter.reason);
    assert_eq!(letter.topic, tester.reply_topic());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_with_an_error() {
    let (_broker, addr) = alicia_broker().await;
    let (echo, _) = Echo::new("fragile");
    let fragile = online(config(addr), echo).await;
    let tester = client(config(addr)).await;
    let err = tester.request(Destination::service("fragile"), json!({ "panic": true }), WAIT).await.unwrap_err();
    assert!(matches!(&err, SdkError::Remote { code, .. } if code == "internal"), "{err:?}");
    // And the service keeps working.
    tester.request(Destination::service("fragile"), json!({ "n": 1 }), WAIT).await.unwrap();
    assert_eq!(fragile.state(), LinkState::Online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_published_events() {
    let (_broker, addr) = alicia_broker().await;
    let mut watcher = Observer::start(addr, &["alicia/system/discovery/heartbeat", "alicia/broadcast"]).await;
    let (echo, _) = Echo::new("beating");
    let mut cfg = config(addr);
    cfg.instance_id = Some("i1".into());
    let running = online(cfg, echo).await;
    for _ in 0..2 {
        // One at once when online, then one per second.
        let beat = Envelope::parse(&watcher.next_on("alicia/system/discovery/heartbeat").await.payload).unwrap();
        assert_eq!((beat.message_type, beat.source.as_str()), (MessageType::Heartbeat, "beating"));
        assert_eq!(beat.payload.data["instance"], "i1");
        assert_eq!(beat.payload.data["status"], "online");
        assert_eq!(beat.ttl, Some(3));
    }
    let id = running.publish(Destination::Broadcast, json!({ "hello": "everyone" })).await.unwrap();
    let event = Envelope::parse(&watcher.next_on("alicia/broadcast").await.payload).unwrap();
    assert_eq!(event.message_id, id);
    assert_eq!((event.message_type, event.source.as_str()), (MessageType::Event, "beating"));
    assert_eq!(event.payload.data["hello"], "everyone");

    // A graceful shutdown says offline and stops the heartbeats.
    let mut status = Observer::start(addr, &["alicia/system/services/beating/status"]).await;
    assert_eq!(&status.next().await.payload[..], b"online");
    running.shutdown().await;
    assert_eq!(&status.next().await.payload[..], b"offline");
    watcher.quiet(Duration::from_millis(1500)).await;
}

/// The connection drops (a proxy cuts it) and the broker behind is replaced by a fresh one
/// that knows nothing of the service: the SDK reconnects with backoff, subscribes again, says
/// online again, and requests work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes_after_the_connection_drops() {
    let (_first, first_addr) = alicia_broker().await;
    let proxy = Proxy::start(first_addr).await;
    let (echo, log) = Echo::new("echo");
    let service = online(config(proxy.addr), echo).await;
    let tester = client(config(proxy.addr)).await;
    tester.request(Destination::service("echo"), json!({ "n": 1 }), WAIT).await.unwrap();
    assert_eq!(service.connects(), 1);

    // Same broker, connection cut.
    proxy.cut();
    wait_until(|| service.connects() == 2 && service.state() == LinkState::Online).await;
    wait_until(|| tester.connects() == 2 && tester.state() == LinkState::Online).await;
    tester.request(Destination::service("echo"), json!({ "n": 2 }), WAIT).await.unwrap();

    // A new broker (nothing subscribed there), connection cut.
    let (_second, second_addr) = alicia_broker().await;
    let mut status = Observer::start(second_addr, &["alicia/system/services/echo/status"]).await;
    proxy.set_upstream(second_addr);
    proxy.cut();
    wait_until(|| service.connects() == 3 && service.state() == LinkState::Online).await;
    assert_eq!(&status.next().await.payload[..], b"online");
    let r = tester.request(Destination::service("echo"), json!({ "n": 3 }), WAIT).await.unwrap();
    assert_eq!(r.payload.data["echo"]["n"], 3);
    assert_eq!(log.lock().len(), 3);
}

/// The will fires when the connection dies; the service comes back and says online again.
/// With two instances, one dying does not leave the service marked offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_the_instances() {
    let (_broker, addr) = alicia_broker().await;
    let proxy = Proxy::start(addr).await;
    let mut status = Observer::start(addr, &["alicia/system/services/tts/status"]).await;
    let (a, _) = Echo::new("tts");
    let first = online(config(proxy.addr), a).await;
    assert_eq!(&status.next().await.payload[..], b"online");

    proxy.cut();
    assert_eq!(&status.next().await.payload[..], b"offline", "the will");
    assert_eq!(&status.next().await.payload[..], b"online", "back after reconnecting");

    // A second instance, directly connected; the first dies.
    let (b, _) = Echo::new("tts");
    let second = online(config(addr), b).await;
    assert_eq!(&status.next().await.payload[..], b"online");
    drop(first);
    assert_eq!(&status.next().await.payload[..], b"offline", "the first one's will");
    assert_eq!(&status.next().await.payload[..], b"online", "the second one is alive");
    let mut late = Observer::start(addr, &["alicia/system/services/tts/status"]).await;
    assert_eq!(&late.next().await.payload[..], b"online");
    second.shutdown().await;
    assert_eq!(&status.next().await.payload[..], b"offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_the_config() {
    use alicia_broker::auth::{set_user, FileSecurity, PasswordFile};
    let (broker, addr) = alicia_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwd");
    set_user(&passwords, "stt", "s3cret").unwrap();
    let security = FileSecurity::new(false, Some(PasswordFile::load(&passwords).unwrap()), None);
    broker.set_security(Box::new(security));

    let (echo, _) = Echo::new("stt");
    let _ok = online(config(addr).with_credentials("stt", "s3cret"), echo).await;

    let (echo, _) = Echo::new("stt");
    let refused = alicia_sdk::start(config(addr).with_credentials("stt", "wrong"), echo).unwrap();
    assert!(refused.wait_online(Duration::from_millis(500)).await.is_err());
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
