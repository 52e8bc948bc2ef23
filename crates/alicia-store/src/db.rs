//! The SQLite side: schema, batched inserts, retention and downsampling, queries. Blocking
//! code, run on the writer thread and on `spawn_blocking` for queries.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags};
use serde_json::{json, Value};

use crate::StoreError;

/// One thing to keep. Times are Unix seconds (`f64`, sub-second precision).
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event {
        ts: f64,
        topic: String,
        kind: String,
        source: Option<String>,
        device_id: Option<String>,
        data: Value,
    },
    Telemetry {
        ts: f64,
        device_id: String,
        capability: String,
        value: f64,
        unit: Option<String>,
    },
    State {
        ts: f64,
        device_id: String,
        state: Value,
    },
    Voice {
        ts: f64,
        session_id: Option<String>,
        device_id: Option<String>,
        transcript: Option<String>,
        intent: Option<String>,
        data: Value,
    },
    Alert {
        ts: f64,
        alert: String,
        severity: String,
        state: String,
        service: String,
        message: String,
        data: Value,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, topic TEXT NOT NULL, kind TEXT NOT NULL,
    source TEXT, device_id TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_device ON events(device_id, ts);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, device_id TEXT NOT NULL, capability TEXT NOT NULL,
    value REAL NOT NULL, unit TEXT);
CREATE INDEX IF NOT EXISTS telemetry_device ON telemetry(device_id, capability, ts);
CREATE INDEX IF NOT EXISTS telemetry_ts ON telemetry(ts);
CREATE TABLE IF NOT EXISTS telemetry_rollup (
    bucket REAL NOT NULL, width REAL NOT NULL, device_id TEXT NOT NULL, capability TEXT NOT NULL,
    unit TEXT, count INTEGER NOT NULL, min REAL NOT NULL, max REAL NOT NULL, mean REAL NOT NULL,
    PRIMARY KEY (device_id, capability, bucket));
CREATE INDEX IF NOT EXISTS rollup_bucket ON telemetry_rollup(bucket);
CREATE TABLE IF NOT EXISTS states (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, device_id TEXT NOT NULL, state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS states_device ON states(device_id, ts);
CREATE INDEX IF NOT EXISTS states_ts ON states(ts);
CREATE TABLE IF NOT EXISTS voice_sessions (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, session_id TEXT, device_id TEXT, transcript TEXT,
    intent TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS voice_ts ON voice_sessions(ts);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, alert TEXT NOT NULL, severity TEXT NOT NULL,
    state TEXT NOT NULL, service TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_ts ON alerts(ts);
";

fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Opens (creating) the database for writing: WAL, so queries read while batches commit, and
/// `synchronous=FULL`, so a committed batch survives a power cut as well as a crash.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(format!("{}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path).map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_err)?;
    conn.execute_batch(SCHEMA).map_err(db_err)?;
    Ok(conn)
}

/// A read-only connection for queries.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db_err)?;
    Ok(conn)
}

/// Writes one batch in one transaction.
pub fn insert(conn: &mut Connection, batch: &[Record]) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(db_err)?;
    for r in batch {
        match r {
            Record::Event { ts, topic, kind, source, device_id, data } => tx.execute(
                "INSERT INTO events (ts, topic, kind, source, device_id, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ts, topic, kind, source, device_id, data.to_string()],
            ),
            Record::Telemetry { ts, device_id, capability, value, unit } => tx.execute(
                "INSERT INTO telemetry (ts, device_id, capability, value, unit) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![ts, device_id, capability, value, unit],
            ),
            Record::State { ts, device_id, state } => tx.execute(
                "INSERT INTO states (ts, device_id, state) VALUES (?1, ?2, ?3)",
                params![ts, device_id, state.to_string()],
            ),
            Record::Voice { ts, session_id, device_id, transcript, intent, data } => tx.execute(
                "INSERT INTO voice_sessions (ts, session_id, device_id, transcript, intent, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ts, session_id, device_id, transcript, intent, data.to_string()],
            ),
            Record::Alert { ts, alert, severity, state, service, message, data } => tx.execute(
                "INSERT INTO alerts (ts, alert, severity, state, service, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![ts, alert, severity, state, service, message, data.to_string()],
            ),
        }
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

/// The newest telemetry time per (device, capability), and the last state per device, so a
/// retained document read again after a restart is not stored twice.
/// (device, capability, newest time) per sensor reading, and (device, state JSON).
pub type LastSeen = (Vec<(String, String, f64)>, Vec<(String, String)>);

pub fn last_seen(conn: &Connection) -> Result<LastSeen, StoreError> {
    let mut st = conn
        .prepare("SELECT device_id, capability, MAX(ts) FROM telemetry GROUP BY device_id, capability")
        .map_err(db_err)?;
    let tel = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    let mut st = conn
        .prepare("SELECT s.device_id, s.state FROM states s JOIN (SELECT device_id, MAX(id) AS id FROM states GROUP BY device_id) m ON s.id = m.id")
        .map_err(db_err)?;
    let states = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    Ok((tel, states))
}

/// What retention and downsampling did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintenance {
    pub downsampled: usize,
    pub deleted: usize,
}

