//! `alicia transcribe FILE.wav` and `alicia say "text" [-o out.wav]`: speech to text and text
//! to speech over the bus, through the running services (requests to
//! `capability:speech_to_text` / `capability:text_to_speech` through the router), never in
//! this process. Each prints the result and where the time went: the round trip seen here and
//! the service's own stages.
//!
//! The broker and login are found as for every bus command ([`crate::bus_cli`]).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use alicia_envelope::{Destination, Envelope, Value};
use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Args;
use serde_json::json;

use crate::bus_cli::{BusArgs, Cli};

/// How to reach the bus, and how long to wait.
#[derive(Args, Clone)]
pub struct VoiceArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// How long to wait for the answer (and for the service, if it is still starting), seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Print the service's whole answer as JSON (the audio left out).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TranscribeArgs {
    /// A WAV file (any rate, mono or stereo, 8/16/24/32-bit).
    file: PathBuf,
    /// Language spoken (`en`, `en-US`; default: the service's).
    #[arg(long)]
    language: Option<String>,
    /// Also publish the transcript on `alicia/voice/stt/response`, where the assistant acts on it.
    #[arg(long)]
    publish: bool,
    #[command(flatten)]
    bus: VoiceArgs,
}

#[derive(Args)]
pub struct SayArgs {
    /// What to say.
    text: String,
    /// Write the speech to this WAV file [default: standard output when it is not a terminal].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Piper voice (`alicia models list`) [default: the service's].
    #[arg(long)]
    voice: Option<String>,
    /// Speaking rate (1.0 normal, 0.25 to 4).
    #[arg(long)]
    rate: Option<f32>,
    /// Stream it to this satellite's speaker (`alicia/voice/sat/<ID>/snd`) instead.
    #[arg(long, value_name = "ID")]
    satellite: Option<String>,
    #[command(flatten)]
    bus: VoiceArgs,
}

pub fn transcribe(args: TranscribeArgs) -> anyhow::Result<()> {
    let wav = std::fs::read(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut data = json!({
        "audio_data": base64::engine::general_purpose::STANDARD.encode(&wav),
        "audio_format": "wav",
        "publish": args.publish,
    });
    if let Some(l) = &args.language {
        data["language"] = json!(l);
    }
    let (answer, round_trip) = ask(&args.bus, Destination::capability(alicia_voice::stt::CAPABILITY), data)?;
    let d = &answer.payload.data;
    if args.bus.json {
        println!("{}", serde_json::to_string_pretty(d)?);
    } else {
        println!("{}", d["transcription"].as_str().unwrap_or_default().trim());
    }
    let t = &d["timings_ms"];
    eprintln!(
        "{:.0} ms round trip; {} ({} s of audio, confidence {}, language {}): decoding the WAV {} ms, waiting {} ms, \
         transcribing {} ms, {} ms in the service",
        round_trip,
        answer.source,
        d["duration_seconds"],
        d["confidence"],
        d["language"].as_str().unwrap_or("?"),
        t["decode_audio"],
        t["queue"],
        t["inference"],
        t["total"],
    );
    Ok(())
}

pub fn say(args: SayArgs) -> anyhow::Result<()> {
    let mut data = json!({"text": args.text});
    if let Some(v) = &args.voice {
        data["voice"] = json!(v);
    }
    if let Some(r) = args.rate {
        data["rate"] = json!(r);
    }
    if let Some(s) = &args.satellite {
        data["satellite"] = json!(s);
    }
    let (answer, round_trip) = ask(&args.bus, Destination::capability(alicia_voice::tts::CAPABILITY), data)?;
    let mut d = answer.payload.data.clone();
    let audio = d.as_object_mut().and_then(|m| m.remove("audio_data"));
    if args.bus.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    }
    let t = &d["timings_ms"];
    match (&args.satellite, audio) {
        (Some(sat), _) => eprintln!(
            "{round_trip:.0} ms round trip; streamed {} s to satellite {sat}: first audio after {} ms, all in {} ms",
            d["duration_seconds"], t["first_audio"], t["total"]
        ),
        (None, Some(Value::String(b64))) => {
            let wav = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .context("the service's audio_data is not base64")?;
            match &args.output {
                Some(path) => std::fs::write(path, &wav).with_context(|| format!("cannot write {}", path.display()))?,
                None if !std::io::stdout().is_terminal() && !args.bus.json => std::io::stdout().write_all(&wav)?,
                None => eprintln!("(not written: give -o FILE.wav, or redirect standard output)"),
            }
            eprintln!(
                "{round_trip:.0} ms round trip; {} ({}, {} s at {} Hz{}): first audio after {} ms, synthesis {} ms{}",
                answer.source,
                d["voice"].as_str().unwrap_or("?"),
                d["duration_seconds"],
                d["sample_rate"],
                if d["cached"] == json!(true) { ", from the cache" } else { "" },
                t["first_audio"],
                t["total"],
                args.output.as_ref().map(|p| format!("; wrote {}", p.display())).unwrap_or_default(),
            );
        }
        (None, _) => bail!("the service's answer has no audio_data: {d}"),
    }
    Ok(())
}

/// Sends one request over the bus and waits for the answer ([`Cli::ask`]).
fn ask(args: &VoiceArgs, to: Destination, data: Value) -> anyhow::Result<(Envelope, f64)> {
    crate::bus_cli::block_on(async {
        let bus = Cli::connect(&args.bus, Duration::from_secs(args.timeout)).await?;
        let answer = bus.ask(to, data).await;
        bus.close().await;
        answer
    })
}
