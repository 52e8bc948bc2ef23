//! Simulated devices against the real registry and router, over Alicia's broker and Mosquitto:
//! they register in the design document's format, obey commands routed to `device_id:`,
//! answer requests with their state, refuse what is outside their capability parameters,
//! keep their state retained, play into WAV files, report telemetry, and their will fires
//! when they die.

use std::net::SocketAddr;
use std::time::Duration;

use alicia_envelope::{Destination, Envelope};
use alicia_sdk::SdkError;
use alicia_simulate::{Kind, SimConfig, SimDevice, SimEvent};
use alicia_testkit::{alicia_broker, client, config, Mosquitto, Observer, WAIT};
use serde_json::{json, Value};

struct Core {
    registry: alicia_registry::RegistryHandle,
    router: alicia_router::RouterHandle,
    _dir: tempfile::TempDir,
}

async fn core(addr: SocketAddr) -> Core {
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
    async fn stop(self) {
        self.router.shutdown().await;
        self.registry.shutdown().await;
    }
}

fn sim(kind: Kind, id: &str, addr: SocketAddr, audio: &std::path::Path) -> SimConfig {
    let mut c = SimConfig::new(kind, id, addr.ip().to_string(), addr.port()).at("kitchen");
    c.heartbeat_interval = Duration::from_secs(1);
    c.telemetry_interval = Duration::from_millis(200);
    c.audio_dir = audio.to_path_buf();
    c.playback_speed = 4.0;
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(500);
    c
}

async fn started(cfg: SimConfig) -> SimDevice {
    let d = alicia_simulate::start(cfg).await.unwrap();
    d.wait_registered(WAIT).await.expect("registered");
    d
}

/// The device as the registry's retained inventory shows it, once `pred` holds.
async fn inventory_entry(addr: SocketAddr, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut obs = Observer::start(addr, &["alicia/system/registry/devices"]).await;
    loop {
        let p = obs.next_on("alicia/system/registry/devices").await;
        let doc: Value = serde_json::from_slice(&p.payload).unwrap();
        if let Some(d) = doc["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == id) {
            if pred(d) {
                return d.clone();
            }
        }
    }
}

fn command(name: &str, parameters: Value) -> Value {
    json!({ "command": name, "parameters": parameters })
}

