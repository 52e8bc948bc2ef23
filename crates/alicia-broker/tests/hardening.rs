//! Issue 11: defects any connected client could trigger, each driven over a real socket with
//! exact bytes. Every test here failed on main before the fix (see the commit that added it).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use alicia_broker::Config;
use alicia_codec::{reason, Packet, Properties, Protocol, QoS};
use common::{connect_packet, start, Raw};

/// MQTT-3.1.2-6: a clean session ends with its connection, so a CleanSession=0 CONNECT that
/// takes it over must not resume it (session present 0, no inherited subscriptions).
#[tokio::test]
async fn takeover_of_a_clean_session_does_not_inherit_it() {
    let (_b, addr) = start(Config::default()).await;
    for protocol in [Protocol::V311, Protocol::V5] {
        let id = format!("taker-{protocol:?}");
        let mut first = Raw::connect(addr, protocol, &id).await;
        assert_eq!(first.subscribe("take/over", QoS::AtLeastOnce).await, vec![1]);
        let mut c = connect_packet(protocol, &id, false);
        if protocol.is_v5() {
            c.properties.session_expiry_interval = Some(300);
        }
        let (mut second, ack) = Raw::connect_with(addr, c).await;
        match ack {
            Packet::ConnAck(a) => assert!(!a.session_present && a.reason == 0, "{protocol:?}: {a:?}"),
            other => panic!("{other:?}"),
        }
        let mut publisher = Raw::connect(addr, protocol, &format!("pub-{protocol:?}")).await;
        publisher.publish("take/over", QoS::AtMostOnce, false, b"leak", 0).await;
        publisher.ping().await;
        second.ping().await;
        assert!(
            second.recv_within(Duration::from_millis(300)).await.is_err(),
            "{protocol:?}: no inherited subscription"
        );
    }
}

/// `$SYS` belongs to the broker: a client's PUBLISH there is refused (v5 PUBACK 0x87) and never
/// reaches readers or the retained store; `$share/...` is no topic name at all (0x82).
#[tokio::test]
async fn clients_cannot_publish_to_sys_or_share_topics() {
    let (broker, addr) = start(Config::default()).await;
    let mut reader = Raw::connect(addr, Protocol::V5, "reader").await;
    reader.subscribe("$SYS/broker/version", QoS::AtMostOnce).await;
    let mut spoof = Raw::connect(addr, Protocol::V5, "spoof").await;
    spoof.publish("$SYS/broker/version", QoS::AtLeastOnce, true, b"mosquitto 0.1 (pwned)", 3).await;
    match spoof.recv().await {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason, reason::NOT_AUTHORIZED),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    let mut old = Raw::connect(addr, Protocol::V311, "spoof3").await;
    old.publish("$SYS/broker/version", QoS::AtMostOnce, true, b"pwned too", 0).await;
    old.ping().await;
    reader.ping().await;
    assert!(reader.recv_within(Duration::from_millis(300)).await.is_err(), "nothing reached the reader");
    assert_eq!(broker.retained_count(), 0);

    spoof.publish("$share/g/t", QoS::AtMostOnce, false, b"x", 0).await;
    spoof.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

/// A client id of 65,535 bytes made the presence topic `$SYS/broker/presence/<id>` longer than
/// an MQTT string can be; the encoder truncated its length to 16 bits and every reader of
/// `$SYS/broker/presence/#` got a corrupt frame. Such a topic is never built now.
#[tokio::test]
async fn a_huge_client_id_does_not_corrupt_presence_frames() {
    let (_b, addr) = start(Config::default()).await;
    let mut watcher = Raw::connect(addr, Protocol::V5, "watcher").await;
    watcher.subscribe("$SYS/broker/presence/#", QoS::AtMostOnce).await;
    let huge = "x".repeat(65_535);
    let _big = Raw::connect(addr, Protocol::V311, &huge).await;
    let _after = Raw::connect(addr, Protocol::V311, "after").await;
    loop {
        match watcher.recv().await {
            Some(Packet::Publish(p)) if p.topic.ends_with("/after") => break,
            Some(Packet::Publish(p)) => assert!(p.topic.len() <= 65_535),
            other => panic!("expected presence events, got {other:?}"),
        }
    }
}

/// Malformed packets get 0x81 and protocol violations 0x82, as the MQTT 5 specification
/// defines them.
#[tokio::test]
async fn malformed_is_0x81_and_protocol_errors_are_0x82() {
    let (_b, addr) = start(Config::default()).await;
    let cases: &[(&str, &[u8], u8)] = &[
        // A property identifier MQTT 5 does not define: the rest cannot be parsed.
        ("PUBACK with property 0x04", &[0x40, 0x06, 0x00, 0x01, 0x00, 0x02, 0x04, 0x00], 0x81),
        ("DISCONNECT with property 0x00", &[0xE0, 0x03, 0x00, 0x01, 0x00], 0x81),
        ("SUBSCRIBE with an empty filter", &[0x82, 0x06, 0x12, 0x34, 0x00, 0x00, 0x00, 0x00], 0x81),
        ("PUBLISH topic with a wildcard", &[0x30, 0x05, 0x00, 0x02, b'a', b'+', 0x00], 0x81),
        (
            "non-minimal variable byte integer",
            &[0x32, 0x0A, 0x00, 0x01, b't', 0x00, 0x01, 0x03, 0x0B, 0x80, 0x00, b'x'],
            0x81,
        ),
        // A defined property where the packet type does not allow it (MQTT 5 §2.2.2.2).
        ("PUBACK with a session expiry interval", &[0x40, 0x09, 0, 1, 0, 5, 0x11, 0, 0, 0, 1], 0x81),
        // Packets only a server sends are protocol errors whatever they contain.
        ("CONNACK from a client", &[0x20, 0x02, 0x00, 0x00], 0x82),
        ("SUBACK from a client", &[0x90, 0x03, 0x00, 0x01, 0x00], 0x82),
        ("reserved packet type 0", &[0x00, 0x00], 0x82),
        // A client must not send subscription identifiers in PUBLISH [MQTT-3.3.4-6].
        ("PUBLISH with a subscription identifier", &[0x30, 0x07, 0x00, 0x01, b't', 0x02, 0x0B, 0x01, b'x'], 0x82),
        ("PUBACK with an unknown reason code", &[0x40, 0x04, 0x00, 0x01, 0xFF, 0x00], 0x82),
    ];
    for (i, (what, bytes, code)) in cases.iter().enumerate() {
        let mut c = Raw::connect(addr, Protocol::V5, &format!("m{i}")).await;
        c.send_raw(bytes).await;
        match c.recv().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, *code, "{what}"),
            other => panic!("{what}: expected DISCONNECT 0x{code:02x}, got {other:?}"),
        }
    }
}

