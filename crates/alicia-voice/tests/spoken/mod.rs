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
}

impl Home {
    /// `listen_transcripts`: the assistant acts on `voice/stt/response` itself (no pipeline).
    pub async fn start(addr: SocketAddr, listen_transcripts: bool) -> Home {
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
        Home { addr, core, stt, tts, assistant, kitchen_light, bedroom_lamp, client }
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
    let home = Home::start(addr, true).await;
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

/// Whisper heard `expected`, give or take one word ("lights" for "light": tiny.en's errors).
#[track_caller]
pub fn heard_as(heard: &str, expected: &str) {
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
    assert!(d[b.len()] <= 1, "Whisper heard {heard:?} in the answer, expected {expected:?}");
}

pub fn session_of(v: &Value) -> Option<&str> {
    v.get("session_id").and_then(Value::as_str)
}
