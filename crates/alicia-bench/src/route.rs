//! The `route` scenario: what Alicia's router adds to a message's trip.
//!
//! The same traffic (envelopes for `device_id:<bench device>`, at `--rate`, QoS 1, MQTT 5) is
//! sent twice through the broker under test: first straight to the device's command topic,
//! then to the router's inbox, where a router running in this process (`alicia-router`,
//! against the same broker) resolves the device from an inventory this tool publishes and
//! forwards it. A subscriber on the command topic measures each envelope's latency from the
//! send time written in its `payload.data`; the difference between the two runs' percentiles
//! is what routing adds (parse, validate, resolve, re-serialise, one more broker hop).
//!
//! Everything lives under a fresh prefix `bench/<run>/alicia`, so a router or registry of a
//! running `alicia up` never sees the traffic, and the retained inventory is cleared at the end.
//! Each phase is bounded by `--duration`.

use std::time::{Duration, Instant};

use alicia_codec::{encode_publish, Properties, Protocol, PublishOut, QoS};
use alicia_envelope::{Destination, Envelope, Uuid};
use alicia_router::{RouterConfig, RouterHandle};
use alicia_sdk::ServiceConfig;
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use tokio::time::timeout_at;

use crate::args::{resolve_loopback, BenchArgs};
use crate::conn::{other_packet, put_puback, Conn, Event};
use crate::report::Latency;

/// The placeholder replaced by `{"seq":N,"t":NANOS}` in the envelope template.
const STAMP: &str = "\"__bench_stamp__\"";
/// The placeholder replaced by a fresh message id.
const ID: &str = "00000000-0000-4000-8000-000000000000";

/// One phase's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Envelopes published.
    pub sent: u64,
    /// Envelopes received on the device's command topic.
    pub received: u64,
    /// Publish rate actually achieved (messages per second).
    pub send_rate: f64,
    /// Latency from send to receipt.
    pub latency: Option<Latency>,
}

/// The outcome of a route run.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteReport {
    /// Target rate (messages per second).
    pub rate: u64,
    /// Messages per phase.
    pub messages: u64,
    /// Envelope size in bytes (about).
    pub envelope_bytes: usize,
    /// Straight to the device's topic.
    pub direct: Phase,
    /// Through the router.
    pub routed: Phase,
    /// Dead letters the router sent during the run (should be 0).
    pub dead_letters: u64,
}

impl RouteReport {
    /// Routed p99 minus direct p99, in microseconds.
    pub fn added_p99_us(&self) -> Option<f64> {
        Some(self.routed.latency.as_ref()?.p99_us - self.direct.latency.as_ref()?.p99_us)
    }

    /// Routed p50 minus direct p50, in microseconds.
    pub fn added_p50_us(&self) -> Option<f64> {
        Some(self.routed.latency.as_ref()?.p50_us - self.direct.latency.as_ref()?.p50_us)
    }

    /// As one JSON object.
    pub fn to_json(&self) -> String {
        let phase = |p: &Phase| {
            let l = p.latency.as_ref();
            let f = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
            format!(
                "{{\"sent\":{},\"received\":{},\"send_rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
                p.sent,
                p.received,
                p.send_rate,
                f(l.map(|l| l.p50_us)),
                f(l.map(|l| l.p99_us)),
                f(l.map(|l| l.p999_us)),
                f(l.map(|l| l.max_us)),
            )
        };
        format!(
            "{{\"scenario\":\"route\",\"rate\":{},\"messages\":{},\"envelope_bytes\":{},\"direct\":{},\"routed\":{},\"added_p50_us\":{},\"added_p99_us\":{},\"dead_letters\":{}}}",
            self.rate,
            self.messages,
            self.envelope_bytes,
            phase(&self.direct),
            phase(&self.routed),
            self.added_p50_us().map_or("null".to_string(), |v| format!("{v:.1}")),
            self.added_p99_us().map_or("null".to_string(), |v| format!("{v:.1}")),
            self.dead_letters
        )
    }
}