/// An acknowledgement of the wrong kind for an in-flight message is a protocol error
/// (PUBREC for a QoS 1 delivery), and a PUBREC that reports failure gets no PUBREL.
#[tokio::test]
async fn acknowledgements_must_match_the_delivery() {
    let (_b, addr) = start(Config::default()).await;
    let mut sub = Raw::connect(addr, Protocol::V5, "acker").await;
    sub.subscribe("flow", QoS::AtLeastOnce).await;
    let mut publ = Raw::connect(addr, Protocol::V5, "flowpub").await;
    publ.publish("flow", QoS::AtLeastOnce, false, b"m", 1).await;
    let id = match sub.recv().await {
        Some(Packet::Publish(p)) => p.packet_id,
        other => panic!("{other:?}"),
    };
    sub.send(&Packet::PubRec(alicia_codec::Ack::new(id))).await;
    sub.expect_disconnect(reason::PROTOCOL_ERROR).await;

    let mut c = Raw::connect(addr, Protocol::V5, "failrec").await;
    c.send_raw(&[0x50, 0x03, 0x00, 0x01, 0x80]).await;
    c.ping().await; // the PINGRESP comes first: no PUBREL was sent
}

/// MQTT 3.1 (`MQIsdp`, level 3) has no session-present flag and no empty client ids.
#[tokio::test]
async fn mqtt_3_1_connack_and_empty_client_id() {
    let (_b, addr) = start(Config::default()).await;
    let mut c = connect_packet(Protocol::V31, "old31", false);
    let (first, _) = Raw::connect_with(addr, c.clone()).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_again, ack) = Raw::connect_with(addr, c.clone()).await;
    match ack {
        Packet::ConnAck(a) => assert!(!a.session_present && a.reason == 0, "3.1 CONNACK: {a:?}"),
        other => panic!("{other:?}"),
    }
    c.client_id = "".into();
    c.clean_start = true;
    let (mut r, ack) = Raw::connect_with(addr, c).await;
    match ack {
        Packet::ConnAck(a) => assert_eq!(a.reason, reason::CLIENT_ID_NOT_VALID, "identifier rejected"),
        other => panic!("{other:?}"),
    }
    r.expect_closed().await;
}

/// A v5 client whose Maximum Packet Size is too small for any CONNACK cannot be answered: the
/// connection is closed instead of left hanging.
#[tokio::test]
async fn connack_too_large_for_the_client_closes() {
    let (broker, addr) = start(Config::default()).await;
    let mut c = connect_packet(Protocol::V5, "tiny", true);
    c.properties = Properties { maximum_packet_size: Some(2), ..Properties::default() };
    let mut r = Raw::open(addr, Protocol::V5).await;
    r.send(&Packet::Connect(Box::new(c))).await;
    match r.recv_within(Duration::from_secs(3)).await {
        Ok(None) => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(broker.stats().clients_connected.load(Ordering::Relaxed), 0);
}
