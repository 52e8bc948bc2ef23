//! Writes the seed corpus: a few small, valid packets of every type, encoded with the codec
//! itself, into `corpus/decode/` and `corpus/roundtrip/`.
//!
//!     cd fuzz && cargo run --example seeds
//!
//! Files are named `seed-<name>`; running it again overwrites them and leaves the rest alone.

use std::fs;
use std::path::Path;

use alicia_codec::*;

fn props_publish() -> Properties {
    Properties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/to".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![("k".into(), "v".into())],
        ..Properties::default()
    }
}

fn connect(protocol: Protocol, will: bool, props: bool) -> Packet {
    let v5 = protocol.is_v5() && props;
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive: 30,
        client_id: "client-1".into(),
        will: will.then(|| Will {
            topic: "will/topic".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: if v5 {
                Properties { will_delay_interval: Some(5), ..props_publish() }
            } else {
                Properties::default()
            },
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"secret")),
        properties: if v5 {
            Properties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(20),
                maximum_packet_size: Some(65536),
                topic_alias_maximum: Some(10),
                request_response_information: Some(1),
                request_problem_information: Some(0),
                authentication_method: Some("SCRAM-SHA-1".into()),
                authentication_data: Some(Bytes::from_static(b"abc")),
                user_properties: vec![("a".into(), "b".into())],
                ..Properties::default()
            }
        } else {
            Properties::default()
        },
    }))
}

fn publish(qos: QoS, v5: bool) -> Packet {
    Packet::Publish(Publish {
        dup: qos != QoS::AtMostOnce,
        qos,
        retain: qos == QoS::AtLeastOnce,
        topic: "sensors/1/temp".into(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 7 },
        properties: if v5 {
            Properties { topic_alias: Some(3), subscription_identifiers: vec![1, 300], ..props_publish() }
        } else {
            Properties::default()
        },
        payload: Bytes::from_static(b"21.5"),
    })
}

fn ack_v5() -> Ack {
    Ack {
        packet_id: 9,
        reason: reason::NO_MATCHING_SUBSCRIBERS,
        properties: Properties { reason_string: Some("none".into()), ..Properties::default() },
    }
}

fn subscribe(v5: bool) -> Packet {
    let opts = SubscriptionOptions {
        qos: QoS::ExactlyOnce,
        no_local: v5,
        retain_as_published: v5,
        retain_handling: if v5 { RetainHandling::DoNotSend } else { RetainHandling::SendAtSubscribe },
    };
    Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: if v5 {
            Properties { subscription_identifiers: vec![42], ..Properties::default() }
        } else {
            Properties::default()
        },
        filters: vec![
            ("a/+/c".into(), opts),
            ("$share/g/x/#".into(), SubscriptionOptions::default()),
        ],
    })
}

