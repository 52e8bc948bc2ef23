//! The Wyoming text-to-speech server.
//!
//! `synthesize` (text; voice by `name`, or by `language`, else the default voice) is answered
//! with `audio-start` (the voice's rate, 16-bit mono), `audio-chunk`s of 1024 samples sent as
//! each sentence is synthesised (so playback can start before the text is done), and
//! `audio-stop`. An unknown voice, empty text or a busy engine is an `error` event.

use std::sync::Arc;

use alicia_tts::{SpeakOptions, TtsEngine, TtsError};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::info::VoiceInfo;
use crate::protocol::Event;
use crate::{Conn, ServerConfig, Session};

const CHUNK_SAMPLES: usize = 1024;

#[derive(Clone)]
pub struct TtsServer {
    pub engine: TtsEngine,
    /// Silence before the speech, seconds (0 for Home Assistant's players).
    pub lead_in: f32,
}

impl TtsServer {
    pub fn voices(&self) -> Vec<VoiceInfo> {
        self.engine
            .voices()
            .iter()
            .map(|v| VoiceInfo {
                name: v.name().to_string(),
                description: format!("Piper {} ({} Hz)", v.name(), v.sample_rate()),
                languages: v.config().language.iter().cloned().collect(),
            })
            .collect()
    }

    pub async fn serve(self, listener: TcpListener, cfg: ServerConfig) -> std::io::Result<()> {
        let info = Arc::new(crate::info::tts(&self.voices()));
        let me = Arc::new(self);
        crate::serve(listener, cfg, move || TtsSession { server: me.clone(), info: info.clone() }).await
    }

    /// The voice a `synthesize` asks for: `voice.name`, else the first whose language matches
    /// `voice.language` (`en_US`, or just `en`), else the default.
    fn pick(&self, voice: Option<&Value>) -> Result<Option<String>, TtsError> {
        let Some(v) = voice else { return Ok(None) };
        if let Some(name) = v.get("name").and_then(Value::as_str) {
            return self.engine.voice(Some(name)).map(|v| Some(v.name().to_string()));
        }
        if let Some(lang) = v.get("language").and_then(Value::as_str) {
            let norm = |s: &str| s.replace('-', "_").to_ascii_lowercase();
            let want = norm(lang);
            let found = self.engine.voices().iter().find(|v| {
                v.config()
                    .language
                    .as_deref()
                    .map(norm)
                    .is_some_and(|l| l == want || l.split('_').next() == Some(&want))
            });
            return match found {
                Some(v) => Ok(Some(v.name().to_string())),
                None => Err(TtsError::UnknownVoice {
                    name: format!("language {lang}"),
                    available: self.engine.voice_names(),
                }),
            };
        }
        Ok(None)
    }
}

struct TtsSession {
    server: Arc<TtsServer>,
    info: Arc<Event>,
}

fn error(e: &TtsError) -> Event {
    Event::error(&e.to_string(), e.code())
}

impl TtsSession {
    async fn synthesize(&mut self, e: &Event, conn: &mut Conn) -> std::io::Result<()> {
        let text = e.str("text").unwrap_or_default();
        let voice = match self.server.pick(e.data.get("voice")) {
            Ok(v) => v,
            Err(err) => return conn.send(&error(&err)).await,
        };
        let opts = SpeakOptions { voice, lead_in: self.server.lead_in, ..Default::default() };
        let mut rx = self.server.engine.stream(text, &opts);
        let mut started = false;
        let mut sent = 0usize;
        while let Some(chunk) = rx.recv().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(err) => return conn.send(&error(&err)).await,
            };
            let fmt = json!({"rate": chunk.sample_rate, "width": 2, "channels": 1});
            if !started {
                let mut start = fmt.clone();
                start["timestamp"] = json!(0);
                conn.send(&Event::with_data("audio-start", start)).await?;
                started = true;
            }
            for piece in chunk.samples.chunks(CHUNK_SAMPLES) {
                let mut data = fmt.clone();
                data["timestamp"] = json!(sent as u64 * 1000 / chunk.sample_rate as u64);
                sent += piece.len();
                let payload = alicia_audio::pcm::encode_s16le(piece);
                conn.send(&Event::with_data("audio-chunk", data).with_payload(payload)).await?;
            }
            if chunk.last {
                let ts = sent as u64 * 1000 / chunk.sample_rate as u64;
                return conn.send(&Event::with_data("audio-stop", json!({"timestamp": ts}))).await;
            }
        }
        Ok(())
    }
}

impl Session for TtsSession {
    async fn on_event(&mut self, e: Event, conn: &mut Conn) -> std::io::Result<()> {
        match e.kind.as_str() {
            "describe" => conn.send(&self.info).await,
            "synthesize" => self.synthesize(&e, conn).await,
            other => {
                tracing::debug!(event = other, "wyoming tts: event ignored");
                Ok(())
            }
        }
    }
}
