//! The Wyoming speech-to-text server.
//!
//! Per connection: `transcribe` sets the language for the next utterance; `audio-start` opens
//! an utterance in the format it names (any rate, width 1–4, any channel count; converted to
//! 16 kHz mono as chunks arrive); `audio-chunk`s feed it; `audio-stop` transcribes it and answers
//! `transcript` (text, language). With VAD on, an utterance whose speech has ended is
//! transcribed at once and the rest of its chunks ignored. No speech is an empty transcript;
//! a busy engine, audio over the limit or a bad format is an `error` event.

use std::path::PathBuf;
use std::sync::Arc;

use alicia_audio::pcm::PcmFormat;
use alicia_audio::AudioError;
use alicia_stt::stream::{StreamEvent, SttStream};
use alicia_stt::vad::{Vad, VadConfig};
use alicia_stt::{SttEngine, SttError};
use serde_json::json;
use tokio::net::TcpListener;

use crate::protocol::Event;
use crate::{Conn, ServerConfig, Session};

/// What the server needs.
#[derive(Clone)]
pub struct AsrServer {
    pub engine: SttEngine,
    /// The model's configuration name, shown in `info` (`tiny.en`).
    pub model_name: String,
    /// `silero_vad.onnx` and thresholds, for end of speech inside a stream.
    pub vad: Option<(PathBuf, VadConfig)>,
}

impl AsrServer {
    /// Languages for `info`: `en` for an English-only model, every Whisper language otherwise.
    pub fn languages(&self) -> Vec<String> {
        if !self.engine.is_multilingual() {
            return vec!["en".into()];
        }
        alicia_stt::languages::all().into_iter().map(str::to_string).collect()
    }

    pub async fn serve(self, listener: TcpListener, cfg: ServerConfig) -> std::io::Result<()> {
        let me = Arc::new(self);
        let info = Arc::new(crate::info::asr(&me.model_name, &format!("Whisper {}", me.model_name), &me.languages()));
        crate::serve(listener, cfg, move || AsrSession {
            server: me.clone(),
            info: info.clone(),
            language: None,
            stream: None,
            answered: false,
        })
        .await
    }
}

struct AsrSession {
    server: Arc<AsrServer>,
    info: Arc<Event>,
    language: Option<String>,
    stream: Option<SttStream>,
    /// The current utterance was already answered (VAD ended it).
    answered: bool,
}

impl AsrSession {
    fn start(&mut self, e: &Event) -> Result<(), SttError> {
        let fmt = e.pcm_format()?;
        // A VAD per utterance: its recurrent state belongs to one stream (loading is ~ms).
        let vad = match &self.server.vad {
            Some((model, cfg)) => Some(Vad::new(model, *cfg)?),
            None => None,
        };
        self.stream = Some(SttStream::new(fmt, vad, self.server.engine.config().max_audio_seconds)?);
        self.answered = false;
        Ok(())
    }

    async fn transcribe(&mut self, conn: &mut Conn) -> std::io::Result<()> {
        let Some(stream) = self.stream.take() else { return Ok(()) };
        self.answered = true;
        let reply = match stream.finish() {
            Ok(audio) => match self.server.engine.transcribe(audio, self.language.as_deref()).await {
                Ok(t) => {
                    tracing::debug!(text = %t.text, inference_ms = t.inference_ms, "wyoming transcript");
                    Event::with_data("transcript", json!({"text": t.text, "language": t.language}))
                }
                Err(e) => error(&e),
            },
            // Nothing (or no speech) was said: an empty transcript, as the reference answers.
            Err(SttError::Audio(AudioError::Empty)) => Event::with_data(
                "transcript",
                json!({"text": "", "language": self.language.clone().unwrap_or_else(|| "en".into())}),
            ),
            Err(e) => error(&e),
        };
        conn.send(&reply).await
    }
}

fn error(e: &SttError) -> Event {
    Event::error(&e.to_string(), e.code())
}

impl Session for AsrSession {
    async fn on_event(&mut self, e: Event, conn: &mut Conn) -> std::io::Result<()> {
        match e.kind.as_str() {
            "describe" => conn.send(&self.info).await,
            "transcribe" => {
                self.language = e.str("language").map(str::to_string);
                Ok(())
            }
            "audio-start" => match self.start(&e) {
                Ok(()) => Ok(()),
                Err(err) => {
                    // One answer per utterance: its chunks are ignored until audio-stop.
                    self.stream = None;
                    self.answered = true;
                    conn.send(&error(&err)).await
                }
            },
            "audio-chunk" => {
                if self.answered {
                    return Ok(());
                }
                if self.stream.is_none() {
                    // A chunk without audio-start: its own format opens the utterance.
                    if let Err(err) = self.start(&e) {
                        self.answered = true;
                        return conn.send(&error(&err)).await;
                    }
                }
                let stream = self.stream.as_mut().expect("started above");
                match stream.push(e.payload.as_deref().unwrap_or_default()) {
                    Ok(StreamEvent::SpeechEnded) => self.transcribe(conn).await,
                    Ok(_) => Ok(()),
                    Err(err) => {
                        self.stream = None;
                        self.answered = true;
                        conn.send(&error(&err)).await
                    }
                }
            }
            "audio-stop" => {
                let was_answered = std::mem::replace(&mut self.answered, false);
                if was_answered {
                    return Ok(());
                }
                if self.stream.is_none() {
                    // audio-stop with no audio at all.
                    let fmt = PcmFormat::SPEECH;
                    self.stream = SttStream::new(fmt, None, 1.0).ok();
                }
                let r = self.transcribe(conn).await;
                self.answered = false;
                r
            }
            other => {
                tracing::debug!(event = other, "wyoming asr: event ignored");
                Ok(())
            }
        }
    }
}
