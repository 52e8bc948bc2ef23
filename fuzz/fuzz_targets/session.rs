//! Stateful fuzzing of the broker's protocol core: a few clients (MQTT 3.1, 3.1.1 and 5, with
//! and without clean sessions, sharing client ids so sessions are taken over and resumed) each
//! get chunks of arbitrary bytes, packet sequences included; after every chunk every client
//! drains its queue. The broker must never panic or hang, and every frame it writes must be
//! well-formed MQTT in the client's protocol.
//!
//! Input: a header byte per client (protocol, clean start, client id), then records of
//! `[client][length][bytes...]`. The seed corpus (`cargo run --example seeds`) holds
//! sequences of valid packets, which the fuzzer then mutates.
#![no_main]

use alicia_broker::fuzzing::Harness;
use alicia_codec::{encode, BytesMut, Connect, Packet, Properties, Protocol};
use libfuzzer_sys::fuzz_target;

const CLIENTS: usize = 3;

fn connect_bytes(header: u8) -> BytesMut {
    let protocol = match header % 3 {
        0 => Protocol::V31,
        1 => Protocol::V311,
        _ => Protocol::V5,
    };
    let mut properties = Properties::default();
    if protocol.is_v5() && header & 0x10 != 0 {
        properties.session_expiry_interval = Some(60);
        properties.receive_maximum = Some(2);
        properties.topic_alias_maximum = Some(2);
    }
    let c = Connect {
        protocol,
        clean_start: header & 0x04 != 0,
        keep_alive: 60,
        // Two ids for three clients: takeovers happen.
        client_id: if header & 0x08 != 0 { "a".into() } else { "b".into() },
        will: None,
        username: None,
        password: None,
        properties,
    };
    let mut out = BytesMut::new();
    let _ = encode(&Packet::Connect(Box::new(c)), protocol, &mut out, 0);
    out
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    if data.len() < CLIENTS {
        return;
    }
    let (headers, mut rest) = data.split_at(CLIENTS);
    let mut h = Harness::new(200);
    let mut ids: Vec<Option<usize>> = Vec::new();
    for &header in headers {
        ids.push(h.connect(&connect_bytes(header)));
    }
    while rest.len() >= 2 {
        let who = usize::from(rest[0]) % (CLIENTS + 1);
        let len = usize::from(rest[1]).min(rest.len() - 2);
        let chunk = &rest[2..2 + len];
        rest = &rest[2 + len..];
        match who {
            CLIENTS => {
                // A client comes back (same header as the first one): takeover or resume.
                ids.push(h.connect(&connect_bytes(headers[0])));
            }
            i => {
                if let Some(c) = ids.get(i).copied().flatten() {
                    if !h.feed(c, chunk) {
                        ids[i] = None;
                    }
                }
            }
        }
        h.pump();
    }
});