const DAY: f64 = 86_400.0;

/// Retention (`days` 0: keep) and downsampling at `now`: raw telemetry older than its
/// retention is folded into `width`-second buckets (count, min, max, mean; merged with a
/// bucket already there) and deleted; everything else past its retention is deleted.
pub fn maintain(
    conn: &mut Connection,
    r: &alicia_config::RetentionConfig,
    width: f64,
    now: f64,
) -> Result<Maintenance, StoreError> {
    let mut m = Maintenance::default();
    let tx = conn.transaction().map_err(db_err)?;
    if r.telemetry_days > 0 {
        let cutoff = now - f64::from(r.telemetry_days) * DAY;
        // Whole buckets only: a bucket straddling the cutoff waits for the next run.
        let cutoff = (cutoff / width).floor() * width;
        m.downsampled = tx
            .execute(
                "INSERT INTO telemetry_rollup (bucket, width, device_id, capability, unit, count, min, max, mean)
                 SELECT CAST(ts / ?1 AS INTEGER) * ?1 AS b, ?1, device_id, capability, MAX(unit), COUNT(*), MIN(value), MAX(value), AVG(value)
                 FROM telemetry WHERE ts < ?2 GROUP BY device_id, capability, b
                 ON CONFLICT (device_id, capability, bucket) DO UPDATE SET
                   mean = (mean * count + excluded.mean * excluded.count) / (count + excluded.count),
                   count = count + excluded.count,
                   min = MIN(min, excluded.min), max = MAX(max, excluded.max)",
                params![width, cutoff],
            )
            .map_err(db_err)?;
        m.deleted += tx.execute("DELETE FROM telemetry WHERE ts < ?1", params![cutoff]).map_err(db_err)?;
    }
    for (table, column, days) in [
        ("telemetry_rollup", "bucket", r.telemetry_downsampled_days),
        ("events", "ts", r.events_days),
        ("states", "ts", r.state_days),
        ("voice_sessions", "ts", r.voice_days),
        ("alerts", "ts", r.alerts_days),
    ] {
        if days > 0 {
            let cutoff = now - f64::from(days) * DAY;
            m.deleted +=
                tx.execute(&format!("DELETE FROM {table} WHERE {column} < ?1"), params![cutoff]).map_err(db_err)?;
        }
    }
    tx.commit().map_err(db_err)?;
    Ok(m)
}

/// A query: which kind of record, the time range, the device, and how many at most.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// `events`, `telemetry`, `telemetry_rollup`, `states`, `voice`, `alerts`.
    pub kind: String,
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub device_id: Option<String>,
    /// For telemetry; for events and alerts, the event kind / alert name.
    pub name: Option<String>,
    pub limit: usize,
}

/// The kinds a query can ask for.
pub const KINDS: &[&str] = &["events", "telemetry", "telemetry_rollup", "states", "voice", "alerts"];

fn rfc3339(ts: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(ts.max(0.0));
    alicia_envelope::Timestamp::from(t).to_string()
}

