//! The `voice` scenario: Alicia's speech services measured on the bus, as a satellite and a
//! client meet them, with the Python references in the same run.
//!
//! In this process, against the broker under test, on a fresh prefix `bench/<run>/alicia`:
//! the device registry (SQLite in a temporary directory), the router, `stt_service` and
//! `tts_service` (`alicia-voice`) on the real models of the model store (`alicia models
//! fetch`: Whisper tiny.en, Piper en_US-joe-medium, Silero VAD, ONNX Runtime), with the
//! configuration's defaults (`alicia up`'s) except the TTS cache, which is off so that every
//! request is synthesised. The services register as capability providers, and every request
//! goes to `capability:speech_to_text` / `capability:text_to_speech` through the router.
//!
//! Phases, one after another (progress on standard error):
//! 1. the utterances (`alicia_voice_bench::CORPUS`, the engine bench's) synthesised by
//!    espeak-ng and by the Piper voice (through `tts_service`), as 16 kHz mono WAV;
//! 2. STT latency: the utterance closest to 2 s, `--requests` times, one at a time, the
//!    document's request (base64 WAV), timed at the requester, with the service's own
//!    `timings_ms` (queue wait, inference);
//! 3. TTS latency: `alicia_voice_bench::TTS_TEXT` streamed to a satellite, `--requests` times,
//!    150 ms apart (as the engine bench and its reference): request → first `audio-chunk` on
//!    the satellite's `snd` topic, and → `audio-stop`;
//! 4. word error rate on every utterance, through the bus;
//! 5. `--sessions` satellites at once for `--duration` seconds: each streams an utterance in
//!    real time (20 ms chunks on its `mic` topic, VAD on, as `alicia up` runs it), waits for
//!    its transcript, then asks for a spoken answer on its `snd` topic, and starts again;
//!    reported: sessions completed, busy and failed ones, and per stage the queue wait and
//!    inference time the services report;
//! 6. the references (unless `--no-reference`): faster-whisper and piper-tts on the same WAV
//!    files and the same weights, in process in Python ([`reference`]), after the services
//!    have stopped so that nothing else uses the CPU.

mod reference;
pub mod report;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope};
use alicia_sdk::{Bus, Link, LinkEvent, LinkOptions, QoS, SdkError, ServiceConfig};
use alicia_voice::sat::{self, Event};
use alicia_voice::VoiceTopics;
use anyhow::{bail, Context};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::args::{resolve_loopback, BenchArgs};
pub use report::VoiceReport;
use report::{Ms, Reference, Sessions, SttLatency, TtsLatency, Wer};

const STT: &str = alicia_voice::stt::CAPABILITY;
const TTS: &str = alicia_voice::tts::CAPABILITY;
/// How long any one answer may take before it counts as failed.
const ANSWER: Duration = Duration::from_secs(60);
/// Rate of the audio satellites stream.
const RATE: u32 = 16_000;
/// The answers the sessions ask to hear.
const REPLIES: [&str; 4] =
    ["The kitchen light is on.", "It is twenty degrees in the living room.", "Done.", "The front door is locked."];

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

pub(crate) struct Models {
    pub(crate) whisper: PathBuf,
    pub(crate) voice: PathBuf,
    pub(crate) vad: PathBuf,
}

/// The voice services as `alicia up` runs them (its defaults, but no TTS cache: every request
/// is synthesised), with the registry and the router, in this process against the broker at
/// `addr` under a fresh topic prefix: what both voice scenarios (`voice`, `assistant`) measure.
pub(crate) struct VoiceRig {
    pub models: Models,
    /// The registry's database and whatever a scenario writes.
    pub dir: tempfile::TempDir,
    pub prefix: String,
    /// The services' settings (broker, prefix): a scenario's own clients start from it.
    pub base: ServiceConfig,
    pub services: VoiceServices,
}

/// The running services of a [`VoiceRig`].
pub(crate) struct VoiceServices {
    pub registry: alicia_registry::RegistryHandle,
    pub router: alicia_router::RouterHandle,
    pub stt: alicia_voice::stt::SttHandle,
    pub tts: alicia_voice::tts::TtsHandle,
}

