//! The `assistant-text` scenario: how long a typed sentence takes to become a device's command,
//! and to be answered, through Alicia's assistant.
//!
//! In this process, against the broker under test: the router (`alicia-router`) and the
//! assistant (`alicia-assistant`, Home Assistant's English sentences and Alicia's), both on a
//! fresh prefix `bench/<run>/alicia`; an inventory of 500 devices in 20 areas (published
//! retained, as the registry would, and cleared at the end); one subscriber on every device's
//! command topic, which notes when each command arrives. Each asker (`--publishers`, one by
//! default) sends sentences one after another as `request`s to `ai_service`, each in its own
//! session, and waits for the answer and for the session's first device command.
//!
//! The reference, in the same run: the same askers send ready-made `command` envelopes for the
//! same devices straight to the router (what a client that already knows the device and the
//! command pays), timed to the device the same way. The difference is what understanding
//! costs: the hop to the assistant, recognition, planning and the assistant's own publish.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use alicia_codec::{Protocol, QoS};
use alicia_envelope::{Destination, Envelope};
use alicia_sdk::ServiceConfig;
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::args::{resolve_loopback, BenchArgs};
use crate::conn::{other_packet, put_puback, Conn, Event};
use crate::report::Latency;

/// The benchmark home's 500 devices (`alicia_intents::bench_home`, the matcher bench's home
/// too) as the registry's inventory shows their registrations.
fn inventory(prefix: &str) -> Value {
    let devices: Vec<Value> = alicia_intents::bench_home::devices()
        .into_iter()
        .map(|d| {
            let caps: Vec<Value> = d
                .kind
                .capabilities
                .iter()
                .map(|c| {
                    let parameters = match *c {
                        "audio_playback" => json!({"min_volume": 0, "max_volume": 100, "supported_formats": ["mp3"]}),
                        "volume_control" => json!({"step_size": 2, "mute_support": true}),
                        _ => json!({}),
                    };
                    json!({"name": c, "version": "1.0.0", "parameters": parameters, "endpoints": {}})
                })
                .collect();
            let mut metadata = json!({"location": d.area_id});
            if let Some(maker) = d.manufacturer {
                metadata["manufacturer"] = json!(maker);
            }
            let id = &d.id;
            json!({
                "device_id": id, "device_type": d.kind.device_type, "name": d.name,
                "location": d.area_id, "capabilities": caps, "metadata": metadata, "status": "online",
                "endpoints": {"control": format!("{prefix}/devices/{id}/command"), "status": format!("{prefix}/devices/{id}/status")},
            })
        })
        .collect();
    json!({"updated": alicia_envelope::Timestamp::now().to_string(), "devices": devices})
}

/// (sentence, satellite, the device that must get the first command (or, ending in `_`, the
/// area whose devices all get it: "set the volume to 30" is for every player there), its
/// command)
const SENTENCES: &[(&str, Option<&str>, &str, &str)] = &[
    ("turn on the kitchen ceiling light", None, "kitchen_ceiling_light", "turn_on"),
    ("turn off the living room lamp", None, "living_room_lamp", "turn_off"),
    ("switch on the office floor lamp", None, "office_floor_lamp", "turn_on"),
    ("set the dining room lamp to 40%", None, "dining_room_lamp", "set_brightness"),
    ("turn on the basement fan", None, "basement_fan", "turn_on"),
    ("turn off the porch plug", None, "porch_plug", "turn_off"),
    ("set the volume to 30", Some("office_satellite"), "office_", "set_volume"),
    ("turn the volume down in the kitchen", None, "kitchen_", "volume_step"),
    ("pause the bedroom speaker", None, "bedroom_speaker", "pause"),
    ("next track on the living room tv", None, "living_room_tv", "next"),
    ("turn the garage radio up", None, "garage_radio", "volume_step"),
    ("pause the sonnos", None, "kitchen_speaker", "pause"),
    ("announce dinner is ready in the patio", None, "patio_", "announce"),
    ("uh could you turn on the attic sconce please", None, "attic_sconce", "turn_on"),
    (
        "set the guest room ceiling light brightness to seventy five percent",
        None,
        "guest_room_ceiling_light",
        "set_brightness",
    ),
    ("turn off the library heater", None, "library_heater", "turn_off"),
];

