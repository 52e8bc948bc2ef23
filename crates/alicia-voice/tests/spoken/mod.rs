//! The whole spoken path through real interfaces: satellites (the SDK's satellite client,
//! speaking `docs/voice-protocol.md` over MQTT) stream synthesised speech (espeak-ng) to
//! stt_service (Whisper, Silero VAD), the transcript goes to ai_service (Home Assistant's
//! sentences over the registry's devices), the command goes through the router to simulated
//! lights (alicia-simulate), and tts_service (Piper) speaks the answer back to the satellite,
//! whose audio Whisper transcribes again.

#![allow(dead_code)]

#[path = "../../../alicia-intents/tests/common/mod.rs"]
mod ha;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alicia_envelope::{Destination, Envelope};
use alicia_intents::Engine;
use alicia_simulate::{Kind, SimConfig, SimDevice, SimEvent};
use alicia_voice::satellite::{Conversation, End, Outcome, Satellite, SatelliteConfig, StreamOptions};
use serde_json::{json, Map, Value};

use crate::common::*;

/// Home Assistant's English sentences and Alicia's, compiled once per test binary.
pub fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            Arc::new(
                Engine::with_alicia_sentences(&ha::ha_json("en"), "home-assistant-intents en")
                    .expect("English compiles"),
            )
        })
        .clone()
}

/// A home: the registry and router, the three voice services, a light in the kitchen and a
/// lamp in the bedroom (simulated devices), satellites in the hall and the bedroom.
pub struct Home {
    pub addr: SocketAddr,
    pub core: Core,
    pub stt: alicia_voice::stt::SttHandle,
    pub tts: alicia_voice::tts::TtsHandle,
    pub assistant: alicia_assistant::AssistantHandle,
    pub kitchen_light: SimDevice,
    pub bedroom_lamp: SimDevice,
    pub client: alicia_sdk::ServiceHandle,
    pub pipeline: Option<alicia_voice::pipeline::PipelineHandle>,
}

impl Home {
    /// `with_pipeline`: voice_pipeline hands transcripts to the assistant (as under `alicia
    /// up`); else the assistant acts on `voice/stt/response` itself.
    pub async fn start(addr: SocketAddr, with_pipeline: bool) -> Home {
        let listen_transcripts = !with_pipeline;
        let core = core(addr).await;
        let stt = stt(addr, 1, 8, 30.0).await;
        let tts = tts(addr).await;
        let mut a = alicia_assistant::AssistantConfig::new(config(addr), engine());
        a.listen_transcripts = listen_transcripts;
        let assistant = alicia_assistant::start(a).await.unwrap();
        assistant.wait_online(WAIT).await.unwrap();
        let device = |kind, id: &str, name: &str, area: &str| {
            let mut c = SimConfig::new(kind, id, addr.ip().to_string(), addr.port()).at(area);
            c.name = Some(name.to_string());
            c
        };
        let kitchen_light =
            alicia_simulate::start(device(Kind::Light, "kitchen_light", "Kitchen Light", "kitchen")).await.unwrap();
        let bedroom_lamp =
            alicia_simulate::start(device(Kind::Light, "bedroom_lamp", "Bedroom Lamp", "bedroom")).await.unwrap();
        kitchen_light.wait_registered(WAIT).await.unwrap();
        bedroom_lamp.wait_registered(WAIT).await.unwrap();
        core.provider("speech_to_text").await;
        let client = requester(addr, "tester").await;
        let pipeline = match with_pipeline {
            true => {
                let p = alicia_voice::pipeline::start(alicia_voice::pipeline::PipelineConfig::new(config(addr)))
                    .await
                    .unwrap();
                p.wait_online(WAIT).await.unwrap();
                Some(p)
            }
            false => None,
        };
        Home { addr, core, stt, tts, assistant, kitchen_light, bedroom_lamp, client, pipeline }
    }

    /// A satellite in `location`, registered (and known to the assistant).
    pub async fn satellite(&self, id: &str, location: &str) -> Satellite {
        let cfg = SatelliteConfig::new(config(self.addr), id).at(location);
        let sat = Satellite::connect(cfg, WAIT).await.expect("the satellite connects and registers");
        let id = id.to_string();
        assert!(
            self.assistant.wait_for_home(WAIT, |h| h.device(&id).is_some_and(|d| d.location.is_some())).await,
            "the assistant knows satellite {id}"
        );
        sat
    }

    /// What Whisper hears in a satellite's answer (through stt_service, not published).
    pub async fn transcribe(&self, c: &Conversation) -> String {
        assert!(!c.answer.is_empty(), "an answer was spoken: {c:?}");
        if let Ok(dir) = std::env::var("ALICIA_TEST_DUMP") {
            let path = format!("{dir}/{}.wav", c.session_id.as_deref().unwrap_or("answer"));
            std::fs::write(path, c.answer_wav()).unwrap();
        }
        // Whisper clips a first word that starts at the first sample: a little room around it.
        let pad = vec![0i16; c.answer_rate as usize / 4];
        let padded: Vec<i16> = pad.iter().chain(&c.answer).chain(&pad).copied().collect();
        let wav = alicia_audio::encode_wav(&padded, c.answer_rate, 1);
        let r = ask(
            self.client.bus(),
            Destination::capability("speech_to_text"),
            json!({"audio_data": b64(&wav), "publish": false}),
        )
        .await
        .unwrap();
        words(response(&r)["transcription"].as_str().unwrap())
    }
}

