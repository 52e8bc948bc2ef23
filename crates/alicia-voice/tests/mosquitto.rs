//! The same scenarios against Debian's Mosquitto: the voice services must run unchanged
//! against an external broker (shared subscriptions, retained presence, wills). Skipped, with
//! a note, when `/usr/sbin/mosquitto` is missing.

mod common;
mod scenarios;
mod spoken;

use common::Mosquitto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_documents_stt_request_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    scenarios::design_request_round_trip(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stt_instances_share_requests_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    scenarios::two_instances_share_requests(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn satellites_stream_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    scenarios::satellites_stream(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_streams_to_a_satellite_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    scenarios::tts_streams_to_a_satellite(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_commands_reach_devices_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    spoken::spoken_commands_reach_devices(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_satellites_are_arbitrated_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    spoken::two_satellites_are_arbitrated(m.addr).await;
}
