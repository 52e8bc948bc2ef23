//! `alicia models` through the binary: list, verify of a good, a missing and a corrupted model
//! (in a copy of the real Silero VAD from the user's store, which scripts/test.sh fills with
//! `alicia models fetch`).

use std::process::{Command, Output};

fn alicia(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alicia"))
        .arg("models")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("alicia runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn verify_passes_on_good_files_and_fails_on_missing_or_corrupt_ones() {
    let real = alicia_models::ModelStore::locate(None, None).unwrap();
    let silero = alicia_models::find("silero-vad").unwrap();
    let src = real.verify(silero).unwrap_or_else(|e| panic!("{e} (scripts/test.sh fetches the models)"));

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();

    let out = alicia(&["--dir", d, "verify", "silero-vad"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("alicia models fetch silero-vad"), "{}", text(&out));

    let copy = dir.path().join("silero-vad");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(src.main(), copy.join("silero_vad.onnx")).unwrap();
    let out = alicia(&["--dir", d, "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("silero-vad: ok"));

    let list = alicia(&["--dir", d, "list"]);
    assert!(list.status.success());
    let listing = text(&list);
    assert!(listing.lines().any(|l| l.starts_with("silero-vad") && l.contains("verified")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with("whisper-tiny.en") && l.contains("missing")), "{listing}");

    let mut bytes = std::fs::read(copy.join("silero_vad.onnx")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(copy.join("silero_vad.onnx"), bytes).unwrap();
    let out = alicia(&["--dir", d, "verify"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("corrupt") && t.contains("alicia models fetch silero-vad"), "{t}");
}

#[test]
fn unknown_model_names_what_is_available() {
    let dir = tempfile::tempdir().unwrap();
    let out = alicia(&["--dir", dir.path().to_str().unwrap(), "fetch", "whisper-large"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("no model `whisper-large`") && t.contains("whisper-tiny.en"), "{t}");
}