async fn light_and_switch(addr: SocketAddr) {
    let core = core(addr).await;
    let audio = tempfile::tempdir().unwrap();
    let light = started(sim(Kind::Light, "sim_light", addr, audio.path())).await;

    let d = inventory_entry(addr, "sim_light", |d| d["status"] == "online").await;
    assert_eq!(d["device_type"], "light");
    assert_eq!(d["location"], "kitchen");
    let caps: Vec<&str> = d["capabilities"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(caps, ["on_off", "brightness", "color_temperature"]);
    assert_eq!(d["capabilities"][2]["parameters"]["max_kelvin"], 6500);
    assert_eq!(d["endpoints"]["control"], "alicia/devices/sim_light/command");

    let tester = client(config(addr)).await;
    let to = Destination::device("sim_light");
    // A request through the router is answered with the new state.
    let answer = tester.request(to.clone(), command("set_brightness", json!({"brightness": 30})), WAIT).await.unwrap();
    assert_eq!(answer.payload.data["brightness"], 30);
    assert_eq!(answer.payload.data["power"], "off");
    // A command has no answer; its effect shows on the retained state topic.
    tester.send(&Envelope::command("tester", to.clone(), command("turn_on", json!({})))).await.unwrap();
    light.wait_state(|s| s["power"] == "on", WAIT).await.unwrap();
    let mut obs = Observer::start(addr, &["alicia/devices/sim_light/state"]).await;
    let retained: Value = serde_json::from_slice(&obs.next().await.payload).unwrap();
    assert_eq!((retained["power"].as_str(), retained["brightness"].as_i64()), (Some("on"), Some(30)));
    assert!(retained["updated"].is_string());

    // Outside the capability's parameters, and unknown commands: refused, nothing changes.
    let e = tester.request(to.clone(), command("set_brightness", json!({"brightness": 101})), WAIT).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "invalid_parameters"), "{e:?}");
    let e = tester.request(to.clone(), command("set_volume", json!({"volume": 3})), WAIT).await;
    assert!(
        matches!(&e, Err(SdkError::Remote { code, message, .. }) if code == "unknown_command" && message.contains("set_color_temp")),
        "{e:?}"
    );
    assert_eq!(light.state()["brightness"], 30);
    let answer = tester.request(to.clone(), command("set_color_temp", json!({"kelvin": 4000})), WAIT).await.unwrap();
    assert_eq!(answer.payload.data["color_temp_kelvin"], 4000);
    assert_eq!(light.commands().len(), 5);
    // A retry (the same message id) is answered but applied once: a toggle sent twice toggles once.
    let toggle = Envelope::request("tester", to.clone(), command("toggle", json!({})));
    let first = tester.request_envelope(toggle.clone(), WAIT).await.unwrap();
    let second = tester.request_envelope(toggle, WAIT).await.unwrap();
    assert_eq!(first.payload.data["power"], "off");
    assert_eq!(second.payload.data["power"], "off", "not toggled back");
    assert_eq!(light.commands().len(), 7);
    tester.send(&Envelope::command("tester", to.clone(), command("turn_on", json!({})))).await.unwrap();
    light.wait_state(|s| s["power"] == "on", WAIT).await.unwrap();

    // A switch by capability: the router picks the one provider.
    let switch = started(sim(Kind::Switch, "sim_switch", addr, audio.path())).await;
    let answer = tester.request(Destination::capability("on_off"), command("toggle", json!({})), WAIT).await;
    // Two providers of on_off now (the light, on, and the switch, off): whichever answered
    // toggled, and only that one.
    let data = answer.unwrap().payload.data;
    let toggled_light = light.state()["power"] == "off";
    let toggled_switch = switch.state()["power"] == "on";
    assert!(toggled_light != toggled_switch, "exactly one toggled: {data}");
    assert_eq!(data["power"], if toggled_light { "off" } else { "on" });

    // Death: the will says offline, and the registry believes it.
    let mut status = Observer::start(addr, &["alicia/devices/sim_switch/status"]).await;
    assert_eq!(&status.next().await.payload[..], b"online");
    switch.crash().await;
    assert_eq!(&status.next().await.payload[..], b"offline");
    inventory_entry(addr, "sim_switch", |d| d["status"] == "offline").await;

    // A clean stop: offline said by the device itself, no will needed.
    let mut status = Observer::start(addr, &["alicia/devices/sim_light/status"]).await;
    assert_eq!(&status.next().await.payload[..], b"online");
    light.stop().await;
    assert_eq!(&status.next().await.payload[..], b"offline");

    tester.shutdown().await;
    core.stop().await;
}

async fn speaker(addr: SocketAddr) {
    let core = core(addr).await;
    let audio = tempfile::tempdir().unwrap();
    let spk = started(sim(Kind::Speaker, "sim_speaker", addr, audio.path())).await;
    let mut events = spk.events();
    let tester = client(config(addr)).await;
    let to = Destination::device("sim_speaker");

    // A one-second clip at full scale.
    let clip = audio.path().join("music-src.wav");
    {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&clip, spec).unwrap();
        for i in 0..8000 {
            w.write_sample(if i % 2 == 0 { 20000i16 } else { -20000 }).unwrap();
        }
        w.finalize().unwrap();
    }
    let url = format!("file://{}", clip.display());
    let answer =
        tester.request(to.clone(), command("play_audio", json!({"audio_url": url, "volume": 50})), WAIT).await.unwrap();
    assert_eq!(answer.payload.data["playback"], "playing");
    assert_eq!(answer.payload.data["volume"], 50);
    let played = spk.played();
    assert_eq!(played.len(), 1);
    let mut r = hound::WavReader::open(&played[0]).unwrap();
    let peak = r.samples::<i16>().map(|s| s.unwrap().unsigned_abs()).max().unwrap();
    assert!((9900..=10100).contains(&peak), "half volume halves the samples: peak {peak}");

    // An announcement over the music ducks it, then ends; the music goes on.
    let answer =
        tester.request(to.clone(), command("announce", json!({"text": "dinner is ready"})), WAIT).await.unwrap();
    assert_eq!(answer.payload.data["announcing"], true);
    assert_eq!(answer.payload.data["playback"], "playing");
    assert_eq!(answer.payload.data["last_announcement"], "dinner is ready");
    spk.wait_state(|s| s["announcing"] == false, WAIT).await.unwrap();
    // The clip lasts 1 s at 4x: 0.25 s; then the speaker is idle.
    spk.wait_state(|s| s["playback"] == "idle", WAIT).await.unwrap();

    // Volume within the parameters, muting, and an unreadable URL.
    let e = tester.request(to.clone(), command("set_volume", json!({"volume": 120})), WAIT).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "invalid_parameters"), "{e:?}");
    let a = tester.request(to.clone(), command("volume_step", json!({"steps": -3})), WAIT).await.unwrap();
    assert_eq!(a.payload.data["volume"], 35);
    let a = tester.request(to.clone(), command("mute", json!({})), WAIT).await.unwrap();
    assert_eq!(a.payload.data["muted"], true);
    let e = tester.request(to.clone(), command("play_audio", json!({"audio_url": "file:///no/such.wav"})), WAIT).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "fetch_failed"), "{e:?}");
    let mut seen_played = 0;
    while let Ok(ev) = events.try_recv() {
        if matches!(ev, SimEvent::Played { .. }) {
            seen_played += 1;
        }
    }
    assert_eq!(seen_played, 2);
    tester.shutdown().await;
    spk.stop().await;
    core.stop().await;
}

