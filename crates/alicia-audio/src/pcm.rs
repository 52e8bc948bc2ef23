//! Raw PCM, as streamed between satellites, the bus and Wyoming peers: little-endian
//! interleaved integer samples described by `rate` (Hz), `width` (bytes per sample: 1 = unsigned
//! 8-bit, 2, 3 or 4 = signed) and `channels`, the fields of Wyoming's `audio-start`/`audio-chunk`.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

use crate::{AudioError, SPEECH_RATE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmFormat {
    pub rate: u32,
    pub width: u16,
    pub channels: u16,
}

impl PcmFormat {
    /// 16 kHz, 16-bit, mono: what satellites usually send and Whisper takes.
    pub const SPEECH: PcmFormat = PcmFormat { rate: SPEECH_RATE, width: 2, channels: 1 };

    pub fn new(rate: u32, width: u16, channels: u16) -> Result<Self, AudioError> {
        if rate == 0 || rate > 384_000 {
            return Err(AudioError::Unsupported(format!("sample rate {rate}")));
        }
        if !(1..=4).contains(&width) {
            return Err(AudioError::Unsupported(format!("sample width {width} bytes (1 to 4 are supported)")));
        }
        if channels == 0 || channels > 16 {
            return Err(AudioError::Unsupported(format!("{channels} channels")));
        }
        Ok(PcmFormat { rate, width, channels })
    }

    /// From fields as a peer sends them (JSON numbers): a value too large for its type is
    /// refused like any other out-of-range one, never wrapped (`rate` 2^32 + 16000 is not
    /// 16 kHz).
    pub fn from_fields(rate: u64, width: u64, channels: u64) -> Result<Self, AudioError> {
        let narrow = |v: u64, max: u64| v.min(max);
        PcmFormat::new(
            narrow(rate, u64::from(u32::MAX)) as u32,
            narrow(width, u64::from(u16::MAX)) as u16,
            narrow(channels, u64::from(u16::MAX)) as u16,
        )
    }

    /// Bytes per frame (one sample of every channel).
    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.channels as usize
    }

    /// Bytes in `ms` milliseconds (whole frames).
    pub fn bytes_for_ms(&self, ms: u32) -> usize {
        (self.rate as u64 * ms as u64 / 1000) as usize * self.frame_bytes()
    }

    pub fn seconds(&self, bytes: usize) -> f32 {
        (bytes / self.frame_bytes()) as f32 / self.rate as f32
    }
}

/// Whole frames of interleaved PCM to mono `f32` (a trailing partial frame is ignored).
pub fn decode(bytes: &[u8], fmt: PcmFormat) -> Vec<f32> {
    let w = fmt.width as usize;
    let samples =
        bytes.chunks_exact(w).take(bytes.len() / fmt.frame_bytes() * fmt.channels as usize).map(|b| match w {
            1 => (b[0] as f32 - 128.0) / 128.0,
            2 => i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0,
            3 => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
            _ => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
        });
    crate::mix_to_mono(&samples.collect::<Vec<_>>(), fmt.channels as usize)
}

