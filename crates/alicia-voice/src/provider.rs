//! A service as a capability provider in the device registry: the design document's
//! registration on `P/system/discovery/register`, with the service's inbox as
//! `endpoints.control` (where the router forwards `capability:NAME`), and heartbeats as a
//! device sends them, so the registry keeps it online.
//!
//! Every instance of a service registers the same entry (`device_id` = the service name): the
//! router picks that one entry and forwards to the inbox, and the broker's shared subscription
//! hands each envelope to one instance. Registration is repeated after every reconnect and
//! when the registry asks for it (rebirth); heartbeats run at the bus heartbeat interval.

use std::sync::Arc;
use std::time::Duration;

use alicia_envelope::{Destination, Envelope};
use alicia_sdk::{Bus, LinkState};
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::topics::VoiceTopics;

/// What is registered.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The registry entry's id: the service's name.
    pub device_id: String,
    /// `{name, version, parameters, endpoints}`.
    pub capability: Value,
    /// A short description, the registry's `name`.
    pub name: String,
    pub metadata: Value,
}

impl Registration {
    /// The design document's registration data, for `bus`.
    pub fn data(&self, bus: &Bus, heartbeat: Duration) -> Value {
        let topics = bus.topics();
        json!({
            "device_id": self.device_id,
            "device_type": "service",
            "name": self.name,
            "capabilities": [self.capability],
            "endpoints": {
                "control": topics.inbox(bus.name()),
                "status": topics.status(bus.name()),
            },
            "metadata": self.metadata,
            "heartbeat_interval": heartbeat.as_secs().max(1),
        })
    }
}

/// The running registration (stopped when dropped).
pub struct Provider {
    task: JoinHandle<()>,
}

impl Provider {
    /// Registers once online, again after every reconnect and rebirth, and heartbeats every
    /// `interval` (zero: the registry's default timeout applies, so every 30 s).
    /// `rebirth` is notified when the registry asks everyone to register again.
    pub fn start(
        bus: Bus,
        topics: VoiceTopics,
        reg: Registration,
        interval: Duration,
        rebirth: Arc<Notify>,
    ) -> Provider {
        let interval = if interval.is_zero() { Duration::from_secs(30) } else { interval };
        let task = tokio::spawn(run(bus, topics, reg, interval, rebirth));
        Provider { task }
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(bus: Bus, topics: VoiceTopics, reg: Registration, interval: Duration, again: Arc<Notify>) {
    let mut registered_on = 0u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if bus.wait_online(Duration::from_secs(3600)).await.is_err() && bus.state() == LinkState::Stopped {
            return;
        }
        let connects = bus.connects();
        if connects != registered_on {
            let env = Envelope::event(bus.name(), Destination::topic(topics.register()), reg.data(&bus, interval))
                .without_ttl();
            match bus.send(&env).await {
                Ok(()) => registered_on = connects,
                Err(e) => tracing::warn!(service = bus.name(), error = %e, "cannot register as a capability provider"),
            }
        } else {
            let beat = Envelope::heartbeat(bus.name(), json!({"device_id": reg.device_id, "status": "online"}))
                .with_ttl(u32::try_from(interval.as_secs().saturating_mul(3)).unwrap_or(u32::MAX).max(1));
            let _ = bus.send_to(&topics.heartbeat(), &beat, None).await;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = again.notified() => registered_on = 0,
        }
    }
}
