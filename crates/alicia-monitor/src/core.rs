//! The monitor's state and its one event loop: every input (heartbeats, status topics, metric
//! snapshots, `$SYS`, log lines, container reports, ticks) is handled in one task, which then
//! publishes alerts and updates the state the HTTP handlers read (so handlers never wait for I/O).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_config::{MonitoringConfig, Severity};
use alicia_sdk::{Bus, QoS, Refusal};
use alicia_sdk::{Link, LinkEvent};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::alerts::{AlertSpec, Alerts};
use crate::docker::{Container, DockerReport, EngineState};
use crate::logs::{LogAnalyzer, LogLine};
use crate::metrics::{Family, HostReading, Kind, Snapshot};

/// Services tracked at most (names come from the network).
const MAX_SERVICES: usize = 1000;
/// Metrics sources (topic, instance) kept at most.
const MAX_SNAPSHOTS: usize = 500;

/// Extra Prometheus text appended to `/metrics` (the embedded broker's own metrics).
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What the monitor tracks of one service.
#[derive(Debug, Clone)]
pub(crate) struct ServiceState {
    pub expected: bool,
    pub last_heartbeat: Option<Instant>,
    pub last_heartbeat_at: Option<String>,
    pub interval: Option<Duration>,
    pub status: Option<String>,
    pub instances: BTreeSet<String>,
    pub missing: bool,
    /// The service's retained health document (`P/system/services/<name>/health`), if any:
    /// `{"status": "ok"|"unavailable", "reason", "fix"}`.
    pub health: Option<Value>,
}

