//! Parsing, validation errors, builders and expiry, through the public API.

use std::time::{Duration, SystemTime};

use alicia_envelope::{
    Destination, Envelope, EnvelopeError, FieldError, MessageId, MessageType, Priority, Problem, ReplyStatus,
    Timestamp, Uuid, Value, DEFAULT_MAX_HOPS,
};
use serde_json::json;

/// A small valid envelope as a JSON value, to be broken by the tests.
fn base() -> Value {
    json!({
        "message_id": "0841abf7-0904-4c2a-844c-f41174f69628",
        "timestamp": "2025-01-15T10:30:00Z",
        "source": "voice_service",
        "destination": "stt_service",
        "message_type": "request",
        "priority": "high",
        "ttl": 30,
        "payload": { "data": { "text": "hello" } }
    })
}

fn with(path: &[&str], value: Value) -> Value {
    let mut v = base();
    let (last, parents) = path.split_last().unwrap();
    let mut cur = &mut v;
    for p in parents {
        cur = cur.as_object_mut().unwrap().entry(p.to_string()).or_insert_with(|| json!({}));
    }
    cur.as_object_mut().unwrap().insert(last.to_string(), value);
    v
}

fn without(key: &str) -> Value {
    let mut v = base();
    v.as_object_mut().unwrap().remove(key);
    v
}

