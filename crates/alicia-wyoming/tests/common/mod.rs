//! What the Wyoming tests share: raw PCM files for the reference client, and running it.

use std::path::Path;

use serde_json::Value;

/// The same speech as raw PCM at `rate`, `width` bytes, `channels`, as an argument for the
/// client: `path:rate:width:channels`. (Raw, because Python 3.11's `wave` reads neither 24-bit
/// nor WAVE_FORMAT_EXTENSIBLE files; WAV parsing is alicia-audio's, tested there.)
pub fn variant(name: &str, mono: &[f32], from: u32, rate: u32, width: u16, channels: u16, dir: &Path) -> String {
    let samples = alicia_audio::resample(mono, from, rate).unwrap();
    let mut pcm = Vec::new();
    for s in samples {
        let s = s.clamp(-1.0, 1.0);
        for _ in 0..channels {
            match width {
                1 => pcm.push((s * 127.0 + 128.0).round() as u8),
                2 => pcm.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes()),
                3 => pcm.extend_from_slice(&((s * 8_388_607.0).round() as i32).to_le_bytes()[..3]),
                _ => pcm.extend_from_slice(&((s as f64 * 2_147_483_647.0).round() as i32).to_le_bytes()),
            }
        }
    }
    let path = dir.join(format!("{name}-{rate}-{width}-{channels}.pcm"));
    std::fs::write(&path, pcm).unwrap();
    format!("{}:{rate}:{width}:{channels}", path.display())
}

/// Runs a client script of `tests/` (PyPI `wyoming`, installed by scripts/test.sh) with
/// `args`; what it printed, as JSON.
pub async fn reference_client(script: &str, args: Vec<String>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3").arg(script).args(args).output().expect("python3 runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the client failed (pip install wyoming; scripts/test.sh does):\n{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}
