//! The router's metrics, published per the metrics contract on
//! `<prefix>/system/metrics/<service>`.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

/// Upper bounds of the latency histogram's buckets, in seconds (`+Inf` follows).
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The kinds of destination counted by `alicia_router_routed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A service's inbox.
    Service,
    /// The broadcast topic.
    Broadcast,
    /// A provider of a capability.
    Capability,
    /// One device.
    Device,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Service, Kind::Broadcast, Kind::Capability, Kind::Device];

    fn label(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Broadcast => "broadcast",
            Kind::Capability => "capability",
            Kind::Device => "device",
        }
    }
}

/// Counters, the latency histogram and the queue depth.
#[derive(Default)]
pub struct Metrics {
    routed: [AtomicU64; 4],
    dead: Mutex<BTreeMap<&'static str, u64>>,
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl Metrics {
    /// One envelope forwarded to a destination of `kind`, `latency` after it was received.
    pub fn routed(&self, kind: Kind, latency: Duration) {
        self.routed[kind as usize].fetch_add(1, Ordering::Relaxed);
        let secs = latency.as_secs_f64();
        let i = LATENCY_BUCKETS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// One dead letter, for `reason` (a short label).
    pub fn dead_letter(&self, reason: &'static str) {
        *self.dead.lock().entry(reason).or_insert(0) += 1;
    }

    /// Envelopes forwarded to destinations of `kind` so far.
    pub fn routed_count(&self, kind: Kind) -> u64 {
        self.routed[kind as usize].load(Ordering::Relaxed)
    }

    /// Dead letters for `reason` so far.
    pub fn dead_letter_count(&self, reason: &str) -> u64 {
        self.dead.lock().get(reason).copied().unwrap_or(0)
    }

    /// The metrics contract's snapshot.
    pub fn snapshot(&self, service: &str, instance: &str, queue_depth: usize, devices: usize) -> Value {
        let routed: Vec<Value> = Kind::ALL
            .iter()
            .map(|k| json!({"labels": {"destination": k.label()}, "value": self.routed_count(*k)}))
            .collect();
        let dead: Vec<Value> =
            self.dead.lock().iter().map(|(reason, n)| json!({"labels": {"reason": reason}, "value": n})).collect();
        let mut cumulative = 0;
        let mut buckets: Vec<Value> = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            match LATENCY_BUCKETS.get(i) {
                Some(bound) => buckets.push(json!([bound, cumulative])),
                None => buckets.push(json!(["+Inf", cumulative])),
            }
        }
        let sum = self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        json!({
            "service": service,
            "instance": instance,
            "timestamp": alicia_envelope::Timestamp::now().to_string(),
            "metrics": [
                {"name": "alicia_router_routed_total", "type": "counter",
                 "help": "Envelopes forwarded, by kind of destination.", "samples": routed},
                {"name": "alicia_router_dead_letters_total", "type": "counter",
                 "help": "Envelopes sent to the dead-letter topic instead of forwarded, by reason.", "samples": dead},
                {"name": "alicia_router_latency_seconds", "type": "histogram",
                 "help": "Time from the router receiving an envelope to handing it to the MQTT client for forwarding.",
                 "samples": [{"labels": {}, "buckets": buckets, "sum": sum, "count": cumulative}]},
                {"name": "alicia_router_queue_depth", "type": "gauge",
                 "help": "Envelopes waiting in the priority queue to be forwarded.",
                 "samples": [{"labels": {}, "value": queue_depth}]},
                {"name": "alicia_router_devices", "type": "gauge",
                 "help": "Devices in the registry inventory the router routes by.",
                 "samples": [{"labels": {}, "value": devices}]},
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_follows_the_contract() {
        let m = Metrics::default();
        m.routed(Kind::Device, Duration::from_micros(300));
        m.routed(Kind::Device, Duration::from_micros(800));
        m.routed(Kind::Broadcast, Duration::from_secs(3));
        m.dead_letter("expired");
        m.dead_letter("expired");
        m.dead_letter("max_hops");
        let s = m.snapshot("router", "abc", 7, 2);
        assert_eq!(s["service"], "router");
        let metrics = s["metrics"].as_array().unwrap();
        let find = |n: &str| metrics.iter().find(|x| x["name"] == n).unwrap().clone();
        let routed = find("alicia_router_routed_total");
        assert_eq!(routed["samples"][3], json!({"labels": {"destination": "device"}, "value": 2}));
        assert_eq!(routed["samples"][1], json!({"labels": {"destination": "broadcast"}, "value": 1}));
        let dead = find("alicia_router_dead_letters_total");
        assert_eq!(
            dead["samples"],
            json!([{"labels": {"reason": "expired"}, "value": 2}, {"labels": {"reason": "max_hops"}, "value": 1}])
        );
        let h = &find("alicia_router_latency_seconds")["samples"][0];
        let buckets = h["buckets"].as_array().unwrap();
        assert_eq!(buckets[3], json!([0.0005, 1]));
        assert_eq!(buckets[4], json!([0.001, 2]));
        assert_eq!(buckets.last().unwrap(), &json!(["+Inf", 3]));
        assert_eq!(h["count"], 3);
        assert!((h["sum"].as_f64().unwrap() - 3.0011).abs() < 1e-9);
        assert_eq!(find("alicia_router_queue_depth")["samples"][0]["value"], 7);
    }
}
