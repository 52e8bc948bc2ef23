//! Container monitoring. No Docker engine runs on this project's machines, so: (1) an
//! unreachable socket gives a clear `unavailable` state (health detail, metric, one info alert)
//! and the monitor keeps working; (2) a fake engine (axum on a unix socket, answering the few
//! Engine API endpoints the monitor uses, in the engine's JSON and log stream formats) proves
//! the client code end to end: containers, health, restarts, memory, CPU, and logs to alerts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use alicia_monitor::{EngineState, MonitorConfig};
use alicia_testkit::{config, Observer};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{get_json, monitoring, parse_prometheus, series};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(10);

async fn next_alert(obs: &mut Observer, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "no matching alert in time");
        let p = obs.next().await;
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        if pred(&v) {
            return v;
        }
    }
}

/// A machine without Docker (the usual case): a state and a log line, no alert.
#[tokio::test]
async fn no_engine_installed_is_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, addr) = alicia_testkit::alicia_broker().await;
    let mut obs = Observer::start(addr, &["alicia/system/alerts"]).await;
    let mut m = monitoring(&[]);
    m.docker.enabled = true;
    m.docker.socket = dir.path().join("docker.sock");
    m.docker.retry_secs = 1;
    let mut cfg = MonitorConfig::new(config(addr), m);
    cfg.tick = Duration::from_millis(100);
    let mon = alicia_monitor::start(cfg).await.unwrap();
    let (http, _t) = mon.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !matches!(mon.engine_state(), EngineState::NotInstalled { .. }) {
        assert!(std::time::Instant::now() < deadline, "{:?}", mon.engine_state());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, health) = get_json(http, "/health").await;
    assert_eq!(health["containers"]["state"], "not_installed");
    let (_, ready) = get_json(http, "/ready").await;
    assert_eq!(ready["checks"]["containers"]["ok"], true, "nothing to monitor is not a fault");
    obs.quiet(Duration::from_millis(2500)).await;
    mon.shutdown().await;
}

/// A socket that does not answer as an engine: reported, one alert, never fatal.
#[tokio::test]
async fn unreachable_engine_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (_b, addr) = alicia_testkit::alicia_broker().await;
    let mut obs = Observer::start(addr, &["alicia/system/alerts"]).await;
    let mut m = monitoring(&[]);
    m.docker.enabled = true;
    m.docker.socket = dir.path().join("docker.sock");
    // Something listens there, and closes every connection at once.
    let listener = tokio::net::UnixListener::bind(&m.docker.socket).unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    m.docker.retry_secs = 1;
    let mut cfg = MonitorConfig::new(config(addr), m);
    cfg.tick = Duration::from_millis(100);
    let mon = alicia_monitor::start(cfg).await.unwrap();
    let (http, _t) = mon.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();

    let a = next_alert(&mut obs, |a| a["alert"] == "container_engine_unavailable").await;
    assert_eq!((a["severity"].as_str(), a["state"].as_str()), (Some("info"), Some("firing")));
    assert!(a["message"].as_str().unwrap().contains("docker.sock"), "{a}");
    let EngineState::Unavailable { reason, .. } = mon.engine_state() else { panic!("{:?}", mon.engine_state()) };
    assert!(reason.contains("docker.sock"), "{reason}");
    let (code, health) = get_json(http, "/health").await;
    assert_eq!(code, 200);
    assert_eq!(health["containers"]["state"], "unavailable");
    assert!(health["containers"]["reason"].as_str().unwrap().contains("docker.sock"), "{health}");
    let (_, ready) = get_json(http, "/ready").await;
    assert_eq!(ready["checks"]["containers"]["ok"], false);
    assert_eq!(ready["checks"]["containers"]["required"], false);
    let m = parse_prometheus(&common::get(http, "/metrics").await.2);
    assert_eq!(m[&series("alicia_monitor_container_engine_up", &[("state", "unavailable")])], 0.0);
    // Retries (every second here) do not repeat the alert: one info alert while unavailable.
    obs.quiet(Duration::from_millis(2500)).await;
    mon.shutdown().await;
}

