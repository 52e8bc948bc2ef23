//! The dashboard over real HTTP: `/` and `/dashboard` serve one self-contained HTML page, and
//! every endpoint its script fetches answers with the JSON keys the script reads, the history
//! series included (broker message counters, router p99, devices), on both brokers.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use alicia_monitor::{MonitorConfig, MonitorHandle};
use alicia_testkit::{config, Mosquitto, Observer};
use common::{get, get_json, monitoring};
use serde_json::Value;
use tokio::time::Instant;

async fn start(addr: SocketAddr) -> (MonitorHandle, SocketAddr) {
    let mut cfg = MonitorConfig::new(config(addr), monitoring(&[]));
    cfg.tick = Duration::from_millis(100);
    let mon = alicia_monitor::start(cfg).await.unwrap();
    let (http, _task) = mon.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (mon, http)
}

async fn eventually<F: std::future::Future<Output = bool>>(what: &str, within: Duration, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The paths in the page's `fetch('…')` calls.
fn fetched_paths(html: &str) -> Vec<String> {
    html.split("fetch('").skip(1).map(|rest| rest.split('\'').next().unwrap().to_string()).collect()
}

/// A router snapshot: `observed` latencies so far, `fast` of them under 1 ms, the rest under 10 ms.
fn router_snapshot(fast: u64, observed: u64) -> Vec<u8> {
    format!(
        r#"{{"service":"router","instance":"r1","timestamp":"2026-01-01T00:00:00Z","metrics":[
        {{"name":"alicia_router_routed_total","type":"counter","help":"Envelopes routed","samples":[{{"labels":{{"destination":"device"}},"value":{observed}}}]}},
        {{"name":"alicia_router_latency_seconds","type":"histogram","help":"Routing latency","samples":[{{"labels":{{}},"buckets":[[0.001,{fast}],[0.01,{observed}],[0.1,{observed}],["+Inf",{observed}]],"sum":0.3,"count":{observed}}}]}}]}}"#
    )
    .into_bytes()
}

const REGISTRY_SNAPSHOT: &str = r#"{"service":"registry","instance":"g1","timestamp":"2026-01-01T00:00:00Z","metrics":[
    {"name":"alicia_registry_devices","type":"gauge","help":"Devices by status","samples":[{"labels":{"status":"online"},"value":3},{"labels":{"status":"offline"},"value":1}]}]}"#;

/// What the page reads from each endpoint, as JSON pointers (the page's key names).
const READS: &[(&str, &[&str])] = &[
    ("health", &["/status", "/bus", "/uptime_secs", "/alerts_active", "/containers/state"]),
    (
        "devices",
        &[
            "/devices/0/device_id",
            "/devices/0/device_type",
            "/devices/0/location",
            "/devices/0/status",
            "/devices/0/last_seen",
            "/devices/0/capabilities",
        ],
    ),
    (
        "ready",
        &[
            "/status",
            "/checks/bus/ok",
            "/checks/services/up",
            "/checks/services/missing",
            "/checks/containers/ok",
            "/checks/containers/required",
        ],
    ),
    ("alerts", &["/active/0/alert", "/active/0/severity", "/active/0/service", "/active/0/message", "/active/0/since"]),
    ("history", &["/interval_secs", "/points/0/timestamp"]),
];

/// Keys of history points the charts read (each chart degrades to "no data" without its key).
const POINT_READS: &[&str] = &[
    "/cpu_ratio",
    "/memory_used_bytes",
    "/memory_total_bytes",
    "/services_up",
    "/services_missing",
    "/metrics/alicia_router_routed_total",
    "/p99/alicia_router_latency_seconds",
    "/devices/online",
    "/devices/offline",
    "/broker/messages_received_total",
    "/broker/messages_sent_total",
    "/broker/clients_connected",
];

