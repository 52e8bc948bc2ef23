//! A satellite, the client side of [`crate::sat`]: what an ESP32 with a microphone and a
//! speaker does on the bus, for `alicia satellite`, the benchmarks and the tests.
//!
//! It connects as the device itself (client id = its id), says `online` (retained, its will
//! says `offline`) on `P/devices/<id>/status`, registers with the `microphone` and
//! `audio_playback` capabilities and its location (the assistant's context area), then streams
//! 16 kHz 16-bit mono audio on `P/voice/sat/<id>/mic` in real time and reads what comes back
//! on `P/voice/sat/<id>/snd` ([`Satellite::converse`]).

use std::time::{Duration, Instant};

use alicia_envelope::{Destination, Envelope};
use alicia_sdk::{LastWill, Link, LinkEvent, LinkOptions, PublishProperties, QoS, SdkError, ServiceConfig};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::sat::{self, kind, Event};
use crate::topics::VoiceTopics;

/// The rate a satellite streams at (what Whisper wants; no resampling on the server).
pub const RATE: u32 = 16_000;

/// Why a satellite could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SatelliteError {
    #[error(transparent)]
    Bus(#[from] SdkError),
    #[error("the audio: {0}")]
    Audio(#[from] alicia_audio::AudioError),
    #[error("the registry refused the satellite: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("no answer from the registry within {0:?} (is device_registry running?)")]
    NoRegistration(Duration),
    #[error("the connection closed")]
    Closed,
}

/// Who the satellite is.
#[derive(Debug, Clone)]
pub struct SatelliteConfig {
    /// The broker, the login, TLS, the topic prefix.
    pub service: ServiceConfig,
    pub id: String,
    pub name: Option<String>,
    /// Its room: the area the assistant assumes when a sentence names none.
    pub location: Option<String>,
    /// Register in the device registry on connect (a real satellite does).
    pub register: bool,
}

impl SatelliteConfig {
    pub fn new(service: ServiceConfig, id: impl Into<String>) -> Self {
        SatelliteConfig { service, id: id.into(), name: None, location: None, register: true }
    }

    pub fn at(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }
}

/// An event from the `snd` topic and when it arrived.
#[derive(Debug, Clone)]
pub struct Heard {
    pub at: Instant,
    pub event: Event,
}

/// How to stream an utterance.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Audio per message (an ESP32 sends 20–32 ms).
    pub chunk_ms: u32,
    /// Send each chunk when its audio would have been recorded (else as fast as possible).
    pub realtime: bool,
    /// After the audio: `audio-stop` at once (a clip that ends), or silence until the server's
    /// voice activity detection ends the utterance (a live microphone), then `audio-stop`.
    pub end: End,
    /// `transcribe`'s data (`session_id`, `language`, ...).
    pub transcribe: Map<String, Value>,
    /// Scales the audio (a satellite further away hears it quieter).
    pub gain: f32,
    /// Ask the server to listen for a wake word first (`detect` with these names; empty: any
    /// it has): the clip holds the wake word, then the command. `None`: the satellite heard
    /// its wake word itself and streams only the command.
    pub wake: Option<Vec<String>>,
}

/// How an utterance ends on the satellite's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `audio-stop` right after the last chunk of the clip.
    Stop,
    /// Up to this much silence after the clip, until `voice-stopped` or `transcript` arrives.
    Vad(Duration),
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            chunk_ms: 20,
            realtime: true,
            end: End::Vad(Duration::from_secs(3)),
            transcribe: Map::new(),
            gain: 1.0,
            wake: None,
        }
    }
}

/// How a conversation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The answer was spoken (`audio-stop`).
    Answered,
    /// The answer's audio was cut short (`audio-stop` with `cancelled`, or `audio-cancel`).
    Cancelled,
    /// Another satellite heard the utterance better and answers it (`arbitrated`).
    Arbitrated { winner: String },
    /// An `error` event.
    Error { code: String, text: String },
    /// The server listened for a wake word and heard none (`not-detected`).
    NotDetected,
    /// Nothing more came within the wait.
    NoAnswer,
}

/// One utterance and what came back.
#[derive(Clone)]
pub struct Conversation {
    /// The utterance's session (with a wake word on the server: the one `detection` named).
    pub session_id: Option<String>,
    /// The wake word the server heard (`detection`'s name).
    pub wake: Option<String>,
    /// The `transcript` event's data.
    pub transcript: Option<Map<String, Value>>,
    /// The answer's audio (16-bit mono at `answer_rate`).
    pub answer: Vec<i16>,
    pub answer_rate: u32,
    pub outcome: Outcome,
    /// When the last chunk of the clip was sent.
    pub spoken_end: Instant,
    /// Milliseconds from `spoken_end` to each event kind's first arrival (`voice-stopped`,
    /// `transcript`, `audio-start`, `first_audio` (the first answer chunk), `audio-stop`).
    pub stages: Vec<(String, f64)>,
}

