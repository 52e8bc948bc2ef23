//! `alicia ask "turn on the kitchen light"`: sends the text to the running `ai_service` over
//! the bus (a request to its inbox, as any client would) and prints what each stage did and
//! how long it took. With `--wav FILE`, the sentence is first transcribed by the STT service
//! (`capability:speech_to_text` through the router), then asked as text. The broker and login
//! are found as for every bus command ([`crate::bus_cli`]).

use std::path::PathBuf;
use std::time::Duration;

use alicia_envelope::{Destination, Value};
use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Args;
use serde_json::json;

use crate::bus_cli::{BusArgs, Cli};

#[derive(Args)]
pub struct AskCommand {
    /// What to say.
    #[arg(required_unless_present = "wav")]
    text: Option<String>,
    /// Say it from a WAV file instead (any rate, mono or stereo): transcribed by the STT service on the bus.
    #[arg(long, value_name = "FILE", conflicts_with = "text")]
    wav: Option<PathBuf>,
    /// The satellite (device id) it is said to: its registered location is the context area.
    #[arg(long, value_name = "DEVICE_ID")]
    satellite: Option<String>,
    /// Session id, to answer a question the assistant asked back in an earlier `ask`.
    #[arg(long)]
    session: Option<String>,
    /// The area to assume when the sentence names none.
    #[arg(long)]
    area: Option<String>,
    /// Language of the text [default: the assistant's].
    #[arg(long)]
    language: Option<String>,
    /// Print the assistant's answer as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    bus: BusArgs,
    /// How long to wait for each answer, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

pub fn run(cmd: AskCommand) -> anyhow::Result<()> {
    crate::bus_cli::block_on(run_async(cmd))
}

async fn run_async(cmd: AskCommand) -> anyhow::Result<()> {
    let bus = Cli::connect(&cmd.bus, Duration::from_secs(cmd.timeout)).await?;
    let result = ask(&bus, &cmd).await;
    bus.close().await;
    let (answer, round_trip) = result?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", report(&answer, round_trip));
    }
    Ok(())
}

/// The assistant's answer and the round trip to it (the transcription first, with `--wav`).
async fn ask(bus: &Cli, cmd: &AskCommand) -> anyhow::Result<(Value, Duration)> {
    let text = match (&cmd.text, &cmd.wav) {
        (Some(t), _) => t.clone(),
        (None, Some(file)) => {
            let wav = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut data = json!({
                "audio_data": base64::engine::general_purpose::STANDARD.encode(&wav),
                "audio_format": "wav",
                "publish": false,
            });
            if let Some(l) = &cmd.language {
                data["language"] = json!(l);
            }
            let (heard, ms) = bus.ask(Destination::capability(alicia_voice::stt::CAPABILITY), data).await?;
            let d = &heard.payload.data;
            let text = d["transcription"].as_str().unwrap_or_default().trim().to_string();
            eprintln!(
                "{:<10} {ms:>8.3} ms  {text:?} (speech to text by {}, confidence {})",
                "stt", heard.source, d["confidence"]
            );
            if text.is_empty() {
                bail!("{}: no speech heard in {}", heard.source, file.display());
            }
            text
        }
        (None, None) => bail!("say something: alicia ask \"turn on the kitchen light\", or --wav FILE"),
    };
    let mut data = json!({ "text": text });
    for (k, v) in
        [("satellite", &cmd.satellite), ("session_id", &cmd.session), ("area", &cmd.area), ("language", &cmd.language)]
    {
        if let Some(v) = v {
            data[k] = json!(v);
        }
    }
    let (answer, ms) = bus.ask(Destination::service(alicia_assistant::SERVICE_NAME), data).await?;
    Ok((answer.payload.data, Duration::from_secs_f64(ms / 1000.0)))
}

