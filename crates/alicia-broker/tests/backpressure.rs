//! Issue 11, QoS 1 loss under burst: ten publishers sending QoS 1 as fast as they can to one
//! subscriber that is online and reading used to make the broker drop acknowledged messages
//! once the subscriber's queue was full. Now a full queue of an online session slows its
//! publishers down (the broker stops reading from them) and nothing acknowledged is lost; only
//! an offline session's queue drops, by `max_queued`, counted per client.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use alicia_broker::Config;
use alicia_codec::{decode, encode, encode_publish, Ack, BytesMut, Packet, Properties, Protocol, PublishOut, QoS};
use common::{connect_packet, start, Raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PUBLISHERS: usize = 10;
const PER_PUBLISHER: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_qos1_to_an_online_subscriber_loses_nothing() {
    // A small online queue, so the burst overflows it many times over.
    let (broker, addr) = start(Config { max_buffered: 500, ..Config::default() }).await;
    let mut sub = Raw::connect(addr, Protocol::V311, "sink").await;
    sub.subscribe("burst/#", QoS::AtLeastOnce).await;
    let Raw { s: sub_sock, buf: mut sub_buf, .. } = sub;
    let total = PUBLISHERS * PER_PUBLISHER;
    let reader = tokio::spawn(async move {
        let (mut rd, mut wr) = sub_sock.into_split();
        let mut got = 0usize;
        let mut acks = BytesMut::new();
        while got < total {
            while let Some(p) = decode(&mut sub_buf, Protocol::V311, 0).unwrap() {
                if let Packet::Publish(p) = p {
                    got += 1;
                    encode(&Packet::PubAck(Ack::new(p.packet_id)), Protocol::V311, &mut acks, 0).unwrap();
                }
            }
            if !acks.is_empty() {
                wr.write_all(&acks).await.unwrap();
                acks.clear();
            }
            if got == total {
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(20), rd.read_buf(&mut sub_buf))
                .await
                .expect("deliveries keep coming")
                .unwrap();
            assert!(n > 0, "the broker closed the subscriber");
        }
        got
    });

    let mut publishers = Vec::new();
    for i in 0..PUBLISHERS {
        let (r, _) = Raw::connect_with(addr, connect_packet(Protocol::V311, &format!("burst-{i}"), true)).await;
        publishers.push(tokio::spawn(async move {
            let Raw { s, mut buf, .. } = r;
            let (mut rd, mut wr) = s.into_split();
            // Count PUBACKs while writing as fast as the socket takes it.
            let acks = tokio::spawn(async move {
                let mut n = 0usize;
                while n < PER_PUBLISHER {
                    while let Some(p) = decode(&mut buf, Protocol::V311, 0).unwrap() {
                        assert!(matches!(p, Packet::PubAck(_)), "{p:?}");
                        n += 1;
                    }
                    if n == PER_PUBLISHER || rd.read_buf(&mut buf).await.unwrap() == 0 {
                        break;
                    }
                }
                n
            });
            let topic = format!("burst/{i}");
            let props = Properties::default();
            let mut out = BytesMut::new();
            for k in 0..PER_PUBLISHER {
                let id = (k % 65_535) as u16 + 1;
                let p = PublishOut {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: &topic,
                    packet_id: id,
                    properties: &props,
                    payload: b"0123456789abcdef0123456789abcdef",
                };
                let _ = encode_publish(&mut out, Protocol::V311, &p);
                if out.len() > 32 * 1024 {
                    wr.write_all(&out).await.unwrap();
                    out.clear();
                }
            }
            wr.write_all(&out).await.unwrap();
            let acked = tokio::time::timeout(Duration::from_secs(60), acks).await.unwrap().unwrap();
            (acked, wr)
        }));
    }
    let mut acked = 0;
    let mut keep = Vec::new();
    for p in publishers {
        let (n, wr) = p.await.unwrap();
        acked += n;
        keep.push(wr);
    }
    assert_eq!(acked, total, "every PUBLISH acknowledged");
    let got = tokio::time::timeout(Duration::from_secs(60), reader).await.unwrap().unwrap();
    assert_eq!(got, total, "every acknowledged message delivered");
    assert_eq!(broker.stats().dropped.load(Ordering::Relaxed), 0, "nothing dropped");
}

#[tokio::test]
async fn an_offline_queue_drops_by_max_queued_and_counts_per_client() {
    let (broker, addr) = start(Config { max_queued: 5, ..Config::default() }).await;
    let (mut sub, _) = Raw::connect_with(addr, connect_packet(Protocol::V311, "away", false)).await;
    sub.subscribe("q", QoS::AtLeastOnce).await;
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut p = Raw::connect(addr, Protocol::V311, "feeder").await;
    for i in 0..8u16 {
        p.publish("q", QoS::AtLeastOnce, false, b"m", i + 1).await;
    }
    p.ping().await;
    assert_eq!(broker.stats().dropped.load(Ordering::Relaxed), 3);
    let text = broker.metrics();
    assert!(text.contains("alicia_broker_client_messages_dropped_total{client_id=\"away\"} 3"), "{text}");
    // The five that fit are delivered when the client comes back.
    let (mut back, _) = Raw::connect_with(addr, connect_packet(Protocol::V311, "away", false)).await;
    for _ in 0..5 {
        match back.recv().await {
            Some(Packet::Publish(m)) => back.puback(m.packet_id).await,
            other => panic!("{other:?}"),
        }
    }
    back.ping().await;
}
