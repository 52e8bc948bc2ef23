//! `alicia wyoming`: Alicia's speech engines as Wyoming servers, for Home Assistant (Settings →
//! Devices & services → Wyoming Protocol, host and port; or discovered by zeroconf): speech to
//! text, text to speech, and with `--wake` openWakeWord's wake words.

use std::net::SocketAddr;
use std::path::PathBuf;

use alicia_models::{FetchPolicy, ModelStore, Progress};
use alicia_stt::vad::VadConfig;
use alicia_stt::{SttConfig, SttEngine};
use alicia_tts::{TtsConfig, TtsEngine};
use alicia_wyoming::asr::AsrServer;
use alicia_wyoming::tts::TtsServer;
use alicia_wyoming::wake::WakeServer;
use alicia_wyoming::ServerConfig;
use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct WyomingArgs {
    /// Speech-to-text server address (`0.0.0.0:10300` to serve Home Assistant on another host).
    #[arg(long, default_value = "127.0.0.1:10300")]
    asr: SocketAddr,
    /// Text-to-speech server address.
    #[arg(long, default_value = "127.0.0.1:10200")]
    tts: SocketAddr,
    /// No speech-to-text server.
    #[arg(long)]
    no_asr: bool,
    /// No text-to-speech server.
    #[arg(long)]
    no_tts: bool,
    /// Serve wake word detection here too (openWakeWord's alexa and hey_mycroft; its
    /// pre-trained models are for non-commercial use, CC BY-NC-SA 4.0, and are fetched on
    /// first use) [default address: 127.0.0.1:10400].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:10400")]
    wake: Option<SocketAddr>,
    /// The score (0..1) at which a wake word fires.
    #[arg(long, default_value_t = 0.5)]
    wake_threshold: f32,
    /// Whisper model (`tiny.en`, `base`; `alicia models list`).
    #[arg(long, default_value = "tiny.en")]
    model: String,
    /// Piper voice.
    #[arg(long, default_value = "en_US-joe-medium")]
    voice: String,
    /// Default language of speech (`auto`: detected, multilingual models only).
    #[arg(long, default_value = "en")]
    language: String,
    /// End utterances by voice activity (Silero VAD) instead of waiting for audio-stop.
    #[arg(long)]
    vad: bool,
    /// Longest utterance accepted, seconds.
    #[arg(long, default_value_t = 30.0)]
    max_audio_seconds: f32,
    /// Advertise both servers over mDNS (`_wyoming._tcp`) under this name prefix.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "alicia")]
    zeroconf: Option<String>,
    /// Model directory [default: $ALICIA_MODELS, else the user's cache].
    #[arg(long, value_name = "DIR")]
    models: Option<PathBuf>,
    /// Do not download missing models; fail naming the command that fetches them.
    #[arg(long)]
    offline: bool,
}

pub fn run(args: WyomingArgs) -> anyhow::Result<()> {
    let store = ModelStore::locate(args.models.as_deref(), None)?;
    let policy = if args.offline { FetchPolicy::Never } else { FetchPolicy::Fetch };
    let progress = Progress::Auto;
    if args.no_asr && args.no_tts && args.wake.is_none() {
        anyhow::bail!("nothing to serve: --no-asr and --no-tts without --wake");
    }
    if !(args.wake_threshold > 0.0 && args.wake_threshold <= 1.0) {
        anyhow::bail!("--wake-threshold is a score in (0, 1], not {}", args.wake_threshold);
    }
    let wake = match args.wake {
        None => None,
        Some(_) => {
            init_onnx(&store, policy, progress)?;
            let models = crate::voice::wake_models(&store, policy, progress, args.wake_threshold, "--wake").map_err(
                |u| match u.fix {
                    Some(fix) => anyhow::anyhow!("{}; to fix it: {fix}", u.reason),
                    None => anyhow::anyhow!("{}", u.reason),
                },
            )?;
            Some(WakeServer { models, threshold: args.wake_threshold })
        }
    };
    let stt = if args.no_asr {
        None
    } else {
        let whisper = alicia_models::whisper(&store, &args.model, policy, progress)?;
        if let Some(note) = &whisper.resolved.note {
            tracing::warn!("{note}");
        }
        let vad = if args.vad {
            init_onnx(&store, policy, progress)?;
            Some((alicia_models::silero_vad(&store, policy, progress)?, VadConfig::default()))
        } else {
            None
        };
        let mut cfg = SttConfig::new(whisper.paths.main());
        cfg.language = Some(args.language.clone());
        cfg.max_audio_seconds = args.max_audio_seconds;
        Some(AsrServer { engine: SttEngine::new(cfg)?, model_name: whisper.resolved.spec.name.to_string(), vad })
    };
    let tts = if args.no_tts {
        None
    } else {
        init_onnx(&store, policy, progress)?;
        let voice = alicia_models::piper_voice(&store, &args.voice, policy, progress)?;
        let mut engine = TtsEngine::new(&[voice.paths.main().to_path_buf()], TtsConfig::default())?;
        if let Some(note) = &voice.resolved.note {
            tracing::warn!("{note}");
            engine.alias(&voice.resolved.requested, voice.resolved.spec.name)?;
        }
        Some(TtsServer { engine, lead_in: 0.0 })
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        let mut adverts = Vec::new();
        if let Some(server) = stt {
            let listener = tokio::net::TcpListener::bind(args.asr)
                .await
                .with_context(|| format!("cannot listen on {}", args.asr))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "wyoming speech to text listening");
            if let Some(name) = &args.zeroconf {
                adverts.push(alicia_wyoming::zeroconf::advertise(&format!("{name}-asr"), addr.port(), None)?);
            }
            tasks.spawn(server.serve(listener, ServerConfig::default()));
        }
        if let Some(server) = tts {
            let listener = tokio::net::TcpListener::bind(args.tts)
                .await
                .with_context(|| format!("cannot listen on {}", args.tts))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "wyoming text to speech listening");
            if let Some(name) = &args.zeroconf {
                adverts.push(alicia_wyoming::zeroconf::advertise(&format!("{name}-tts"), addr.port(), None)?);
            }
            tasks.spawn(server.serve(listener, ServerConfig::default()));
        }
        if let (Some(server), Some(at)) = (wake, args.wake) {
            let listener = tokio::net::TcpListener::bind(at).await.with_context(|| format!("cannot listen on {at}"))?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, words = ?server.models.names(), "wyoming wake word detection listening");
            if let Some(name) = &args.zeroconf {
                adverts.push(alicia_wyoming::zeroconf::advertise(&format!("{name}-wake"), addr.port(), None)?);
            }
            tasks.spawn(server.serve(listener, ServerConfig::default()));
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            Some(done) = tasks.join_next() => Err(anyhow::anyhow!("a wyoming server stopped: {:?}", done?.err())),
        }
    })
}

fn init_onnx(store: &ModelStore, policy: FetchPolicy, progress: Progress) -> anyhow::Result<()> {
    let lib = alicia_models::onnxruntime(store, policy, progress)?;
    alicia_onnx::init(&lib)?;
    Ok(())
}