/// Live-microphone streaming: real time, 20 ms chunks, silence after the clip until the
/// server's VAD ends the utterance.
pub fn live(session: &str) -> StreamOptions {
    let mut t = Map::new();
    t.insert("session_id".into(), json!(session));
    t.insert("language".into(), json!("en"));
    StreamOptions { transcribe: t, end: End::Vad(Duration::from_secs(4)), ..StreamOptions::default() }
}

/// Waits while a satellite would still be playing the answer (a person waits for it before
/// speaking again; speaking sooner is a barge-in).
pub async fn listen_to(c: &Conversation) {
    let secs = c.answer.len() as f64 / f64::from(c.answer_rate.max(1));
    tokio::time::sleep(Duration::from_secs_f64(secs + 0.3)).await;
}

/// The next command a simulated device received.
pub async fn command(events: &mut tokio::sync::broadcast::Receiver<SimEvent>) -> Envelope {
    loop {
        match tokio::time::timeout(ANSWER, events.recv()).await.expect("a command in time").unwrap() {
            SimEvent::Command(env) => return *env,
            _ => continue,
        }
    }
}

/// The spoken path, with the assistant listening to transcripts itself: a command reaches
/// the right simulated light through the router with the right parameters and the answer is
/// spoken back (and Whisper hears the expected words in it); without an area the satellite's
/// location is used; an unknown sentence gets a polite spoken "Sorry, I don't know how to …".
pub async fn spoken_commands_reach_devices(addr: SocketAddr) {
    let home = Home::start(addr, false).await;
    let mut answers = Observer::start(addr, &["alicia/voice/ai/response"]).await;
    let mut hall = home.satellite("hall_sat", "hall").await;
    let mut kitchen = home.kitchen_light.events();
    let mut bedroom = home.bedroom_lamp.events();

    // 1. An area named: the kitchen's light, from the hall.
    let c = hall.converse(&espeak("turn on the kitchen light"), &live("hall-1"), ANSWER).await.unwrap();
    assert_eq!(words(c.text().unwrap()), "turn on the kitchen light", "{c:?}");
    assert_eq!(c.outcome, Outcome::Answered, "{c:?}");
    let cmd = command(&mut kitchen).await;
    assert_eq!(cmd.payload.data["command"], "turn_on", "{:?}", cmd.payload.data);
    assert_eq!(cmd.payload.data["parameters"], json!({}), "{:?}", cmd.payload.data);
    assert_eq!(cmd.routing.route, vec!["router".to_string()], "through the router");
    assert_eq!(cmd.payload.metadata.extra["session_id"], "hall-1");
    assert_eq!(cmd.payload.metadata.extra["device_id"], "hall_sat");
    home.kitchen_light.wait_state(|s| s["power"] == "on", WAIT).await.unwrap();
    let a = Envelope::parse(&answers.next_on("alicia/voice/ai/response").await.payload).unwrap();
    assert_eq!(a.payload.data["response"], "Turned on the light", "{:?}", a.payload.data);
    heard_as(&home.transcribe(&c).await, "turned on the light");
    // The stages came in order after the end of the clip.
    let order = ["voice-stopped", "transcript", "audio-start", "first_audio", "audio-stop"];
    let at: Vec<f64> = order.iter().map(|s| c.stage(s).unwrap_or_else(|| panic!("{s}: {c:?}"))).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{:?}", c.stages);

    // 2. No area named: the satellite's (the bedroom's lamp, not the kitchen's light).
    let mut bed = home.satellite("bedroom_sat", "bedroom").await;
    let c = bed.converse(&espeak("turn on the light"), &live("bed-1"), ANSWER).await.unwrap();
    assert_eq!(words(c.text().unwrap()), "turn on the light", "{c:?}");
    let cmd = command(&mut bedroom).await;
    assert_eq!(cmd.payload.data["command"], "turn_on");
    assert_eq!(cmd.payload.metadata.extra["location"], "bedroom");
    home.bedroom_lamp.wait_state(|s| s["power"] == "on", WAIT).await.unwrap();
    let a = Envelope::parse(&answers.next_on("alicia/voice/ai/response").await.payload).unwrap();
    let said = a.payload.data["response"].as_str().unwrap().to_string();
    assert!(said.starts_with("Turned on the light"), "{:?}", a.payload.data);
    assert_eq!(a.payload.data["area"], "bedroom");
    heard_as(&home.transcribe(&c).await, &words(&said));
    assert_eq!(home.kitchen_light.commands().len(), 1, "the kitchen light had one command only");

    // 3. A sentence no template matches: a polite answer, spoken, never silence.
    let c = hall.converse(&espeak("make me a sandwich"), &live("hall-2"), ANSWER).await.unwrap();
    assert_eq!(words(c.text().unwrap()), "make me a sandwich", "{c:?}");
    assert_eq!(c.outcome, Outcome::Answered, "{c:?}");
    let a = Envelope::parse(&answers.next_on("alicia/voice/ai/response").await.payload).unwrap();
    assert_eq!(a.payload.data["response"], "Sorry, I don't know how to make you a sandwich");
    assert_eq!(a.payload.data["outcome"], "no_match");
    heard_as(&home.transcribe(&c).await, "sorry i dont know how to make you a sandwich");
    assert_eq!(
        home.kitchen_light.commands().len() + home.bedroom_lamp.commands().len(),
        2,
        "nothing else was commanded"
    );
    hall.close().await;
    bed.close().await;
}