/// 16-bit samples as little-endian bytes.
pub fn encode_s16le(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Splits PCM bytes into chunks of `ms` milliseconds (whole frames; the last may be shorter).
pub fn chunks(bytes: &[u8], fmt: PcmFormat, ms: u32) -> impl Iterator<Item = &[u8]> {
    bytes.chunks(fmt.bytes_for_ms(ms).max(fmt.frame_bytes()))
}

/// The PCM payload of a 16-bit PCM WAV file as produced by [`crate::encode_wav`] (or any WAV
/// hound reads: re-encoded), with its format.
pub fn from_wav(bytes: &[u8]) -> Result<(PcmFormat, Vec<u8>), AudioError> {
    let (info, mono) = crate::decode_wav(bytes, None)?;
    let fmt = PcmFormat::new(info.sample_rate, 2, 1)?;
    Ok((fmt, encode_s16le(&crate::f32_to_i16(&mono))))
}

/// Converts a stream of PCM chunks in any format to 16 kHz mono `f32` as they arrive, so VAD
/// and STT can start before the stream ends. Chunks may split frames anywhere.
pub struct StreamConverter {
    fmt: PcmFormat,
    partial: Vec<u8>,
    resampler: Option<MonoResampler>,
    input_frames: u64,
}

impl StreamConverter {
    pub fn new(fmt: PcmFormat) -> Result<Self, AudioError> {
        let resampler = if fmt.rate == SPEECH_RATE { None } else { Some(MonoResampler::new(fmt.rate, SPEECH_RATE)?) };
        Ok(StreamConverter { fmt, partial: Vec::new(), resampler, input_frames: 0 })
    }

    pub fn format(&self) -> PcmFormat {
        self.fmt
    }

    /// Seconds of input seen so far.
    pub fn input_seconds(&self) -> f32 {
        self.input_frames as f32 / self.fmt.rate as f32
    }

    /// Feeds a chunk; returns the 16 kHz samples it completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<f32>, AudioError> {
        self.partial.extend_from_slice(bytes);
        let whole = self.partial.len() / self.fmt.frame_bytes() * self.fmt.frame_bytes();
        let mono = decode(&self.partial[..whole], self.fmt);
        self.partial.drain(..whole);
        self.input_frames += mono.len() as u64;
        match &mut self.resampler {
            None => Ok(mono),
            Some(r) => r.push(&mono),
        }
    }

    /// Ends the stream: returns the rest (the resampler's tail).
    pub fn finish(self) -> Result<Vec<f32>, AudioError> {
        match self.resampler {
            None => Ok(Vec::new()),
            Some(r) => r.finish(),
        }
    }
}

/// Incremental mono resampling at a fixed ratio (rubato's FFT resampler), with the resampler's
/// delay trimmed so output sample `i` lines up with input time `i / to`, and the output length
/// `ceil(n * to / from)` after `finish`. (rubato's own `process_all` is not used: in 4.0 it
/// moves only `delay` frames when trimming, which corrupts the start of longer clips.)
pub(crate) struct MonoResampler {
    r: Fft<f32>,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
    to_trim: usize,
    input_frames: u64,
    output_frames: u64,
}

