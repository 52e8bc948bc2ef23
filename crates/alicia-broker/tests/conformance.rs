//! Defects that Eclipse Mosquitto's own test/broker suite found in this broker
//! (scripts/mosquitto-tests.sh, docs/conformance.md), each driven over a real socket with the
//! suite's exact bytes.

mod common;

use alicia_broker::Config;
use alicia_codec::{reason, Packet, Protocol, QoS};
use common::{connect_packet, start, Raw};

/// MQTT 5 §2.2.2.2: "A Control Packet which contains an Identifier which is not valid for its
/// packet type [...] is a Malformed Packet. If received, use a CONNACK or DISCONNECT packet with
/// Reason Code 0x81". The broker answered 0x82 (Protocol Error) for a defined property in a
/// packet type that does not allow it (Mosquitto's msg_sequence_test.py, "SUBSCRIBE DISALLOWED
/// PROPERTIES" and "UNSUBSCRIBE DISALLOWED PROPERTIES").
#[tokio::test]
async fn a_property_not_valid_for_its_packet_type_is_a_malformed_packet() {
    let (_b, addr) = start(Config::default()).await;
    let cases: &[(&str, &[u8])] = &[
        // The suite's bytes: packet id 1, a property block, filter "p", options 0.
        ("SUBSCRIBE with a payload format indicator", &[0x82, 0x09, 0, 1, 2, 0x01, 0x00, 0, 1, b'p', 0]),
        ("SUBSCRIBE with a topic alias", &[0x82, 0x0A, 0, 1, 3, 0x23, 1, 1, 0, 1, b'p', 0]),
        ("UNSUBSCRIBE with a topic alias", &[0xA2, 0x09, 0, 1, 3, 0x23, 1, 1, 0, 1, b'p']),
        ("UNSUBSCRIBE with correlation data", &[0xA2, 0x0A, 0, 1, 4, 0x09, 0, 1, b'p', 0, 1, b'p']),
        // The same rule for the other packet types a client sends.
        (
            "PUBLISH with a session expiry interval",
            &[0x32, 0x10, 0, 5, b't', b'o', b'p', b'i', b'c', 0x12, 0x34, 5, 0x11, 0, 0, 0, 1, b'p'],
        ),
        ("PUBACK with a topic alias", &[0x40, 0x07, 0, 1, 0, 3, 0x23, 1, 1]),
        ("DISCONNECT with a response topic", &[0xE0, 0x06, 0, 4, 0x08, 0, 1, b'p']),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let mut c = Raw::connect(addr, Protocol::V5, &format!("misplaced-{i}")).await;
        c.send_raw(bytes).await;
        // expect_disconnect also checks that the connection then ends.
        c.expect_disconnect(reason::MALFORMED_PACKET).await;
        eprintln!("ok: {what}");
    }
    // The broker is unharmed, and a property where it belongs is still accepted.
    let mut c = Raw::connect(addr, Protocol::V5, "after").await;
    assert_eq!(c.subscribe("p", QoS::AtMostOnce).await, vec![0]);
    c.ping().await;
}

