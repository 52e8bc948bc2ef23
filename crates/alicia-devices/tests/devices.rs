//! The device services over real sockets, with the real registry and router and simulated
//! devices, against Alicia's broker and Mosquitto.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use alicia_devices::{actuator, sensor, speaker};
use alicia_envelope::{Destination, Envelope};
use alicia_sdk::SdkError;
use alicia_simulate::{Kind, SimEvent};
use common::*;
use rumqttc_notls::v5::mqttbytes::v5::PublishProperties;
use serde_json::{json, Value};

async fn ask(tester: &alicia_sdk::ServiceHandle, service: &str, data: Value) -> Result<Value, SdkError> {
    tester.request(Destination::service(service), data, WAIT).await.map(|e| e.payload.data)
}

/// Asks until the service knows every speaker (it follows the inventory on its own).
async fn speakers_known(tester: &alicia_sdk::ServiceHandle, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = ask(tester, speaker::SERVICE_NAME, json!({"action": "status"})).await.unwrap();
        if s["speakers"].as_array().unwrap().iter().filter(|s| s["status"] == "online").count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "speaker_manager never saw {n} speakers: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn speakers(addr: SocketAddr) {
    let core = core(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = sim(Kind::Speaker, "spk_a", "kitchen", addr, dir.path());
    a.playback_speed = 1.0;
    let mut b = sim(Kind::Speaker, "spk_b", "kitchen", addr, dir.path());
    b.ducking = false;
    b.playback_speed = 0.25; // a 1 s clip plays 4 s: long enough to be interrupted
    let c = sim(Kind::Speaker, "spk_c", "bedroom", addr, dir.path());
    let (a, b, c) = (started(a).await, started(b).await, started(c).await);
    in_inventory(addr, &["spk_a", "spk_b", "spk_c"]).await;
    let svc = speaker::start(speaker::SpeakerConfig::new(config(addr))).await.unwrap();
    svc.bus().wait_online(WAIT).await.unwrap();
    let tester = client(config(addr)).await;
    speakers_known(&tester, 3).await;

    // Music on spk_b, which cannot duck.
    let music = wav(&dir.path().join("music.wav"), 1.0);
    let r = ask(&tester, "speaker_manager", json!({"action": "play", "device_id": "spk_b", "audio_url": music}))
        .await
        .unwrap();
    assert_eq!(r["results"]["spk_b"]["state"]["playback"], "playing", "{r}");
    // An announcement for the kitchen: both kitchen speakers, not the bedroom.
    let r = ask(
        &tester,
        "speaker_manager",
        json!({"action": "announce", "location": "kitchen", "text": "dinner", "wait": true}),
    )
    .await
    .unwrap();
    assert_eq!(r["status"], "done", "{r}");
    assert!(r["results"].as_array().unwrap().iter().all(|x| x["ok"] == true), "{r}");
    assert_eq!(names(&a), ["announce"]);
    // spk_b: paused for the announcement, resumed after it.
    assert_eq!(names(&b), ["play_audio", "pause", "announce", "resume"]);
    assert_eq!(b.state()["playback"], "playing");
    assert!(c.commands().is_empty());

    // A queue: two announcements for spk_a; the second starts after the first has ended
    // (the chime lasts 0.35 s at speed 1).
    let mut events = a.events();
    let r1 = ask(&tester, "speaker_manager", json!({"action": "announce", "device_id": "spk_a", "text": "one"}))
        .await
        .unwrap();
    let r2 = ask(&tester, "speaker_manager", json!({"action": "announce", "device_id": "spk_a", "text": "two"}))
        .await
        .unwrap();
    assert_eq!(r1["queued"]["spk_a"], 1);
    assert!(r2["queued"]["spk_a"].as_u64().unwrap() >= 1);
    let mut commands_at = Vec::new();
    while commands_at.len() < 2 {
        if let SimEvent::Command(_) = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap() {
            commands_at.push(Instant::now());
        }
    }
    let gap = commands_at[1] - commands_at[0];
    assert!(gap >= Duration::from_millis(300), "the second announcement waited for the first: {gap:?}");
    a.wait_state(|s| s["last_announcement"] == "two" && s["announcing"] == false, WAIT).await.unwrap();

    // Announcements on the design document's topic, from any service.
    let env = Envelope::event(
        "tester",
        Destination::topic("alicia/devices/speakers/announce"),
        json!({"device_id": "spk_c", "text": "bedtime"}),
    );
    tester.send_to("alicia/devices/speakers/announce", &env, None).await.unwrap();
    c.wait_state(|s| s["last_announcement"] == "bedtime", WAIT).await.unwrap();

    // Volume within each speaker's registered range.
    let e = ask(&tester, "speaker_manager", json!({"action": "volume", "device_id": "spk_a", "volume": 120})).await;
    assert!(
        matches!(&e, Err(SdkError::Remote { code, message, .. }) if code == "invalid_parameters" && message.contains("0..=100")),
        "{e:?}"
    );
    let r = ask(&tester, "speaker_manager", json!({"action": "volume", "location": "kitchen", "volume": 40}))
        .await
        .unwrap();
    assert_eq!(r["results"]["spk_a"]["state"]["volume"], 40);
    assert_eq!(r["results"]["spk_b"]["state"]["volume"], 40);
    let r =
        ask(&tester, "speaker_manager", json!({"action": "volume", "device_id": "spk_a", "step": -2})).await.unwrap();
    assert_eq!(r["results"]["spk_a"]["state"]["volume"], 30, "two steps of 5 down: {r}");
    let r =
        ask(&tester, "speaker_manager", json!({"action": "volume", "device_id": "spk_a", "mute": true})).await.unwrap();
    assert_eq!(r["results"]["spk_a"]["state"]["muted"], true);
    let e = ask(&tester, "speaker_manager", json!({"action": "volume", "device_id": "nope", "volume": 1})).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "unknown_device"), "{e:?}");
    let e = ask(&tester, "speaker_manager", json!({"action": "announce"})).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "invalid_request"), "{e:?}");

    let status = ask(&tester, "speaker_manager", json!({"action": "status"})).await.unwrap();
    let b_status = status["speakers"].as_array().unwrap().iter().find(|s| s["device_id"] == "spk_b").unwrap().clone();
    assert_eq!(b_status["ducking"], false);
    assert_eq!(b_status["volume_range"], json!([0, 100]));

    tester.shutdown().await;
    svc.shutdown().await;
    for d in [a, b, c] {
        d.stop().await;
    }
    core.stop().await;
}

