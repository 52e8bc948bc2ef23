//! The Whisper engine on the real tiny.en model (fetched by `alicia models fetch`, as
//! scripts/test.sh does), on speech synthesised by espeak-ng.

use alicia_models::{FetchPolicy, ModelStore, Progress};
use alicia_stt::{SttConfig, SttEngine, SttError};

fn model() -> std::path::PathBuf {
    let store = ModelStore::locate(None, None).unwrap();
    match alicia_models::whisper(&store, "tiny.en", FetchPolicy::Never, Progress::Quiet) {
        Ok(r) => r.paths.main().to_path_buf(),
        Err(e) => panic!("{e}"),
    }
}

fn espeak(text: &str) -> Vec<u8> {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "--stdout", text])
        .output()
        .expect("espeak-ng runs (scripts/test.sh installs it)");
    assert!(out.status.success());
    out.stdout
}

fn words(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn transcribes_espeak_speech() {
    let engine = SttEngine::new(SttConfig::new(model())).unwrap();
    for text in ["turn on the kitchen light", "what is the weather tomorrow"] {
        let t = engine.transcribe_wav(&espeak(text), Some("en-US")).await.unwrap();
        eprintln!("{text:?} -> {t:?}");
        assert_eq!(words(&t.text), text);
        assert_eq!(t.language, "en");
        assert!(t.confidence > 0.3 && t.confidence <= 1.0, "{}", t.confidence);
    }
}

#[tokio::test]
async fn a_full_pool_answers_busy_instead_of_queueing() {
    let mut cfg = SttConfig::new(model());
    cfg.workers = 1;
    cfg.queue = 1;
    let engine = SttEngine::new(cfg).unwrap();
    assert_eq!(engine.capacity(), 2);
    let wav = espeak("good morning");
    let (a, b, c) = tokio::join!(
        engine.transcribe_wav(&wav, None),
        engine.transcribe_wav(&wav, None),
        engine.transcribe_wav(&wav, None)
    );
    // The first two are decoding/waiting when the third arrives.
    assert!(matches!(c, Err(SttError::Busy { in_flight: 2, limit: 2 })), "{c:?}");
    assert_eq!(c.unwrap_err().code(), "busy");
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(words(&a.text), "good morning");
    assert_eq!(a.text, b.text);
    assert!(b.queue_ms > 0.0 && b.queue_ms >= a.queue_ms, "the second waited for the first");
    assert_eq!(engine.in_flight(), 0);
    // Free again.
    engine.transcribe_wav(&wav, None).await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let mut cfg = SttConfig::new(model());
    cfg.max_audio_seconds = 3.0;
    let engine = SttEngine::new(cfg).unwrap();
    let e = engine.transcribe_wav(b"definitely not a wav", None).await.unwrap_err();
    assert_eq!(e.code(), "not_wav", "{e}");
    let e = engine.transcribe_wav(&alicia_audio::encode_wav(&[], 16000, 1), None).await.unwrap_err();
    assert_eq!(e.code(), "empty_audio", "{e}");
    let long = alicia_audio::encode_wav(&vec![0; 16000 * 4], 16000, 1);
    let e = engine.transcribe_wav(&long, None).await.unwrap_err();
    assert_eq!(e.code(), "audio_too_long", "{e}");
    assert!(e.to_string().contains("4.0 s") && e.to_string().contains("3.0 s"), "{e}");
    let e = engine.transcribe(vec![0.0; 16000], Some("xx")).await.unwrap_err();
    assert_eq!(e.code(), "unsupported_language", "{e}");
    let e = engine.transcribe(vec![0.0; 16000], Some("de-DE")).await.unwrap_err();
    assert!(e.to_string().contains("English only"), "{e}");
    let e = engine.transcribe(Vec::new(), None).await.unwrap_err();
    assert_eq!(e.code(), "empty_audio");

    let e = SttEngine::new(SttConfig::new("/nonexistent/ggml-tiny.en.bin")).unwrap_err();
    assert_eq!(e.code(), "model_unavailable", "{e}");
    let junk = tempfile_with(b"ggml? no");
    let e = SttEngine::new(SttConfig::new(&junk)).unwrap_err();
    assert_eq!(e.code(), "model_unavailable", "{e}");
}

fn tempfile_with(bytes: &[u8]) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("alicia-stt-junk-{}.bin", std::process::id()));
    std::fs::write(&p, bytes).unwrap();
    p
}
