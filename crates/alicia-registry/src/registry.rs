//! The registry's state: devices in memory, mirrored to SQLite, and every change announced.
//!
//! Bus handlers, the HTTP API, the status listener and the timeout sweep all act on one
//! [`Registry`]. A change is written to the database first, then queued (in order, under the
//! same lock) for the publisher, which sends the event and then the new retained inventory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, MutexGuard};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::model::{rfc3339, Device, Refused, Registration, Status};
use crate::store::{Store, Tombstone};
use crate::RegistryError;

/// What the publisher sends next.
#[derive(Debug)]
pub(crate) enum Out {
    /// An event for `<prefix>/system/registry/events` (the inventory follows).
    Event(Value),
    /// Subscribe to a device's status topic that is not under `<prefix>/devices/+/status`.
    WatchStatus(String),
}

/// How a registration went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new device.
    Registered,
    /// A known device registered again (changed or not).
    Updated,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Registered => "registered",
            Outcome::Updated => "updated",
        }
    }
}

/// A registration refused, or the database failing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    #[error(transparent)]
    Invalid(#[from] Refused),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

#[derive(Default)]
pub(crate) struct Metrics {
    pub registered: AtomicU64,
    pub updated: AtomicU64,
    pub rejected: AtomicU64,
    pub removed: AtomicU64,
    pub hb_device: AtomicU64,
    pub hb_unknown: AtomicU64,
    pub hb_service: AtomicU64,
    pub went_offline: AtomicU64,
    pub came_online: AtomicU64,
}

struct Inner {
    store: Store,
    devices: BTreeMap<String, Device>,
}

pub(crate) struct Registry {
    inner: Mutex<Inner>,
    prefix: String,
    timeout: Duration,
    started: SystemTime,
    out: mpsc::UnboundedSender<Out>,
    pub metrics: Metrics,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Registry {
    pub fn open(
        store: Store,
        prefix: &str,
        timeout: Duration,
    ) -> Result<(Registry, mpsc::UnboundedReceiver<Out>), RegistryError> {
        // The registry could not hear anyone while it was down: what it knew then is no longer
        // known, until each device speaks again (the rebirth request asks them to).
        let devices = store
            .load(prefix)?
            .into_iter()
            .map(|mut d| {
                d.status = Status::Unknown;
                (d.reg.device_id.clone(), d)
            })
            .collect();
        let (out, rx) = mpsc::unbounded_channel();
        let reg = Registry {
            inner: Mutex::new(Inner { store, devices }),
            prefix: prefix.to_string(),
            timeout,
            started: SystemTime::now(),
            out,
            metrics: Metrics::default(),
        };
        Ok((reg, rx))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    fn emit(&self, event: &str, id: &str, device: Option<&Device>, reason: &str) {
        let device = device.map(Device::to_json).unwrap_or(Value::Null);
        let _ = self.out.send(Out::Event(json!({
            "event": event,
            "device_id": id,
            "device": device,
            "reason": reason,
            "timestamp": rfc3339(SystemTime::now()),
        })));
    }

    /// `<prefix>/devices/<id>/status` is covered by the wildcard subscription.
    pub fn default_status_topic(&self, topic: &str) -> bool {
        topic
            .strip_prefix(&self.prefix)
            .and_then(|t| t.strip_prefix("/devices/"))
            .and_then(|t| t.strip_suffix("/status"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
    }

    /// Registers (or re-registers) a device; `via` says where the registration came from.
    pub fn register(&self, raw: Value, via: &str) -> Result<(Outcome, Device), RegisterError> {
        let reg = match Registration::parse(raw, &self.prefix) {
            Ok(r) => r,
            Err(e) => {
                bump(&self.metrics.rejected);
                return Err(e.into());
            }
        };
        let now = SystemTime::now();
        let mut inner = self.lock();
        let previous = inner.devices.get(&reg.device_id).cloned();
        let device = Device {
            registered_at: previous.as_ref().map_or(now, |p| p.registered_at),
            last_heartbeat: previous.as_ref().and_then(|p| p.last_heartbeat),
            status: Status::Online,
            last_seen: now,
            reg,
        };
        inner.store.save(&device)?;
        let id = device.reg.device_id.clone();
        inner.devices.insert(id.clone(), device.clone());
        let outcome = match &previous {
            None => {
                bump(&self.metrics.registered);
                self.emit("registered", &id, Some(&device), &format!("registered via {via}"));
                Outcome::Registered
            }
            Some(p) => {
                bump(&self.metrics.updated);
                if p.reg.raw != device.reg.raw {
                    self.emit("updated", &id, Some(&device), &format!("registration changed via {via}"));
                } else if p.status != Status::Online {
                    bump(&self.metrics.came_online);
                    self.emit("online", &id, Some(&device), &format!("registered again via {via}"));
                }
                Outcome::Updated
            }
        };
        let status_topic = device.reg.status_topic();
        if !self.default_status_topic(status_topic)
            && previous.as_ref().is_none_or(|p| p.reg.status_topic() != status_topic)
        {
            let _ = self.out.send(Out::WatchStatus(status_topic.to_string()));
        }
        Ok((outcome, device))
    }

    /// Removes a device, leaving a tombstone; `None` when it is not registered.
    pub fn unregister(&self, id: &str, reason: &str) -> Result<Option<Device>, RegistryError> {
        let mut inner = self.lock();
        let Some(device) = inner.devices.get(id).cloned() else { return Ok(None) };
        inner.store.remove(id, reason, SystemTime::now())?;
        inner.devices.remove(id);
        bump(&self.metrics.removed);
        self.emit("removed", id, Some(&device), reason);
        Ok(Some(device))
    }

    /// A device's heartbeat: seen now, back online if it was not. `false` for an unknown device.
    pub fn heartbeat(&self, id: &str) -> Result<bool, RegistryError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let Inner { store, devices } = &mut *inner;
        let Some(device) = devices.get_mut(id) else {
            bump(&self.metrics.hb_unknown);
            return Ok(false);
        };
        bump(&self.metrics.hb_device);
        device.last_seen = now;
        device.last_heartbeat = Some(now);
        let was = device.status;
        device.status = Status::Online;
        store.save_status(device)?;
        if was != Status::Online {
            bump(&self.metrics.came_online);
            self.emit("online", id, Some(device), "heartbeat");
        }
        Ok(true)
    }

    /// What a device's status topic said (`online`/`offline`), e.g. its MQTT will.
    pub fn status_message(&self, topic: &str, status: Status) -> Result<(), RegistryError> {
        let now = SystemTime::now();
        let mut inner = self.lock();
        let Inner { store, devices } = &mut *inner;
        let Some(device) = devices.values_mut().find(|d| d.reg.status_topic() == topic) else {
            tracing::debug!(topic, "status of an unregistered device ignored");
            return Ok(());
        };
        let was = device.status;
        device.status = status;
        if status == Status::Online {
            device.last_seen = now;
        }
        store.save_status(device)?;
        if was != status {
            let id = device.reg.device_id.clone();
            let (event, counter) = match status {
                Status::Online => ("online", &self.metrics.came_online),
                Status::Offline | Status::Unknown => ("offline", &self.metrics.went_offline),
            };
            bump(counter);
            self.emit(event, &id, Some(device), &format!("{topic} said {}", status.as_str()));
        }
        Ok(())
    }

    /// Marks offline every device silent for longer than its timeout. Devices loaded from
    /// the database (`unknown`) get their timeout from when the registry started: it could not
    /// hear them while it was down, and the rebirth request asks them to speak up.
    pub fn sweep(&self, now: SystemTime) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        let Inner { store, devices } = &mut *inner;
        for device in devices.values_mut().filter(|d| d.status != Status::Offline) {
            let seen = device.last_seen.max(self.started);
            let limit = device.timeout(self.timeout);
            let silent = now.duration_since(seen).unwrap_or_default();
            if silent > limit {
                device.status = Status::Offline;
                store.save_status(device)?;
                bump(&self.metrics.went_offline);
                let id = device.reg.device_id.clone();
                let reason = format!("no heartbeat for {}s (timeout {}s)", silent.as_secs(), limit.as_secs_f64());
                self.emit("offline", &id, Some(device), &reason);
            }
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<Device> {
        self.lock().devices.values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Device> {
        self.lock().devices.get(id).cloned()
    }

    /// Devices offering `capability` (online or not: callers see `status`), from the index.
    pub fn find(&self, capability: &str) -> Result<Vec<Device>, RegistryError> {
        let inner = self.lock();
        let ids = inner.store.providers(capability)?;
        Ok(ids.iter().filter_map(|id| inner.devices.get(id).cloned()).collect())
    }

    pub fn tombstone(&self, id: &str) -> Result<Option<Tombstone>, RegistryError> {
        self.lock().store.tombstone(id)
    }

    /// Why `id` is not found, for 404s and `not_found` errors.
    pub fn not_found_reason(&self, id: &str) -> String {
        match self.tombstone(id) {
            Ok(Some(t)) => format!("device {id:?} was removed at {} ({})", rfc3339(t.removed_at), t.reason),
            _ => format!("no device {id:?} is registered"),
        }
    }

    /// The retained inventory: `{"updated", "devices": [...]}`.
    pub fn inventory(&self) -> Value {
        let devices: Vec<Value> = self.lock().devices.values().map(Device::to_json).collect();
        json!({ "updated": rfc3339(SystemTime::now()), "devices": devices })
    }

    /// Status topics outside the wildcard, to subscribe to on (re)connect.
    pub fn extra_status_topics(&self) -> Vec<String> {
        let inner = self.lock();
        let mut topics: Vec<String> = inner
            .devices
            .values()
            .map(|d| d.reg.status_topic().to_string())
            .filter(|t| !self.default_status_topic(t))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// (online, offline, unknown) device counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        let count = |s: Status| inner.devices.values().filter(|d| d.status == s).count();
        (count(Status::Online), count(Status::Offline), count(Status::Unknown))
    }

    /// The discovery view: who is online, who is not, last heartbeats, timeouts.
    pub fn discovery(&self) -> Value {
        let inner = self.lock();
        let entry = |d: &Device| {
            json!({
                "device_id": d.reg.device_id,
                "name": d.reg.name,
                "device_type": d.reg.device_type,
                "location": d.reg.location,
                "last_seen": rfc3339(d.last_seen),
                "last_heartbeat": d.last_heartbeat.map(rfc3339),
                "command_topic": d.reg.command_topic(),
                "heartbeat_interval_secs": d.reg.heartbeat_interval.map(|i| i.as_secs()),
                "timeout_secs": d.timeout(self.timeout).as_secs_f64(),
            })
        };
        let with = |s: Status| -> Vec<Value> { inner.devices.values().filter(|d| d.status == s).map(entry).collect() };
        let (online, offline, unknown) = (with(Status::Online), with(Status::Offline), with(Status::Unknown));
        json!({
            "updated": rfc3339(SystemTime::now()),
            "heartbeat_timeout_secs": self.timeout.as_secs_f64(),
            "rebirth_topic": format!("{}/system/discovery/rebirth", self.prefix),
            "counts": { "online": online.len(), "offline": offline.len(), "unknown": unknown.len() },
            "online": online,
            "offline": offline,
            "unknown": unknown,
        })
    }
}
