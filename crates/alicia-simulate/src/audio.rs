//! What the simulated speaker "plays": audio fetched from a URL, decoded as WAV, scaled by the
//! volume (muted: silence) and written to a WAV file, so a test or a person can listen to
//! exactly what a real speaker would have played.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest audio accepted (bytes), so a wrong URL cannot fill the disk or the memory.
pub const MAX_AUDIO_BYTES: u64 = 64 * 1024 * 1024;

/// Why audio could not be played: the error code for the requester, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioError {
    pub code: &'static str,
    pub message: String,
}

impl AudioError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        AudioError { code, message: message.into() }
    }
}

/// Decoded audio, ready to be written.
#[derive(Debug, Clone)]
pub struct Clip {
    pub spec: hound::WavSpec,
    /// Interleaved samples, normalised to -1.0..=1.0.
    pub samples: Vec<f32>,
}

impl Clip {
    pub fn duration(&self) -> Duration {
        let frames = self.samples.len() as f64 / f64::from(self.spec.channels.max(1));
        Duration::from_secs_f64(frames / f64::from(self.spec.sample_rate.max(1)))
    }

    /// A short two-tone chime (what a speaker without speech plays for a text announcement).
    pub fn chime() -> Clip {
        let rate = 16_000u32;
        let mut samples = Vec::new();
        for (freq, ms) in [(880.0f32, 150u32), (660.0, 200)] {
            let n = rate * ms / 1000;
            for i in 0..n {
                let t = i as f32 / rate as f32;
                let envelope = 1.0 - i as f32 / n as f32;
                samples.push(0.5 * envelope * (2.0 * std::f32::consts::PI * freq * t).sin());
            }
        }
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        Clip { spec, samples }
    }
}

/// Fetches `url`: `file://` (an absolute path), `http://` or `https://` (the system's web
/// roots plus `extra_ca`, e.g. the home CA the gateway's certificate chains to).
pub fn fetch(url: &str, extra_ca: Option<&Path>) -> Result<Vec<u8>, AudioError> {
    if let Some(path) = url.strip_prefix("file://") {
        let path = PathBuf::from(path);
        let meta = std::fs::metadata(&path).map_err(|e| AudioError::new("fetch_failed", format!("{url}: {e}")))?;
        if meta.len() > MAX_AUDIO_BYTES {
            return Err(AudioError::new("fetch_failed", format!("{url}: larger than {MAX_AUDIO_BYTES} bytes")));
        }
        return std::fs::read(&path).map_err(|e| AudioError::new("fetch_failed", format!("{url}: {e}")));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(AudioError::new(
            "invalid_parameters",
            format!("audio_url {url:?}: only file, http and https URLs"),
        ));
    }
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = extra_ca.filter(|p| p.exists()) {
        use rustls::pki_types::pem::PemObject;
        let mut roots: Vec<ureq::tls::Certificate<'static>> = Vec::new();
        if let Ok(iter) = rustls::pki_types::CertificateDer::pem_file_iter(ca) {
            for der in iter.flatten() {
                roots.push(ureq::tls::Certificate::from_der(der.as_ref()).to_owned());
            }
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(tls.build())
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| AudioError::new("fetch_failed", format!("{url}: {e}")))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_AUDIO_BYTES)
        .read_to_vec()
        .map_err(|e| AudioError::new("fetch_failed", format!("{url}: {e}")))
}

/// Decodes a WAV file (PCM 8/16/24/32-bit or float).
pub fn decode(bytes: &[u8]) -> Result<Clip, AudioError> {
    let bad =
        |e: hound::Error| AudioError::new("unsupported_format", format!("not a WAV file this speaker can play: {e}"));
    let mut reader = hound::WavReader::new(Cursor::new(bytes)).map_err(bad)?;
    let spec = reader.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>().map_err(bad)?,
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader.samples::<i32>().map(|s| s.map(|v| v as f32 / scale)).collect::<Result<_, _>>().map_err(bad)?
        }
    };
    Ok(Clip { spec, samples })
}

/// Writes `clip` at `gain` (0.0 = silence, 1.0 = as recorded) as 16-bit PCM WAV at `path`.
pub fn write(path: &Path, clip: &Clip, gain: f32) -> Result<(), AudioError> {
    let fail = |e: String| AudioError::new("playback_failed", format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    let spec = hound::WavSpec { bits_per_sample: 16, sample_format: hound::SampleFormat::Int, ..clip.spec };
    let mut w = hound::WavWriter::create(path, spec).map_err(|e| fail(e.to_string()))?;
    for s in &clip.samples {
        let v = (s * gain).clamp(-1.0, 1.0) * f32::from(i16::MAX);
        w.write_sample(v as i16).map_err(|e| fail(e.to_string()))?;
    }
    w.finalize().map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_scale_and_write_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let chime = Clip::chime();
        let full = dir.path().join("full.wav");
        write(&full, &chime, 1.0).unwrap();
        let back = decode(&std::fs::read(&full).unwrap()).unwrap();
        assert_eq!(back.samples.len(), chime.samples.len());
        assert!((back.duration().as_secs_f64() - 0.35).abs() < 0.01, "{:?}", back.duration());
        let half = dir.path().join("half.wav");
        write(&half, &back, 0.5).unwrap();
        let peak = |c: &Clip| c.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
        let halved = decode(&std::fs::read(&half).unwrap()).unwrap();
        assert!((peak(&halved) - peak(&back) / 2.0).abs() < 0.01);
        let url = format!("file://{}", full.display());
        assert_eq!(fetch(&url, None).unwrap(), std::fs::read(&full).unwrap());
        assert_eq!(decode(b"ID3 not a wav").unwrap_err().code, "unsupported_format");
        assert_eq!(fetch("ftp://x/y.wav", None).unwrap_err().code, "invalid_parameters");
        assert_eq!(fetch("file:///nonexistent/a.wav", None).unwrap_err().code, "fetch_failed");
    }
}