fn ms(v: &Value) -> String {
    v.as_f64().map(|m| format!("{m:>8.3} ms")).unwrap_or_else(|| format!("{:>11}", "-"))
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Each stage on a line: its time and what it found or did.
pub fn report(a: &Value, round_trip: Duration) -> String {
    let t = &a["timings_ms"];
    let mut out = String::new();
    let mut line = |stage: &str, time: String, what: String| out.push_str(&format!("{stage:<10} {time}  {what}\n"));
    let mut heard = format!("{:?}", short(&a["text"]));
    if let Some(area) = a["area"].as_str() {
        heard.push_str(&format!(" in {area}"));
    }
    if let Some(s) = a["satellite"].as_str() {
        heard.push_str(&format!(" (satellite {s})"));
    }
    heard.push_str(&format!(", session {}", short(&a["session_id"])));
    line("heard", format!("{:>11}", ""), heard);
    if t.get("dialogue").is_some() {
        line("dialogue", ms(&t["dialogue"]), "the answer to a question asked back".into());
    }
    let intent = match a["intent"].as_object() {
        Some(i) => {
            let slots: Vec<String> = i
                .get("slots")
                .and_then(Value::as_object)
                .map(|s| s.iter().map(|(k, v)| format!("{k}={}", short(v))).collect())
                .unwrap_or_default();
            let by = if i.get("by").and_then(Value::as_str) == Some("llm") { " (language model)" } else { "" };
            format!("{}{by} {}  [{}]", short(&i["name"]), slots.join(" "), short(&i["sentence"]))
        }
        None => "no intent".into(),
    };
    if t.get("recognize").is_some() {
        line("recognize", ms(&t["recognize"]), intent);
    }
    if t.get("llm").is_some() {
        line("llm", ms(&t["llm"]), "the language model fallback".into());
    }
    if t.get("plan").is_some() {
        let targets: Vec<String> =
            a["targets"].as_array().map(|ts| ts.iter().map(|t| short(&t["device_id"])).collect()).unwrap_or_default();
        let what = if targets.is_empty() { "no device".to_string() } else { targets.join(", ") };
        line("plan", ms(&t["plan"]), what);
    }
    let actions = a["actions"].as_array().cloned().unwrap_or_default();
    if t.get("send").is_some() || !actions.is_empty() {
        let what: Vec<String> = actions
            .iter()
            .map(|x| {
                format!(
                    "{}: {} {} {}",
                    short(&x["device_id"]),
                    short(&x["command"]),
                    x["parameters"],
                    short(&x["status"])
                )
            })
            .collect();
        line("send", ms(&t["send"]), if what.is_empty() { "nothing to send".into() } else { what.join("; ") });
    }
    let mut said = format!("{:?}", short(&a["response"]));
    said.push_str(&format!(" ({})", short(&a["outcome"])));
    if a["continue_conversation"] == true {
        said.push_str(", answer with --session ");
        said.push_str(&short(&a["session_id"]));
    }
    line("respond", ms(&t["respond"]), said);
    line(
        "total",
        ms(&t["total"]),
        format!("in the assistant; {:.3} ms round trip over the bus", round_trip.as_secs_f64() * 1e3),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_a_line() {
        let a = json!({
            "session_id": "s1", "text": "turn on the kitchen light", "area": "kitchen", "satellite": null,
            "outcome": "action", "intent": {"name": "HassTurnOn", "slots": {"name": "Kitchen Light"}, "sentence": "turn on {name}", "by": "template"},
            "targets": [{"device_id": "light_kitchen"}],
            "actions": [{"device_id": "light_kitchen", "command": "turn_on", "parameters": {}, "status": "sent"}],
            "response": "Turned on the light", "continue_conversation": false,
            "timings_ms": {"recognize": 0.25, "plan": 0.01, "send": 0.1, "respond": 0.05, "total": 0.5}
        });
        let r = report(&a, Duration::from_millis(3));
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 6, "{r}");
        assert!(lines[1].starts_with("recognize     0.250 ms  HassTurnOn name=Kitchen Light  [turn on {name}]"), "{r}");
        assert!(lines[3].contains("light_kitchen: turn_on {} sent"), "{r}");
        assert!(lines[4].contains("\"Turned on the light\" (action)"), "{r}");
        assert!(lines[5].contains("3.000 ms round trip"), "{r}");
    }
}
