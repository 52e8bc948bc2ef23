//! The SQLite file: devices (with their full registration), the capability index, tombstones.
//!
//! ```sql
//! devices(device_id PRIMARY KEY, device_type, registration JSON, status, last_seen_ms, registered_at_ms, updated_at_ms)
//! capabilities(capability, device_id → devices ON DELETE CASCADE, PRIMARY KEY (capability, device_id))
//! tombstones(device_id PRIMARY KEY, removed_at_ms, reason)
//! ```
//!
//! Every change is one transaction, written before the change is announced on the bus, so what
//! the inventory said is what a restarted registry reads back.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::model::{from_millis, millis, Device, Registration, Status};
use crate::RegistryError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    device_id        TEXT PRIMARY KEY,
    device_type      TEXT NOT NULL,
    registration     TEXT NOT NULL,
    status           TEXT NOT NULL,
    last_seen_ms     INTEGER NOT NULL,
    registered_at_ms INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS capabilities (
    capability TEXT NOT NULL,
    device_id  TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    PRIMARY KEY (capability, device_id)
);
CREATE INDEX IF NOT EXISTS capabilities_by_device ON capabilities(device_id);
CREATE TABLE IF NOT EXISTS tombstones (
    device_id     TEXT PRIMARY KEY,
    removed_at_ms INTEGER NOT NULL,
    reason        TEXT NOT NULL
);
PRAGMA user_version = 1;
";

pub(crate) struct Store {
    conn: Connection,
}

/// A removed device: when, and why.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    pub removed_at: SystemTime,
    pub reason: String,
}

fn db(e: rusqlite::Error) -> RegistryError {
    RegistryError::Database(e.to_string())
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, RegistryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| RegistryError::Database(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| RegistryError::Database(format!("cannot open {}: {e}", path.display())))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(Store { conn })
    }

    /// Every stored device whose registration still passes the checks (others are reported
    /// and skipped, never fatal).
    pub fn load(&self, prefix: &str) -> Result<Vec<Device>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare("SELECT device_id, registration, status, last_seen_ms, registered_at_ms FROM devices ORDER BY device_id")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, text, status, seen, registered) = row.map_err(db)?;
            let reg = serde_json::from_str::<Value>(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| Registration::parse(v, prefix).map_err(|e| e.to_string()));
            match reg {
                Ok(reg) => out.push(Device {
                    reg,
                    status: Status::parse(&status),
                    last_seen: from_millis(seen),
                    registered_at: from_millis(registered),
                    last_heartbeat: None,
                }),
                Err(e) => tracing::warn!(device_id = %id, error = %e, "stored registration skipped"),
            }
        }
        Ok(out)
    }

    /// Inserts or replaces a device and its capabilities; clears a tombstone of the same id.
    pub fn save(&mut self, d: &Device) -> Result<(), RegistryError> {
        let tx = self.conn.transaction().map_err(db)?;
        tx.execute(
            "INSERT INTO devices (device_id, device_type, registration, status, last_seen_ms, registered_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(device_id) DO UPDATE SET device_type = ?2, registration = ?3, status = ?4,
                 last_seen_ms = ?5, registered_at_ms = ?6, updated_at_ms = ?7",
            params![
                d.reg.device_id,
                d.reg.device_type,
                d.reg.raw.to_string(),
                d.status.as_str(),
                millis(d.last_seen),
                millis(d.registered_at),
                millis(SystemTime::now()),
            ],
        )
        .map_err(db)?;
        tx.execute("DELETE FROM capabilities WHERE device_id = ?1", params![d.reg.device_id]).map_err(db)?;
        for cap in d.reg.capability_names() {
            tx.execute(
                "INSERT INTO capabilities (capability, device_id) VALUES (?1, ?2)",
                params![cap, d.reg.device_id],
            )
            .map_err(db)?;
        }
        tx.execute("DELETE FROM tombstones WHERE device_id = ?1", params![d.reg.device_id]).map_err(db)?;
        tx.commit().map_err(db)
    }

    /// Status and last-seen time only (heartbeats, wills, timeouts).
    pub fn save_status(&mut self, d: &Device) -> Result<(), RegistryError> {
        self.conn
            .execute(
                "UPDATE devices SET status = ?2, last_seen_ms = ?3 WHERE device_id = ?1",
                params![d.reg.device_id, d.status.as_str(), millis(d.last_seen)],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Deletes a device (its capabilities go with it) and leaves a tombstone.
    pub fn remove(&mut self, id: &str, reason: &str, at: SystemTime) -> Result<(), RegistryError> {
        let tx = self.conn.transaction().map_err(db)?;
        tx.execute("DELETE FROM devices WHERE device_id = ?1", params![id]).map_err(db)?;
        tx.execute(
            "INSERT OR REPLACE INTO tombstones (device_id, removed_at_ms, reason) VALUES (?1, ?2, ?3)",
            params![id, millis(at), reason],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    pub fn tombstone(&self, id: &str) -> Result<Option<Tombstone>, RegistryError> {
        self.conn
            .query_row("SELECT removed_at_ms, reason FROM tombstones WHERE device_id = ?1", params![id], |r| {
                Ok(Tombstone { removed_at: from_millis(r.get(0)?), reason: r.get(1)? })
            })
            .optional()
            .map_err(db)
    }

    /// Device ids offering `capability`, from the index.
    pub fn providers(&self, capability: &str) -> Result<Vec<String>, RegistryError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT device_id FROM capabilities WHERE capability = ?1 ORDER BY device_id")
            .map_err(db)?;
        let ids = stmt.query_map(params![capability], |r| r.get(0)).map_err(db)?;
        ids.collect::<Result<Vec<String>, _>>().map_err(db)
    }
}
