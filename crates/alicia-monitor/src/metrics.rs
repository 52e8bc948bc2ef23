//! Metric families: parsed from services' JSON snapshots (the contract in the crate docs), from
//! `$SYS` topics, from the host (sysinfo) and from the monitor itself; rendered together as
//! Prometheus text, one family block per name, with `service` and `instance` labels.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleValue {
    Value(f64),
    /// Cumulative buckets (upper bound, count; the last bound is +Inf), sum and count.
    Histogram {
        buckets: Vec<(f64, f64)>,
        sum: f64,
        count: f64,
    },
}

/// One labelled sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(String, String)>,
    pub value: SampleValue,
}

/// A metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: String,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &str, kind: Kind, help: &str) -> Self {
        Family { name: name.into(), kind, help: help.into(), samples: Vec::new() }
    }

    pub fn sample(mut self, labels: &[(&str, &str)], value: f64) -> Self {
        self.push(labels, value);
        self
    }

    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.push(Sample { labels, value: SampleValue::Value(value) });
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// A parsed snapshot: who sent it and its families.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub service: String,
    pub instance: String,
    pub timestamp: String,
    pub families: Vec<Family>,
}

fn number(v: &Value, what: &str) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{what}: not a number")),
        Value::String(s) if s == "+Inf" => Ok(f64::INFINITY),
        Value::String(s) if s == "-Inf" => Ok(f64::NEG_INFINITY),
        Value::String(s) if s == "NaN" => Ok(f64::NAN),
        _ => Err(format!("{what}: not a number")),
    }
}

