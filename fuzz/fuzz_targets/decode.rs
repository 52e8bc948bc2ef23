//! Arbitrary bytes into the decoder, as both protocol versions and with and without a size
//! limit: it must never panic or loop, whatever the network sends.
#![no_main]

use alicia_codec::{decode, BytesMut, Protocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V311, Protocol::V5] {
        for max in [0, 1024] {
            let mut buf = BytesMut::from(data);
            // Every successful decode consumes bytes, so this ends.
            while let Ok(Some(_)) = decode(&mut buf, protocol, max) {}
        }
    }
});
