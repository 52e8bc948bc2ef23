//! `alicia devices list | show | watch` through the real binary, against a registry on an
//! in-process broker.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use alicia_envelope::Destination;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

async fn broker() -> (alicia_broker::Broker, SocketAddr) {
    let broker = alicia_broker::Broker::new(alicia_broker::Config::default());
    let listener = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(listener.serve());
    (broker, addr)
}

fn service_config(addr: SocketAddr) -> alicia_sdk::ServiceConfig {
    alicia_sdk::ServiceConfig {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ..alicia_sdk::ServiceConfig::broker(addr.ip().to_string(), addr.port())
    }
}

async fn register(addr: SocketAddr, registration: serde_json::Value) {
    let c = alicia_sdk::connect(service_config(addr).with_name("tester")).unwrap();
    c.request(Destination::service("device_registry"), registration, WAIT).await.expect("registered");
    c.shutdown().await;
}

fn alicia(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_alicia")).arg("devices").args(args).output().expect("alicia runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_and_watch() {
    let (_broker, addr) = broker().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = alicia_registry::RegistryConfig::new(service_config(addr), dir.path().join("registry.db"));
    let registry = alicia_registry::start(cfg).await.unwrap();
    registry.bus().wait_online(WAIT).await.unwrap();
    let seed: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/examples/envelopes/device_registration.json")).unwrap();
    register(addr, seed["payload"]["data"].clone()).await;

    // The broker comes from the home's alicia.yaml (its plain listener) when --broker is absent.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("alicia.yaml"),
        format!("broker:\n  listeners:\n    - {{ port: {}, address: 127.0.0.1 }}\n", addr.port()),
    )
    .unwrap();
    let home = home.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || alicia(&["list", "--home", &home])).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("DEVICE"), "{stdout}");
    assert!(lines[1].starts_with("sonos_kitchen_001") && lines[1].contains("online"), "{stdout}");
    assert!(lines[1].ends_with("audio_playback,volume_control"), "{stdout}");
    assert_eq!(lines[2], "1 device(s)");

    let b = addr.to_string();
    let out = tokio::task::spawn_blocking({
        let b = b.clone();
        move || alicia(&["show", "sonos_kitchen_001", "--broker", &b])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("control topic alicia/devices/sonos_kitchen_001/command"), "{stdout}");
    assert!(stdout.contains("\"mac_address\": \"00:11:22:33:44:55\""), "the full registration: {stdout}");

    let out = tokio::task::spawn_blocking({
        let b = b.clone();
        move || alicia(&["show", "ghost", "--broker", &b])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not_found") && stderr.contains("ghost"), "{stderr}");

    // watch: prints events as they happen, stops on Ctrl-C (SIGINT).
    let mut child = Command::new(env!("CARGO_BIN_EXE_alicia"))
        .args(["devices", "watch", "--broker", &b])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A watchdog: if nothing comes, the reads below end (EOF) and the test fails instead of hanging.
    let pid = child.id().to_string();
    std::thread::spawn({
        let pid = pid.clone();
        move || {
            std::thread::sleep(Duration::from_secs(30));
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    tokio::task::block_in_place(|| err.read_line(&mut line)).unwrap();
    assert!(line.starts_with("watching alicia/system/registry/events"), "{line}");
    register(addr, json!({"device_id": "temp_1", "device_type": "sensor", "capabilities": ["temperature"]})).await;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::task::block_in_place(|| out.read_line(&mut line)).unwrap();
    assert!(line.contains("  registered  temp_1  registered via"), "{line}");
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = tokio::task::block_in_place(|| child.wait()).unwrap();
    assert!(status.success(), "watch ends cleanly on Ctrl-C: {status}");
    registry.shutdown().await;
}