async fn sensors(addr: SocketAddr) {
    let core = core(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let t = started(sim(Kind::Sensor, "sim_t", "garage", addr, dir.path())).await;
    in_inventory(addr, &["sim_t"]).await;
    let mut cfg = sensor::SensorConfig::new(config(addr));
    cfg.settings.thresholds = vec![serde_json::from_value(json!({
        "name": "garage_too_warm", "capability": "temperature", "location": "garage", "above": 30.0,
        "hysteresis": 1.0, "severity": "critical"
    }))
    .unwrap()];
    let mut obs =
        Observer::start(addr, &["alicia/sensors/sim_t", "alicia/system/alerts", "alicia/system/deadletter"]).await;
    let svc = sensor::start(cfg).await.unwrap();
    svc.bus().wait_online(WAIT).await.unwrap();
    let tester = client(config(addr)).await;

    // Until the service has the inventory, readings of an unknown device are refused: report
    // until one is accepted.
    let deadline = Instant::now() + WAIT;
    let latest = loop {
        t.set_reading("temperature", 22.5);
        if let Ok(p) = tokio::time::timeout(Duration::from_millis(300), obs.next_on("alicia/sensors/sim_t")).await {
            break p;
        }
        assert!(Instant::now() < deadline);
    };
    let doc: Value = serde_json::from_slice(&latest.payload).unwrap();
    assert_eq!(doc["readings"]["temperature"]["value"], 22.5);
    assert_eq!(doc["readings"]["temperature"]["unit"], "°C");
    assert_eq!(doc["readings"]["humidity"]["device_class"], "humidity");
    assert_eq!(doc["location"], "garage");
    // Retained: a new subscriber gets it.
    let mut late = Observer::start(addr, &["alicia/sensors/sim_t"]).await;
    let p = late.next().await;
    assert!(p.retain);

    // Over the threshold: one alert; still over: nothing more; back inside the hysteresis: resolved.
    t.set_reading("temperature", 31.5);
    let a: Value = serde_json::from_slice(&obs.next_on("alicia/system/alerts").await.payload).unwrap();
    assert_eq!(
        (a["alert"].as_str(), a["state"].as_str(), a["severity"].as_str()),
        (Some("garage_too_warm"), Some("firing"), Some("critical"))
    );
    assert_eq!(a["service"], "sensor_data");
    assert_eq!(a["context"]["device_id"], "sim_t");
    assert_eq!(a["context"]["value"], 31.5);
    assert!(a["since"].is_string() && a["message"].as_str().unwrap().contains("31.5"));
    t.set_reading("temperature", 32.0);
    t.set_reading("temperature", 29.5);
    t.set_reading("temperature", 28.5);
    let a: Value = serde_json::from_slice(&obs.next_on("alicia/system/alerts").await.payload).unwrap();
    assert_eq!(a["state"], "resolved");
    assert_eq!(a["context"]["value"], 28.5, "29.5 is within the hysteresis: not resolved yet");

    // Bad telemetry: dead-lettered with the reason, nothing else changes.
    let bad = json!({"device_id": "sim_t", "readings": [{"capability": "temperature", "value": 300, "unit": "°C"},
                                                       {"capability": "temperature", "value": 20, "unit": "°F"}]});
    obs.publish("alicia/devices/sim_t/telemetry", bad.to_string(), None).await;
    let dl: Value = serde_json::from_slice(&obs.next_on("alicia/system/deadletter").await.payload).unwrap();
    assert_eq!(dl["code"], "invalid_telemetry", "{dl}");
    let reason = dl["reason"].as_str().unwrap();
    assert!(reason.contains("outside the registered range") && reason.contains("°F"), "{reason}");
    obs.publish("alicia/devices/sensors/telemetry", json!({"device_id": "ghost", "readings": []}).to_string(), None)
        .await;
    let dl: Value = serde_json::from_slice(&obs.next_on("alicia/system/deadletter").await.payload).unwrap();
    assert!(dl["reason"].as_str().unwrap().contains("not registered"), "{dl}");
    // The shared topic, as an envelope.
    let env = Envelope::event(
        "device_id:sim_t",
        Destination::topic("alicia/devices/sensors/telemetry"),
        json!({"device_id": "sim_t", "readings": [{"capability": "humidity", "value": 61, "unit": "%"}]}),
    );
    obs.publish("alicia/devices/sensors/telemetry", env.to_vec(), None).await;
    loop {
        let doc: Value = serde_json::from_slice(&obs.next_on("alicia/sensors/sim_t").await.payload).unwrap();
        if doc["readings"]["humidity"]["value"] == 61 {
            break;
        }
    }
    let r = ask(&tester, "sensor_data", json!({"action": "latest", "device_id": "sim_t"})).await.unwrap();
    assert_eq!(r["readings"]["temperature"]["value"], 28.5);
    let e = ask(&tester, "sensor_data", json!({"action": "latest", "device_id": "ghost"})).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "not_found"), "{e:?}");

    tester.shutdown().await;
    svc.shutdown().await;
    t.stop().await;
    core.stop().await;
}