/// The answer as its length, not tens of thousands of samples in a failed test's message.
impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("session_id", &self.session_id)
            .field("wake", &self.wake)
            .field("transcript", &self.transcript)
            .field("answer", &format_args!("{} samples", self.answer.len()))
            .field("answer_rate", &self.answer_rate)
            .field("outcome", &self.outcome)
            .field("stages", &self.stages)
            .finish()
    }
}

impl Conversation {
    /// Milliseconds from the end of the clip to `stage`.
    pub fn stage(&self, stage: &str) -> Option<f64> {
        self.stages.iter().find(|(s, _)| s == stage).map(|(_, ms)| *ms)
    }

    /// The answer as a WAV file.
    pub fn answer_wav(&self) -> Vec<u8> {
        alicia_audio::encode_wav(&self.answer, self.answer_rate.max(1), 1)
    }

    /// The transcript's text.
    pub fn text(&self) -> Option<&str> {
        self.transcript.as_ref()?.get("text")?.as_str()
    }
}

/// A connected satellite.
pub struct Satellite {
    link: Link,
    rx: mpsc::UnboundedReceiver<LinkEvent>,
    topics: VoiceTopics,
    id: String,
    reply: String,
}

/// A WAV file as the 16 kHz mono 16-bit samples a satellite streams.
pub fn samples_of(wav: &[u8], gain: f32) -> Result<Vec<i16>, alicia_audio::AudioError> {
    let mono = alicia_audio::wav_to_16k_mono(wav, None)?;
    let scaled: Vec<f32> = mono.iter().map(|s| (s * gain).clamp(-1.0, 1.0)).collect();
    Ok(alicia_audio::f32_to_i16(&scaled))
}

impl Satellite {
    /// Connects (and registers, if configured), waiting at most `timeout`.
    pub async fn connect(cfg: SatelliteConfig, timeout: Duration) -> Result<Satellite, SatelliteError> {
        let prefix = cfg.service.topic_prefix.clone();
        let topics = VoiceTopics::new(prefix.clone());
        let id = cfg.id.clone();
        let status = format!("{prefix}/devices/{id}/status");
        let reply = format!("{prefix}/devices/{id}/reply");
        let opts = LinkOptions::new(id.clone(), [topics.snd(&id), reply.clone()])
            .with_will(LastWill::new(status.clone(), "offline", QoS::AtLeastOnce, true, None))
            .with_label(format!("satellite {id}"));
        let (link, rx) = Link::connect(&cfg.service, opts);
        let mut s = Satellite { link, rx, topics, id, reply };
        s.link.wait_online(timeout).await?;
        s.link.publish(status, QoS::AtLeastOnce, true, "online", None).await?;
        if cfg.register {
            s.register(&cfg, timeout).await?;
        }
        Ok(s)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The design document's registration, as a device: `microphone` and `audio_playback`.
    async fn register(&mut self, cfg: &SatelliteConfig, timeout: Duration) -> Result<(), SatelliteError> {
        let prefix = self.topics.prefix().to_string();
        let id = &self.id;
        let mic = self.topics.mic(id);
        let snd = self.topics.snd(id);
        let status = format!("{prefix}/devices/{id}/status");
        let mut data = json!({
            "device_id": id,
            "device_type": "satellite",
            "name": cfg.name.clone().unwrap_or_else(|| format!("{id} satellite")),
            "capabilities": [
                {"name": "microphone", "version": "1.0.0",
                 "parameters": {"sample_rate": RATE, "sample_width": 2, "channels": 1, "format": "wyoming"},
                 "endpoints": {"status": status}},
                {"name": "audio_playback", "version": "1.0.0",
                 "parameters": {"supported_formats": ["pcm"], "streaming": true},
                 "endpoints": {"status": status}},
            ],
            "endpoints": {"status": status, "audio_in": mic, "audio_out": snd},
            "metadata": {"manufacturer": "Alicia", "model": "alicia satellite", "version": env!("CARGO_PKG_VERSION")},
            "heartbeat_interval": 60,
        });
        if let Some(l) = &cfg.location {
            data["metadata"]["location"] = json!(l);
        }
        let register = format!("{prefix}/system/discovery/register");
        let env = Envelope::event(format!("device_id:{id}"), Destination::topic(&register), data).without_ttl();
        let correlation = Bytes::from(env.message_id.to_string());
        let props = PublishProperties {
            response_topic: Some(self.reply.clone()),
            correlation_data: Some(correlation),
            ..Default::default()
        };
        self.link.publish(register, QoS::AtLeastOnce, false, env.to_vec(), Some(props)).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .map_err(|_| SatelliteError::NoRegistration(timeout))?;
            let Some(LinkEvent::Message(p)) = ev else {
                if ev.is_none() {
                    return Err(SatelliteError::Closed);
                }
                continue;
            };
            if p.topic != self.reply.as_bytes() {
                continue;
            }
            let Ok(answer) = Envelope::parse(&p.payload) else { continue };
            return match answer.reply_error() {
                Some(e) => Err(SatelliteError::Refused { code: e.code, message: e.message }),
                None => Ok(()),
            };
        }
    }

