//! Load generator behind `alicia bench`: measures an MQTT broker on this machine.
//!
//! # Scenarios
//! - **fan-in**: N publishers → 1 subscriber (`bench/<run>/p<i>` → `bench/<run>/+`).
//! - **fan-out**: 1 publisher → N subscribers; every delivery counts as received.
//! - **pairs**: N publisher → subscriber pairs, each on its own topic.
//! - **latency**: publishers at a fixed aggregate `--rate`; reports p50/p99/max latency.
//! - **route**: envelopes for a device at `--rate`, straight to its topic and then through
//!   Alicia's router, run in this process against the broker under test ([`route`]).
//! - **assistant-text**: sentences to Alicia's assistant over the bus in a home of 500
//!   devices, timed to the device's command and to the answer, against the same commands
//!   sent straight to the router ([`assistant`]).
//! - **voice**: Alicia's speech services on the bus (STT latency, TTS time to first audio at a
//!   satellite, word error rate, concurrent sessions with queue waits), against faster-whisper
//!   and piper-tts in the same run ([`voice`]).
//!
//! Each run uses a fresh topic prefix `bench/<run-id>/`, so runs never see each other's
//! messages. Throughput is deliveries received divided by the time from the first send to the
//! last delivery; `lost` is deliveries expected from what was actually sent minus deliveries
//! received.
//!
//! # Closed loop
//! Publishers pause while subscribers are more than `--backlog` deliveries (each) behind, and
//! are woken as soon as they catch up. Without this, a fast publisher only measures how much a
//! broker can buffer (or drop) before it delivers; with it, throughput is the rate the broker
//! sustains end to end, and broker queues stay under the usual limit of 1000 messages. A
//! publisher held back for 2 s without progress gives up, so a broker that stops delivering
//! ends the run with losses instead of hanging it.
//!
//! # Design
//! The broker under test shares a 2-core machine with this tool, so the tool must stay cheap:
//! - one tokio task per connection, no channels and no locks on the hot path; tasks share only
//!   a few atomic counters (module `shared`);
//! - a small pipelined client (module `conn`) built on `alicia-codec`: publishers encode a whole batch
//!   of PUBLISHes into one buffer and write it with one syscall, subscribers read up to 128 KiB
//!   at a time and walk every frame in place; PUBLISH and PUBACK are parsed without allocating,
//!   and the PUBACKs for one read go back in one write;
//! - QoS 1 publishers keep a window of `--inflight` unacknowledged messages (capped by the
//!   broker's Receive Maximum), refilled a quarter at a time so writes stay batched;
//! - the first 16 bytes of each payload carry the send time, the publisher and a sequence
//!   number, which give latency (hdrhistogram) and duplicate/reordering detection for free.
//!
//! Every run is bounded: `--messages` per publisher and `--duration` for the whole run,
//! connecting and closing included, even if the broker stops reading. Only loopback addresses
//! are accepted as targets.

mod args;
pub mod assistant;
mod conn;
mod publisher;
mod report;
pub mod route;
mod shared;
pub mod spoken;
mod subscriber;
pub mod voice;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_codec::QoS;
use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::timeout_at;

pub use args::{BenchArgs, Scenario};
pub use report::{Latency, Report};

use args::Plan;
use conn::Conn;
use shared::Shared;

/// Runs the benchmark described by `args` and prints the report on stdout, as text or, with
/// `--json`, as one JSON line. This is the whole `alicia bench` command.
pub async fn cli(args: &BenchArgs) -> anyhow::Result<()> {
    if args.scenario == Scenario::Route {
        return route::cli(args).await;
    }
    if args.scenario == Scenario::AssistantText {
        return assistant::cli(args).await;
    }
    if args.scenario == Scenario::Voice {
        return voice::cli(args).await;
    }
    if args.scenario == Scenario::Assistant {
        return spoken::cli(args).await;
    }
    let report = run(args).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(())
}

