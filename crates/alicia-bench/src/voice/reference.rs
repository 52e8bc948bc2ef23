//! The Python references in the same run: faster-whisper and piper-tts from PyPI, through
//! `alicia-voice-bench`'s `reference.py` (the engine benchmark's script, reused as is), in a
//! virtual environment this bench creates outside the repository.
//!
//! The environment is `$XDG_CACHE_HOME/alicia/bench-venv` (else `~/.cache/...`), made with
//! `python3 -m venv --system-site-packages` (packages the machine already has at the pinned
//! versions are used, not downloaded again) and then `pip install` of the pinned versions
//! (`alicia_voice_bench::REFERENCE_PACKAGES`), which is a no-op when they are there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::report::{Ms, Reference};

/// Where the virtual environment lives.
pub fn venv_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("alicia").join("bench-venv")
}

/// The venv's Python, created and filled if needed. Blocking (pip).
pub fn python(say: &dyn Fn(String)) -> anyhow::Result<PathBuf> {
    let dir = venv_dir();
    let python = dir.join("bin").join("python");
    if !python.exists() {
        say(format!("voice: creating the references' virtual environment {}", dir.display()));
        let ok = Command::new("python3")
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&dir)
            .status()
            .context("running python3 -m venv (Debian: apt-get install python3-venv)")?
            .success();
        if !ok {
            bail!("python3 -m venv {} failed (Debian: apt-get install python3-venv)", dir.display());
        }
    }
    say(format!(
        "voice: pip install {} into {} (downloads only the first time)",
        alicia_voice_bench::REFERENCE_PACKAGES.join(" "),
        dir.display()
    ));
    let ok = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(alicia_voice_bench::REFERENCE_PACKAGES)
        .stdout(Stdio::null())
        .status()
        .context("running pip in the references' virtual environment")?
        .success();
    if !ok {
        bail!("pip install {} failed", alicia_voice_bench::REFERENCE_PACKAGES.join(" "));
    }
    Ok(python)
}

/// One utterance both recognisers hear: the WAV (16 kHz mono) and what was said.
pub struct Utterance<'a> {
    pub path: &'a Path,
    pub said: &'a str,
}

/// What the script is asked to do.
pub struct Job<'a> {
    pub latency_wav: &'a Path,
    pub corpus: Vec<Utterance<'a>>,
    pub voice: &'a Path,
    pub text: &'a str,
    pub iters: usize,
    pub id_check: &'a [&'a str],
}

/// Runs `reference.py` with `python` and returns its JSON result. Blocking.
pub fn run(python: &Path, job: &Job<'_>, work: &Path) -> anyhow::Result<Value> {
    let script = work.join("reference.py");
    std::fs::write(&script, alicia_voice_bench::REFERENCE_PY).context("writing reference.py")?;
    let input = json!({
        "stt": {
            "cache": std::env::temp_dir().join("alicia-voice-bench"),
            "latency_wav": job.latency_wav,
            "iters": job.iters,
            "corpus": job.corpus.iter().map(|u| json!({"path": u.path, "ref": u.said})).collect::<Vec<_>>(),
        },
        "tts": {"voice": job.voice, "text": job.text, "iters": job.iters, "id_check": job.id_check},
    });
    let mut child = Command::new(python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    child.stdin.take().context("stdin")?.write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("reference.py failed ({}); its error is above", out.status);
    }
    serde_json::from_slice(&out.stdout).context("reading reference.py's JSON")
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

/// The script's result as the report's numbers; `hyps(compute_type)` are faster-whisper's
/// transcripts of the corpus, in its order.
pub fn read(v: &Value, our_ids: &[(String, Vec<Vec<i64>>)]) -> (Reference, [Vec<String>; 2]) {
    let fw = &v["faster_whisper"];
    let hyps = |ct: &str| -> Vec<String> {
        fw[ct]["hyps"]
            .as_array()
            .map(|a| a.iter().map(|h| h.as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default()
    };
    let ids = &v["piper"]["ids"];
    let ids_same = (!our_ids.is_empty() && ids.is_object())
        .then(|| (our_ids.iter().filter(|(t, i)| ids[t] == json!(i)).count(), our_ids.len()));
    let reference = Reference {
        faster_whisper_float32: Ms::of(&numbers(&fw["float32"]["ms"])),
        faster_whisper_int8: Ms::of(&numbers(&fw["int8"]["ms"])),
        faster_whisper_heard: fw["float32"]["latency_text"].as_str().unwrap_or("").to_string(),
        piper_first_audio: Ms::of(&numbers(&v["piper"]["ttfa_ms"])),
        piper_total: Ms::of(&numbers(&v["piper"]["total_ms"])),
        ids_same,
        skipped: None,
    };
    (reference, [hyps("float32"), hyps("int8")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_result_is_read() {
        let v = json!({
            "faster_whisper": {
                "float32": {"ms": [400.0, 500.0], "latency_text": "Lock the front door.", "hyps": ["a", "b"]},
                "int8": {"ms": [300.0], "latency_text": "x", "hyps": ["c", "d"]},
            },
            "piper": {"ttfa_ms": [50.0, 60.0], "total_ms": [70.0], "audio_s": 1.2, "ids": {"Hi.": [[1, 2]], "Yo.": [[3]]}},
        });
        let ours = vec![("Hi.".to_string(), vec![vec![1, 2]]), ("Yo.".to_string(), vec![vec![4]])];
        let (r, [f32h, i8h]) = read(&v, &ours);
        assert_eq!(r.faster_whisper_float32.unwrap().p50, 400.0);
        assert_eq!(r.faster_whisper_int8.unwrap().max, 300.0);
        assert_eq!(r.piper_first_audio.unwrap().p90, 60.0);
        assert_eq!(r.ids_same, Some((1, 2)));
        assert_eq!(r.faster_whisper_heard, "Lock the front door.");
        assert_eq!((f32h, i8h), (vec!["a".to_string(), "b".into()], vec!["c".to_string(), "d".into()]));
    }

    #[test]
    fn the_script_is_the_engine_benchs() {
        assert!(alicia_voice_bench::REFERENCE_PY.contains("def faster_whisper(job)"));
        assert!(venv_dir().ends_with("alicia/bench-venv"));
    }
}
