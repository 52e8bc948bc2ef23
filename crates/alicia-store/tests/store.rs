//! The data store over real sockets: what it reads from the bus lands in SQLite, queries on the
//! bus and over HTTP find it by type, device and time, and a restart stores nothing twice;
//! against Alicia's broker and Mosquitto.

use std::net::SocketAddr;
use std::time::Duration;

use alicia_envelope::{Destination, Timestamp};
use alicia_sdk::SdkError;
use alicia_store::{StoreConfig, StoreHandle};
use alicia_testkit::{alicia_broker, client, config, Mosquitto, Observer, WAIT};
use rumqttc_notls::v5::mqttbytes::QoS;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn store(addr: SocketAddr, db: &std::path::Path) -> StoreHandle {
    let mut c = StoreConfig::new(config(addr), db);
    c.http = Some("127.0.0.1:0".parse().unwrap());
    c.settings.batch_interval_ms = 100;
    let s = alicia_store::start(c).await.unwrap();
    s.bus().wait_online(WAIT).await.unwrap();
    s
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn publish(obs: &Observer, topic: &str, doc: Value, retain: bool) {
    obs.client.publish(topic, QoS::AtLeastOnce, retain, doc.to_string()).await.unwrap();
}

/// Asks until `count` rows of the query are there (the store reads asynchronously).
async fn rows(tester: &alicia_sdk::ServiceHandle, q: Value, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = tester.request(Destination::service("data_store"), q.clone(), WAIT).await.unwrap();
        let rows = r.payload.data["rows"].as_array().unwrap().clone();
        if rows.len() >= count {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "{q}: {} rows, wanted {count}", rows.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn scenario(addr: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("store.db");
    let s = store(addr, &db).await;
    let http = s.http_addr().unwrap();
    let obs = Observer::start(addr, &[]).await;
    let tester = client(config(addr)).await;
    let now = Timestamp::now().to_string();

    publish(
        &obs,
        "alicia/system/alerts",
        json!({"alert": "garage_too_warm", "severity": "critical", "state": "firing",
        "service": "sensor_data", "message": "hot", "since": now, "context": {"device_id": "t1"}}),
        false,
    )
    .await;
    publish(
        &obs,
        "alicia/system/registry/events",
        json!({"event": "registered", "device_id": "l1", "device": {}}),
        false,
    )
    .await;
    publish(&obs, "alicia/devices/l1/state", json!({"power": "on", "updated": now}), true).await;
    publish(
        &obs,
        "alicia/sensors/t1",
        json!({"device_id": "t1", "readings": {
        "temperature": {"value": 21.5, "unit": "°C", "timestamp": now}}}),
        true,
    )
    .await;
    publish(
        &obs,
        "alicia/voice/events",
        json!({"session_id": "s-1", "transcript": "turn on the hall light",
        "intent": {"name": "HassTurnOn"}, "device_id": "sat1", "timings": {"stt_ms": 180, "intent_ms": 2}}),
        false,
    )
    .await;

    let alerts = rows(&tester, json!({"action": "query", "type": "alerts"}), 1).await;
    assert_eq!(alerts[0]["alert"], "garage_too_warm");
    assert_eq!(alerts[0]["data"]["context"]["device_id"], "t1");
    let ev = rows(&tester, json!({"action": "query", "type": "events", "device_id": "l1"}), 1).await;
    assert_eq!(ev[0]["kind"], "registered");
    let st = rows(&tester, json!({"action": "query", "type": "states", "device_id": "l1"}), 1).await;
    assert_eq!(st[0]["state"]["power"], "on");
    let tel =
        rows(&tester, json!({"action": "query", "type": "telemetry", "device_id": "t1", "name": "temperature"}), 1)
            .await;
    assert_eq!((tel[0]["value"].as_f64(), tel[0]["unit"].as_str()), (Some(21.5), Some("°C")));
    let voice = rows(&tester, json!({"action": "query", "type": "voice"}), 1).await;
    assert_eq!(
        (voice[0]["intent"].as_str(), voice[0]["transcript"].as_str()),
        (Some("HassTurnOn"), Some("turn on the hall light"))
    );
    assert_eq!(voice[0]["data"]["timings"]["stt_ms"], 180);

    // Time ranges: nothing here is older than the Unix epoch plus a second.
    let none = tester
        .request(Destination::service("data_store"), json!({"action": "query", "type": "alerts", "to": 1}), WAIT)
        .await
        .unwrap();
    assert_eq!(none.payload.data["count"], 0);
    let e = tester.request(Destination::service("data_store"), json!({"action": "query", "type": "bogus"}), WAIT).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "invalid_query"), "{e:?}");
    let e = tester
        .request(
            Destination::service("data_store"),
            json!({"action": "query", "type": "alerts", "from": "yesterday"}),
            WAIT,
        )
        .await;
    assert!(
        matches!(&e, Err(SdkError::Remote { code, message, .. }) if code == "invalid_query" && message.contains("from")),
        "{e:?}"
    );

    // HTTP: the same, by query string.
    let (status, body) =
        get(http, "/query?type=telemetry&device_id=t1&name=temperature&from=2000-01-01T00:00:00Z").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0]["value"], 21.5);
    let (status, body) = get(http, "/query?type=telemetry&limit=0").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_query");
    let (status, body) = get(http, "/stats").await;
    assert_eq!(status, 200);
    assert_eq!(body["rows"]["alerts"], 1);

    // A restart: the retained state and readings are read again but not stored twice.
    s.shutdown().await;
    let s = store(addr, &db).await;
    publish(&obs, "alicia/devices/l1/state", json!({"power": "off", "updated": Timestamp::now().to_string()}), true)
        .await;
    let st = rows(&tester, json!({"action": "query", "type": "states", "device_id": "l1"}), 2).await;
    assert_eq!(st.len(), 2, "{st:?}");
    assert_eq!(st[0]["state"]["power"], "off");
    s.flush().await;
    let tel = rows(&tester, json!({"action": "query", "type": "telemetry"}), 1).await;
    assert_eq!(tel.len(), 1);

    tester.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_store_on_alicia() {
    let (_b, addr) = alicia_broker().await;
    scenario(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_store_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    scenario(m.addr).await;
}
