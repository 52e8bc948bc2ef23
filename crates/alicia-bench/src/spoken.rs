//! The `assistant` scenario: spoken commands from satellites to devices and back, through the
//! whole voice chain, as issue 14 measures it.
//!
//! In this process, against the broker under test, on a fresh prefix: the registry, the
//! router, `stt_service` (Whisper tiny.en, Silero VAD), `tts_service` (Piper en_US-joe-medium,
//! its cache off so every answer is synthesised), `ai_service` (Home Assistant's sentences,
//! `--intents`) and `voice_pipeline`, with `alicia up`'s defaults; ten simulated lights
//! (`alicia-simulate`), one per area, and a satellite per area (`alicia_voice::satellite`, the
//! client `alicia satellite` uses). Each satellite streams an espeak-ng utterance ("turn on the
//! kitchen light", "turn off …") in real time in 20 ms chunks and sends `audio-stop` after the
//! last chunk, as a satellite ending a clip does.
//!
//! Measured from the moment the last chunk was sent (the end of the spoken command): the first
//! chunk of the answer's audio at the satellite, the device receiving its command (the
//! simulated light, in this process), and the transcript at the satellite. Two phases: one
//! satellite at a time (`--requests` commands), then `--sessions` satellites speaking at once
//! (their starts 500 ms apart, so that arbitration, which pairs speech starting within 300 ms,
//! does not take two of them for one utterance; each says `--requests / --sessions` commands, waiting
//! for its answer to have played before the next).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_simulate::{Kind, SimConfig, SimDevice, SimEvent};
use alicia_voice::satellite::{End, Outcome, Satellite, SatelliteConfig, StreamOptions};
use anyhow::{bail, Context};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::args::{resolve_loopback, BenchArgs};

/// The areas, each with a light and a satellite: names Whisper tiny.en hears right in
/// espeak-ng's voice ("dining room" comes out "guiding room", "attic" "added", "porch"
/// "porcelite": word errors are the voice benchmark's subject, not this one's).
const AREAS: [&str; 10] = [
    "bedroom",
    "bathroom",
    "garage",
    "hallway",
    "living room",
    "basement",
    "nursery",
    "laundry room",
    "patio",
    "guest room",
];

/// Runs the scenario and prints the report.
pub async fn cli(args: &BenchArgs) -> anyhow::Result<()> {
    let report = run(args).await?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// p50, p90, p99 and max of a set of milliseconds.
#[derive(Debug, Clone)]
pub struct Spread {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

fn spread(mut v: Vec<f64>) -> Option<Spread> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Spread { n: v.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99), max: v[v.len() - 1] })
}

fn spread_json(s: &Option<Spread>) -> Value {
    match s {
        Some(s) => json!({"n": s.n, "p50": r1(s.p50), "p90": r1(s.p90), "p99": r1(s.p99), "max": r1(s.max)}),
        None => Value::Null,
    }
}

fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// One phase's measurements.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub satellites: usize,
    pub commands: usize,
    /// Commands that did not reach their light or were not answered.
    pub failed: usize,
    pub failures: Vec<String>,
    pub first_audio: Option<Spread>,
    pub device: Option<Spread>,
    pub transcript: Option<Spread>,
    /// The pipeline's own record: end of speech (stt_service's utterance_ended) → the
    /// assistant's command sent, and → first audio.
    pub pipeline_command: Option<Spread>,
    pub pipeline_first_audio: Option<Spread>,
}

impl Phase {
    fn to_json(&self) -> Value {
        json!({
            "satellites": self.satellites, "commands": self.commands, "failed": self.failed,
            "failures": self.failures,
            "first_audio_ms": spread_json(&self.first_audio), "device_ms": spread_json(&self.device),
            "transcript_ms": spread_json(&self.transcript),
            "pipeline_command_sent_ms": spread_json(&self.pipeline_command),
            "pipeline_first_audio_ms": spread_json(&self.pipeline_first_audio),
        })
    }