/// A device that answers every request with a state but never changes its state: the liar.
async fn liar(
    addr: SocketAddr,
    tester: &alicia_sdk::ServiceHandle,
    id: &str,
    answer: bool,
) -> tokio::task::JoinHandle<usize> {
    let topic = format!("test/{id}/command");
    let reg = json!({"action": "register", "device_id": id, "device_type": "switch", "capabilities": ["on_off"],
                     "endpoints": {"control": topic}});
    ask(tester, "device_registry", reg).await.unwrap();
    let mut obs = Observer::start(addr, &[topic.as_str()]).await;
    let id = id.to_string();
    tokio::spawn(async move {
        let mut n = 0;
        let mut ids = std::collections::HashSet::new();
        while let Ok(p) = tokio::time::timeout(Duration::from_secs(3), obs.next()).await {
            n += 1;
            let env = Envelope::parse(&p.payload).unwrap();
            ids.insert(env.message_id.to_string());
            assert_eq!(ids.len(), 1, "every attempt carries the same message id");
            if answer {
                let props = p.properties.clone().unwrap();
                let reply = Envelope::reply_to(&env, format!("device_id:{id}"), json!({"power": "off"}));
                let back = PublishProperties { correlation_data: props.correlation_data, ..Default::default() };
                obs.publish_with(&props.response_topic.unwrap(), reply.to_vec(), back).await;
            }
        }
        n
    })
}

