//! Audio for the speech services.
//!
//! - WAV in: any sample rate, mono or multi-channel, 8/16/24/32-bit integer or 32-bit float
//!   (hound reads them, WAVE_FORMAT_EXTENSIBLE included) → mono `f32` in [-1, 1], and
//!   [`wav_to_16k_mono`], what Whisper takes, resampled with rubato's FFT resampler (a fixed
//!   ratio, band-limited).
//! - WAV out: 16-bit PCM ([`encode_wav`]).
//! - Raw PCM for streaming ([`pcm`]): the `rate`/`width`/`channels` triple Wyoming's
//!   `audio-start`/`audio-chunk` carry, chunking, and [`pcm::StreamConverter`], which turns chunks
//!   of any format into 16 kHz mono as they arrive.
//!
//! Every problem with the input is an [`AudioError`] (never a panic): not a WAV, an unsupported
//! encoding, no samples, longer than the caller's limit (checked from the header, before decoding).

pub mod pcm;

use std::io::Cursor;

/// The rate Whisper and Silero VAD take.
pub const SPEECH_RATE: u32 = 16_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudioError {
    #[error("not a WAV file: {0}")]
    NotWav(String),
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    #[error("the audio is empty")]
    Empty,
    #[error("the audio is {seconds:.1} s long; the limit is {max:.1} s")]
    TooLong { seconds: f32, max: f32 },
    #[error("resampling failed: {0}")]
    Resample(String),
}

impl AudioError {
    /// A stable code for error responses (`not_wav`, `unsupported_format`, `empty_audio`,
    /// `audio_too_long`, `resample_failed`).
    pub fn code(&self) -> &'static str {
        match self {
            AudioError::NotWav(_) => "not_wav",
            AudioError::Unsupported(_) => "unsupported_format",
            AudioError::Empty => "empty_audio",
            AudioError::TooLong { .. } => "audio_too_long",
            AudioError::Resample(_) => "resample_failed",
        }
    }
}

/// What a WAV header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    pub sample_rate: u32,
    pub channels: u16,
    pub bits: u16,
    pub float: bool,
    /// Frames (samples per channel).
    pub frames: u64,
}

impl WavInfo {
    pub fn seconds(&self) -> f32 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.frames as f32 / self.sample_rate as f32
        }
    }
}

type Reader<'a> = hound::WavReader<Cursor<&'a [u8]>>;

fn reader(bytes: &[u8]) -> Result<(Reader<'_>, WavInfo), AudioError> {
    let r = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| AudioError::NotWav(e.to_string()))?;
    let spec = r.spec();
    let info = WavInfo {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits: spec.bits_per_sample,
        float: spec.sample_format == hound::SampleFormat::Float,
        frames: r.duration() as u64,
    };
    if info.channels == 0 || info.sample_rate == 0 {
        return Err(AudioError::NotWav(format!("{} channels at {} Hz", info.channels, info.sample_rate)));
    }
    if info.float && info.bits != 32 {
        return Err(AudioError::Unsupported(format!("{}-bit float samples (32-bit float is supported)", info.bits)));
    }
    if !info.float && !matches!(info.bits, 8 | 16 | 24 | 32) {
        return Err(AudioError::Unsupported(format!("{}-bit integer samples", info.bits)));
    }
    Ok((r, info))
}

/// Streaming writers (`espeak-ng --stdout`, pipes, satellites) cannot know the length when they
/// write the header, and put a placeholder in the data chunk's size: 0, or a huge value
/// (0xFFFFFFFF, 0x7FFFFFFF; espeak-ng writes 0x7FFFF000).
/// Such a size is replaced by what follows the header. (A real size larger than the file is
/// left alone: that file is truncated, and decoding says so.)
fn with_streamed_size(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return bytes.into();
    }
    let mut off = 12;
    while off + 8 <= bytes.len() {
        let size = u32::from_le_bytes([bytes[off + 4], bytes[off + 5], bytes[off + 6], bytes[off + 7]]);
        if &bytes[off..off + 4] == b"data" {
            let rest = (bytes.len() - off - 8) as u64;
            let placeholder = (size >= 0x7000_0000 && size as u64 > rest) || (size == 0 && rest > 0);
            if placeholder && rest != size as u64 {
                let mut fixed = bytes.to_vec();
                let rest = rest.min(u32::MAX as u64 - 64) as u32;
                fixed[off + 4..off + 8].copy_from_slice(&rest.to_le_bytes());
                return fixed.into();
            }
            break;
        }
        off += 8 + size as usize + (size as usize & 1);
    }
    bytes.into()
}

/// The header of a WAV file.
pub fn wav_info(bytes: &[u8]) -> Result<WavInfo, AudioError> {
    let bytes = with_streamed_size(bytes);
    reader(&bytes).map(|(_, i)| i)
}

