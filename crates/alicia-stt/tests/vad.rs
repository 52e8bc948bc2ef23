//! Silero VAD and the streaming path on real models: espeak-ng speech between silences, streamed
//! in 20 ms chunks at espeak's 22.05 kHz, ends where the speech ends and transcribes.

use alicia_audio::pcm::{self, PcmFormat};
use alicia_models::{FetchPolicy, ModelStore, Progress};
use alicia_stt::stream::{StreamEvent, SttStream};
use alicia_stt::vad::{Vad, VadConfig};
use alicia_stt::{SttConfig, SttEngine, SttError};

fn store() -> ModelStore {
    ModelStore::locate(None, None).unwrap()
}

fn vad() -> Vad {
    let s = store();
    let ort = alicia_models::onnxruntime(&s, FetchPolicy::Never, Progress::Quiet).unwrap_or_else(|e| panic!("{e}"));
    alicia_onnx::init(&ort).unwrap();
    let model = alicia_models::silero_vad(&s, FetchPolicy::Never, Progress::Quiet).unwrap_or_else(|e| panic!("{e}"));
    Vad::new(&model, VadConfig::default()).unwrap()
}

/// espeak-ng speech at 22.05 kHz, 16-bit mono, between `before` and `after` seconds of silence.
fn utterance(text: &str, before: f32, after: f32) -> (PcmFormat, Vec<u8>, f32) {
    let out = std::process::Command::new("espeak-ng").args(["-v", "en-us", "--stdout", text]).output().unwrap();
    let (fmt, speech) = pcm::from_wav(&out.stdout).unwrap();
    let pad = |s: f32| vec![0u8; fmt.bytes_for_ms((s * 1000.0) as u32)];
    let speech_secs = fmt.seconds(speech.len());
    (fmt, [pad(before), speech, pad(after)].concat(), speech_secs)
}

#[test]
fn silero_tells_speech_from_silence() {
    let mut v = vad();
    let silent = vec![0.0f32; 512];
    assert!(v.probability(&silent).unwrap() < 0.1);
    assert!(v.push(&vec![0.0; 16000 * 2]).unwrap().is_empty(), "two seconds of silence: no speech");
    assert!(v.probability(&[0.0; 100]).is_err(), "a wrong window size is an error");
}

#[test]
fn streamed_speech_ends_by_vad_and_transcribes() {
    let (fmt, bytes, speech_secs) = utterance("turn on the kitchen light", 1.0, 2.0);
    let mut stream = SttStream::new(fmt, Some(vad()), 30.0).unwrap();
    let mut started_at = None;
    let mut ended_at = None;
    let mut fed = 0usize;
    for chunk in pcm::chunks(&bytes, fmt, 20) {
        fed += chunk.len();
        match stream.push(chunk).unwrap() {
            StreamEvent::SpeechStarted => started_at = Some(fmt.seconds(fed)),
            StreamEvent::SpeechEnded => {
                ended_at = Some(fmt.seconds(fed));
                break;
            }
            StreamEvent::Continue => {}
        }
    }
    let (start, end) = (started_at.expect("speech start"), ended_at.expect("speech end before the stream ends"));
    // espeak-ng's own leading silence is short; VAD needs a few windows.
    assert!((1.0..1.6).contains(&start), "started at {start}");
    let speech_end = 1.0 + speech_secs;
    assert!(end > speech_end - 0.5 && end < speech_end + 1.2, "ended at {end}, speech until {speech_end}");
    let (s, e) = stream.speech().unwrap();
    assert!(e.is_some() && s < e.unwrap());
    let audio = stream.finish().unwrap();
    assert!((audio.len() as f32 / 16000.0) < speech_secs + 1.0, "trimmed to the speech");

    let model = alicia_models::whisper(&store(), "tiny.en", FetchPolicy::Never, Progress::Quiet).unwrap();
    let engine = SttEngine::new(SttConfig::new(model.paths.main())).unwrap();
    let t = engine.transcribe_blocking(audio, None).unwrap();
    assert_eq!(t.text.to_lowercase().trim_end_matches('.'), "turn on the kitchen light");
}

#[test]
fn silence_only_is_empty_and_long_streams_are_refused() {
    let fmt = PcmFormat::SPEECH;
    let mut stream = SttStream::new(fmt, Some(vad()), 30.0).unwrap();
    for chunk in pcm::chunks(&vec![0u8; fmt.bytes_for_ms(1500)], fmt, 50) {
        assert_eq!(stream.push(chunk).unwrap(), StreamEvent::Continue);
    }
    assert!(matches!(stream.finish(), Err(SttError::Audio(alicia_audio::AudioError::Empty))));

    let mut stream = SttStream::new(fmt, None, 1.0).unwrap();
    let err = pcm::chunks(&vec![0u8; fmt.bytes_for_ms(2000)], fmt, 100).find_map(|c| stream.push(c).err());
    assert!(matches!(err, Some(SttError::Audio(alicia_audio::AudioError::TooLong { .. }))), "{err:?}");
}
