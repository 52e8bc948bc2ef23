//! A fake registry, simulated devices, and the router scenarios that run against every broker
//! (the brokers and the observer come from `alicia-testkit`).

#![allow(dead_code)]

pub use alicia_testkit::*;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope, MessageType};
use alicia_router::{RouterConfig, RouterHandle};
use alicia_sdk::{DeadLetter, SdkError};
use rumqttc_notls::v5::mqttbytes::v5::PublishProperties;
use rumqttc_notls::v5::mqttbytes::QoS;
use serde_json::{json, Value};

pub const INVENTORY: &str = "alicia/system/registry/devices";
pub const EVENTS: &str = "alicia/system/registry/events";
pub const DEAD: &str = "alicia/system/deadletter";

/// A device record as the registry publishes it.
pub fn device(id: &str, location: &str, capabilities: &[&str], status: &str) -> Value {
    json!({
        "device_id": id, "device_type": "test", "name": id, "location": location,
        "capabilities": capabilities,
        "endpoints": {"command": format!("alicia/devices/{id}/command"), "status": format!("alicia/devices/{id}/status")},
        "status": status, "last_seen": "2025-01-15T10:30:00Z", "registered_at": "2025-01-15T10:00:00Z",
        "registration": {}
    })
}

pub fn command_topic(id: &str) -> String {
    format!("alicia/devices/{id}/command")
}

/// The fake registry: publishes the retained inventory and events, like alicia-registry.
pub struct FakeRegistry {
    obs: Observer,
}

impl FakeRegistry {
    pub async fn start(addr: SocketAddr) -> FakeRegistry {
        FakeRegistry { obs: Observer::start(addr, &[]).await }
    }

    pub async fn inventory(&self, devices: Vec<Value>) {
        let doc = json!({"updated": "2025-01-15T10:30:00Z", "devices": devices});
        self.obs.client.publish(INVENTORY, QoS::AtLeastOnce, true, doc.to_string()).await.unwrap();
    }

    pub async fn event(&self, event: &str, id: &str, device: Value) {
        let ev = json!({"event": event, "device_id": id, "device": device, "reason": "test", "timestamp": "2025-01-15T10:31:00Z"});
        self.obs.client.publish(EVENTS, QoS::AtLeastOnce, false, ev.to_string()).await.unwrap();
    }
}

/// A router on `addr` with short metrics periods, online.
pub async fn router(addr: SocketAddr) -> RouterHandle {
    router_with(addr, true).await
}

/// A router; `direct` false sends every envelope through the queue and the forwarding task.
pub async fn router_with(addr: SocketAddr, direct: bool) -> RouterHandle {
    let mut cfg = RouterConfig::new(config(addr));
    cfg.metrics_interval = Duration::from_millis(300);
    cfg.direct_when_idle = direct;
    let r = alicia_router::start(cfg).await.unwrap();
    r.wait_online(WAIT).await.expect("router online");
    r
}

/// Waits until the router has applied more than `seen` registry messages.
pub async fn applied(r: &RouterHandle, seen: u64) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = r.inventory_updates();
        if n > seen {
            return n;
        }
        assert!(Instant::now() < deadline, "the router did not apply the registry's message");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn speaker() -> Value {
    device("sonos_kitchen_001", "kitchen", &["audio_playback", "volume_control"], "online")
}

fn sensor() -> Value {
    device("temp_sensor_living_001", "living_room", &["temperature"], "online")
}