async fn actuators(addr: SocketAddr) {
    let core = core(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let light = started(sim(Kind::Light, "act_light", "hall", addr, dir.path())).await;
    let tester = client(config(addr)).await;
    let mut cfg = actuator::ActuatorConfig::new(config(addr));
    cfg.settings.ack_timeout_ms = 400;
    cfg.settings.retries = 2;
    cfg.settings.confirm_timeout_ms = 600;
    let mut alerts = Observer::start(addr, &["alicia/system/alerts", "alicia/system/actuators/events"]).await;
    let svc = actuator::start(cfg).await.unwrap();
    svc.bus().wait_online(WAIT).await.unwrap();
    in_inventory(addr, &["act_light"]).await;
    let deadline = Instant::now() + WAIT;
    while ask(&tester, "actuator_control", json!({"action": "state", "device_id": "act_light"})).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cmd = json!({"action": "command", "device_id": "act_light", "command": "set_brightness",
                     "parameters": {"brightness": 35}, "request_id": "r-1"});
    let r = ask(&tester, "actuator_control", cmd.clone()).await.unwrap();
    assert_eq!(
        (r["status"].as_str(), r["acknowledged"].as_bool(), r["attempts"].as_u64()),
        (Some("confirmed"), Some(true), Some(1)),
        "{r}"
    );
    assert_eq!(r["state"]["brightness"], 35);
    // The same request again: the first outcome, no second command.
    let again = ask(&tester, "actuator_control", cmd).await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["message_id"], r["message_id"]);
    assert_eq!(light.commands().len(), 1);
    let r =
        ask(&tester, "actuator_control", json!({"action": "command", "device_id": "act_light", "command": "toggle"}))
            .await
            .unwrap();
    assert_eq!((r["status"].as_str(), r["state"]["power"].as_str()), (Some("confirmed"), Some("on")));
    // The device refuses: its code, no retry.
    let e = ask(&tester, "actuator_control", json!({"action": "command", "device_id": "act_light", "command": "set_brightness", "parameters": {"brightness": 400}})).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "invalid_parameters"), "{e:?}");
    let s = ask(&tester, "actuator_control", json!({"action": "state", "device_id": "act_light"})).await.unwrap();
    assert_eq!(s["state"]["power"], "on");
    assert_eq!(s["last_command"]["event"], "refused");

    // A device that answers but whose state never changes: "unconfirmed", and an alert.
    let liar_task = liar(addr, &tester, "liar", true).await;
    in_inventory(addr, &["liar"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = ask(&tester, "actuator_control", json!({"action": "command", "device_id": "liar", "command": "turn_on"}))
        .await
        .unwrap();
    assert_eq!((r["status"].as_str(), r["acknowledged"].as_bool()), (Some("unconfirmed"), Some(true)), "{r}");
    loop {
        let p = alerts.next().await;
        if p.topic == "alicia/system/alerts" {
            let a: Value = serde_json::from_slice(&p.payload).unwrap();
            assert_eq!((a["alert"].as_str(), a["state"].as_str()), (Some("actuator_no_state_change"), Some("firing")));
            assert_eq!(a["context"]["device_id"], "liar");
            break;
        }
    }
    // A device that never answers: sent 1 + retries times with one message id, then `timeout`.
    let mute_task = liar(addr, &tester, "silent", false).await;
    in_inventory(addr, &["silent"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let e = ask(&tester, "actuator_control", json!({"action": "command", "device_id": "silent", "command": "turn_on"}))
        .await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "timeout"), "{e:?}");
    assert_eq!(mute_task.await.unwrap(), 3);
    assert_eq!(liar_task.await.unwrap(), 1);
    let e = ask(&tester, "actuator_control", json!({"action": "command", "device_id": "ghost", "command": "turn_on"}))
        .await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "unknown_device"), "{e:?}");

    tester.shutdown().await;
    svc.shutdown().await;
    light.stop().await;
    core.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_manager_on_alicia() {
    let (_b, addr) = alicia_broker().await;
    speakers(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_manager_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    speakers(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_data_on_alicia() {
    let (_b, addr) = alicia_broker().await;
    sensors(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_data_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    sensors(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actuator_control_on_alicia() {
    let (_b, addr) = alicia_broker().await;
    actuators(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actuator_control_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    actuators(m.addr).await;
}
