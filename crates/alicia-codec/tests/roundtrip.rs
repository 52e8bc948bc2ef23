//! Every packet type survives encode → decode unchanged, in both protocol versions.

use alicia_codec::*;

fn roundtrip(p: Packet, proto: Protocol) {
    let mut buf = BytesMut::new();
    encode(&p, proto, &mut buf, 0).unwrap();
    let decoded = decode(&mut buf, proto, 0).unwrap().expect("complete packet");
    assert_eq!(decoded, p);
    assert!(buf.is_empty());
}

fn props() -> Properties {
    Properties {
        user_properties: vec![("k".into(), "v".into())],
        reason_string: Some("why".into()),
        ..Properties::default()
    }
}

#[test]
fn all_packets_v5() {
    let v5 = Protocol::V5;
    let will = Will {
        topic: "will/t".into(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties { will_delay_interval: Some(3), ..Properties::default() },
    };
    roundtrip(
        Packet::Connect(Box::new(Connect {
            protocol: v5,
            clean_start: true,
            keep_alive: 30,
            client_id: "c1".into(),
            will: Some(will),
            username: Some("u".into()),
            password: Some(Bytes::from_static(b"p")),
            properties: Properties {
                session_expiry_interval: Some(10),
                receive_maximum: Some(5),
                ..Properties::default()
            },
        })),
        v5,
    );
    roundtrip(
        Packet::ConnAck(ConnAck {
            session_present: true,
            reason: 0,
            properties: Properties {
                server_keep_alive: Some(60),
                topic_alias_maximum: Some(10),
                ..Properties::default()
            },
        }),
        v5,
    );
    roundtrip(
        Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "a/b".into(),
            packet_id: 7,
            properties: Properties {
                subscription_identifiers: vec![2, 300],
                message_expiry_interval: Some(9),
                correlation_data: Some(Bytes::from_static(b"x")),
                ..Properties::default()
            },
            payload: Bytes::from_static(b"hello"),
        }),
        v5,
    );
    for reason in [0u8, 0x10] {
        roundtrip(Packet::PubAck(Ack { packet_id: 1, reason, properties: Properties::default() }), v5);
    }
    roundtrip(Packet::PubRec(Ack { packet_id: 1, reason: 0x80, properties: props() }), v5);
    roundtrip(Packet::PubRel(Ack::new(2)), v5);
    roundtrip(Packet::PubComp(Ack::new(3)), v5);
    roundtrip(
        Packet::Subscribe(Subscribe {
            packet_id: 4,
            properties: Properties { subscription_identifiers: vec![5], ..Properties::default() },
            filters: vec![(
                "a/+".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            )],
        }),
        v5,
    );
    roundtrip(Packet::SubAck(SubAck { packet_id: 4, properties: props(), reasons: vec![0, 1, 0x80] }), v5);
    let user = Properties { user_properties: vec![("a".into(), "b".into())], ..Properties::default() };
    roundtrip(Packet::Unsubscribe(Unsubscribe { packet_id: 5, properties: user, filters: vec!["a".into()] }), v5);
    roundtrip(Packet::UnsubAck(SubAck { packet_id: 5, properties: Properties::default(), reasons: vec![0x11] }), v5);
    roundtrip(Packet::PingReq, v5);
    roundtrip(Packet::PingResp, v5);
    roundtrip(Packet::Disconnect(Disconnect::with_reason(0x8E, "taken over")), v5);
    roundtrip(Packet::Disconnect(Disconnect::default()), v5);
    roundtrip(
        Packet::Auth(Auth {
            reason: 0x18,
            properties: Properties { authentication_method: Some("m".into()), ..Properties::default() },
        }),
        v5,
    );
}

#[test]
fn all_packets_v311() {
    let v3 = Protocol::V311;
    roundtrip(
        Packet::Connect(Box::new(Connect {
            protocol: v3,
            clean_start: false,
            keep_alive: 60,
            client_id: "".into(),
            will: None,
            username: Some("u".into()),
            password: None,
            properties: Properties::default(),
        })),
        v3,
    );
    roundtrip(Packet::ConnAck(ConnAck { session_present: false, reason: 0, properties: Properties::default() }), v3);
    roundtrip(
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "t".into(),
            packet_id: 1,
            payload: Bytes::from_static(b"p"),
            ..Publish::default()
        }),
        v3,
    );
    roundtrip(Packet::PubAck(Ack::new(1)), v3);
    roundtrip(Packet::UnsubAck(SubAck { packet_id: 9, ..SubAck::default() }), v3);
    roundtrip(Packet::Disconnect(Disconnect::default()), v3);
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut full = BytesMut::new();
    let p = Packet::Publish(Publish { topic: "t".into(), payload: Bytes::from(vec![7u8; 300]), ..Publish::default() });
    encode(&p, Protocol::V311, &mut full, 0).unwrap();
    for cut in 0..full.len() {
        let mut part = BytesMut::from(&full[..cut]);
        assert_eq!(decode(&mut part, Protocol::V311, 0).unwrap(), None, "cut at {cut}");
    }
}

