//! The same router scenarios against Debian's Mosquitto: the router must run unchanged against
//! an external broker. Skipped, with a note, when `/usr/sbin/mosquitto` is missing.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_receive_device_and_capability_envelopes_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    devices_receive(m.addr, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_load_balancing_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    load_balancing(m.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_over_mosquitto() {
    let Some(m) = Mosquitto::start().await else { return };
    dead_letters(m.addr, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_documents_messages_route_as_written_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    design_messages(mosquitto.addr).await;
}
