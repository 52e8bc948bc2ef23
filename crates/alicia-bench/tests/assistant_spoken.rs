//! The assistant scenario (spoken commands through the whole voice chain) end to end with tiny
//! settings, against Alicia's broker in this process, on the real models and Home Assistant's
//! sentences. Not a speed claim: the test checks that every command reached its light and was
//! answered, in both phases, and that the JSON report has its fields.

#[path = "../../alicia-intents/tests/common/mod.rs"]
mod ha;

use alicia_bench::{BenchArgs, Scenario};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spoken_assistant_scenario_runs_end_to_end() {
    let (_broker, addr) = alicia_testkit::alicia_broker().await;
    let args = BenchArgs {
        port: addr.port(),
        scenario: Scenario::Assistant,
        requests: 2,
        sessions: 2,
        quiet: true,
        intents: Some(ha::data_dir().join("en.json")),
        ..BenchArgs::default()
    };
    let r = alicia_bench::spoken::run(&args).await.unwrap();
    let text = r.text();
    let v: Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(v["scenario"], "assistant");
    for phase in ["alone", "together"] {
        let p = &v[phase];
        assert_eq!((p["commands"].as_u64(), p["failed"].as_u64()), (Some(2), Some(0)), "{phase}: {text}");
        for k in ["first_audio_ms", "device_ms", "transcript_ms", "pipeline_command_sent_ms", "pipeline_first_audio_ms"]
        {
            assert_eq!(p[k]["n"], 2, "{phase}.{k}: {text}");
        }
        // The device hears its command before the answer is spoken (it is sent first).
        assert!(p["device_ms"]["p50"].as_f64().unwrap() <= p["first_audio_ms"]["p50"].as_f64().unwrap(), "{text}");
    }
    assert_eq!(v["together"]["satellites"], 2);
}
