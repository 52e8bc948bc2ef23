//! The published JSON Schema (`docs/envelope.schema.json`) and the example messages
//! (`docs/examples/envelopes/`): the schema file is what the types generate, every example
//! parses, validates and round-trips unchanged, and the schema and the parser agree.
//!
//! After changing the envelope types, regenerate the schema with
//! `UPDATE_SCHEMA=1 cargo test -p alicia-envelope --test schema`.

use std::path::{Path, PathBuf};

use alicia_envelope::{Envelope, EnvelopeError, Problem};
use serde_json::{json, Value};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn schema_path() -> PathBuf {
    docs().join("envelope.schema.json")
}

/// The committed schema, as devices get it.
fn published_schema() -> Value {
    let text = std::fs::read_to_string(schema_path()).expect("docs/envelope.schema.json exists");
    serde_json::from_str(&text).expect("the schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::options().should_validate_formats(true).build(&published_schema()).expect("a valid JSON Schema")
}

fn examples() -> Vec<(String, String)> {
    let dir = docs().join("examples/envelopes");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("docs/examples/envelopes exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

fn example(name: &str) -> Value {
    let (_, text) = examples().into_iter().find(|(n, _)| n == name).expect(name);
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_published_schema_is_generated_from_the_types() {
    let generated = alicia_envelope::json_schema_string();
    let path = schema_path();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the envelope types; regenerate it with \
         `UPDATE_SCHEMA=1 cargo test -p alicia-envelope --test schema` and commit it",
        path.display()
    );
}

#[test]
fn examples_parse_validate_and_round_trip_unchanged() {
    let examples = examples();
    let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["device_control_command.json", "device_registration.json", "heartbeat.json", "voice_stt_request.json"]
    {
        assert!(names.contains(&want), "missing example {want}: {names:?}");
    }
    let validator = validator();
    for (name, text) in &examples {
        let original: Value = serde_json::from_str(text).unwrap();
        let env = Envelope::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        env.validate().unwrap();
        // Semantically equal...
        assert_eq!(env.to_value(), original, "{name}");
        // ...and, as the examples are written in the canonical form, byte for byte.
        assert_eq!(format!("{}\n", env.to_json_pretty()), *text, "{name}");
        let errors: Vec<String> = validator.iter_errors(&original).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name} fails the published schema: {errors:?}");
    }
}

#[test]
fn the_registration_example_is_the_design_documents_speaker() {
    let env = Envelope::from_value(example("device_registration.json")).unwrap();
    let data = &env.payload.data;
    assert_eq!(data["device_id"], "sonos_kitchen_001");
    assert_eq!(data["capabilities"][0]["name"], "audio_playback");
    assert_eq!(data["capabilities"][1]["name"], "volume_control");
    // The document's message, normalised: the same data.
    let design = std::fs::read_to_string(docs().join("../tests/fixtures/design/device_registration.json")).unwrap();
    assert_eq!(Envelope::parse(design.as_bytes()).unwrap(), env);
}

/// The design document's concrete messages pass the published schema as written; its template
/// (the standard format) does not.
#[test]
fn the_design_documents_messages_pass_the_schema() {
    let validator = validator();
    let dir = docs().join("../tests/fixtures/design");
    for name in ["voice_stt_request.json", "device_control.json", "device_registration.json"] {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    let template: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("standard_format.json")).unwrap()).unwrap();
    assert!(!validator.is_valid(&template));
}

/// Every property the schema lists as required is reported missing by the parser when
/// removed, and every other property may be left out: checked for each object of the format.
#[test]
fn schema_and_parser_agree_on_required_fields() {
    let schema = published_schema();
    let validator = validator();
    let full = example("voice_stt_request.json");
    // (path of the object in an envelope, its schema)
    let objects = [
        (vec![], schema.clone()),
        (vec!["payload"], schema["$defs"]["Payload"].clone()),
        (vec!["payload", "metadata"], schema["$defs"]["Metadata"].clone()),
        (vec!["security"], schema["$defs"]["Security"].clone()),
        (vec!["routing"], schema["$defs"]["Routing"].clone()),
    ];
    for (path, object_schema) in objects {
        let required: Vec<&str> = object_schema["required"]
            .as_array()
            .map(|r| r.iter().map(|v| v.as_str().unwrap()).collect())
            .unwrap_or_default();
        for key in object_schema["properties"].as_object().unwrap().keys() {
            let mut v = full.clone();
            let obj = path.iter().fold(&mut v, |v, k| &mut v[*k]);
            if obj.as_object_mut().unwrap().remove(key).is_none() {
                continue; // not in this example (correlation_id, metadata.status)
            }
            let dotted = path.iter().copied().chain([key.as_str()]).collect::<Vec<_>>().join(".");
            let parsed = Envelope::from_value(v.clone());
            if required.contains(&key.as_str()) {
                match parsed {
                    Err(EnvelopeError::Field { field, problem: Problem::Missing }) => assert_eq!(field, dotted),
                    other => panic!("without {dotted}: expected `{dotted}` is missing, got {other:?}"),
                }
                assert!(!validator.is_valid(&v), "the schema accepts an envelope without {dotted}");
            } else {
                parsed.unwrap_or_else(|e| panic!("without optional {dotted}: {e}"));
                assert!(validator.is_valid(&v), "the schema refuses an envelope without optional {dotted}");
            }
        }
    }
}

/// What the parser refuses, the schema refuses too (for everything a schema can express).
#[test]
fn schema_refuses_what_the_parser_refuses() {
    let validator = validator();
    let base = example("device_control_command.json");
    let set = |path: &[&str], value: Value| {
        let mut v = base.clone();
        let (last, parents) = path.split_last().unwrap();
        let obj = parents.iter().fold(&mut v, |v, k| &mut v[*k]);
        obj[*last] = value;
        v
    };
    let bad = [
        set(&["message_id"], json!("")),
        set(&["message_id"], json!("a\u{1}b")),
        set(&["message_id"], json!("x".repeat(129))),
        set(&["correlation_id"], json!("")),
        set(&["timestamp"], json!("2025-01-15 10:30")),
        set(&["source"], json!("")),
        set(&["source"], json!("a/b")),
        set(&["source"], json!("capability:x")),
        set(&["destination"], json!("room:kitchen")),
        set(&["destination"], json!("capability:")),
        set(&["destination"], json!("alicia/#")),
        set(&["destination"], json!("$SYS/broker/version")),
        set(&["message_type"], json!("query")),
        set(&["priority"], json!("urgent")),
        set(&["ttl"], json!(0)),
        set(&["ttl"], json!(-1)),
        set(&["ttl"], json!(1.5)),
        set(&["ttl"], json!("30")),
        set(&["payload"], json!("text")),
        set(&["payload", "metadata", "version"], json!("")),
        set(&["payload", "metadata", "status"], json!("failed")),
        set(&["routing", "max_hops"], json!(0)),
        set(&["routing", "route"], json!(["router", ""])),
        set(&["routing", "route"], json!(["router", 5])),
        json!([1, 2]),
    ];
    for v in bad {
        assert!(Envelope::from_value(v.clone()).is_err(), "the parser accepts {v}");
        assert!(!validator.is_valid(&v), "the schema accepts {v}");
    }
    // Extra keys are allowed by both.
    let extra = set(&["x_vendor"], json!({"anything": true}));
    assert!(Envelope::from_value(extra.clone()).is_ok() && validator.is_valid(&extra));
    // Beyond a schema: hops above max_hops is refused by the parser alone.
    let looped = set(&["routing", "hops"], json!(11));
    assert!(Envelope::from_value(looped).is_err());
}