/// Runs the benchmark described by `args` against the broker at `--host:--port` and returns
/// what it measured. Fails if the target is not a loopback address, if a connection or
/// subscription fails, or if the broker cannot be reached within `--duration`.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    if matches!(args.scenario, Scenario::Route | Scenario::AssistantText | Scenario::Voice | Scenario::Assistant) {
        anyhow::bail!("the {} scenario reports through its own module", args.scenario.name());
    }
    let plan = Arc::new(Plan::new(args).await?);
    let shared = Arc::new(Shared::new(plan.publishers, plan.backlog, plan.fanout));
    let deadline = shared.origin + plan.duration;
    // Publishers stop a little before the end so that their last messages can still arrive.
    let send_deadline = deadline - (plan.duration / 5).min(Duration::from_secs(1));
    let run_id = run_id();
    let topic = |i: usize| format!("bench/{run_id}/p{i}");

    let connecting = async {
        let mut subs = JoinSet::new();
        for i in 0..plan.subscribers {
            let plan = plan.clone();
            let filter = if plan.paired { topic(i) } else { format!("bench/{run_id}/+") };
            let client_id = format!("ab{run_id}s{i}");
            subs.spawn(async move {
                let mut c = Conn::connect(plan.addr, plan.protocol, &client_id).await?;
                c.subscribe(&filter, plan.qos).await?;
                anyhow::Ok((i, c))
            });
        }
        let mut pubs = JoinSet::new();
        for i in 0..plan.publishers {
            let plan = plan.clone();
            let client_id = format!("ab{run_id}p{i}");
            pubs.spawn(async move {
                let c = Conn::connect(plan.addr, plan.protocol, &client_id).await?;
                anyhow::Ok((i, c))
            });
        }
        anyhow::Ok((collect(subs).await?, collect(pubs).await?))
    };
    let (subs, pubs) = timeout_at(deadline.into(), connecting)
        .await
        .context("connecting and subscribing took longer than --duration")??;

    let progress = (!args.quiet).then(|| tokio::spawn(shared::progress(shared.clone())));
    let record_latency = plan.rate_per_publisher.is_some();
    let mut sub_tasks = JoinSet::new();
    for (i, c) in subs.into_iter().enumerate() {
        let (plan, shared) = (plan.clone(), shared.clone());
        sub_tasks.spawn(async move {
            let r = subscriber::subscribe(c, i, plan, shared, record_latency, deadline).await?;
            anyhow::Ok((i, r))
        });
    }
    let mut pub_tasks = JoinSet::new();
    for (i, c) in pubs.into_iter().enumerate() {
        let (plan, shared, topic) = (plan.clone(), shared.clone(), topic(i));
        pub_tasks.spawn(async move {
            let r = publisher::publish(c, i, topic, plan, shared, send_deadline, deadline);
            anyhow::Ok((i, r.await?))
        });
    }
    let results = async { anyhow::Ok((collect(pub_tasks).await?, collect(sub_tasks).await?)) };
    let outcome = results.await;
    if let Some(p) = progress {
        p.abort();
    }
    let (pubs, subs) = outcome?;

    let mut conns = Vec::new();
    let mut pub_results = Vec::new();
    for (r, c) in pubs {
        pub_results.push(r);
        conns.push(c);
    }
    let mut sub_results = Vec::new();
    for (r, c) in subs {
        sub_results.push(r);
        conns.push(c);
    }
    // Close only now: a publisher that hung up early could lose messages still in flight.
    let close_by = deadline.max(Instant::now() + Duration::from_millis(50));
    let _ = timeout_at(close_by.into(), async {
        for c in conns {
            c.disconnect().await;
        }
    })
    .await;
    Ok(build_report(args, &plan, &pub_results, sub_results))
}

/// Awaits every task of `set` and returns their values in index order; the first failure
/// aborts the others.
async fn collect<T: 'static>(mut set: JoinSet<anyhow::Result<(usize, T)>>) -> anyhow::Result<Vec<T>> {
    let mut out: Vec<(usize, T)> = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        out.push(joined.context("benchmark task panicked")??);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

fn build_report(
    args: &BenchArgs,
    plan: &Plan,
    pubs: &[publisher::PubResult],
    subs: Vec<subscriber::SubResult>,
) -> Report {
    let sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let expected: u64 = (0..plan.subscribers).map(|s| pubs[plan.sources(s)].iter().map(|p| p.sent).sum::<u64>()).sum();
    let received: u64 = subs.iter().map(|s| s.received).sum();
    let first_send = pubs.iter().filter_map(|p| p.first_send).min();
    let last_send = pubs.iter().filter_map(|p| p.last_send).max();
    let last_receive = subs.iter().filter_map(|s| s.last_receive).max();
    let span = |end: Option<Instant>| match (first_send, end) {
        (Some(a), Some(b)) => b.saturating_duration_since(a),
        _ => Duration::ZERO,
    };
    let per_sec = |n: u64, d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    let (elapsed, send_elapsed) = (span(last_receive), span(last_send));
    let mut latency: Option<Histogram<u64>> = None;
    for h in subs.iter().filter_map(|s| s.latency.as_ref()) {
        match latency.as_mut() {
            Some(all) => all.add(h).expect("histograms share bounds"),
            None => latency = Some(h.clone()),
        }
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Report {
        scenario: plan.scenario,
        protocol: args.protocol,
        qos: (plan.qos == QoS::AtLeastOnce) as u8,
        publishers: plan.publishers,
        subscribers: plan.subscribers,
        payload: plan.payload,
        sent,
        acked: pubs.iter().map(|p| p.acked).sum(),
        expected,
        received,
        lost: expected.saturating_sub(received),
        out_of_order: subs.iter().map(|s| s.out_of_order).sum(),
        rejected: pubs.iter().map(|p| p.rejected).sum(),
        elapsed,
        send_elapsed,
        throughput: per_sec(received, elapsed),
        send_rate: per_sec(sent, send_elapsed),
        latency: latency.filter(|h| !h.is_empty()).map(|h| Latency {
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            samples: h.len(),
        }),
        complete: sent == plan.messages * plan.publishers as u64,
    }
}

/// A short identifier unique to this run, for topics and client identifiers.
fn run_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let mixed = (nanos ^ (std::process::id() as u64).rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:010x}", mixed >> 24)
}
