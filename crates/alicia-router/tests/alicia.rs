//! The router over real sockets against Alicia's broker, started in this process.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_receive_device_and_capability_envelopes() {
    let (_broker, addr) = alicia_broker().await;
    devices_receive(addr, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_load_balancing_skips_offline_and_prefers_the_location() {
    let (_broker, addr) = alicia_broker().await;
    load_balancing(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_looping_malformed_and_unroutable_are_dead_lettered() {
    let (_broker, addr) = alicia_broker().await;
    dead_letters(addr, true).await;
}

/// The same, with every envelope through the priority queue and the forwarding task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_queue_devices_receive_and_dead_letters_are_sent() {
    let (_broker, addr) = alicia_broker().await;
    devices_receive(addr, false).await;
    dead_letters(addr, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_documents_messages_route_as_written() {
    let (_broker, addr) = alicia_broker().await;
    design_messages(addr).await;
}
