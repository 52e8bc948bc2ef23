//! The design document's own messages (`tests/fixtures/design/`, copied from the document as
//! written) read as the document means them.

use std::path::Path;
use std::time::SystemTime;

use alicia_envelope::{Destination, Envelope, EnvelopeError, MessageType, Priority, Problem};
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/design").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_voice_stt_request_reads_as_written() {
    let env = Envelope::parse(fixture("voice_stt_request.json").as_bytes()).unwrap();
    assert_eq!(env.message_id, "voice-stt-001");
    assert_eq!(env.source, "voice_input");
    assert_eq!(env.destination, Destination::capability("speech_to_text"));
    assert_eq!((env.message_type, env.priority, env.ttl), (MessageType::Request, Priority::High, None));
    assert_eq!(env.payload.data["sample_rate"], 16000);
    assert_eq!(env.payload.metadata.extra["session_id"], "session-123");
    // No ttl: a 2025 timestamp is no reason to drop it today.
    assert!(!env.is_expired(SystemTime::now()));
}

#[test]
fn the_device_control_message_reads_as_written() {
    let env = Envelope::parse(fixture("device_control.json").as_bytes()).unwrap();
    assert_eq!(env.message_id, "device-control-001");
    assert_eq!(env.destination, Destination::device("sonos_kitchen_001"));
    assert_eq!((env.message_type, env.ttl), (MessageType::Command, None));
    assert_eq!(env.payload.data["command"], "play_audio");
    assert_eq!(env.payload.metadata.extra["command_source"], "voice_command");
    assert!(!env.is_expired(SystemTime::now()));
}

#[test]
fn the_device_registration_reads_as_written() {
    let text = fixture("device_registration.json");
    let env = Envelope::parse(text.as_bytes()).unwrap();
    assert_eq!(env.message_id, "device-reg-001");
    assert_eq!(env.source, "sonos_kitchen_001");
    assert_eq!(env.destination, Destination::topic("alicia/system/discovery/register"));
    assert_eq!((env.message_type, env.ttl), (MessageType::Event, None));
    // Nothing is lost: the data is the document's, key for key.
    let original: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(env.payload.data, original["payload"]["data"]);
    assert_eq!(env.to_value()["destination"], "alicia/system/discovery/register");
}

/// The standard format is a template: `"message_type": "request|response|event|command|heartbeat"`
/// lists the choices. Sent verbatim it is refused with one problem per template field, all at
/// once, each saying to choose; every choice it lists works.
#[test]
fn the_standard_format_template_names_its_choices_and_every_choice_works() {
    let text = fixture("standard_format.json");
    let err = Envelope::parse(text.as_bytes()).unwrap_err();
    let problems = err.problems();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["destination", "message_type", "priority"], "{err}");
    assert!(problems.iter().all(|p| matches!(p.problem, Problem::Template { .. })), "{err}");
    assert!(matches!(err, EnvelopeError::Fields(_)));

    let template: Value = serde_json::from_str(&text).unwrap();
    let choices =
        |key: &str| -> Vec<String> { template[key].as_str().unwrap().split('|').map(str::to_string).collect() };
    let mut tried = 0;
    for destination in choices("destination") {
        for message_type in choices("message_type") {
            for priority in choices("priority") {
                let mut v = template.clone();
                v["destination"] = destination.clone().into();
                v["message_type"] = message_type.clone().into();
                v["priority"] = priority.clone().into();
                let env = Envelope::from_value(v).unwrap_or_else(|e| panic!("{destination} {message_type}: {e}"));
                // "uuid-v4" is the document's placeholder, an id like any other.
                assert_eq!(env.message_id, "uuid-v4");
                assert_eq!(env.ttl, Some(300));
                assert_eq!(env.routing.route, ["service1", "service2"]);
                tried += 1;
            }
        }
    }
    assert_eq!(tried, 3 * 5 * 4);
}