/// Parses from bytes and returns the error, with its field and its message.
fn refused(v: Value) -> (String, Problem, String) {
    let err = Envelope::parse(v.to_string().as_bytes()).expect_err("must be refused");
    let text = err.to_string();
    match err {
        EnvelopeError::Field { field, problem } => (field, problem, text),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn a_minimal_envelope_gets_its_defaults_written_out() {
    let env = Envelope::from_value(base()).unwrap();
    assert_eq!(env.priority, Priority::High);
    assert_eq!(env.routing.hops, 0);
    assert_eq!(env.routing.max_hops, DEFAULT_MAX_HOPS);
    assert_eq!(env.payload.metadata.version, "1.0");
    assert_eq!(env.payload.metadata.content_type, "application/json");
    assert_eq!(env.payload.metadata.encoding, "utf-8");
    let out = env.to_value();
    assert_eq!(out["routing"], json!({"hops": 0, "max_hops": 10, "route": []}));
    assert_eq!(out["payload"]["metadata"]["version"], "1.0");
    assert!(out.get("security").is_none() && out.get("correlation_id").is_none());
    // Normalised once, stable afterwards.
    let again = Envelope::parse(env.to_json().as_bytes()).unwrap();
    assert_eq!(again, env);
    assert_eq!(again.to_json(), env.to_json());
    // No priority: normal.
    assert_eq!(Envelope::from_value(without("priority")).unwrap().priority, Priority::Normal);
}

#[test]
fn unknown_fields_are_kept_everywhere_in_order() {
    let mut v = with(&["payload", "metadata", "checksum"], json!("abc"));
    v["zeta"] = json!(1);
    v["alpha"] = json!({"nested": [1, 2]});
    v["payload"]["trace"] = json!("t-1");
    v["routing"] = json!({"hops": 1, "max_hops": 5, "route": ["router"], "via": "edge-1"});
    v["security"] = json!({"signature": "sig", "algorithm": "ed25519"});
    let env = Envelope::from_value(v.clone()).unwrap();
    assert_eq!(env.extra.keys().collect::<Vec<_>>(), ["zeta", "alpha"]);
    assert_eq!(env.payload.metadata.extra["checksum"], "abc");
    assert_eq!(env.payload.extra["trace"], "t-1");
    assert_eq!(env.routing.extra["via"], "edge-1");
    assert_eq!(env.security.as_ref().unwrap().extra["algorithm"], "ed25519");
    let out = env.to_value();
    for path in [&["zeta"][..], &["alpha"], &["payload", "trace"], &["payload", "metadata", "checksum"]] {
        let get = |v: &Value| path.iter().fold(v.clone(), |v, k| v[*k].clone());
        assert_eq!(get(&out), get(&v), "{path:?}");
    }
    assert_eq!(out["routing"]["via"], "edge-1");
    assert_eq!(out["security"]["algorithm"], "ed25519");
    // Order of the unknown keys survives serialisation.
    let text = env.to_json();
    assert!(text.find("\"zeta\"").unwrap() < text.find("\"alpha\"").unwrap(), "{text}");
}

#[test]
fn syntax_errors_name_line_and_column() {
    let err = Envelope::parse(b"{\n  \"message_id\": \"x\",\n  oops\n}").unwrap_err();
    match &err {
        EnvelopeError::Syntax { line, column, .. } => assert_eq!((*line, *column), (3, 3), "{err}"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("not valid JSON at line 3, column 3: "), "{err}");
    assert!(matches!(Envelope::parse(b"[1, 2]"), Err(EnvelopeError::NotAnObject { found: "an array" })));
    assert!(matches!(Envelope::parse(b"\xff\xfe"), Err(EnvelopeError::Syntax { .. })));
    assert!(matches!(Envelope::parse(b""), Err(EnvelopeError::Syntax { .. })));
}

#[test]
fn every_required_field_is_named_when_missing() {
    for key in ["message_id", "timestamp", "source", "destination", "message_type", "payload"] {
        let (field, problem, text) = refused(without(key));
        assert_eq!((field.as_str(), &problem), (key, &Problem::Missing), "{text}");
        assert_eq!(text, format!("`{key}` is missing"));
    }
    let (field, problem, _) = refused(with(&["payload"], json!({"metadata": {}})));
    assert_eq!((field.as_str(), problem), ("payload.data", Problem::Missing));
    // `data` may be null, but must be there.
    assert!(Envelope::from_value(with(&["payload"], json!({"data": null}))).is_ok());
}

#[test]
fn bad_values_are_refused_with_their_reason() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(&["message_id"], json!("")), "message_id", "must not be empty"),
        (with(&["message_id"], json!("x".repeat(129))), "message_id", "is 129 bytes long; at most 128 are allowed"),
        (with(&["message_id"], json!("a\nb")), "message_id", "contains a control character"),
        (with(&["message_id"], json!(42)), "message_id", "must be a string, found a number"),
        (with(&["timestamp"], json!("2025-01-15 10:30")), "timestamp", "is not an RFC 3339 timestamp"),
        (with(&["timestamp"], json!("2025-01-15T10:30:00")), "timestamp", "is not an RFC 3339 timestamp"),
        (with(&["source"], json!("")), "source", "must not be empty"),
        (with(&["source"], json!("broadcast")), "source", "a source must be a service name or `device_id:ID`"),
        (with(&["source"], json!("capability:x")), "source", "a source must be a service name"),
        (with(&["source"], json!("a/b")), "source", "`/`, `+` and `#` cannot appear"),
        (with(&["destination"], json!("")), "destination", "must not be empty"),
        (with(&["destination"], json!("room:kitchen")), "destination", "has unknown value `room:kitchen`"),
        (with(&["destination"], json!("capability:")), "destination", "nothing follows the `:`"),
        (with(&["destination"], json!("alicia/#")), "destination", "is not a usable topic: `+` and `#` are wildcards"),
        (with(&["destination"], json!("$SYS/broker/x")), "destination", "reserved for the broker"),
        (with(&["destination"], json!("device_id:a/b")), "destination", "cannot appear in an MQTT topic level"),
        (
            with(&["destination"], json!("service_name|broadcast|capability:capability_name")),
            "destination",
            "a template listing the alternatives",
        ),
        (
            with(&["message_type"], json!("request|response|event|command|heartbeat")),
            "message_type",
            "a template listing the alternatives: choose one of them (request, response, event, command, heartbeat)",
        ),
        (with(&["priority"], json!("low|normal|high|critical")), "priority", "a template listing the alternatives"),
        (
            with(&["message_type"], json!("query")),
            "message_type",
            "has unknown value `query`; expected one of: request, response, event, command, heartbeat",
        ),
        (with(&["message_type"], json!("Request")), "message_type", "has unknown value `Request`"),
        (with(&["priority"], json!("urgent")), "priority", "expected one of: low, normal, high, critical"),
        (with(&["ttl"], json!(0)), "ttl", "must be a whole number from 1 to 4294967295, found 0"),
        (with(&["ttl"], json!(-5)), "ttl", "found -5"),
        (with(&["ttl"], json!(1.5)), "ttl", "found 1.5"),
        (with(&["ttl"], json!(4294967296u64)), "ttl", "found 4294967296"),
        (with(&["ttl"], json!("30")), "ttl", "must be a number, found a string"),
        (with(&["correlation_id"], json!("")), "correlation_id", "must not be empty"),
        (with(&["correlation_id"], json!(7)), "correlation_id", "must be a string, found a number"),
        (with(&["payload"], json!("text")), "payload", "must be an object, found a string"),
        (with(&["payload", "metadata"], json!([])), "payload.metadata", "must be an object, found an array"),
        (with(&["payload", "metadata", "version"], json!(1)), "payload.metadata.version", "must be a string"),
        (with(&["payload", "metadata", "encoding"], json!("")), "payload.metadata.encoding", "must not be empty"),
        (
            with(&["payload", "metadata", "status"], json!("failed")),
            "payload.metadata.status",
            "expected one of: ok, error",
        ),
        (with(&["security"], json!({"key_id": 7})), "security.key_id", "must be a string, found a number"),
        (with(&["routing"], json!({"hops": 11, "max_hops": 10})), "routing.hops", "is 11, more than max_hops (10)"),
        (with(&["routing"], json!({"hops": 1})), "routing.hops", ""),
        (with(&["routing"], json!({"max_hops": 0})), "routing.max_hops", "from 1 to"),
        (with(&["routing"], json!({"route": "router"})), "routing.route", "must be an array, found a string"),
        (with(&["routing"], json!({"route": ["router", 5]})), "routing.route[1]", "must be a string, found a number"),
        (with(&["routing"], json!({"route": ["router", ""]})), "routing.route[1]", "must not be empty"),
    ];
    for (value, want_field, want_text) in cases {
        if want_text.is_empty() {
            // Not an error: routing.hops 1 of the default 10.
            assert!(Envelope::from_value(value).is_ok());
            continue;
        }
        let (field, _, text) = refused(value.clone());
        assert_eq!(field, want_field, "{text}");
        assert!(text.contains(want_text), "{want_field}: {text:?} should contain {want_text:?}");
        assert!(text.starts_with(&format!("`{want_field}` ")), "{text}");
    }
}

