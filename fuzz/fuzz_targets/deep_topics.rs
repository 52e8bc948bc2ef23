//! Structure-aware SUBSCRIBE, UNSUBSCRIBE and PUBLISH with deep and long topics, through the
//! codec and the broker's protocol core (issue 11: a 30,000-level filter overflowed the stack).
//!
//! The input chooses, for each operation, a packet kind, QoS and a topic built from a repeated
//! pattern of levels (up to the 65,535 bytes a topic can hold: tens of thousands of levels,
//! wildcards, empty levels, `$`-topics, `$share/`). Each packet is encoded with the codec,
//! decoded back (must round-trip), and fed to a subscriber or publisher client of a broker with
//! no depth limit or with Mosquitto's 200. It must never panic, never hang, and every frame the
//! broker writes must decode.
#![no_main]

use alicia_broker::fuzzing::Harness;
use alicia_codec::{
    decode, encode, BytesMut, Connect, Packet, Properties, Protocol, Publish, QoS, Subscribe, SubscriptionOptions,
    Unsubscribe,
};
use libfuzzer_sys::fuzz_target;

const LEVELS: [&str; 10] = ["a", "+", "#", "", "$SYS", "$share", "g", "bb", "é", "x/y"];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }
}

/// A topic of `pattern` levels repeated to about `levels` levels, at most 65,535 bytes.
fn topic(input: &mut Input) -> String {
    let n = usize::from(input.byte() % 4) + 1;
    let pattern: Vec<&str> = (0..n).map(|_| LEVELS[usize::from(input.byte()) % LEVELS.len()]).collect();
    let levels = usize::from(input.u16());
    let mut t = String::new();
    for i in 0..levels.max(1) {
        let level = pattern[i % n];
        if t.len() + level.len() + 1 > 65_535 {
            break;
        }
        if i > 0 {
            t.push('/');
        }
        t.push_str(level);
    }
    t
}

fn connect(h: &mut Harness, id: &str, protocol: Protocol) -> Option<usize> {
    let c = Connect {
        protocol,
        clean_start: true,
        keep_alive: 60,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    let mut out = BytesMut::new();
    encode(&Packet::Connect(Box::new(c)), protocol, &mut out, 0).ok()?;
    h.connect(&out)
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let _guard = rt.enter();
    let mut input = Input(data);
    let mut h = Harness::new(if input.byte() & 1 == 0 { 0 } else { 200 });
    let protocol = if input.byte() & 1 == 0 { Protocol::V311 } else { Protocol::V5 };
    let (Some(sub), Some(publ)) = (connect(&mut h, "sub", protocol), connect(&mut h, "pub", protocol)) else {
        return;
    };
    for id in 1..=8u16 {
        if input.0.is_empty() {
            break;
        }
        let op = input.byte();
        let qos = QoS::from_u8(op % 3).unwrap_or_default();
        let t = topic(&mut input);
        let (client, packet) = match op % 3 {
            0 => {
                let options = SubscriptionOptions { qos, ..SubscriptionOptions::default() };
                let s = Subscribe { packet_id: id, properties: Properties::default(), filters: vec![(t.as_str().into(), options)] };
                (sub, Packet::Subscribe(s))
            }
            1 => {
                let u = Unsubscribe { packet_id: id, properties: Properties::default(), filters: vec![t.as_str().into()] };
                (sub, Packet::Unsubscribe(u))
            }
            _ => {
                let p = Publish {
                    qos,
                    retain: op & 0x80 != 0,
                    topic: t.as_str().into(),
                    packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
                    payload: alicia_codec::Bytes::from_static(b"x"),
                    ..Publish::default()
                };
                (publ, Packet::Publish(p))
            }
        };
        let mut bytes = BytesMut::new();
        if encode(&packet, protocol, &mut bytes, 0).is_err() {
            continue;
        }
        // What the codec encodes, it decodes to the same packet (or refuses as malformed,
        // for filters and names that break the topic syntax).
        let mut copy = bytes.clone();
        if let Ok(Some(back)) = decode(&mut copy, protocol, 0) {
            assert_eq!(back, packet);
        }
        if !h.feed(client, &bytes) {
            break;
        }
        h.pump();
    }
});
