//! The engine-level voice benchmark. Run on a quiet machine:
//!
//!     flock /work/cpu.lock cargo bench -p alicia-voice-bench --bench voice_engine
//!
//! (`ALICIA_BENCH_ITERS`, default 20; `ALICIA_BENCH_NO_REFERENCE=1` skips the Python
//! references.) Needs the models (`alicia models fetch`), espeak-ng, and for the references
//! `pip install faster-whisper piper-tts`. Prints a Markdown report.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use alicia_models::{FetchPolicy, ModelStore, Progress};
use alicia_stt::{SttConfig, SttEngine};
use alicia_tts::phonemes::{phonemize, sentences, PhonemeIds};
use alicia_tts::{SpeakOptions, TtsConfig, TtsEngine};
use alicia_voice_bench::{wer, CORPUS, TTS_TEXT};
use serde_json::{json, Value};

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

fn espeak(text: &str) -> Vec<f32> {
    let out = Command::new("espeak-ng").args(["-v", "en-us", "--stdout", text]).output().expect("espeak-ng");
    alicia_audio::wav_to_16k_mono(&out.stdout, None).unwrap()
}

fn write_wav(path: &Path, samples16k: &[f32]) {
    std::fs::write(path, alicia_audio::encode_wav(&alicia_audio::f32_to_i16(samples16k), 16000, 1)).unwrap();
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let iters: usize = std::env::var("ALICIA_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let store = ModelStore::locate(None, None).unwrap();
    let never = |e: alicia_models::ModelError| -> ! { panic!("{e}") };
    let ort = alicia_models::onnxruntime(&store, FetchPolicy::Never, Progress::Quiet).unwrap_or_else(|e| never(e));
    alicia_onnx::init(&ort).unwrap();
    let whisper =
        alicia_models::whisper(&store, "tiny.en", FetchPolicy::Never, Progress::Quiet).unwrap_or_else(|e| never(e));
    let voice = alicia_models::piper_voice(&store, "en_US-joe-medium", FetchPolicy::Never, Progress::Quiet)
        .unwrap_or_else(|e| never(e));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();

    let stt = SttEngine::new(SttConfig::new(whisper.paths.main())).unwrap();
    let tts = TtsEngine::new(&[voice.paths.main().to_path_buf()], TtsConfig { cache_entries: 0, ..Default::default() })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The corpus, synthesised twice, written as 16 kHz mono WAV for both recognisers.
    eprintln!("synthesising the corpus ...");
    let mut corpus = Vec::new(); // (synth, text, path, samples)
    for (i, text) in CORPUS.iter().enumerate() {
        let e = espeak(text);
        let p = dir.path().join(format!("espeak-{i}.wav"));
        write_wav(&p, &e);
        corpus.push(("espeak-ng", *text, p, e));
        let speech = rt.block_on(tts.synthesize(text, &SpeakOptions::default())).unwrap();
        let s = alicia_audio::wav_to_16k_mono(&speech.to_wav(), None).unwrap();
        let p = dir.path().join(format!("piper-{i}.wav"));
        write_wav(&p, &s);
        corpus.push(("piper", *text, p, s));
    }

    // STT latency: the corpus utterance closest to 2 s.
    let (lat_synth, lat_text, lat_path, lat_audio) = corpus
        .iter()
        .min_by(|a, b| (a.3.len() as f64 / 16000.0 - 2.0).abs().total_cmp(&(b.3.len() as f64 / 16000.0 - 2.0).abs()))
        .unwrap()
        .clone();
    let lat_secs = lat_audio.len() as f64 / 16000.0;
    eprintln!("STT latency on {lat_synth} {lat_text:?} ({lat_secs:.2} s) ...");
    for _ in 0..2 {
        stt.transcribe_blocking(lat_audio.clone(), Some("en")).unwrap();
    }
    let mut stt_ms = Vec::new();
    let mut lat_heard = String::new();
    for _ in 0..iters {
        let t = Instant::now();
        let r = stt.transcribe_blocking(lat_audio.clone(), Some("en")).unwrap();
        stt_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        lat_heard = r.text;
    }

    // WER.
    eprintln!("word error rate ...");
    let mut hyps = Vec::new();
    for (_, _, _, audio) in &corpus {
        hyps.push(stt.transcribe_blocking(audio.clone(), Some("en")).unwrap().text);
    }

    // TTS time to first audio (cache off), and the whole sentence.
    eprintln!("TTS time to first audio ...");
    let mut ttfa = Vec::new();
    let mut total = Vec::new();
    let mut audio_s = 0.0;
    rt.block_on(async {
        for i in 0..iters + 2 {
            // Requests 150 ms apart, as spoken ones are at least: the waiting espeak-ng process
            // the engine keeps is ready again (back to back, its start-up would compete with
            // the model for the two cores).
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            let t = Instant::now();
            let mut rx = tts.stream(TTS_TEXT, &SpeakOptions::default());
            let mut first = None;
            let mut n = 0;
            while let Some(c) = rx.recv().await {
                let c = c.unwrap();
                first.get_or_insert_with(|| t.elapsed().as_secs_f64() * 1000.0);
                n += c.samples.len();
                if c.last {
                    break;
                }
            }
            if i >= 2 {
                ttfa.push(first.unwrap());
                total.push(t.elapsed().as_secs_f64() * 1000.0);
                audio_s = n as f64 / 22050.0;
            }
        }
    });

    // Our phoneme ids for the id check against piper-tts.
    let json_text = std::fs::read_to_string(voice.paths.files[1].as_path()).unwrap();
    let vj: Value = serde_json::from_str(&json_text).unwrap();
    let map = serde_json::from_value(vj["phoneme_id_map"].clone()).unwrap();
    let ids = PhonemeIds::new(map).unwrap();
    let ours: Vec<(String, Vec<Vec<i64>>)> = CORPUS
        .iter()
        .map(|t| {
            let per_sentence = sentences(t).iter().map(|s| ids.ids(&phonemize(s, "en-us").unwrap()).0).collect();
            (t.to_string(), per_sentence)
        })
        .collect();

    // The references.
    let reference = if std::env::var_os("ALICIA_BENCH_NO_REFERENCE").is_some() {
        None
    } else {
        eprintln!("references (faster-whisper, piper-tts) ...");
        let job = json!({
            "stt": {
                "cache": std::env::temp_dir().join("alicia-voice-bench"),
                "latency_wav": lat_path,
                "iters": iters,
                "corpus": corpus.iter().map(|c| json!({"path": c.2, "ref": c.1})).collect::<Vec<_>>(),
            },
            "tts": {"voice": voice.paths.main(), "text": TTS_TEXT, "iters": iters, "id_check": CORPUS},
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference.py");
        let mut child =
            Command::new("python3").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python3");
        child.stdin.take().unwrap().write_all(job.to_string().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "reference.py failed (pip install faster-whisper piper-tts)");
        Some(serde_json::from_slice::<Value>(&out.stdout).unwrap())
    };

    // Report.
    let p50 = pct(&stt_ms, 0.5);
    println!("## Voice engines (this run)\n");
    println!(
        "Machine: {} cores. Iterations: {iters} (after 2 warm-up runs).\n",
        std::thread::available_parallelism().unwrap()
    );
    println!("### Speech to text, {lat_synth} utterance {lat_text:?}, {lat_secs:.2} s\n");
    println!("| engine | p50 ms | p90 ms | min ms | heard |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| Alicia (whisper.cpp tiny.en f16, greedy, fitted audio_ctx, 2 threads) | {:.0} | {:.0} | {:.0} | {lat_heard:?} |",
        p50,
        pct(&stt_ms, 0.9),
        pct(&stt_ms, 0.0)
    );
    if let Some(r) = &reference {
        for ct in ["float32", "int8"] {
            let v: Vec<f64> =
                r["faster_whisper"][ct]["ms"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            println!(
                "| faster-whisper tiny.en {ct}, beam 1, 2 threads | {:.0} | {:.0} | {:.0} | {:?} |",
                pct(&v, 0.5),
                pct(&v, 0.9),
                pct(&v, 0.0),
                r["faster_whisper"][ct]["latency_text"].as_str().unwrap_or("")
            );
        }
        for ct in ["float32", "int8"] {
            let v: Vec<f64> =
                r["faster_whisper"][ct]["ms"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            println!("\nRatio p50 faster-whisper {ct} / Alicia: {:.2}", pct(&v, 0.5) / p50);
        }
    }

    println!("\n### Word error rate ({} utterances per synthesiser, 16 kHz WAV)\n", CORPUS.len());
    println!("| synthesiser | Alicia (whisper.cpp tiny.en) | faster-whisper float32 | faster-whisper int8 |");
    println!("| --- | ---: | ---: | ---: |");
    for synth in ["espeak-ng", "piper"] {
        let idx: Vec<usize> = (0..corpus.len()).filter(|i| corpus[*i].0 == synth).collect();
        let ours = wer(idx.iter().map(|i| (corpus[*i].1, hyps[*i].as_str())));
        let theirs = |ct: &str| -> String {
            match &reference {
                Some(r) => {
                    let h = r["faster_whisper"][ct]["hyps"].as_array().unwrap();
                    format!("{:.1} %", 100.0 * wer(idx.iter().map(|i| (corpus[*i].1, h[*i].as_str().unwrap()))))
                }
                None => "-".into(),
            }
        };
        println!("| {synth} | {:.1} % | {} | {} |", 100.0 * ours, theirs("float32"), theirs("int8"));
    }
    println!("\nAlicia's misheard utterances:");
    for (i, c) in corpus.iter().enumerate() {
        let errors = wer([(c.1, hyps[i].as_str())]);
        if errors > 0.0 {
            println!("- {}: {:?} -> {:?}", c.0, c.1, hyps[i]);
        }
    }

    let t50 = pct(&ttfa, 0.5);
    println!("\n### Text to speech, {TTS_TEXT:?} ({audio_s:.2} s of audio), cache off, requests 150 ms apart\n");
    println!("| engine | first audio p50 ms | p90 ms | whole p50 ms | real-time factor |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| Alicia (espeak-ng subprocess + Piper en_US-joe-medium on ONNX Runtime 1.32) | {:.0} | {:.0} | {:.0} | {:.3} |",
        t50,
        pct(&ttfa, 0.9),
        pct(&total, 0.5),
        pct(&total, 0.5) / 1000.0 / audio_s
    );
    if let Some(r) = &reference {
        let p = &r["piper"];
        let f: Vec<f64> = p["ttfa_ms"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let w: Vec<f64> = p["total_ms"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let a = p["audio_s"].as_f64().unwrap();
        println!(
            "| piper-tts (Python, same voice) | {:.0} | {:.0} | {:.0} | {:.3} |",
            pct(&f, 0.5),
            pct(&f, 0.9),
            pct(&w, 0.5),
            pct(&w, 0.5) / 1000.0 / a
        );
        println!("\nRatio first audio piper-tts / Alicia: {:.2}", pct(&f, 0.5) / t50);
        let same = ours.iter().filter(|(t, ids)| p["ids"][t] == json!(ids)).count();
        println!("\nPhoneme ids identical to piper-tts's: {same} of {} sentences.", ours.len());
        for (t, ids) in &ours {
            if p["ids"][t] != json!(ids) {
                println!("- differs: {t:?}: ours {ids:?}, piper {}", p["ids"][t]);
            }
        }
    }
}
