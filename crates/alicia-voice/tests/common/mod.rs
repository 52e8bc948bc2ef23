//! The voice services on real models (fetched by `alicia models fetch`, as scripts/test.sh
//! does) with the real registry and router, against a broker given by address: the
//! scenarios every broker runs.

#![allow(dead_code)]

pub use alicia_testkit::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope, MessageType};
use alicia_models::{FetchPolicy, ModelStore, Progress};
use alicia_sdk::{SdkError, ServiceHandle};
use alicia_stt::vad::VadConfig;
use alicia_voice::sat::{self, Event};
use alicia_voice::stt::{SttHandle, SttServiceConfig};
use alicia_voice::tts::{TtsHandle, TtsServiceConfig};
use base64::Engine as _;
use serde_json::{json, Value};

/// How long a test waits for an answer that runs a model. Generous on purpose: under
/// `cargo test` several tests share two cores, and six queued transcriptions took up to 9 s
/// with the CPU busy elsewhere. Not a speed claim: speed is measured by `alicia bench`.
pub const ANSWER: Duration = Duration::from_secs(60);

pub struct Models {
    pub whisper: PathBuf,
    pub voice: PathBuf,
    pub vad: PathBuf,
    /// openWakeWord's (`alicia models fetch openwakeword`).
    pub wake: alicia_stt::wake::WakeModels,
}

/// The fetched models (ONNX Runtime loaded once per process).
pub fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let store = ModelStore::locate(None, None).unwrap();
        let need = "(scripts/test.sh fetches the models: alicia models fetch)";
        let ort = alicia_models::onnxruntime(&store, FetchPolicy::Never, Progress::Quiet)
            .unwrap_or_else(|e| panic!("{e} {need}"));
        alicia_onnx::init(&ort).unwrap();
        let w = alicia_models::whisper(&store, "tiny.en", FetchPolicy::Never, Progress::Quiet)
            .unwrap_or_else(|e| panic!("{e} {need}"));
        let v = alicia_models::piper_voice(&store, "en_US-joe-medium", FetchPolicy::Never, Progress::Quiet)
            .unwrap_or_else(|e| panic!("{e} {need}"));
        let vad = alicia_models::silero_vad(&store, FetchPolicy::Never, Progress::Quiet).unwrap();
        let oww = alicia_models::openwakeword(&store, FetchPolicy::Never, Progress::Quiet)
            .unwrap_or_else(|e| panic!("{e} (scripts/test.sh fetches it: alicia models fetch openwakeword)"));
        let wake = alicia_stt::wake::WakeModels::from_files(&oww.files, alicia_models::WAKE_WORDS).unwrap();
        Models { whisper: w.paths.main().to_path_buf(), voice: v.paths.main().to_path_buf(), vad, wake }
    })
}

