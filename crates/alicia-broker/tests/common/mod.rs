//! A raw MQTT client over a real socket, built on the codec, for tests that check exact bytes
//! and reason codes.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use alicia_broker::{Broker, Config};
use alicia_codec::{
    decode, encode, Ack, BytesMut, Connect, Packet, Properties, Protocol, Publish, QoS, Subscribe, SubscriptionOptions,
    Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts a broker with `config` on a free loopback port.
pub async fn start(config: Config) -> (Broker, SocketAddr) {
    let broker = Broker::new(config);
    let l = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(l.serve());
    (broker, addr)
}

pub struct Raw {
    pub s: TcpStream,
    pub buf: BytesMut,
    pub protocol: Protocol,
}

pub fn connect_packet(protocol: Protocol, id: &str, clean: bool) -> Connect {
    Connect {
        protocol,
        clean_start: clean,
        keep_alive: 60,
        client_id: id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

impl Raw {
    /// Opens a socket without sending anything.
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Raw {
        Raw { s: TcpStream::connect(addr).await.unwrap(), buf: BytesMut::new(), protocol }
    }

    /// Connects and returns the client with the broker's CONNACK.
    pub async fn connect_with(addr: SocketAddr, c: Connect) -> (Raw, Packet) {
        let mut r = Raw::open(addr, c.protocol).await;
        r.send(&Packet::Connect(Box::new(c))).await;
        let p = r.recv().await.expect("a reply to CONNECT");
        (r, p)
    }

    /// Connects with clean start and expects success.
    pub async fn connect(addr: SocketAddr, protocol: Protocol, id: &str) -> Raw {
        let (r, p) = Raw::connect_with(addr, connect_packet(protocol, id, true)).await;
        match p {
            Packet::ConnAck(a) if a.reason == 0 => r,
            other => panic!("connect {id}: {other:?}"),
        }
    }

    pub async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode(p, self.protocol, &mut out, 0).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// The next packet, or `None` once the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(Duration::from_secs(10)).await.expect("a packet or the end in time")
    }

    /// `Err` on timeout.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<Packet>, ()> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match decode(&mut self.buf, self.protocol, 0) {
                Ok(Some(p)) => return Ok(Some(p)),
                Ok(None) => {}
                Err(e) => panic!("the broker sent an undecodable frame: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.s.read_buf(&mut self.buf)).await {
                Err(_) => return Err(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Expects DISCONNECT with `reason` (v5), then the end of the connection.
    pub async fn expect_disconnect(&mut self, reason: u8) {
        match self.recv().await {
            Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason, "DISCONNECT reason"),
            other => panic!("expected DISCONNECT 0x{reason:02x}, got {other:?}"),
        }
        assert_eq!(self.recv().await, None, "the connection ends after DISCONNECT");
    }

    /// Expects the connection to end without anything more.
    pub async fn expect_closed(&mut self) {
        match self.recv().await {
            None => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<u8> {
        let s = Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(filter.into(), SubscriptionOptions { qos, ..SubscriptionOptions::default() })],
        };
        self.send(&Packet::Subscribe(s)).await;
        match self.recv().await {
            Some(Packet::SubAck(a)) => a.reasons,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn unsubscribe(&mut self, filter: &str) -> Option<Packet> {
        let u = Unsubscribe { packet_id: 2, properties: Properties::default(), filters: vec![filter.into()] };
        self.send(&Packet::Unsubscribe(u)).await;
        self.recv().await
    }

    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8], id: u16) {
        let p = Publish {
            qos,
            retain,
            topic: topic.into(),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
            payload: payload.to_vec().into(),
            ..Publish::default()
        };
        self.send(&Packet::Publish(p)).await;
    }

    /// PINGREQ → PINGRESP: the connection is alive and everything sent before was handled.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        loop {
            match self.recv().await {
                Some(Packet::PingResp) => return,
                Some(_) => continue,
                None => panic!("connection closed instead of PINGRESP"),
            }
        }
    }

    pub async fn puback(&mut self, id: u16) {
        self.send(&Packet::PubAck(Ack::new(id))).await;
    }
}