/// The fake engine: the Engine API paths (after the `/v1.xx` prefix) the monitor calls.
async fn fake_engine(calls: Arc<Mutex<Vec<String>>>, req: Request<Body>) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    calls.lock().push(format!("{path}?{query}"));
    // Versioned (`/v1.49/containers/json`) or not (`/version`).
    let path = path.trim_start_matches('/');
    let tail = match path.split_once('/') {
        Some((v, t)) if v.starts_with('v') && v[1..].starts_with(|c: char| c.is_ascii_digit()) => t,
        _ => path,
    };
    let json_ok = |v: Value| (StatusCode::OK, [("content-type", "application/json")], v.to_string()).into_response();
    match tail {
        "version" => json_ok(json!({"Version": "28.0.0", "ApiVersion": "1.49", "Os": "linux", "Arch": "amd64"})),
        "containers/json" => json_ok(json!([
            {"Id": "aaa111", "Names": ["/web"], "Image": "nginx:1", "State": "running", "Status": "Up 1 hour"},
            {"Id": "bbb222", "Names": ["/old"], "Image": "busybox", "State": "exited", "Status": "Exited (0)"}
        ])),
        "containers/aaa111/json" => json_ok(json!({
            "Id": "aaa111", "Name": "/web", "RestartCount": 3,
            "State": {"Status": "running", "Running": true, "Health": {"Status": "unhealthy", "FailingStreak": 4}}
        })),
        "containers/bbb222/json" => json_ok(json!({
            "Id": "bbb222", "Name": "/old", "RestartCount": 0, "State": {"Status": "exited", "Running": false}
        })),
        "containers/aaa111/stats" => json_ok(json!({
            "memory_stats": {"usage": 52428800u64, "limit": 1073741824u64},
            "cpu_stats": {"cpu_usage": {"total_usage": 3000}, "system_cpu_usage": 20000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1000}, "system_cpu_usage": 10000, "online_cpus": 2}
        })),
        "containers/aaa111/logs" => {
            // The multiplexed stream of a container without a TTY: 8-byte header, then the bytes.
            let mut body = Vec::new();
            for (stream, line) in [(1u8, "GET / 200\n"), (2u8, "ERROR upstream: connection refused\n")] {
                body.extend_from_slice(&[stream, 0, 0, 0]);
                body.extend_from_slice(&(line.len() as u32).to_be_bytes());
                body.extend_from_slice(line.as_bytes());
            }
            (StatusCode::OK, [("content-type", "application/vnd.docker.multiplexed-stream")], body).into_response()
        }
        _ => {
            (StatusCode::NOT_FOUND, [("content-type", "application/json")], r#"{"message":"not here"}"#).into_response()
        }
    }
}

#[tokio::test]
async fn fake_engine_containers_are_monitored() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let c = calls.clone();
    let app = axum::Router::new().fallback(move |req: Request<Body>| fake_engine(c.clone(), req));
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_b, addr) = alicia_testkit::alicia_broker().await;
    let mut obs = Observer::start(addr, &["alicia/system/alerts"]).await;
    let mut m = monitoring(&[]);
    m.docker.enabled = true;
    m.docker.socket = sock.clone();
    m.docker.poll_secs = 1;
    let mut cfg = MonitorConfig::new(config(addr), m);
    cfg.tick = Duration::from_millis(100);
    let mon = alicia_monitor::start(cfg).await.unwrap();
    let (http, _t) = mon.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();

    // The container's log line reaches the analyzer, with the container as the source.
    let log = next_alert(&mut obs, |a| a["service"] == "container:web" && a["alert"] == "log_error").await;
    assert!(log["context"]["line"].as_str().unwrap().contains("connection refused"), "{log}");
    // Its failing health check is a (damped) warning.
    let unhealthy = next_alert(&mut obs, |a| a["alert"] == "container_unhealthy").await;
    assert_eq!(unhealthy["context"]["restart_count"], 3);
    assert_eq!(unhealthy["severity"], "warning");

    assert!(matches!(mon.engine_state(), EngineState::Available { ref version } if version == "1.49"));
    let (_, health) = get_json(http, "/health").await;
    assert_eq!(health["containers"]["state"], "available");
    let m = parse_prometheus(&common::get(http, "/metrics").await.2);
    assert_eq!(m[&series("alicia_monitor_container_engine_up", &[("state", "available")])], 1.0);
    assert_eq!(m[&series("alicia_container_restarts", &[("container", "web")])], 3.0);
    assert_eq!(m[&series("alicia_container_restarts", &[("container", "old")])], 0.0);
    assert_eq!(m[&series("alicia_container_memory_bytes", &[("container", "web")])], 52428800.0);
    assert_eq!(m[&series("alicia_container_cpu_ratio", &[("container", "web")])], 0.4);
    assert_eq!(m[&series("alicia_container_healthy", &[("container", "web"), ("health", "unhealthy")])], 0.0);

    // Only running containers are asked for stats and logs; logs since the last poll, bounded.
    let calls = calls.lock().clone();
    assert!(calls.iter().any(|c| c.contains("/containers/json?") && c.contains("all=true")), "{calls:?}");
    assert!(calls.iter().any(|c| c.contains("/containers/aaa111/logs?") && c.contains("tail=100")), "{calls:?}");
    assert!(!calls.iter().any(|c| c.contains("bbb222/stats") || c.contains("bbb222/logs")), "{calls:?}");

    // The engine goes away, leaving its socket: reported, not fatal.
    server.abort();
    let gone = next_alert(&mut obs, |a| a["alert"] == "container_engine_unavailable").await;
    assert_eq!(gone["state"], "firing");
    mon.shutdown().await;
}