/// Parses a snapshot `{"service","instance","timestamp","metrics":[{name,type,help,samples}]}`.
/// Everything is checked (names, label names, numbers, cumulative buckets ending in +Inf):
/// what the monitor renders must parse.
pub fn parse_snapshot(payload: &[u8]) -> Result<Snapshot, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let service = text("service").ok_or("`service` missing")?;
    let instance = text("instance").unwrap_or_default();
    let timestamp = text("timestamp").unwrap_or_default();
    let metrics = v.get("metrics").and_then(Value::as_array).ok_or("`metrics` is not a list")?;
    let mut families = Vec::with_capacity(metrics.len());
    for (i, m) in metrics.iter().enumerate() {
        let name = m.get("name").and_then(Value::as_str).ok_or(format!("metrics[{i}].name missing"))?;
        if !valid_metric_name(name) {
            return Err(format!("metrics[{i}].name `{name}` is not a Prometheus name"));
        }
        let kind = match m.get("type").and_then(Value::as_str) {
            Some("counter") => Kind::Counter,
            Some("gauge") => Kind::Gauge,
            Some("histogram") => Kind::Histogram,
            other => return Err(format!("{name}: type {other:?} (counter, gauge, histogram)")),
        };
        let help = m.get("help").and_then(Value::as_str).unwrap_or("").to_string();
        let mut family = Family { name: name.to_string(), kind, help, samples: Vec::new() };
        for s in m.get("samples").and_then(Value::as_array).ok_or(format!("{name}: `samples` is not a list"))? {
            let mut labels = Vec::new();
            if let Some(l) = s.get("labels") {
                let l = l.as_object().ok_or(format!("{name}: labels must be an object"))?;
                for (k, v) in l {
                    if !valid_label_name(k) || ["service", "instance", "le"].contains(&k.as_str()) {
                        return Err(format!("{name}: label name `{k}` is not allowed"));
                    }
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(_) | Value::Bool(_) => v.to_string(),
                        _ => return Err(format!("{name}: label `{k}` must be text")),
                    };
                    labels.push((k.clone(), v));
                }
            }
            let value = if kind == Kind::Histogram {
                let raw = s.get("buckets").and_then(Value::as_array).ok_or(format!("{name}: buckets missing"))?;
                let mut buckets = Vec::with_capacity(raw.len());
                for b in raw {
                    let pair =
                        b.as_array().filter(|p| p.len() == 2).ok_or(format!("{name}: a bucket is [le, count]"))?;
                    buckets.push((number(&pair[0], name)?, number(&pair[1], name)?));
                }
                let cumulative = buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
                if buckets.last().map(|b| b.0) != Some(f64::INFINITY) || !cumulative {
                    return Err(format!("{name}: buckets must be increasing, cumulative, and end with +Inf"));
                }
                let sum = number(s.get("sum").unwrap_or(&Value::Null), name)?;
                let count = number(s.get("count").unwrap_or(&Value::Null), name)?;
                SampleValue::Histogram { buckets, sum, count }
            } else {
                SampleValue::Value(number(s.get("value").unwrap_or(&Value::Null), name)?)
            };
            family.samples.push(Sample { labels, value });
        }
        families.push(family);
    }
    Ok(Snapshot { service, instance, timestamp, families })
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn label_text(labels: &[(String, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{}\"", escape_label(&v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Labels common to a group of families, and the families.
pub type Source = (Vec<(String, String)>, Vec<Family>);

/// Merges families by name (a later family with another type is dropped, so the output stays
/// valid) and renders them. `common` labels (service, instance) go first on each sample.
pub fn render(sources: Vec<Source>) -> String {
    let mut merged: BTreeMap<String, (Kind, String, Vec<Sample>)> = BTreeMap::new();
    for (common, families) in sources {
        for f in families {
            let entry = merged.entry(f.name.clone()).or_insert_with(|| (f.kind, f.help.clone(), Vec::new()));
            if entry.0 != f.kind {
                tracing::debug!(name = %f.name, "metric family with two types; the second is dropped");
                continue;
            }
            if entry.1.is_empty() {
                entry.1 = f.help.clone();
            }
            for mut s in f.samples {
                let mut labels = common.clone();
                labels.append(&mut s.labels);
                entry.2.push(Sample { labels, value: s.value });
            }
        }
    }
    let mut out = String::new();
    for (name, (kind, help, samples)) in merged {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(if help.is_empty() { &name } else { &help }));
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        for s in samples {
            match s.value {
                SampleValue::Value(v) => {
                    let _ = writeln!(out, "{name}{} {}", label_text(&s.labels, None), fmt_f64(v));
                }
                SampleValue::Histogram { buckets, sum, count } => {
                    for (le, c) in buckets {
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            label_text(&s.labels, Some(("le", fmt_f64(le)))),
                            fmt_f64(c)
                        );
                    }
                    let _ = writeln!(out, "{name}_sum{} {}", label_text(&s.labels, None), fmt_f64(sum));
                    let _ = writeln!(out, "{name}_count{} {}", label_text(&s.labels, None), fmt_f64(count));
                }
            }
        }
    }
    out
}

/// The leading number of a `$SYS` payload (`"12"`, `"0.5"`, `"3600 seconds"`).
pub fn sys_number(payload: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let first = text.split_whitespace().next()?;
    first.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The host's CPU, memory, disks and network, read with sysinfo.
pub struct Host {
    system: sysinfo::System,
    disks: sysinfo::Disks,
    networks: sysinfo::Networks,
}

/// One reading of the host.
#[derive(Debug, Clone, Default)]
pub struct HostReading {
    pub cpu_ratio: f64,
    pub memory_used: u64,
    pub memory_total: u64,
    /// (mount point, used, total)
    pub disks: Vec<(String, u64, u64)>,
    /// (interface, received total, transmitted total)
    pub networks: Vec<(String, u64, u64)>,
}

impl Host {
    pub fn new() -> Self {
        let mut system = sysinfo::System::new();
        system.refresh_cpu_usage();
        Host {
            system,
            disks: sysinfo::Disks::new_with_refreshed_list(),
            networks: sysinfo::Networks::new_with_refreshed_list(),
        }
    }

    /// Reads the host (blocking: call from a blocking task).
    pub fn read(&mut self) -> HostReading {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let mut disks: Vec<_> = self
            .disks
            .list()
            .iter()
            .map(|d| {
                let total = d.total_space();
                (d.mount_point().display().to_string(), total.saturating_sub(d.available_space()), total)
            })
            .collect();
        disks.sort();
        disks.dedup_by(|a, b| a.0 == b.0);
        let mut networks: Vec<_> =
            self.networks.iter().map(|(n, d)| (n.clone(), d.total_received(), d.total_transmitted())).collect();
        networks.sort();
        HostReading {
            cpu_ratio: f64::from(self.system.global_cpu_usage()) / 100.0,
            memory_used: self.system.used_memory(),
            memory_total: self.system.total_memory(),
            disks,
            networks,
        }
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

impl HostReading {
    pub fn families(&self) -> Vec<Family> {
        let mut disk_used = Family::new("alicia_system_disk_used_bytes", Kind::Gauge, "Used disk space by mount point");
        let mut disk_total = Family::new("alicia_system_disk_total_bytes", Kind::Gauge, "Disk size by mount point");
        for (m, used, total) in &self.disks {
            disk_used.push(&[("mount", m)], *used as f64);
            disk_total.push(&[("mount", m)], *total as f64);
        }
        let mut rx =
            Family::new("alicia_system_network_received_bytes_total", Kind::Counter, "Bytes received by interface");
        let mut tx =
            Family::new("alicia_system_network_transmitted_bytes_total", Kind::Counter, "Bytes sent by interface");
        for (n, r, t) in &self.networks {
            rx.push(&[("interface", n)], *r as f64);
            tx.push(&[("interface", n)], *t as f64);
        }
        vec![
            Family::new("alicia_system_cpu_usage_ratio", Kind::Gauge, "CPU use of the host, 0 to 1")
                .sample(&[], self.cpu_ratio),
            Family::new("alicia_system_memory_used_bytes", Kind::Gauge, "Memory in use on the host")
                .sample(&[], self.memory_used as f64),
            Family::new("alicia_system_memory_total_bytes", Kind::Gauge, "Memory of the host")
                .sample(&[], self.memory_total as f64),
            disk_used,
            disk_total,
            rx,
            tx,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_contract_parses_and_renders() {
        let snap = br#"{"service":"router","instance":"a1","timestamp":"2026-01-01T00:00:00Z","metrics":[
          {"name":"alicia_router_routed_total","type":"counter","help":"Routed","samples":[{"labels":{"destination":"device"},"value":12}]},
          {"name":"alicia_router_latency_seconds","type":"histogram","help":"Latency","samples":[{"labels":{},"buckets":[[0.0005,10],[0.001,12],["+Inf",12]],"sum":0.004,"count":12}]}]}"#;
        let s = parse_snapshot(snap).unwrap();
        let text = render(vec![(
            vec![("service".into(), s.service.clone()), ("instance".into(), s.instance.clone())],
            s.families,
        )]);
        assert!(
            text.contains("alicia_router_routed_total{service=\"router\",instance=\"a1\",destination=\"device\"} 12\n"),
            "{text}"
        );
        assert!(
            text.contains("alicia_router_latency_seconds_bucket{service=\"router\",instance=\"a1\",le=\"+Inf\"} 12\n"),
            "{text}"
        );
        assert!(
            text.contains("alicia_router_latency_seconds_count{service=\"router\",instance=\"a1\"} 12\n"),
            "{text}"
        );
    }

    #[test]
    fn bad_snapshots_are_refused() {
        for bad in [
            &br#"{"metrics":[]}"#[..],
            br#"{"service":"x","metrics":[{"name":"bad-name","type":"counter","samples":[]}]}"#,
            br#"{"service":"x","metrics":[{"name":"a","type":"summary","samples":[]}]}"#,
            br#"{"service":"x","metrics":[{"name":"a","type":"counter","samples":[{"labels":{"le":"1"},"value":1}]}]}"#,
            br#"{"service":"x","metrics":[{"name":"a","type":"histogram","samples":[{"buckets":[[1,5],[2,3],["+Inf",5]],"sum":1,"count":5}]}]}"#,
            br#"{"service":"x","metrics":[{"name":"a","type":"gauge","samples":[{"value":"many"}]}]}"#,
            b"nope",
        ] {
            assert!(parse_snapshot(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
