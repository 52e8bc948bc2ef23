//! The same scenarios against Debian's Mosquitto: the assistant, registry and router run
//! unchanged against an external broker. Skipped, with a note, when Mosquitto is missing.

mod common;

use common::scenarios::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_reach_the_right_devices_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    intents_reach_devices(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguity_and_follow_up_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    ambiguity_asks_back(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sentences_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    unknown_sentences_are_answered(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_volume_and_timers_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    relative_volume_respects_steps_and_bounds(m.addr).await;
    timers(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_and_state_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    transcripts_from_the_stt_service(m.addr).await;
    state_questions(m.addr).await;
}