/// `device_id:` and `capability:` envelopes reach the simulated devices, unchanged but for
/// one hop; a request through the router gets the device's answer straight back.
pub async fn devices_receive(addr: SocketAddr, direct: bool) {
    let registry = FakeRegistry::start(addr).await;
    registry.inventory(vec![speaker(), sensor()]).await;
    let r = router_with(addr, direct).await;
    applied(&r, 0).await;
    let mut speaker_obs = Observer::start(addr, &[&command_topic("sonos_kitchen_001")]).await;
    let mut sensor_obs = Observer::start(addr, &[&command_topic("temp_sensor_living_001")]).await;
    let tester = client(config(addr)).await;

    let play = Envelope::command("tester", Destination::device("sonos_kitchen_001"), json!({"action": "play"}));
    tester.send(&play).await.unwrap();
    let got = speaker_obs.next_on(&command_topic("sonos_kitchen_001")).await;
    let got = Envelope::parse(&got.payload).unwrap();
    assert_eq!(got.message_id, play.message_id);
    assert_eq!(got.payload.data, json!({"action": "play"}));
    assert_eq!((got.routing.hops, got.routing.route.clone()), (1, vec!["router".to_string()]));

    let volume = Envelope::command("tester", Destination::capability("volume_control"), json!({"volume": 30}));
    tester.send(&volume).await.unwrap();
    let got = Envelope::parse(&speaker_obs.next().await.payload).unwrap();
    assert_eq!(got.message_id, volume.message_id);

    // A request: the device answers on the response topic the requester set, with its
    // correlation data, which the router passed on.
    let sensor_task = tokio::spawn(async move {
        let p = sensor_obs.next().await;
        let props = p.properties.clone().expect("properties forwarded");
        let request = Envelope::parse(&p.payload).unwrap();
        // The requester's correlation data (its message id, from the SDK), passed on as it came.
        assert_eq!(props.correlation_data.as_deref(), Some(request.message_id.to_string().as_bytes()));
        let answer = Envelope::reply_to(&request, "device_id:temp_sensor_living_001", json!({"celsius": 21.5}));
        let rt = props.response_topic.expect("response topic forwarded");
        let reply_props = PublishProperties { correlation_data: props.correlation_data, ..Default::default() };
        sensor_obs
            .client
            .publish_with_properties(rt, QoS::AtLeastOnce, false, answer.to_vec(), reply_props)
            .await
            .unwrap();
        sensor_obs
    });
    let answer = tester
        .request(Destination::capability("temperature"), json!({"read": true}), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer.payload.data, json!({"celsius": 21.5}));
    assert_eq!(answer.source, "device_id:temp_sensor_living_001");
    sensor_task.await.unwrap();

    // Broadcast and service destinations sent to the router go where they belong.
    let mut others = Observer::start(addr, &["alicia/broadcast", "alicia/services/tts/inbox"]).await;
    let inbox = "alicia/services/router/inbox";
    let b = Envelope::event("device_id:sonos_kitchen_001", Destination::Broadcast, json!({"hello": 1}));
    others.publish(inbox, b.to_vec(), None).await;
    let got = others.next_on("alicia/broadcast").await;
    assert_eq!(Envelope::parse(&got.payload).unwrap().message_id, b.message_id);
    let s = Envelope::event("device_id:sonos_kitchen_001", Destination::service("tts"), json!({"say": "hi"}));
    others.publish(inbox, s.to_vec(), None).await;
    let got = others.next_on("alicia/services/tts/inbox").await;
    assert_eq!(Envelope::parse(&got.payload).unwrap().message_id, s.message_id);

    // The metrics say so.
    let mut metrics = Observer::start(addr, &["alicia/system/metrics/router"]).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let snap: Value = serde_json::from_slice(&metrics.next().await.payload).unwrap();
        let routed =
            snap["metrics"].as_array().unwrap().iter().find(|m| m["name"] == "alicia_router_routed_total").cloned();
        let value = |kind: &str| {
            routed.as_ref().and_then(|m| {
                m["samples"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["labels"]["destination"] == kind)
                    .map(|s| s["value"].clone())
            })
        };
        if value("device") == Some(json!(1))
            && value("capability") == Some(json!(2))
            && value("service") == Some(json!(1))
        {
            assert_eq!(value("broadcast"), Some(json!(1)));
            assert_eq!(snap["service"], "router");
            break;
        }
        assert!(Instant::now() < deadline, "metrics never showed the routed messages: {snap}");
    }
    r.shutdown().await;
}

