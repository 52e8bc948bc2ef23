//! The device and integration services `alicia up` and `alicia services` start after the
//! core ones (issue 15): `speaker_manager`, `sensor_data`, `actuator_control`, `data_store`, `ha_bridge`.
//! Each is enabled by its configuration section and logs in as itself, like every service.

use std::net::SocketAddr;

use alicia_config::Config;
use anyhow::Context;

use super::Services;

/// The running device services (each `None` when its section says `enabled: false`).
#[derive(Default)]
pub struct DeviceServices {
    speaker: Option<alicia_devices::speaker::SpeakerHandle>,
    sensor: Option<alicia_devices::sensor::SensorHandle>,
    actuator: Option<alicia_devices::actuator::ActuatorHandle>,
    store: Option<alicia_store::StoreHandle>,
    bridge: Option<alicia_ha::BridgeHandle>,
}

impl DeviceServices {
    /// The bus connections of the services that run.
    pub fn buses(&self) -> Vec<&alicia_sdk::Bus> {
        let mut buses = Vec::new();
        buses.extend(self.speaker.as_ref().map(|s| s.bus()));
        buses.extend(self.sensor.as_ref().map(|s| s.bus()));
        buses.extend(self.actuator.as_ref().map(|s| s.bus()));
        buses.extend(self.store.as_ref().map(|s| s.bus()));
        buses.extend(self.bridge.as_ref().map(|s| s.bus()));
        buses
    }

    pub async fn start(services: &Services, broker: SocketAddr, cfg: &Config) -> anyhow::Result<DeviceServices> {
        use alicia_devices::{actuator, sensor, speaker};
        let mut out = DeviceServices::default();
        if cfg.speaker_manager.enabled {
            let mut c = speaker::SpeakerConfig::new(services.config(speaker::SERVICE_NAME, broker, cfg)?);
            c.settings = cfg.speaker_manager.clone();
            let s = speaker::start(c).await.context("cannot start the speaker manager")?;
            if let Some(addr) = s.media_addr() {
                crate::listening::announce("media", addr);
            }
            out.speaker = Some(s);
        }
        if cfg.sensor_data.enabled {
            let mut c = sensor::SensorConfig::new(services.config(sensor::SERVICE_NAME, broker, cfg)?);
            c.settings = cfg.sensor_data.clone();
            out.sensor = Some(sensor::start(c).await.context("cannot start the sensor data service")?);
        }
        if cfg.actuator_control.enabled {
            let mut c = actuator::ActuatorConfig::new(services.config(actuator::SERVICE_NAME, broker, cfg)?);
            c.settings = cfg.actuator_control.clone();
            out.actuator = Some(actuator::start(c).await.context("cannot start actuator control")?);
        }
        if cfg.data_store.enabled {
            // Relative to the home's data directory (an absolute path stays as it is).
            let db = services.layout().data_dir().join(&cfg.data_store.db);
            let mut c = alicia_store::StoreConfig::new(services.config(alicia_store::SERVICE_NAME, broker, cfg)?, db);
            c.settings = cfg.data_store.clone();
            c.http = Some(
                services.args.data_store_http.unwrap_or(SocketAddr::from(([127, 0, 0, 1], cfg.data_store.http_port))),
            );
            let s = alicia_store::start(c).await.context("cannot start the data store")?;
            super::print_listening("data-store", s.http_addr());
            out.store = Some(s);
        }
        if cfg.ha_bridge.enabled {
            let mut c = alicia_ha::BridgeConfig::new(services.config(alicia_ha::SERVICE_NAME, broker, cfg)?);
            c.settings = cfg.ha_bridge.clone();
            out.bridge = Some(alicia_ha::start(c).await.context("cannot start the Home Assistant bridge")?);
        }
        Ok(out)
    }

    pub async fn stop(self) {
        if let Some(s) = self.bridge {
            s.shutdown().await;
        }
        // The store last: it commits what the others said while stopping.
        if let Some(s) = self.actuator {
            s.shutdown().await;
        }
        if let Some(s) = self.sensor {
            s.shutdown().await;
        }
        if let Some(s) = self.speaker {
            s.shutdown().await;
        }
        if let Some(s) = self.store {
            s.shutdown().await;
        }
    }
}