/// MQTT 3.1 §2.1: DUP "is set when the client or server attempts to re-deliver a PUBLISH,
/// PUBREL, SUBSCRIBE or UNSUBSCRIBE message". A 3.1 client resending PUBREL after a reconnect
/// sets it (Mosquitto's 03-publish-c2b-disconnect-qos2.py, protocol level 3); the broker took
/// the bit for a reserved one and closed the connection instead of completing the exchange.
/// 3.1.1 and 5 reserve the bit, so there it still ends the connection.
#[tokio::test]
async fn an_mqtt_3_1_pubrel_resent_with_dup_is_completed() {
    let (_b, addr) = start(Config::default()).await;
    let mut c = Raw::connect(addr, Protocol::V31, "pubrel-dup-31").await;
    c.publish("qos2/dup", QoS::ExactlyOnce, false, b"m", 1).await;
    match c.recv().await {
        Some(Packet::PubRec(a)) => assert_eq!(a.packet_id, 1),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    c.send_raw(&[0x6A, 0x02, 0x00, 0x01]).await; // PUBREL, DUP set
    match c.recv().await {
        Some(Packet::PubComp(a)) => assert_eq!(a.packet_id, 1),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // The SUBSCRIBE and UNSUBSCRIBE of a 3.1 resend, DUP set: "a", QoS 0.
    c.send_raw(&[0x8A, 0x06, 0x00, 0x02, 0x00, 0x01, b'a', 0x00]).await;
    match c.recv().await {
        Some(Packet::SubAck(a)) => assert_eq!((a.packet_id, a.reasons), (2, vec![0])),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    c.send_raw(&[0xAA, 0x05, 0x00, 0x03, 0x00, 0x01, b'a']).await;
    match c.recv().await {
        Some(Packet::UnsubAck(a)) => assert_eq!(a.packet_id, 3),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }

    let mut c = Raw::connect(addr, Protocol::V311, "pubrel-dup-311").await;
    c.publish("qos2/dup", QoS::ExactlyOnce, false, b"m", 1).await;
    assert!(matches!(c.recv().await, Some(Packet::PubRec(_))));
    c.send_raw(&[0x6A, 0x02, 0x00, 0x01]).await;
    c.expect_closed().await;
}

/// MQTT-3.1.0-1: the first packet must be CONNECT. The broker waited for the whole first frame
/// before looking at its type, so a socket sending a non-CONNECT header that announces 256 MiB
/// and then its bytes made the broker buffer them: 14 such sockets of 100 MB each took its
/// resident size to 1.4 GB (Mosquitto's 01-bad-initial-packets.py). Now the connection is
/// closed on the first byte, long before the 10 s CONNECT timeout.
#[tokio::test]
async fn a_first_packet_that_is_not_connect_is_refused_on_its_first_byte() {
    let (_b, addr) = start(Config::default()).await;
    for kind in [2u8, 3, 8, 12, 14, 15] {
        let mut c = Raw::open(addr, Protocol::V311).await;
        // A header announcing 0x74 << 21 bytes (about 243 MiB).
        c.send_raw(&[kind << 4, 0x80, 0x80, 0x80, 0x74]).await;
        assert_eq!(
            c.recv_within(std::time::Duration::from_secs(3)).await,
            Ok(None),
            "packet type {kind}: the connection must close at once"
        );
    }
    let mut ok = Raw::connect(addr, Protocol::V311, "after-bad-first-packets").await;
    ok.ping().await;
}

/// `message_size_limit` covers a will's payload too (Mosquitto's 07-will-oversize-payload.py,
/// with `message_size_limit 1`): a CONNECT whose will is larger is refused — v5 with 0x95
/// (Packet too large), 3.1.1 with return code 5 — and one within the limit is accepted.
#[tokio::test]
async fn a_will_over_message_size_limit_is_refused() {
    let (_b, addr) = start(Config { message_size_limit: 1, ..Config::default() }).await;
    // 3.1.1's return code 5 ("not authorized") reads back as its MQTT 5 equivalent, 0x87.
    for (protocol, refused) in [(Protocol::V5, reason::PACKET_TOO_LARGE), (Protocol::V311, reason::NOT_AUTHORIZED)] {
        for (payload, expected) in [(&b"AB"[..], refused), (&b"A"[..], 0)] {
            let mut c = connect_packet(protocol, "will-test", true);
            c.will = Some(alicia_codec::Will {
                topic: "will/qos0/test".into(),
                payload: alicia_codec::Bytes::copy_from_slice(payload),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Default::default(),
            });
            let (_raw, answer) = Raw::connect_with(addr, c).await;
            match answer {
                Packet::ConnAck(a) => assert_eq!(a.reason, expected, "{protocol:?}, will of {} bytes", payload.len()),
                other => panic!("expected CONNACK, got {other:?}"),
            }
        }
    }
}
