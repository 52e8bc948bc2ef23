//! A configuration update reaches the running monitor: the configuration service announces a
//! new `monitoring` section, and the monitor starts expecting a service without a restart.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use alicia_config::ConfigStore;
use alicia_envelope::Destination;
use alicia_monitor::MonitorConfig;
use alicia_testkit::{client, config, Mosquitto, Observer};
use common::monitoring;
use serde_json::{json, Value};
use tokio::time::Instant;

async fn alert(obs: &mut Observer, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no matching alert in time");
        let v: Value = serde_json::from_slice(&obs.next().await.payload).unwrap();
        if pred(&v) {
            return v;
        }
    }
}

async fn scenario(addr: SocketAddr) {
    let state = tempfile::tempdir().unwrap();
    let base = alicia_config::Config { monitoring: monitoring(&[]), ..Default::default() };
    let svc = alicia_config::start(config(addr), ConfigStore::with_base(base, "test", state.path()).unwrap()).unwrap();
    svc.service().wait_online(Duration::from_secs(10)).await.unwrap();

    let mut obs = Observer::start(addr, &["alicia/system/alerts"]).await;
    let mut cfg = MonitorConfig::new(config(addr), monitoring(&[]));
    cfg.default_heartbeat_interval = Duration::from_secs(1);
    cfg.tick = Duration::from_millis(100);
    cfg.environment = Some("test".into());
    let mon = alicia_monitor::start(cfg).await.unwrap();
    obs.quiet(Duration::from_millis(2500)).await; // nothing expected, nothing missing

    let tester = client(config(addr)).await;
    let answer = tester
        .bus()
        .request(
            Destination::service("config_service"),
            json!({"op": "update", "key": "monitoring.expected_services", "value": ["late_service"]}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(answer.payload.data["applied"], true);
    let fired = alert(&mut obs, |a| a["state"] == "firing").await;
    assert_eq!((fired["alert"].as_str(), fired["service"].as_str()), (Some("service_missing"), Some("late_service")));
    assert_eq!(fired["severity"], "critical");

    // Not expected any more: the alert ends.
    tester
        .bus()
        .request(
            Destination::service("config_service"),
            json!({"op": "update", "key": "monitoring.expected_services", "value": []}),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let resolved = alert(&mut obs, |a| a["state"] == "resolved").await;
    assert_eq!(resolved["service"], "late_service");
    tester.shutdown().await;
    mon.shutdown().await;
    svc.shutdown().await;
}

#[tokio::test]
async fn config_update_reaches_the_monitor_on_alicia_broker() {
    let (_b, addr) = alicia_testkit::alicia_broker().await;
    scenario(addr).await;
}

#[tokio::test]
async fn config_update_reaches_the_monitor_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    scenario(m.addr).await;
}
