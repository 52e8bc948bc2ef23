//! `$SYS` topics, in Mosquitto's layout so existing dashboards keep working. (Per-client
//! presence events, which Mosquitto lacks, are published by `shared`.)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::shared::Shared;

/// Exponentially damped rate, as Mosquitto computes its `load/.../1min` values.
struct Load {
    window: f64,
    value: f64,
}

impl Load {
    fn update(&mut self, per_second: f64, dt: f64) {
        let k = (-dt / self.window).exp();
        self.value = per_second + k * (self.value - per_second);
    }
}

/// Publishes the `$SYS/broker/...` tree every `interval` until the broker is dropped.
pub(crate) async fn run(shared: std::sync::Weak<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    let mut prev = [0u64; 5];
    let windows = [60.0, 300.0, 900.0];
    let mut loads: Vec<Vec<Load>> =
        (0..5).map(|_| windows.iter().map(|&window| Load { window, value: 0.0 }).collect()).collect();
    let names = ["messages/received", "messages/sent", "bytes/received", "bytes/sent", "publish/dropped"];
    let mut first = true;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let s = &shared.stats;
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64().max(0.001);
        last = now;
        let counters = [
            s.messages_received.load(Ordering::Relaxed),
            s.messages_sent.load(Ordering::Relaxed),
            s.bytes_received.load(Ordering::Relaxed),
            s.bytes_sent.load(Ordering::Relaxed),
            s.dropped.load(Ordering::Relaxed),
        ];
        let p = |topic: &str, value: String| shared.publish_internal(format!("$SYS/broker/{topic}"), value, true);
        if first {
            p("version", format!("alicia {}", env!("CARGO_PKG_VERSION")));
            first = false;
        }
        p("uptime", format!("{} seconds", shared.uptime().as_secs()));
        let connected = s.clients_connected.load(Ordering::Relaxed);
        let total = shared.registry.lock().len() as u64;
        p("clients/connected", connected.to_string());
        p("clients/active", connected.to_string());
        p("clients/total", total.to_string());
        p("clients/disconnected", total.saturating_sub(connected).to_string());
        p("clients/inactive", total.saturating_sub(connected).to_string());
        p("clients/maximum", s.clients_maximum.load(Ordering::Relaxed).to_string());
        p("messages/received", counters[0].to_string());
        p("messages/sent", counters[1].to_string());
        p("bytes/received", counters[2].to_string());
        p("bytes/sent", counters[3].to_string());
        p("publish/messages/dropped", counters[4].to_string());
        p("subscriptions/count", shared.index.len().to_string());
        p("retained messages/count", shared.retained.len().to_string());
        for (i, name) in names.iter().enumerate() {
            let rate = counters[i].saturating_sub(prev[i]) as f64 / dt;
            for (load, label) in loads[i].iter_mut().zip(["1min", "5min", "15min"]) {
                load.update(rate, dt);
                p(&format!("load/{name}/{label}"), format!("{:.2}", load.value));
            }
        }
        prev = counters;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_converges_to_rate() {
        let mut l = Load { window: 60.0, value: 0.0 };
        for _ in 0..1000 {
            l.update(100.0, 10.0);
        }
        assert!((l.value - 100.0).abs() < 0.01);
    }
}
