//! The Wyoming wake word server (default port 10400), as `wyoming-openwakeword` answers Home
//! Assistant.
//!
//! Per connection: `detect` (optional `names`) chooses the wake words of the streams that
//! follow (any of the server's when absent); `audio-start` opens a stream in the format it
//! names (converted to 16 kHz mono as chunks arrive); each `audio-chunk` is run through
//! openWakeWord ([`alicia_stt::wake`]) and every wake word heard is answered at once with
//! `detection` (`name`, `timestamp`: ms from the stream's start); `audio-stop` is answered
//! `not-detected` when nothing was heard. The models load once per connection; each stream
//! starts from a fresh feature history. A bad format or an unknown name is an `error` event.

use std::sync::Arc;

use alicia_audio::pcm::StreamConverter;
use alicia_stt::wake::{WakeDetector, WakeModels};
use alicia_stt::SttError;
use serde_json::json;
use tokio::net::TcpListener;

use crate::protocol::Event;
use crate::{Conn, ServerConfig, Session};

pub const DEFAULT_WAKE_PORT: u16 = 10400;

/// What the server needs.
#[derive(Debug, Clone)]
pub struct WakeServer {
    pub models: WakeModels,
    /// The score that fires (openWakeWord's default is 0.5).
    pub threshold: f32,
}

impl WakeServer {
    pub async fn serve(self, listener: TcpListener, cfg: ServerConfig) -> std::io::Result<()> {
        let info = Arc::new(crate::info::wake(&self.models.names()));
        let me = Arc::new(self);
        crate::serve(listener, cfg, move || WakeSession {
            server: me.clone(),
            info: info.clone(),
            names: Vec::new(),
            detector: None,
            stream: None,
        })
        .await
    }
}

struct WakeSession {
    server: Arc<WakeServer>,
    info: Arc<Event>,
    /// `detect`'s names (empty: any).
    names: Vec<String>,
    detector: Option<WakeDetector>,
    stream: Option<Stream>,
}

struct Stream {
    conv: StreamConverter,
    detected: bool,
}

impl WakeSession {
    fn start(&mut self, e: &Event) -> Result<(), SttError> {
        let fmt = e.pcm_format()?;
        let conv = StreamConverter::new(fmt)?;
        match self.detector.as_mut() {
            Some(d) => d.reset(),
            None => self.detector = Some(WakeDetector::new(&self.server.models, &self.names, self.server.threshold)?),
        }
        self.stream = Some(Stream { conv, detected: false });
        Ok(())
    }

    /// Feeds one chunk; the detections it completes.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<Event>, SttError> {
        let (Some(stream), Some(detector)) = (self.stream.as_mut(), self.detector.as_mut()) else { return Ok(vec![]) };
        let samples = stream.conv.push(bytes)?;
        let heard = detector.push(&samples)?;
        stream.detected |= !heard.is_empty();
        Ok(heard
            .into_iter()
            .map(|d| {
                tracing::debug!(name = %d.name, score = d.score, at_ms = d.at_ms, "wyoming wake word");
                Event::with_data("detection", json!({"name": d.name, "timestamp": d.at_ms, "speaker": null}))
            })
            .collect())
    }
}

fn error(e: &SttError) -> Event {
    Event::error(&e.to_string(), e.code())
}

impl Session for WakeSession {
    async fn on_event(&mut self, e: Event, conn: &mut Conn) -> std::io::Result<()> {
        match e.kind.as_str() {
            "describe" => conn.send(&self.info).await,
            "detect" => {
                let names: Vec<String> = e
                    .data
                    .get("names")
                    .and_then(|n| n.as_array())
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                    .unwrap_or_default();
                if names != self.names {
                    self.names = names;
                    self.detector = None;
                }
                Ok(())
            }
            "audio-start" => match self.start(&e) {
                Ok(()) => Ok(()),
                Err(err) => {
                    self.stream = None;
                    conn.send(&error(&err)).await
                }
            },
            "audio-chunk" => {
                if self.stream.is_none() {
                    // A chunk without audio-start: its own format opens the stream.
                    if let Err(err) = self.start(&e) {
                        return conn.send(&error(&err)).await;
                    }
                }
                match self.push(e.payload.as_deref().unwrap_or_default()) {
                    Ok(events) => {
                        for ev in &events {
                            conn.send(ev).await?;
                        }
                        Ok(())
                    }
                    Err(err) => {
                        self.stream = None;
                        conn.send(&error(&err)).await
                    }
                }
            }
            "audio-stop" => match self.stream.take() {
                Some(s) if s.detected => Ok(()),
                _ => {
                    if let Some(d) = &self.detector {
                        tracing::debug!(best = d.best_score(), "wyoming wake: not detected");
                    }
                    conn.send(&Event::new("not-detected")).await
                }
            },
            other => {
                tracing::debug!(event = other, "wyoming wake: event ignored");
                Ok(())
            }
        }
    }
}
