//! The bridge over real sockets with the real registry and router and simulated devices,
//! against Alicia's broker and Mosquitto: discovery configs out, HA commands in, removal,
//! republishing on HA's birth, and an ESPHome device (the recorded fixture) adopted and
//! commanded. Real Home Assistant is in tests/python/test_ha_bridge.py.

use std::net::SocketAddr;
use std::time::Duration;

use alicia_envelope::Destination;
use alicia_simulate::{Kind, SimConfig};
use alicia_testkit::{alicia_broker, client, config, Mosquitto, Observer, WAIT};
use rumqttc_notls::v5::mqttbytes::QoS;
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../tests/python/fixtures/ha/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn next_json(obs: &mut Observer, topic: &str) -> (Value, bool) {
    let p = obs.next_on(topic).await;
    (serde_json::from_slice(&p.payload).unwrap_or(Value::Null), p.payload.is_empty())
}

async fn scenario(addr: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let registry = alicia_registry::start(alicia_registry::RegistryConfig::new(config(addr), dir.path().join("r.db")))
        .await
        .unwrap();
    registry.bus().wait_online(WAIT).await.unwrap();
    let router = alicia_router::start(alicia_router::RouterConfig::new(config(addr))).await.unwrap();
    router.bus().wait_online(WAIT).await.unwrap();
    let bridge = alicia_ha::start(alicia_ha::BridgeConfig::new(config(addr))).await.unwrap();
    bridge.bus().wait_online(WAIT).await.unwrap();

    let light_cfg = "homeassistant/light/alicia/br_light/config";
    let mut obs = Observer::start(addr, &[light_cfg, "alicia/ha/br_light/light/state"]).await;
    let mut c = SimConfig::new(Kind::Light, "br_light", addr.ip().to_string(), addr.port()).at("hall");
    c.reconnect_min = Duration::from_millis(50);
    let light = alicia_simulate::start(c).await.unwrap();
    light.wait_registered(WAIT).await.unwrap();

    let (cfg, _) = next_json(&mut obs, light_cfg).await;
    assert_eq!(cfg["schema"], "json");
    assert_eq!(cfg["unique_id"], "alicia_br_light_light");
    assert_eq!(cfg["command_topic"], "alicia/ha/br_light/light/set");
    assert_eq!(cfg["availability_topic"], "alicia/devices/br_light/status");
    assert_eq!(cfg["device"]["suggested_area"], "hall");
    let (st, _) = next_json(&mut obs, "alicia/ha/br_light/light/state").await;
    assert_eq!(st["state"], "OFF");

    // HA's command: brightness first, then on; the light's new state comes back HA-shaped.
    obs.client
        .publish("alicia/ha/br_light/light/set", QoS::AtMostOnce, false, r#"{"state":"ON","brightness":40}"#)
        .await
        .unwrap();
    light.wait_state(|s| s["power"] == "on" && s["brightness"] == 40, WAIT).await.unwrap();
    let names: Vec<String> =
        light.commands().iter().map(|e| e.payload.data["command"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["set_brightness", "turn_on"]);
    assert_eq!(light.commands()[0].routing.route, ["router"], "through the router");
    loop {
        let (st, _) = next_json(&mut obs, "alicia/ha/br_light/light/state").await;
        if st["state"] == "ON" && st["brightness"] == 40 {
            break;
        }
    }

    // HA restarted: everything again.
    obs.client.publish("homeassistant/status", QoS::AtMostOnce, false, "online").await.unwrap();
    let (again, _) = next_json(&mut obs, light_cfg).await;
    assert_eq!(again["unique_id"], "alicia_br_light_light");

    // Unregistered: the config is emptied (HA removes the entity).
    light.unregister().await;
    loop {
        let (_, empty) = next_json(&mut obs, light_cfg).await;
        if empty {
            break;
        }
    }
    light.stop().await;

    // An ESPHome node announces itself: adopted as a registry device, commanded through the router.
    let esphome = fixture("esphome.json");
    let mut node =
        Observer::start(addr, &["kitchen-node/light/ceiling/command", "alicia/devices/ha_246f28a1b2c3/state"]).await;
    for m in esphome["messages"].as_array().unwrap() {
        let payload = match &m["payload"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        node.client.publish(m["topic"].as_str().unwrap(), QoS::AtLeastOnce, true, payload).await.unwrap();
    }
    let mut inv = Observer::start(addr, &["alicia/system/registry/devices"]).await;
    let d = loop {
        let p = inv.next().await;
        let doc: Value = serde_json::from_slice(&p.payload).unwrap();
        let found = doc["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == "ha_246f28a1b2c3").cloned();
        if let Some(d) = found.filter(|d| d["capabilities"].as_array().is_some_and(|c| c.len() == 4)) {
            break d;
        }
    };
    assert_eq!(d["name"], "Kitchen Node");
    assert_eq!(d["metadata"]["adopted_from"], "home_assistant_discovery");
    assert_eq!(d["endpoints"]["control"], "alicia/ha/adopted/ha_246f28a1b2c3/command");
    loop {
        let (st, _) = next_json(&mut node, "alicia/devices/ha_246f28a1b2c3/state").await;
        if st["temperature"] == 21.5 && st["power"] == "on" {
            break;
        }
    }
    let tester = client(config(addr)).await;
    let answer = tester
        .request(Destination::device("ha_246f28a1b2c3"), json!({"command": "turn_off", "parameters": {}}), WAIT)
        .await
        .unwrap();
    assert_eq!(answer.payload.data["temperature"], 21.5);
    let p = node.next_on("kitchen-node/light/ceiling/command").await;
    assert_eq!(&p.payload[..], br#"{"state":"OFF"}"#);
    // The adopted device is not announced back to HA.
    let mut back = Observer::start(addr, &["homeassistant/+/alicia/+/config"]).await;
    back.quiet(Duration::from_millis(500)).await;

    // Its last configs emptied: unregistered.
    for m in esphome["messages"].as_array().unwrap() {
        let t = m["topic"].as_str().unwrap();
        if t.ends_with("/config") {
            node.client.publish(t, QoS::AtLeastOnce, true, Vec::new()).await.unwrap();
        }
    }
    loop {
        let p = inv.next().await;
        let doc: Value = serde_json::from_slice(&p.payload).unwrap();
        if !doc["devices"].as_array().unwrap().iter().any(|d| d["device_id"] == "ha_246f28a1b2c3") {
            break;
        }
    }
    for m in esphome["messages"].as_array().unwrap() {
        node.client.publish(m["topic"].as_str().unwrap(), QoS::AtLeastOnce, true, Vec::new()).await.unwrap();
    }
    tester.shutdown().await;
    bridge.shutdown().await;
    router.shutdown().await;
    registry.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_on_alicia() {
    let (_b, addr) = alicia_broker().await;
    scenario(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    scenario(m.addr).await;
}
