//! `alicia satellite --wav FILE`: a satellite without hardware. It speaks the satellite
//! protocol (`docs/voice-protocol.md`) exactly as an ESP32 satellite does: it logs in as the
//! device itself (a gateway token for its id, made from the home's `keys/jwt.key`, unless
//! `--user`/`--password-file` say otherwise), registers with the `microphone` and
//! `audio_playback` capabilities and its `--location`, streams the WAV as 16 kHz 16-bit mono
//! in 20 ms chunks in real time, and reads the transcript and the spoken answer back, printing
//! when each stage arrived after the end of the clip.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use alicia_sdk::{PasswordSource, Secret};
use alicia_voice::satellite::{End, Outcome, Satellite, SatelliteConfig, StreamOptions};
use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Map};

use crate::bus_cli::BusArgs;

#[derive(Args, Clone)]
pub struct SatelliteArgs {
    /// The utterance: a WAV file (any rate, mono or stereo, 8/16/24/32-bit).
    #[arg(long)]
    wav: PathBuf,
    /// The satellite's device id (its login and topics).
    #[arg(long, default_value = "cli_satellite")]
    id: String,
    /// Its room (the assistant's area when a sentence names none).
    #[arg(long)]
    location: Option<String>,
    /// A name for people.
    #[arg(long)]
    name: Option<String>,
    /// Write the spoken answer to this WAV file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Audio per message, milliseconds (an ESP32 sends 20 to 32).
    #[arg(long, default_value_t = 20)]
    chunk_ms: u32,
    /// After the clip, stream silence until the server's voice activity detection ends the
    /// utterance (a live microphone), instead of `audio-stop` at the end of the file.
    #[arg(long)]
    vad: bool,
    /// The clip starts with a wake word for the server to hear (`alexa`, `hey_mycroft`;
    /// comma-separated; none: any the service has) before the command, as a satellite without
    /// a wake word of its own streams (needs stt_service.wake_word.enabled).
    #[arg(long, value_name = "NAMES", num_args = 0..=1, default_missing_value = "")]
    wake: Option<String>,
    /// Language spoken [default: the service's].
    #[arg(long)]
    language: Option<String>,
    /// Do not register in the device registry first.
    #[arg(long)]
    no_register: bool,
    /// How long to wait for each answer, seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bus: BusArgs,
}

pub fn run(args: SatelliteArgs) -> anyhow::Result<()> {
    crate::bus_cli::block_on(converse(args))
}

async fn converse(args: SatelliteArgs) -> anyhow::Result<()> {
    let wav = std::fs::read(&args.wav).with_context(|| format!("cannot read {}", args.wav.display()))?;
    alicia_audio::wav_info(&wav).with_context(|| format!("{} is not a WAV file", args.wav.display()))?;
    if !(1..=200).contains(&args.chunk_ms) {
        bail!("--chunk-ms must be 1 to 200");
    }
    let mut service = args.bus.service_config()?;
    if args.bus.user.is_none() {
        // The satellite logs in as itself: a gateway token whose subject is its id.
        let key = alicia_home::Home::new(args.bus.home()).jwt_key();
        if key.exists() {
            let (key, id) = (key.clone(), args.id.clone());
            service.username = Some(args.id.clone());
            service.password = None;
            service.password_source = Some(PasswordSource::new(move || {
                let issuer = alicia_gateway::tokens::TokenIssuer::from_key_file(&key).map_err(|e| e.to_string())?;
                Ok(Secret::new(issuer.issue(&id)))
            }));
        }
    }
    let wait = Duration::from_secs(args.timeout.max(1));
    let mut cfg = SatelliteConfig::new(service, &args.id);
    cfg.location = args.location.clone();
    cfg.name = args.name.clone();
    cfg.register = !args.no_register;
    let broker = format!("{}:{}", cfg.service.host, cfg.service.port);
    let mut sat = Satellite::connect(cfg, wait)
        .await
        .with_context(|| format!("satellite {} on the broker at {broker}", args.id))?;
    let mut transcribe = Map::new();
    transcribe.insert("session_id".into(), json!(format!("{}-{}", args.id, alicia_envelope::Uuid::new_v4().simple())));
    if let Some(l) = &args.language {
        transcribe.insert("language".into(), json!(l));
    }
    let opts = StreamOptions {
        chunk_ms: args.chunk_ms,
        realtime: true,
        end: if args.vad { End::Vad(Duration::from_secs(5)) } else { End::Stop },
        transcribe,
        gain: 1.0,
        wake: args
            .wake
            .as_deref()
            .map(|w| w.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_string).collect()),
    };
    let c = sat.converse(&wav, &opts, wait).await?;
    sat.close().await;
    if let (Some(out), false) = (&args.out, c.answer.is_empty()) {
        std::fs::write(out, c.answer_wav()).with_context(|| format!("cannot write {}", out.display()))?;
    }
    let outcome = match &c.outcome {
        Outcome::Answered => json!({"outcome": "answered"}),
        Outcome::Cancelled => json!({"outcome": "cancelled"}),
        Outcome::Arbitrated { winner } => json!({"outcome": "arbitrated", "winner": winner}),
        Outcome::Error { code, text } => json!({"outcome": "error", "code": code, "message": text}),
        Outcome::NotDetected => json!({"outcome": "not_detected"}),
        Outcome::NoAnswer => json!({"outcome": "no_answer"}),
    };
    let answer_seconds = c.answer.len() as f64 / f64::from(c.answer_rate.max(1));
    let stages: Map<String, serde_json::Value> = c.stages.iter().map(|(s, ms)| (s.clone(), json!(ms))).collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut doc = json!({
            "satellite": args.id, "session_id": c.session_id, "wake": c.wake, "transcript": c.transcript,
            "answer": {"sample_rate": c.answer_rate, "seconds": (answer_seconds * 1000.0).round() / 1000.0,
                       "file": args.out.as_ref().filter(|_| !c.answer.is_empty()).map(|p| p.display().to_string())},
            "stages_ms": stages,
        });
        doc.as_object_mut().expect("object").extend(outcome.as_object().cloned().unwrap_or_default());
        writeln!(out, "{doc}")?;
    } else {
        writeln!(out, "satellite {} session {}", args.id, c.session_id.as_deref().unwrap_or("-"))?;
        if let Some(w) = &c.wake {
            writeln!(out, "wake:     {w}")?;
        }
        writeln!(out, "heard:    {}", c.text().unwrap_or("(no transcript)"))?;
        writeln!(out, "outcome:  {}", outcome["outcome"].as_str().unwrap_or_default())?;
        if let Some(m) = outcome.get("message") {
            writeln!(
                out,
                "error:    {} {}",
                outcome["code"].as_str().unwrap_or_default(),
                m.as_str().unwrap_or_default()
            )?;
        }
        writeln!(out, "answer:   {answer_seconds:.2} s of audio at {} Hz", c.answer_rate)?;
        writeln!(out, "after the end of the clip:")?;
        for (stage, ms) in &c.stages {
            writeln!(out, "  {stage:<14} {ms:>9.1} ms")?;
        }
    }
    match c.outcome {
        Outcome::Answered | Outcome::Arbitrated { .. } | Outcome::Cancelled => Ok(()),
        Outcome::Error { code, text } => bail!("the satellite was answered with an error: {code}: {text}"),
        Outcome::NotDetected => bail!("the service heard no wake word in the clip"),
        Outcome::NoAnswer => bail!("no answer within {}s", args.timeout),
    }
}
