//! The sections of the device services (`speaker_manager`, `sensor_data`, `actuator_control`)
//! and the integration services (`data_store`, `ha_bridge`). Like every section: every field
//! has a default, unknown keys are refused.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Severity;

/// The speaker manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeakerManagerConfig {
    pub enabled: bool,
    /// Announcements and queued tracks that may wait per speaker; more are refused (`queue_full`).
    pub queue_limit: usize,
    /// Longest an announcement may take before the next one is started anyway.
    pub announcement_timeout_secs: f64,
    /// How long a speaker has to answer a command.
    pub command_timeout_ms: u64,
    /// Where the spoken announcements for speakers that cannot speak text are served
    /// (`GET /media/<id>.wav`); `null` turns that off (such speakers then get the text only).
    /// The default, a free loopback port, serves speakers on this machine.
    pub media_http: Option<String>,
    /// The URL speakers fetch those clips from, when it is not `http://<media_http>` (a host
    /// name or address speakers on the network reach, e.g. `http://alicia.lan:8095`).
    pub media_url: Option<String>,
}

impl Default for SpeakerManagerConfig {
    fn default() -> Self {
        SpeakerManagerConfig {
            enabled: true,
            queue_limit: 32,
            announcement_timeout_secs: 120.0,
            command_timeout_ms: 3000,
            media_http: Some("127.0.0.1:0".into()),
            media_url: None,
        }
    }
}

/// A threshold on sensor readings: crossing it fires an alert on `alicia/system/alerts`, coming
/// back (past `hysteresis`) resolves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    /// The alert's name (`alert` in the monitor's format), e.g. `freezer_too_warm`.
    pub name: String,
    /// The capability read (`temperature`, `humidity`, ...).
    pub capability: String,
    /// Only this device (default: every device with the capability)...
    #[serde(default)]
    pub device_id: Option<String>,
    /// ...or only devices in this location.
    #[serde(default)]
    pub location: Option<String>,
    /// Fires when a reading is above this...
    #[serde(default)]
    pub above: Option<f64>,
    /// ...or below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// How far back inside the limit a reading must come to resolve the alert.
    #[serde(default)]
    pub hysteresis: f64,
    #[serde(default = "warning")]
    pub severity: Severity,
    /// The alert's message (default: says which reading crossed what).
    #[serde(default)]
    pub message: Option<String>,
}

fn warning() -> Severity {
    Severity::Warning
}

/// The sensor data service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SensorDataConfig {
    pub enabled: bool,
    pub thresholds: Vec<ThresholdRule>,
}

impl Default for SensorDataConfig {
    fn default() -> Self {
        SensorDataConfig { enabled: true, thresholds: Vec::new() }
    }
}

/// The actuator control service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActuatorControlConfig {
    pub enabled: bool,
    /// How long a device has to acknowledge (answer) a command before it is sent again.
    pub ack_timeout_ms: u64,
    /// Sends after the first when no acknowledgement comes (same message id every time).
    pub retries: u32,
    /// How long after the acknowledgement the reported state must show the change.
    pub confirm_timeout_ms: u64,
    /// How long a request's message id is remembered, so a repeated request is answered
    /// with the first one's outcome instead of acting twice.
    pub dedup_window_secs: u64,
}

impl Default for ActuatorControlConfig {
    fn default() -> Self {
        ActuatorControlConfig {
            enabled: true,
            ack_timeout_ms: 2000,
            retries: 2,
            confirm_timeout_ms: 3000,
            dedup_window_secs: 600,
        }
    }
}

/// How long each kind of record is kept, in days (0: forever).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub events_days: u32,
    /// Raw telemetry; older readings are downsampled, not deleted.
    pub telemetry_days: u32,
    /// Downsampled telemetry.
    pub telemetry_downsampled_days: u32,
    pub state_days: u32,
    pub voice_days: u32,
    pub alerts_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            events_days: 30,
            telemetry_days: 7,
            telemetry_downsampled_days: 365,
            state_days: 90,
            voice_days: 90,
            alerts_days: 180,
        }
    }
}

/// The data store (SQLite under `<home>/data/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataStoreConfig {
    pub enabled: bool,
    /// The database (relative: under `<home>/data/`).
    pub db: PathBuf,
    /// Writes are batched: at most this long between a record arriving and its commit, which
    /// is what a crash can lose.
    pub batch_interval_ms: u64,
    /// A batch is committed early when it has this many records.
    pub batch_max: usize,
    pub retention: RetentionConfig,
    /// Width of a downsampled telemetry bucket (min, max, mean and count per bucket).
    pub downsample_secs: u64,
    /// How often retention and downsampling run.
    pub maintenance_interval_secs: u64,
    /// The HTTP query API on 127.0.0.1.
    pub http_port: u16,
    /// Most rows a query returns.
    pub max_rows: usize,
}

impl Default for DataStoreConfig {
    fn default() -> Self {
        DataStoreConfig {
            enabled: true,
            db: PathBuf::from("data_store.db"),
            batch_interval_ms: 1000,
            batch_max: 500,
            retention: RetentionConfig::default(),
            downsample_secs: 300,
            maintenance_interval_secs: 3600,
            http_port: 8094,
            max_rows: 10_000,
        }
    }
}

