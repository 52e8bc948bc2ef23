//! The home the device services are tested in: the real registry and router, simulated
//! devices (alicia-simulate), and the brokers and observer of alicia-testkit.

#![allow(dead_code)]

pub use alicia_testkit::*;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use alicia_simulate::{Kind, SimConfig, SimDevice};
use serde_json::Value;

pub struct Core {
    pub registry: alicia_registry::RegistryHandle,
    pub router: alicia_router::RouterHandle,
    _dir: tempfile::TempDir,
}

pub async fn core(addr: SocketAddr) -> Core {
    let dir = tempfile::tempdir().unwrap();
    let registry = alicia_registry::start(alicia_registry::RegistryConfig::new(config(addr), dir.path().join("r.db")))
        .await
        .unwrap();
    registry.bus().wait_online(WAIT).await.unwrap();
    let router = alicia_router::start(alicia_router::RouterConfig::new(config(addr))).await.unwrap();
    router.bus().wait_online(WAIT).await.unwrap();
    Core { registry, router, _dir: dir }
}

impl Core {
    pub async fn stop(self) {
        self.router.shutdown().await;
        self.registry.shutdown().await;
    }
}

pub fn sim(kind: Kind, id: &str, location: &str, addr: SocketAddr, audio: &Path) -> SimConfig {
    let mut c = SimConfig::new(kind, id, addr.ip().to_string(), addr.port()).at(location);
    c.heartbeat_interval = Duration::from_secs(1);
    c.telemetry_interval = Duration::from_secs(3600);
    c.audio_dir = audio.join(id);
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(500);
    c
}

pub async fn started(cfg: SimConfig) -> SimDevice {
    let d = alicia_simulate::start(cfg).await.unwrap();
    d.wait_registered(WAIT).await.expect("registered");
    d
}

/// Waits until the registry's retained inventory lists every id (online), so services that
/// follow it know them.
pub async fn in_inventory(addr: SocketAddr, ids: &[&str]) {
    let mut obs = Observer::start(addr, &["alicia/system/registry/devices"]).await;
    loop {
        let p = obs.next_on("alicia/system/registry/devices").await;
        let doc: Value = serde_json::from_slice(&p.payload).unwrap();
        let devices = doc["devices"].as_array().unwrap();
        if ids.iter().all(|id| devices.iter().any(|d| d["device_id"] == *id && d["status"] == "online")) {
            return;
        }
    }
}

/// A mono 16-bit WAV of `seconds`.
pub fn wav(path: &Path, seconds: f64) -> String {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(8000.0 * seconds) as usize {
        w.write_sample(if i % 2 == 0 { 10000i16 } else { -10000 }).unwrap();
    }
    w.finalize().unwrap();
    format!("file://{}", path.display())
}

pub fn names(d: &SimDevice) -> Vec<String> {
    d.commands().iter().map(|e| e.payload.data["command"].as_str().unwrap_or("?").to_string()).collect()
}

/// Polls until `f` holds (the service follows the inventory asynchronously).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