fn json_col(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Runs a query; rows newest first.
pub fn query(conn: &Connection, q: &Query) -> Result<Vec<Value>, StoreError> {
    let (table, time, device, name, columns) = match q.kind.as_str() {
        "events" => ("events", "ts", Some("device_id"), Some("kind"), "ts, topic, kind, source, device_id, data"),
        "telemetry" => {
            ("telemetry", "ts", Some("device_id"), Some("capability"), "ts, device_id, capability, value, unit")
        }
        "telemetry_rollup" => (
            "telemetry_rollup",
            "bucket",
            Some("device_id"),
            Some("capability"),
            "bucket, width, device_id, capability, unit, count, min, max, mean",
        ),
        "states" => ("states", "ts", Some("device_id"), None, "ts, device_id, state"),
        "voice" => (
            "voice_sessions",
            "ts",
            Some("device_id"),
            Some("session_id"),
            "ts, session_id, device_id, transcript, intent, data",
        ),
        "alerts" => ("alerts", "ts", None, Some("alert"), "ts, alert, severity, state, service, message, data"),
        other => return Err(StoreError::Query(format!("type {other:?}: one of {}", KINDS.join(", ")))),
    };
    let mut sql = format!("SELECT {columns} FROM {table} WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(f) = q.from {
        sql += &format!(" AND {time} >= ?{}", args.len() + 1);
        args.push(f.into());
    }
    if let Some(t) = q.to {
        sql += &format!(" AND {time} <= ?{}", args.len() + 1);
        args.push(t.into());
    }
    match (device, &q.device_id) {
        (Some(col), Some(d)) => {
            sql += &format!(" AND {col} = ?{}", args.len() + 1);
            args.push(d.clone().into());
        }
        (None, Some(_)) => return Err(StoreError::Query(format!("{} have no device", q.kind))),
        _ => {}
    }
    if let (Some(col), Some(n)) = (name, &q.name) {
        sql += &format!(" AND {col} = ?{}", args.len() + 1);
        args.push(n.clone().into());
    }
    sql += &format!(" ORDER BY {time} DESC, rowid DESC LIMIT {}", q.limit.max(1));
    let mut st = conn.prepare(&sql).map_err(db_err)?;
    let kind = q.kind.clone();
    let rows = st
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok(match kind.as_str() {
                "events" => json!({
                    "time": rfc3339(r.get(0)?), "topic": r.get::<_, String>(1)?, "kind": r.get::<_, String>(2)?,
                    "source": r.get::<_, Option<String>>(3)?, "device_id": r.get::<_, Option<String>>(4)?,
                    "data": json_col(r.get(5)?),
                }),
                "telemetry" => json!({
                    "time": rfc3339(r.get(0)?), "device_id": r.get::<_, String>(1)?, "capability": r.get::<_, String>(2)?,
                    "value": r.get::<_, f64>(3)?, "unit": r.get::<_, Option<String>>(4)?,
                }),
                "telemetry_rollup" => json!({
                    "time": rfc3339(r.get(0)?), "width_secs": r.get::<_, f64>(1)?, "device_id": r.get::<_, String>(2)?,
                    "capability": r.get::<_, String>(3)?, "unit": r.get::<_, Option<String>>(4)?,
                    "count": r.get::<_, i64>(5)?, "min": r.get::<_, f64>(6)?, "max": r.get::<_, f64>(7)?,
                    "mean": r.get::<_, f64>(8)?,
                }),
                "states" => json!({
                    "time": rfc3339(r.get(0)?), "device_id": r.get::<_, String>(1)?, "state": json_col(r.get(2)?),
                }),
                "voice" => json!({
                    "time": rfc3339(r.get(0)?), "session_id": r.get::<_, Option<String>>(1)?,
                    "device_id": r.get::<_, Option<String>>(2)?, "transcript": r.get::<_, Option<String>>(3)?,
                    "intent": r.get::<_, Option<String>>(4)?, "data": json_col(r.get(5)?),
                }),
                _ => json!({
                    "time": rfc3339(r.get(0)?), "alert": r.get::<_, String>(1)?, "severity": r.get::<_, String>(2)?,
                    "state": r.get::<_, String>(3)?, "service": r.get::<_, String>(4)?, "message": r.get::<_, String>(5)?,
                    "data": json_col(r.get(6)?),
                }),
            })
        })
        .map_err(db_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_err)?;
    Ok(rows)
}

