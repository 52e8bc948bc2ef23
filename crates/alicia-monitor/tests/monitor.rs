//! The monitor over a real bus and real HTTP: missing services raise and clear alerts, metrics
//! snapshots show up in a strictly parsed `/metrics`, and log lines matching rules raise alerts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use alicia_envelope::Envelope;
use alicia_monitor::{MonitorConfig, MonitorHandle};
use alicia_testkit::{config, Mosquitto, Observer};
use common::{get, get_json, monitoring, parse_prometheus, series};
use serde_json::{json, Value};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(10);

async fn start(addr: SocketAddr, m: alicia_config::MonitoringConfig) -> (MonitorHandle, SocketAddr) {
    let mut cfg = MonitorConfig::new(config(addr), m);
    cfg.default_heartbeat_interval = Duration::from_secs(1);
    cfg.tick = Duration::from_millis(100);
    let mon = alicia_monitor::start(cfg).await.unwrap();
    let (http, _task) = mon.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (mon, http)
}

/// Waits for an alert on `alicia/system/alerts` matching `pred`.
async fn alert(obs: &mut Observer, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "no matching alert in time");
        let p = obs.next().await;
        if p.topic != "alicia/system/alerts".as_bytes() {
            continue;
        }
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        if pred(&v) {
            return v;
        }
    }
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + T;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn beat(service: &str) -> Vec<u8> {
    Envelope::heartbeat(
        service,
        json!({"service": service, "instance": "i1", "status": "online", "uptime_secs": 1, "interval_secs": 1, "handled": 0, "failed": 0}),
    )
    .to_vec()
}

async fn missing_service(addr: SocketAddr) {
    let mut obs = Observer::start(addr, &["alicia/system/alerts"]).await;
    let sender = Observer::start(addr, &["alicia/none"]).await;
    let (mon, http) = start(addr, monitoring(&["ghost"])).await;

    // "ghost" sends heartbeats every 250 ms (interval 1 s, missing after 2 s of silence).
    let beating = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b = beating.clone();
    let client = sender.client.clone();
    let beats = tokio::spawn(async move {
        loop {
            if b.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = client
                    .publish("alicia/system/discovery/heartbeat", alicia_sdk::QoS::AtMostOnce, false, beat("ghost"))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });

    eventually("ready with ghost up", || async { get_json(http, "/ready").await.0 == 200 }).await;
    let (_, ready) = get_json(http, "/ready").await;
    assert!(ready["checks"]["services"]["up"].as_array().unwrap().contains(&json!("ghost")), "{ready}");
    assert!(mon.active_alerts().is_empty());

    // It stops: a critical alert after the window (2 s) plus damping (0.3 s).
    beating.store(false, std::sync::atomic::Ordering::Relaxed);
    let stopped = Instant::now();
    let fired = alert(&mut obs, |a| a["alert"] == "service_missing" && a["state"] == "firing").await;
    assert!(stopped.elapsed() >= Duration::from_millis(1900), "fired too early: {:?}", stopped.elapsed());
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["service"], "ghost");
    assert_eq!(fired["context"]["expected"], true);
    let (code, ready) = get_json(http, "/ready").await;
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["checks"]["services"]["missing"], json!(["ghost"]));
    let (_, alerts) = get_json(http, "/alerts").await;
    assert!(alerts["active"].as_array().unwrap().iter().any(|a| a["service"] == "ghost"), "{alerts}");
    // The active list is retained for late readers.
    let mut late = Observer::start(addr, &["alicia/system/alerts/active"]).await;
    let active: Value = serde_json::from_slice(&late.next_on("alicia/system/alerts/active").await.payload).unwrap();
    assert!(active["alerts"].as_array().unwrap().iter().any(|a| a["alert"] == "service_missing"), "{active}");
    // One firing per condition: nothing more while it stays missing.
    obs.quiet(Duration::from_millis(800)).await;

    // It comes back: resolved.
    beating.store(true, std::sync::atomic::Ordering::Relaxed);
    let resolved = alert(&mut obs, |a| a["alert"] == "service_missing").await;
    assert_eq!((resolved["state"].as_str(), resolved["service"].as_str()), (Some("resolved"), Some("ghost")));
    eventually("ready again", || async { get_json(http, "/ready").await.0 == 200 }).await;
    let m = parse_prometheus(&get(http, "/metrics").await.2);
    assert_eq!(m[&series("alicia_monitor_alerts_fired_total", &[("severity", "critical")])], 1.0);
    assert!(m[&series("alicia_monitor_heartbeats_total", &[])] >= 4.0);
    beats.abort();
    mon.shutdown().await;
}

#[tokio::test]
async fn missing_service_alert_on_alicia_broker() {
    let (_b, addr) = alicia_testkit::alicia_broker().await;
    missing_service(addr).await;
}

#[tokio::test]
async fn missing_service_alert_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    missing_service(m.addr).await;
}

