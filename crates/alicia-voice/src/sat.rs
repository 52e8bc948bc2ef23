//! The satellite protocol: audio and speech between a satellite (a microphone and speaker in a
//! room) and the voice services, over MQTT, shaped as Wyoming events one to one.
//!
//! Every MQTT message on `P/voice/sat/<id>/mic` (satellite → Alicia) or `P/voice/sat/<id>/snd`
//! (Alicia → satellite) is exactly one Wyoming event in Wyoming's own bytes: a JSON header
//! line (`{"type": "audio-chunk", "data_length": N, "payload_length": M}`), `N` bytes of JSON
//! data, then `M` bytes of payload (raw little-endian PCM for audio). A Wyoming peer's events
//! go through unchanged, which is what the Wyoming bridge does; an ESP32 writes the header
//! with `snprintf`. The two topics are the two directions of one Wyoming connection.
//!
//! Why Wyoming's framing rather than raw PCM messages beside JSON ones: one topic carries
//! start, chunks and stop in order (MQTT keeps the order of one publisher on one topic), and a
//! chunk that happens to begin with `{` can never be mistaken for a control message.

use alicia_wyoming::protocol::{self, ProtocolError};
use serde_json::{json, Value};

pub use alicia_wyoming::protocol::{Event, Limits};

/// What a satellite may send in one message: a 100 ms chunk of 48 kHz 32-bit stereo is 38 KB.
pub const LIMITS: Limits = Limits { max_header: 16 << 10, max_data: 64 << 10, max_payload: 512 << 10 };

/// Event types, as Wyoming names them.
pub mod kind {
    pub const TRANSCRIBE: &str = "transcribe";
    pub const AUDIO_START: &str = "audio-start";
    pub const AUDIO_CHUNK: &str = "audio-chunk";
    pub const AUDIO_STOP: &str = "audio-stop";
    pub const TRANSCRIPT: &str = "transcript";
    pub const SYNTHESIZE: &str = "synthesize";
    pub const VOICE_STARTED: &str = "voice-started";
    pub const VOICE_STOPPED: &str = "voice-stopped";
    /// Wyoming's wake word events: `detect` (names) before a stream asks the server to listen
    /// for a wake word; `detection` (name, timestamp) when it heard one; `not-detected` at
    /// `audio-stop` when it heard none.
    pub const DETECT: &str = "detect";
    pub const DETECTION: &str = "detection";
    pub const NOT_DETECTED: &str = "not-detected";
    pub const ERROR: &str = "error";
}

/// Reads one message.
pub fn decode(bytes: &[u8]) -> Result<Event, ProtocolError> {
    protocol::decode(bytes, &LIMITS)
}

/// One message's bytes.
pub fn encode(event: &Event) -> Vec<u8> {
    protocol::encode(event)
}

/// `audio-start` for 16-bit mono PCM at `rate`.
pub fn audio_start(rate: u32, session: Option<&str>) -> Event {
    with_session(
        Event::with_data(kind::AUDIO_START, json!({"rate": rate, "width": 2, "channels": 1, "timestamp": 0})),
        session,
    )
}

/// `audio-chunk` of 16-bit mono samples; `timestamp` in ms from the start.
pub fn audio_chunk(rate: u32, samples: &[i16], timestamp_ms: u64) -> Event {
    Event::with_data(kind::AUDIO_CHUNK, json!({"rate": rate, "width": 2, "channels": 1, "timestamp": timestamp_ms}))
        .with_payload(alicia_audio::pcm::encode_s16le(samples))
}

pub fn audio_stop(timestamp_ms: u64, session: Option<&str>) -> Event {
    with_session(Event::with_data(kind::AUDIO_STOP, json!({"timestamp": timestamp_ms})), session)
}

/// `error` with Alicia's code (Wyoming's `code` field).
pub fn error(code: &str, text: &str, session: Option<&str>) -> Event {
    with_session(Event::error(text, code), session)
}

/// Adds `session_id` to an event's data (Wyoming peers ignore fields they do not know).
pub fn with_session(mut event: Event, session: Option<&str>) -> Event {
    if let Some(s) = session {
        event.data.insert("session_id".into(), Value::String(s.to_string()));
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let chunk = audio_chunk(16000, &[1, -2, 3], 40);
        let back = decode(&encode(&chunk)).unwrap();
        assert_eq!(back, chunk);
        assert_eq!(back.payload.as_deref(), Some(&[1u8, 0, 254, 255, 3, 0][..]));
        let start = decode(&encode(&audio_start(22050, Some("s1")))).unwrap();
        assert_eq!(
            (start.kind.as_str(), start.u64("rate"), start.str("session_id")),
            ("audio-start", Some(22050), Some("s1"))
        );
        // Raw PCM is not a message: its first bytes are no JSON header.
        assert!(decode(&[0x7b, 0x00, 0x10, 0x20]).is_err());
        let too_big = format!("{{\"type\":\"audio-chunk\",\"payload_length\":{}}}\n", 1 << 20);
        assert!(matches!(decode(too_big.as_bytes()), Err(ProtocolError::TooLarge { .. })));
    }
}
