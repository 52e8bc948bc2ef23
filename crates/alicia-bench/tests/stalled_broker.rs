//! `--duration` is a hard bound even when the broker stops reading: a fake broker accepts the
//! connections and subscriptions, then never reads again.

use std::time::{Duration, Instant};

use alicia_bench::{run, BenchArgs, Scenario};
use alicia_codec::{decode, encode, BytesMut, ConnAck, Packet, Protocol, SubAck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Answers CONNECT and SUBSCRIBE, then holds the socket without reading.
async fn stall(mut s: TcpStream) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    loop {
        if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
        while let Ok(Some(p)) = decode(&mut buf, Protocol::V311, 0) {
            match p {
                Packet::Connect(_) => {
                    encode(&Packet::ConnAck(ConnAck::default()), Protocol::V311, &mut out, 0).unwrap()
                }
                Packet::Subscribe(sub) => {
                    let ack = SubAck { packet_id: sub.packet_id, reasons: vec![0], ..SubAck::default() };
                    encode(&Packet::SubAck(ack), Protocol::V311, &mut out, 0).unwrap();
                }
                // Publications: stop reading for good.
                _ => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
            }
            s.write_all(&out).await.unwrap();
            out.clear();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_reading_cannot_hold_the_run() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(stall(s));
        }
    });
    let args = BenchArgs {
        port,
        scenario: Scenario::Pairs,
        publishers: Some(2),
        messages: u64::from(u32::MAX),
        backlog: 0,
        duration: 1.5,
        quiet: true,
        ..BenchArgs::default()
    };
    let started = Instant::now();
    let r = run(&args).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(!r.complete);
    assert!(r.sent > 0, "{r:?}");
    assert_eq!((r.received, r.lost), (0, r.sent));
}
