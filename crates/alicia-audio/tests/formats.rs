//! WAV files in the formats clients send (written by hound, an independent encoder, and by
//! espeak-ng) convert to the same 16 kHz mono signal.

use alicia_audio::{wav_info, wav_to_16k_mono, AudioError};

const HZ: f32 = 440.0;

fn tone(rate: u32, secs: f32) -> Vec<f32> {
    (0..(rate as f32 * secs) as usize)
        .map(|i| (i as f32 / rate as f32 * HZ * std::f32::consts::TAU).sin() * 0.5)
        .collect()
}

fn wav(rate: u32, channels: u16, bits: u16, float: bool) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
    };
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for s in tone(rate, 1.0) {
            for _ in 0..channels {
                if float {
                    w.write_sample(s).unwrap();
                } else {
                    let max = (1i64 << (bits - 1)) as f32 - 1.0;
                    w.write_sample((s * max).round() as i32).unwrap();
                }
            }
        }
        w.finalize().unwrap();
    }
    buf.into_inner()
}

fn check(label: &str, samples: &[f32], secs: f32) {
    let expect = (16000.0 * secs) as i64;
    assert!((samples.len() as i64 - expect).abs() <= 1, "{label}: {} samples", samples.len());
    let mid = &samples[800..samples.len() - 800];
    let crossings = mid.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count() as f32;
    let expected = 2.0 * HZ * mid.len() as f32 / 16000.0;
    assert!((crossings - expected).abs() <= 4.0, "{label}: {crossings} crossings, expected {expected}");
    let peak = mid.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!((peak - 0.5).abs() < 0.03, "{label}: peak {peak}");
}

#[test]
fn rates_widths_and_channels_all_convert() {
    for rate in [8000, 16000, 22050, 44100, 48000] {
        for channels in [1, 2] {
            for (bits, float) in [(8, false), (16, false), (24, false), (32, false), (32, true)] {
                let label = format!("{rate} Hz, {channels} ch, {bits}-bit{}", if float { " float" } else { "" });
                let bytes = wav(rate, channels, bits, float);
                let info = wav_info(&bytes).unwrap();
                assert_eq!((info.sample_rate, info.channels, info.bits, info.float), (rate, channels, bits, float));
                check(&label, &wav_to_16k_mono(&bytes, Some(30.0)).unwrap(), 1.0);
            }
        }
    }
}

#[test]
fn espeak_ng_output_converts() {
    let out = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "--stdout", "turn on the kitchen light"])
        .output()
        .expect("espeak-ng is installed (scripts/test.sh installs it)");
    assert!(out.status.success());
    let info = wav_info(&out.stdout).unwrap();
    assert_eq!((info.sample_rate, info.channels, info.bits), (22050, 1, 16));
    let samples = wav_to_16k_mono(&out.stdout, None).unwrap();
    assert!((samples.len() as f32 / 16000.0 - info.seconds()).abs() < 0.01);
    assert!(samples.iter().any(|s| s.abs() > 0.1), "speech, not silence");
}

#[test]
fn bad_wavs_are_typed_errors() {
    assert!(matches!(wav_to_16k_mono(b"RIFF\x00\x00\x00\x00WAVEjunk", None), Err(AudioError::NotWav(_))));
    assert!(matches!(wav_to_16k_mono(b"ID3\x03 an mp3", None), Err(AudioError::NotWav(_))));
    let empty = alicia_audio::encode_wav(&[], 44100, 2);
    assert_eq!(wav_to_16k_mono(&empty, None), Err(AudioError::Empty));
    let long = wav(8000, 1, 16, false);
    assert!(matches!(wav_to_16k_mono(&long, Some(0.5)), Err(AudioError::TooLong { .. })));
    // A 64-bit float WAV: hound refuses it, with a reason.
    let mut f64wav = alicia_audio::encode_wav(&[0; 100], 16000, 1);
    f64wav[20] = 3; // WAVE_FORMAT_IEEE_FLOAT
    f64wav[34] = 64; // bits per sample
    assert!(wav_to_16k_mono(&f64wav, None).is_err());
}
