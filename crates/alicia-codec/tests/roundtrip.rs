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
        (&[0x00, 0x00], reason::MALFORMED_PACKET),              // packet type 0
        (&[0x36, 0x03, 0, 1, b't'], reason::MALFORMED_PACKET),  // QoS 3
        (&[0x62 & 0xF0, 0x02, 0, 1], reason::MALFORMED_PACKET), // PUBREL with wrong flags
        (&[0x82, 0x03, 0, 1, 0], reason::PROTOCOL_ERROR),       // SUBSCRIBE without filters
        (&[0x30, 0x04, 0, 2, b'a', b'#'], reason::TOPIC_NAME_INVALID),
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

#[test]
fn duplicate_and_misplaced_properties_are_protocol_errors() {
    // PUBACK v5 with reason string twice.
    let mut buf = BytesMut::from(&[0x40u8, 0x0B, 0, 1, 0, 0x08, 0x1F, 0, 1, b'a', 0x1F, 0, 1, b'b'][..]);
    buf[1] = (buf.len() - 2) as u8;
    assert_eq!(decode(&mut buf, Protocol::V5, 0).unwrap_err().reason_code(), reason::PROTOCOL_ERROR);
    // PUBLISH v5 carrying a session expiry interval.
    let mut buf = BytesMut::from(&[0x30u8, 0x09, 0, 1, b't', 5, 0x11, 0, 0, 0, 1][..]);
    assert_eq!(decode(&mut buf, Protocol::V5, 0).unwrap_err().reason_code(), reason::PROTOCOL_ERROR);
}

#[test]
fn an_announced_huge_frame_does_not_allocate_it() {
    // A PUBLISH header announcing 268,435,455 bytes, followed by nothing.
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    assert_eq!(decode(&mut buf, Protocol::V5, 0).unwrap(), None);
    assert!(buf.capacity() < 1024 * 1024, "reserved {} bytes", buf.capacity());
}
