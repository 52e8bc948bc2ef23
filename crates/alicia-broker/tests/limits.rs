//! Limits over raw sockets, checking the exact reason codes: a connection beyond
//! `max_connections` (global and per listener) is refused with CONNACK 0x97 (3.1.1: 3), and an
//! MQTT 5 PUBLISH over `message_size_limit` ends with DISCONNECT 0x95.

use std::net::SocketAddr;
use std::time::Duration;

use alicia_broker::{Broker, Config, ListenerConfig};
use alicia_codec::{decode, encode, reason, BytesMut, Connect, Packet, Properties, Protocol, Publish, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn raw_connect(addr: SocketAddr, id: &str, protocol: Protocol) -> (TcpStream, Packet) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let c = Connect {
        protocol,
        clean_start: true,
        keep_alive: 30,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    let mut out = BytesMut::new();
    encode(&Packet::Connect(Box::new(c)), protocol, &mut out, 0).unwrap();
    s.write_all(&out).await.unwrap();
    let p = read_packet(&mut s, protocol).await.expect("a reply to CONNECT");
    (s, p)
}

async fn read_packet(s: &mut TcpStream, protocol: Protocol) -> Option<Packet> {
    let mut buf = BytesMut::new();
    loop {
        if let Some(p) = decode(&mut buf, protocol, 0).unwrap() {
            return Some(p);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_buf(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            return None;
        }
    }
}

fn connack_reason(p: &Packet) -> u8 {
    match p {
        Packet::ConnAck(a) => a.reason,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[tokio::test]
async fn max_connections_refuses_with_quota_exceeded() {
    let broker = Broker::new(Config { max_connections: 1, ..Config::default() });
    let l = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(l.serve());
    let (_first, p) = raw_connect(addr, "first", Protocol::V5).await;
    assert_eq!(connack_reason(&p), 0);
    let (_s, p) = raw_connect(addr, "second", Protocol::V5).await;
    assert_eq!(connack_reason(&p), reason::QUOTA_EXCEEDED);
    // 3.1.1 has no such code: "server unavailable" (3) goes on the wire.
    let (_s, p) = raw_connect(addr, "third", Protocol::V311).await;
    assert_eq!(connack_reason(&p), reason::SERVER_UNAVAILABLE);
}

#[tokio::test]
async fn per_listener_limit_frees_its_slot_on_disconnect() {
    let broker = Broker::new(Config::default());
    let mut lc = ListenerConfig::tcp("127.0.0.1:0".parse().unwrap());
    lc.max_connections = 1;
    let l = broker.listen_with(lc).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(l.serve());
    let (first, p) = raw_connect(addr, "a", Protocol::V5).await;
    assert_eq!(connack_reason(&p), 0);
    let (_s, p) = raw_connect(addr, "b", Protocol::V5).await;
    assert_eq!(connack_reason(&p), reason::QUOTA_EXCEEDED);
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_s, p) = raw_connect(addr, "c", Protocol::V5).await;
    assert_eq!(connack_reason(&p), 0, "the slot was given back");
}

#[tokio::test]
async fn oversize_v5_publish_is_disconnected_with_0x95() {
    let broker = Broker::new(Config { message_size_limit: 100, ..Config::default() });
    let l = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(l.serve());
    let (mut s, p) = raw_connect(addr, "big", Protocol::V5).await;
    assert_eq!(connack_reason(&p), 0);
    let publish = Publish {
        qos: QoS::AtLeastOnce,
        topic: "t".into(),
        packet_id: 1,
        payload: vec![0u8; 101].into(),
        ..Publish::default()
    };
    let mut out = BytesMut::new();
    encode(&Packet::Publish(publish), Protocol::V5, &mut out, 0).unwrap();
    s.write_all(&out).await.unwrap();
    match read_packet(&mut s, Protocol::V5).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason::PACKET_TOO_LARGE),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_tells_v5_clients_why() {
    let broker = Broker::new(Config::default());
    let l = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(l.serve());
    let (mut s, p) = raw_connect(addr, "stay", Protocol::V5).await;
    assert_eq!(connack_reason(&p), 0);
    broker.shutdown(Duration::from_secs(2)).await;
    match read_packet(&mut s, Protocol::V5).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason::SERVER_SHUTTING_DOWN),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert_eq!(broker.stats().clients_connected.load(std::sync::atomic::Ordering::Relaxed), 0);
}
