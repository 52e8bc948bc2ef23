//! The assistant's scenarios, run against each broker (Alicia's in-process, Mosquitto).

use super::*;

const COMMANDS: &str = "alicia/devices/+/command";
const EVENTS: &str = "alicia/voice/events";
const RESPONSES: &str = "alicia/voice/ai/response";

/// (utterance, satellite, device, command, parameters, spoken response)
type Case = (&'static str, Option<&'static str>, &'static str, &'static str, Value, &'static str);

/// Asks, checks the answer, and that exactly the expected device got exactly the expected
/// command (every command on the bus is observed; a final sentinel command proves nothing
/// else came in between).
async fn check_cases(house: &mut House, commands: &mut Observer, cases: Vec<Case>) {
    for (utterance, satellite, device, command, parameters, response) in cases {
        let a = house.ask(utterance, satellite, None).await;
        assert_eq!(a["response"], response, "{utterance:?}: {a:#}");
        assert_eq!(a["outcome"], "action", "{utterance:?}: {a:#}");
        for stage in ["recognize", "plan", "send", "respond", "total"] {
            assert!(a["timings_ms"][stage].as_f64().is_some(), "{utterance:?}: no {stage} timing: {a:#}");
        }
        let got = house.device(device).applied().await;
        assert_eq!((got.command.as_str(), &got.parameters), (command, &parameters), "{utterance:?}");
        assert_eq!(got.envelope.message_type, MessageType::Command);
        assert_eq!(got.envelope.source, "ai_service");
        assert_eq!(got.envelope.routing.route, ["router"], "through the router");
        assert_eq!(got.envelope.payload.metadata.extra["command_source"], "voice_command");
        assert_eq!(a["actions"][0]["message_id"], got.envelope.message_id.as_str());
        let seen = commands.next().await;
        assert_eq!(
            seen.topic,
            format!("alicia/devices/{device}/command").as_bytes(),
            "{utterance:?}: another device got a command"
        );
    }
}

/// Every device intent reaches the right device with parameters within its registered
/// capability parameters, and is answered with Home Assistant's response.
pub async fn intents_reach_devices(addr: SocketAddr) {
    let mut house = House::start(addr).await;
    let mut commands = Observer::start(addr, &[COMMANDS]).await;
    let sonos = "sonos_kitchen_001";
    let cases: Vec<Case> = vec![
        ("turn on the kitchen light", None, "light_kitchen", "turn_on", json!({}), "Turned on the light"),
        ("switch off the coffee maker", None, "switch_coffee", "turn_off", json!({}), "Turned off the switch"),
        (
            "set the kitchen light brightness to 40%",
            None,
            "light_kitchen",
            "set_brightness",
            json!({"brightness": 40}),
            "Brightness set",
        ),
        // The satellite's area; the speaker, not the satellite.
        ("set the volume to 30", Some("sat_kitchen"), sonos, "set_volume", json!({"volume": 30}), "Volume set"),
        // 50 % of the bedroom speaker's 10..60.
        (
            "set the bedroom speaker volume to 50 percent",
            None,
            "speaker_bedroom",
            "set_volume",
            json!({"volume": 35}),
            "Volume set",
        ),
        (
            "set the bedroom speaker volume to 100",
            None,
            "speaker_bedroom",
            "set_volume",
            json!({"volume": 60}),
            "Volume set",
        ),
        // 10 % of 0..100 in steps of 1, down.
        ("turn the volume down in the kitchen", None, sonos, "volume_step", json!({"steps": -10}), "Volume set"),
        ("pause", Some("sat_kitchen"), sonos, "pause", json!({}), "Paused"),
        ("resume the music", Some("sat_kitchen"), sonos, "resume", json!({}), "Resumed"),
        ("skip this song", Some("sat_kitchen"), sonos, "next", json!({}), "Playing next"),
        ("previous track on the bedroom speaker", None, "speaker_bedroom", "previous", json!({}), "Playing previous"),
        // The design document's speaker is found by its maker's name, heard wrong.
        ("pause the sonnos", None, sonos, "pause", json!({}), "Paused"),
        ("mute the bedroom speaker", None, "speaker_bedroom", "mute", json!({}), "Muted"),
        (
            "play jazz on the bedroom speaker",
            None,
            "speaker_bedroom",
            "play_audio",
            json!({"audio_url": "http://media.local/jazz.mp3"}),
            "Playing media",
        ),
        (
            "announce dinner is ready in the kitchen",
            None,
            sonos,
            "announce",
            json!({"text": "dinner is ready"}),
            "Announcing in the Kitchen",
        ),
    ];
    check_cases(&mut house, &mut commands, cases).await;

    // Everywhere: one announcement on the speakers' topic.
    let mut announce = Observer::start(addr, &["alicia/devices/speakers/announce"]).await;
    let a = house.ask("Announce: the car is here", None, None).await;
    assert_eq!((a["response"].as_str(), a["intent"]["name"].as_str()), (Some("Done"), Some("HassBroadcast")));
    let env = Envelope::parse(&announce.next().await.payload).unwrap();
    assert_eq!(env.payload.data, json!({"command": "announce", "parameters": {"text": "the car is here"}}));

    // The sentinel: the next command seen anywhere is this one.
    house.ask("turn off the bedroom lamp", None, None).await;
    house.device("lamp_bedroom").applied().await;
    assert_eq!(commands.next().await.topic, "alicia/devices/lamp_bedroom/command".as_bytes());
    house.stop().await;
}

/// No area said: the satellite's registered location, as Home Assistant's context area.
pub async fn area_from_the_satellite(addr: SocketAddr) {
    let mut house = House::start(addr).await;
    let a = house.ask("turn on the lights", Some("sat_kitchen"), None).await;
    assert_eq!((a["response"].as_str(), a["area"].as_str()), (Some("Turned on the lights"), Some("kitchen")));
    assert_eq!(a["actions"].as_array().unwrap().len(), 2, "{a:#}");
    for id in ["light_kitchen", "light_counter"] {
        assert_eq!(house.device(id).applied().await.command, "turn_on");
    }
    // From the bedroom, the bedroom's.
    let a = house.ask("turn off the light", Some("speaker_bedroom"), None).await;
    assert_eq!(a["targets"][0]["device_id"], "lamp_bedroom", "{a:#}");
    assert_eq!(house.device("lamp_bedroom").applied().await.command, "turn_off");
    // Without a satellite nothing says where: a polite answer, nothing done.
    let a = house.ask("set the volume to 30", None, None).await;
    assert_eq!(a["outcome"], "no_match", "{a:#}");
    assert!(a["response"].as_str().unwrap().starts_with("Sorry, "), "{a:#}");
    house.stop().await;
}

/// A name that fits two devices asks back; the follow-up completes the intent. "Never mind"
/// ends the question, and an utterance that is no answer is understood on its own.
pub async fn ambiguity_asks_back(addr: SocketAddr) {
    let mut house = House::start(addr).await;
    let mut commands = Observer::start(addr, &[COMMANDS]).await;
    let a = house.ask("pause the speaker", None, Some("s-1")).await;
    assert_eq!(a["outcome"], "clarification", "{a:#}");
    let q = a["response"].as_str().unwrap();
    assert!(q == "Which speaker: kitchen or bedroom?" || q == "Which speaker: bedroom or kitchen?", "{q}");
    assert_eq!(a["continue_conversation"], true);
    assert!(a["actions"].as_array().unwrap().is_empty());
    let a = house.ask("the kitchen one", None, Some("s-1")).await;
    assert_eq!((a["response"].as_str(), a["outcome"].as_str()), (Some("Paused"), Some("action")), "{a:#}");
    assert!(a["timings_ms"]["dialogue"].as_f64().is_some(), "{a:#}");
    let got = house.device("sonos_kitchen_001").applied().await;
    assert_eq!(got.command, "pause");
    assert_eq!(got.envelope.payload.metadata.extra["session_id"], "s-1");
    assert_eq!(commands.next().await.topic, "alicia/devices/sonos_kitchen_001/command".as_bytes());

    // Another session's question is its own; "never mind" ends it.
    let a = house.ask("turn the speaker up", None, Some("s-2")).await;
    assert_eq!(a["outcome"], "clarification");
    let a = house.ask("never mind", None, Some("s-2")).await;
    assert_eq!(a["outcome"], "cancelled", "{a:#}");
    // No question is open any more: understood on its own (Home Assistant's sentences read
    // it as "set the bedroom to 1 %", which its lamp cannot do).
    let a = house.ask("the bedroom one", None, Some("s-2")).await;
    assert_ne!(a["intent"]["name"], "HassSetVolumeRelative", "{a:#}");
    assert!(a["actions"].as_array().unwrap().is_empty(), "{a:#}");
    // A new request instead of an answer is understood as itself.
    let a = house.ask("pause the speaker", None, Some("s-3")).await;
    assert_eq!(a["outcome"], "clarification");
    let a = house.ask("turn on the kitchen light", None, Some("s-3")).await;
    assert_eq!(a["response"], "Turned on the light", "{a:#}");
    house.device("light_kitchen").applied().await;
    assert_eq!(commands.next().await.topic, "alicia/devices/light_kitchen/command".as_bytes());
    // An answer's `conversation_id` answers its question from another session.
    let a = house.ask("pause the speaker", None, Some("s-4")).await;
    assert_eq!((a["outcome"].as_str(), a["conversation_id"].as_str()), (Some("clarification"), Some("s-4")), "{a:#}");
    let a = house.ask("the bedroom one", None, Some("s-5")).await;
    assert_ne!(a["response"], "Paused", "another session, no conversation: {a:#}");
    let a = house.ask_data(json!({"text": "the bedroom one", "session_id": "s-6", "conversation_id": "s-4"})).await;
    assert_eq!((a["response"].as_str(), a["session_id"].as_str()), (Some("Paused"), Some("s-6")), "{a:#}");
    assert_eq!(house.device("speaker_bedroom").applied().await.command, "pause");
    assert_eq!(commands.next().await.topic, "alicia/devices/speaker_bedroom/command".as_bytes());
    // By satellite, without a session id: the satellite is the session.
    let a = house.ask("play jazz on the speaker", Some("lamp_bedroom"), None).await;
    assert_eq!(a["targets"][0]["device_id"], "speaker_bedroom", "the bedroom's speaker, from the bedroom: {a:#}");
    house.device("speaker_bedroom").applied().await;
    house.stop().await;
}

/// A sentence nothing matches gets a polite answer and a `no_match` event, never silence; the
/// answer is published on `voice/ai/response` too.
pub async fn unknown_sentences_are_answered(addr: SocketAddr) {
    let house = House::start(addr).await;
    let mut events = Observer::start(addr, &[EVENTS]).await;
    let mut responses = Observer::start(addr, &[RESPONSES]).await;
    let request =
        Envelope::request("tester", Destination::service("ai_service"), json!({"text": "Make me a sandwich."}))
            .with_ttl(10);
    let id = request.message_id.clone();
    let answer = house.tester.request_envelope(request, WAIT).await.unwrap();
    let a = &answer.payload.data;
    assert_eq!(a["response"], "Sorry, I don't know how to make you a sandwich", "{a:#}");
    assert_eq!((a["outcome"].as_str(), a["error"]["code"].as_str()), (Some("no_match"), Some("no_intent")));
    let ev = Envelope::parse(&events.next_on(EVENTS).await.payload).unwrap();
    assert_eq!(ev.payload.data["event"], "no_match");
    assert_eq!(ev.payload.data["text"], "Make me a sandwich.");
    assert_eq!(ev.payload.data["response"], a["response"]);
    let out = Envelope::parse(&responses.next_on(RESPONSES).await.payload).unwrap();
    assert_eq!((out.message_type, out.correlation_id.as_ref()), (MessageType::Response, Some(&id)));
    assert_eq!(out.destination, Destination::service("tester"));
    assert_eq!(out.payload.data["response"], a["response"]);

    let a = house.ask("turn on the kettle", None, None).await;
    assert_eq!(a["response"], "Sorry, I am not aware of any device called kettle", "{a:#}");
    let a = house.ask("what is the meaning of life", None, None).await;
    assert_eq!(a["response"], "Sorry, I don't know how to answer that", "{a:#}");
    // Not a request the service can read: an error response at once.
    let err = house.tester.request(Destination::service("ai_service"), json!({"txt": "hi"}), WAIT).await.unwrap_err();
    assert!(err.to_string().contains("invalid_request: `text` is missing"), "{err}");
    let err = house
        .tester
        .request(Destination::service("ai_service"), json!({"text": "bonjour", "language": "fr"}), WAIT)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unsupported_language"), "{err}");
    house.stop().await;
}

/// Relative volume moves in the device's steps and stops at its bounds, by the volume its
/// state says.
pub async fn relative_volume_respects_steps_and_bounds(addr: SocketAddr) {
    let mut house = House::start(addr).await;
    house.assistant_sees("speaker_bedroom", "volume", json!(55)).await;
    // 10 % of 10..60 is 5: one step of 5, to 60.
    let a = house.ask("turn the bedroom speaker up", None, None).await;
    assert_eq!(a["response"], "Volume set", "{a:#}");
    let got = house.device("speaker_bedroom").applied().await;
    assert_eq!((got.command.as_str(), got.parameters.clone()), ("volume_step", json!({"steps": 1})));
    house.assistant_sees("speaker_bedroom", "volume", json!(60.0)).await;
    let a = house.ask("make the bedroom speaker louder", None, None).await;
    assert_eq!(a["response"], "The Bedroom Speaker is already at maximum volume", "{a:#}");
    assert_eq!((a["outcome"].as_str(), a["actions"].as_array().map(Vec::len)), (Some("refused"), Some(0)));
    // By 30 %: 15 units, 3 steps down; then 100 % down stops at the minimum (10).
    let a = house.ask("turn down the bedroom volume by 30 percent", None, None).await;
    assert_eq!(a["response"], "Volume set", "{a:#}");
    assert_eq!(house.device("speaker_bedroom").applied().await.parameters, json!({"steps": -3}));
    house.assistant_sees("speaker_bedroom", "volume", json!(45.0)).await;
    let a = house.ask("turn down the bedroom volume by 100 percent", None, None).await;
    assert_eq!(a["response"], "Volume set", "{a:#}");
    assert_eq!(house.device("speaker_bedroom").applied().await.parameters, json!({"steps": -7}));
    assert_eq!(house.device("speaker_bedroom").state()["volume"], json!(10.0));
    // The design document's speaker: steps of 1 over 0..100.
    let a = house.ask("turn up the kitchen volume by 15 percent", None, None).await;
    assert_eq!(a["response"], "Volume set", "{a:#}");
    assert_eq!(house.device("sonos_kitchen_001").applied().await.parameters, json!({"steps": 15}));
    house.stop().await;
}

/// Questions are answered from the devices' retained state and telemetry.
pub async fn state_questions(addr: SocketAddr) {
    let mut house = House::start(addr).await;
    let a = house.ask("what is the temperature in the kitchen", None, None).await;
    assert_eq!(a["response"], "Sorry, the Kitchen Thermometer has not reported a temperature yet", "{a:#}");
    house.device("thermo_kitchen").telemetry(json!([{"capability": "temperature", "value": 21.5, "unit": "°C"}])).await;
    let asst = &house.assistant;
    until("the reading", || asst.reading("thermo_kitchen", "temperature").is_some()).await;
    let a = house.ask("what is the temperature in the kitchen", None, None).await;
    assert_eq!((a["response"].as_str(), a["outcome"].as_str()), (Some("21.5 degrees"), Some("answer")), "{a:#}");
    let a = house.ask("what's the temperature", Some("sat_kitchen"), None).await;
    assert_eq!(a["response"], "21.5 degrees", "{a:#}");

    let a = house.ask("is the coffee maker on", None, None).await;
    assert_eq!(a["response"], "No, off", "{a:#}");
    house.ask("turn on the coffee maker", None, None).await;
    house.device("switch_coffee").applied().await;
    house.assistant_sees("switch_coffee", "power", json!("on")).await;
    let a = house.ask("is the coffee maker on", None, None).await;
    assert_eq!(a["response"], "Yes", "{a:#}");
    assert!(a["actions"].as_array().unwrap().is_empty());
    house.stop().await;
}

/// Timers: set, asked about, cancelled, and when one ends it is announced on the satellite
/// that set it, with an event and a message on `voice/ai/response`.
pub async fn timers(addr: SocketAddr) {
    let mut house = House::start(addr).await;
    let mut events = Observer::start(addr, &[EVENTS]).await;
    let mut responses = Observer::start(addr, &[RESPONSES]).await;
    let a = house.ask("set a timer for 5 minutes named pizza", Some("sat_kitchen"), None).await;
    assert_eq!(a["response"], "Timer set for 5 minutes named pizza", "{a:#}");
    let a = house.ask("how much time is left on my timer", Some("sat_kitchen"), None).await;
    assert_eq!(a["response"], "5 minutes left.", "{a:#}");
    let a = house.ask("how much time is left on my timer", Some("speaker_bedroom"), None).await;
    assert_eq!(a["response"], "No timers.", "another satellite's timers are its own: {a:#}");
    let a = house.ask("cancel the pizza timer", Some("speaker_bedroom"), None).await;
    assert_eq!(a["response"], "Timer cancelled", "by name, from anywhere: {a:#}");
    let a = house.ask("cancel the timer", Some("sat_kitchen"), None).await;
    assert_eq!(a["response"], "Sorry, I couldn't find that timer", "{a:#}");
    // A satellite's utterances are sessions of their own (as voice_pipeline sends them): the
    // timer is still the satellite's.
    let a = house.ask("set a timer for 3 minutes", Some("sat_kitchen"), Some("u-1")).await;
    assert_eq!(a["response"], "Timer set for 3 minutes", "{a:#}");
    let a = house.ask("cancel the timer", Some("sat_kitchen"), Some("u-2")).await;
    assert_eq!(a["response"], "Timer cancelled", "{a:#}");

    let a = house.ask("set a timer for 1 second", Some("sat_kitchen"), None).await;
    assert_eq!(a["response"], "Timer set for 1 second", "{a:#}");
    let got = house.device("sat_kitchen").applied().await;
    assert_eq!(
        (got.command.as_str(), got.parameters.clone()),
        ("announce", json!({"text": "Your 1 second timer is done"}))
    );
    let mut kinds = Vec::new();
    while kinds.last().map(String::as_str) != Some("timer_finished") {
        let ev = Envelope::parse(&events.next_on(EVENTS).await.payload).unwrap();
        kinds.push(ev.payload.data["event"].as_str().unwrap_or_default().to_string());
    }
    for k in ["timer_started", "timer_cancelled"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    loop {
        let env = Envelope::parse(&responses.next_on(RESPONSES).await.payload).unwrap();
        if env.payload.data["outcome"] == "timer_finished" {
            assert_eq!(env.payload.data["response"], "Your 1 second timer is done");
            assert_eq!(env.payload.data["satellite"], "sat_kitchen");
            break;
        }
    }
    house.stop().await;
}

/// The design document's STT response on `voice/stt/response` is understood and answered on
/// `voice/ai/response`, addressed to whoever asked for the transcript, with its session.
pub async fn transcripts_from_the_stt_service(addr: SocketAddr) {
    let mut house = House::start(addr).await;
    let mut responses = Observer::start(addr, &[RESPONSES]).await;
    let mut stt = Envelope::new(
        "stt_service",
        Destination::service("voice_input"),
        MessageType::Response,
        json!({"transcription": "Turn on the kitchen light.", "confidence": 0.91, "language": "en-US"}),
    );
    stt.correlation_id = Some(alicia_envelope::MessageId::parse("voice-stt-001").unwrap());
    let meta = &mut stt.payload.metadata.extra;
    meta.insert("session_id".into(), json!("session-123"));
    meta.insert("user_id".into(), json!("user-456"));
    meta.insert("device_id".into(), json!("sat_kitchen"));
    house.tester.bus().send_to("alicia/voice/stt/response", &stt, None).await.unwrap();
    let got = house.device("light_kitchen").applied().await;
    assert_eq!(got.command, "turn_on");
    assert_eq!(got.envelope.payload.metadata.extra["user_id"], "user-456");
    let env = Envelope::parse(&responses.next_on(RESPONSES).await.payload).unwrap();
    assert_eq!(env.destination, Destination::service("voice_input"));
    assert_eq!(env.correlation_id.as_ref().map(|c| c.as_str()), Some("voice-stt-001"));
    assert_eq!(env.payload.metadata.extra["session_id"], "session-123");
    assert_eq!(env.payload.data["response"], "Turned on the light");
    assert_eq!(env.payload.data["area"], "kitchen");
    house.stop().await;
}

/// An offline device is not commanded; the answer says it is offline.
pub async fn offline_devices(addr: SocketAddr) {
    let mut house = House::start(addr).await;
    house.device("lamp_bedroom").go_offline().await;
    assert!(
        house.assistant.wait_for_home(WAIT, |h| h.device("lamp_bedroom").is_some_and(|d| d.status == "offline")).await,
        "the registry's offline reached the assistant"
    );
    let a = house.ask("turn off the bedroom lamp", None, None).await;
    assert_eq!(a["response"], "Sorry, the Bedroom Lamp is offline", "{a:#}");
    assert!(a["actions"].as_array().unwrap().is_empty());
    assert!(house.device("lamp_bedroom").pending().is_none());
    house.stop().await;
}
