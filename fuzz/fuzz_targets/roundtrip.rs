//! Whatever decodes must encode back to bytes that decode to the same packet: finds places
//! where the encoder and decoder disagree.
//!
//! For every packet that decodes (as 3.1.1 and as 5.0), it checks that:
//! - `encode` in the same protocol succeeds, and decoding the result gives an equal packet with
//!   no bytes left over;
//! - encoding is canonical: the re-decoded packet encodes to exactly the same bytes;
//! - the size limits agree on both sides: `encode` and `decode` accept a limit equal to the
//!   encoded size and refuse one byte less, and a refused `encode` leaves the buffer untouched;
//! - for PUBLISH, `publish_len` predicts the encoded size.
//!
//! No normalisation is needed so far: the codec maps every wire form that decodes onto a value
//! that encodes back to the same value (e.g. a v5 PUBACK with reason 0 and no properties is the
//! same `Ack` whether it arrived as 2, 3 or 4 bytes).
#![no_main]

use alicia_codec::{decode, encode, publish_len, BytesMut, DecodeError, EncodeError, Packet, Protocol, PublishOut};
use libfuzzer_sys::fuzz_target;

fn check(packet: &Packet, session: Protocol) {
    // CONNECT carries its own protocol version; everything else uses the session's.
    let p = match packet {
        Packet::Connect(c) => c.protocol,
        _ => session,
    };
    let mut out = BytesMut::new();
    encode(packet, p, &mut out, 0).expect("a decoded packet encodes");
    let bytes = out.clone().freeze();
    let size = bytes.len();

    if let Packet::Publish(pb) = packet {
        let view = PublishOut {
            dup: pb.dup,
            qos: pb.qos,
            retain: pb.retain,
            topic: &pb.topic,
            packet_id: pb.packet_id,
            properties: &pb.properties,
            payload: &pb.payload,
        };
        assert_eq!(publish_len(p, &view), size, "publish_len disagrees with encode");
    }

    let again = decode(&mut out, p, 0).expect("re-encoded bytes decode").expect("complete packet");
    assert!(out.is_empty(), "re-encoding produced trailing bytes");
    assert_eq!(packet, &again, "decode(encode(p)) != p");

    let mut canon = BytesMut::new();
    encode(&again, p, &mut canon, 0).expect("the re-decoded packet encodes");
    assert_eq!(bytes, canon.freeze(), "encoding is not canonical");

    // Size limits: exact size passes on both sides, one byte less fails on both sides.
    let mut out = BytesMut::from(&b"xy"[..]);
    encode(packet, p, &mut out, size).expect("encode within the limit");
    assert_eq!(&out[2..], &bytes[..]);
    let mut out = BytesMut::from(&b"xy"[..]);
    assert_eq!(encode(packet, p, &mut out, size - 1), Err(EncodeError::TooLarge { size, max: size - 1 }));
    assert_eq!(&out[..], b"xy", "a refused encode left bytes behind");
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode(&mut buf, p, size).expect("decode within the limit").as_ref(), Some(packet));
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(decode(&mut buf, p, size - 1), Err(DecodeError::TooLarge { size, max: size - 1 }));
}

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, protocol, 0) {
            check(&packet, protocol);
        }
    }
});
