//! Alicia's Wyoming servers, on the real models, driven by the reference client (PyPI
//! `wyoming`, installed by scripts/test.sh) from Python: describe/info, transcription of WAV
//! files in several formats, synthesis read back and transcribed, and bad requests.

use alicia_models::{FetchPolicy, ModelStore, Progress};
use alicia_stt::vad::VadConfig;
use alicia_stt::{SttConfig, SttEngine};
use alicia_tts::{TtsConfig, TtsEngine};
use alicia_wyoming::asr::AsrServer;
use alicia_wyoming::tts::TtsServer;
use alicia_wyoming::ServerConfig;
use serde_json::Value;

mod common;
use common::variant;

fn espeak_wav(text: &str) -> Vec<u8> {
    let out = std::process::Command::new("espeak-ng").args(["-v", "en-us", "--stdout", text]).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn words(v: &Value) -> String {
    let s = v["text"].as_str().unwrap_or_else(|| panic!("no text in {v}")).to_lowercase();
    let kept: String = s.chars().filter(|c| c.is_alphanumeric() || c.is_whitespace()).collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_client_transcribes_and_synthesizes() {
    let store = ModelStore::locate(None, None).unwrap();
    let need = "(scripts/test.sh fetches the models)";
    let ort = alicia_models::onnxruntime(&store, FetchPolicy::Never, Progress::Quiet)
        .unwrap_or_else(|e| panic!("{e} {need}"));
    alicia_onnx::init(&ort).unwrap();
    let whisper = alicia_models::whisper(&store, "tiny.en", FetchPolicy::Never, Progress::Quiet).unwrap();
    let voice = alicia_models::piper_voice(&store, "en_US-joe-medium", FetchPolicy::Never, Progress::Quiet).unwrap();
    let vad = alicia_models::silero_vad(&store, FetchPolicy::Never, Progress::Quiet).unwrap();

    let stt = SttEngine::new(SttConfig::new(whisper.paths.main())).unwrap();
    let tts = TtsEngine::new(&[voice.paths.main().to_path_buf()], TtsConfig::default()).unwrap();
    let asr_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tts_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (asr_port, tts_port) = (asr_listener.local_addr().unwrap().port(), tts_listener.local_addr().unwrap().port());
    let asr = AsrServer { engine: stt, model_name: "tiny.en".into(), vad: Some((vad, VadConfig::default())) };
    tokio::spawn(asr.serve(asr_listener, ServerConfig::default()));
    tokio::spawn(TtsServer { engine: tts, lead_in: 0.0 }.serve(tts_listener, ServerConfig::default()));

    let dir = tempfile::tempdir().unwrap();
    let (info, mono) = alicia_audio::decode_wav(&espeak_wav("turn on the kitchen light"), None).unwrap();
    let from = info.sample_rate;
    let files = vec![
        variant("speech", &mono, from, from, 2, 1, dir.path()),
        variant("speech", &mono, from, 44100, 2, 2, dir.path()),
        variant("speech", &mono, from, 48000, 3, 1, dir.path()),
        variant("speech", &mono, from, 8000, 2, 1, dir.path()),
        variant("speech", &mono, from, from, 1, 1, dir.path()),
        variant("speech", &mono, from, 16000, 4, 2, dir.path()),
    ];

    let script = "tests/wyoming_client.py";
    let args: Vec<String> = [asr_port.to_string(), tts_port.to_string()].into_iter().chain(files).collect();
    let r = common::reference_client(script, args).await;

    assert_eq!(r["asr_info"]["program"], "alicia-whisper");
    assert_eq!(r["asr_info"]["model"], "tiny.en");
    assert_eq!(r["asr_info"]["languages"], serde_json::json!(["en"]));
    assert_eq!(r["tts_info"]["voices"], serde_json::json!(["en_US-joe-medium"]));
    assert_eq!(r["tts_info"]["languages"], serde_json::json!([["en_US"]]));

    let heard: Vec<&Value> = r["files"].as_array().unwrap().iter().collect();
    assert_eq!(heard.len(), 6);
    for h in &heard {
        let (got, want) = (words(h), "turn on the kitchen light");
        if h["format"][0] == 8000 {
            // Telephone band (nothing above 4 kHz): tiny.en may mishear one word ("life").
            let diff = got.split(' ').zip(want.split(' ')).filter(|(a, b)| a != b).count();
            assert!(got.split(' ').count() == 5 && diff <= 1, "{h}");
        } else {
            assert_eq!(got, want, "{h}");
        }
        assert_eq!(h["language"], "en");
    }
    assert_eq!(r["bad_width"]["error"], "unsupported_format", "{}", r["bad_width"]);
    assert_eq!(r["silence"]["text"], "", "{}", r["silence"]);
    assert_eq!(words(&r["after_errors"]), "turn on the kitchen light");

    let t = &r["tts"];
    assert_eq!(t["format"], serde_json::json!([22050, 2, 1]), "{t}");
    let secs = t["bytes"].as_u64().unwrap() as f64 / 2.0 / 22050.0;
    assert!((1.0..5.0).contains(&secs), "{secs} s");
    assert!(t["chunks"].as_u64().unwrap() > 5);
    assert_eq!(words(&r["tts_heard"]), "turn off the living room lights", "{}", r["tts_heard"]);
    assert_eq!(r["tts_by_language"]["format"], serde_json::json!([22050, 2, 1]));
    assert_eq!(r["tts_unknown_voice"]["error"], "unknown_voice", "{}", r["tts_unknown_voice"]);
    assert_eq!(r["tts_empty"]["error"], "empty_text");
    assert!(r["garbage_reply"].as_str().unwrap().contains("protocol_error"), "{}", r["garbage_reply"]);
    assert_eq!(r["still_serving"], "alicia-whisper");
}
