//! Arbitrary bytes into the decoder, as both protocol versions and with and without a size
//! limit: it must never panic or loop, whatever the network sends. Errors are fine.
//!
//! Besides "no panic", it checks two cheap properties of the framing:
//! - a packet that decodes under a limit `max` is at most `max` bytes on the wire;
//! - feeding the bytes one at a time (as a slow socket would) gives exactly the same packets and
//!   the same error as feeding them all at once.
#![no_main]

use alicia_codec::{decode, decode_body, peek_frame, Bytes, BytesMut, DecodeError, Packet, Protocol};
use libfuzzer_sys::fuzz_target;

/// Decodes until the buffer runs dry or an error; returns the packets and how it ended.
fn all_at_once(data: &[u8], protocol: Protocol, max: usize) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::from(data);
    let mut packets = Vec::new();
    loop {
        let before = buf.len();
        match decode(&mut buf, protocol, max) {
            Ok(Some(p)) => {
                let used = before - buf.len();
                assert!(used >= 2, "a decoded packet consumed {used} bytes");
                assert!(max == 0 || used <= max, "a packet of {used} bytes passed a limit of {max}");
                packets.push(p);
            }
            // Every successful decode consumes at least 2 bytes, so this loop ends.
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) must not consume bytes");
                return (packets, None);
            }
            Err(e) => return (packets, Some(e)),
        }
    }
}

fn byte_by_byte(data: &[u8], protocol: Protocol, max: usize) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for &b in data {
        buf.extend_from_slice(&[b]);
        loop {
            match decode(&mut buf, protocol, max) {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => return (packets, Some(e)),
            }
        }
    }
    (packets, None)
}

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V311, Protocol::V5] {
        for max in [0, 1024] {
            let whole = all_at_once(data, protocol, max);
            // Byte-at-a-time is quadratic in the worst case only in peek_frame's 5 bytes, but keep
            // it to moderately sized inputs so the fuzzer stays fast.
            if data.len() <= 4096 {
                assert_eq!(whole, byte_by_byte(data, protocol, max), "streaming changed the result");
            }
        }
        // The lower-level entry points, as alicia-bench uses them: any header byte, any body.
        if let Some((&header, body)) = data.split_first() {
            let _ = decode_body(header, Bytes::copy_from_slice(body), protocol);
        }
        let _ = peek_frame(data, 0);
    }
});
