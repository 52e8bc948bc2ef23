//! The voice scenario end to end with tiny settings, against Alicia's broker in this process:
//! the real models (from the model store: `alicia models fetch`, as scripts/test.sh runs it),
//! the real services, registry and router on the bus. Not a speed claim: the test checks that
//! every phase ran, nothing was lost, and the JSON report has its fields.

use alicia_bench::{BenchArgs, Scenario};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_scenario_runs_end_to_end() {
    let (_broker, addr) = alicia_testkit::alicia_broker().await;
    let args = BenchArgs {
        port: addr.port(),
        scenario: Scenario::Voice,
        requests: 2,
        sessions: 2,
        utterances: 2,
        duration: 3.0,
        no_reference: true,
        quiet: true,
        ..BenchArgs::default()
    };
    let r = alicia_bench::voice::run(&args).await.unwrap();
    let text = r.to_string();
    let v: Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["scenario"], "voice");

    // STT through the router: both requests answered, with the service's timings.
    let stt = &v["stt"];
    assert_eq!((stt["failed"].as_u64(), stt["round_trip"]["samples"].as_u64()), (Some(0), Some(2)), "{text}");
    for k in ["service_total", "decode_audio", "queue", "inference"] {
        assert_eq!(stt[k]["samples"], 2, "stt.{k}: {text}");
    }
    assert!(stt["utterance"]["seconds"].as_f64().unwrap() > 0.5, "{text}");
    assert!(!stt["heard"].as_str().unwrap().is_empty(), "{text}");

    // TTS to a satellite: first audio before the end, with the service's timings.
    let tts = &v["tts"];
    assert_eq!((tts["failed"].as_u64(), tts["first_audio"]["samples"].as_u64()), (Some(0), Some(2)), "{text}");
    assert!(tts["first_audio"]["p50_ms"].as_f64().unwrap() <= tts["total"]["p50_ms"].as_f64().unwrap(), "{text}");
    for k in ["service_first_audio", "queue", "inference"] {
        assert_eq!(tts[k]["samples"], 2, "tts.{k}: {text}");
    }
    assert!(tts["audio_seconds"].as_f64().unwrap() > 0.5, "{text}");

    // Word error rate on both synthesisers' utterances.
    let wer = v["wer"].as_array().unwrap();
    assert_eq!(wer.len(), 2);
    for w in wer {
        assert_eq!(w["utterances"], 2, "{w}");
        assert!(w["alicia"].as_f64().unwrap() >= 0.0 && w.get("faster_whisper_float32").is_some(), "{w}");
    }

    // Sessions at once: each satellite completed at least one whole session, none refused.
    let s = &v["sessions"];
    assert_eq!(
        (s["sessions"].as_u64(), s["busy"].as_u64(), s["errors"].as_u64()),
        (Some(2), Some(0), Some(0)),
        "{text}"
    );
    assert!(s["completed"].as_u64().unwrap() >= 2, "{text}");
    for k in [
        "stt_after_stop",
        "stt_queue",
        "stt_inference",
        "tts_first_audio",
        "tts_total",
        "tts_queue",
        "tts_inference",
        "session_total",
    ] {
        assert!(s[k]["samples"].as_u64().unwrap() >= 2, "sessions.{k}: {text}");
    }
    assert!(s["audio_in_seconds"].as_f64().unwrap() > 0.0 && s["per_minute"].as_f64().unwrap() > 0.0, "{text}");

    // The references were skipped as asked; the fields are there.
    assert_eq!(v["reference"]["skipped"], "--no-reference");
    for k in [
        "stt_p50_faster_whisper_float32_over_alicia",
        "stt_p50_faster_whisper_int8_over_alicia",
        "tts_first_audio_p50_piper_over_alicia",
    ] {
        assert!(v["ratios"].get(k).is_some(), "{k}");
    }
    assert_eq!(v["goals"]["sessions_sustained"], true, "{text}");
    assert!(v["goals"]["stt_met"].is_boolean() && v["goals"]["tts_met"].is_boolean());
}