/// The outcome of an assistant-text run.
#[derive(Debug, Clone)]
pub struct AssistantReport {
    pub devices: usize,
    pub askers: usize,
    pub requests: u64,
    /// Requests whose device command arrived (the right device and command).
    pub commanded: u64,
    /// Requests answered.
    pub answered: u64,
    /// Commands to the wrong device or with the wrong command (must be 0).
    pub wrong: u64,
    /// What the wrong ones were (the first few).
    pub wrong_examples: Vec<String>,
    /// Ready-made commands straight to the router: send → device.
    pub reference: Option<Latency>,
    /// Text sent → the device's command received.
    pub to_command: Option<Latency>,
    /// Text sent → the answer received.
    pub to_answer: Option<Latency>,
    /// The assistant's own time per request (its `timings_ms.total`).
    pub service_total: Option<Latency>,
    /// Of which recognition (`timings_ms.recognize`).
    pub recognize: Option<Latency>,
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| Latency {
        p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
        p999_us: h.value_at_quantile(0.999) as f64 / 1000.0,
        max_us: h.max() as f64 / 1000.0,
        samples: h.len(),
    })
}

fn lat_json(l: &Option<Latency>) -> Value {
    match l {
        Some(l) => {
            json!({"p50_us": l.p50_us, "p99_us": l.p99_us, "p999_us": l.p999_us, "max_us": l.max_us, "samples": l.samples})
        }
        None => Value::Null,
    }
}

impl AssistantReport {
    pub fn to_json(&self) -> String {
        json!({
            "scenario": "assistant-text", "devices": self.devices, "askers": self.askers, "requests": self.requests,
            "commanded": self.commanded, "answered": self.answered, "wrong": self.wrong, "wrong_examples": self.wrong_examples,
            "reference_router_only": lat_json(&self.reference), "text_to_command": lat_json(&self.to_command),
            "text_to_answer": lat_json(&self.to_answer), "service_total": lat_json(&self.service_total),
            "recognize": lat_json(&self.recognize),
        })
        .to_string()
    }
}

impl std::fmt::Display for AssistantReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "assistant-text: {} requests from {} asker(s), {} devices; {} commanded, {} answered, {} wrong",
            self.requests, self.askers, self.devices, self.commanded, self.answered, self.wrong
        )?;
        for (name, l) in [
            ("router only (reference)", &self.reference),
            ("text -> device command", &self.to_command),
            ("text -> answer", &self.to_answer),
            ("assistant's own total", &self.service_total),
            ("  of which recognize", &self.recognize),
        ] {
            match l {
                Some(l) => writeln!(
                    f,
                    "  {name:<24} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  ({} samples)",
                    l.p50_us / 1000.0,
                    l.p99_us / 1000.0,
                    l.max_us / 1000.0,
                    l.samples
                )?,
                None => writeln!(f, "  {name:<24} (no samples)")?,
            }
        }
        for w in &self.wrong_examples {
            writeln!(f, "  wrong: {w}")?;
        }
        Ok(())
    }
}

/// Runs the scenario and prints the report.
pub async fn cli(args: &BenchArgs) -> anyhow::Result<()> {
    let report = run(args).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(())
}

/// When each session's first command reached a device, and which.
#[derive(Default)]
struct Arrivals {
    seen: Mutex<HashMap<String, (Instant, String, String)>>,
    notify: Notify,
}

impl Arrivals {
    async fn wait(&self, session: &str, until: Instant) -> Option<(Instant, String, String)> {
        loop {
            let notified = self.notify.notified();
            if let Some(v) = self.seen.lock().remove(session) {
                return Some(v);
            }
            if tokio::time::timeout_at(until.into(), notified).await.is_err() {
                return None;
            }
        }
    }
}

fn ms_ns(v: &Value) -> Option<u64> {
    v.as_f64().map(|ms| (ms * 1e6) as u64)
}

