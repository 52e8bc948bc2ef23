//! The registry over a real broker (Alicia's and Debian's Mosquitto): devices register with
//! the seed's messages, the bus answers list/get/find, silence, wills and heartbeats change
//! status, the inventory is retained, removals leave a tombstone, a restart keeps everything,
//! and the HTTP API answers as the seed specifies.

mod common;

use std::time::Duration;

use alicia_sdk::SdkError;
use common::*;

/// Registration, requests, liveness and removal, all over the bus.
async fn discovery(addr: std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut rebirth = Observer::start(addr, &[REBIRTH]).await;
    let mut obs = Observer::start(addr, &[EVENTS, DEADLETTER]).await;
    let reg = registry(addr, &dir.path().join("registry.db"), Duration::from_secs(2)).await;

    // On start the registry asks every device to register again.
    let p = rebirth.next_on(REBIRTH).await;
    let r = Envelope::parse(&p.payload).expect("the rebirth request is an envelope");
    assert_eq!((r.source.as_str(), &r.payload.data["request"]), ("device_registry", &json!("register")));

    // The speaker sends the seed's message, a request to the registry's inbox.
    let speaker = SimDevice::connect(addr, "sonos_kitchen_001").await;
    let tester = client(config(addr)).await;
    let answer = tester.request_envelope(seed_envelope(), WAIT).await.expect("the registry answers the seed");
    assert_eq!(answer.payload.data["status"], "registered");
    assert_eq!(answer.payload.data["device_id"], "sonos_kitchen_001");
    let e = event(&mut obs, "registered", "sonos_kitchen_001").await;
    assert_eq!(e["device"]["status"], "online");
    assert_eq!(e["device"]["registration"], seed_registration(), "the full registration is kept as written");

    // The sensor announces itself on the discovery topic (an event: nobody waits).
    let sensor = SimDevice::connect(addr, "temp_living_001").await;
    let announce =
        Envelope::event("device_id:temp_living_001", Destination::service("device_registry"), sensor_registration());
    sensor.send(REGISTER, &announce).await;
    let e = event(&mut obs, "registered", "temp_living_001").await;
    assert_eq!(e["device"]["endpoints"]["control"], "alicia/devices/temp_living_001/command", "default endpoint");

    // list / get / find over the bus.
    let ask = |data: Value| tester.request(Destination::service("device_registry"), data, WAIT);
    let list = ask(json!({"action": "list"})).await.unwrap().payload.data;
    assert_eq!(list["count"], 2, "{list:#}");
    let ids: Vec<&str> = list["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["sonos_kitchen_001", "temp_living_001"]);
    let got = ask(json!({"action": "get", "device_id": "sonos_kitchen_001"})).await.unwrap().payload.data;
    assert_eq!((got["name"].as_str(), got["location"].as_str()), (Some("sonos_kitchen_001"), Some("kitchen")));
    let names: Vec<&str> =
        got["capabilities"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["audio_playback", "volume_control"]);
    let found = ask(json!({"action": "find", "capability": "volume_control"})).await.unwrap().payload.data;
    assert_eq!(
        (found["count"].as_u64(), found["devices"][0]["device_id"].as_str()),
        (Some(1), Some("sonos_kitchen_001"))
    );
    let found = ask(json!({"action": "find", "capability": "humidity"})).await.unwrap().payload.data;
    assert_eq!(found["devices"][0]["device_id"], "temp_living_001");
    let none = ask(json!({"action": "find", "capability": "coffee"})).await.unwrap().payload.data;
    assert_eq!(none["count"], 0);
    match ask(json!({"action": "get", "device_id": "nope"})).await {
        Err(SdkError::Remote { code, message, .. }) => {
            assert_eq!(code, "not_found");
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("expected not_found, got {other:?}"),
    }
    match ask(json!({"action": "reboot"})).await {
        Err(SdkError::Remote { code, message, .. }) => {
            assert_eq!(code, "unknown_action");
            assert!(message.contains("reboot"), "{message}");
        }
        other => panic!("expected unknown_action, got {other:?}"),
    }
    match ask(json!({"action": "register", "device_id": "x1", "device_type": "lamp"})).await {
        Err(SdkError::Remote { code, message, .. }) => {
            assert_eq!(code, "invalid_registration");
            assert!(message.contains("`capabilities`"), "{message}");
        }
        other => panic!("expected invalid_registration, got {other:?}"),
    }

    // The inventory is retained, in the contract's shape.
    let inv = inventory(addr, |v| v["devices"].as_array().is_some_and(|d| d.len() == 2)).await;
    assert!(Timestamp::parse(inv["updated"].as_str().unwrap()).is_ok());
    let s = device(&inv, "sonos_kitchen_001").unwrap();
    for key in ["device_type", "name", "location", "capabilities", "endpoints", "status", "last_seen", "registered_at"]
    {
        assert!(!s[key].is_null(), "{key} missing in {s:#}");
    }
    assert_eq!(s["endpoints"]["status"], "alicia/devices/sonos_kitchen_001/status");

    // Silence: the sensor (no heartbeat interval, 2 s timeout) goes offline, with an event.
    let e = event(&mut obs, "offline", "temp_living_001").await;
    assert!(e["reason"].as_str().unwrap().contains("no heartbeat"), "{e}");
    assert_eq!(e["device"]["status"], "offline");
    let inv = inventory(addr, |v| device(v, "temp_living_001").is_some_and(|d| d["status"] == "offline")).await;
    assert_eq!(device(&inv, "sonos_kitchen_001").unwrap()["status"], "online", "the speaker beats every 60 s");

    // A heartbeat brings it back.
    let beat = Envelope::heartbeat("zigbee_bridge", json!({"device_id": "temp_living_001", "uptime_secs": 12}));
    sensor.send(HEARTBEAT, &beat).await;
    let e = event(&mut obs, "online", "temp_living_001").await;
    assert_eq!(e["reason"], "heartbeat");

    // The speaker dies: its will marks it offline at once (its own timeout is 90 s).
    let before = std::time::Instant::now();
    speaker.crash();
    let e = event(&mut obs, "offline", "sonos_kitchen_001").await;
    assert!(e["reason"].as_str().unwrap().contains("alicia/devices/sonos_kitchen_001/status"), "{e}");
    assert!(before.elapsed() < Duration::from_secs(15), "the will acted, not the timeout");
    // Re-registering brings it back.
    tester.request_envelope(seed_envelope(), WAIT).await.unwrap();
    let e = event(&mut obs, "online", "sonos_kitchen_001").await;
    assert!(e["reason"].as_str().unwrap().contains("registered again"), "{e}");

    // Removal: a `removed` event with the last record, then not found "removed at".
    let bye = Envelope::event(
        "device_id:temp_living_001",
        Destination::service("device_registry"),
        json!({"device_id": "temp_living_001"}),
    );
    sensor.send(UNREGISTER, &bye).await;
    let e = event(&mut obs, "removed", "temp_living_001").await;
    assert_eq!(e["device"]["device_type"], "sensor");
    match ask(json!({"action": "get", "device_id": "temp_living_001"})).await {
        Err(SdkError::Remote { code, message, .. }) => {
            assert_eq!(code, "not_found");
            assert!(message.contains("was removed at"), "{message}");
        }
        other => panic!("expected not_found, got {other:?}"),
    }
    inventory(addr, |v| device(v, "temp_living_001").is_none()).await;

    // An invalid registration nobody waits for ends in the dead-letter topic, with the reason.
    let bad =
        Envelope::event("device_id:bad", Destination::service("device_registry"), json!({"device_id": "bad one"}));
    sensor.send(REGISTER, &bad).await;
    let dl = obs.next_on(DEADLETTER).await;
    let dl: Value = serde_json::from_slice(&dl.payload).unwrap();
    assert!(dl["reason"].as_str().unwrap().contains("`device_id`"), "{dl}");
    assert_eq!(dl["topic"], REGISTER);

    // Not JSON at all: the SDK dead-letters it with the original bytes.
    sensor.client.publish(REGISTER, rumqttc_notls::v5::mqttbytes::QoS::AtLeastOnce, false, "{oops").await.unwrap();
    let dl: Value = serde_json::from_slice(&obs.next_on(DEADLETTER).await.payload).unwrap();
    assert_eq!((dl["payload"].as_str(), dl["topic"].as_str()), (Some("{oops"), Some(REGISTER)));
    // A device registering another device is refused.
    let spoof =
        Envelope::event("device_id:temp_living_001", Destination::service("device_registry"), seed_registration());
    sensor.send(REGISTER, &spoof).await;
    let dl: Value = serde_json::from_slice(&obs.next_on(DEADLETTER).await.payload).unwrap();
    assert!(dl["reason"].as_str().unwrap().contains("a device acts only for itself"), "{dl}");

    // Metrics follow the contract.
    reg.shutdown().await;
    let mut m = Observer::start(addr, &[METRICS]).await;
    let snap: Value = serde_json::from_slice(&m.next_on(METRICS).await.payload).unwrap();
    assert_eq!(snap["service"], "device_registry");
    let metric = |name: &str| snap["metrics"].as_array().unwrap().iter().find(|x| x["name"] == name).cloned().unwrap();
    let devices = metric("alicia_registry_devices");
    assert_eq!(devices["type"], "gauge");
    assert_eq!(devices["samples"][0]["labels"]["status"], "online");
    assert_eq!(devices["samples"][0]["value"], 1, "{devices}");
    let regs = metric("alicia_registry_registrations_total");
    assert_eq!(regs["samples"][0]["value"], 2, "{regs}");
    let beats = metric("alicia_registry_heartbeats_total");
    assert!(beats["samples"][0]["value"].as_u64().unwrap() >= 1, "{beats}");
    sensor.crash();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_register_are_watched_and_removed_over_alicia() {
    let (_broker, addr) = alicia_broker().await;
    discovery(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_register_are_watched_and_removed_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    discovery(mosquitto.addr).await;
}

/// Stop the registry, start it again on the same file: everything is there, and announced.
async fn restart(addr: std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("registry.db");
    let reg = registry(addr, &db, Duration::from_secs(300)).await;
    let api = reg.http_addr().unwrap();
    assert_eq!(http(api, "POST", "/devices/register", Some(&seed_registration().to_string())).await.0, 201);
    assert_eq!(http(api, "POST", "/devices/register", Some(&sensor_registration().to_string())).await.0, 201);
    assert_eq!(http(api, "DELETE", "/devices/temp_living_001", None).await.0, 200);
    reg.shutdown().await;

    let restarted = Timestamp::now();
    let reg = registry(addr, &db, Duration::from_secs(300)).await;
    let tester = client(config(addr)).await;
    let list = tester
        .request(Destination::service("device_registry"), json!({"action": "list"}), WAIT)
        .await
        .unwrap()
        .payload
        .data;
    assert_eq!(list["count"], 1, "{list:#}");
    assert_eq!(list["devices"][0]["registration"], seed_registration());
    let found = tester
        .request(
            Destination::service("device_registry"),
            json!({"action": "find", "capability": "audio_playback"}),
            WAIT,
        )
        .await
        .unwrap()
        .payload
        .data;
    assert_eq!(found["devices"][0]["device_id"], "sonos_kitchen_001", "the capability index survived");
    let (status, body) = http(reg.http_addr().unwrap(), "GET", "/devices/temp_living_001", None).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("was removed at"), "the tombstone survived: {body}");
    // The restarted registry publishes the inventory again (a broker without persistence lost it).
    let inv = inventory(addr, |v| Timestamp::parse(v["updated"].as_str().unwrap()).unwrap() >= restarted).await;
    assert_eq!(inv["devices"].as_array().unwrap().len(), 1);
    // Not heard from since the restart: unknown, not online, until it speaks.
    assert_eq!(device(&inv, "sonos_kitchen_001").unwrap()["status"], "unknown");
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing_over_alicia() {
    let (_broker, addr) = alicia_broker().await;
    restart(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_nothing_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    restart(mosquitto.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_answers_as_the_seed_specifies() {
    let (_broker, addr) = alicia_broker().await;
    let dir = tempfile::tempdir().unwrap();
    let mut obs = Observer::start(addr, &[EVENTS]).await;
    let reg = registry(addr, &dir.path().join("r.db"), Duration::from_secs(300)).await;
    let api = reg.http_addr().unwrap();
    assert_ne!(api.port(), 0, "the bound port is reported");

    let seed = seed_registration().to_string();
    let (status, body) = http(api, "POST", "/devices/register", Some(&seed)).await;
    assert_eq!((status, body), (201, json!({"status": "registered", "device_id": "sonos_kitchen_001"})));
    event(&mut obs, "registered", "sonos_kitchen_001").await;
    let (status, body) = http(api, "POST", "/devices/register", Some(&seed)).await;
    assert_eq!((status, body), (200, json!({"status": "updated", "device_id": "sonos_kitchen_001"})));
    let mut changed = seed_registration();
    changed["location"] = json!("dining_room");
    assert_eq!(http(api, "POST", "/devices/register", Some(&changed.to_string())).await.0, 200);
    let e = event(&mut obs, "updated", "sonos_kitchen_001").await;
    assert_eq!(e["device"]["location"], "dining_room");
    http(api, "POST", "/devices/register", Some(&sensor_registration().to_string())).await;

    let (status, body) = http(api, "GET", "/devices", None).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(2)));
    let (status, body) = http(api, "GET", "/devices/sonos_kitchen_001", None).await;
    assert_eq!(
        (status, body["location"].as_str(), body["status"].as_str()),
        (200, Some("dining_room"), Some("online"))
    );
    let (status, body) = http(api, "GET", "/devices/capability/temperature", None).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(1)));
    assert_eq!(body["devices"][0]["device_id"], "temp_living_001");
    let (_, body) = http(api, "GET", "/devices/capability/audio_playback", None).await;
    assert_eq!(body["devices"][0]["device_id"], "sonos_kitchen_001");

    // 4xx with reasons.
    let (status, body) = http(api, "GET", "/devices/ghost", None).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    assert!(body["message"].as_str().unwrap().contains("ghost"), "{body}");
    let (status, body) = http(api, "POST", "/devices/register", Some("{\"device_id\": ")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_json")));
    assert!(!body["message"].as_str().unwrap().is_empty());
    let (status, body) = http(api, "POST", "/devices/register", None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_json")));
    let no_caps = json!({"device_id": "lamp_1", "device_type": "light"}).to_string();
    let (status, body) = http(api, "POST", "/devices/register", Some(&no_caps)).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("invalid_registration")));
    assert!(body["message"].as_str().unwrap().starts_with("`capabilities`: missing"), "{body}");
    let bad_topic = json!({"device_id": "lamp_1", "device_type": "light", "capabilities": ["on_off"],
                           "endpoints": {"command": "alicia/devices/#"}})
    .to_string();
    let (status, body) = http(api, "POST", "/devices/register", Some(&bad_topic)).await;
    assert_eq!(status, 422);
    assert!(body["message"].as_str().unwrap().starts_with("`endpoints.command`"), "{body}");
    let (status, _) = http(api, "GET", "/nothing/here", None).await;
    assert_eq!(status, 404);

    // The discovery view on its own port.
    let view = reg.discovery_addr().unwrap();
    for path in ["/", "/discovery"] {
        let (status, body) = http(view, "GET", path, None).await;
        assert_eq!(status, 200);
        assert_eq!(body["heartbeat_timeout_secs"], 300.0);
        assert_eq!(body["online"].as_array().unwrap().len(), 2, "{body:#}");
        assert_eq!(body["offline"].as_array().unwrap().len(), 0);
    }

    // Removal over HTTP: 200, then 404 naming the removal; the bus saw it.
    let (status, body) = http(api, "DELETE", "/devices/temp_living_001", None).await;
    assert_eq!((status, body), (200, json!({"status": "removed", "device_id": "temp_living_001"})));
    event(&mut obs, "removed", "temp_living_001").await;
    let (status, body) = http(api, "DELETE", "/devices/temp_living_001", None).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("was removed at"), "{body}");
    let (_, body) = http(view, "GET", "/", None).await;
    assert_eq!(body["online"].as_array().unwrap().len(), 1);

    // A registration over the bus shows in HTTP: one state.
    let tester = client(config(addr)).await;
    tester
        .request(Destination::service("device_registry"), sensor_registration(), WAIT)
        .await
        .expect("a registration without action is a registration");
    let (_, body) = http(api, "GET", "/devices", None).await;
    assert_eq!(body["count"], 2);
    reg.shutdown().await;
}

/// The design document's registration, byte for byte, on the document's topic; its `Device`
/// model over HTTP; refusals a device can read, with every problem at once; a device cannot
/// register another.
async fn design_document(addr: std::net::SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut obs = Observer::start(addr, &[EVENTS, DEADLETTER, "alicia/devices/+/errors"]).await;
    let reg = registry(addr, &dir.path().join("r.db"), Duration::from_secs(300)).await;
    let api = reg.http_addr().unwrap();

    let design = include_str!("../../../tests/fixtures/design/device_registration.json");
    let speaker = SimDevice::connect(addr, "sonos_kitchen_001").await;
    speaker.send_raw(REGISTER, design).await;
    let e = event(&mut obs, "registered", "sonos_kitchen_001").await;
    let d = &e["device"];
    let original: Value = serde_json::from_str(design).unwrap();
    let data = &original["payload"]["data"];
    assert_eq!(d["capabilities"], data["capabilities"], "capability objects kept as written");
    assert_eq!(d["metadata"], data["metadata"]);
    for key in ["control", "status", "audio"] {
        assert_eq!(d["endpoints"][key], data["endpoints"][key], "{key}");
    }
    assert_eq!((d["location"].as_str(), d["status"].as_str()), (Some("kitchen"), Some("online")));
    assert!(d["last_seen"].as_f64().unwrap() > 1.7e9, "last_seen in Unix seconds: {d}");
    let (_, found) = http(api, "GET", "/devices/capability/volume_control", None).await;
    assert_eq!(found["devices"][0]["device_id"], "sonos_kitchen_001");

    // A device claiming another's id: refused, dead-lettered, and told on its own errors topic.
    let mut spoof = data.clone();
    spoof["device_id"] = json!("front_door_lock");
    let lie = Envelope::event("device_id:sonos_kitchen_001", Destination::topic(REGISTER), spoof);
    speaker.send(REGISTER, &lie).await;
    let letter = obs.next_on(DEADLETTER).await;
    assert!(String::from_utf8_lossy(&letter.payload).contains("front_door_lock"));
    let p = obs.next_on("alicia/devices/sonos_kitchen_001/errors").await;
    let answer = Envelope::parse(&p.payload).unwrap();
    let err = answer.reply_error().expect("an error response");
    assert_eq!(err.code, "forbidden");
    assert!(err.message.contains("front_door_lock") && err.message.contains("acts only for itself"), "{err:?}");
    assert_eq!(answer.correlation_id.as_ref(), Some(&lie.message_id));
    let (status, _) = http(api, "GET", "/devices/front_door_lock", None).await;
    assert_eq!(status, 404, "nothing was registered");

    // A broken registration: every problem in one answer, on the device's errors topic.
    let sensor = SimDevice::connect(addr, "esp32_sensor_001").await;
    let broken = Envelope::event(
        "device_id:esp32_sensor_001",
        Destination::topic(REGISTER),
        json!({"device_id": "esp32_sensor_001", "capabilities": [{"name": "temp#"}], "endpoints": {"status": 7}}),
    );
    sensor.send(REGISTER, &broken).await;
    let p = obs.next_on("alicia/devices/esp32_sensor_001/errors").await;
    let answer = Envelope::parse(&p.payload).unwrap();
    assert_eq!(answer.reply_error().unwrap().code, "invalid_registration");
    let fields: Vec<&str> =
        answer.payload.data["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["device_type", "capabilities[0].name", "endpoints.status"]);

    // The document's Device model over HTTP, status and last_seen included (they are ignored).
    let model = json!({
        "device_id": "hue_living_room_001", "device_type": "light",
        "capabilities": [{"name": "on_off", "version": "1.0.0", "parameters": {}, "endpoints": {}},
                         {"name": "brightness", "version": "1.0.0", "parameters": {"min": 0, "max": 100},
                          "endpoints": {"input": "alicia/devices/hue_living_room_001/brightness"}}],
        "endpoints": {"control": "alicia/devices/hue_living_room_001/command"},
        "metadata": {"location": "living_room", "manufacturer": "Philips"},
        "status": "offline", "last_seen": 12.5
    });
    let (status, _) = http_as(api, None, "POST", "/devices/register", Some(&model.to_string())).await;
    assert_eq!(status, 401, "no credential");
    let (status, body) =
        http_as(api, Some("Basic aW5zdGFsbGVyOm5vcGU="), "POST", "/devices/register", Some(&model.to_string())).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    let lamp = device_auth("hue_living_room_001");
    let other = device_auth("sonos_kitchen_001");
    let (status, body) = http_as(api, Some(&other), "POST", "/devices/register", Some(&model.to_string())).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, _) = http_as(api, Some(&lamp), "POST", "/devices/register", Some(&model.to_string())).await;
    assert_eq!(status, 201);
    let (_, got) = http(api, "GET", "/devices/hue_living_room_001", None).await;
    assert_eq!(got["capabilities"], model["capabilities"]);
    assert_eq!((got["status"].as_str(), got["location"].as_str()), (Some("online"), Some("living_room")));
    assert!(got["last_seen"].as_f64().unwrap() > 1.7e9);
    let (status, _) = http_as(api, None, "DELETE", "/devices/hue_living_room_001", None).await;
    assert_eq!(status, 401);
    let (status, _) = http_as(api, Some(&other), "DELETE", "/devices/hue_living_room_001", None).await;
    assert_eq!(status, 403);
    let (status, _) = http_as(api, Some(&lamp), "DELETE", "/devices/hue_living_room_001", None).await;
    assert_eq!(status, 200);
    reg.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_documents_registration_works_over_alicia() {
    let (_broker, addr) = alicia_broker().await;
    design_document(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_documents_registration_works_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    design_document(mosquitto.addr).await;
}