#[test]
fn malformed_input_gives_reason_codes() {
    let cases: &[(&[u8], u8)] = &[
        (&[0x00, 0x00], reason::MALFORMED_PACKET),                   // packet type 0
        (&[0x36, 0x03, 0, 1, b't'], reason::MALFORMED_PACKET),       // QoS 3
        (&[0x62 & 0xF0, 0x02, 0, 1], reason::MALFORMED_PACKET),      // PUBREL with wrong flags
        (&[0x82, 0x03, 0, 1, 0], reason::PROTOCOL_ERROR),            // SUBSCRIBE without filters
        (&[0x30, 0x04, 0, 2, b'a', b'#'], reason::MALFORMED_PACKET), // wildcard: no topic name
        (&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], reason::MALFORMED_PACKET), // 5-byte length
        (&[0x30, 0x03, 0, 1, 0], reason::MALFORMED_PACKET),          // U+0000 in topic
        (&[0x30, 0x03, 0, 1, 0xFF], reason::MALFORMED_PACKET),       // invalid UTF-8
        (&[0x40, 0x02, 0, 0], reason::PROTOCOL_ERROR),               // packet id 0
    ];
    for (bytes, code) in cases {
        let mut buf = BytesMut::from(*bytes);
        let err = decode(&mut buf, Protocol::V5, 0).expect_err("must fail");
        assert_eq!(err.reason_code(), *code, "{bytes:?}: {err}");
    }
    let mut big = BytesMut::from(&[0x30u8, 0x80, 0x01][..]);
    assert_eq!(decode(&mut big, Protocol::V5, 64).unwrap_err().reason_code(), reason::PACKET_TOO_LARGE);
}

/// MQTT 5 §2.2.2.2: "A Control Packet which contains an Identifier which is not valid for its
/// packet type [...] is a Malformed Packet"; a property given twice is a Protocol Error (said
/// property by property, e.g. §3.3.2.3.2).
#[test]
fn duplicate_properties_are_protocol_errors_misplaced_and_unknown_ones_malformed() {
    // PUBACK v5 with reason string twice.
    let mut buf = BytesMut::from(&[0x40u8, 0x0B, 0, 1, 0, 0x08, 0x1F, 0, 1, b'a', 0x1F, 0, 1, b'b'][..]);
    buf[1] = (buf.len() - 2) as u8;
    assert_eq!(decode(&mut buf, Protocol::V5, 0).unwrap_err().reason_code(), reason::PROTOCOL_ERROR);
    // Defined properties where the packet type does not allow them.
    let misplaced: &[(&str, &[u8])] = &[
        ("session expiry interval in PUBLISH", &[0x30, 0x09, 0, 1, b't', 5, 0x11, 0, 0, 0, 1]),
        ("payload format indicator in SUBSCRIBE", &[0x82, 0x09, 0, 1, 2, 0x01, 0, 0, 1, b'p', 0]),
        ("topic alias in UNSUBSCRIBE", &[0xA2, 0x09, 0, 1, 3, 0x23, 1, 1, 0, 1, b'p']),
        ("topic alias in PUBACK", &[0x40, 0x07, 0, 1, 0, 3, 0x23, 1, 1]),
        ("correlation data in DISCONNECT", &[0xE0, 0x06, 0, 4, 0x09, 0, 1, b'p']),
        (
            "subscription identifier in CONNECT",
            &[0x10, 0x0F, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 10, 2, 0x0B, 1, 0, 0],
        ),
    ];
    for (what, bytes) in misplaced {
        let mut buf = BytesMut::from(*bytes);
        assert_eq!(decode(&mut buf, Protocol::V5, 0).unwrap_err().reason_code(), reason::MALFORMED_PACKET, "{what}");
    }
    // An identifier MQTT 5 does not define: the rest cannot be parsed.
    let mut buf = BytesMut::from(&[0xE0u8, 0x03, 0x00, 0x01, 0x00][..]);
    assert_eq!(decode(&mut buf, Protocol::V5, 0).unwrap_err().reason_code(), reason::MALFORMED_PACKET);
}