/// Runs the assistant-text scenario (see the module documentation).
pub async fn run(args: &BenchArgs) -> anyhow::Result<AssistantReport> {
    let addr = resolve_loopback(&args.host, args.port).await?;
    let intents = args.intents.clone().context("--intents: Home Assistant's en.json is needed")?;
    let askers = args.publishers.unwrap_or(1).max(1);
    let requests = args.messages.max(1);
    if !(args.duration > 0.0 && args.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    let limit = Duration::from_secs_f64(args.duration);
    let bytes = std::fs::read(&intents).with_context(|| format!("cannot read {}", intents.display()))?;
    let engine = Arc::new(
        alicia_intents::Engine::with_alicia_sentences(&bytes, "home-assistant-intents en")
            .context("compiling the sentences")?,
    );
    let run = format!("{:08x}", fastrand_seed() ^ std::process::id());
    let prefix = format!("bench/{run}/alicia");
    let inventory_topic = format!("{prefix}/system/registry/devices");
    let doc = inventory(&prefix);
    let devices = doc["devices"].as_array().map_or(0, Vec::len);

    let service = |name: &str| {
        let mut s = ServiceConfig::broker(addr.ip().to_string(), addr.port());
        s.topic_prefix = prefix.clone();
        s.heartbeat_interval = Duration::from_secs(30);
        s.with_name(name)
    };
    // The inventory, retained, as the registry publishes it.
    let inventory_bytes = doc.to_string();
    publish_raw(addr, &run, &inventory_topic, inventory_bytes.as_bytes(), true).await?;

    let router = alicia_router::start(alicia_router::RouterConfig::new(service(alicia_sdk::ROUTER_SERVICE)))
        .await
        .context("starting the router")?;
    let mut cfg = alicia_assistant::AssistantConfig::new(service(alicia_assistant::SERVICE_NAME), engine);
    cfg.listen_transcripts = false;
    cfg.media = Vec::new();
    let assistant = alicia_assistant::start(cfg).await.context("starting the assistant")?;

    let outcome = async {
        router.wait_online(Duration::from_secs(10)).await.context("the router did not come online")?;
        assistant.wait_online(Duration::from_secs(10)).await.context("the assistant did not come online")?;
        if !assistant.wait_for_home(Duration::from_secs(10), |h| h.len() == devices).await {
            bail!("the assistant did not read the inventory");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while router.inventory().len() < devices {
            if Instant::now() > deadline {
                bail!("the router did not read the inventory");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // The devices: one subscriber on every command topic.
        let arrivals = Arc::new(Arrivals::default());
        let mut sub = Conn::connect(addr, Protocol::V5, &format!("ab{run}dev")).await?;
        sub.subscribe(&format!("{prefix}/devices/+/command"), QoS::AtLeastOnce).await?;
        let receiver = {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                loop {
                    if sub.read().await.is_err() {
                        return;
                    }
                    let now = Instant::now();
                    let drained = sub.drain(|e, wbuf| {
                        match e {
                            Event::Publish { qos, packet_id, payload } => {
                                if qos == QoS::AtLeastOnce {
                                    put_puback(wbuf, packet_id);
                                }
                                if let Ok(env) = Envelope::parse(payload) {
                                    let session = env.payload.metadata.extra.get("session_id").and_then(Value::as_str);
                                    if let (Some(s), Destination::DeviceId(d)) = (session, &env.destination) {
                                        let command =
                                            env.payload.data["command"].as_str().unwrap_or_default().to_string();
                                        let mut seen = arrivals.seen.lock();
                                        seen.entry(s.to_string()).or_insert((now, d.clone(), command));
                                        drop(seen);
                                        arrivals.notify.notify_waiters();
                                    }
                                }
                            }
                            Event::Other(p) => other_packet(*p, "device")?,
                            Event::PubAck { .. } => {}
                        }
                        Ok(())
                    });
                    if drained.is_err() || sub.flush().await.is_err() {
                        return;
                    }
                }
            })
        };

        let mut clients = Vec::new();
        for i in 0..askers {
            let c = alicia_sdk::connect(service(&format!("bench-asker-{i}")))?;
            c.wait_online(Duration::from_secs(10)).await?;
            clients.push(c);
        }
        let per_asker = requests.div_ceil(askers as u64);

        // The reference: ready-made commands straight to the router.
        if !args.quiet {
            eprintln!("assistant-text: reference, {requests} commands straight to the router from {askers} asker(s)");
        }
        let mut tasks = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let bus = c.bus().clone();
            let arrivals = arrivals.clone();
            let until = Instant::now() + limit;
            tasks.push(tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
                for n in 0..per_asker {
                    if Instant::now() > until {
                        break;
                    }
                    let (_, _, device, command) = SENTENCES[(n as usize + i) % SENTENCES.len()];
                    let device = if device.ends_with('_') { format!("{device}speaker") } else { device.to_string() };
                    let session = format!("ref-{i}-{n}");
                    let mut env = Envelope::command(
                        bus.name(),
                        Destination::device(&device),
                        json!({"command": command, "parameters": {}}),
                    );
                    env.payload.metadata.extra.insert("session_id".into(), json!(session));
                    let sent = Instant::now();
                    bus.send(&env).await?;
                    if let Some((at, _, _)) = arrivals.wait(&session, sent + Duration::from_secs(10)).await {
                        h.saturating_record((at - sent).as_nanos().max(1) as u64);
                    }
                }
                anyhow::Ok(h)
            }));
        }
        let mut reference = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
        for t in tasks {
            reference.add(t.await.context("reference task")??)?;
        }

        if !args.quiet {
            eprintln!("assistant-text: {requests} sentences to ai_service from {askers} asker(s), {devices} devices");
        }
        let mut tasks = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let bus = c.bus().clone();
            let arrivals = arrivals.clone();
            let until = Instant::now() + limit;
            tasks.push(tokio::spawn(async move {
                let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3);
                let (mut to_command, mut to_answer, mut total, mut recognize) = (new()?, new()?, new()?, new()?);
                let (mut sent_n, mut commanded, mut answered, mut wrong) = (0u64, 0u64, 0u64, 0u64);
                let mut examples = Vec::new();
                for n in 0..per_asker {
                    if Instant::now() > until {
                        break;
                    }
                    let (text, satellite, device, command) = SENTENCES[(n as usize + i) % SENTENCES.len()];
                    let session = format!("ask-{i}-{n}");
                    let mut data = json!({"text": text, "session_id": session});
                    if let Some(s) = satellite {
                        data["satellite"] = json!(s);
                    }
                    let sent = Instant::now();
                    sent_n += 1;
                    let answer = bus
                        .request(Destination::service(alicia_assistant::SERVICE_NAME), data, Duration::from_secs(10))
                        .await;
                    let answered_at = Instant::now();
                    if let Ok(a) = &answer {
                        answered += 1;
                        to_answer.saturating_record((answered_at - sent).as_nanos().max(1) as u64);
                        let t = &a.payload.data["timings_ms"];
                        if let Some(v) = ms_ns(&t["total"]) {
                            total.saturating_record(v.max(1));
                        }
                        if let Some(v) = ms_ns(&t["recognize"]) {
                            recognize.saturating_record(v.max(1));
                        }
                    }
                    match arrivals.wait(&session, sent + Duration::from_secs(10)).await {
                        Some((at, d, c))
                            if (d == device || (device.ends_with('_') && d.starts_with(device))) && c == command =>
                        {
                            commanded += 1;
                            to_command.saturating_record((at - sent).as_nanos().max(1) as u64);
                        }
                        Some((_, d, c)) => {
                            wrong += 1;
                            if examples.len() < 5 {
                                examples.push(format!("{text:?}: {d} {c} (expected {device} {command})"));
                            }
                        }
                        None => {}
                    }
                }
                anyhow::Ok((sent_n, commanded, answered, (wrong, examples), to_command, to_answer, total, recognize))
            }));
        }
        let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3);
        let (mut to_command, mut to_answer, mut total, mut recognize) = (new()?, new()?, new()?, new()?);
        let (mut sent, mut commanded, mut answered, mut wrong) = (0, 0, 0, 0);
        let mut wrong_examples = Vec::new();
        for t in tasks {
            let (s, c, a, (w, ex), tc, ta, tt, tr) = t.await.context("asker task")??;
            sent += s;
            commanded += c;
            answered += a;
            wrong += w;
            wrong_examples.extend(ex);
            to_command.add(tc)?;
            to_answer.add(ta)?;
            total.add(tt)?;
            recognize.add(tr)?;
        }
        for c in clients {
            c.shutdown().await;
        }
        receiver.abort();
        anyhow::Ok(AssistantReport {
            devices,
            askers,
            requests: sent,
            commanded,
            answered,
            wrong,
            wrong_examples,
            reference: latency(&reference),
            to_command: latency(&to_command),
            to_answer: latency(&to_answer),
            service_total: latency(&total),
            recognize: latency(&recognize),
        })
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(10), assistant.shutdown()).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), router.shutdown()).await;
    let _ = publish_raw(addr, &run, &inventory_topic, b"", true).await;
    outcome
}

fn fastrand_seed() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
}

/// Publishes one retained-or-not QoS 1 message on a connection of its own.
async fn publish_raw(
    addr: std::net::SocketAddr,
    run: &str,
    topic: &str,
    payload: &[u8],
    retain: bool,
) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr, Protocol::V5, &format!("ab{run}admin")).await?;
    crate::route::publish_now(&mut conn, topic, payload, retain).await?;
    conn.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_hundred_devices_every_sentence_names_one() {
        let doc = inventory("bench/x/alicia");
        let devices = doc["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 500);
        for (_, _, device, _) in SENTENCES {
            let named = |d: &&Value| d["device_id"].as_str().is_some_and(|id| id == *device || id.starts_with(device));
            assert!(devices.iter().any(|d| named(&d)), "{device}");
        }
    }
}