fn main() {
    use Protocol::{V311, V31, V5};
    let v5_reason = Properties { reason_string: Some("bye".into()), ..Properties::default() };
    let seeds: Vec<(&str, Protocol, Vec<Packet>)> = vec![
        ("connect-v31", V31, vec![connect(V31, false, false)]),
        ("connect-v311-will", V311, vec![connect(V311, true, false)]),
        ("connect-v5-will-props", V5, vec![connect(V5, true, true)]),
        ("connack-v311", V311, vec![Packet::ConnAck(ConnAck { session_present: true, ..ConnAck::default() })]),
        (
            "connack-v5-props",
            V5,
            vec![Packet::ConnAck(ConnAck {
                session_present: false,
                reason: 0,
                properties: Properties {
                    assigned_client_identifier: Some("auto-1".into()),
                    server_keep_alive: Some(60),
                    maximum_qos: Some(1),
                    retain_available: Some(1),
                    wildcard_subscription_available: Some(1),
                    subscription_identifier_available: Some(1),
                    shared_subscription_available: Some(0),
                    response_information: Some("resp".into()),
                    server_reference: Some("other".into()),
                    ..Properties::default()
                },
            })],
        ),
        ("publish-qos0-v311", V311, vec![publish(QoS::AtMostOnce, false)]),
        ("publish-qos1-v311", V311, vec![publish(QoS::AtLeastOnce, false)]),
        ("publish-qos2-v311", V311, vec![publish(QoS::ExactlyOnce, false)]),
        ("publish-qos0-v5", V5, vec![publish(QoS::AtMostOnce, true)]),
        ("publish-qos1-v5", V5, vec![publish(QoS::AtLeastOnce, true)]),
        ("publish-qos2-v5", V5, vec![publish(QoS::ExactlyOnce, true)]),
        (
            "publish-v5-alias-only",
            V5,
            vec![Packet::Publish(Publish {
                topic: "".into(),
                properties: Properties { topic_alias: Some(3), ..Properties::default() },
                payload: Bytes::from_static(b"x"),
                ..Publish::default()
            })],
        ),
        ("acks-v311", V311, vec![
            Packet::PubAck(Ack::new(1)),
            Packet::PubRec(Ack::new(2)),
            Packet::PubRel(Ack::new(2)),
            Packet::PubComp(Ack::new(2)),
        ]),
        ("acks-v5", V5, vec![
            Packet::PubAck(ack_v5()),
            Packet::PubRec(Ack { reason: 0x80, ..Ack::new(2) }),
            Packet::PubRel(Ack::new(2)),
            // PUBREL/PUBCOMP carry only 0x00 or 0x92.
            Packet::PubComp(Ack { reason: reason::PACKET_ID_NOT_FOUND, ..ack_v5() }),
        ]),
        ("subscribe-v311", V311, vec![subscribe(false)]),
        ("subscribe-v5", V5, vec![subscribe(true)]),
        ("suback-v311", V311, vec![Packet::SubAck(SubAck { packet_id: 1, reasons: vec![0, 1, 0x80], ..SubAck::default() })]),
        (
            "suback-v5",
            V5,
            vec![Packet::SubAck(SubAck { packet_id: 1, properties: v5_reason.clone(), reasons: vec![2, 0x8F] })],
        ),
        (
            "unsubscribe-v311",
            V311,
            vec![Packet::Unsubscribe(Unsubscribe { packet_id: 3, filters: vec!["a/#".into(), "b".into()], ..Unsubscribe::default() })],
        ),
        (
            "unsubscribe-v5",
            V5,
            vec![Packet::Unsubscribe(Unsubscribe {
                packet_id: 3,
                properties: Properties { user_properties: vec![("k".into(), "v".into())], ..Properties::default() },
                filters: vec!["a/#".into()],
            })],
        ),
        ("unsuback-v311", V311, vec![Packet::UnsubAck(SubAck { packet_id: 3, ..SubAck::default() })]),
        ("unsuback-v5", V5, vec![Packet::UnsubAck(SubAck { packet_id: 3, properties: v5_reason.clone(), reasons: vec![0, 0x11] })]),
        ("ping", V311, vec![Packet::PingReq, Packet::PingResp]),
        ("disconnect-v311", V311, vec![Packet::Disconnect(Disconnect::default())]),
        (
            "disconnect-v5",
            V5,
            vec![Packet::Disconnect(Disconnect {
                reason: reason::DISCONNECT_WITH_WILL,
                properties: Properties { session_expiry_interval: Some(0), ..v5_reason.clone() },
            })],
        ),
        (
            "auth-v5",
            V5,
            vec![Packet::Auth(Auth {
                reason: 0x18,
                properties: Properties {
                    authentication_method: Some("SCRAM-SHA-1".into()),
                    authentication_data: Some(Bytes::from_static(b"nonce")),
                    ..Properties::default()
                },
            })],
        ),
        ("session-v311", V311, vec![
            connect(V311, false, false),
            subscribe(false),
            publish(QoS::AtLeastOnce, false),
            Packet::PubAck(Ack::new(7)),
            Packet::PingReq,
            Packet::Disconnect(Disconnect::default()),
        ]),
        ("session-v5", V5, vec![
            connect(V5, false, true),
            subscribe(true),
            publish(QoS::ExactlyOnce, true),
            Packet::PubRec(Ack::new(7)),
            Packet::Disconnect(Disconnect::default()),
        ]),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in ["decode", "roundtrip"] {
        let dir = root.join(target);
        fs::create_dir_all(&dir).unwrap();
        for (name, protocol, packets) in &seeds {
            let mut buf = BytesMut::new();
            for p in packets {
                encode(p, *protocol, &mut buf, 0).unwrap();
            }
            // Each seed must decode back to what was written, in its own protocol.
            let mut check = buf.clone();
            for p in packets {
                assert_eq!(decode(&mut check, *protocol, 0).unwrap().as_ref(), Some(p), "{name}");
            }
            fs::write(dir.join(format!("seed-{name}")), &buf).unwrap();
        }
    }
    println!("wrote {} seeds into {}", seeds.len(), root.display());

    // `session`: three client headers (protocol, clean start, client id, expiry bits; see the
    // target), then `[client][length][bytes]` records of valid packets in each client's
    // protocol. Client 3 reconnects the first client's CONNECT (takeover or resume).
    let rec = |client: u8, protocol: Protocol, packets: &[Packet]| -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            let mut b = BytesMut::new();
            encode(p, protocol, &mut b, 0).unwrap();
            assert!(b.len() <= 255, "a session record holds at most 255 bytes");
            out.push(client);
            out.push(b.len() as u8);
            out.extend_from_slice(&b);
        }
        out
    };
    // 0x04: 3.1.1, clean, id "b"; 0x1D: 5, clean, id "a", expiry; 0x09: 3.1, not clean, id "a".
    let mut a = vec![0x04, 0x1D, 0x09];
    a.extend(rec(0, V311, &[subscribe(false)]));
    a.extend(rec(1, V5, &[subscribe(true), publish(QoS::AtLeastOnce, true), publish(QoS::ExactlyOnce, true)]));
    a.extend(rec(0, V311, &[Packet::PubAck(Ack::new(1)), Packet::PubRec(Ack::new(2)), Packet::PubComp(Ack::new(2))]));
    a.extend(rec(2, V311, &[publish(QoS::ExactlyOnce, false), Packet::PubRel(Ack::new(7))]));
    a.extend([3, 0]);
    a.extend(rec(1, V5, &[Packet::PingReq, Packet::Disconnect(Disconnect::default())]));
    let mut b = vec![0x1D, 0x1D, 0x05];
    b.extend(rec(0, V5, &[subscribe(true)]));
    b.extend(rec(1, V5, &[publish(QoS::AtLeastOnce, true)]));
    b.extend([3, 0]);
    b.extend(rec(2, V5, &[publish(QoS::AtMostOnce, true), Packet::Disconnect(Disconnect::default())]));
    let dir = root.join("session");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("seed-three-clients"), &a).unwrap();
    fs::write(dir.join("seed-takeover"), &b).unwrap();

    // `deep_topics`: [limit][protocol] then ops [kind+qos][pattern length][pattern][levels u16].
    // Levels index the target's list: 0 "a", 1 "+", 2 "#", 3 "", 4 "$SYS", 5 "$share".
    let deep: [(&str, Vec<u8>); 4] = [
        ("slashes-30000", vec![0, 1, 0, 0, 3, 0x75, 0x30, 1, 0, 3, 0x75, 0x30]),
        ("a-20000-hash", vec![0, 1, 0, 1, 0, 0x4E, 0x20, 2, 0, 0, 0x4E, 0x20, 1, 0, 0, 0x4E, 0x20]),
        ("plus-limit-200", vec![1, 0, 0, 1, 1, 0, 200, 0, 1, 1, 0, 201, 2, 0, 0, 0, 200]),
        ("sys-and-share", vec![1, 1, 2, 1, 4, 0, 3, 2, 1, 5, 0, 3, 0, 0, 5, 0, 3]),
    ];
    let dir = root.join("deep_topics");
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in deep {
        fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}
