//! Prometheus text exposition of the broker's counters (`GET /metrics` in the binary).
//! Names follow Prometheus conventions: `_total` for counters, base units, one `# HELP` and
//! `# TYPE` line per family.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::shared::Shared;

impl Shared {
    pub(crate) fn prometheus(&self) -> String {
        let s = &self.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let sessions = self.registry.lock().len();
        let families: [(&str, &str, &str, String); 11] = [
            (
                "alicia_broker_clients_connected",
                "gauge",
                "Clients connected now.",
                load(&s.clients_connected).to_string(),
            ),
            (
                "alicia_broker_clients_maximum",
                "gauge",
                "Most clients connected at once.",
                load(&s.clients_maximum).to_string(),
            ),
            (
                "alicia_broker_sessions",
                "gauge",
                "Sessions, connected or kept for offline clients.",
                sessions.to_string(),
            ),
            (
                "alicia_broker_subscriptions",
                "gauge",
                "Subscriptions, shared-group members included.",
                self.index.len().to_string(),
            ),
            ("alicia_broker_retained_messages", "gauge", "Retained messages.", self.retained.len().to_string()),
            (
                "alicia_broker_messages_received_total",
                "counter",
                "PUBLISH packets received from clients.",
                load(&s.messages_received).to_string(),
            ),
            (
                "alicia_broker_messages_sent_total",
                "counter",
                "PUBLISH packets sent to clients.",
                load(&s.messages_sent).to_string(),
            ),
            (
                "alicia_broker_received_bytes_total",
                "counter",
                "Bytes read from client connections.",
                load(&s.bytes_received).to_string(),
            ),
            (
                "alicia_broker_sent_bytes_total",
                "counter",
                "Bytes written to client connections.",
                load(&s.bytes_sent).to_string(),
            ),
            (
                "alicia_broker_messages_dropped_total",
                "counter",
                "Messages dropped: queue full, expired, or too large for the client.",
                load(&s.dropped).to_string(),
            ),
            (
                "alicia_broker_uptime_seconds",
                "gauge",
                "Seconds since the broker started.",
                format!("{:.3}", self.uptime().as_secs_f64()),
            ),
        ];
        let mut out = String::with_capacity(2048);
        for (name, kind, help, value) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        // Per client, only those that lost something: the family stays small on a healthy bus.
        let mut dropped: Vec<(String, u64)> = self
            .registry
            .lock()
            .iter()
            .map(|(id, e)| (id.to_string(), e.handle.dropped.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if !dropped.is_empty() {
            dropped.sort();
            let name = "alicia_broker_client_messages_dropped_total";
            let _ = writeln!(
                out,
                "# HELP {name} Messages dropped for one client's session (QoS 0 to a full queue, offline queue over max_queued, expired, too large).\n# TYPE {name} counter"
            );
            for (id, n) in dropped {
                let _ = writeln!(out, "{name}{{client_id=\"{}\"}} {n}", label_value(&id));
            }
        }
        out
    }
}

/// A Prometheus label value: backslash, double quote and line feed escaped.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use crate::{Broker, Config};

    #[test]
    fn every_family_has_help_type_and_one_sample() {
        let text = Broker::new(Config::default()).metrics();
        let lines: Vec<&str> = text.lines().collect();
        assert!(!text.contains("client_messages_dropped"), "no per-client family without drops");
        assert_eq!(lines.len() % 3, 0);
        for chunk in lines.chunks(3) {
            let name = chunk[0].split_whitespace().nth(2).unwrap();
            assert_eq!(chunk[1].split_whitespace().nth(2), Some(name));
            let kind = chunk[1].split_whitespace().nth(3).unwrap();
            assert!(kind == "gauge" || (kind == "counter" && name.ends_with("_total")), "{name} {kind}");
            let (sample, value) = chunk[2].split_once(' ').unwrap();
            assert_eq!(sample, name);
            value.parse::<f64>().unwrap();
        }
    }
}
