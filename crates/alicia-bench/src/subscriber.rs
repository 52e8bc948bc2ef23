//! Subscriber task: counts deliveries, acknowledges QoS 1 ones, checks per-publisher order and
//! records latency from the send timestamp at the front of each payload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_codec::QoS;
use anyhow::bail;
use hdrhistogram::Histogram;
use tokio::time::timeout_at;

use crate::args::{Plan, STAMP_LEN};
use crate::conn::{other_packet, put_puback, Conn, Event};
use crate::shared::Shared;

/// How often a waiting subscriber looks whether its publishers are done.
const POLL: Duration = Duration::from_millis(50);
/// Silence after the publishers are done that ends a subscriber still missing messages.
const IDLE: Duration = Duration::from_secs(1);

/// What one subscriber saw.
#[derive(Debug)]
pub(crate) struct SubResult {
    pub received: u64,
    /// Deliveries whose sequence number was not above the last one seen from that publisher
    /// (duplicates or reordering).
    pub out_of_order: u64,
    pub last_receive: Option<Instant>,
    /// Send-to-receive latency in nanoseconds, when recorded.
    pub latency: Option<Histogram<u64>>,
}

/// Receives until every message its publishers sent has arrived, until they are done and the
/// broker has been silent for [`IDLE`], or until `deadline`.
pub(crate) async fn subscribe(
    mut conn: Conn,
    idx: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    record_latency: bool,
    deadline: Instant,
) -> anyhow::Result<(SubResult, Conn)> {
    let sources = plan.sources(idx);
    let mut next_seq = vec![0u32; plan.publishers];
    let mut r = SubResult {
        received: 0,
        out_of_order: 0,
        last_receive: None,
        latency: record_latency.then(|| Histogram::new_with_bounds(1, 60_000_000_000, 3)).transpose()?,
    };
    let mut done_at = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if let Some(expected) = shared.final_sent(sources.clone()) {
            if r.received >= expected {
                break;
            }
            let quiet_since = *done_at.get_or_insert(now);
            let quiet_since = r.last_receive.map_or(quiet_since, |t| t.max(quiet_since));
            if now - quiet_since > IDLE {
                break;
            }
        }
        match timeout_at((now + POLL).min(deadline).into(), conn.read()).await {
            Err(_) => continue,
            Ok(res) => res?,
        }
        let at = Instant::now();
        let now_ns = shared.nanos(at);
        let before = r.received;
        conn.drain(|event, wbuf| {
            match event {
                Event::Publish { qos, packet_id, payload } => {
                    r.received += 1;
                    if qos == QoS::AtLeastOnce {
                        put_puback(wbuf, packet_id);
                    }
                    if payload.len() >= STAMP_LEN {
                        let word = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().unwrap());
                        let (publisher, seq) = (word(8) as usize, word(12));
                        if let Some(next) = next_seq.get_mut(publisher) {
                            if seq < *next {
                                r.out_of_order += 1;
                            } else {
                                *next = seq.saturating_add(1);
                            }
                        }
                        if let Some(h) = r.latency.as_mut() {
                            let sent_ns = u64::from_be_bytes(payload[..8].try_into().unwrap());
                            h.saturating_record(now_ns.saturating_sub(sent_ns).max(1));
                        }
                    }
                }
                Event::Other(p) => other_packet(*p, "subscriber")?,
                Event::PubAck { .. } => bail!("unexpected PUBACK sent to a subscriber"),
            }
            Ok(())
        })?;
        if r.received > before {
            r.last_receive = Some(at);
            shared.add_received(r.received - before);
        }
        match timeout_at(deadline.into(), conn.flush()).await {
            Ok(res) => res?,
            Err(_) => break,
        }
    }
    Ok((r, conn))
}