    fn text(&self, title: &str) -> String {
        let line = |what: &str, s: &Option<Spread>| match s {
            Some(s) => format!(
                "  {what:<44} p50 {:>7.1}  p90 {:>7.1}  p99 {:>7.1}  max {:>7.1} ms  (n {})\n",
                s.p50, s.p90, s.p99, s.max, s.n
            ),
            None => format!("  {what:<44} -\n"),
        };
        let mut out = format!("{title}: {} commands, {} failed\n", self.commands, self.failed);
        out += &line("end of speech -> first answer audio", &self.first_audio);
        out += &line("end of speech -> the device's command", &self.device);
        out += &line("end of speech -> transcript at the satellite", &self.transcript);
        out += &line("pipeline record: -> command sent", &self.pipeline_command);
        out += &line("pipeline record: -> first audio", &self.pipeline_first_audio);
        for f in self.failures.iter().take(5) {
            out += &format!("  failed: {f}\n");
        }
        out
    }
}

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct SpokenReport {
    pub alone: Phase,
    pub together: Phase,
}

impl SpokenReport {
    pub fn to_json(&self) -> String {
        json!({
            "scenario": "assistant",
            "alone": self.alone.to_json(),
            "together": self.together.to_json(),
            "goals_ms": {"first_audio_p50": 350, "device_command": 250},
        })
        .to_string()
    }

    pub fn text(&self) -> String {
        let mut out = String::from(
            "assistant: spoken commands from satellites (espeak-ng, real time, 20 ms chunks, audio-stop after the last) \
             through stt_service (tiny.en), voice_pipeline, ai_service, the router, simulated lights, tts_service (Piper, no cache)\n",
        );
        out += &self.alone.text("one satellite at a time");
        out += &self.together.text(&format!("{} satellites at once", self.together.satellites));
        let verdict = |p: &Phase| {
            let fa = p.first_audio.as_ref().map(|s| s.p50);
            let dev = p.device.as_ref().map(|s| s.p50);
            format!(
                "first audio p50 {} (goal 350 ms), device command p50 {} (goal 250 ms)",
                fa.map_or("-".into(), |v| format!("{v:.1} ms")),
                dev.map_or("-".into(), |v| format!("{v:.1} ms"))
            )
        };
        out += &format!("goals, one at a time: {}\n", verdict(&self.alone));
        out += &format!("goals, at once: {}\n", verdict(&self.together));
        out
    }
}

