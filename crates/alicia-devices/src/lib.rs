//! Alicia's device services: the design document's "Device Services" (speaker management,
//! sensor data, actuator control), each a bus service on [`alicia_sdk`] that speaks to devices
//! only through `docs/device-protocol.md` (commands through the router, retained states,
//! telemetry), so it works the same with real devices, `alicia simulate` and devices the Home
//! Assistant bridge adopts.
//!
//! Each one follows the home on a second, plain MQTT connection ([`home::Home`]: the
//! registry's retained inventory and events, every `P/devices/+/state`), the way the router
//! and the monitor keep their documents apart from their envelopes.
//!
//! # `speaker_manager` ([`speaker`])
//!
//! | topic / request | what |
//! |-----------------|------|
//! | `P/devices/speakers/announce` (envelopes, the design document's topic; shared subscription) | an announcement: data `{text?, audio_url?, volume?, device_id? \| location?}`; no target: every reachable speaker |
//! | inbox `{"action": "announce", ..., "wait": bool}` | the same as a request: answers `{"status": "queued", "queued": {id: position}}`, or with `wait` once every target has finished: `{"status": "done", "results": [...]}` |
//! | inbox `{"action": "play", "audio_url", "volume"?, target, "enqueue"?}` | plays now, or (`enqueue`) after what plays has ended |
//! | inbox `{"action": "volume", target, "volume": N \| "step": N \| "mute": bool}` | `set_volume` within the speaker's registered `min_volume..max_volume` (else `invalid_parameters` naming the range), `volume_step` (the device multiplies by its `step_size`), `mute`/`unmute` where `mute_support` is true |
//! | inbox `{"action": "stop", target}`, `{"action": "status"}` | stop; every speaker with its state, volume range, ducking and queue length |
//!
//! Each speaker has a queue (at most `speaker_manager.queue_limit`, else `queue_full`):
//! announcements play one after another, each to its end (`announcing` false again in the
//! device's state, or `announcement_timeout_secs`). Over music, a speaker whose `announce`
//! capability has `ducking: true` is sent the announcement as is; one without gets `pause`,
//! the announcement, then `resume`. A speaker without `announce` gets `play_audio` with
//! `announce: true` (it needs an `audio_url`). Text without audio goes to speakers that
//! announce text themselves; turning text into speech first is the TTS service's job.
//!
//! # `sensor_data` ([`sensor`])
//!
//! - Reads `P/devices/+/telemetry` and the design document's `P/devices/sensors/telemetry`
//!   (plain JSON, or an envelope whose data is the telemetry): `{"device_id", "timestamp",
//!   "readings": [{"capability", "value", "unit"}]}`. Each reading is checked against the
//!   sender's registration: a registered capability, its `unit`, a number within `min..=max` (or
//!   a boolean); on its own topic the document's `device_id` must be the topic's. Refused
//!   readings go to the dead-letter topic with every reason; the others are kept.
//! - The latest reading per capability is retained on `P/sensors/<id>`: `{"device_id",
//!   "location", "updated", "readings": {cap: {value, unit, timestamp, device_class}}}` (the
//!   Home Assistant bridge and the data store read it).
//! - `sensor_data.thresholds` (name, capability, device_id/location, above/below, hysteresis,
//!   severity, message) raise alerts on `P/system/alerts` in the monitor's format, once per
//!   (rule, sensor), resolved when the value is back inside by the hysteresis.
//! - Inbox: `{"action": "latest", "device_id"?}`, `{"action": "thresholds"}`. Metrics on
//!   `P/system/metrics/sensor_data`.
//!
//! # `actuator_control` ([`actuator`])
//!
//! Inbox `{"action": "command", "device_id", "command", "parameters", "request_id"?}`: the
//! command goes to the device as a `request` through the router; no answer within
//! `ack_timeout_ms` → sent again (up to `retries` times, the same envelope and message id, so a
//! device can tell a retry from a new command). Then the device's reported state must show the
//! change within `confirm_timeout_ms` (`turn_on` → `power: on`, `set_brightness` → that
//! `brightness`, ...; otherwise any newer state). The answer: `{"status": "confirmed" |
//! "unconfirmed", "acknowledged", "attempts", "elapsed_ms", "state", "message_id"}`;
//! `unconfirmed` means the device answered but its state did not change, and it also fires the
//! alert `actuator_no_state_change` (resolved by the next confirmed command to it). No answer
//! and no change: error `timeout`. A refusal by the device: its error code. The same
//! `request_id` (else the same request message id, a redelivery) within `dedup_window_secs` is
//! answered with the first outcome (`duplicate: true`) and sends nothing. Every outcome is also
//! published on `P/system/actuators/events`. `{"action": "state", "device_id"}` answers the
//! tracked state and the last command's outcome.

pub mod actuator;
pub mod alerts;
pub mod home;
pub mod media;
pub mod sensor;
pub mod speaker;

/// What can stop a device service from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error(transparent)]
    Bus(#[from] alicia_sdk::SdkError),
    #[error("configuration: {0}")]
    Config(String),
}

/// Twelve random hex digits, for client ids.
pub(crate) fn random_suffix() -> String {
    alicia_envelope::Uuid::new_v4().simple().to_string()[..12].to_string()
}