/// A real SDK service: online while running, and its shutdown (`offline`) is an alert when
/// it is expected.
#[tokio::test]
async fn real_service_shutdown_is_noticed() {
    struct Dummy;
    impl alicia_sdk::BusService for Dummy {
        fn name(&self) -> &str {
            "dummy"
        }
        async fn handle(&self, _: &alicia_sdk::Context, _: Envelope) -> alicia_sdk::HandlerResult {
            Ok(None)
        }
    }
    let (_b, addr) = alicia_testkit::alicia_broker().await;
    let mut obs = Observer::start(addr, &["alicia/system/alerts"]).await;
    let (mon, http) = start(addr, monitoring(&["dummy"])).await;
    let svc = alicia_testkit::online(config(addr), Dummy).await;
    eventually("ready", || async { get_json(http, "/ready").await.0 == 200 }).await;
    svc.shutdown().await;
    let fired = alert(&mut obs, |a| a["state"] == "firing").await;
    assert_eq!((fired["alert"].as_str(), fired["service"].as_str()), (Some("service_missing"), Some("dummy")));
    assert_eq!(fired["context"]["status"], "offline");
    let svc = alicia_testkit::online(config(addr), Dummy).await;
    let resolved = alert(&mut obs, |a| a["state"] == "resolved").await;
    assert_eq!(resolved["service"], "dummy");
    svc.shutdown().await;
    mon.shutdown().await;
}

fn snapshot(routed: u64, extra: &str) -> Vec<u8> {
    format!(
        r#"{{"service":"router","instance":"r1","timestamp":"2026-01-01T00:00:00Z","metrics":[
        {{"name":"alicia_router_routed_total","type":"counter","help":"Envelopes routed","samples":[{{"labels":{{"destination":"device"}},"value":{routed}}}]}},
        {{"name":"alicia_router_latency_seconds","type":"histogram","help":"Routing latency","samples":[{{"labels":{{}},"buckets":[[0.0005,{routed}],[0.001,{routed}],["+Inf",{routed}]],"sum":0.004,"count":{routed}}}]}}
        {extra}]}}"#
    )
    .into_bytes()
}

/// Snapshots are retained (the contract), so one published before the monitor subscribed counts too.
async fn publish(o: &Observer, payload: Vec<u8>) {
    o.client.publish("alicia/system/metrics/router", alicia_sdk::QoS::AtMostOnce, true, payload).await.unwrap();
}