fn espeak(text: &str) -> anyhow::Result<Vec<u8>> {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "--stdout", text])
        .output()
        .context("espeak-ng (apt-get install espeak-ng)")?;
    if !out.status.success() {
        bail!("espeak-ng failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn sat_id(area: &str) -> String {
    format!("{}_sat", area.replace(' ', "_"))
}

fn light_id(area: &str) -> String {
    format!("{}_light", area.replace(' ', "_"))
}

/// When each light heard each session's command.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// One satellite's utterance and what came of it.
struct Said {
    first_audio: Option<f64>,
    transcript: Option<f64>,
    device: Option<f64>,
    session: String,
    answer_seconds: f64,
    failure: Option<String>,
}

async fn say(sat: &mut Satellite, area: &str, on: bool, wav: &[u8], arrivals: &Arrivals, n: usize) -> Said {
    let session = format!("{}-{n}", sat.id());
    let mut t = Map::new();
    t.insert("session_id".into(), json!(session));
    t.insert("language".into(), json!("en"));
    let opts = StreamOptions { end: End::Stop, transcribe: t, ..StreamOptions::default() };
    let mut said = Said {
        first_audio: None,
        transcript: None,
        device: None,
        session: session.clone(),
        answer_seconds: 0.0,
        failure: None,
    };
    let c = match sat.converse(wav, &opts, Duration::from_secs(30)).await {
        Ok(c) => c,
        Err(e) => {
            said.failure = Some(format!("{session}: {e}"));
            return said;
        }
    };
    said.first_audio = c.stage("first_audio");
    said.transcript = c.stage("transcript");
    said.answer_seconds = c.answer.len() as f64 / f64::from(c.answer_rate.max(1));
    // The command may still be on its way: it is sent before the answer is spoken, so it is
    // normally there already.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(at) = arrivals.lock().get(&session) {
            said.device = Some(at.saturating_duration_since(c.spoken_end).as_secs_f64() * 1000.0);
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let verb = if on { "on" } else { "off" };
    if c.outcome != Outcome::Answered || said.device.is_none() {
        said.failure = Some(format!(
            "{session} \"turn {verb} the {area} light\": heard {:?}, {:?}, device command {}",
            c.text(),
            c.outcome,
            if said.device.is_some() { "received" } else { "not received" }
        ));
    }
    said
}

/// The pipeline's `finished` records, by session.
type Records = Arc<Mutex<HashMap<String, Value>>>;

fn phase_of(satellites: usize, said: Vec<Said>, records: &Records) -> Phase {
    let recs = records.lock();
    let pick = |key: &str| -> Vec<f64> {
        said.iter().filter_map(|s| recs.get(&s.session)).filter_map(|r| r["timings_ms"][key].as_f64()).collect()
    };
    Phase {
        satellites,
        commands: said.len(),
        failed: said.iter().filter(|s| s.failure.is_some()).count(),
        failures: said.iter().filter_map(|s| s.failure.clone()).collect(),
        first_audio: spread(said.iter().filter_map(|s| s.first_audio).collect()),
        device: spread(said.iter().filter_map(|s| s.device).collect()),
        transcript: spread(said.iter().filter_map(|s| s.transcript).collect()),
        pipeline_command: spread(pick("command_sent")),
        pipeline_first_audio: spread(pick("first_audio")),
    }
}

/// Runs the scenario (see the module documentation).
pub async fn run(args: &BenchArgs) -> anyhow::Result<SpokenReport> {
    let addr = resolve_loopback(&args.host, args.port).await?;
    let intents = args.intents.clone().context("--intents: Home Assistant's en.json is needed")?;
    if !(1..=AREAS.len()).contains(&args.sessions) {
        bail!("--sessions must be from 1 to {}", AREAS.len());
    }
    if !(1..=1000).contains(&args.requests) {
        bail!("--requests must be from 1 to 1000");
    }
    let quiet = args.quiet;
    let note = move |m: String| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    note("assistant: loading the models and the sentences".into());
    let crate::voice::VoiceRig { dir, prefix, base, services, .. } = crate::voice::VoiceRig::start(addr, true).await?;
    let crate::voice::VoiceServices { stt, tts, .. } = &services;
    let bytes = std::fs::read(&intents).with_context(|| format!("cannot read {}", intents.display()))?;
    let engine = Arc::new(
        alicia_intents::Engine::with_alicia_sentences(&bytes, "home-assistant-intents en")
            .context("compiling the sentences")?,
    );
    let defaults = alicia_config::Config::default();
    let mut acfg = alicia_assistant::AssistantConfig::new(base.clone(), engine);
    acfg.listen_transcripts = false;
    let assistant = alicia_assistant::start(acfg).await.context("starting the assistant")?;
    let vp = &defaults.voice_pipeline;
    let mut pcfg = alicia_voice::pipeline::PipelineConfig::new(base.clone());
    pcfg.arbitration_window = Duration::from_millis(vp.arbitration_window_ms);
    pcfg.arbitration_wait = Duration::from_millis(vp.arbitration_wait_ms);
    let pipeline = alicia_voice::pipeline::start(pcfg).await.context("starting voice_pipeline")?;

    let outcome = async {
        let wait = Duration::from_secs(20);
        assistant.wait_online(wait).await.context("the assistant did not come online")?;
        pipeline.wait_online(wait).await.context("the pipeline did not come online")?;
        stt.bus().wait_online(wait).await?;
        tts.bus().wait_online(wait).await?;
        // The devices, and when each heard which session's command.
        let arrivals: Arrivals = Arc::default();
        let mut lights: Vec<SimDevice> = Vec::new();
        for area in AREAS {
            let mut c = SimConfig::new(Kind::Light, light_id(area), addr.ip().to_string(), addr.port()).at(area);
            c.name = Some(format!("{area} light"));
            c.topic_prefix = prefix.clone();
            c.audio_dir = dir.path().join(light_id(area));
            let d = alicia_simulate::start(c).await.map_err(|e| anyhow::anyhow!("a simulated light: {e}"))?;
            let mut rx = d.events();
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                while let Ok(e) = rx.recv().await {
                    if let SimEvent::Command(env) = e {
                        let at = Instant::now();
                        if let Some(s) = env.payload.metadata.extra.get("session_id").and_then(Value::as_str) {
                            arrivals.lock().entry(s.to_string()).or_insert(at);
                        }
                    }
                }
            });
            lights.push(d);
        }
        for d in &lights {
            d.wait_registered(wait).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let mut sats = Vec::new();
        for area in AREAS {
            let cfg = SatelliteConfig::new(base.clone().with_name(sat_id(area)), sat_id(area)).at(area);
            sats.push(Satellite::connect(cfg, wait).await.with_context(|| format!("satellite {}", sat_id(area)))?);
        }
        let everyone = AREAS.len() * 2;
        if !assistant.wait_for_home(wait, |h| h.len() >= everyone).await {
            bail!("the assistant did not learn the {everyone} devices");
        }
        // The pipeline's records.
        let records: Records = Arc::default();
        let (link, mut events) = alicia_sdk::Link::connect(
            &base,
            alicia_sdk::LinkOptions::new(
                format!("bench-{}-events", crate::run_id()),
                [format!("{prefix}/voice/events")],
            ),
        );
        link.wait_online(wait).await?;
        {
            let records = records.clone();
            tokio::spawn(async move {
                while let Some(e) = events.recv().await {
                    let alicia_sdk::LinkEvent::Message(p) = e else { continue };
                    let Ok(env) = alicia_envelope::Envelope::parse(&p.payload) else { continue };
                    let d = env.payload.data;
                    if d["event"] == "finished" {
                        if let Some(s) = d["session_id"].as_str() {
                            records.lock().insert(s.to_string(), d.clone());
                        }
                    }
                }
            });
        }
        note("assistant: synthesising the commands (espeak-ng)".into());
        let mut wavs: HashMap<(usize, bool), Vec<u8>> = HashMap::new();
        for (i, area) in AREAS.iter().enumerate() {
            for on in [true, false] {
                let verb = if on { "on" } else { "off" };
                wavs.insert((i, on), espeak(&format!("turn {verb} the {area} light"))?);
            }
        }
        let wavs = Arc::new(wavs);

        // 1. One satellite at a time. A first, unmeasured utterance warms the models up.
        let _ = say(&mut sats[0], AREAS[0], true, &wavs[&(0, true)], &arrivals, 0).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut alone = Vec::new();
        for n in 0..args.requests {
            let i = n % AREAS.len();
            let on = (n / AREAS.len()).is_multiple_of(2);
            let s = say(&mut sats[i], AREAS[i], on, &wavs[&(i, on)], &arrivals, n + 1).await;
            // Let the answer play: the next utterance is not a barge-in.
            tokio::time::sleep(Duration::from_secs_f64(s.answer_seconds.min(10.0) + 0.2)).await;
            alone.push(s);
            if !quiet && (n + 1) % 10 == 0 {
                eprintln!("assistant: one at a time: {} of {}", n + 1, args.requests);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let alone = phase_of(1, alone, &records);

        // 2. Satellites at once.
        let rounds = (args.requests / args.sessions).max(1);
        note(format!("assistant: {} satellites at once, {rounds} commands each", args.sessions));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, mut sat) in sats.into_iter().enumerate().take(args.sessions) {
            let (wavs, arrivals) = (wavs.clone(), arrivals.clone());
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(500 * i as u64)).await;
                let mut out = Vec::new();
                for r in 0..rounds {
                    let on = r % 2 == 1;
                    let s = say(&mut sat, AREAS[i], on, &wavs[&(i, on)], &arrivals, 1000 + r).await;
                    tokio::time::sleep(Duration::from_secs_f64(s.answer_seconds.min(10.0) + 0.2)).await;
                    out.push(s);
                }
                sat.close().await;
                out
            });
        }
        let together: Vec<Said> = tasks.join_all().await.into_iter().flatten().collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let together = phase_of(args.sessions, together, &records);
        link.close().await;
        for d in lights {
            d.stop().await;
        }
        anyhow::Ok(SpokenReport { alone, together })
    }
    .await;

    let stop = Duration::from_secs(10);
    let _ = tokio::time::timeout(stop, pipeline.shutdown()).await;
    let _ = tokio::time::timeout(stop, assistant.shutdown()).await;
    services.shutdown().await;
    outcome
}