impl ServiceState {
    /// A service not heard from yet.
    fn new(expected: bool) -> Self {
        ServiceState {
            expected,
            last_heartbeat: None,
            last_heartbeat_at: None,
            interval: None,
            status: None,
            instances: BTreeSet::new(),
            missing: false,
            health: None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub heartbeats: AtomicU64,
    pub snapshots_accepted: AtomicU64,
    pub snapshots_rejected: AtomicU64,
    pub log_lines: AtomicU64,
    pub fired: [AtomicU64; 3],
    pub resolved: AtomicU64,
}

/// Everything the HTTP side reads.
pub(crate) struct Shared {
    pub started: Instant,
    pub cfg: RwLock<MonitoringConfig>,
    pub prefix: String,
    pub docs_online: AtomicBool,
    pub bus: Bus,
    pub services: RwLock<BTreeMap<String, ServiceState>>,
    pub snapshots: RwLock<BTreeMap<(String, String), (Instant, Snapshot)>>,
    pub sys: RwLock<BTreeMap<String, f64>>,
    pub host: RwLock<Option<HostReading>>,
    pub active: RwLock<Vec<Value>>,
    pub history: RwLock<VecDeque<Value>>,
    pub engine: RwLock<EngineState>,
    pub containers: RwLock<Vec<Container>>,
    pub log_matches: Mutex<BTreeMap<String, u64>>,
    pub counters: Counters,
    pub extra: RwLock<Option<ExtraMetrics>>,
    /// The devices of the registry's retained inventory, as the dashboard shows them.
    pub devices: RwLock<Vec<Value>>,
}

/// The most devices the dashboard lists (the inventory may be larger).
const MAX_DEVICES: usize = 1000;

/// A device of the registry's inventory, reduced to what the dashboard shows.
fn device_row(d: &Value) -> Value {
    let capabilities: Vec<&str> = d["capabilities"]
        .as_array()
        .map(|caps| caps.iter().filter_map(|c| c.as_str().or_else(|| c["name"].as_str())).collect())
        .unwrap_or_default();
    json!({
        "device_id": d["device_id"], "device_type": d["device_type"], "name": d["name"],
        "location": d["location"], "status": d["status"],
        "last_seen": d.get("last_seen_at").unwrap_or(&d["last_seen"]),
        "capabilities": capabilities,
    })
}

/// Inputs of the loop besides the document connection.
pub(crate) enum Input {
    Heartbeat(Value),
    Docker(DockerReport),
    Host(HostReading),
    /// A new `monitoring` section, from the configuration service.
    Reconfigure(Box<MonitoringConfig>),
}

pub(crate) struct Loop {
    pub shared: Arc<Shared>,
    pub docs: Link,
    pub alerts: Alerts,
    pub analyzer: LogAnalyzer,
    pub default_interval: Duration,
    pub tick: Duration,
    pub last_active: Vec<Value>,
    /// Services no longer tracked after a reload, whose alerts must end.
    pub forget: Vec<String>,
    /// Each histogram's merged cumulative buckets at the last history point, so a point's
    /// quantile covers only what was observed since the one before.
    pub prev_histograms: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Loop {
    fn topic(&self, rest: &str) -> String {
        format!("{}/{rest}", self.shared.prefix)
    }

    pub async fn run(
        mut self,
        mut doc_events: mpsc::UnboundedReceiver<LinkEvent>,
        mut inputs: mpsc::UnboundedReceiver<Input>,
        mut logs: mpsc::Receiver<LogLine>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = doc_events.recv() => match ev {
                    Some(ev) => self.doc_event(ev).await,
                    None => return,
                },
                Some(input) = inputs.recv() => self.input(input).await,
                Some(line) = logs.recv() => self.log_line(line).await,
                _ = tick.tick() => self.evaluate().await,
                _ = stop.changed() => return,
            }
        }
    }

    async fn publish(&mut self, alerts: Vec<Value>) {
        let topic = self.topic("system/alerts");
        for a in alerts {
            let firing = a["state"] == "firing";
            let sev = match a["severity"].as_str() {
                Some("critical") => 2,
                Some("warning") => 1,
                _ => 0,
            };
            if firing {
                self.shared.counters.fired[sev].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(alert = %a["alert"], service = %a["service"], severity = %a["severity"], message = %a["message"], "alert firing");
            } else {
                self.shared.counters.resolved.fetch_add(1, Ordering::Relaxed);
                tracing::info!(alert = %a["alert"], service = %a["service"], "alert resolved");
            }
            let _ = self
                .docs
                .publish(topic.clone(), QoS::AtLeastOnce, false, serde_json::to_vec(&a).expect("JSON"), None)
                .await;
        }
        let active = self.alerts.active();
        if active != self.last_active {
            self.last_active = active.clone();
            *self.shared.active.write() = active;
            self.publish_active().await;
        }
    }

    async fn publish_active(&self) {
        let doc = json!({ "updated": crate::now_rfc3339(), "alerts": self.last_active });
        let body = serde_json::to_vec(&doc).expect("JSON");
        let _ = self.docs.publish(self.topic("system/alerts/active"), QoS::AtLeastOnce, true, body, None).await;
    }

    async fn doc_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Online => {
                self.shared.docs_online.store(true, Ordering::Relaxed);
                self.publish_active().await;
            }
            LinkEvent::Offline { .. } => self.shared.docs_online.store(false, Ordering::Relaxed),
            LinkEvent::Message(p) => {
                let (topic, payload) = (String::from_utf8_lossy(&p.topic).into_owned(), p.payload);
                let status_prefix = self.topic("system/services/");
                let metrics_prefix = self.topic("system/metrics/");
                if let Some(name) = topic.strip_prefix(&status_prefix).and_then(|r| r.strip_suffix("/health")) {
                    if !name.is_empty() && !name.contains('/') {
                        self.health(name, &payload);
                    }
                } else if let Some(rest) = topic.strip_prefix(&status_prefix) {
                    if let Some(name) = rest.strip_suffix("/status") {
                        let text = String::from_utf8_lossy(&payload).trim().to_string();
                        if !name.is_empty() && !name.contains('/') && (text == "online" || text == "offline") {
                            self.status(name, text);
                        }
                    }
                } else if let Some(name) = topic.strip_prefix(&metrics_prefix) {
                    self.snapshot(name, &topic, &payload).await;
                } else if topic == self.topic("system/registry/devices") {
                    // Cleared (empty) or unreadable: no devices to show.
                    let inventory: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                    let rows = inventory["devices"]
                        .as_array()
                        .map(|list| list.iter().take(MAX_DEVICES).map(device_row).collect());
                    *self.shared.devices.write() = rows.unwrap_or_default();
                } else if topic.starts_with("$SYS/") {
                    let mut sys = self.shared.sys.write();
                    match crate::metrics::sys_number(&payload) {
                        Some(v) if sys.len() < 1000 || sys.contains_key(&topic) => {
                            sys.insert(topic, v);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn status(&mut self, name: &str, text: String) {
        let mut services = self.shared.services.write();
        if services.len() >= MAX_SERVICES && !services.contains_key(name) {
            return;
        }
        let expected = self.shared.cfg.read().expected_services.iter().any(|s| s == name);
        let st = services.entry(name.to_string()).or_insert_with(|| ServiceState::new(expected));
        if text == "online" && st.last_heartbeat.is_none() {
            // Known from its status only: give it a full window from now to send a heartbeat.
            st.last_heartbeat = Some(Instant::now());
        }
        st.status = Some(text);
    }

    /// A service's health document: kept for `/health` and `/ready`, and an `unavailable`
    /// one is a critical alert `service_unavailable` with its reason and fix. Empty: cleared.
    fn health(&mut self, name: &str, payload: &[u8]) {
        let mut services = self.shared.services.write();
        let doc = match serde_json::from_slice::<Value>(payload) {
            _ if payload.is_empty() => None,
            Ok(v @ Value::Object(_)) => Some(v),
            _ => {
                tracing::debug!(service = name, "health document is not a JSON object; ignored");
                return;
            }
        };
        if doc.is_none() && !services.contains_key(name) {
            return;
        }
        if services.len() >= MAX_SERVICES && !services.contains_key(name) {
            return;
        }
        let expected = self.shared.cfg.read().expected_services.iter().any(|s| s == name);
        let st = services.entry(name.to_string()).or_insert_with(|| ServiceState::new(expected));
        st.health = doc;
    }

    async fn snapshot(&mut self, name: &str, topic: &str, payload: &[u8]) {
        if let Err(reason) = self.store_snapshot(name, topic, payload) {
            self.reject(reason, topic, payload).await;
        }
    }

    fn store_snapshot(&self, name: &str, topic: &str, payload: &[u8]) -> Result<(), String> {
        let mut snaps = self.shared.snapshots.write();
        if payload.is_empty() {
            snaps.retain(|(t, _), _| t != topic);
            return Ok(());
        }
        let s = crate::metrics::parse_snapshot(payload).map_err(|r| format!("invalid metrics snapshot: {r}"))?;
        if s.service != name {
            return Err(format!("snapshot of `{}` on the topic of `{name}`", s.service));
        }
        let key = (topic.to_string(), s.instance.clone());
        if snaps.len() >= MAX_SNAPSHOTS && !snaps.contains_key(&key) {
            return Err(format!("more than {MAX_SNAPSHOTS} metrics sources"));
        }
        self.shared.counters.snapshots_accepted.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        // Other instances on the same topic that stopped sending are dropped after a minute.
        snaps.retain(|(t, i), (at, _)| {
            t != topic || *i == s.instance || now.duration_since(*at) < Duration::from_secs(60)
        });
        snaps.insert(key, (now, s));
        Ok(())
    }

    async fn reject(&self, reason: String, topic: &str, payload: &[u8]) {
        self.shared.counters.snapshots_rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%topic, %reason, "metrics snapshot rejected");
        let _ = self.shared.bus.dead_letter(Refusal::new("invalid_snapshot", reason), topic, payload).await;
    }

    async fn input(&mut self, input: Input) {
        match input {
            Input::Heartbeat(data) => {
                self.shared.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                let Some(name) = data.get("service").and_then(Value::as_str) else { return };
                let mut services = self.shared.services.write();
                if services.len() >= MAX_SERVICES && !services.contains_key(name) {
                    tracing::debug!(service = name, "too many services tracked; heartbeat ignored");
                    return;
                }
                let expected = self.shared.cfg.read().expected_services.iter().any(|s| s == name);
                let st = services.entry(name.to_string()).or_insert_with(|| ServiceState::new(expected));
                st.last_heartbeat = Some(Instant::now());
                st.last_heartbeat_at = Some(crate::now_rfc3339());
                if let Some(secs) = data.get("interval_secs").and_then(Value::as_u64).filter(|s| *s > 0) {
                    st.interval = Some(Duration::from_secs(secs.min(3600)));
                }
                if let Some(i) = data.get("instance").and_then(Value::as_str) {
                    if st.instances.len() < 64 {
                        st.instances.insert(i.to_string());
                    }
                }
                if data.get("status").and_then(Value::as_str) == Some("online") {
                    st.status = Some("online".into());
                }
            }
            Input::Docker(DockerReport::State(state)) => {
                *self.shared.engine.write() = state.clone();
                let out = match &state {
                    EngineState::Unavailable { reason, socket } => self.alerts.event(
                        AlertSpec {
                            alert: "container_engine_unavailable".into(),
                            severity: Severity::Info,
                            service: "docker".into(),
                            message: format!("no container engine at {socket}: {reason}"),
                            context: json!({ "socket": socket, "reason": reason }),
                        },
                        Duration::MAX,
                        Instant::now(),
                    ),
                    _ => self.alerts.clear("container_engine_unavailable", "docker"),
                };
                self.publish(out.into_iter().collect()).await;
            }
            Input::Docker(DockerReport::Containers(list)) => {
                let now = Instant::now();
                let mut out = Vec::new();
                for c in &list {
                    let spec = AlertSpec {
                        alert: "container_unhealthy".into(),
                        severity: Severity::Warning,
                        service: format!("container:{}", c.name),
                        message: format!("container {} is {} ({})", c.name, c.health, c.state),
                        context: json!({ "container": c.name, "image": c.image, "health": c.health, "state": c.state, "restart_count": c.restart_count }),
                    };
                    out.extend(self.alerts.hold(spec, c.health == "unhealthy", now));
                }
                *self.shared.containers.write() = list;
                self.publish(out).await;
            }
            Input::Reconfigure(m) => self.reconfigure(*m),
            Input::Host(reading) => {
                let now = Instant::now();
                let a = self.shared.cfg.read().alerts.clone();
                let mut out = Vec::new();
                let mut check = |alert: &str, value: f64, limit: f64, what: String| {
                    let spec = AlertSpec {
                        alert: alert.into(),
                        severity: Severity::Warning,
                        service: "host".into(),
                        message: format!("{what} at {value:.0}% (limit {limit:.0}%)"),
                        context: json!({ "percent": value, "limit_percent": limit }),
                    };
                    out.extend(self.alerts.hold(spec, value > limit, now));
                };
                check("host_cpu_high", reading.cpu_ratio * 100.0, a.cpu_warning_percent, "CPU".into());
                if reading.memory_total > 0 {
                    let pct = reading.memory_used as f64 * 100.0 / reading.memory_total as f64;
                    check("host_memory_high", pct, a.memory_warning_percent, "memory".into());
                }
                let worst = reading
                    .disks
                    .iter()
                    .filter(|d| d.2 > 0)
                    .map(|d| (d.1 as f64 * 100.0 / d.2 as f64, d.0.clone()))
                    .max_by(|x, y| x.0.total_cmp(&y.0));
                if let Some((pct, mount)) = worst {
                    check("host_disk_high", pct, a.disk_warning_percent, format!("disk {mount}"));
                }
                *self.shared.host.write() = Some(reading);
                self.publish(out).await;
                self.record_history();
            }
        }
    }

    /// Puts a new `monitoring` section in force: expected services, alert thresholds and
    /// damping, log rules, history length, labels. (Container settings and the HTTP address
    /// are read at start only.)
    fn reconfigure(&mut self, m: MonitoringConfig) {
        let analyzer = match LogAnalyzer::new(&m.log_rules) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "new monitoring configuration refused; the current one stays");
                return;
            }
        };
        self.analyzer = analyzer;
        self.alerts.set_damping(
            Duration::from_secs_f64(m.alerts.fire_after_secs),
            Duration::from_secs_f64(m.alerts.resolve_after_secs),
        );
        {
            let mut services = self.shared.services.write();
            services.retain(|name, st| {
                st.expected = m.expected_services.contains(name);
                // A service that was only expected, never seen, is no longer of interest.
                let keep = st.expected || st.last_heartbeat.is_some() || st.status.is_some() || st.health.is_some();
                if !keep {
                    self.forget.push(name.clone());
                }
                keep
            });
        }
        tracing::info!(expected = ?m.expected_services, rules = m.log_rules.len(), "monitoring configuration reloaded");
        *self.shared.cfg.write() = m;
    }

    async fn log_line(&mut self, line: LogLine) {
        self.shared.counters.log_lines.fetch_add(1, Ordering::Relaxed);
        let Some(m) = self.analyzer.analyze(&line.line) else { return };
        let rule = m.rule.clone();
        *self.shared.log_matches.lock().entry(rule.name.clone()).or_default() += 1;
        let mut text = line.line.clone();
        if text.len() > 1000 {
            let mut cut = 1000;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let window = Duration::from_secs_f64(self.shared.cfg.read().alerts.log_alert_window_secs);
        let spec = AlertSpec {
            alert: rule.name.clone(),
            severity: rule.severity,
            service: line.source.clone(),
            // The line itself, so whoever reads the alert sees what happened, not only that
            // something matched.
            message: format!("{}: {}", rule.message, short(&text, 300)),
            context: json!({ "line": text, "source": line.source, "rule": rule.name, "pattern": rule.pattern }),
        };
        let out = self.alerts.event(spec, window, Instant::now());
        self.publish(out.into_iter().collect()).await;
    }

    async fn evaluate(&mut self) {
        let now = Instant::now();
        let (intervals, expected) = {
            let cfg = self.shared.cfg.read();
            (cfg.alerts.missing_after_intervals.max(1), cfg.expected_services.clone())
        };
        let mut out = self.alerts.tick(now);
        for name in std::mem::take(&mut self.forget) {
            out.extend(self.alerts.clear("service_missing", &name));
        }
        let mut specs = Vec::new();
        {
            let mut services = self.shared.services.write();
            for name in &expected {
                services.entry(name.clone()).or_insert_with(|| ServiceState::new(true));
            }
            let mut departed = Vec::new();
            for (name, st) in services.iter_mut() {
                let interval = st.interval.unwrap_or(self.default_interval);
                let window = interval * intervals;
                let since = st.last_heartbeat.unwrap_or(self.shared.started);
                let silent = now.duration_since(since) > window;
                let offline = st.status.as_deref() == Some("offline");
                if !st.expected && offline && health_unavailable(st.health.as_ref()).is_none() {
                    // Left cleanly (its last words were `offline`) and nobody expects it: forget it.
                    departed.push(name.clone());
                    continue;
                }
                let unavailable = health_unavailable(st.health.as_ref());
                specs.push((
                    AlertSpec {
                        alert: "service_unavailable".into(),
                        severity: Severity::Critical,
                        service: name.clone(),
                        message: unavailable.clone().unwrap_or_else(|| format!("{name} is available")),
                        context: st.health.clone().unwrap_or(Value::Null),
                    },
                    unavailable.is_some(),
                ));
                st.missing = silent || offline || unavailable.is_some();
                let why = if offline { "reported offline" } else { "sent no heartbeat" };
                specs.push((
                    AlertSpec {
                        alert: "service_missing".into(),
                        severity: if st.expected { Severity::Critical } else { Severity::Warning },
                        service: name.clone(),
                        message: format!("service {name} {why} (heartbeat window {}s)", window.as_secs_f64()),
                        context: json!({
                            "expected": st.expected,
                            "status": st.status,
                            "last_heartbeat": st.last_heartbeat_at,
                            "interval_secs": interval.as_secs_f64(),
                            "window_secs": window.as_secs_f64(),
                        }),
                    },
                    st.missing && unavailable.is_none(),
                ));
            }
            for name in departed {
                services.remove(&name);
                specs.push((
                    AlertSpec {
                        alert: "service_missing".into(),
                        severity: Severity::Warning,
                        service: name,
                        message: String::new(),
                        context: json!({}),
                    },
                    false,
                ));
            }
        }
        for (spec, active) in specs {
            if spec.message.is_empty() {
                out.extend(self.alerts.clear(&spec.alert, &spec.service));
            } else {
                out.extend(self.alerts.hold(spec, active, now));
            }
        }
        self.publish(out).await;
    }

    fn record_history(&mut self) {
        let s = self.shared.clone();
        let mut totals: BTreeMap<String, f64> = BTreeMap::new();
        let mut devices: BTreeMap<String, f64> = BTreeMap::new();
        let mut histograms: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (_, snap) in s.snapshots.read().values() {
            for f in &snap.families {
                for sample in &f.samples {
                    match &sample.value {
                        crate::metrics::SampleValue::Value(v) if v.is_finite() => {
                            *totals.entry(f.name.clone()).or_default() += v;
                            if f.name == "alicia_registry_devices" {
                                if let Some((_, status)) = sample.labels.iter().find(|(k, _)| k == "status") {
                                    *devices.entry(status.clone()).or_default() += v;
                                }
                            }
                        }
                        crate::metrics::SampleValue::Histogram { buckets, .. } => {
                            merge_buckets(histograms.entry(f.name.clone()).or_default(), buckets);
                        }
                        _ => {}
                    }
                }
            }
        }
        // p99 of what each histogram observed during the last interval (absent when nothing was).
        let mut p99 = serde_json::Map::new();
        for (name, now) in &histograms {
            let prev = self.prev_histograms.get(name).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(q) = quantile(0.99, &interval_buckets(now, prev)) {
                p99.insert(name.clone(), json!(q));
            }
        }
        self.prev_histograms = histograms;
        let services = s.services.read();
        let host = s.host.read().clone().unwrap_or_default();
        let mut point = json!({
            "timestamp": crate::now_rfc3339(),
            "cpu_ratio": host.cpu_ratio,
            "memory_used_bytes": host.memory_used,
            "memory_total_bytes": host.memory_total,
            "network_received_bytes_total": host.networks.iter().map(|n| n.1).sum::<u64>(),
            "network_transmitted_bytes_total": host.networks.iter().map(|n| n.2).sum::<u64>(),
            "services_up": services.values().filter(|v| !v.missing).count(),
            "services_missing": services.values().filter(|v| v.missing).count(),
            "alerts_active": self.last_active.len(),
            "metrics": totals,
            "p99": p99,
        });
        drop(services);
        let broker = s.broker_totals();
        if !broker.is_empty() {
            point["broker"] = json!(broker);
        }
        if !devices.is_empty() {
            point["devices"] = json!(devices);
        }
        let mut h = s.history.write();
        h.push_back(point);
        while h.len() > s.cfg.read().history_len.max(1) {
            h.pop_front();
        }
    }
}

/// Adds cumulative `buckets` into `into`, bound by bound (sources with the same bounds merge
/// exactly; a bound only one source has keeps that source's count).
fn merge_buckets(into: &mut Vec<(f64, f64)>, buckets: &[(f64, f64)]) {
    for &(le, n) in buckets {
        if !n.is_finite() {
            continue;
        }
        match into.iter_mut().find(|(b, _)| *b == le || (b.is_infinite() && le.is_infinite())) {
            Some(slot) => slot.1 += n,
            None => into.push((le, n)),
        }
    }
    into.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// Cumulative buckets of what was observed between `prev` and `now`; after a counter reset
/// (a count went down) everything in `now` counts as new.
fn interval_buckets(now: &[(f64, f64)], prev: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let before = |le: f64| prev.iter().find(|(b, _)| *b == le).map(|x| x.1).unwrap_or(0.0);
    if now.iter().any(|&(le, n)| n < before(le)) {
        return now.to_vec();
    }
    now.iter().map(|&(le, n)| (le, n - before(le))).collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside the bucket as
/// Prometheus' `histogram_quantile` does; in the `+Inf` bucket, the highest finite bound.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, n) in buckets {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = n - below;
            return Some(if inside > 0.0 { lower + (le - lower) * (rank - below) / inside } else { le });
        }
        (lower, below) = (le, n);
    }
    Some(lower)
}

impl Shared {
    /// The broker's message counters and connected clients: its `$SYS` topics (Mosquitto and
    /// Alicia's broker publish them), else the embedded broker's metrics text. Missing ones are
    /// left out.
    pub fn broker_totals(&self) -> BTreeMap<&'static str, f64> {
        const KEYS: [(&str, &str, &str); 3] = [
            ("messages_received_total", "$SYS/broker/messages/received", "alicia_broker_messages_received_total"),
            ("messages_sent_total", "$SYS/broker/messages/sent", "alicia_broker_messages_sent_total"),
            ("clients_connected", "$SYS/broker/clients/connected", "alicia_broker_clients_connected"),
        ];
        let mut out = BTreeMap::new();
        let sys = self.sys.read();
        for (key, topic, _) in KEYS {
            if let Some(v) = sys.get(topic) {
                out.insert(key, *v);
            }
        }
        drop(sys);
        if out.len() < KEYS.len() {
            if let Some(extra) = self.extra.read().clone() {
                let text = extra();
                for (key, _, name) in KEYS {
                    if out.contains_key(key) {
                        continue;
                    }
                    // Unlabelled samples only: `name value`.
                    let v =
                        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
                    if let Some(v) = v.filter(|v| v.is_finite()) {
                        out.insert(key, v);
                    }
                }
            }
        }
        out
    }