impl VoiceRig {
    /// Loads the models and starts the services; `speak_answers`: whether tts_service speaks
    /// the assistant's answers to satellites (as under `alicia up`).
    pub(crate) async fn start(addr: std::net::SocketAddr, speak_answers: bool) -> anyhow::Result<VoiceRig> {
        let models = tokio::task::spawn_blocking(load_models).await.context("loading the models")??;
        let dir = tempfile::tempdir().context("a temporary directory")?;
        let prefix = format!("bench/{}/alicia", crate::run_id());
        let mut base = ServiceConfig::broker(addr.ip().to_string(), addr.port());
        base.topic_prefix = prefix.clone();
        base.heartbeat_interval = Duration::from_secs(30);

        // The services, with `alicia up`'s defaults (but the TTS cache: every request synthesised).
        let defaults = alicia_config::Config::default();
        let (sp, tp) = (&defaults.stt_service.performance, &defaults.tts_service.performance);
        let mut sc = alicia_stt::SttConfig::new(&models.whisper);
        sc.workers = sp.max_concurrent.max(1);
        sc.queue = sp.queue;
        sc.max_audio_seconds = sp.max_audio_length.max(1) as f32;
        sc.language = Some(defaults.stt_service.whisper.language.clone());
        let tc = alicia_tts::TtsConfig {
            cache_entries: 0,
            sessions_per_voice: tp.max_concurrent.max(1),
            ..alicia_tts::TtsConfig::default()
        };
        let voice_path = models.voice.clone();
        let (stt_engine, tts_engine) = tokio::task::spawn_blocking(move || {
            anyhow::Ok((alicia_stt::SttEngine::new(sc)?, alicia_tts::TtsEngine::new(&[voice_path], tc)?))
        })
        .await
        .context("loading the engines")??;
        let registry =
            alicia_registry::start(alicia_registry::RegistryConfig::new(base.clone(), dir.path().join("registry.db")))
                .await
                .context("starting the registry")?;
        let router = alicia_router::start(alicia_router::RouterConfig::new(base.clone()))
            .await
            .context("starting the router")?;
        let mut scfg = alicia_voice::stt::SttServiceConfig::new(base.clone(), stt_engine, "tiny.en");
        scfg.vad = Some((models.vad.clone(), alicia_stt::vad::VadConfig::default()));
        scfg.timeout = Duration::from_secs(sp.timeout.max(1));
        let stt = alicia_voice::stt::start(scfg).await.context("starting stt_service")?;
        let mut tcfg = alicia_voice::tts::TtsServiceConfig::new(base.clone(), tts_engine);
        tcfg.timeout = Duration::from_secs(tp.timeout.max(1));
        tcfg.speak_answers = speak_answers;
        let tts = alicia_voice::tts::start(tcfg).await.context("starting tts_service")?;
        Ok(VoiceRig { models, dir, prefix, base, services: VoiceServices { registry, router, stt, tts } })
    }
}

impl VoiceServices {
    /// Stops them, the voice first, each given at most 10 s.
    pub(crate) async fn shutdown(self) {
        let stop = Duration::from_secs(10);
        let _ = tokio::time::timeout(stop, self.tts.shutdown()).await;
        let _ = tokio::time::timeout(stop, self.stt.shutdown()).await;
        let _ = tokio::time::timeout(stop, self.router.shutdown()).await;
        let _ = tokio::time::timeout(stop, self.registry.shutdown()).await;
    }
}

