//! Issue 11, crash: a SUBSCRIBE or UNSUBSCRIBE whose filter has thousands of levels used to
//! overflow the stack (recursion per level in the subscription trie) and kill the whole broker.
//! Now nothing recurses on topic depth, and filters and topics deeper than `max_topic_levels`
//! (200 by default, Mosquitto's limit) are refused with the right reason code while the
//! connection and the broker go on. Its own test binary: a stack overflow aborts the process.

mod common;

use alicia_broker::Config;
use alicia_codec::{reason, Packet, Protocol, QoS};
use common::{start, Raw};

#[tokio::test]
async fn very_deep_filters_are_refused_and_the_broker_lives() {
    let (broker, addr) = start(Config::default()).await;
    let mut c = Raw::connect(addr, Protocol::V5, "deep").await;
    let slashes = "/".repeat(30_000);
    let deep_hash = format!("{}#", "a/".repeat(20_000));
    for filter in [&slashes, &deep_hash] {
        assert_eq!(c.subscribe(filter, QoS::AtLeastOnce).await, vec![reason::TOPIC_FILTER_INVALID], "v5 SUBACK");
        match c.unsubscribe(filter).await {
            Some(Packet::UnsubAck(a)) => assert_eq!(a.reasons, vec![reason::NO_SUBSCRIPTION_EXISTED]),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }
    // A deep topic name in PUBLISH: v5 gets PUBACK 0x90 (Topic Name invalid).
    c.publish(&slashes, QoS::AtLeastOnce, false, b"x", 7).await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!((a.packet_id, a.reason), (7, reason::TOPIC_NAME_INVALID)),
        other => panic!("expected PUBACK 0x90, got {other:?}"),
    }
    c.ping().await;

    let mut old = Raw::connect(addr, Protocol::V311, "deep3").await;
    assert_eq!(old.subscribe(&deep_hash, QoS::AtMostOnce).await, vec![0x80], "3.1.1 SUBACK failure");
    old.ping().await;
    // 3.1.1 cannot say why a PUBLISH is refused: the connection is closed, as Mosquitto does.
    old.publish(&slashes, QoS::AtMostOnce, false, b"x", 0).await;
    old.expect_closed().await;

    // Exactly the limit is fine; one more level is not.
    let ok = vec!["l"; 200].join("/");
    let too_deep = vec!["l"; 201].join("/");
    assert_eq!(c.subscribe(&ok, QoS::AtMostOnce).await, vec![0]);
    assert_eq!(c.subscribe(&too_deep, QoS::AtMostOnce).await, vec![reason::TOPIC_FILTER_INVALID]);
    assert_eq!(broker.subscription_count(), 1);
    let mut fresh = Raw::connect(addr, Protocol::V5, "after").await;
    fresh.ping().await;
}
