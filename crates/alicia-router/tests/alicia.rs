//! The router over real sockets against Alicia's broker, started in this process.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_receive_device_and_capability_envelopes() {
    let (_broker, addr) = alicia_broker().await;
    devices_receive(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_load_balancing_skips_offline_and_prefers_the_location() {
    let (_broker, addr) = alicia_broker().await;
    load_balancing(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_looping_malformed_and_unroutable_are_dead_lettered() {
    let (_broker, addr) = alicia_broker().await;
    dead_letters(addr).await;
}