/// The models from the store, as `alicia models fetch` leaves them (never fetched here: a
/// benchmark does not download).
pub(crate) fn load_models() -> anyhow::Result<Models> {
    use alicia_models::{FetchPolicy, ModelStore, Progress};
    let need = "the voice bench needs the speech models: run `alicia models fetch`";
    let store = ModelStore::locate(None, None)?;
    let ort = alicia_models::onnxruntime(&store, FetchPolicy::Never, Progress::Quiet).context(need)?;
    alicia_onnx::init(&ort)?;
    let whisper = alicia_models::whisper(&store, "tiny.en", FetchPolicy::Never, Progress::Quiet).context(need)?;
    let voice =
        alicia_models::piper_voice(&store, "en_US-joe-medium", FetchPolicy::Never, Progress::Quiet).context(need)?;
    let vad = alicia_models::silero_vad(&store, FetchPolicy::Never, Progress::Quiet).context(need)?;
    Ok(Models { whisper: whisper.paths.main().to_path_buf(), voice: voice.paths.main().to_path_buf(), vad })
}

/// One utterance: 16 kHz mono, as samples and as a WAV file (sent in requests, and read by the
/// references).
struct Clip {
    synth: &'static str,
    said: &'static str,
    pcm: Vec<i16>,
    wav: Vec<u8>,
    path: PathBuf,
}

