//! Scenarios run against every broker (Alicia's, Mosquitto).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alicia_envelope::Destination;
use alicia_voice::sat::Event;
use serde_json::json;

use crate::common::*;

/// The design document's STT request, verbatim but for a real WAV, through the router to
/// `capability:speech_to_text`: the response comes back with the transcription and the
/// request's metadata, and the same response is on `alicia/voice/stt/response`.
pub async fn design_request_round_trip(addr: SocketAddr) {
    let core = core(addr).await;
    let _stt = stt(addr, 1, 4, 30.0).await;
    core.provider("speech_to_text").await;
    let mut published = Observer::start(addr, &["alicia/voice/stt/response"]).await;
    let client = requester(addr, "voice_input").await;
    let request = design_request(&espeak("turn on the kitchen light"));
    let answer = client.request_envelope(request, ANSWER).await.unwrap();
    let d = response(&answer);
    assert_eq!(words(d["transcription"].as_str().unwrap()), "turn on the kitchen light", "{d}");
    let confidence = d["confidence"].as_f64().unwrap();
    assert!(confidence > 0.0 && confidence <= 1.0, "{d}");
    assert_eq!(d["language"], "en");
    assert_eq!(answer.correlation_id.as_ref().unwrap().as_str(), "voice-stt-001");
    assert_eq!(answer.destination, Destination::service("voice_input"));
    let meta = &answer.payload.metadata.extra;
    assert_eq!(
        (meta["session_id"].as_str(), meta["device_id"].as_str()),
        (Some("session-123"), Some("microphone-001"))
    );
    assert_eq!(answer.routing.route, Vec::<String>::new(), "the answer goes straight back");
    // The document's threshold (0.8) was given: the answer says whether it passed.
    assert_eq!(d["accepted"], json!(confidence >= 0.8), "{d}");
    if confidence >= 0.8 {
        let p = published.next_on("alicia/voice/stt/response").await;
        let copy = alicia_envelope::Envelope::parse(&p.payload).unwrap();
        assert_eq!(copy.payload.data["transcription"], d["transcription"]);
        assert_eq!(copy.payload.metadata.extra["session_id"], "session-123");
    }
}

/// Text to speech and back: the TTS answer's WAV, sent to STT, gives the text again.
pub async fn tts_to_stt_round_trip(addr: SocketAddr) {
    let core = core(addr).await;
    let (_stt, _tts) = (stt(addr, 1, 4, 30.0).await, tts(addr).await);
    core.provider("speech_to_text").await;
    core.provider("text_to_speech").await;
    let mut events = Observer::start(addr, &["alicia/voice/tts/events"]).await;
    let client = requester(addr, "tester").await;
    let text = "Please turn off the lights in the living room.";
    let said = ask(&client, Destination::capability("text_to_speech"), json!({"text": text})).await.unwrap();
    let d = response(&said);
    // What was said is an event (without the audio).
    let ev = alicia_envelope::Envelope::parse(&events.next_on("alicia/voice/tts/events").await.payload).unwrap();
    let e = &ev.payload.data;
    assert_eq!(
        (e["event"].as_str(), e["text"].as_str(), e["requester"].as_str()),
        (Some("synthesized"), Some(text), Some("tester")),
        "{e}"
    );
    assert_eq!(e["duration_seconds"], d["duration_seconds"]);
    assert!(e.get("audio_data").is_none());
    assert_eq!((d["audio_format"].as_str(), d["channels"].as_u64()), (Some("wav"), Some(1)), "{d}");
    let wav =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, d["audio_data"].as_str().unwrap()).unwrap();
    let info = alicia_audio::wav_info(&wav).unwrap();
    assert_eq!(info.sample_rate as u64, d["sample_rate"].as_u64().unwrap());
    assert!(info.seconds() > 1.0, "{info:?}");
    let t = &d["timings_ms"];
    let (queue, inference) = (t["queue"].as_f64().unwrap(), t["inference"].as_f64().unwrap());
    assert!(inference > 0.0 && queue >= 0.0 && queue + inference <= t["total"].as_f64().unwrap(), "{d}");
    assert_eq!(e["timings_ms"], d["timings_ms"], "the event carries the same timings");
    let heard = ask(
        &client,
        Destination::capability("speech_to_text"),
        json!({"audio_data": b64(&wav), "audio_format": "wav", "publish": false}),
    )
    .await
    .unwrap();
    assert_eq!(words(response(&heard)["transcription"].as_str().unwrap()), words(text));
    // Asked again: from the cache.
    let again = ask(&client, Destination::capability("text_to_speech"), json!({"text": text})).await.unwrap();
    assert_eq!(response(&again)["cached"], true);
}