async fn metrics_flow(addr: SocketAddr, mosquitto: bool) {
    let mut dead = Observer::start(addr, &["alicia/system/deadletter"]).await;
    let pubr = Observer::start(addr, &["alicia/none"]).await;
    let (mon, http) = start(addr, monitoring(&[])).await;
    mon.set_extra_metrics(std::sync::Arc::new(|| {
        "# HELP alicia_broker_connections Open connections\n# TYPE alicia_broker_connections gauge\nalicia_broker_connections 3\n".to_string()
    }));
    let (ctype, _) = (get(http, "/metrics").await.1, ());
    assert!(ctype.starts_with("text/plain"), "{ctype}");

    publish(&pubr, snapshot(12, "")).await;
    let routed =
        series("alicia_router_routed_total", &[("service", "router"), ("instance", "r1"), ("destination", "device")]);
    eventually("first snapshot", || async {
        parse_prometheus(&get(http, "/metrics").await.2).get(&routed) == Some(&12.0)
    })
    .await;
    publish(&pubr, snapshot(15, "")).await;
    eventually("the counter moves", || async {
        parse_prometheus(&get(http, "/metrics").await.2).get(&routed) == Some(&15.0)
    })
    .await;
    let m = parse_prometheus(&get(http, "/metrics").await.2);
    assert_eq!(m[&series("alicia_monitor_snapshots_total", &[("result", "accepted")])], 2.0);
    let bucket =
        series("alicia_router_latency_seconds_bucket", &[("service", "router"), ("instance", "r1"), ("le", "+Inf")]);
    assert_eq!(m[&bucket], 15.0);
    assert_eq!(m[&series("alicia_broker_connections", &[])], 3.0, "extra source appended");
    if let Some(families) = common::prometheus_client_parse(&get(http, "/metrics").await.2) {
        let routed = &families["alicia_router_routed"];
        assert_eq!(routed["type"], "counter");
        assert!(routed["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s[0] == "alicia_router_routed_total" && s[1]["service"] == "router" && s[2] == 15.0));
        assert_eq!(families["alicia_router_latency_seconds"]["type"], "histogram");
    }
    assert!(
        m.contains_key(&series("alicia_system_memory_total_bytes", &[])) || {
            // The first host reading comes after one history interval.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            parse_prometheus(&get(http, "/metrics").await.2)
                .contains_key(&series("alicia_system_memory_total_bytes", &[]))
        }
    );

    // A bad snapshot is dead-lettered with the reason and counted; the last good one stays.
    publish(&pubr, snapshot(16, r#",{"name":"bad name","type":"gauge","samples":[]}"#)).await;
    let d: Value = serde_json::from_slice(&dead.next_on("alicia/system/deadletter").await.payload).unwrap();
    assert!(d.to_string().contains("not a Prometheus name"), "{d}");
    let m = parse_prometheus(&get(http, "/metrics").await.2);
    assert_eq!(m[&routed], 15.0);
    assert_eq!(m[&series("alicia_monitor_snapshots_total", &[("result", "rejected")])], 1.0);

    if mosquitto {
        // Mosquitto's $SYS topics (the retained ones arrive at once) show up as gauges.
        let m = parse_prometheus(&get(http, "/metrics").await.2);
        assert!(m.keys().any(|k| k.starts_with("alicia_mqtt_sys_value{topic=\"$SYS/broker/")), "no $SYS gauges");
    }

    // History for the dashboard.
    eventually("history points", || async {
        let (_, h) = get_json(http, "/history").await;
        h["points"].as_array().is_some_and(|p| p.iter().any(|x| x["metrics"]["alicia_router_routed_total"] == 15.0))
    })
    .await;
    let (_, h) = get_json(http, "/history?minutes=1").await;
    assert_eq!(h["interval_secs"], 1);
    assert!(h["points"][0]["memory_total_bytes"].as_u64().unwrap() > 0);

    // Handlers answer fast (no I/O): well under the seed's 50 ms, even in a debug build.
    for path in ["/health", "/ready", "/metrics", "/alerts", "/history"] {
        let t = std::time::Instant::now();
        let (code, _, _) = get(http, path).await;
        assert!(code == 200 || code == 503, "{path}: {code}");
        assert!(t.elapsed() < Duration::from_millis(50), "{path} took {:?}", t.elapsed());
    }
    mon.shutdown().await;
}

#[tokio::test]
async fn metrics_on_alicia_broker() {
    let (_b, addr) = alicia_testkit::alicia_broker().await;
    metrics_flow(addr, false).await;
}

#[tokio::test]
async fn metrics_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    metrics_flow(m.addr, true).await;
}

/// Log lines: this process's own logs through the tracing layer, and a container's line.
#[tokio::test]
async fn log_lines_matching_rules_raise_alerts() {
    use tracing_subscriber::layer::SubscriberExt;

    let (layer, feed) = alicia_monitor::log_layer();
    // Current-thread runtime: this subscriber sees every event of the test, the monitor's own included.
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let (_b, addr) = alicia_testkit::alicia_broker().await;
    let mut obs = Observer::start(addr, &["alicia/system/alerts"]).await;
    let mut m = monitoring(&[]);
    m.alerts.log_alert_window_secs = 1.0;
    let mut cfg = MonitorConfig::new(config(addr), m);
    cfg.tick = Duration::from_millis(100);
    cfg.log_feed = Some(feed);
    let mon = alicia_monitor::start(cfg).await.unwrap();

    tracing::info!(target: "alicia_router", "all fine");
    tracing::error!(target: "alicia_router", peer = "10.0.0.7", "upstream connection refused");
    let a = alert(&mut obs, |a| a["state"] == "firing").await;
    assert_eq!(a["alert"], "log_error", "{a}");
    assert_eq!(a["severity"], "warning");
    assert_eq!(a["service"], "alicia");
    let line = a["context"]["line"].as_str().unwrap();
    assert!(line.contains("ERROR alicia_router:") && line.contains("upstream connection refused"), "{line}");
    assert!(line.contains("peer=10.0.0.7") || line.contains("peer=\"10.0.0.7\""), "{line}");

    // Repeats are counted, not re-sent; the monitor's own "alert firing" log does not loop.
    tracing::error!(target: "alicia_router", "upstream connection refused again");
    mon.feed_log("container:web", "Traceback (most recent call last):");
    let b = alert(&mut obs, |a| a["state"] == "firing").await;
    assert_eq!((b["alert"].as_str(), b["severity"].as_str()), (Some("log_exception"), Some("critical")));
    assert_eq!(b["service"], "container:web");
    assert_eq!(b["context"]["source"], "container:web");
    // Both resolve after the window (1 s) without a new match, and nothing else fires.
    let mut resolved = 0;
    let deadline = Instant::now() + T;
    while resolved < 2 {
        assert!(Instant::now() < deadline);
        let p = obs.next().await;
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(v["state"], "resolved", "unexpected alert {v}");
        resolved += 1;
    }
    let text = mon.render_metrics();
    let m = parse_prometheus(&text);
    assert_eq!(m[&series("alicia_monitor_log_matches_total", &[("rule", "log_error")])], 2.0);
    assert_eq!(m[&series("alicia_monitor_log_matches_total", &[("rule", "log_exception")])], 1.0);
    mon.shutdown().await;
}

#[tokio::test]
async fn bad_settings_are_refused_at_start() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut m = monitoring(&[]);
    m.alerts.fire_after_secs = -1.0;
    let err = alicia_monitor::start(MonitorConfig::new(config(addr), m)).await.err().expect("refused");
    assert!(err.to_string().contains("monitoring.alerts.fire_after_secs"), "{err}");
    let mut m = monitoring(&[]);
    m.log_rules.push(alicia_config::LogRule {
        name: "bad".into(),
        pattern: "(".into(),
        severity: alicia_config::Severity::Warning,
        message: "m".into(),
    });
    let err = alicia_monitor::start(MonitorConfig::new(config(addr), m)).await.err().expect("refused");
    assert!(err.to_string().contains("bad"), "{err}");
}