pub fn espeak(text: &str) -> Vec<u8> {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "--stdout", text])
        .output()
        .expect("espeak-ng runs (scripts/test.sh installs it)");
    assert!(out.status.success());
    out.stdout
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Lowercase words, punctuation removed.
pub fn words(s: &str) -> String {
    let kept: String = s.to_lowercase().chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An STT service on `addr`.
pub async fn stt(addr: SocketAddr, workers: usize, queue: usize, max_audio: f32) -> SttHandle {
    let m = models();
    let mut c = alicia_stt::SttConfig::new(&m.whisper);
    c.workers = workers;
    c.queue = queue;
    c.max_audio_seconds = max_audio;
    let engine = alicia_stt::SttEngine::new(c).unwrap();
    let mut cfg = SttServiceConfig::new(config(addr), engine, "tiny.en");
    cfg.vad = Some((m.vad.clone(), VadConfig::default()));
    // Used only by streams that ask for it (`detect`).
    cfg.wake = Some((m.wake.clone(), 0.5));
    // A loaded CI machine queues transcriptions for longer than production's 10 s; speed is
    // `alicia bench`'s business, not these tests'.
    cfg.timeout = ANSWER;
    let h = alicia_voice::stt::start(cfg).await.unwrap();
    h.bus().wait_online(WAIT).await.unwrap();
    h
}

pub async fn tts(addr: SocketAddr) -> TtsHandle {
    let engine = alicia_tts::TtsEngine::new(&[models().voice.clone()], alicia_tts::TtsConfig::default()).unwrap();
    let h = alicia_voice::tts::start(TtsServiceConfig::new(config(addr), engine)).await.unwrap();
    h.bus().wait_online(WAIT).await.unwrap();
    h
}

/// The registry (SQLite in a temporary directory) and the router.
pub struct Core {
    pub registry: alicia_registry::RegistryHandle,
    pub router: alicia_router::RouterHandle,
    _dir: tempfile::TempDir,
}

pub async fn core(addr: SocketAddr) -> Core {
    let dir = tempfile::tempdir().unwrap();
    let registry =
        alicia_registry::start(alicia_registry::RegistryConfig::new(config(addr), dir.path().join("registry.db")))
            .await
            .unwrap();
    let router = alicia_router::start(alicia_router::RouterConfig::new(config(addr))).await.unwrap();
    router.wait_online(WAIT).await.unwrap();
    Core { registry, router, _dir: dir }
}

impl Core {
    /// Waits until the router knows an online provider of `capability`.
    pub async fn provider(&self, capability: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let inv = self.router.inventory();
            let found = ["stt_service", "tts_service"]
                .iter()
                .filter_map(|id| inv.device(id))
                .any(|d| d.reachable() && d.capabilities.iter().any(|c| c == capability));
            if found {
                return;
            }
            assert!(Instant::now() < deadline, "no provider of {capability} in the router's inventory");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A client named `name`, online.
pub async fn requester(addr: SocketAddr, name: &str) -> ServiceHandle {
    let c = alicia_sdk::connect(config(addr).with_name(name)).unwrap();
    c.wait_online(WAIT).await.unwrap();
    c
}

/// The design document's STT request (tests/fixtures/design/voice_stt_request.json), verbatim
/// but for `audio_data`: a real WAV.
pub fn design_request(wav: &[u8]) -> Envelope {
    let text = include_str!("../../../../tests/fixtures/design/voice_stt_request.json");
    let mut v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["payload"]["data"]["audio_data"], "base64_encoded_audio");
    v["payload"]["data"]["audio_data"] = json!(b64(wav));
    Envelope::parse(v.to_string().as_bytes()).unwrap()
}

/// A request, asked again while the router knows no provider yet.
pub async fn ask(client: &alicia_sdk::Bus, to: Destination, data: Value) -> Result<Envelope, SdkError> {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.request(to.clone(), data.clone(), ANSWER).await {
            Err(SdkError::Remote { code, .. }) if code == "no_provider" && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => return other,
        }
    }
}

pub fn remote_code(r: &Result<Envelope, SdkError>) -> String {
    match r {
        Err(SdkError::Remote { code, .. }) => code.clone(),
        other => panic!("expected an error response, got {other:?}"),
    }
}

/// A satellite: publishes on its mic topic, reads its snd topic.
pub struct Satellite {
    pub id: String,
    pub obs: Observer,
}

impl Satellite {
    pub async fn start(addr: SocketAddr, id: &str) -> Satellite {
        let snd = format!("alicia/voice/sat/{id}/snd");
        Satellite { id: id.to_string(), obs: Observer::start(addr, &[&snd]).await }
    }

    pub async fn send(&self, e: &Event) {
        self.obs.publish(&format!("alicia/voice/sat/{}/mic", self.id), sat::encode(e), None).await;
    }

    /// Streams a WAV's audio as `audio-start`, 20 ms chunks in its own format and (if `stop`)
    /// `audio-stop`, with `transcribe` data first.
    pub async fn speak(&self, wav: &[u8], transcribe: Value, stop: bool) {
        let info = alicia_audio::wav_info(wav).unwrap();
        let (fmt, pcm) = alicia_audio::pcm::from_wav(wav).unwrap();
        assert_eq!(fmt.rate, info.sample_rate);
        self.send(&Event::with_data("transcribe", transcribe)).await;
        self.send(&Event::with_data(
            "audio-start",
            json!({"rate": fmt.rate, "width": fmt.width, "channels": fmt.channels}),
        ))
        .await;
        for chunk in alicia_audio::pcm::chunks(&pcm, fmt, 20) {
            let e = Event::with_data("audio-chunk", json!({"rate": fmt.rate, "width": 2, "channels": 1}))
                .with_payload(chunk.to_vec());
            self.send(&e).await;
        }
        if stop {
            self.send(&Event::new("audio-stop")).await;
        }
    }

    /// The next event on snd.
    pub async fn next(&mut self) -> Event {
        let p = self.obs.next().await;
        sat::decode(&p.payload).unwrap_or_else(|e| panic!("snd message is not an event: {e}"))
    }

    /// The next event of `kind` on snd, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Event {
        loop {
            let e = self.next().await;
            if e.kind == kind {
                return e;
            }
        }
    }
}

pub fn response(e: &Envelope) -> &Value {
    assert_eq!(e.message_type, MessageType::Response);
    &e.payload.data
}
