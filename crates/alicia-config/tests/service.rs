//! The configuration service over a real bus (Alicia's broker and Mosquitto): updates reach a
//! running service, bad ones are refused and the old configuration stays, and updates survive
//! a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use alicia_config::{ConfigStore, ConfigWatch, RouterConfig};
use alicia_envelope::Destination;
use alicia_sdk::SdkError;
use alicia_testkit::{client, config, Mosquitto};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(5);

fn config_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

async fn request(bus: &alicia_sdk::Bus, data: Value) -> Result<Value, SdkError> {
    bus.request(Destination::service("config_service"), data, T).await.map(|e| e.payload.data)
}

async fn wait_for(watch: &ConfigWatch, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(v) = watch.current() {
            if pred(&v) {
                return v;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "section not as expected: {:?}", watch.current());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scenario(addr: SocketAddr) {
    let state = tempfile::tempdir().unwrap();
    let base = alicia_config::load_with(&config_dir(), "development", Vec::new()).unwrap();
    assert_eq!(base.router.max_hops, 8);
    let store = ConfigStore::with_base(base.clone(), "development", state.path()).unwrap();
    let svc = alicia_config::start(config(addr), store).unwrap();
    svc.service().wait_online(T).await.unwrap();
    let tester = client(config(addr)).await;

    // A running "router" follows its section.
    let mut router = ConfigWatch::start(&config(addr).with_name("router"), "development", "router");
    let first = wait_for(&router, |_| true).await;
    assert_eq!(first["max_hops"], 8);
    router.changed().await; // mark the first announcement seen

    // Get: whole and one section.
    let all = request(tester.bus(), json!({"op": "get"})).await.unwrap();
    assert_eq!(all["environment"], "development");
    assert_eq!(all["config"]["router"]["max_hops"], 8);
    let sec = request(tester.bus(), json!({"op": "get", "section": "gateway"})).await.unwrap();
    assert_eq!(sec["values"]["addr"], "127.0.0.1:8080");

    // A dry run validates but changes nothing.
    let dry = request(tester.bus(), json!({"op": "update", "key": "router.max_hops", "value": 3, "dry_run": true}))
        .await
        .unwrap();
    assert_eq!(dry["applied"], false);
    assert_eq!(dry["config"]["router"]["max_hops"], 3);
    assert_eq!(svc.current().await.router.max_hops, 8);

    // An update by key reaches the running service without a restart.
    let done = request(tester.bus(), json!({"op": "update", "key": "router.max_hops", "value": 4})).await.unwrap();
    assert_eq!(done["applied"], true);
    assert_eq!(done["version"], 1);
    let seen = tokio::time::timeout(T, router.changed()).await.expect("announced in time").unwrap();
    assert_eq!(seen["max_hops"], 4);
    let typed: RouterConfig = router.get().unwrap().unwrap();
    assert_eq!(typed.max_hops, 4);

    // A section update merges into the section.
    request(tester.bus(), json!({"op": "update", "section": "router", "values": {"request_timeout_ms": 1500}}))
        .await
        .unwrap();
    let seen = tokio::time::timeout(T, router.changed()).await.unwrap().unwrap();
    assert_eq!((seen["max_hops"].as_u64(), seen["request_timeout_ms"].as_u64()), (Some(4), Some(1500)));

    // Bad updates are refused with the reason; the last good configuration stays.
    for (bad, why) in [
        (json!({"op": "update", "key": "router.max_hops", "value": 0}), "router.max_hops"),
        (json!({"op": "update", "key": "router.max_hops", "value": "four"}), "max_hops"),
        (json!({"op": "update", "section": "mqtt", "values": {"hots": "x"}}), "hots"),
        (json!({"op": "update", "key": "router.nope", "value": 1}), "router.nope"),
        (json!({"op": "update", "section": "nosuch", "values": {}}), "nosuch"),
        (
            json!({"op": "update", "section": "monitoring", "values": {"log_rules": [
            {"name": "x", "pattern": "(", "severity": "warning", "message": "m"}]}}),
            "pattern",
        ),
    ] {
        match request(tester.bus(), bad.clone()).await {
            Err(SdkError::Remote { code, message, .. }) => {
                assert!(code == "invalid_config" || code == "invalid_request", "{bad}: {code}");
                assert!(message.contains(why), "{bad}: {message}");
            }
            other => panic!("{bad} was not refused: {other:?}"),
        }
    }
    assert_eq!(svc.current().await.router.max_hops, 4);
    let all = request(tester.bus(), json!({"op": "get"})).await.unwrap();
    assert_eq!(all["version"], 2);
    assert_eq!(all["config"]["router"]["max_hops"], 4);
    assert_eq!(all["config"]["mqtt"]["host"], "127.0.0.1");
    router.close().await;

    // Restart: the persisted updates are back on top of the file, and announced again.
    svc.shutdown().await;
    assert!(state.path().join("config-development.json").exists());
    let store = ConfigStore::with_base(base, "development", state.path()).unwrap();
    assert_eq!(store.current().router.max_hops, 4);
    assert_eq!(store.version(), 2);
    let svc = alicia_config::start(config(addr), store).unwrap();
    svc.service().wait_online(T).await.unwrap();
    let later = ConfigWatch::start(&config(addr).with_name("tts_service"), "development", "router");
    wait_for(&later, |v| v["max_hops"] == 4 && v["request_timeout_ms"] == 1500).await;
    later.close().await;
    svc.shutdown().await;
    tester.shutdown().await;
}

#[tokio::test]
async fn config_service_on_alicia_broker() {
    let (_broker, addr) = alicia_testkit::alicia_broker().await;
    scenario(addr).await;
}

#[tokio::test]
async fn config_service_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    scenario(m.addr).await;
}

#[test]
fn a_corrupt_state_file_is_an_error_naming_it() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("config-development.json"), b"{\"overrides\": {\"router\": {\"max_hops\": 0}}}")
        .unwrap();
    let base = alicia_config::load_with(&config_dir(), "development", Vec::new()).unwrap();
    let err = ConfigStore::with_base(base, "development", state.path()).err().expect("refused");
    assert!(err.to_string().contains("config-development.json"), "{err}");
}