impl MonoResampler {
    pub(crate) fn new(from: u32, to: u32) -> Result<Self, AudioError> {
        let r = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Input)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
        let to_trim = r.output_delay();
        let out_buf = vec![0.0; r.output_frames_max()];
        Ok(MonoResampler { r, pending: Vec::new(), out_buf, to_trim, input_frames: 0, output_frames: 0 })
    }

    pub(crate) fn push(&mut self, mono: &[f32]) -> Result<Vec<f32>, AudioError> {
        self.input_frames += mono.len() as u64;
        self.pending.extend_from_slice(mono);
        let mut out = Vec::new();
        while self.pending.len() >= self.r.input_frames_next() {
            self.step(None, &mut out)?;
        }
        Ok(out)
    }

    pub(crate) fn finish(mut self) -> Result<Vec<f32>, AudioError> {
        let mut out = Vec::new();
        let expected = (self.input_frames as f64 * self.r.resample_ratio()).ceil() as u64;
        if !self.pending.is_empty() {
            let n = self.pending.len();
            self.step(Some(n), &mut out)?;
        }
        while self.output_frames < expected {
            self.step(Some(0), &mut out)?;
        }
        let extra = (self.output_frames - expected) as usize;
        out.truncate(out.len().saturating_sub(extra));
        Ok(out)
    }

    /// One resampler call on the front of `pending` (`partial`: that many real frames, the rest
    /// silence).
    fn step(&mut self, partial: Option<usize>, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let need = self.r.input_frames_next();
        let err = |e: &dyn std::fmt::Display| AudioError::Resample(e.to_string());
        let mut chunk = vec![0.0f32; need];
        let real = partial.unwrap_or(need).min(self.pending.len()).min(need);
        chunk[..real].copy_from_slice(&self.pending[..real]);
        let input = InterleavedSlice::new(&chunk, 1, need).map_err(|e| err(&e))?;
        let cap = self.out_buf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf, 1, cap).map_err(|e| err(&e))?;
        let indexing = partial.map(|n| Indexing::new().partial_len(n.min(need)));
        let (_, produced) = self.r.process_into_buffer(&input, &mut output, indexing.as_ref()).map_err(|e| err(&e))?;
        self.pending.drain(..real);
        let skip = self.to_trim.min(produced);
        self.to_trim -= skip;
        out.extend_from_slice(&self.out_buf[skip..produced]);
        self.output_frames += (produced - skip) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_decode_to_the_same_signal() {
        let x: Vec<f32> = (0..480).map(|i| (i as f32 / 48.0).sin() * 0.5).collect();
        let s16: Vec<u8> = crate::f32_to_i16(&x).iter().flat_map(|s| s.to_le_bytes()).collect();
        let y = decode(&s16, PcmFormat::new(48000, 2, 1).unwrap());
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-4));
        // Stereo with the same signal in both channels mixes to it.
        let st: Vec<u8> = s16.chunks(2).flat_map(|c| [c[0], c[1], c[0], c[1]]).collect();
        let z = decode(&st, PcmFormat::new(48000, 2, 2).unwrap());
        assert_eq!(y, z);
        // 24-bit and 32-bit and unsigned 8-bit.
        let s24: Vec<u8> = x.iter().flat_map(|v| ((v * 8_388_607.0) as i32).to_le_bytes()[..3].to_vec()).collect();
        let y24 = decode(&s24, PcmFormat::new(48000, 3, 1).unwrap());
        assert!(x.iter().zip(&y24).all(|(a, b)| (a - b).abs() < 1e-5));
        let u8s: Vec<u8> = x.iter().map(|v| (v * 127.0 + 128.0).round() as u8).collect();
        let y8 = decode(&u8s, PcmFormat::new(48000, 1, 1).unwrap());
        assert!(x.iter().zip(&y8).all(|(a, b)| (a - b).abs() < 0.01));
        assert!(PcmFormat::new(16000, 5, 1).is_err());
        assert!(PcmFormat::new(0, 2, 1).is_err());
        // Numbers from a peer: too large is refused, not wrapped into range.
        assert_eq!(PcmFormat::from_fields(16_000, 2, 1).unwrap(), PcmFormat::SPEECH);
        assert!(PcmFormat::from_fields((1 << 32) + 16_000, 2, 1).is_err());
        assert!(PcmFormat::from_fields(16_000, (1 << 16) + 2, 1).is_err());
        assert!(PcmFormat::from_fields(16_000, 2, (1 << 16) + 1).is_err());
    }

    #[test]
    fn streaming_conversion_matches_the_whole_clip() {
        let rate = 44100;
        let x: Vec<f32> =
            (0..rate * 2).map(|i| (i as f32 / rate as f32 * 300.0 * std::f32::consts::TAU).sin() * 0.4).collect();
        let bytes = encode_s16le(&crate::f32_to_i16(&x));
        let fmt = PcmFormat::new(rate, 2, 1).unwrap();
        let mut conv = StreamConverter::new(fmt).unwrap();
        let mut streamed = Vec::new();
        // Odd chunk sizes split frames.
        for c in bytes.chunks(1999) {
            streamed.extend(conv.push(c).unwrap());
        }
        streamed.extend(conv.finish().unwrap());
        // Against the same tone generated at 16 kHz (the first and last samples see the clip's edges).
        let ideal: Vec<f32> =
            (0..32000).map(|i| (i as f32 / 16000.0 * 300.0 * std::f32::consts::TAU).sin() * 0.4).collect();
        assert_eq!(streamed.len(), ideal.len());
        let max_diff = streamed[100..31900].iter().zip(&ideal[100..]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        // Within 1.5 % of full scale: the filter's passband ripple and fractional delay.
        assert!(max_diff < 0.015, "{max_diff}");
        assert_eq!(crate::resample(&decode(&bytes, fmt), rate, 16000).unwrap(), streamed);
        // At 16 kHz it is a pass-through.
        let mut same = StreamConverter::new(PcmFormat::SPEECH).unwrap();
        assert_eq!(same.push(&encode_s16le(&[0, 16384, -16384])).unwrap(), [0.0, 0.5, -0.5]);
    }

    #[test]
    fn chunks_are_whole_frames_of_the_given_length() {
        let fmt = PcmFormat::new(16000, 2, 2).unwrap();
        let bytes = vec![0u8; fmt.bytes_for_ms(1000)];
        let c: Vec<_> = chunks(&bytes, fmt, 20).collect();
        assert_eq!(c.len(), 50);
        assert!(c.iter().all(|c| c.len() == 16000 / 50 * 4));
    }
}