/// The Home Assistant bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaBridgeConfig {
    pub enabled: bool,
    /// Home Assistant's MQTT discovery prefix.
    pub discovery_prefix: String,
    /// The node id of Alicia's discovery topics (`<prefix>/<component>/<node_id>/<object>/config`).
    pub node_id: String,
    /// Adopt devices other software announces with HA discovery (ESPHome, Tasmota,
    /// Zigbee2MQTT) as registry devices.
    pub adopt: bool,
    /// Adopted devices' ids start with this.
    pub adopted_prefix: String,
}

impl Default for HaBridgeConfig {
    fn default() -> Self {
        HaBridgeConfig {
            enabled: true,
            discovery_prefix: "homeassistant".into(),
            node_id: "alicia".into(),
            adopt: true,
            adopted_prefix: "ha_".into(),
        }
    }
}

/// The checks types cannot make, each naming its key.
pub(crate) fn validate(c: &crate::Config, need: &mut dyn FnMut(bool, &str, &str)) {
    let s = &c.speaker_manager;
    need(s.queue_limit >= 1, "speaker_manager.queue_limit", "must be at least 1");
    need(
        s.announcement_timeout_secs.is_finite() && s.announcement_timeout_secs > 0.0,
        "speaker_manager.announcement_timeout_secs",
        "must be a number > 0",
    );
    need(s.command_timeout_ms >= 1, "speaker_manager.command_timeout_ms", "must be at least 1");
    if let Some(a) = &s.media_http {
        need(a.parse::<std::net::SocketAddr>().is_ok(), "speaker_manager.media_http", "not a socket address");
    }
    if let Some(u) = &s.media_url {
        need(
            u.starts_with("http://") || u.starts_with("https://"),
            "speaker_manager.media_url",
            "must start with http:// or https://",
        );
    }
    for (i, t) in c.sensor_data.thresholds.iter().enumerate() {
        let key = |k: &str| format!("sensor_data.thresholds[{i}].{k}");
        need(!t.name.trim().is_empty(), &key("name"), "must not be empty");
        need(!t.capability.trim().is_empty(), &key("capability"), "must not be empty");
        need(t.above.is_some() || t.below.is_some(), &key("above"), "a threshold needs `above` or `below`");
        for (k, v) in [("above", t.above), ("below", t.below)] {
            need(v.is_none_or(f64::is_finite), &key(k), "must be a number");
        }
        need(t.hysteresis.is_finite() && t.hysteresis >= 0.0, &key("hysteresis"), "must be a number >= 0");
    }
    let a = &c.actuator_control;
    need(a.ack_timeout_ms >= 1, "actuator_control.ack_timeout_ms", "must be at least 1");
    need(a.retries <= 10, "actuator_control.retries", "must be at most 10");
    let d = &c.data_store;
    need(d.batch_interval_ms >= 1, "data_store.batch_interval_ms", "must be at least 1");
    need(d.batch_max >= 1, "data_store.batch_max", "must be at least 1");
    need(d.downsample_secs >= 1, "data_store.downsample_secs", "must be at least 1");
    need(d.maintenance_interval_secs >= 1, "data_store.maintenance_interval_secs", "must be at least 1");
    need(d.max_rows >= 1, "data_store.max_rows", "must be at least 1");
    let h = &c.ha_bridge;
    let level = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
    need(
        level(&h.discovery_prefix) || h.discovery_prefix.contains('/') && !h.discovery_prefix.contains(['+', '#']),
        "ha_bridge.discovery_prefix",
        "not a usable topic prefix",
    );
    need(level(&h.node_id), "ha_bridge.node_id", "one topic level: no `/`, `+`, `#`");
    need(
        !h.adopted_prefix.contains(['/', '+', '#', ':', ' ']),
        "ha_bridge.adopted_prefix",
        "not usable in a device id",
    );
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn device_sections_parse_validate_and_refuse_unknown_keys() {
        let text = "sensor_data:\n  thresholds:\n    - name: freezer_too_warm\n      capability: temperature\n      device_id: freezer\n      above: -12\n      hysteresis: 0.5\n      severity: critical\ndata_store:\n  batch_interval_ms: 200\n  retention: { telemetry_days: 2 }\nha_bridge:\n  node_id: home\n";
        let c = crate::parse(Path::new("x.yaml"), text).unwrap();
        assert_eq!(c.sensor_data.thresholds[0].above, Some(-12.0));
        assert_eq!(c.sensor_data.thresholds[0].severity, crate::Severity::Critical);
        assert_eq!(c.data_store.retention.telemetry_days, 2);
        assert_eq!(c.data_store.retention.events_days, 30);
        assert_eq!(c.ha_bridge.node_id, "home");
        c.validate().unwrap();

        let e = crate::parse(Path::new("x.yaml"), "data_store:\n  batch_intervall_ms: 3\n").unwrap_err().to_string();
        assert!(e.contains("x.yaml:2") && e.contains("batch_intervall_ms"), "{e}");
        let c = crate::parse(
            Path::new("x.yaml"),
            "sensor_data:\n  thresholds:\n    - { name: t, capability: temperature }\nha_bridge: { node_id: a/b }\n",
        )
        .unwrap();
        let errs = c.validate().unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with("sensor_data.thresholds[0].above")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("ha_bridge.node_id")), "{errs:?}");
    }
}