#[test]
fn null_optional_fields_count_as_absent() {
    let mut v = base();
    v["security"] = Value::Null;
    v["routing"] = Value::Null;
    v["priority"] = Value::Null;
    v["correlation_id"] = Value::Null;
    v["ttl"] = Value::Null;
    let env = Envelope::from_value(v).unwrap();
    assert!(env.security.is_none() && env.correlation_id.is_none() && env.ttl.is_none());
    assert_eq!(env.priority, Priority::Normal);
}

#[test]
fn destinations_and_priorities() {
    for (wire, dest) in [
        ("broadcast", Destination::Broadcast),
        ("capability:audio_playback", Destination::capability("audio_playback")),
        ("device_id:sonos_kitchen_001", Destination::device("sonos_kitchen_001")),
        ("stt_service", Destination::service("stt_service")),
        ("alicia/system/discovery/register", Destination::topic("alicia/system/discovery/register")),
    ] {
        let env = Envelope::from_value(with(&["destination"], json!(wire))).unwrap();
        assert_eq!(env.destination, dest);
        assert_eq!(env.to_value()["destination"], wire);
    }
    assert!(
        Priority::Low < Priority::Normal && Priority::Normal < Priority::High && Priority::High < Priority::Critical
    );
    let mut ps = vec![Priority::Critical, Priority::Low, Priority::High, Priority::Normal];
    ps.sort();
    assert_eq!(ps, [Priority::Low, Priority::Normal, Priority::High, Priority::Critical]);
}