async fn sensor(addr: SocketAddr) {
    let core = core(addr).await;
    let audio = tempfile::tempdir().unwrap();
    let mut obs = Observer::start(addr, &["alicia/devices/sim_sensor/telemetry"]).await;
    let s = started(sim(Kind::Sensor, "sim_sensor", addr, audio.path())).await;
    let d = inventory_entry(addr, "sim_sensor", |d| d["status"] == "online").await;
    assert_eq!(
        d["capabilities"][0]["parameters"],
        json!({"unit": "°C", "min": -40.0, "max": 85.0, "device_class": "temperature"})
    );
    let first: Value = serde_json::from_slice(&obs.next().await.payload).unwrap();
    assert_eq!(first["device_id"], "sim_sensor");
    assert_eq!(first["readings"][0]["capability"], "temperature");
    assert_eq!(first["readings"][0]["unit"], "°C");
    assert_eq!(first["readings"][1]["unit"], "%");
    s.set_reading("temperature", 31.5);
    loop {
        let t: Value = serde_json::from_slice(&obs.next().await.payload).unwrap();
        if t["readings"][0]["value"] == 31.5 {
            break;
        }
    }
    s.wait_state(
        |st| st["temperature"] == 31.5 || st["temperature"].as_f64().is_some_and(|v| (v - 31.5).abs() < 1.0),
        WAIT,
    )
    .await
    .unwrap();
    // A sensor knows no commands.
    let tester = client(config(addr)).await;
    let e = tester.request(Destination::device("sim_sensor"), command("turn_on", json!({})), WAIT).await;
    assert!(matches!(&e, Err(SdkError::Remote { code, .. }) if code == "unknown_command"), "{e:?}");
    tester.shutdown().await;
    s.stop().await;
    core.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lights_and_switches_on_alicia() {
    let (_b, addr) = alicia_broker().await;
    light_and_switch(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lights_and_switches_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    light_and_switch(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_on_alicia() {
    let (_b, addr) = alicia_broker().await;
    speaker(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    speaker(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_on_alicia() {
    let (_b, addr) = alicia_broker().await;
    sensor(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_on_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    sensor(m.addr).await;
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let audio = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut bad = sim(Kind::Light, "a/b", addr, audio.path());
    let e = alicia_simulate::start(bad.clone()).await.err().unwrap();
    assert!(e.to_string().contains("topic level"), "{e}");
    bad.device_id = "ok_id".into();
    bad.speaker.step_size = 0;
    assert!(alicia_simulate::start(bad.clone()).await.is_err());
    bad.speaker.step_size = 1;
    bad.credentials = alicia_simulate::Credentials::Certificate;
    let e = alicia_simulate::start(bad).await.err().unwrap();
    assert!(e.to_string().contains("client certificate"), "{e}");
}