impl Clip {
    fn seconds(&self) -> f64 {
        self.pcm.len() as f64 / RATE as f64
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn stt_request(clip: &Clip) -> Value {
    json!({"audio_data": b64(&clip.wav), "audio_format": "wav", "language": "en", "publish": false})
}

/// A request to a capability, asked again while the router knows no provider yet.
async fn ask(bus: &Bus, capability: &str, data: Value) -> Result<Envelope, SdkError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match bus.request(Destination::capability(capability), data.clone(), ANSWER).await {
            Err(SdkError::Remote { code, .. }) if code == "no_provider" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

fn error_code(e: &SdkError) -> String {
    match e {
        SdkError::Remote { code, .. } => code.clone(),
        SdkError::Timeout { .. } => "timeout".into(),
        other => other.to_string(),
    }
}

fn timing(d: &Value, key: &str) -> Option<f64> {
    d["timings_ms"][key].as_f64()
}

/// A satellite: publishes Wyoming events on its `mic` topic, hears its `snd` topic.
struct Satellite {
    id: String,
    mic: String,
    link: Link,
    heard: mpsc::UnboundedReceiver<(Instant, Event)>,
}

impl Satellite {
    async fn start(base: &ServiceConfig, topics: &VoiceTopics, id: &str, client_id: &str) -> anyhow::Result<Self> {
        let (link, mut events) = Link::connect(base, LinkOptions::new(client_id, [topics.snd(id)]));
        link.wait_online(Duration::from_secs(10)).await.context("a satellite did not connect")?;
        let (tx, heard) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let LinkEvent::Message(p) = ev {
                    let at = Instant::now();
                    if let Ok(e) = sat::decode(&p.payload) {
                        if tx.send((at, e)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Satellite { id: id.to_string(), mic: topics.mic(id), link, heard })
    }

    async fn send(&self, e: &Event) -> anyhow::Result<()> {
        self.link.publish(self.mic.clone(), QoS::AtLeastOnce, false, sat::encode(e), None).await?;
        Ok(())
    }

    /// Streams an utterance in real time: `transcribe`, `audio-start`, 20 ms chunks,
    /// `audio-stop`. Returns when `audio-start` and `audio-stop` were sent.
    async fn speak(&self, pcm: &[i16], session: &str) -> anyhow::Result<(Instant, Instant)> {
        let transcribe = json!({"session_id": session, "language": "en", "publish": false});
        self.send(&Event::with_data(sat::kind::TRANSCRIBE, transcribe)).await?;
        let started = Instant::now();
        self.send(&sat::audio_start(RATE, Some(session))).await?;
        let per = (RATE / 50) as usize;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut sent = 0u64;
        for piece in pcm.chunks(per) {
            tick.tick().await;
            let ts = sent * 1000 / RATE as u64;
            self.send(&sat::with_session(sat::audio_chunk(RATE, piece, ts), Some(session))).await?;
            sent += piece.len() as u64;
        }
        tick.tick().await;
        self.send(&sat::audio_stop(sent * 1000 / RATE as u64, Some(session))).await?;
        Ok((started, Instant::now()))
    }

    /// The next event of one of `kinds` for `session` (others are skipped).
    async fn wait(&mut self, session: &str, kinds: &[&str], until: Instant) -> Option<(Instant, Event)> {
        loop {
            let (at, e) = tokio::time::timeout_at(until.into(), self.heard.recv()).await.ok()??;
            if e.str("session_id") == Some(session) && kinds.contains(&e.kind.as_str()) {
                return Some((at, e));
            }
        }
    }

    /// Asks `tts_service` to say `text` here and follows the speech to its `audio-stop`.
    async fn answer(&mut self, bus: &Bus, text: &str, session: &str) -> Result<Spoken, String> {
        let sent = Instant::now();
        let until = sent + ANSWER;
        let request = ask(bus, TTS, json!({"text": text, "satellite": self.id, "session_id": session}));
        tokio::pin!(request);
        let (mut response, mut first, mut stop, mut samples) = (None::<Value>, None, None, 0usize);
        while response.is_none() || stop.is_none() {
            tokio::select! {
                r = &mut request, if response.is_none() => match r {
                    Ok(env) => response = Some(env.payload.data),
                    Err(e) => return Err(error_code(&e)),
                },
                ev = tokio::time::timeout_at(until.into(), self.heard.recv()), if stop.is_none() => {
                    let Ok(Some((at, e))) = ev else { return Err("no audio-stop within 60 s".into()) };
                    if e.str("session_id") != Some(session) {
                        continue;
                    }
                    match e.kind.as_str() {
                        sat::kind::AUDIO_CHUNK => {
                            first.get_or_insert(at);
                            samples += e.payload.as_ref().map_or(0, |p| p.len() / 2);
                        }
                        sat::kind::AUDIO_STOP => stop = Some(at),
                        sat::kind::ERROR => return Err(e.str("code").unwrap_or("error").to_string()),
                        _ => {}
                    }
                }
            }
        }
        let (response, stop) = (response.unwrap_or_default(), stop.unwrap_or(sent));
        let rate = response["sample_rate"].as_f64().unwrap_or(22050.0).max(1.0);
        Ok(Spoken {
            first_audio: ms(first.unwrap_or(stop) - sent),
            total: ms(stop - sent),
            stop,
            service_first_audio: timing(&response, "first_audio"),
            queue: timing(&response, "queue"),
            inference: timing(&response, "inference"),
            seconds: samples as f64 / rate,
        })
    }
}

struct Spoken {
    first_audio: f64,
    total: f64,
    stop: Instant,
    service_first_audio: Option<f64>,
    queue: Option<f64>,
    inference: Option<f64>,
    seconds: f64,
}

/// Runs the voice scenario (see the module documentation).
pub async fn run(args: &BenchArgs) -> anyhow::Result<VoiceReport> {
    let addr = resolve_loopback(&args.host, args.port).await?;
    if !(1..=100).contains(&args.sessions) {
        bail!("--sessions must be from 1 to 100");
    }
    if !(1..=10_000).contains(&args.requests) {
        bail!("--requests must be from 1 to 10000");
    }
    if !(1..=alicia_voice_bench::CORPUS.len()).contains(&args.utterances) {
        bail!("--utterances must be from 1 to {}", alicia_voice_bench::CORPUS.len());
    }
    if !(args.duration > 0.0 && args.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    let quiet = args.quiet;
    let say = move |m: String| {
        if !quiet {
            eprintln!("{m}");
        }
    };
    say("voice: loading the models from the model store".into());
    let VoiceRig { models, dir, prefix, base, services } = VoiceRig::start(addr, false).await?;
    let topics = VoiceTopics::new(prefix.clone());
    let client = alicia_sdk::connect(base.clone().with_name("bench_voice"))?;

    let outcome = measure(args, &say, &base, &topics, &services.router, &client, dir.path()).await;

    let _ = tokio::time::timeout(Duration::from_secs(10), client.shutdown()).await;
    services.shutdown().await;
    let (mut report, clips, latency_clip) = outcome?;

    // The references, with nothing else running.
    if args.no_reference {
        report.reference.skipped = Some("--no-reference".into());
    } else {
        let python = args.reference_python.clone();
        let work = dir.path().to_path_buf();
        let voice = models.voice.clone();
        let texts: Vec<&'static str> = clips.iter().map(|c| c.said).collect();
        let paths: Vec<PathBuf> = clips.iter().map(|c| c.path.clone()).collect();
        let latency_wav = clips[latency_clip].path.clone();
        let (iters, quiet) = (args.requests, args.quiet);
        let result = tokio::task::spawn_blocking(move || {
            let say = |m: String| {
                if !quiet {
                    eprintln!("{m}");
                }
            };
            let python = match python {
                Some(p) => p,
                None => reference::python(&say)?,
            };
            say(format!("voice: references (faster-whisper float32 and int8, piper-tts), {iters} runs each"));
            let corpus = paths.iter().zip(&texts).map(|(p, t)| reference::Utterance { path: p, said: t }).collect();
            let job = reference::Job {
                latency_wav: &latency_wav,
                corpus,
                voice: &voice,
                text: alicia_voice_bench::TTS_TEXT,
                iters,
                id_check: &[],
            };
            reference::run(&python, &job, &work)
        })
        .await
        .context("the references' task")?;
        match result {
            Ok(v) => {
                let (r, [f32h, i8h]) = reference::read(&v, &[]);
                report.reference = r;
                for w in &mut report.wer {
                    let idx: Vec<usize> = (0..clips.len()).filter(|i| clips[*i].synth == w.synth).collect();
                    let of = |h: &[String]| {
                        (h.len() == clips.len())
                            .then(|| alicia_voice_bench::wer(idx.iter().map(|i| (clips[*i].said, h[*i].as_str()))))
                    };
                    w.faster_whisper_float32 = of(&f32h);
                    w.faster_whisper_int8 = of(&i8h);
                }
            }
            Err(e) => {
                say(format!("voice: the references failed: {e:#}"));
                report.reference = Reference { skipped: Some(format!("failed: {e:#}")), ..Reference::default() };
            }
        }
    }
    Ok(report)
}

/// Phases 1 to 5, with the services running.
async fn measure(
    args: &BenchArgs,
    say: &(dyn Fn(String) + Sync),
    base: &ServiceConfig,
    topics: &VoiceTopics,
    router: &alicia_router::RouterHandle,
    client: &alicia_sdk::ServiceHandle,
    dir: &std::path::Path,
) -> anyhow::Result<(VoiceReport, Vec<Clip>, usize)> {
    router.wait_online(Duration::from_secs(10)).await.context("the router did not come online")?;
    client.wait_online(Duration::from_secs(10)).await.context("the requester did not connect")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let inv = router.inventory();
        let has = |id: &str, cap: &str| {
            inv.device(id).is_some_and(|d| d.reachable() && d.capabilities.iter().any(|c| c == cap))
        };
        if has(alicia_voice::stt::SERVICE_NAME, STT) && has(alicia_voice::tts::SERVICE_NAME, TTS) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the services did not register as providers of {STT} and {TTS} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bus = client.bus().clone();
    let mut report =
        VoiceReport { model: "tiny.en".into(), voice: "en_US-joe-medium".into(), ..VoiceReport::default() };

    // 1. The utterances.
    let texts = &alicia_voice_bench::CORPUS[..args.utterances];
    say(format!("voice: synthesising {} utterances with espeak-ng and with Piper (through tts_service)", texts.len()));
    let mut clips = Vec::new();
    for (i, said) in texts.iter().enumerate() {
        let text = said.to_string();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("espeak-ng").args(["-v", "en-us", "--stdout", &text]).output()
        })
        .await?
        .context("running espeak-ng (Debian: apt-get install espeak-ng)")?;
        if !out.status.success() {
            bail!("espeak-ng failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let espeak = alicia_audio::wav_to_16k_mono(&out.stdout, None).context("espeak-ng's WAV")?;
        let spoken = ask(&bus, TTS, json!({"text": said})).await.context("tts_service synthesising the corpus")?;
        let wav = base64::engine::general_purpose::STANDARD
            .decode(spoken.payload.data["audio_data"].as_str().unwrap_or_default())
            .context("tts_service's audio_data")?;
        let piper = alicia_audio::wav_to_16k_mono(&wav, None).context("tts_service's WAV")?;
        for (synth, audio) in [("espeak-ng", espeak), ("piper", piper)] {
            let pcm = alicia_audio::f32_to_i16(&audio);
            let wav = alicia_audio::encode_wav(&pcm, RATE, 1);
            let path = dir.join(format!("{synth}-{i}.wav"));
            std::fs::write(&path, &wav)?;
            clips.push(Clip { synth, said, pcm, wav, path });
        }
    }
    let latency_clip = (0..clips.len())
        .min_by(|a, b| (clips[*a].seconds() - 2.0).abs().total_cmp(&(clips[*b].seconds() - 2.0).abs()))
        .context("no utterance")?;

    // 2. STT latency.
    let clip = &clips[latency_clip];
    let n = args.requests;
    say(format!(
        "voice: STT, {} utterance {:?} ({:.2} s), 2 warm-up + {n} requests one at a time",
        clip.synth,
        clip.said,
        clip.seconds()
    ));
    let data = stt_request(clip);
    let (mut rt, mut total, mut decode, mut queue, mut inference) = (vec![], vec![], vec![], vec![], vec![]);
    let mut stt =
        SttLatency { synth: clip.synth.into(), text: clip.said.into(), seconds: clip.seconds(), ..Default::default() };
    let mut shown = Instant::now();
    for i in 0..n + 2 {
        let sent = Instant::now();
        let r = ask(&bus, STT, data.clone()).await;
        let took = ms(sent.elapsed());
        match r {
            Ok(env) if i >= 2 => {
                let d = &env.payload.data;
                rt.push(took);
                total.extend(timing(d, "total"));
                decode.extend(timing(d, "decode_audio"));
                queue.extend(timing(d, "queue"));
                inference.extend(timing(d, "inference"));
                stt.heard = d["transcription"].as_str().unwrap_or_default().to_string();
            }
            Ok(_) => {}
            Err(e) if i >= 2 => {
                stt.failed += 1;
                say(format!("voice: an STT request failed: {e}"));
            }
            Err(e) => bail!("the STT warm-up failed: {e}"),
        }
        if shown.elapsed() > Duration::from_secs(5) {
            say(format!("voice: STT {} of {n}", rt.len()));
            shown = Instant::now();
        }
    }
    (stt.round_trip, stt.service_total, stt.decode_audio, stt.queue, stt.inference) =
        (Ms::of(&rt), Ms::of(&total), Ms::of(&decode), Ms::of(&queue), Ms::of(&inference));
    report.stt = stt;

    // 3. TTS latency, streamed to a satellite.
    let text = alicia_voice_bench::TTS_TEXT;
    say(format!("voice: TTS, {text:?} to a satellite, 2 warm-up + {n} requests 150 ms apart"));
    let mut sat = Satellite::start(base, topics, "bench_tts_sat", &format!("{}-tts-sat", bus.instance())).await?;
    let mut tts = TtsLatency { text: text.into(), ..Default::default() };
    shown = Instant::now();
    let (mut first, mut whole, mut sfirst, mut tqueue, mut tinf) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n + 2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        match sat.answer(&bus, text, &format!("tts-{i}")).await {
            Ok(s) if i >= 2 => {
                first.push(s.first_audio);
                whole.push(s.total);
                sfirst.extend(s.service_first_audio);
                tqueue.extend(s.queue);
                tinf.extend(s.inference);
                tts.audio_seconds = s.seconds;
            }
            Ok(_) => {}
            Err(e) if i >= 2 => {
                tts.failed += 1;
                say(format!("voice: a TTS request failed: {e}"));
            }
            Err(e) => bail!("the TTS warm-up failed: {e}"),
        }
        if shown.elapsed() > Duration::from_secs(5) {
            say(format!("voice: TTS {} of {n}", first.len()));
            shown = Instant::now();
        }
    }
    (tts.first_audio, tts.total, tts.service_first_audio, tts.queue, tts.inference) =
        (Ms::of(&first), Ms::of(&whole), Ms::of(&sfirst), Ms::of(&tqueue), Ms::of(&tinf));
    report.tts = tts;
    sat.link.close().await;

    // 4. Word error rate, through the bus.
    say(format!("voice: word error rate, {} utterances", clips.len()));
    let mut heard = Vec::new();
    for c in &clips {
        let h = match ask(&bus, STT, stt_request(c)).await {
            Ok(env) => env.payload.data["transcription"].as_str().unwrap_or_default().to_string(),
            Err(e) => bail!("transcribing {:?} failed: {e}", c.said),
        };
        heard.push(h);
    }
    for synth in ["espeak-ng", "piper"] {
        let idx: Vec<usize> = (0..clips.len()).filter(|i| clips[*i].synth == synth).collect();
        report.wer.push(Wer {
            synth: synth.into(),
            utterances: idx.len(),
            alicia: alicia_voice_bench::wer(idx.iter().map(|i| (clips[*i].said, heard[*i].as_str()))),
            misheard: idx
                .iter()
                .filter(|i| alicia_voice_bench::wer([(clips[**i].said, heard[**i].as_str())]) > 0.0)
                .map(|i| (clips[*i].said.to_string(), heard[*i].clone()))
                .collect(),
            ..Wer::default()
        });
    }

    // 5. Sessions at once.
    let clips = Arc::new(clips);
    report.sessions = sessions(args, say, base, topics, &bus, clips.clone()).await?;
    let clips = Arc::try_unwrap(clips).map_err(|_| anyhow::anyhow!("a session task still holds the utterances"))?;
    Ok((report, clips, latency_clip))
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    busy: AtomicU64,
    errors: AtomicU64,
}

/// What one satellite measured in the sustained phase.
#[derive(Default)]
struct SatResult {
    after_stop: Vec<f64>,
    stt_queue: Vec<f64>,
    stt_inference: Vec<f64>,
    tts_first: Vec<f64>,
    tts_total: Vec<f64>,
    tts_queue: Vec<f64>,
    tts_inference: Vec<f64>,
    session_total: Vec<f64>,
    ended_by_vad: u64,
    audio_in: f64,
    audio_out: f64,
    heard: Vec<(&'static str, String)>,
    errors: Vec<String>,
}

async fn sessions(
    args: &BenchArgs,
    say: &(dyn Fn(String) + Sync),
    base: &ServiceConfig,
    topics: &VoiceTopics,
    bus: &Bus,
    clips: Arc<Vec<Clip>>,
) -> anyhow::Result<Sessions> {
    let n = args.sessions;
    let duration = Duration::from_secs_f64(args.duration);
    say(format!(
        "voice: {n} satellites at once for {:.0} s (utterance streamed in real time, transcript, spoken answer)",
        args.duration
    ));
    let mut sats = Vec::new();
    for i in 0..n {
        let id = format!("bench_sat_{i}");
        sats.push(Satellite::start(base, topics, &id, &format!("{}-sat{i}", bus.instance())).await?);
    }
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let stop_at = started + duration;
    // Satellites start spread over one typical session, so they do not all speak in step.
    let mean = clips.iter().map(Clip::seconds).sum::<f64>() / clips.len() as f64;
    let spread = Duration::from_secs_f64((mean + 0.5).min(args.duration / 2.0));
    let mut tasks = Vec::new();
    for (i, mut sat) in sats.into_iter().enumerate() {
        let (bus, clips, counters) = (bus.clone(), clips.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(spread * i as u32 / n as u32).await;
            let mut r = SatResult::default();
            let mut k = 0usize;
            let fail = |r: &mut SatResult, code: String, what: &str| {
                if code == "busy" {
                    counters.busy.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                if r.errors.len() < 3 {
                    r.errors.push(format!("{what}: {code}"));
                }
            };
            while Instant::now() < stop_at {
                let clip = &clips[(i + k * n) % clips.len()];
                let session = format!("s{i}-{k}");
                k += 1;
                let (begun, stopped) = match sat.speak(&clip.pcm, &session).await {
                    Ok(t) => t,
                    Err(e) => {
                        fail(&mut r, e.to_string(), "streaming");
                        continue;
                    }
                };
                match sat.wait(&session, &[sat::kind::TRANSCRIPT, sat::kind::ERROR], stopped + ANSWER).await {
                    Some((at, e)) if e.kind == sat::kind::TRANSCRIPT => {
                        if at > stopped {
                            r.after_stop.push(ms(at - stopped));
                        } else {
                            r.ended_by_vad += 1;
                            r.after_stop.push(0.0);
                        }
                        let t = e.data.get("timings_ms").cloned().unwrap_or_default();
                        r.stt_queue.extend(t["queue"].as_f64());
                        r.stt_inference.extend(t["inference"].as_f64());
                        r.heard.push((clip.said, e.str("text").unwrap_or_default().to_string()));
                        r.audio_in += clip.seconds();
                    }
                    Some((_, e)) => {
                        fail(&mut r, e.str("code").unwrap_or("error").to_string(), "transcript");
                        continue;
                    }
                    None => {
                        fail(&mut r, "no transcript within 60 s".into(), "transcript");
                        continue;
                    }
                }
                let reply = REPLIES[(i + k) % REPLIES.len()];
                match sat.answer(&bus, reply, &session).await {
                    Ok(s) => {
                        r.tts_first.push(s.first_audio);
                        r.tts_total.push(s.total);
                        r.tts_queue.extend(s.queue);
                        r.tts_inference.extend(s.inference);
                        r.audio_out += s.seconds;
                        r.session_total.push(ms(s.stop - begun));
                        counters.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(code) => fail(&mut r, code, "answer"),
                }
            }
            sat.link.close().await;
            r
        }));
    }
    let ticker = {
        let counters = counters.clone();
        let quiet = args.quiet;
        let total = args.duration;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if !quiet {
                    eprintln!(
                        "voice: sessions, {:.0} s of {total:.0}: {} done, {} busy, {} errors",
                        started.elapsed().as_secs_f64(),
                        counters.completed.load(Ordering::Relaxed),
                        counters.busy.load(Ordering::Relaxed),
                        counters.errors.load(Ordering::Relaxed)
                    );
                }
            }
        })
    };
    let mut all = SatResult::default();
    for t in tasks {
        let r = t.await.context("a satellite's task panicked")?;
        all.after_stop.extend(r.after_stop);
        all.stt_queue.extend(r.stt_queue);
        all.stt_inference.extend(r.stt_inference);
        all.tts_first.extend(r.tts_first);
        all.tts_total.extend(r.tts_total);
        all.tts_queue.extend(r.tts_queue);
        all.tts_inference.extend(r.tts_inference);
        all.session_total.extend(r.session_total);
        all.ended_by_vad += r.ended_by_vad;
        all.audio_in += r.audio_in;
        all.audio_out += r.audio_out;
        all.heard.extend(r.heard);
        all.errors.extend(r.errors);
    }
    ticker.abort();
    Ok(Sessions {
        sessions: n,
        seconds: started.elapsed().as_secs_f64(),
        completed: counters.completed.load(Ordering::Relaxed),
        busy: counters.busy.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        ended_by_vad: all.ended_by_vad,
        audio_in_seconds: all.audio_in,
        audio_out_seconds: all.audio_out,
        wer: alicia_voice_bench::wer(all.heard.iter().map(|(s, h)| (*s, h.as_str()))),
        stt_after_stop: Ms::of(&all.after_stop),
        stt_queue: Ms::of(&all.stt_queue),
        stt_inference: Ms::of(&all.stt_inference),
        tts_first_audio: Ms::of(&all.tts_first),
        tts_total: Ms::of(&all.tts_total),
        tts_queue: Ms::of(&all.tts_queue),
        tts_inference: Ms::of(&all.tts_inference),
        session_total: Ms::of(&all.session_total),
        error_examples: all.errors.into_iter().take(10).collect(),
    })
}