/// Round robin over two online providers, never the offline one; an `offline` event takes a
/// provider out at once; the sender's location is preferred.
pub async fn load_balancing(addr: SocketAddr) {
    let registry = FakeRegistry::start(addr).await;
    let kitchen = device("sonos_kitchen_001", "kitchen", &["audio_playback"], "online");
    let living = device("sonos_living_001", "living_room", &["audio_playback"], "online");
    let bedroom = device("sonos_bedroom_001", "bedroom", &["audio_playback"], "offline");
    registry.inventory(vec![kitchen, living.clone(), bedroom]).await;
    let r = router(addr).await;
    let seen = applied(&r, 0).await;
    let mut speakers = Observer::start(addr, &["alicia/devices/+/command"]).await;
    let tester = client(config(addr)).await;

    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..10 {
        let e = Envelope::command("tester", Destination::capability("audio_playback"), json!({"i": i}));
        tester.send(&e).await.unwrap();
        let p = speakers.next().await;
        *count.entry(String::from_utf8(p.topic.to_vec()).unwrap()).or_default() += 1;
    }
    let expected: std::collections::BTreeMap<String, usize> =
        [(command_topic("sonos_kitchen_001"), 5), (command_topic("sonos_living_001"), 5)].into_iter().collect();
    assert_eq!(count, expected);

    // Location: a device in the living room asks for audio; a hint in the metadata wins.
    let inbox = "alicia/services/router/inbox";
    for _ in 0..3 {
        let e = Envelope::command("device_id:sonos_living_001", Destination::capability("audio_playback"), json!({}));
        speakers.publish(inbox, e.to_vec(), None).await;
        assert_eq!(speakers.next().await.topic, command_topic("sonos_living_001"));
    }
    for _ in 0..3 {
        let mut e = Envelope::command("tester", Destination::capability("audio_playback"), json!({}));
        e.payload.metadata.extra.insert("location".into(), json!("kitchen"));
        tester.send(&e).await.unwrap();
        assert_eq!(speakers.next().await.topic, command_topic("sonos_kitchen_001"));
    }

    // The living room speaker goes offline (registry event): everything goes to the kitchen,
    // even from the living room.
    let mut off = living.clone();
    off["status"] = json!("offline");
    registry.event("offline", "sonos_living_001", off).await;
    applied(&r, seen).await;
    for _ in 0..4 {
        let e = Envelope::command("device_id:sonos_living_001", Destination::capability("audio_playback"), json!({}));
        speakers.publish(inbox, e.to_vec(), None).await;
        assert_eq!(speakers.next().await.topic, command_topic("sonos_kitchen_001"));
    }
    speakers.quiet(Duration::from_millis(200)).await;
    r.shutdown().await;
}

async fn letter(dead: &mut Observer) -> DeadLetter {
    serde_json::from_slice(&dead.next_on(DEAD).await.payload).unwrap()
}