/// Decodes a WAV file to mono `f32` at its own rate. `max_seconds` is checked against the header
/// before anything is decoded.
pub fn decode_wav(bytes: &[u8], max_seconds: Option<f32>) -> Result<(WavInfo, Vec<f32>), AudioError> {
    let bytes = with_streamed_size(bytes);
    let (mut r, info) = reader(&bytes)?;
    if info.frames == 0 {
        return Err(AudioError::Empty);
    }
    if let Some(max) = max_seconds {
        if info.seconds() > max {
            return Err(AudioError::TooLong { seconds: info.seconds(), max });
        }
    }
    let bad = |e: hound::Error| AudioError::NotWav(format!("corrupt sample data: {e}"));
    let interleaved: Vec<f32> = if info.float {
        r.samples::<f32>().collect::<Result<_, _>>().map_err(bad)?
    } else {
        let scale = 1.0 / (1u64 << (info.bits - 1)) as f32;
        r.samples::<i32>().map(|s| s.map(|v| v as f32 * scale)).collect::<Result<_, _>>().map_err(bad)?
    };
    let mono = mix_to_mono(&interleaved, info.channels as usize);
    if mono.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok((info, mono))
}

/// A WAV file as Whisper wants it: 16 kHz mono `f32`.
pub fn wav_to_16k_mono(bytes: &[u8], max_seconds: Option<f32>) -> Result<Vec<f32>, AudioError> {
    let (info, mono) = decode_wav(bytes, max_seconds)?;
    resample(&mono, info.sample_rate, SPEECH_RATE)
}

/// Averages interleaved channels.
pub fn mix_to_mono(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved.chunks_exact(channels).map(|f| f.iter().sum::<f32>() / channels as f32).collect()
}

/// Resamples a whole mono clip (the resampler's delay trimmed, length `ceil(n * to / from)`).
pub fn resample(mono: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == to || mono.is_empty() {
        return Ok(mono.to_vec());
    }
    let mut r = pcm::MonoResampler::new(from, to)?;
    let mut out = r.push(mono)?;
    out.extend(r.finish()?);
    Ok(out)
}

/// `f32` in [-1, 1] to 16-bit PCM (clipped).
pub fn f32_to_i16(samples: &[f32]) -> Vec<i16> {
    samples.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16).collect()
}

/// A 16-bit PCM WAV file of interleaved samples.
pub fn encode_wav(samples: &[i16], sample_rate: u32, channels: u16) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * channels as u32 * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// `n` samples of silence at `rate` for `seconds`.
pub fn silence(rate: u32, seconds: f32) -> Vec<f32> {
    vec![0.0; (rate as f32 * seconds).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, secs: f32, hz: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (i as f32 / rate as f32 * hz * std::f32::consts::TAU).sin() * 0.5)
            .collect()
    }

    #[test]
    fn wav_round_trip_keeps_samples() {
        let s = f32_to_i16(&sine(16000, 0.5, 440.0));
        let wav = encode_wav(&s, 16000, 1);
        let (info, mono) = decode_wav(&wav, None).unwrap();
        assert_eq!((info.sample_rate, info.channels, info.bits, info.frames), (16000, 1, 16, 8000));
        let back = f32_to_i16(&mono);
        assert_eq!(back, s);
    }

    #[test]
    fn resampling_keeps_length_and_frequency() {
        for from in [8000, 22050, 44100, 48000] {
            let x = sine(from, 1.0, 440.0);
            let y = resample(&x, from, 16000).unwrap();
            assert!((y.len() as i64 - 16000).abs() <= 1, "{from}: {}", y.len());
            // Zero crossings of a 440 Hz tone: 880 per second.
            let crossings = y.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
            assert!((crossings as i64 - 880).abs() <= 4, "{from}: {crossings}");
            let peak = y[1000..15000].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((peak - 0.5).abs() < 0.02, "{from}: {peak}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(decode_wav(b"hello", None), Err(AudioError::NotWav(_))));
        assert!(matches!(decode_wav(&[], None), Err(AudioError::NotWav(_))));
        assert!(matches!(decode_wav(&encode_wav(&[], 16000, 1), None), Err(AudioError::Empty)));
        let long = encode_wav(&vec![0; 16000 * 3], 16000, 1);
        assert_eq!(decode_wav(&long, Some(2.0)).unwrap_err(), AudioError::TooLong { seconds: 3.0, max: 2.0 });
        // A header that promises more data than there is.
        let mut cut = encode_wav(&vec![100; 1000], 16000, 1);
        cut.truncate(500);
        assert!(decode_wav(&cut, None).is_err());
        assert_eq!(AudioError::Empty.code(), "empty_audio");
        // A streamed header (size unknown when written) reads what follows it.
        let mut streamed = encode_wav(&[7; 300], 16000, 1);
        streamed[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_wav(&streamed, None).unwrap().1.len(), 300);
    }
}