/// Rows per table.
pub fn counts(conn: &Connection) -> Result<Value, StoreError> {
    let mut out = serde_json::Map::new();
    for (kind, table) in [
        ("events", "events"),
        ("telemetry", "telemetry"),
        ("telemetry_rollup", "telemetry_rollup"),
        ("states", "states"),
        ("voice", "voice_sessions"),
        ("alerts", "alerts"),
    ] {
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).map_err(db_err)?;
        out.insert(kind.into(), json!(n));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tel(ts: f64, v: f64) -> Record {
        Record::Telemetry {
            ts,
            device_id: "t1".into(),
            capability: "temperature".into(),
            value: v,
            unit: Some("°C".into()),
        }
    }

    #[test]
    fn insert_query_downsample_and_retain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut conn = open(&path).unwrap();
        let day: f64 = 86_400.0;
        let now = 100.0 * day;
        // Ten days ago: 4 readings in one 300 s bucket and 2 in the next; today: one.
        let old = now - 10.0 * day;
        let base = (old / 300.0).floor() * 300.0;
        let mut batch: Vec<Record> =
            [1.0, 2.0, 3.0, 6.0].iter().enumerate().map(|(i, v)| tel(base + i as f64, *v)).collect();
        batch.push(tel(base + 300.0, 10.0));
        batch.push(tel(base + 301.0, 20.0));
        batch.push(tel(now - 5.0, 21.0));
        batch.push(Record::Alert {
            ts: now - 200.0 * day,
            alert: "a".into(),
            severity: "warning".into(),
            state: "firing".into(),
            service: "s".into(),
            message: "m".into(),
            data: json!({}),
        });
        batch.push(Record::State { ts: now - 1.0, device_id: "l1".into(), state: json!({"power": "on"}) });
        insert(&mut conn, &batch).unwrap();

        let r = alicia_config::RetentionConfig { telemetry_days: 7, ..Default::default() };
        let m = maintain(&mut conn, &r, 300.0, now).unwrap();
        assert_eq!(m.downsampled, 2);
        assert_eq!(m.deleted, 6 + 1, "six raw readings folded, one alert past 180 days");
        let reader = open_reader(&path).unwrap();
        let q = |kind: &str| Query { kind: kind.into(), limit: 100, ..Default::default() };
        let raw = query(&reader, &q("telemetry")).unwrap();
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0]["value"], 21.0);
        let roll = query(&reader, &q("telemetry_rollup")).unwrap();
        assert_eq!(roll.len(), 2);
        let first = &roll[1];
        assert_eq!(
            (first["count"].as_i64(), first["min"].as_f64(), first["max"].as_f64(), first["mean"].as_f64()),
            (Some(4), Some(1.0), Some(6.0), Some(3.0))
        );
        // A second run merges into the same buckets instead of duplicating them.
        insert(&mut conn, &[tel(base + 2.5, 8.0)]).unwrap();
        maintain(&mut conn, &r, 300.0, now).unwrap();
        let roll = query(&reader, &q("telemetry_rollup")).unwrap();
        assert_eq!(roll[1]["count"], 5);
        assert_eq!(roll[1]["mean"], 4.0);
        assert_eq!(roll[1]["max"], 8.0);
        assert!(query(&reader, &q("alerts")).unwrap().is_empty());
        // Filters: device and time range.
        let st =
            query(&reader, &Query { device_id: Some("l1".into()), from: Some(now - 10.0), ..q("states") }).unwrap();
        assert_eq!(st[0]["state"]["power"], "on");
        assert!(query(&reader, &Query { to: Some(now - 10.0), ..q("states") }).unwrap().is_empty());
        assert!(query(&reader, &q("nonsense")).is_err());
        assert!(query(&reader, &Query { device_id: Some("x".into()), ..q("alerts") }).is_err());
        assert_eq!(counts(&reader).unwrap()["telemetry_rollup"], 2);
        let (tel_seen, states_seen) = last_seen(&conn).unwrap();
        assert_eq!(tel_seen.len(), 1);
        assert_eq!(states_seen[0].0, "l1");
    }
}
