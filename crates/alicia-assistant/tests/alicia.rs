//! The assistant against Alicia's broker (in this process), with the real registry and router.

mod common;

use common::scenarios::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_reach_the_right_devices_with_the_right_parameters() {
    let (_broker, addr) = alicia_broker().await;
    intents_reach_devices(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_area_comes_from_the_satellite() {
    let (_broker, addr) = alicia_broker().await;
    area_from_the_satellite(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguity_asks_back_and_the_follow_up_completes_it() {
    let (_broker, addr) = alicia_broker().await;
    ambiguity_asks_back(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sentences_get_a_polite_answer_and_an_event() {
    let (_broker, addr) = alicia_broker().await;
    unknown_sentences_are_answered(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_volume_respects_step_size_and_bounds() {
    let (_broker, addr) = alicia_broker().await;
    relative_volume_respects_steps_and_bounds(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_are_answered_from_state_and_telemetry() {
    let (_broker, addr) = alicia_broker().await;
    state_questions(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_are_kept_and_fire() {
    let (_broker, addr) = alicia_broker().await;
    timers(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcripts_from_the_stt_service_are_answered() {
    let (_broker, addr) = alicia_broker().await;
    transcripts_from_the_stt_service(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_devices_are_not_commanded() {
    let (_broker, addr) = alicia_broker().await;
    offline_devices(addr).await;
}