#[test]
fn builders_fill_id_time_and_defaults() {
    let req = Envelope::request("voice_service", Destination::service("stt_service"), json!({"x": 1}))
        .with_priority(Priority::High)
        .with_ttl(5);
    req.validate().unwrap();
    assert_eq!(Uuid::parse_str(req.message_id.as_str()).unwrap().get_version_num(), 4);
    assert_eq!(req.message_type, MessageType::Request);
    let age = SystemTime::now().duration_since(req.timestamp.to_system_time()).unwrap();
    assert!(age < Duration::from_secs(2));
    assert!(req.timestamp.to_string().ends_with('Z'));
    let other = Envelope::request("voice_service", Destination::service("stt_service"), json!(null));
    assert_ne!(req.message_id, other.message_id);
    // Round trip of a built envelope.
    assert_eq!(Envelope::parse(&req.to_vec()).unwrap(), req);

    let hb = Envelope::heartbeat("stt_service", json!({"ok": true}));
    assert_eq!((hb.message_type, &hb.destination), (MessageType::Heartbeat, &Destination::Broadcast));
    assert_eq!(Envelope::event("a", Destination::Broadcast, json!(1)).message_type, MessageType::Event);
    assert_eq!(Envelope::command("a", Destination::device("d1"), json!(1)).message_type, MessageType::Command);

    // A built envelope with a bad value is caught by validate().
    let bad = Envelope::request("voice_service", Destination::service("a/b"), json!(null));
    assert_eq!(bad.validate().unwrap_err().field_name(), Some("destination"));
    assert_eq!(req.clone().with_ttl(0).validate().unwrap_err().field_name(), Some("ttl"));
}

#[test]
fn replies_correlate_by_message_id() {
    let req = Envelope::request("voice_service", Destination::service("stt_service"), json!({"audio": "..."}))
        .with_priority(Priority::Critical)
        .with_ttl(7);
    let resp = Envelope::reply_to(&req, "stt_service", json!({"text": "hello"}));
    resp.validate().unwrap();
    assert_eq!(resp.message_type, MessageType::Response);
    assert_eq!(resp.correlation_id.as_ref(), Some(&req.message_id));
    assert_eq!(resp.destination, Destination::service("voice_service"));
    assert_eq!((resp.priority, resp.ttl), (Priority::Critical, Some(7)));
    assert_eq!(resp.source, "stt_service");
    assert!(resp.reply_error().is_none());
    let wire = resp.to_value();
    assert_eq!(wire["correlation_id"], req.message_id.to_string());
    assert_eq!(Envelope::from_value(wire).unwrap().correlation_id, Some(req.message_id.clone()));

    // A device's request is answered to the device.
    let dev_req = Envelope::request("device_id:sonos_kitchen_001", Destination::service("device_registry"), json!({}));
    let r = Envelope::reply_to(&dev_req, "device_registry", json!({"registered": true}));
    assert_eq!(r.destination, Destination::device("sonos_kitchen_001"));

    let err = Envelope::error_reply(&req, "stt_service", "unsupported_format", "audio_format `ogg` is not supported");
    assert_eq!(err.payload.metadata.status, Some(ReplyStatus::Error));
    let parsed = Envelope::parse(&err.to_vec()).unwrap();
    let e = parsed.reply_error().expect("an error reply");
    assert_eq!(e.code, "unsupported_format");
    assert_eq!(e.message, "audio_format `ogg` is not supported");
    assert_eq!(parsed.to_value()["payload"]["metadata"]["status"], "error");
}

#[test]
fn expiry_is_timestamp_plus_ttl() {
    // base(): sent 2025-01-15T10:30:00Z with a ttl of 30 s.
    let env = Envelope::from_value(base()).unwrap();
    let sent = Timestamp::parse("2025-01-15T10:30:00Z").unwrap().to_system_time();
    assert_eq!(env.expires_at(), Some(sent + Duration::from_secs(30)));
    assert!(!env.is_expired(sent));
    assert!(!env.is_expired(sent + Duration::from_secs(30)));
    assert!(env.is_expired(sent + Duration::from_secs(30) + Duration::from_millis(1)));
    assert_eq!(env.remaining_ttl(sent + Duration::from_secs(10)), Some(Duration::from_secs(20)));
    assert_eq!(env.remaining_ttl(sent + Duration::from_secs(99)), Some(Duration::ZERO));
    // Offsets are honoured: 11:30+01:00 is 10:30Z.
    let env2 = Envelope::from_value(with(&["timestamp"], json!("2025-01-15T11:30:00+01:00"))).unwrap();
    assert_eq!(env2.expires_at(), env.expires_at());
    assert_eq!(env2.to_value()["timestamp"], "2025-01-15T11:30:00+01:00");
    // A fresh envelope is not expired.
    let fresh = Envelope::event("a", Destination::Broadcast, json!(null)).with_ttl(1);
    assert!(!fresh.is_expired(SystemTime::now()));
}

