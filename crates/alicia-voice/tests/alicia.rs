//! The voice services against Alicia's broker, started in this process, on the real models.

mod common;
mod scenarios;
mod spoken;

use common::alicia_broker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_documents_stt_request_through_the_router() {
    let (_b, addr) = alicia_broker().await;
    scenarios::design_request_round_trip(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_to_speech_and_back_over_the_bus() {
    let (_b, addr) = alicia_broker().await;
    scenarios::tts_to_stt_round_trip(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stt_instances_share_requests() {
    let (_b, addr) = alicia_broker().await;
    scenarios::two_instances_share_requests(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn satellites_stream_and_one_instance_answers_each() {
    let (_b, addr) = alicia_broker().await;
    scenarios::satellites_stream(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voice_activity_ends_a_streamed_utterance() {
    let (_b, addr) = alicia_broker().await;
    scenarios::vad_ends_the_utterance(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_streams_to_a_satellite() {
    let (_b, addr) = alicia_broker().await;
    scenarios::tts_streams_to_a_satellite(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistants_answers_are_spoken() {
    let (_b, addr) = alicia_broker().await;
    scenarios::answers_are_spoken(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_dead_lettered() {
    let (_b, addr) = alicia_broker().await;
    scenarios::bad_input(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_busy() {
    let (_b, addr) = alicia_broker().await;
    scenarios::busy(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoken_commands_reach_devices_and_are_answered() {
    let (_b, addr) = alicia_broker().await;
    spoken::spoken_commands_reach_devices(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voice_pipeline_keeps_sessions() {
    let (_b, addr) = alicia_broker().await;
    spoken::the_pipeline_keeps_sessions(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_satellites_hearing_one_utterance_are_arbitrated() {
    let (_b, addr) = alicia_broker().await;
    spoken::two_satellites_are_arbitrated(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_cancels_the_answer() {
    let (_b, addr) = alicia_broker().await;
    spoken::barge_in_cancels_the_answer(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_to_a_satellite_can_be_cancelled() {
    let (_b, addr) = alicia_broker().await;
    spoken::speech_can_be_cancelled(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_answered_in_the_next_utterance() {
    let (_b, addr) = alicia_broker().await;
    spoken::a_question_is_answered_in_the_next_utterance(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_intent_is_spoken() {
    let (_b, addr) = alicia_broker().await;
    spoken::every_intent_is_spoken(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_word_heard_on_the_server_starts_the_command() {
    let (_b, addr) = alicia_broker().await;
    spoken::a_wake_word_heard_on_the_server_starts_the_command(addr).await;
}