impl std::fmt::Display for RouteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "route: {} envelopes per phase at {}/s, QoS 1, MQTT 5, ~{} bytes each",
            self.messages, self.rate, self.envelope_bytes
        )?;
        for (name, p) in [("direct", &self.direct), ("routed", &self.routed)] {
            write!(f, "  {name:<7} sent {} received {} at {:.0}/s", p.sent, p.received, p.send_rate)?;
            match &p.latency {
                Some(l) => writeln!(
                    f,
                    "  latency p50 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs",
                    l.p50_us, l.p99_us, l.p999_us, l.max_us
                )?,
                None => writeln!(f, "  (no latency samples)")?,
            }
        }
        match (self.added_p50_us(), self.added_p99_us()) {
            (Some(m), Some(d)) => writeln!(f, "  routing adds {m:.0} µs at p50, {d:.0} µs at p99")?,
            _ => writeln!(f, "  routing's added latency: unknown (no samples)")?,
        }
        write!(f, "  router dead letters: {}", self.dead_letters)
    }
}

/// Runs the route scenario against `--host:--port` and prints the report.
pub async fn cli(args: &BenchArgs) -> anyhow::Result<()> {
    let report = run(args).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(())
}

/// Runs the route scenario (see the module documentation).
pub async fn run(args: &BenchArgs) -> anyhow::Result<RouteReport> {
    let addr = resolve_loopback(&args.host, args.port).await?;
    let rate = args.rate.unwrap_or(10_000);
    if rate == 0 || args.messages == 0 {
        bail!("--rate and --messages must be at least 1");
    }
    if !(args.duration > 0.0 && args.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    let phase_limit = Duration::from_secs_f64(args.duration);
    let run = format!("{:08x}", fastrand_u32());
    let prefix = format!("bench/{run}/alicia");
    let device = format!("bench_device_{run}");
    let command = format!("bench/{run}/device/command");
    let inbox = format!("{prefix}/services/router/inbox");
    let inventory_topic = format!("{prefix}/system/registry/devices");

    // The fake registry's inventory (retained) and the router.
    let mut admin = Conn::connect(addr, Protocol::V5, &format!("ab{run}admin")).await?;
    let inventory = format!(
        r#"{{"updated":"{}","devices":[{{"device_id":"{device}","device_type":"bench","name":"bench","location":"lab","capabilities":["bench"],"endpoints":{{"command":"{command}","status":"bench/{run}/device/status"}},"status":"online"}}]}}"#,
        alicia_envelope::Timestamp::now()
    );
    publish_now(&mut admin, &inventory_topic, inventory.as_bytes(), true).await?;
    let mut service = ServiceConfig::broker(addr.ip().to_string(), addr.port());
    service.topic_prefix = prefix.clone();
    service.heartbeat_interval = Duration::from_secs(30);
    let router = alicia_router::start(RouterConfig::new(service)).await.context("starting the router")?;
    let outcome = async {
        router.wait_online(Duration::from_secs(10)).await.context("the router did not come online")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while router.inventory().device(&device).is_none() {
            if Instant::now() > deadline {
                bail!("the router did not read the bench inventory");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let template = template(&device)?;
        let envelope_bytes = template.len() + 20;
        let direct =
            phase(addr, &run, "d", &command, &command, &template, rate, args.messages, phase_limit, args.quiet).await?;
        let routed =
            phase(addr, &run, "r", &inbox, &command, &template, rate, args.messages, phase_limit, args.quiet).await?;
        let dead_letters = dead_letter_total(&router);
        anyhow::Ok(RouteReport { rate, messages: args.messages, envelope_bytes, direct, routed, dead_letters })
    }
    .await;
    // Clean up whatever happened: the router leaves, the retained inventory is cleared.
    router_shutdown(router).await;
    let _ = publish_now(&mut admin, &inventory_topic, b"", true).await;
    admin.disconnect().await;
    outcome
}

async fn router_shutdown(router: RouterHandle) {
    let _ = tokio::time::timeout(Duration::from_secs(10), router.shutdown()).await;
}

fn dead_letter_total(router: &RouterHandle) -> u64 {
    let m = router.metrics();
    m["metrics"]
        .as_array()
        .and_then(|all| all.iter().find(|x| x["name"] == "alicia_router_dead_letters_total"))
        .and_then(|x| x["samples"].as_array())
        .map(|samples| samples.iter().filter_map(|s| s["value"].as_u64()).sum())
        .unwrap_or(0)
}

fn fastrand_u32() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos as u64 ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
}

/// A valid envelope for the device with placeholders for the message id and the stamp.
fn template(device: &str) -> anyhow::Result<String> {
    let mut e =
        Envelope::command("bench", Destination::device(device), serde_json::json!("__bench_stamp__")).with_ttl(3600);
    e.message_id = alicia_envelope::MessageId::parse(ID).map_err(|p| anyhow::anyhow!("template id: {p}"))?;
    let text = e.to_json();
    if !text.contains(STAMP) || !text.contains(ID) {
        bail!("envelope template lacks its placeholders: {text}");
    }
    Ok(text)
}

/// Publishes one QoS 1 message and waits for its PUBACK.
pub(crate) async fn publish_now(conn: &mut Conn, topic: &str, payload: &[u8], retain: bool) -> anyhow::Result<()> {
    let props = Properties::default();
    let p = PublishOut { dup: false, qos: QoS::AtLeastOnce, retain, topic, packet_id: 1, properties: &props, payload };
    encode_publish(&mut conn.wbuf, Protocol::V5, &p)?;
    conn.flush().await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut acked = false;
        conn.drain(|e, _| {
            match e {
                Event::PubAck { .. } => acked = true,
                Event::Other(p) => other_packet(*p, "publisher")?,
                Event::Publish { .. } => {}
            }
            Ok(())
        })?;
        if acked {
            return Ok(());
        }
        match timeout_at(deadline.into(), conn.read()).await {
            Ok(r) => r?,
            Err(_) => bail!("no PUBACK for {topic}"),
        }
    }
}

/// One phase: publish `messages` envelopes at `rate` to `to`, receive them on `at`.
#[allow(clippy::too_many_arguments)]
async fn phase(
    addr: std::net::SocketAddr,
    run: &str,
    tag: &str,
    to: &str,
    at: &str,
    template: &str,
    rate: u64,
    messages: u64,
    limit: Duration,
    quiet: bool,
) -> anyhow::Result<Phase> {
    if !quiet {
        let name = if tag == "d" { "direct" } else { "routed" };
        eprintln!("route: {name} phase, {messages} envelopes at {rate}/s");
    }
    let mut sub = Conn::connect(addr, Protocol::V5, &format!("ab{run}{tag}s")).await?;
    sub.subscribe(at, QoS::AtLeastOnce).await?;
    let mut publ = Conn::connect(addr, Protocol::V5, &format!("ab{run}{tag}p")).await?;
    let origin = Instant::now();
    let deadline = origin + limit;
    let window = u64::from(publ.receive_maximum.clamp(1, 1000));
    let (head, rest) = template.split_once(ID).context("template id")?;
    let (mid, tail) = rest.split_once(STAMP).context("template stamp")?;
    let (head, mid, tail) = (head.to_string(), mid.to_string(), tail.to_string());
    let to = to.to_string();

    let publisher = async move {
        let props = Properties::default();
        let (mut sent, mut acked, mut next_id) = (0u64, 0u64, 0u16);
        let mut first_send = None;
        let mut last_send = origin;
        let mut payload = String::with_capacity(head.len() + mid.len() + tail.len() + 80);
        while sent < messages && Instant::now() < deadline {
            let due = ((origin.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(messages);
            let room = window.saturating_sub(sent - acked);
            let n = due.saturating_sub(sent).min(room);
            if n > 0 {
                for _ in 0..n {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    let t = origin.elapsed().as_nanos() as u64;
                    payload.clear();
                    payload.push_str(&head);
                    payload.push_str(&Uuid::new_v4().to_string());
                    payload.push_str(&mid);
                    payload.push_str(&format!("{{\"seq\":{sent},\"t\":{t}}}"));
                    payload.push_str(&tail);
                    let p = PublishOut {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        topic: &to,
                        packet_id: next_id,
                        properties: &props,
                        payload: payload.as_bytes(),
                    };
                    encode_publish(&mut publ.wbuf, Protocol::V5, &p)?;
                    sent += 1;
                }
                first_send.get_or_insert_with(Instant::now);
                match timeout_at(deadline.into(), publ.flush()).await {
                    Ok(r) => r?,
                    Err(_) => break,
                }
                last_send = Instant::now();
            }
            // PUBACKs that are already there; then sleep until the next message is due.
            while publ.try_read()? {}
            publ.drain(|e, _| {
                match e {
                    Event::PubAck { .. } => acked += 1,
                    Event::Other(p) => other_packet(*p, "publisher")?,
                    Event::Publish { .. } => bail!("unexpected PUBLISH sent to a publisher"),
                }
                Ok(())
            })?;
            let next_due = origin + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if sent - acked >= window {
                let _ = timeout_at((now + Duration::from_millis(1)).into(), publ.read()).await;
            } else if next_due > now {
                tokio::time::sleep_until(next_due.into()).await;
            }
        }
        let span = first_send.map_or(Duration::ZERO, |f| last_send.saturating_duration_since(f));
        let send_rate = if span.is_zero() { 0.0 } else { sent as f64 / span.as_secs_f64() };
        anyhow::Ok((sent, send_rate, publ))
    };

    let receiver = async move {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        let mut received = 0u64;
        while received < messages && Instant::now() < deadline + Duration::from_secs(1) {
            match timeout_at((Instant::now() + Duration::from_millis(50)).into(), sub.read()).await {
                Err(_) => continue,
                Ok(r) => r?,
            }
            let now_ns = origin.elapsed().as_nanos() as u64;
            sub.drain(|e, wbuf| {
                match e {
                    Event::Publish { qos, packet_id, payload } => {
                        received += 1;
                        if qos == QoS::AtLeastOnce {
                            put_puback(wbuf, packet_id);
                        }
                        if let Some(t) = stamp(payload) {
                            h.saturating_record(now_ns.saturating_sub(t).max(1));
                        }
                    }
                    Event::Other(p) => other_packet(*p, "subscriber")?,
                    Event::PubAck { .. } => bail!("unexpected PUBACK sent to a subscriber"),
                }
                Ok(())
            })?;
            sub.flush().await?;
        }
        anyhow::Ok((received, h, sub))
    };

    // Each side in its own task, as the other scenarios do: polled together in one task, a
    // burst of sends delays the receiver's reads and the latency measured would be the bench's.
    let (publisher, receiver) = (tokio::spawn(publisher), tokio::spawn(receiver));
    let (sent, send_rate, publ) = publisher.await.context("publisher task")??;
    let (received, h, sub) = receiver.await.context("receiver task")??;
    publ.disconnect().await;
    sub.disconnect().await;
    let us = |ns: u64| ns as f64 / 1000.0;
    let latency = (!h.is_empty()).then(|| Latency {
        p50_us: us(h.value_at_quantile(0.5)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
        samples: h.len(),
    });
    Ok(Phase { sent, received, send_rate, latency })
}

/// The send time in an envelope's `payload.data`: the number after `"t":`.
fn stamp(payload: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"t\":";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&payload[at..at + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_valid_envelope_once_filled() {
        let t = template("dev_1").unwrap();
        let filled = t.replace(ID, &Uuid::new_v4().to_string()).replace(STAMP, "{\"seq\":3,\"t\":123456}");
        let e = Envelope::parse(filled.as_bytes()).unwrap();
        assert_eq!(e.destination, Destination::device("dev_1"));
        assert_eq!(stamp(filled.as_bytes()), Some(123456));
        assert_eq!(stamp(b"{\"x\":1}"), None);
    }
}