/// Two instances of stt_service share requests; each instance handles some.
pub async fn two_instances_share_requests(addr: SocketAddr) {
    let core = core(addr).await;
    let (a, b) = (stt(addr, 1, 8, 30.0).await, stt(addr, 1, 8, 30.0).await);
    core.provider("speech_to_text").await;
    let client = requester(addr, "tester").await;
    let wav = espeak("good morning");
    let mut asks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (bus, data) = (client.bus().clone(), json!({"audio_data": b64(&wav), "publish": false}));
        asks.spawn(async move { ask(&bus, Destination::capability("speech_to_text"), data).await });
    }
    for r in asks.join_all().await {
        assert_eq!(words(response(&r.unwrap())["transcription"].as_str().unwrap()), "good morning");
    }
    let (na, nb) = (a.counters().transcribed.load(Ordering::Relaxed), b.counters().transcribed.load(Ordering::Relaxed));
    assert_eq!(na + nb, 6);
    assert!(na > 0 && nb > 0, "both instances took work: {na} and {nb}");
}

/// A satellite streams an utterance in 20 ms chunks; the transcript comes to its `snd` topic
/// and, as the design document's response addressed to the satellite, on
/// `alicia/voice/stt/response`. Two STT instances run: exactly one answers each utterance.
pub async fn satellites_stream(addr: SocketAddr) {
    let (_a, _b) = (stt(addr, 1, 8, 30.0).await, stt(addr, 1, 8, 30.0).await);
    // Both instances have seen each other's presence.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut published = Observer::start(addr, &["alicia/voice/stt/response"]).await;
    let wav = espeak("what time is it");
    for id in ["kitchen_sat", "hall_sat", "bedroom_sat"] {
        let mut sat = Satellite::start(addr, id).await;
        sat.speak(&wav, json!({"language": "en", "session_id": format!("{id}-1")}), true).await;
        let t = sat.next_of("transcript").await;
        assert_eq!(words(t.str("text").unwrap()), "what time is it", "{t:?}");
        assert_eq!(t.str("session_id"), Some(format!("{id}-1").as_str()));
        let p = published.next_on("alicia/voice/stt/response").await;
        let env = alicia_envelope::Envelope::parse(&p.payload).unwrap();
        assert_eq!(env.destination, Destination::device(id));
        assert_eq!(env.payload.metadata.extra["device_id"], id);
        assert_eq!(env.payload.metadata.extra["session_id"], format!("{id}-1"));
        assert_eq!(words(env.payload.data["transcription"].as_str().unwrap()), "what time is it");
        // One answer per utterance, whichever instance owns the satellite.
        sat.obs.quiet(Duration::from_millis(300)).await;
        published.quiet(Duration::from_millis(100)).await;
    }
}