/// Whisper heard `expected`, give or take one word and one more in four: tiny.en's errors on
/// Piper's voice ("lights" for "light"; "Turned on the light." was heard "perm down the light"
/// in a full run, two words of four, and right alone). This checks that the answer spoken is
/// that sentence; how well answers are heard is the benchmarks' word error rate.
#[track_caller]
pub fn heard_as(heard: &str, expected: &str) {
    let allowed = 1 + expected.split(' ').count() / 4;
    assert!(
        word_edits(heard, expected) <= allowed,
        "Whisper heard {heard:?} in the answer, expected {expected:?} (within {allowed} words)"
    );
}

/// Lowercase words with small numbers as digits and no "percent" (Whisper writes "5" and
/// "40%" as often as "five" and "40 percent").
fn as_digits(s: &str) -> String {
    const N: [(&str, &str); 14] = [
        ("one", "1"),
        ("two", "2"),
        ("three", "3"),
        ("four", "4"),
        ("five", "5"),
        ("six", "6"),
        ("seven", "7"),
        ("eight", "8"),
        ("nine", "9"),
        ("ten", "10"),
        ("twenty", "20"),
        ("thirty", "30"),
        ("forty", "40"),
        ("fifty", "50"),
    ];
    words(s)
        .split(' ')
        .filter(|w| *w != "percent")
        .map(|w| N.iter().find(|(n, _)| *n == w).map_or(w, |(_, d)| *d))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Words inserted, deleted or replaced to get from `heard` to `expected`.
pub fn word_edits(heard: &str, expected: &str) -> usize {
    let (a, b): (Vec<&str>, Vec<&str>) = (heard.split(' ').collect(), expected.split(' ').collect());
    let mut d: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut prev = d[0];
        d[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let cur = d[j + 1];
            d[j + 1] = (prev + usize::from(x != y)).min(d[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    d[b.len()]
}

pub fn session_of(v: &Value) -> Option<&str> {
    v.get("session_id").and_then(Value::as_str)
}

/// Events on `alicia/voice/events`.
pub struct Events(Observer);

impl Events {
    pub async fn start(addr: SocketAddr) -> Events {
        Events(Observer::start(addr, &["alicia/voice/events"]).await)
    }

    /// The next event (its `data`) satisfying `pred`, skipping the others.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let r = tokio::time::timeout(ANSWER, async {
            loop {
                let p = self.0.next().await;
                let env = Envelope::parse(&p.payload).expect("voice events are envelopes");
                if pred(&env.payload.data) {
                    return env.payload.data;
                }
            }
        })
        .await;
        r.unwrap_or_else(|_| panic!("no {what} event in time"))
    }

    /// The `finished` record of `session`.
    pub async fn finished(&mut self, session: &str) -> Value {
        self.until(&format!("finished of {session}"), |d| d["event"] == "finished" && d["session_id"] == session).await
    }
}

/// The voice pipeline owns each utterance: a session with the satellite's id, its events in
/// order (started, transcript, the assistant's intent and action, finished), and a record with
/// the transcript, intent, actions, response and the stage times after the end of speech.
pub async fn the_pipeline_keeps_sessions(addr: SocketAddr) {
    let home = Home::start(addr, true).await;
    let mut events = Events::start(addr).await;
    let mut hall = home.satellite("hall_sat", "hall").await;
    let mut kitchen = home.kitchen_light.events();
    let c = hall.converse(&espeak("turn on the kitchen light"), &live("p-1"), ANSWER).await.unwrap();
    assert_eq!(c.outcome, Outcome::Answered, "{c:?}");
    let cmd = command(&mut kitchen).await;
    assert_eq!(
        (cmd.payload.data["command"].as_str(), cmd.routing.route.as_slice()),
        (Some("turn_on"), &["router".to_string()][..])
    );
    heard_as(&home.transcribe(&c).await, "turned on the light");
    let is = |kind: &'static str| move |d: &Value| d["event"] == kind && d["session_id"] == "p-1";
    let started = events.until("started", is("started")).await;
    assert_eq!(started["satellite"], "hall_sat");
    let t = events.until("transcript", is("transcript")).await;
    assert_eq!(words(t["text"].as_str().unwrap()), "turn on the kitchen light");
    let intent = events.until("intent", is("intent")).await;
    assert_eq!(intent["intent"]["name"], "HassTurnOn", "{intent}");
    let action = events.until("action", is("action")).await;
    assert_eq!((action["device_id"].as_str(), action["status"].as_str()), (Some("kitchen_light"), Some("sent")));
    let r = events.finished("p-1").await;
    assert_eq!((r["outcome"].as_str(), r["intent"].as_str()), (Some("action"), Some("HassTurnOn")), "{r:#}");
    assert_eq!(r["satellite"], "hall_sat");
    assert_eq!(words(r["transcript"].as_str().unwrap()), "turn on the kitchen light");
    assert_eq!(r["response"], "Turned on the light");
    assert_eq!(r["actions"][0]["device_id"], "kitchen_light");
    // Every stage, in the order they happen (times are the benchmark's business).
    let t = &r["timings_ms"];
    let stages = ["transcript", "intent", "command_sent", "answered", "first_audio", "done"];
    let at: Vec<f64> = stages.iter().map(|s| t[*s].as_f64().unwrap_or_else(|| panic!("{s}: {r:#}"))).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{t}");
    assert!(at[0] >= 0.0, "{t}");
    assert!(
        r["stt_timings_ms"]["inference"].as_f64().is_some() && r["assistant_timings_ms"]["total"].as_f64().is_some(),
        "{r:#}"
    );

    // Unknown: a polite answer, spoken, and the session says no_match.
    listen_to(&c).await;
    let c = hall.converse(&espeak("make me a sandwich"), &live("p-2"), ANSWER).await.unwrap();
    heard_as(&home.transcribe(&c).await, "sorry i dont know how to make you a sandwich");
    let r = events.finished("p-2").await;
    assert_eq!(
        (r["outcome"].as_str(), r["response"].as_str()),
        (Some("no_match"), Some("Sorry, I don't know how to make you a sandwich"))
    );
    assert!(r["timings_ms"]["done"].as_f64().is_some(), "{r:#}");
    assert_eq!(home.kitchen_light.commands().len(), 1);
    hall.close().await;
}

/// Who says an utterance: espeak-ng (a robotic voice, hard for tiny.en) or Piper (asked of
/// tts_service over the bus, as any client would).
#[derive(Debug, Clone, Copy)]
pub enum Voice {
    Espeak,
    Piper,
}

impl Home {
    /// `text` said by `voice`, as a WAV file.
    pub async fn say(&self, voice: Voice, text: &str) -> Vec<u8> {
        match voice {
            Voice::Espeak => espeak(text),
            Voice::Piper => {
                let r = ask(self.client.bus(), Destination::capability("text_to_speech"), json!({"text": text}))
                    .await
                    .unwrap();
                let b64 = response(&r)["audio_data"].as_str().expect("WAV bytes").to_string();
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap()
            }
        }
    }
}

/// Every intent, spoken (by espeak-ng and by Piper in turn) on a kitchen satellite through
/// the whole chain under voice_pipeline: the right simulated device gets the right command
/// with parameters within its registered capability, and the spoken answer is Home
/// Assistant's response, as Whisper hears it again. Questions and timers act on no device.
pub async fn every_intent_is_spoken(addr: SocketAddr) {
    let home = Home::start(addr, true).await;
    let mut events = Events::start(addr).await;
    let sim = |kind, id: &str, name: &str| {
        let mut c = SimConfig::new(kind, id, addr.ip().to_string(), addr.port()).at("kitchen");
        c.name = Some(name.into());
        c.telemetry_interval = Duration::from_millis(500);
        c
    };
    let speaker = alicia_simulate::start(sim(Kind::Speaker, "kitchen_speaker", "Kitchen Speaker")).await.unwrap();
    let thermo = alicia_simulate::start(sim(Kind::Sensor, "kitchen_thermo", "Kitchen Thermometer")).await.unwrap();
    speaker.wait_registered(WAIT).await.unwrap();
    thermo.wait_registered(WAIT).await.unwrap();
    let a = &home.assistant;
    assert!(
        a.wait_for_home(WAIT, |h| h.device("kitchen_speaker").is_some() && h.device("kitchen_thermo").is_some()).await
    );
    let deadline = std::time::Instant::now() + WAIT;
    while a.reading("kitchen_thermo", "temperature").is_none() {
        assert!(std::time::Instant::now() < deadline, "the assistant never saw a temperature");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sat = home.satellite("kitchen_sat", "kitchen").await;
    let devices: [(&str, &SimDevice); 3] =
        [("kitchen_light", &home.kitchen_light), ("bedroom_lamp", &home.bedroom_lamp), ("kitchen_speaker", &speaker)];
    let mut seen: Vec<usize> = devices.iter().map(|(_, d)| d.commands().len()).collect();
    let mut misheard: Vec<String> = Vec::new();
    let mut answers: Vec<(bool, String, String)> = Vec::new();

    // (utterance, device and command (None: no device acts), parameters it must carry, the
    // response, or its start when it has a changing value)
    type Case = (&'static str, Option<(&'static str, &'static str)>, Value, &'static str);
    let cases: Vec<Case> = vec![
        ("turn on the kitchen light", Some(("kitchen_light", "turn_on")), json!({}), "Turned on the light"),
        (
            "set the kitchen light brightness to 40%",
            Some(("kitchen_light", "set_brightness")),
            json!({"brightness": 40}),
            "Brightness set",
        ),
        ("turn off the bedroom lamp", Some(("bedroom_lamp", "turn_off")), json!({}), "Turned off the light"),
        ("set the volume to 30", Some(("kitchen_speaker", "set_volume")), json!({"volume": 30}), "Volume set"),
        // 10 % of the speaker's 0..100 in steps of 5, down.
        ("turn the volume down", Some(("kitchen_speaker", "volume_step")), json!({"steps": -2}), "Volume set"),
        ("pause the music", Some(("kitchen_speaker", "pause")), json!({}), "Paused"),
        ("resume the music", Some(("kitchen_speaker", "resume")), json!({}), "Resumed"),
        ("next song", Some(("kitchen_speaker", "next")), json!({}), "Playing next"),
        ("previous track", Some(("kitchen_speaker", "previous")), json!({}), "Playing previous"),
        (
            "announce dinner is ready in the kitchen",
            Some(("kitchen_speaker", "announce")),
            json!({"text": "dinner is ready"}),
            "Announcing in the Kitchen",
        ),
        ("what is the temperature in the kitchen", None, json!({}), ""),
        ("set a timer for 5 minutes", None, json!({}), "Timer set for 5 minutes"),
        ("cancel the timer", None, json!({}), "Timer cancelled"),
    ];
    let total = cases.len();
    let mut n = 0;
    'cases: for (i, (said, target, params, expected)) in cases.into_iter().enumerate() {
        // tiny.en mishears short commands now and then, espeak-ng's most ("sent the volume to
        // 30"; its word error rate is about 10 %), and Piper samples noise, so its speech
        // differs each time ("kitchen white" once, "kitchen light" the next): what was not
        // heard right is not the assistant's to get right, and is said again, as a person
        // would, by the other voice and then by Piper again.
        let first = if i % 2 == 0 { Voice::Piper } else { Voice::Espeak };
        let other = if i % 2 == 0 { Voice::Espeak } else { Voice::Piper };
        let mut heard_as_what = Vec::new();
        let mut done = None;
        for voice in [first, other, Voice::Piper] {
            n += 1;
            let session = format!("i-{n}");
            let c = sat.converse(&home.say(voice, said).await, &live(&session), ANSWER).await.unwrap();
            assert_eq!(c.outcome, Outcome::Answered, "{said:?} ({voice:?}): {c:?}");
            let r = events.finished(&session).await;
            let heard = words(r["transcript"].as_str().unwrap_or_default());
            if as_digits(&heard) == as_digits(said) {
                done = Some((voice, c, r));
                break;
            }
            heard_as_what.push(format!("{voice:?}: {heard:?}"));
            seen = devices.iter().map(|(_, d)| d.commands().len()).collect();
            listen_to(&c).await;
        }
        let Some((voice, c, r)) = done else {
            misheard.push(format!("{said:?} as {heard_as_what:?}"));
            assert!(misheard.len() <= 2, "more than two commands never heard right: {misheard:?}");
            continue 'cases;
        };
        let response = r["response"].as_str().unwrap_or_else(|| panic!("{said:?} ({voice:?}): {r:#}")).to_string();
        if expected.is_empty() {
            // The thermometer's last reading, said as Home Assistant says it.
            let t = a.reading("kitchen_thermo", "temperature").unwrap();
            assert!(response.ends_with(" degrees"), "{said:?} ({voice:?}): {r:#} (reading {t:?})");
        } else {
            assert_eq!(response, expected, "{said:?} ({voice:?}), heard as {:?}: {r:#}", r["transcript"]);
        }
        match target {
            Some((id, command)) => {
                let (k, (_, dev)) = devices.iter().enumerate().find(|(_, (d, _))| *d == id).unwrap();
                let deadline = std::time::Instant::now() + WAIT;
                while dev.commands().len() == seen[k] {
                    assert!(std::time::Instant::now() < deadline, "{said:?} ({voice:?}): {id} got no command: {r:#}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let cmd = dev.commands().last().cloned().unwrap();
                let d = &cmd.payload.data;
                assert_eq!((d["command"].as_str(), &d["parameters"]), (Some(command), &params), "{said:?} ({voice:?})");
                assert_eq!(cmd.routing.route, vec!["router".to_string()], "through the router");
            }
            None => assert_eq!(r["actions"].as_array().map_or(0, Vec::len), 0, "{said:?}: {r:#}"),
        }
        // No other device got anything.
        let now: Vec<usize> = devices.iter().map(|(_, d)| d.commands().len()).collect();
        let changed = now.iter().zip(&seen).filter(|(a, b)| a != b).count();
        assert!(changed <= usize::from(target.is_some()), "{said:?}: commands {seen:?} -> {now:?}");
        seen = now;
        // The answer was spoken. Whisper hears most short answers right; "Brightness set" it
        // once heard as "right in the set" (each answer's words are checked above; how well
        // speech is heard is the benchmark's word error rate).
        let heard = home.transcribe(&c).await;
        answers.push((word_edits(&heard, &words(&response)) <= 1, heard, response));
        listen_to(&c).await;
    }
    assert!(total - misheard.len() >= 11, "{misheard:?}");
    let wrong: Vec<_> = answers.iter().filter(|(ok, ..)| !ok).collect();
    assert!(wrong.len() * 3 <= answers.len(), "answers not heard as said: {wrong:?}");
    if !misheard.is_empty() {
        eprintln!("never heard right, not checked: {misheard:?}");
    }
    sat.close().await;
}

/// A question asked back is answered in the next utterance (a new session on the same
/// satellite): "turn on the lamp" from the hall, where two lamps elsewhere fit, asks "Which
/// lamp: bedroom or kitchen?" aloud, and "the kitchen one" turns on the kitchen's.
pub async fn a_question_is_answered_in_the_next_utterance(addr: SocketAddr) {
    let home = Home::start(addr, true).await;
    let mut events = Events::start(addr).await;
    let mut c = SimConfig::new(Kind::Light, "kitchen_lamp", addr.ip().to_string(), addr.port()).at("kitchen");
    c.name = Some("Kitchen Lamp".into());
    let kitchen_lamp = alicia_simulate::start(c).await.unwrap();
    kitchen_lamp.wait_registered(WAIT).await.unwrap();
    assert!(home.assistant.wait_for_home(WAIT, |h| h.device("kitchen_lamp").is_some()).await);
    let mut hall = home.satellite("hall_sat", "hall").await;
    let mut lamp = kitchen_lamp.events();

    // The question is asked aloud. tiny.en hears Piper's "lamp" as "land", "slam" or
    // "witchland" in some renditions (and asking again would not help: tts_service answers a
    // repeated text from its cache), hence heard_as's allowance.
    let q = hall.converse(&espeak("turn on the lamp"), &live("q-1"), ANSWER).await.unwrap();
    assert_eq!(q.outcome, Outcome::Answered, "{q:?}");
    let r = events.finished("q-1").await;
    assert_eq!(r["outcome"], "clarification", "{r:#}");
    let asked = r["response"].as_str().unwrap_or_else(|| panic!("{r:#}")).to_string();
    assert!(asked == "Which lamp: bedroom or kitchen?" || asked == "Which lamp: kitchen or bedroom?", "{r:#}");
    heard_as(&home.transcribe(&q).await, &words(&asked));
    listen_to(&q).await;

    // The answer, by Piper; if tiny.en mishears it, said again another way (espeak-ng's "the
    // kitchen one" it hears as "Vakit and one", Piper's "The kitchen one." as "the catching
    // one"; the same words by Piper again would be the same audio, from tts_service's cache).
    // A misheard answer is no answer: it is understood as something else, and the question is
    // asked again.
    let attempts = [
        (Voice::Piper, "The one in the kitchen."),
        (Voice::Espeak, "the one in the kitchen"),
        (Voice::Piper, "In the kitchen."),
    ];
    let mut tries = Vec::new();
    let (a, r) = 'answered: {
        for (n, (voice, said)) in attempts.into_iter().enumerate() {
            let session = format!("q-2-{n}");
            let a = hall.converse(&home.say(voice, said).await, &live(&session), ANSWER).await.unwrap();
            assert_eq!(a.outcome, Outcome::Answered, "{a:?}");
            let r = events.finished(&session).await;
            if words(r["transcript"].as_str().unwrap_or_default()) == words(said) {
                break 'answered (a, r);
            }
            tries.push(r["transcript"].clone());
            listen_to(&a).await;
            let q = hall.converse(&espeak("turn on the lamp"), &live(&format!("q-3-{n}")), ANSWER).await.unwrap();
            listen_to(&q).await;
        }
        panic!("the answer was never heard right: {tries:?}");
    };
    assert_eq!((r["outcome"].as_str(), r["intent"].as_str()), (Some("action"), Some("HassTurnOn")), "{r:#}");
    let cmd = command(&mut lamp).await;
    assert_eq!(cmd.payload.data["command"], "turn_on", "{:?}", cmd.payload.data);
    kitchen_lamp.wait_state(|s| s["power"] == "on", WAIT).await.unwrap();
    heard_as(&home.transcribe(&a).await, &words(r["response"].as_str().unwrap()));
    assert!(home.bedroom_lamp.commands().is_empty() && home.kitchen_light.commands().is_empty());
    hall.close().await;
}

/// A satellite with no wake word of its own streams everything after `detect`: the server
/// hears Piper's "Alexa", tells the satellite (`detection`, with the new utterance's session),
/// and the command said after it turns the kitchen light on and is answered. The command
/// alone, with no wake word before it, is `not-detected` and acts on nothing.
pub async fn a_wake_word_heard_on_the_server_starts_the_command(addr: SocketAddr) {
    let home = Home::start(addr, true).await;
    let mut events = Events::start(addr).await;
    let mut stt_events = Events(Observer::start(addr, &["alicia/voice/stt/events"]).await);
    let mut hall = home.satellite("hall_sat", "hall").await;
    let pcm = |wav: &[u8]| alicia_audio::wav_to_16k_mono(wav, None).unwrap();
    let (alexa, command) = (pcm(&home.say(Voice::Piper, "Alexa.").await), pcm(&espeak("turn on the kitchen light")));
    let second = alicia_audio::silence(16_000, 1.0);
    let clip = |parts: &[&[f32]]| -> Vec<u8> {
        let samples: Vec<f32> = parts.concat();
        alicia_audio::encode_wav(&alicia_audio::f32_to_i16(&samples), 16_000, 1)
    };
    let wake_opts = |session: &str| StreamOptions { wake: Some(Vec::new()), ..live(session) };

    let c = hall.converse(&clip(&[&second, &alexa, &second, &command]), &wake_opts("w-1"), ANSWER).await.unwrap();
    assert_eq!((c.outcome.clone(), c.wake.as_deref()), (Outcome::Answered, Some("alexa")), "{c:?}");
    assert_eq!(c.session_id.as_deref(), Some("w-1-1"), "the utterance after the first wake word: {c:?}");
    let ev = stt_events.until("wake_detected", |d| d["event"] == "wake_detected").await;
    assert_eq!((ev["satellite"].as_str(), ev["name"].as_str()), (Some("hall_sat"), Some("alexa")), "{ev}");
    let r = events.finished("w-1-1").await;
    assert_eq!(words(r["transcript"].as_str().unwrap_or_default()), "turn on the kitchen light", "{r:#}");
    home.kitchen_light.wait_state(|s| s["power"] == "on", WAIT).await.unwrap();
    heard_as(&home.transcribe(&c).await, "turned on the light");
    listen_to(&c).await;

    let c = hall.converse(&clip(&[&second, &command]), &wake_opts("w-2"), ANSWER).await.unwrap();
    assert_eq!((c.outcome.clone(), c.wake.as_deref()), (Outcome::NotDetected, None), "{c:?}");
    assert!(c.transcript.is_none() && c.answer.is_empty(), "{c:?}");
    assert_eq!(home.kitchen_light.commands().len(), 1, "the command without a wake word acted on nothing");
    hall.close().await;
}

/// Two satellites hear one utterance: the one that heard it louder answers, whichever
/// reported first; the other is told `arbitrated` and hears no answer.
pub async fn two_satellites_are_arbitrated(addr: SocketAddr) {
    let home = Home::start(addr, true).await;
    let mut events = Events::start(addr).await;
    let mut far = home.satellite("hall_sat", "hall").await;
    let mut near = home.satellite("kitchen_sat", "kitchen").await;
    let wav = espeak("turn on the kitchen light");
    let far_opts = StreamOptions { gain: 0.2, ..live("far-1") };
    let near_opts = live("near-1");
    let (a, b) = tokio::join!(far.converse(&wav, &far_opts, ANSWER), async {
        // The far satellite reports first; the near one 80 ms later, within the window.
        tokio::time::sleep(Duration::from_millis(80)).await;
        near.converse(&wav, &near_opts, ANSWER).await
    });
    let (far_c, near_c) = (a.unwrap(), b.unwrap());
    assert_eq!(far_c.outcome, Outcome::Arbitrated { winner: "kitchen_sat".into() }, "{far_c:?}");
    assert!(far_c.answer.is_empty(), "the far satellite hears no answer");
    assert_eq!(near_c.outcome, Outcome::Answered, "{near_c:?}");
    heard_as(&home.transcribe(&near_c).await, "turned on the light");
    let ev = events.until("arbitrated", |d| d["event"] == "arbitrated").await;
    assert_eq!((ev["session_id"].as_str(), ev["winner"].as_str()), (Some("far-1"), Some("kitchen_sat")), "{ev}");
    let r = events.finished("near-1").await;
    let heard = r["arbitration"]["heard"].as_array().unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(heard.len(), 2, "{r:#}");
    assert_eq!(heard[0]["satellite"], "kitchen_sat");
    assert!(heard[0]["energy_dbfs"].as_f64().unwrap() > heard[1]["energy_dbfs"].as_f64().unwrap() + 6.0, "{r:#}");
    // One command, once.
    home.kitchen_light.wait_state(|s| s["power"] == "on", WAIT).await.unwrap();
    assert_eq!(home.kitchen_light.commands().len(), 1);

    // The other way round: the near satellite reports first and is transcribed first; it
    // goes on without waiting for the quieter one, which then loses.
    listen_to(&near_c).await;
    let wav = espeak("turn off the kitchen light");
    let (near_opts, far_opts) = (live("near-2"), StreamOptions { gain: 0.2, ..live("far-2") });
    let (a, b) = tokio::join!(near.converse(&wav, &near_opts, ANSWER), async {
        tokio::time::sleep(Duration::from_millis(80)).await;
        far.converse(&wav, &far_opts, ANSWER).await
    });
    let (near_c, far_c) = (a.unwrap(), b.unwrap());
    assert_eq!(near_c.outcome, Outcome::Answered, "{near_c:?}");
    assert_eq!(far_c.outcome, Outcome::Arbitrated { winner: "kitchen_sat".into() }, "{far_c:?}");
    let r = events.finished("near-2").await;
    let heard = r["arbitration"]["heard"].as_array().unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!((heard.len(), heard[0]["satellite"].as_str()), (2, Some("kitchen_sat")), "{r:#}");
    home.kitchen_light.wait_state(|s| s["power"] == "off", WAIT).await.unwrap();
    assert_eq!(home.kitchen_light.commands().len(), 2);
    far.close().await;
    near.close().await;
}

/// Barge-in: speech on a satellite while its answer still plays cancels the answer
/// (`audio-cancel` to the satellite, a `cancelled` event); "stop" then does nothing more.
pub async fn barge_in_cancels_the_answer(addr: SocketAddr) {
    let home = Home::start(addr, true).await;
    let mut events = Events::start(addr).await;
    let mut responses = Observer::start(addr, &["alicia/voice/ai/response"]).await;
    let mut hall = home.satellite("hall_sat", "hall").await;
    // A long answer (about 3 s of speech): still playing when the next utterance starts.
    let first = hall.converse(&espeak("make me a sandwich"), &live("b-1"), ANSWER).await.unwrap();
    assert_eq!(first.outcome, Outcome::Answered, "{first:?}");
    responses.next_on("alicia/voice/ai/response").await;
    let second = hall.converse(&espeak("stop"), &live("b-2"), ANSWER).await.unwrap();
    assert_eq!(second.outcome, Outcome::Cancelled, "{second:?}");
    let ev = events.until("cancelled", |d| d["event"] == "cancelled").await;
    assert_eq!((ev["session_id"].as_str(), ev["reason"].as_str()), (Some("b-1"), Some("barge_in")), "{ev}");
    let r = events.finished("b-2").await;
    assert_eq!((r["outcome"].as_str(), r["barge_in"].as_bool()), (Some("stopped"), Some(true)), "{r:#}");
    assert_eq!(words(r["transcript"].as_str().unwrap()), "stop");
    // "Stop" went to nobody: no answer.
    responses.quiet(Duration::from_millis(500)).await;
    hall.close().await;
}

/// tts_service stops a speech it is streaming when asked on `voice/tts/cancel`: the stream
/// ends with `audio-stop` `cancelled: true`, and the event says `cancelled`.
pub async fn speech_can_be_cancelled(addr: SocketAddr) {
    let core = core(addr).await;
    let _tts = tts(addr).await;
    core.provider("text_to_speech").await;
    let mut sat = Satellite::connect(SatelliteConfig::new(config(addr), "den_sat").at("den"), WAIT).await.unwrap();
    let mut tts_events = Observer::start(addr, &["alicia/voice/tts/events"]).await;
    let client = requester(addr, "tester").await;
    let text = "The first sentence is short. The second one is a little longer than that. \
                The third goes on about the weather. The fourth talks about the garden. \
                The fifth sentence is about the kitchen. The sixth is the last one.";
    let env = Envelope::request(
        "tester",
        Destination::service("tts_service"),
        json!({"text": text, "satellite": "den_sat", "session_id": "c-1"}),
    )
    .with_ttl(30);
    client.bus().send(&env).await.unwrap();
    let start = sat.next(ANSWER).await.expect("speech starts");
    assert_eq!(start.event.kind, "audio-start");
    let cancel = Envelope::event(
        "voice_pipeline",
        Destination::topic("alicia/voice/tts/cancel"),
        json!({"satellite": "den_sat", "session_id": "c-1", "reason": "test"}),
    );
    client.bus().send(&cancel).await.unwrap();
    let mut chunks = 0;
    let stop = loop {
        let h = sat.next(ANSWER).await.expect("the speech ends");
        match h.event.kind.as_str() {
            "audio-chunk" => chunks += 1,
            "audio-stop" => break h.event,
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(stop.data.get("cancelled"), Some(&json!(true)), "{stop:?} after {chunks} chunks");
    let ev = loop {
        let e = Envelope::parse(&tts_events.next().await.payload).unwrap();
        if e.payload.data["event"] != "speaking" {
            break e.payload.data;
        }
    };
    assert_eq!((ev["event"].as_str(), ev["session_id"].as_str()), (Some("cancelled"), Some("c-1")), "{ev}");
    // Less than the whole text was sent (about 10 s of speech at 100 ms a chunk).
    let secs = ev["summary"]["duration_seconds"].as_f64().unwrap();
    assert!(secs < 8.0, "{ev}");
    sat.close().await;
}