/// Runs the page's script once under Node (when installed) with a minimal DOM (the elements
/// the script writes to) and `fetch` resolving the page's relative paths against `base`;
/// returns each element's `{innerHTML, textContent, className}` after the first poll. Any
/// exception the script throws fails the run.
fn run_page(html: &str, base: &str) -> Option<Value> {
    use std::io::Write;
    const HARNESS: &str = r#"
const html = require('fs').readFileSync(0, 'utf8');
const script = html.split('<script>')[1].split('</script>')[0];
const els = {};
globalThis.document = { getElementById: (id) => els[id] || (els[id] = { innerHTML: '', textContent: '', className: '' }) };
const realFetch = globalThis.fetch;
globalThis.fetch = (p, o) => realFetch(new URL(p, process.env.PAGE_BASE), o);
globalThis.setInterval = () => 0;
process.on('unhandledRejection', (e) => { console.error(e); process.exit(1); });
new Function(script)();
setTimeout(() => { console.log(JSON.stringify(els)); }, 1500);
"#;
    let probe = std::process::Command::new("node").arg("--version").output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("note: node is not installed; the page's script is not executed");
        return None;
    }
    let mut child = std::process::Command::new("node")
        .args(["-e", HARNESS])
        .env("PAGE_BASE", base)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(html.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the page's script failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// An element's text as the page left it (markup and text content together).
fn shown(page: &Value, id: &str) -> String {
    format!("{} {}", page[id]["innerHTML"].as_str().unwrap_or(""), page[id]["textContent"].as_str().unwrap_or(""))
}

/// The chart titles in the page, as drawn in `<figcaption><b>…</b>`.
fn chart_titles(charts: &str) -> Vec<String> {
    charts.split("<figcaption><b>").skip(1).map(|r| r.split("</b>").next().unwrap().to_string()).collect()
}

fn points(h: &Value) -> Vec<Value> {
    h["points"].as_array().cloned().unwrap_or_default()
}

async fn dashboard(addr: SocketAddr, broker: Option<alicia_broker::Broker>) {
    let pubr = Observer::start(addr, &["alicia/none"]).await;
    let (mon, http) = start(addr).await;
    let alicia = broker.is_some();
    if let Some(b) = broker {
        // As `alicia up` does: the embedded broker's metrics text (it has no $SYS here).
        mon.set_extra_metrics(std::sync::Arc::new(move || b.metrics()));
    }

    // The page: HTML, self-contained, the same at / and /dashboard.
    let (code, ctype, html) = get(http, "/").await;
    assert_eq!(code, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(html.starts_with("<!doctype html>") && html.contains("<title>Alicia"), "not the page");
    assert!(html.contains("<svg") || html.contains("'<svg"), "charts are inline SVG");
    assert_eq!(get(http, "/dashboard").await, (200, ctype.clone(), html.clone()));
    let lower = html.to_ascii_lowercase();
    for external in ["http://", "https://", "src=", "<link", "@import", "url("] {
        assert!(!lower.contains(external), "the page refers to something outside itself: {external}");
    }
    let paths = fetched_paths(&html);
    let mut names: Vec<&str> = paths.iter().map(|p| p.split('?').next().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["alerts", "devices", "health", "history", "ready"], "{paths:?}");
    // The registry's retained inventory, in its shape (the design document's device model).
    let inventory = serde_json::json!({"updated": "2025-01-08T14:30:00.000Z", "devices": [
        {"device_id": "sonos_kitchen_001", "device_type": "speaker", "name": "sonos_kitchen_001", "location": "kitchen",
         "status": "online", "last_seen": 1736346600.0, "last_seen_at": "2025-01-08T14:30:00.000Z",
         "capabilities": [{"name": "audio_playback", "version": "1.0.0", "parameters": {}, "endpoints": {}},
                          {"name": "volume_control", "parameters": {}, "endpoints": {}}]},
        {"device_id": "esp32_sensor_001", "device_type": "sensor", "name": "Hall sensor", "location": null,
         "status": "unknown", "last_seen_at": "2025-01-08T14:29:00.000Z",
         "capabilities": [{"name": "temperature", "parameters": {"unit": "°C"}, "endpoints": {}}]}
    ]});
    pubr.client
        .publish("alicia/system/registry/devices", alicia_sdk::QoS::AtLeastOnce, true, inventory.to_string())
        .await
        .unwrap();
    eventually("the devices from the inventory", Duration::from_secs(10), || async {
        get_json(http, "/devices").await.1["count"] == 2
    })
    .await;
    let (_, devices) = get_json(http, "/devices").await;
    assert_eq!(devices["devices"][0]["capabilities"], serde_json::json!(["audio_playback", "volume_control"]));
    assert_eq!(devices["devices"][1]["last_seen"], "2025-01-08T14:29:00.000Z");

    // Data for every chart: a router and a registry snapshot, then more routed envelopes,
    // and an alert (a log line) so the alert list has an entry.
    let metrics = |svc: &str| format!("alicia/system/metrics/{svc}");
    let qos = alicia_sdk::QoS::AtMostOnce;
    pubr.client.publish(metrics("router"), qos, true, router_snapshot(50, 100)).await.unwrap();
    pubr.client.publish(metrics("registry"), qos, true, REGISTRY_SNAPSHOT.as_bytes().to_vec()).await.unwrap();
    mon.feed_log("container:web", "Traceback (most recent call last):");
    // Wait until a point holds the first snapshot, then add 100 observations, all over 1 ms.
    eventually("first snapshot in the history", Duration::from_secs(10), || async {
        points(&get_json(http, "/history").await.1).iter().any(|p| p["metrics"]["alicia_router_routed_total"] == 100.0)
    })
    .await;
    pubr.client.publish(metrics("router"), qos, true, router_snapshot(50, 200)).await.unwrap();
    // Mosquitto publishes $SYS every 10 s; Alicia's broker metrics are read at each point.
    eventually("every series in the history", Duration::from_secs(25), || async {
        let pts = points(&get_json(http, "/history").await.1);
        pts.iter().any(|p| p["metrics"]["alicia_router_routed_total"] == 200.0)
            && POINT_READS.iter().all(|k| pts.iter().any(|p| p.pointer(k).is_some()))
    })
    .await;

    // Every endpoint the page fetches answers 200 with the keys the page reads.
    for path in &paths {
        let (code, body) = get_json(http, &format!("/{path}")).await;
        assert_eq!(code, 200, "{path}: {body}");
        let name = path.split('?').next().unwrap();
        let reads = READS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{path} not checked")).1;
        for pointer in reads {
            assert!(body.pointer(pointer).is_some(), "{path} lacks {pointer}: {body}");
        }
        if name == "history" {
            let pts = points(&body);
            for pointer in POINT_READS {
                assert!(pts.iter().any(|p| p.pointer(pointer).is_some()), "no point has {pointer}: {body}");
            }
        }
    }
    // The keys above are the ones the page reads.
    for pointer in READS.iter().flat_map(|r| r.1.iter()).chain(POINT_READS) {
        let key = pointer.rsplit('/').find(|k| k.parse::<usize>().is_err()).unwrap();
        assert!(html.contains(key), "the page does not read {key}; the test list is stale");
    }

    // The values behind the charts are right. p99 covers each interval only: the first 100
    // observations (half ≤ 1 ms) give 1 ms + 9 ms × 49/50, the next 100 (all in (1 ms, 10 ms])
    // 1 ms + 9 ms × 99/100 (over all 200 it would be 1 ms + 9 ms × 148/150); quiet intervals
    // have none.
    let (_, h) = get_json(http, "/history").await;
    let p99s: Vec<f64> =
        points(&h).iter().filter_map(|p| p.pointer("/p99/alicia_router_latency_seconds")?.as_f64()).collect();
    let close = |x: f64, y: f64| (x - y).abs() < 1e-9;
    assert!(p99s.iter().any(|v| close(*v, 0.00982)), "{p99s:?}");
    assert!(p99s.iter().any(|v| close(*v, 0.00991)), "{p99s:?}");
    assert_eq!(p99s.len(), 2, "{p99s:?}");
    let last = points(&h).last().cloned().unwrap();
    assert_eq!((last["devices"]["online"].as_f64(), last["devices"]["offline"].as_f64()), (Some(3.0), Some(1.0)));
    if alicia {
        // Read live from the broker: this test's client and the monitor's two are connected.
        assert!(last["broker"]["clients_connected"].as_f64().unwrap() >= 3.0, "{last}");
        assert!(last["broker"]["messages_received_total"].as_f64().unwrap() >= 3.0, "{last}");
    }
    let (_, alerts) = get_json(http, "/alerts").await;
    assert_eq!(alerts["active"][0]["severity"], "critical", "{alerts}");

    // The page itself, run against this monitor: everything drawn, every chart has data, and
    // what colour says is said in words or symbols too.
    if let Some(page) = tokio::task::block_in_place(|| run_page(&html, &format!("http://{http}/dashboard"))) {
        assert!(shown(&page, "overall").contains("✓ Ready"), "{page}");
        let tiles = shown(&page, "tiles");
        assert!(tiles.contains("<b>monitor</b><span class=\"st\">✓ up"), "{tiles}");
        assert_eq!(tiles.matches("<li").count(), 3, "bus, monitor, containers: {tiles}");
        assert!(shown(&page, "uptime").contains("Monitor up for"), "{page}");
        assert!(tiles.contains("<b>bus</b><span class=\"st\">✓ up"), "{tiles}");
        let alerts = shown(&page, "alerts");
        assert!(alerts.contains("[!!] critical") && alerts.contains("log_exception"), "{alerts}");
        assert!(alerts.contains("container:web") && alerts.contains("since <time datetime="), "{alerts}");
        assert!(shown(&page, "engine").contains("Disabled"), "{page}");
        let devices = shown(&page, "devices");
        assert!(
            devices
                .contains("<th scope=\"row\">sonos_kitchen_001</th><td>speaker</td><td>kitchen</td><td>● online</td>"),
            "{devices}"
        );
        assert!(devices.contains("audio_playback, volume_control") && devices.contains("? unknown"), "{devices}");
        assert!(devices.contains("Hall sensor"), "{devices}");
        assert_eq!(shown(&page, "device-count").trim(), "(2)");
        let charts = shown(&page, "charts");
        let titles = chart_titles(&charts);
        assert_eq!(titles.len(), 8, "{charts}");
        assert!(!charts.contains("no data"), "every series has data: {charts}");
        assert_eq!(charts.matches("<polyline").count(), 11, "one line per series: {charts}");
        assert!(charts.contains("aria-label=\"Devices: online now 3, min 3, max 3; offline now 1"), "{charts}");
        assert!(charts.contains("Router p99 latency: p99 now 9.91 ms"), "{charts}");
    }
    mon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_alicia_broker() {
    let (b, addr) = alicia_testkit::alicia_broker().await;
    dashboard(addr, Some(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    dashboard(m.addr, None).await;
}

/// Without any data the endpoints still answer, the history's older keys are unchanged, and
/// the page degrades (also when the monitor is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_stays_backward_compatible_without_data() {
    let (_b, addr) = alicia_testkit::alicia_broker().await;
    let (mon, http) = start(addr).await;
    eventually("a history point", Duration::from_secs(10), || async {
        !points(&get_json(http, "/history").await.1).is_empty()
    })
    .await;
    let p = points(&get_json(http, "/history").await.1).remove(0);
    // Errors have the shape of every Alicia HTTP API (alicia_sdk::ApiError).
    let (status, body) = get_json(http, "/history?minutes=soon").await;
    assert_eq!((status, body["error"].as_str(), body["field"].as_str()), (400, Some("invalid_query"), Some("minutes")));
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let (status, body) = get_json(http, "/nothing").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    for key in [
        "timestamp",
        "cpu_ratio",
        "memory_used_bytes",
        "memory_total_bytes",
        "network_received_bytes_total",
        "network_transmitted_bytes_total",
        "services_up",
        "services_missing",
        "alerts_active",
        "metrics",
    ] {
        assert!(p.get(key).is_some(), "{key} missing: {p}");
    }
    // No snapshot and no broker metrics: those series are absent, not zero.
    assert!(p.get("devices").is_none() && p.get("broker").is_none(), "{p}");
    assert_eq!(p["p99"], serde_json::json!({}));

    // The page degrades: charts without their series say so in words; the rest is drawn.
    eventually("ready", Duration::from_secs(10), || async { get_json(http, "/ready").await.0 == 200 }).await;
    let (_, _, html) = get(http, "/").await;
    if let Some(page) = tokio::task::block_in_place(|| run_page(&html, &format!("http://{http}/"))) {
        let charts = shown(&page, "charts");
        for title in ["Messages through the broker", "Router p99 latency", "Devices", "Envelopes routed"] {
            let figure = charts.split("<figure>").find(|f| f.contains(&format!("<b>{title}</b>"))).unwrap();
            assert!(figure.contains("No data in the last hour") && !figure.contains("<svg"), "{figure}");
        }
        let cpu = charts.split("<figure>").find(|f| f.contains("<b>CPU</b>")).unwrap();
        assert!(cpu.contains("<polyline") && cpu.contains("role=\"img\" aria-label=\"CPU: CPU now"), "{cpu}");
        assert!(shown(&page, "alerts").contains("No active alerts"), "{page}");
        assert!(shown(&page, "overall").contains("✓ Ready"), "{page}");
        assert!(shown(&page, "engine").contains("Disabled"), "{page}");
        assert!(shown(&page, "devices").contains("No devices registered yet"), "{page}");
        assert_eq!(shown(&page, "device-count").trim(), "(0)");
    }
    mon.shutdown().await;

    // No monitor there (a port nobody listens on): the page says so instead of failing.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    if let Some(page) = tokio::task::block_in_place(|| run_page(&html, &format!("http://{closed}/"))) {
        assert!(shown(&page, "overall").contains("✗ Monitor unreachable"), "{page}");
        assert!(shown(&page, "updated").contains("did not answer"), "{page}");
        assert!(shown(&page, "engine").contains("No container engine information"), "{page}");
    }
}
