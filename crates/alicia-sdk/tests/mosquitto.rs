//! The same SDK scenarios against Debian's Mosquitto, a broker Alicia did not write: services
//! must run unchanged against an external broker. Skipped, with a note, when
//! `/usr/sbin/mosquitto` is missing (`scripts/test.sh` installs it).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_talk_request_response_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    request_response(mosquitto.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_inbox_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    shared_inbox(mosquitto.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_marks_a_dead_service_offline_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    will_marks_offline(mosquitto.addr).await;
}
