//! Whatever decodes must encode back to bytes that decode to the same packet: finds places
//! where the encoder and decoder disagree.
#![no_main]

use alicia_codec::{decode, encode, BytesMut, Packet, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, protocol, 0) {
            // CONNECT carries its own protocol version; everything else uses the session's.
            let p = match &packet {
                Packet::Connect(c) => c.protocol,
                _ => protocol,
            };
            let mut out = BytesMut::new();
            encode(&packet, p, &mut out, 0).expect("a decoded packet encodes");
            let again = decode(&mut out, p, 0).expect("re-encoded bytes decode").expect("complete packet");
            assert_eq!(packet, again);
            assert!(out.is_empty(), "re-encoding produced trailing bytes");
        }
    }
});
