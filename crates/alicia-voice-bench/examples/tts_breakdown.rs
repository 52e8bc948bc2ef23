//! Where a short sentence's time goes: espeak-ng (a cold subprocess, and a waiting one) vs the
//! Piper model. `cargo run --release -p alicia-voice-bench --example tts_breakdown`
use std::time::{Duration, Instant};

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let store = alicia_models::ModelStore::locate(None, None).unwrap();
    let never = alicia_models::FetchPolicy::Never;
    let q = alicia_models::Progress::Quiet;
    alicia_onnx::init(&alicia_models::onnxruntime(&store, never, q).unwrap()).unwrap();
    let voice = alicia_models::piper_voice(&store, "en_US-joe-medium", never, q).unwrap();
    let v = alicia_tts::Voice::load(voice.paths.main(), 1, 2, 4).unwrap();
    let text = "Turn on the kitchen light.";
    let (mut cold, mut warm, mut speak) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..22 {
        // Requests some time apart, as spoken ones are (a waiting espeak-ng is ready).
        std::thread::sleep(Duration::from_millis(150));
        let t = Instant::now();
        std::process::Command::new("espeak-ng").args(["-q", "--ipa", "-v", "en-us", text]).output().unwrap();
        let c = t.elapsed().as_secs_f64() * 1000.0;
        std::thread::sleep(Duration::from_millis(150));
        let t = Instant::now();
        alicia_tts::phonemes::phonemize(text, "en-us").unwrap();
        let w = t.elapsed().as_secs_f64() * 1000.0;
        alicia_tts::phonemes::prepare("en-us");
        std::thread::sleep(Duration::from_millis(150));
        let t = Instant::now();
        v.speak(text, 1.0).unwrap();
        let s = t.elapsed().as_secs_f64() * 1000.0;
        if i >= 2 {
            cold.push(c);
            warm.push(w);
            speak.push(s);
        }
    }
    println!(
        "p50: espeak-ng cold {:.1} ms, waiting {:.1} ms; sentence (phonemes + model) {:.1} ms",
        p50(cold),
        p50(warm),
        p50(speak)
    );
}