    /// Publishes one event on the microphone topic.
    pub async fn send(&self, event: &Event) -> Result<(), SatelliteError> {
        self.link.publish(self.topics.mic(&self.id), QoS::AtLeastOnce, false, sat::encode(event), None).await?;
        Ok(())
    }

    /// The next event on `snd`, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Heard> {
        let snd = self.topics.snd(&self.id);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ev = tokio::time::timeout_at(deadline, self.rx.recv()).await.ok()??;
            let LinkEvent::Message(p) = ev else { continue };
            if p.topic != snd.as_bytes() {
                continue;
            }
            match sat::decode(&p.payload) {
                Ok(event) => return Some(Heard { at: Instant::now(), event }),
                Err(e) => tracing::warn!(satellite = %self.id, error = %e, "not an event on snd"),
            }
        }
    }

    /// Streams a clip and collects everything said back until the answer ends (or `wait`
    /// passes with nothing new): the transcript, the answer's audio, and when each came.
    pub async fn converse(
        &mut self,
        wav: &[u8],
        opts: &StreamOptions,
        wait: Duration,
    ) -> Result<Conversation, SatelliteError> {
        let samples = samples_of(wav, opts.gain)?;
        let streamer = Streamer { link: self.link.clone(), mic: self.topics.mic(&self.id) };
        let (spoken_tx, mut spoken_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = {
            let opts = opts.clone();
            tokio::spawn(async move { streamer.stream(&samples, &opts, spoken_tx, stop_rx).await })
        };
        let mut c = Conversation {
            session_id: opts.transcribe.get("session_id").and_then(Value::as_str).map(str::to_string),
            wake: None,
            transcript: None,
            answer: Vec::new(),
            answer_rate: 0,
            outcome: Outcome::NoAnswer,
            spoken_end: Instant::now(),
            stages: Vec::new(),
        };
        let mut spoken: Option<Instant> = None;
        let mut heard: Vec<Heard> = Vec::new();
        loop {
            let h = tokio::select! {
                at = &mut spoken_rx, if spoken.is_none() => {
                    spoken = Some(at.map_err(|_| SatelliteError::Closed)?);
                    continue;
                }
                h = self.next(wait) => h,
            };
            let Some(h) = h else { break };
            let e = &h.event;
            if c.session_id.is_none() {
                c.session_id = e.str("session_id").map(str::to_string);
            }
            let done = match e.kind.as_str() {
                kind::DETECTION => {
                    c.wake = e.str("name").map(str::to_string);
                    c.session_id = e.str("session_id").map(str::to_string).or(c.session_id.take());
                    false
                }
                kind::NOT_DETECTED => {
                    c.outcome = Outcome::NotDetected;
                    true
                }
                kind::VOICE_STOPPED => {
                    let _ = stop_tx.send(true);
                    false
                }
                kind::TRANSCRIPT => {
                    let _ = stop_tx.send(true);
                    c.transcript = Some(e.data.clone());
                    // Nothing said: nothing will be answered.
                    e.str("text").is_some_and(|t| t.trim().is_empty())
                }
                kind::AUDIO_START => {
                    c.answer_rate = e.u64("rate").unwrap_or(22_050) as u32;
                    false
                }
                kind::AUDIO_CHUNK => {
                    let p = e.payload.as_deref().unwrap_or_default();
                    c.answer.extend(p.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
                    false
                }
                kind::AUDIO_STOP => {
                    let cancelled = e.data.get("cancelled").and_then(Value::as_bool).unwrap_or(false);
                    c.outcome = if cancelled { Outcome::Cancelled } else { Outcome::Answered };
                    true
                }
                AUDIO_CANCEL => {
                    c.outcome = Outcome::Cancelled;
                    true
                }
                ARBITRATED => {
                    let _ = stop_tx.send(true);
                    c.outcome = Outcome::Arbitrated { winner: e.str("winner").unwrap_or_default().to_string() };
                    true
                }
                kind::ERROR => {
                    let _ = stop_tx.send(true);
                    c.outcome = Outcome::Error {
                        code: e.str("code").unwrap_or_default().to_string(),
                        text: e.str("text").unwrap_or_default().to_string(),
                    };
                    true
                }
                _ => false,
            };
            heard.push(h);
            if done {
                break;
            }
        }
        let _ = stop_tx.send(true);
        task.await.map_err(|_| SatelliteError::Closed)??;
        let end = match spoken {
            Some(t) => t,
            None => spoken_rx.await.map_err(|_| SatelliteError::Closed)?,
        };
        c.spoken_end = end;
        let since = |t: Instant| (t.saturating_duration_since(end).as_secs_f64() * 1e6).round() / 1e3;
        for h in &heard {
            let name = if h.event.kind == kind::AUDIO_CHUNK { "first_audio" } else { h.event.kind.as_str() };
            if !c.stages.iter().any(|(s, _)| s == name) {
                c.stages.push((name.to_string(), since(h.at)));
            }
        }
        Ok(c)
    }

    /// Leaves: `offline`, then DISCONNECT.
    pub async fn close(self) {
        let status = format!("{}/devices/{}/status", self.topics.prefix(), self.id);
        let _ = self.link.publish(status, QoS::AtLeastOnce, true, "offline", None).await;
        self.link.close().await;
    }
}

/// What the voice pipeline tells a satellite (see `docs/voice-protocol.md`): stop playing the
/// answer (barge-in, "stop").
pub const AUDIO_CANCEL: &str = "audio-cancel";
/// Another satellite heard this utterance better and answers it; go back to listening.
pub const ARBITRATED: &str = "arbitrated";

struct Streamer {
    link: Link,
    mic: String,
}

impl Streamer {
    async fn send(&self, e: &Event) -> Result<(), SatelliteError> {
        self.link.publish(self.mic.clone(), QoS::AtLeastOnce, false, sat::encode(e), None).await?;
        Ok(())
    }

    /// `transcribe`, `audio-start`, the chunks (paced in real time if asked), then the end.
    async fn stream(
        &self,
        samples: &[i16],
        opts: &StreamOptions,
        spoken: tokio::sync::oneshot::Sender<Instant>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), SatelliteError> {
        let per = (RATE * opts.chunk_ms.max(1) / 1000) as usize;
        let session = opts.transcribe.get("session_id").and_then(Value::as_str);
        if let Some(names) = &opts.wake {
            let names = if names.is_empty() { Value::Null } else { json!(names) };
            self.send(&Event::with_data(kind::DETECT, json!({"names": names}))).await?;
        }
        self.send(&Event::with_data(kind::TRANSCRIBE, opts.transcribe.clone().into())).await?;
        self.send(&sat::audio_start(RATE, session)).await?;
        let start = tokio::time::Instant::now();
        let step = Duration::from_millis(opts.chunk_ms.max(1) as u64);
        let mut n = 0u32;
        let realtime = opts.realtime;
        let pace = move |n: u32| async move {
            if realtime {
                tokio::time::sleep_until(start + step * n).await;
            }
        };
        for chunk in samples.chunks(per) {
            pace(n).await;
            self.send(&sat::audio_chunk(RATE, chunk, u64::from(n * opts.chunk_ms))).await?;
            n += 1;
        }
        let _ = spoken.send(Instant::now());
        if let End::Vad(most) = opts.end {
            // A live microphone keeps sending (room noise: silence here) until the server says
            // it heard the end.
            let quiet = vec![0i16; per];
            let until = tokio::time::Instant::now() + most;
            while !*stop.borrow() && tokio::time::Instant::now() < until {
                tokio::select! {
                    _ = pace(n) => {}
                    _ = stop.changed() => break,
                }
                if *stop.borrow() {
                    break;
                }
                self.send(&sat::audio_chunk(RATE, &quiet, u64::from(n * opts.chunk_ms))).await?;
                n += 1;
            }
        }
        self.send(&sat::audio_stop(u64::from(n * opts.chunk_ms), session)).await?;
        Ok(())
    }
}
