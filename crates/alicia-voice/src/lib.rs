//! Alicia's voice services on the bus: `stt_service` ([`stt`]) and `tts_service` ([`tts`])
//! on the speech engines of `alicia-stt` and `alicia-tts`, `voice_pipeline` ([`pipeline`]:
//! a session per satellite utterance, arbitration, barge-in), the satellite protocol ([`sat`],
//! written down in `docs/voice-protocol.md`) and a satellite client ([`satellite`]), and the
//! Wyoming bridge ([`wyoming_bridge`]) that
//! lets Home Assistant use them.
//!
//! Both services are SDK bus services and capability providers: each registers itself in the
//! device registry (the design document's registration, `endpoints.control` = its inbox), so
//! `capability:speech_to_text` / `capability:text_to_speech` through the router reaches it, and
//! the broker's shared subscription on the inbox gives each request to one instance.
//!
//! # On the bus (`P` = topic prefix, `alicia` by default)
//!
//! | topic | who → who | what |
//! |-------|-----------|------|
//! | `P/services/stt_service/inbox`, `P/voice/stt/request` | anyone → one STT instance | the design document's STT request: `data` = `{audio_data (base64 WAV), audio_format ("wav", or "pcm" with sample_rate/channels/sample_width), sample_rate, channels, language, confidence_threshold, publish?}`, `metadata` = `{session_id, user_id, device_id}`; `{"action": "describe"}` → model, languages, limits |
//! | response topic (or the requester's inbox) | STT → requester | `response`, `data` = `{transcription, confidence, language, duration_seconds, model, timings_ms: {decode_audio, queue, inference, total}, accepted?, reason?}`, `metadata` = the request's |
//! | `P/voice/stt/response` | STT → assistant | the same response, for every transcript whose confidence passed the request's threshold, unless the request said `"publish": false`; for a satellite's stream it is addressed to `device_id:<satellite>` with `metadata` `{session_id, device_id: <satellite>, user_id?}` |
//! | `P/voice/stt/events` | STT → anyone | `voice_started`, `utterance_ended` (see docs/voice-protocol.md), `wake_detected` `{satellite, session_id, name, score, timestamp}` for a wake word heard on the server, stream errors: `{event: "error", satellite, session_id, code, message}` |
//! | `P/voice/stt/instances/<instance>` | STT ↔ STT | retained presence of each STT instance (who follows which satellite; see [`stream`]) |
//! | `P/services/tts_service/inbox`, `P/voice/tts/request` | anyone → one TTS instance | `{text, voice?, rate? (1.0 normal, 0.25–4), satellite?, session_id?}` → `{audio_data (base64 WAV), audio_format: "wav", sample_rate, channels: 1, duration_seconds, voice, cached, timings_ms: {first_audio, total, queue, inference}}` (`queue`: waiting for a free voice session, `inference`: the model, both over all sentences); with `satellite` the speech is streamed to its `snd` topic instead and the answer is `{satellite, session_id, sample_rate, duration_seconds, timings_ms}` (the same timings); `{"action": "describe"}` → voices |
//! | `P/voice/ai/response` | assistant → one TTS instance | the assistant's answers: `data.response` is spoken to `data.satellite` (else `metadata.device_id`); no satellite, nothing said |
//! | `P/voice/stt/events` (also) | STT → the voice pipeline | per utterance: `{event: "voice_started", satellite, session_id, at (unix ms), publish}`, `{event: "utterance_ended", satellite, session_id, reason, speech: {started_at, start_ms, end_ms, energy_dbfs}, publish}` |
//! | `P/voice/tts/cancel` | the pipeline → every TTS instance | `{satellite, session_id?, reason}`: stop that speech (`audio-stop` with `cancelled: true`) |
//! | `P/voice/events` | the pipeline → anyone | `started`, `transcript`, `arbitrated`, `cancelled`, `error`, `finished` (the session's record with `timings_ms`) ([`pipeline`]) |
//! | `P/voice/tts/events` | TTS → anyone | `{event: "synthesized", for: "request", requester, request_id, session_id, text, voice, sample_rate, duration_seconds, cached, timings_ms}` for each request answered with a WAV; `{event: "spoken", satellite, session_id, text, for: "request"/"answer"/"synthesize", summary}` for speech streamed to a satellite; `{event: "error", …, code, message}` |
//! | `P/voice/sat/<id>/mic` | satellite → STT (and TTS for `synthesize`) | one Wyoming event per message ([`sat`]): `transcribe`, `audio-start`, `audio-chunk` (raw PCM payload, 20–100 ms), `audio-stop`, `synthesize` |
//! | `P/voice/sat/<id>/snd` | STT/TTS → satellite | `voice-started`, `voice-stopped`, `transcript`, `error`; speech as `audio-start`, `audio-chunk`s (100 ms), `audio-stop`; each with `session_id` |
//! | `P/system/discovery/register`, `…/heartbeat` | both → registry | registration (`device_id` = the service name, `device_type` `service`, the capability with its parameters and endpoints) and device heartbeats (`data.device_id`) |
//! | `P/system/deadletter` | both → anyone | every refused request or message, with the reason |
//!
//! Error codes: `invalid_request`, `not_wav`, `unsupported_format`, `empty_audio`,
//! `audio_too_long`, `unsupported_language`, `busy`, `timeout`, `model_unavailable`,
//! `stt_failed` (STT); `invalid_request`, `empty_text`, `text_too_long`, `invalid_rate`,
//! `unknown_voice`, `busy`, `timeout`, `tts_failed` (TTS); `invalid_message`, `forbidden`,
//! `interrupted` (streams). A busy service answers `busy` and does not dead-letter: nothing
//! was wrong with the request, and another instance or a retry may take it.
//!
//! # Why it is built this way
//!
//! - **One crate for both services and the bridge**: they share the satellite protocol, the
//!   registration and the topics; the engines stay in their own crates, with no bus in them.
//! - **A plain connection ([`alicia_sdk::Link`]) for audio**: satellite messages are not
//!   envelopes (an envelope would base64 every chunk); the SDK connection handles envelopes.
//! - **Responses built here, not by the SDK's return value**, for STT: the design document's
//!   response carries the request's metadata, and the same envelope also goes to
//!   `P/voice/stt/response`.

pub mod pipeline;
pub mod provider;
pub mod sat;
pub mod satellite;
pub mod stream;
pub mod stt;
pub mod topics;
pub mod tts;
pub mod wyoming_bridge;

pub use topics::VoiceTopics;