/// The rules issue 11 added, each as the MQTT 5 specification (or, where it leaves the choice,
/// Mosquitto) classifies it.
#[test]
fn strings_filters_integers_and_reason_codes() {
    let malformed = reason::MALFORMED_PACKET;
    let protocol = reason::PROTOCOL_ERROR;
    let cases: &[(&str, &[u8], u8)] = &[
        ("non-minimal remaining length", &[0xC0, 0x80, 0x00], malformed),
        ("non-minimal subscription identifier", &[0x82, 0x09, 0, 1, 3, 0x0B, 0x80, 0x00, 0, 1, b'a'], malformed),
        ("control character in a topic", &[0x30, 0x04, 0, 2, b'a', 0x01], malformed),
        ("C1 control character in a filter", &[0x82, 0x08, 0, 1, 0, 0, 3, b'a', 0xC2, 0x9F, 0], malformed),
        ("empty filter", &[0x82, 0x06, 0, 1, 0, 0, 0, 0], malformed),
        ("'#' not last", &[0x82, 0x09, 0, 1, 0, 0, 3, b'#', b'/', b'a', 0], malformed),
        ("empty UNSUBSCRIBE filter", &[0xA2, 0x05, 0, 1, 0, 0, 0], malformed),
        (
            "shared subscription without a filter",
            &[0x82, 0x0E, 0, 1, 0, 0, 8, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'p', 0],
            protocol,
        ),
        ("PUBACK reason 0xFF", &[0x40, 0x04, 0, 1, 0xFF, 0], protocol),
        ("PUBCOMP reason 0x10", &[0x70, 0x03, 0, 1, 0x10], protocol),
        ("unknown protocol name", &[0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'U', 4, 2, 0, 10, 0, 1, b'p'], malformed),
    ];
    for (what, bytes, code) in cases {
        let mut buf = BytesMut::from(*bytes);
        let err = decode(&mut buf, Protocol::V5, 0).expect_err(what);
        assert_eq!(err.reason_code(), *code, "{what}: {err}");
    }
    // A wrong level of a known protocol is "unsupported" (CONNACK 0x84 / return code 1).
    let mut buf = BytesMut::from(&[0x10u8, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 10, 0, 1, b'p'][..]);
    assert_eq!(decode(&mut buf, Protocol::V5, 0).unwrap_err(), alicia_codec::DecodeError::UnsupportedProtocol);
    // MQTT 3.1 ignored the fixed-header flags and the reserved flag of CONNECT.
    let mut buf =
        BytesMut::from(&[0x14u8, 0x0F, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 1, 0, 10, 0, 1, b'p'][..]);
    assert!(matches!(decode(&mut buf, Protocol::V311, 0).unwrap(), Some(Packet::Connect(_))));
}

#[test]
fn fields_too_long_are_errors_not_truncated_lengths() {
    let topic = "t".repeat(65_536);
    let props = alicia_codec::Properties::default();
    let p = alicia_codec::PublishOut {
        dup: false,
        qos: alicia_codec::QoS::AtMostOnce,
        retain: false,
        topic: &topic,
        packet_id: 0,
        properties: &props,
        payload: b"x",
    };
    let mut out = BytesMut::from(&b"keep"[..]);
    let err = alicia_codec::encode_publish(&mut out, Protocol::V311, &p).unwrap_err();
    assert_eq!(err, alicia_codec::EncodeError::FieldTooLong { len: 65_536 });
    assert_eq!(&out[..], b"keep", "nothing half-written");
    let mut user = alicia_codec::Properties::default();
    user.user_properties.push(("k".into(), "v".repeat(70_000).into()));
    let pk = Packet::Publish(Publish { topic: "t".into(), properties: user, ..Publish::default() });
    assert!(encode(&pk, Protocol::V5, &mut out, 0).is_err());
    assert_eq!(&out[..], b"keep");
    // Exactly 65,535 is fine.
    let p = alicia_codec::PublishOut { topic: &topic[..65_535], ..p };
    assert!(alicia_codec::encode_publish(&mut out, Protocol::V311, &p).is_ok());
}

#[test]
fn disconnect_without_properties_is_three_bytes() {
    let mut out = BytesMut::new();
    encode(&Packet::Disconnect(alicia_codec::Disconnect::with_reason(0x81, "")), Protocol::V5, &mut out, 0).unwrap();
    assert_eq!(&out[..], &[0xE0, 0x01, 0x81]);
}

#[test]
fn an_announced_huge_frame_does_not_allocate_it() {
    // A PUBLISH header announcing 268,435,455 bytes, followed by nothing.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    assert_eq!(decode(&mut buf, Protocol::V5, 0).unwrap(), None);
    assert!(buf.capacity() < 1024 * 1024, "reserved {} bytes", buf.capacity());
}
