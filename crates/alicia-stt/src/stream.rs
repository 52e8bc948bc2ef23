//! One streamed utterance: PCM chunks in, 16 kHz audio and speech boundaries out.
//!
//! The shape follows Wyoming's events one to one: [`SttStream::new`] is `audio-start` (rate,
//! width, channels), [`SttStream::push`] an `audio-chunk`, [`SttStream::finish`] `audio-stop`
//! (or VAD's end of speech, whichever comes first), and the transcript is `transcript`.

use alicia_audio::pcm::{PcmFormat, StreamConverter};

use crate::vad::{Vad, VadEvent};
use crate::SttError;

/// What a chunk changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// Nothing new.
    Continue,
    /// VAD heard speech begin.
    SpeechStarted,
    /// VAD heard speech end: the utterance is complete; later chunks are ignored.
    SpeechEnded,
}

pub struct SttStream {
    conv: Option<StreamConverter>,
    audio: Vec<f32>,
    vad: Option<Vad>,
    max_seconds: f32,
    speech: Option<(u64, Option<u64>)>,
}

const MARGIN_MS: u64 = 300;

impl SttStream {
    /// A stream of PCM in `fmt`; with `vad`, speech boundaries are detected on the way.
    pub fn new(fmt: PcmFormat, vad: Option<Vad>, max_seconds: f32) -> Result<Self, SttError> {
        let mut vad = vad;
        if let Some(v) = vad.as_mut() {
            v.reset();
        }
        Ok(SttStream { conv: Some(StreamConverter::new(fmt)?), audio: Vec::new(), vad, max_seconds, speech: None })
    }

    /// Seconds of audio so far (16 kHz).
    pub fn seconds(&self) -> f32 {
        self.audio.len() as f32 / alicia_audio::SPEECH_RATE as f32
    }

    /// Whether VAD has heard the end of the utterance.
    pub fn ended(&self) -> bool {
        matches!(self.speech, Some((_, Some(_))))
    }

    /// Feeds one chunk. `TooLong` once the stream passes `max_seconds`.
    pub fn push(&mut self, chunk: &[u8]) -> Result<StreamEvent, SttError> {
        if self.ended() {
            return Ok(StreamEvent::SpeechEnded);
        }
        let Some(conv) = self.conv.as_mut() else { return Ok(StreamEvent::Continue) };
        let samples = conv.push(chunk)?;
        self.audio.extend_from_slice(&samples);
        if self.seconds() > self.max_seconds {
            return Err(alicia_audio::AudioError::TooLong { seconds: self.seconds(), max: self.max_seconds }.into());
        }
        self.run_vad(&samples)
    }

    fn run_vad(&mut self, samples: &[f32]) -> Result<StreamEvent, SttError> {
        let Some(vad) = self.vad.as_mut() else { return Ok(StreamEvent::Continue) };
        let mut out = StreamEvent::Continue;
        for ev in vad.push(samples)? {
            match ev {
                VadEvent::SpeechStart { at_ms } if self.speech.is_none() => {
                    self.speech = Some((at_ms, None));
                    out = StreamEvent::SpeechStarted;
                }
                VadEvent::SpeechEnd { at_ms } => {
                    if let Some((start, end @ None)) = self.speech.as_mut() {
                        *end = Some(at_ms);
                        let _ = start;
                        return Ok(StreamEvent::SpeechEnded);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Speech boundaries VAD found, in ms from the start.
    pub fn speech(&self) -> Option<(u64, Option<u64>)> {
        self.speech
    }

    /// Ends the stream: the utterance's 16 kHz audio. With VAD, trimmed to the speech (with a
    /// 300 ms margin); without, everything. `Empty` when there is no audio, or VAD heard none.
    pub fn finish(mut self) -> Result<Vec<f32>, SttError> {
        if let Some(conv) = self.conv.take() {
            let tail = conv.finish()?;
            self.audio.extend_from_slice(&tail);
        }
        if self.audio.is_empty() {
            return Err(alicia_audio::AudioError::Empty.into());
        }
        if self.vad.is_none() {
            return Ok(self.audio);
        }
        let ms = |t: u64| (t * alicia_audio::SPEECH_RATE as u64 / 1000) as usize;
        match self.speech {
            None => Err(alicia_audio::AudioError::Empty.into()),
            Some((start, end)) => {
                let from = ms(start.saturating_sub(MARGIN_MS)).min(self.audio.len());
                let to = end.map_or(self.audio.len(), |e| ms(e + MARGIN_MS).min(self.audio.len()));
                Ok(self.audio[from..to.max(from)].to_vec())
            }
        }
    }
}