/// Without a ttl an envelope never expires by itself, however far its timestamp is from now:
/// devices have bad clocks (one that booted without network time says 1970).
#[test]
fn without_a_ttl_nothing_expires_whatever_the_clock_says() {
    for stamp in ["1970-01-01T00:00:00Z", "2025-01-08T14:30:00.000Z", "2199-12-31T23:59:59Z"] {
        let mut v = without("ttl");
        v["timestamp"] = json!(stamp);
        let env = Envelope::from_value(v).unwrap();
        assert_eq!(env.ttl, None);
        assert_eq!(env.expires_at(), None);
        assert_eq!(env.remaining_ttl(SystemTime::now()), None);
        assert!(!env.is_expired(SystemTime::now()), "{stamp}");
        assert!(!env.is_expired(SystemTime::now() + Duration::from_secs(100 * 365 * 86_400)), "{stamp}");
        // Written back without a ttl: no lifetime is invented.
        assert!(env.to_value().get("ttl").is_none());
    }
    // With a ttl, the same old timestamp does expire.
    let mut old = base();
    old["timestamp"] = json!("1970-01-01T00:00:00Z");
    assert!(Envelope::from_value(old).unwrap().is_expired(SystemTime::now()));
    assert!(Envelope::event("a", Destination::Broadcast, json!(1)).without_ttl().expires_at().is_none());
}

/// Ids are the sender's: any non-empty string, kept byte for byte (case included).
#[test]
fn message_ids_are_kept_as_written() {
    for id in ["0841ABF7-0904-4C2A-844C-F41174F69628", "device-reg-001", "voice-stt-001", "42"] {
        let env = Envelope::from_value(with(&["message_id"], json!(id))).unwrap();
        assert_eq!(env.message_id, MessageId::parse(id).unwrap());
        assert_eq!(env.to_value()["message_id"], id);
        let reply = Envelope::reply_to(&env, "stt_service", json!({}));
        assert_eq!(reply.to_value()["correlation_id"], id);
    }
}

/// A message with several mistakes is refused with all of them, in format order.
#[test]
fn every_problem_is_reported_at_once() {
    let v = json!({
        "message_id": "",
        "timestamp": "yesterday",
        "source": "broadcast",
        "destination": "room:kitchen",
        "message_type": "query",
        "ttl": 0,
        "payload": { "metadata": { "version": "" } },
        "routing": { "hops": 3, "max_hops": 2, "route": ["", 5] }
    });
    let err = Envelope::from_value(v).unwrap_err();
    let fields: Vec<String> = err.problems().into_iter().map(|FieldError { field, .. }| field).collect();
    assert_eq!(
        fields,
        [
            "message_id",
            "timestamp",
            "source",
            "destination",
            "message_type",
            "ttl",
            "payload.data",
            "payload.metadata.version",
            "routing.route[0]",
            "routing.route[1]",
            "routing.hops",
        ],
        "{err}"
    );
    assert!(matches!(err, EnvelopeError::Fields(_)));
    let text = err.to_string();
    assert!(text.starts_with("11 problems: `message_id` must not be empty; `timestamp` is not an RFC 3339"), "{text}");
    assert_eq!(err.field_name(), Some("message_id"));
    // One problem stays a single field error.
    assert!(matches!(Envelope::from_value(without("source")), Err(EnvelopeError::Field { .. })));
}

#[test]
fn serde_users_get_the_same_validation() {
    let env: Envelope = serde_json::from_value(base()).unwrap();
    assert_eq!(env.source, "voice_service");
    let err = serde_json::from_value::<Envelope>(with(&["ttl"], json!(0))).unwrap_err();
    assert!(err.to_string().contains("`ttl` must be a whole number from 1"), "{err}");
    let parsed: Envelope = base().to_string().parse().unwrap();
    assert_eq!(parsed, env);
}
