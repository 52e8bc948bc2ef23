//! The result of a run, as text or JSON.

use std::fmt;
use std::time::Duration;

use crate::args::Scenario;

/// Latency percentiles in microseconds, from the send timestamp in each payload to the read
/// that delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Deliveries measured.
    pub samples: u64,
}

/// Outcome of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Scenario that ran.
    pub scenario: Scenario,
    /// MQTT protocol level (4 or 5).
    pub protocol: u8,
    /// QoS used.
    pub qos: u8,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Payload size in bytes.
    pub payload: usize,
    /// Messages published.
    pub sent: u64,
    /// PUBACKs received by publishers (QoS 1).
    pub acked: u64,
    /// Deliveries expected: for each subscriber, the messages its publishers sent.
    pub expected: u64,
    /// Deliveries received by all subscribers.
    pub received: u64,
    /// `expected - received` (never negative).
    pub lost: u64,
    /// Deliveries that arrived after a later message of the same publisher (or twice).
    pub out_of_order: u64,
    /// PUBACKs with an error reason code.
    pub rejected: u64,
    /// From the first send to the last delivery.
    pub elapsed: Duration,
    /// From the first send to the last send.
    pub send_elapsed: Duration,
    /// Deliveries received per second over `elapsed`.
    pub throughput: f64,
    /// Messages sent per second over `send_elapsed`.
    pub send_rate: f64,
    /// Latency, for rate-limited runs (latency scenario or `--rate`).
    pub latency: Option<Latency>,
    /// False when publishers stopped before sending all their messages: `--duration` was reached
    /// or deliveries stalled for 2 s.
    pub complete: bool,
}

impl Report {
    /// The report as one JSON object (durations in seconds, latencies in microseconds).
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"scenario\":\"{}\",\"protocol\":{},\"qos\":{},\"publishers\":{},\"subscribers\":{},\
             \"payload\":{},\"sent\":{},\"acked\":{},\"expected\":{},\"received\":{},\"lost\":{},\
             \"out_of_order\":{},\"rejected\":{},\"elapsed_s\":{:.6},\"send_elapsed_s\":{:.6},\
             \"throughput\":{:.1},\"send_rate\":{:.1},\"complete\":{}",
            self.scenario.name(),
            self.protocol,
            self.qos,
            self.publishers,
            self.subscribers,
            self.payload,
            self.sent,
            self.acked,
            self.expected,
            self.received,
            self.lost,
            self.out_of_order,
            self.rejected,
            self.elapsed.as_secs_f64(),
            self.send_elapsed.as_secs_f64(),
            self.throughput,
            self.send_rate,
            self.complete,
        );
        if let Some(l) = &self.latency {
            s += &format!(
                ",\"latency\":{{\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"samples\":{}}}",
                l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples
            );
        }
        s + "}"
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = if self.protocol == 5 { "5.0" } else { "3.1.1" };
        writeln!(
            f,
            "scenario   {} ({} → {}, QoS {}, MQTT {version}, {}-byte payload)",
            self.scenario.name(),
            self.publishers,
            self.subscribers,
            self.qos,
            self.payload
        )?;
        write!(
            f,
            "sent       {} msgs in {:.3} s ({:.0} msgs/s)",
            self.sent,
            self.send_elapsed.as_secs_f64(),
            self.send_rate
        )?;
        if self.qos > 0 {
            write!(f, ", {} acknowledged", self.acked)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "received   {} of {} deliveries in {:.3} s: {:.0} msgs/s",
            self.received,
            self.expected,
            self.elapsed.as_secs_f64(),
            self.throughput
        )?;
        write!(f, "lost       {}  (out of order {}, rejected {})", self.lost, self.out_of_order, self.rejected)?;
        if let Some(l) = &self.latency {
            write!(
                f,
                "\nlatency    p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs  ({} samples)",
                l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples
            )?;
        }
        if !self.complete {
            write!(f, "\nnote       publishers stopped early: --duration reached or deliveries stalled")?;
        }
        Ok(())
    }
}