/// Expired, looping and malformed envelopes each end in the dead-letter topic with their
/// reason, and are counted; unroutable requests get an error response at once.
pub async fn dead_letters(addr: SocketAddr, direct: bool) {
    let registry = FakeRegistry::start(addr).await;
    registry.inventory(vec![speaker(), device("sleepy_001", "attic", &["snoring"], "offline")]).await;
    let r = router_with(addr, direct).await;
    applied(&r, 0).await;
    let mut dead = Observer::start(addr, &[DEAD]).await;
    let inbox = "alicia/services/router/inbox";

    // Malformed.
    dead.publish(inbox, "{\"message_id\": oops", None).await;
    let l = letter(&mut dead).await;
    assert!(l.reason.starts_with("invalid envelope: not valid JSON"), "{}", l.reason);
    assert_eq!(l.code, "invalid_envelope");
    assert_eq!((l.topic.as_str(), l.payload.as_str()), (inbox, "{\"message_id\": oops"));
    assert!(l.reported_by.starts_with("router/"), "{}", l.reported_by);

    // Expired.
    let mut old =
        Envelope::command("tester", Destination::device("sonos_kitchen_001"), json!({})).with_ttl(1).to_value();
    old["timestamp"] = json!("2020-01-01T00:00:00Z");
    dead.publish(inbox, serde_json::to_vec(&old).unwrap(), None).await;
    let l = letter(&mut dead).await;
    assert!(l.reason.starts_with("expired"), "{}", l.reason);
    assert_eq!(l.code, "expired");

    // Looping: addressed to the router itself, it comes back until max_hops.
    let mut looping = Envelope::event("tester", Destination::service("router"), json!({"loop": true}));
    looping.routing.max_hops = 3;
    dead.publish(inbox, looping.to_vec(), None).await;
    let l = letter(&mut dead).await;
    assert!(
        l.code == "max_hops" && l.reason.starts_with("routing.max_hops exceeded: this would be hop 4 of at most 3"),
        "{}",
        l.reason
    );
    let back = Envelope::parse(l.payload.as_bytes()).unwrap();
    assert_eq!(back.message_id, looping.message_id);
    assert_eq!((back.routing.hops, back.routing.route.len()), (3, 3));

    // One that allows a billion hops still stops at the router's limit.
    let mut greedy = Envelope::event("tester", Destination::service("router"), json!({"loop": "forever"}));
    greedy.routing.max_hops = 1_000_000_000;
    dead.publish(inbox, greedy.to_vec(), None).await;
    let l = letter(&mut dead).await;
    let expected = "routing.max_hops exceeded: this would be hop 33 of at most 32 (the router's limit; \
                    the envelope allows 1000000000)";
    assert!(l.code == "max_hops" && l.reason.starts_with(expected), "{}", l.reason);

    // Unroutable requests: an error response at once, and a dead letter each.
    let tester = client(config(addr)).await;
    for (dest, code) in [
        (Destination::device("ghost_001"), "unknown_device"),
        (Destination::device("sleepy_001"), "device_offline"),
        (Destination::capability("snoring"), "no_provider"),
        (Destination::capability("teleport"), "no_provider"),
    ] {
        let started = Instant::now();
        let err = tester.request(dest.clone(), json!({}), Duration::from_secs(5)).await.unwrap_err();
        match &err {
            SdkError::Remote { code: c, from, .. } => {
                assert_eq!((c.as_str(), from.as_str()), (code, "router"), "{dest}")
            }
            other => panic!("{dest}: expected an error response, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{dest}: answered only after {:?}", started.elapsed());
        let l = letter(&mut dead).await;
        assert!(l.code == code && !l.reason.is_empty(), "{l:?}");
    }

    // A request without a response topic from a device: the error goes to the device (through
    // the router, to its command topic).
    let mut speaker_obs = Observer::start(addr, &[&command_topic("sonos_kitchen_001")]).await;
    let ask = Envelope::request("device_id:sonos_kitchen_001", Destination::capability("teleport"), json!({}));
    speaker_obs.publish(inbox, ask.to_vec(), None).await;
    let answer = Envelope::parse(&speaker_obs.next().await.payload).unwrap();
    assert_eq!((answer.message_type, answer.correlation_id.clone()), (MessageType::Response, Some(ask.message_id)));
    assert_eq!(answer.reply_error().unwrap().code, "no_provider");
    letter(&mut dead).await;

    // Counted by reason (invalid and expired were refused by the SDK before the handler).
    for (reason, n) in [
        ("invalid_envelope", 1),
        ("expired", 1),
        ("max_hops", 2),
        ("unknown_device", 1),
        ("device_offline", 1),
        ("no_provider", 3),
    ] {
        assert_eq!(r.dead_letter_count(reason), n, "{reason}");
    }
    r.shutdown().await;
}

/// A design-document fixture (`tests/fixtures/design/`), as written.
pub fn design(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/design").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The design document's messages, byte for byte: its device control command (no ttl) reaches
/// the speaker's `endpoints.control` topic, its STT request (no ttl) one provider of
/// `speech_to_text`, both as written but for one hop; a topic destination sent to the router
/// is refused with the reason.
pub async fn design_messages(addr: SocketAddr) {
    let registry = FakeRegistry::start(addr).await;
    // What the registry publishes for the document's registration: capability objects and
    // `endpoints.control`.
    let registered: Value = serde_json::from_str(&design("device_registration.json")).unwrap();
    let mut speaker = registered["payload"]["data"].clone();
    speaker["status"] = json!("online");
    speaker["location"] = json!("kitchen");
    let stt = json!({
        "device_id": "stt_worker_1", "device_type": "service", "status": "online",
        "capabilities": [{"name": "speech_to_text", "version": "1.0.0", "parameters": {}, "endpoints": {}}],
        "endpoints": {"control": "alicia/devices/stt_worker_1/command", "status": "alicia/devices/stt_worker_1/status"}
    });
    registry.inventory(vec![speaker, stt]).await;
    let r = router(addr).await;
    applied(&r, 0).await;
    let mut speaker_in = Observer::start(addr, &["alicia/devices/sonos_kitchen_001/command"]).await;
    let mut stt_in = Observer::start(addr, &["alicia/devices/stt_worker_1/command"]).await;
    let mut dead = Observer::start(addr, &[DEAD]).await;
    let inbox = "alicia/services/router/inbox";

    let control = design("device_control.json");
    dead.publish(inbox, control.clone(), None).await;
    let got = speaker_in.next_on("alicia/devices/sonos_kitchen_001/command").await;
    let env = Envelope::parse(&got.payload).unwrap();
    let mut want = Envelope::parse(control.as_bytes()).unwrap();
    want.routing.hops = 1;
    want.routing.route.push("router".into());
    assert_eq!(env, want);
    assert_eq!(env.ttl, None);
    let props = got.properties.clone().unwrap_or_default();
    assert_eq!(props.message_expiry_interval, None, "no ttl: no MQTT expiry invented");

    let stt_request = design("voice_stt_request.json");
    dead.publish(inbox, stt_request.clone(), None).await;
    let got = stt_in.next_on("alicia/devices/stt_worker_1/command").await;
    let env = Envelope::parse(&got.payload).unwrap();
    assert_eq!(env.message_id, "voice-stt-001");
    assert_eq!(env.payload.data["audio_data"], "base64_encoded_audio");

    let registration = design("device_registration.json");
    dead.publish(inbox, registration, None).await;
    let l = letter(&mut dead).await;
    assert!(
        l.code == "topic_destination"
            && l.reason.starts_with("the destination `alicia/system/discovery/register` is a topic"),
        "{}",
        l.reason
    );
    r.shutdown().await;
}