/// Voice activity ends the utterance: speech followed by silence, no `audio-stop`, is
/// transcribed (with `voice-started` and `voice-stopped` first), and the satellite may stop later.
pub async fn vad_ends_the_utterance(addr: SocketAddr) {
    let _stt = stt(addr, 1, 8, 30.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sat = Satellite::start(addr, "porch_sat").await;
    let speech = alicia_audio::decode_wav(&espeak("open the garage door"), None).unwrap();
    let mut mono = alicia_audio::resample(&speech.1, speech.0.sample_rate, 16000).unwrap();
    mono.extend(alicia_audio::silence(16000, 1.5));
    let wav = alicia_audio::encode_wav(&alicia_audio::f32_to_i16(&mono), 16000, 1);
    sat.speak(&wav, json!({"publish": false}), false).await;
    let started = sat.next().await;
    assert_eq!(started.kind, "voice-started");
    assert_eq!(sat.next().await.kind, "voice-stopped");
    let t = sat.next_of("transcript").await;
    assert_eq!(words(t.str("text").unwrap()), "open the garage door");
    sat.send(&Event::new("audio-stop")).await;
    sat.obs.quiet(Duration::from_millis(300)).await;
}

/// TTS to a satellite: `audio-start`, 100 ms chunks, `audio-stop` on its `snd` topic, the first
/// sentence's audio sent before the second sentence is made; the audio is the text (STT says so).
pub async fn tts_streams_to_a_satellite(addr: SocketAddr) {
    let core = core(addr).await;
    let (_stt, _tts) = (stt(addr, 1, 8, 30.0).await, tts(addr).await);
    core.provider("text_to_speech").await;
    let mut sat = Satellite::start(addr, "office_sat").await;
    let client = requester(addr, "tester").await;
    let text = "The door is locked. The lights are off.";
    let answer = ask(
        &client,
        Destination::capability("text_to_speech"),
        json!({"text": text, "satellite": "office_sat", "session_id": "s-9"}),
    )
    .await
    .unwrap();
    let summary = response(&answer);
    let first = summary["timings_ms"]["first_audio"].as_f64().unwrap();
    let total = summary["timings_ms"]["total"].as_f64().unwrap();
    assert!(first < total, "streamed sentence by sentence: {summary}");
    // Per stage: waiting for the voice's session, and the model (the bench reports both).
    let queue = summary["timings_ms"]["queue"].as_f64().unwrap();
    let inference = summary["timings_ms"]["inference"].as_f64().unwrap();
    assert!(inference > 0.0 && queue >= 0.0 && queue + inference <= total, "{summary}");
    let start = sat.next().await;
    assert_eq!((start.kind.as_str(), start.str("session_id")), ("audio-start", Some("s-9")));
    let rate = start.u64("rate").unwrap() as u32;
    let mut pcm = Vec::new();
    loop {
        let e = sat.next().await;
        match e.kind.as_str() {
            "audio-chunk" => {
                let p = e.payload.unwrap();
                assert!(p.len() <= (rate as usize / 10) * 2, "chunks of at most 100 ms");
                pcm.extend(p);
            }
            "audio-stop" => break,
            other => panic!("unexpected {other}"),
        }
    }
    let samples: Vec<i16> = pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let wav = alicia_audio::encode_wav(&samples, rate, 1);
    let heard =
        ask(&client, Destination::capability("speech_to_text"), json!({"audio_data": b64(&wav), "publish": false}))
            .await;
    // The STT provider may still be registering: `ask` retries no_provider. What is checked is
    // that the streamed chunks make up the speech: tiny.en hears Piper's "The door is locked."
    // as "the doors lock" now and then (seen once in a full run, never alone), while chunks
    // lost, doubled or out of order would leave little of the eight words.
    let heard = words(response(&heard.unwrap())["transcription"].as_str().unwrap());
    assert!(crate::spoken::word_edits(&heard, &words(text)) <= 3, "heard {heard:?} for {text:?}");
}

/// The assistant's answer on `alicia/voice/ai/response` is spoken to its satellite.
pub async fn answers_are_spoken(addr: SocketAddr) {
    let _tts = tts(addr).await;
    let mut sat = Satellite::start(addr, "den_sat").await;
    let events_obs = Observer::start(addr, &["alicia/voice/tts/events"]).await;
    let client = requester(addr, "ai_service").await;
    let mut answer = alicia_envelope::Envelope::new(
        "ai_service",
        Destination::device("den_sat"),
        alicia_envelope::MessageType::Response,
        json!({"session_id": "s-1", "satellite": "den_sat", "response": "Turned on the den light", "outcome": "action"}),
    );
    answer.payload.metadata.extra.insert("session_id".into(), json!("s-1"));
    client.send_to("alicia/voice/ai/response", &answer, None).await.unwrap();
    let start = sat.next().await;
    assert_eq!((start.kind.as_str(), start.str("session_id")), ("audio-start", Some("s-1")));
    let mut n = 0;
    while sat.next().await.kind == "audio-chunk" {
        n += 1;
    }
    assert!(n > 5, "{n} chunks");
    let mut events_obs = events_obs;
    // `speaking` at the first audio (the voice pipeline times it), `spoken` at the end.
    let speaking = alicia_envelope::Envelope::parse(&events_obs.next().await.payload).unwrap();
    assert_eq!(
        (speaking.payload.data["event"].as_str(), speaking.payload.data["session_id"].as_str()),
        (Some("speaking"), Some("s-1"))
    );
    let spoken = alicia_envelope::Envelope::parse(&events_obs.next().await.payload).unwrap();
    assert_eq!(spoken.payload.data["event"], "spoken");
    assert_eq!(spoken.payload.data["for"], "answer");
    assert_eq!(spoken.payload.data["summary"]["cancelled"], false);
    // An answer for nobody (typed, no satellite) is not spoken.
    let typed = alicia_envelope::Envelope::new(
        "ai_service",
        Destination::service("cli"),
        alicia_envelope::MessageType::Response,
        json!({"session_id": "s-2", "satellite": null, "response": "It is 3 pm"}),
    );
    client.send_to("alicia/voice/ai/response", &typed, None).await.unwrap();
    events_obs.quiet(Duration::from_millis(500)).await;
}

/// Bad input is answered with a reason and dead-lettered; the service keeps working.
pub async fn bad_input(addr: SocketAddr) {
    let core = core(addr).await;
    let (_stt, _tts) = (stt(addr, 1, 4, 3.0).await, tts(addr).await);
    core.provider("speech_to_text").await;
    core.provider("text_to_speech").await;
    let mut dead = Observer::start(addr, &["alicia/system/deadletter"]).await;
    let client = requester(addr, "tester").await;
    let stt_to = Destination::capability("speech_to_text");
    let long = alicia_audio::encode_wav(&vec![100i16; 16000 * 4], 16000, 1);
    for (data, code) in [
        (json!({"audio_data": b64(b"this is not a wav file at all")}), "not_wav"),
        (json!({"audio_data": ""}), "empty_audio"),
        (json!({"audio_data": b64(&alicia_audio::encode_wav(&[], 16000, 1))}), "empty_audio"),
        (json!({"audio_data": b64(&long)}), "audio_too_long"),
        (json!({"audio": "x"}), "invalid_request"),
        (json!({"audio_data": b64(&espeak("hello")), "language": "xx"}), "unsupported_language"),
    ] {
        let r = ask(&client, stt_to.clone(), data.clone()).await;
        assert_eq!(remote_code(&r), code, "{data}");
        let d: alicia_sdk::DeadLetter =
            serde_json::from_slice(&dead.next_on("alicia/system/deadletter").await.payload).unwrap();
        assert_eq!(d.code, code, "{}", d.reason);
    }
    let tts_to = Destination::capability("text_to_speech");
    for (data, code) in [
        (json!({"text": "hello", "voice": "de_DE-thorsten-high"}), "unknown_voice"),
        (json!({"text": "   "}), "empty_text"),
        (json!({"text": "hello", "rate": 9}), "invalid_rate"),
        (json!({}), "invalid_request"),
    ] {
        let r = ask(&client, tts_to.clone(), data.clone()).await;
        assert_eq!(remote_code(&r), code, "{data}");
        let d: alicia_sdk::DeadLetter =
            serde_json::from_slice(&dead.next_on("alicia/system/deadletter").await.payload).unwrap();
        assert_eq!(d.code, code, "{}", d.reason);
    }
    // A satellite's unreadable message: an error on its snd topic, and a dead letter.
    let mut sat = Satellite::start(addr, "garage_sat").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sat.obs.publish("alicia/voice/sat/garage_sat/mic", &b"\x00\x01raw pcm without a header"[..], None).await;
    let e = sat.next().await;
    assert_eq!((e.kind.as_str(), e.str("code")), ("error", Some("invalid_message")));
    let d: alicia_sdk::DeadLetter =
        serde_json::from_slice(&dead.next_on("alicia/system/deadletter").await.payload).unwrap();
    assert_eq!(d.topic, "alicia/voice/sat/garage_sat/mic");
    assert_eq!(d.code, "invalid_message");
    // Still working.
    let ok = ask(&client, stt_to, json!({"audio_data": b64(&espeak("still here")), "publish": false})).await.unwrap();
    assert_eq!(words(response(&ok)["transcription"].as_str().unwrap()), "still here");
}

/// A full queue answers `busy` at once instead of growing (one worker, no queue).
pub async fn busy(addr: SocketAddr) {
    let _stt = stt(addr, 1, 0, 30.0).await;
    let client = requester(addr, "tester").await;
    let wav = espeak("the quick brown fox jumps over the lazy dog");
    let mut asks = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let (bus, data) = (client.bus().clone(), json!({"audio_data": b64(&wav), "publish": false}));
        asks.spawn(async move { bus.request(Destination::service("stt_service"), data, ANSWER).await });
    }
    let results = asks.join_all().await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(alicia_sdk::SdkError::Remote { code, .. }) if code == "busy"))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(busy >= 1 && ok >= 1 && busy + ok == 3, "{results:?}");
}
