//! Publisher task: sends `messages` PUBLISHes in batches, optionally at a fixed rate, keeping at
//! most a window of unacknowledged QoS 1 messages and pausing while subscribers lag more than
//! `--backlog` deliveries behind.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_codec::{encode_publish, Properties, PublishOut, QoS};
use anyhow::bail;
use tokio::time::{sleep_until, timeout_at};

use crate::args::{Plan, STAMP_LEN};
use crate::conn::{other_packet, Conn, Event};
use crate::shared::Shared;

/// Bytes of PUBLISH packets encoded before one write.
const BATCH_BYTES: usize = 64 * 1024;
/// Longest wait for subscribers to catch up before looking again (a safety net: they wake
/// waiting publishers as soon as they make progress).
const BACKLOG_RECHECK: Duration = Duration::from_millis(10);
/// A publisher held back this long by a backlog that does not shrink gives up: the broker has
/// stopped delivering (some brokers strand queued QoS 1 messages until new ones arrive).
const STALL: Duration = Duration::from_secs(2);

/// What one publisher did.
#[derive(Debug, Default)]
pub(crate) struct PubResult {
    pub sent: u64,
    pub acked: u64,
    /// PUBACKs with a failure reason code (MQTT 5).
    pub rejected: u64,
    pub first_send: Option<Instant>,
    pub last_send: Option<Instant>,
}

/// Publishes on `topic` until `plan.messages` are sent (and acknowledged, for QoS 1) or until
/// `send_deadline`; waits for outstanding PUBACKs at most until `deadline`. The connection is
/// handed back so that it is closed only once subscribers are done.
pub(crate) async fn publish(
    mut conn: Conn,
    idx: usize,
    topic: String,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    send_deadline: Instant,
    deadline: Instant,
) -> anyhow::Result<(PubResult, Conn)> {
    let qos1 = plan.qos == QoS::AtLeastOnce;
    let window = if qos1 { plan.inflight.min(conn.receive_maximum).max(1) as u64 } else { u64::MAX };
    let max_batch = (BATCH_BYTES / (plan.payload + topic.len() + 16)).clamp(1, 4096) as u64;
    let template = vec![b'x'; plan.payload];
    let properties = Properties::default();
    let mut r = PubResult::default();
    let mut next_id: u16 = 0;
    let start = Instant::now();
    let counter = &shared.publishers[idx];
    let mut blocked_since: Option<Instant> = None;

    while Instant::now() < send_deadline {
        // How many may go now: bounded by the count, the QoS 1 window, the rate and the backlog.
        let remaining = plan.messages - r.sent;
        let mut n = remaining.min(window_room(window, r.sent - r.acked, remaining)).min(max_batch);
        if let Some(rate) = plan.rate_per_publisher {
            let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
            n = n.min(due.saturating_sub(r.sent));
        }
        n = n.min(shared.backlog_room());
        if n > 0 {
            let now = Instant::now();
            r.first_send.get_or_insert(now);
            let stamp = shared.nanos(now);
            for _ in 0..n {
                let packet_id = if qos1 {
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    next_id
                } else {
                    0
                };
                let p = PublishOut {
                    dup: false,
                    qos: plan.qos,
                    retain: false,
                    topic: &topic,
                    packet_id,
                    properties: &properties,
                    payload: &template,
                };
                encode_publish(&mut conn.wbuf, plan.protocol, &p)?;
                if plan.payload >= STAMP_LEN {
                    let end = conn.wbuf.len();
                    let head = &mut conn.wbuf[end - plan.payload..end - plan.payload + STAMP_LEN];
                    head[..8].copy_from_slice(&stamp.to_be_bytes());
                    head[8..12].copy_from_slice(&(idx as u32).to_be_bytes());
                    head[12..].copy_from_slice(&(r.sent as u32).to_be_bytes());
                }
                r.sent += 1;
            }
            counter.sent.fetch_add(n, Relaxed);
            // A broker that stops reading must not hold the run past its deadline.
            match timeout_at(deadline.into(), conn.flush()).await {
                Ok(res) => res?,
                Err(_) => break,
            }
            r.last_send = Some(Instant::now());
        }
        if r.sent == plan.messages && (!qos1 || r.acked == r.sent) {
            break;
        }

        // Nothing more may go right now? Then wait for whatever unblocks us first: PUBACKs,
        // subscribers catching up, the next rate tick, or the deadline.
        let next_due = plan.rate_per_publisher.map(|rate| start + Duration::from_secs_f64(r.sent as f64 / rate));
        let backlog_full = shared.backlog_room() == 0;
        let can_send = r.sent < plan.messages
            && window_room(window, r.sent - r.acked, plan.messages - r.sent) > 0
            && !backlog_full
            && next_due.is_none_or(|t| t <= Instant::now());
        let awaiting_acks = r.sent > r.acked;
        if can_send {
            blocked_since = None;
            if awaiting_acks && conn.try_read()? {
                take_acks(&mut conn, &mut r)?;
            }
            continue;
        }
        let mut until = next_due.unwrap_or(send_deadline).min(send_deadline);
        let caught_up = shared.caught_up.notified();
        tokio::pin!(caught_up);
        if backlog_full {
            let now = Instant::now();
            let since = if n > 0 { *blocked_since.insert(now) } else { *blocked_since.get_or_insert(now) };
            if now - since > STALL {
                break;
            }
            until = until.min(now + BACKLOG_RECHECK);
            caught_up.as_mut().enable();
            if !shared.wait_for_room() {
                continue;
            }
        } else {
            blocked_since = None;
        }
        tokio::select! {
            res = conn.read(), if awaiting_acks => {
                res?;
                take_acks(&mut conn, &mut r)?;
            }
            _ = &mut caught_up, if backlog_full => {}
            _ = sleep_until(until.into()) => {}
        }
    }
    counter.done.store(true, Relaxed);
    while qos1 && r.acked < r.sent && Instant::now() < deadline {
        if let Ok(res) = timeout_at(deadline.into(), conn.read()).await {
            res?;
            take_acks(&mut conn, &mut r)?;
        }
    }
    Ok((r, conn))
}

/// Messages the QoS 1 window lets out now: none until a quarter of it is free (or enough for
/// the rest), so that each write carries a batch rather than one message per PUBACK.
fn window_room(window: u64, in_flight: u64, remaining: u64) -> u64 {
    let free = window - in_flight;
    if free >= (window / 4).clamp(1, remaining.max(1)) {
        free
    } else {
        0
    }
}

/// Counts the PUBACKs in the read buffer.
fn take_acks(conn: &mut Conn, r: &mut PubResult) -> anyhow::Result<()> {
    conn.drain(|event, _| {
        match event {
            Event::PubAck { reason } => {
                if r.acked == r.sent {
                    bail!("PUBACK for a message that was not sent");
                }
                r.acked += 1;
                if reason >= 0x80 {
                    r.rejected += 1;
                }
            }
            Event::Other(p) => other_packet(*p, "publisher")?,
            Event::Publish { .. } => bail!("unexpected PUBLISH sent to a publisher"),
        }
        Ok(())
    })
}