    /// The monitor's own families, the host's, containers', `$SYS` and all snapshots, as text.
    pub fn render_metrics(&self) -> String {
        let c = &self.counters;
        let mut own = vec![
            Family::new("alicia_monitor_heartbeats_total", Kind::Counter, "Heartbeats received")
                .sample(&[], c.heartbeats.load(Ordering::Relaxed) as f64),
            Family::new("alicia_monitor_snapshots_total", Kind::Counter, "Metrics snapshots received")
                .sample(&[("result", "accepted")], c.snapshots_accepted.load(Ordering::Relaxed) as f64)
                .sample(&[("result", "rejected")], c.snapshots_rejected.load(Ordering::Relaxed) as f64),
            Family::new("alicia_monitor_log_lines_total", Kind::Counter, "Log lines analyzed")
                .sample(&[], c.log_lines.load(Ordering::Relaxed) as f64),
            Family::new("alicia_monitor_alerts_fired_total", Kind::Counter, "Alerts fired by severity")
                .sample(&[("severity", "info")], c.fired[0].load(Ordering::Relaxed) as f64)
                .sample(&[("severity", "warning")], c.fired[1].load(Ordering::Relaxed) as f64)
                .sample(&[("severity", "critical")], c.fired[2].load(Ordering::Relaxed) as f64),
            Family::new("alicia_monitor_alerts_resolved_total", Kind::Counter, "Alerts resolved")
                .sample(&[], c.resolved.load(Ordering::Relaxed) as f64),
            Family::new("alicia_monitor_alerts_active", Kind::Gauge, "Alerts firing now")
                .sample(&[], self.active.read().len() as f64),
            Family::new("alicia_monitor_uptime_seconds", Kind::Gauge, "Seconds since the monitor started")
                .sample(&[], self.started.elapsed().as_secs_f64()),
        ];
        let mut matches = Family::new("alicia_monitor_log_matches_total", Kind::Counter, "Log lines matching a rule");
        for (rule, n) in self.log_matches.lock().iter() {
            matches.push(&[("rule", rule)], *n as f64);
        }
        own.push(matches);
        let mut up = Family::new(
            "alicia_monitor_service_up",
            Kind::Gauge,
            "1 when the service sends heartbeats, 0 when missing",
        );
        for (name, st) in self.services.read().iter() {
            up.push(&[("service", name)], if st.missing { 0.0 } else { 1.0 });
        }
        own.push(up);
        let engine = self.engine.read().clone();
        let (engine_up, state) = match &engine {
            EngineState::Available { .. } => (1.0, "available"),
            EngineState::Unavailable { .. } => (0.0, "unavailable"),
            EngineState::NotInstalled { .. } => (0.0, "not_installed"),
            EngineState::Disabled => (0.0, "disabled"),
            EngineState::Starting => (0.0, "starting"),
        };
        own.push(
            Family::new("alicia_monitor_container_engine_up", Kind::Gauge, "1 when the container engine answers")
                .sample(&[("state", state)], engine_up),
        );
        let mut restarts = Family::new("alicia_container_restarts", Kind::Gauge, "Restart count of each container");
        let mut mem = Family::new("alicia_container_memory_bytes", Kind::Gauge, "Memory use of each running container");
        let mut cpu =
            Family::new("alicia_container_cpu_ratio", Kind::Gauge, "CPU use of each running container (1 = one CPU)");
        let mut healthy =
            Family::new("alicia_container_healthy", Kind::Gauge, "1 unless the container's health check fails");
        for ct in self.containers.read().iter() {
            let l = [("container", ct.name.as_str()), ("health", ct.health.as_str())];
            restarts.push(&l[..1], ct.restart_count as f64);
            healthy.push(&l, if ct.health == "unhealthy" { 0.0 } else { 1.0 });
            if let Some(m) = ct.memory_bytes {
                mem.push(&l[..1], m as f64);
            }
            if let Some(r) = ct.cpu_ratio {
                cpu.push(&l[..1], r);
            }
        }
        own.extend([restarts, mem, cpu, healthy]);
        let mut sys = Family::new("alicia_mqtt_sys_value", Kind::Gauge, "Numeric $SYS topics of the broker");
        for (topic, v) in self.sys.read().iter() {
            sys.push(&[("topic", topic)], *v);
        }
        if !sys.samples.is_empty() {
            own.push(sys);
        }
        if let Some(h) = self.host.read().as_ref() {
            own.extend(h.families());
        }
        let labels: Vec<(String, String)> =
            self.cfg.read().labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut sources = vec![(labels.clone(), own)];
        for (_, s) in self.snapshots.read().values() {
            let mut common = labels.clone();
            common.push(("service".into(), s.service.clone()));
            common.push(("instance".into(), s.instance.clone()));
            sources.push((common, s.families.clone()));
        }
        let mut text = crate::metrics::render(sources);
        if let Some(extra) = self.extra.read().clone() {
            let more = extra();
            if !more.is_empty() {
                text.push_str(&more);
                if !more.ends_with('\n') {
                    text.push('\n');
                }
            }
        }
        text
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), with `…` when cut.
fn short(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}

/// The alert message of an `unavailable` health document: what is wrong and the one command
/// that fixes it.
pub(crate) fn health_unavailable(doc: Option<&Value>) -> Option<String> {
    let doc = doc?;
    if doc.get("status").and_then(Value::as_str) != Some("unavailable") {
        return None;
    }
    let service = doc.get("service").and_then(Value::as_str).unwrap_or("the service");
    let reason = doc.get("reason").and_then(Value::as_str).unwrap_or("no reason given");
    Some(match doc.get("fix").and_then(Value::as_str) {
        Some(fix) => format!("{service} is unavailable: {reason}; to fix it run: {fix}"),
        None => format!("{service} is unavailable: {reason}"),
    })
}

#[cfg(test)]
mod tests {
    use super::{interval_buckets, merge_buckets, quantile};

    const INF: f64 = f64::INFINITY;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 100 observations: 50 ≤ 1 ms, 50 in (1 ms, 10 ms].
        let b = [(0.001, 50.0), (0.01, 100.0), (INF, 100.0)];
        assert!((quantile(0.99, &b).unwrap() - 0.00982).abs() < 1e-12);
        assert!((quantile(0.5, &b).unwrap() - 0.001).abs() < 1e-12);
        // In the +Inf bucket: the highest finite bound.
        assert_eq!(quantile(0.99, &[(0.001, 1.0), (INF, 10.0)]), Some(0.001));
        assert_eq!(quantile(0.99, &[(0.001, 0.0), (INF, 0.0)]), None, "nothing observed");
        assert_eq!(quantile(0.99, &[]), None);
    }

    #[test]
    fn intervals_and_merging() {
        let prev = [(0.001, 50.0), (0.01, 100.0), (INF, 100.0)];
        let now = [(0.001, 50.0), (0.01, 200.0), (INF, 200.0)];
        assert_eq!(interval_buckets(&now, &prev), vec![(0.001, 0.0), (0.01, 100.0), (INF, 100.0)]);
        // A restarted source (counts went down): all of `now` is new.
        let restarted = [(0.001, 1.0), (0.01, 2.0), (INF, 2.0)];
        assert_eq!(interval_buckets(&restarted, &prev), restarted.to_vec());
        // Two instances with the same bounds add up; a NaN count is ignored.
        let mut m = Vec::new();
        merge_buckets(&mut m, &prev);
        merge_buckets(&mut m, &[(0.001, 1.0), (0.01, f64::NAN), (INF, 3.0)]);
        assert_eq!(m, vec![(0.001, 51.0), (0.01, 100.0), (INF, 103.0)]);
    }
}
