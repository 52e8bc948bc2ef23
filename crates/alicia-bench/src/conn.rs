//! A minimal pipelined MQTT client connection: one socket, one read buffer, one write buffer.
//!
//! Packets are appended to `wbuf` and go out in one `write_all` per batch. Reads fill a large
//! buffer and [`Conn::drain`] walks every complete frame in it. PUBLISH and PUBACK, the only
//! packets on the hot path, are parsed in place without allocating; everything else goes
//! through the codec's full decoder.

use std::net::SocketAddr;

use alicia_codec::{
    decode, decode_body, encode, peek_frame, Bytes, BytesMut, Connect, Packet, Properties, Protocol, QoS, Subscribe,
    SubscriptionOptions,
};
use anyhow::{bail, Context};
use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Room guaranteed in the read buffer before each read.
const READ_CHUNK: usize = 128 * 1024;

/// A packet found in the read buffer. Payloads borrow from the buffer.
pub(crate) enum Event<'a> {
    /// An application message.
    Publish { qos: QoS, packet_id: u16, payload: &'a [u8] },
    /// Acknowledgement of one of our QoS 1 publications.
    PubAck { reason: u8 },
    /// Anything else, fully decoded (rare: boxed to keep the hot variants small).
    Other(Box<Packet>),
}

/// One client connection.
pub(crate) struct Conn {
    stream: TcpStream,
    protocol: Protocol,
    rbuf: BytesMut,
    /// Outgoing bytes not yet written; append packets, then [`Conn::flush`].
    pub wbuf: BytesMut,
    /// The broker's Receive Maximum (MQTT 5), or 65535.
    pub receive_maximum: u16,
}

impl Conn {
    /// Connects, sends CONNECT (clean start, no keep alive) and waits for a successful CONNACK.
    pub async fn connect(addr: SocketAddr, protocol: Protocol, client_id: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            protocol,
            rbuf: BytesMut::with_capacity(READ_CHUNK * 2),
            wbuf: BytesMut::with_capacity(64 * 1024),
            receive_maximum: u16::MAX,
        };
        let mut properties = Properties::default();
        if protocol.is_v5() {
            // Let the broker push QoS 1 deliveries without waiting on us.
            properties.receive_maximum = Some(u16::MAX);
        }
        let connect = Connect {
            protocol,
            clean_start: true,
            keep_alive: 0,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties,
        };
        conn.send(&Packet::Connect(Box::new(connect))).await?;
        match conn.next_packet().await? {
            Packet::ConnAck(ack) if ack.reason == 0 => {
                if let Some(max) = ack.properties.receive_maximum {
                    conn.receive_maximum = max;
                }
                Ok(conn)
            }
            Packet::ConnAck(ack) => bail!("broker refused the connection: reason {:#04x}", ack.reason),
            p => bail!("expected CONNACK, got {}", p.name()),
        }
    }

    /// Subscribes to one filter and waits for a SUBACK granting it.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let sub = Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(filter.into(), SubscriptionOptions { qos, ..SubscriptionOptions::default() })],
        };
        self.send(&Packet::Subscribe(sub)).await?;
        match self.next_packet().await? {
            Packet::SubAck(ack) if ack.reasons.first().is_some_and(|&r| r < 0x80) => Ok(()),
            Packet::SubAck(ack) => bail!("subscription to {filter} refused: {:?}", ack.reasons),
            p => bail!("expected SUBACK, got {}", p.name()),
        }
    }

    /// Best-effort DISCONNECT; the connection is dropped either way.
    pub async fn disconnect(mut self) {
        self.wbuf.clear();
        if encode(&Packet::Disconnect(Default::default()), self.protocol, &mut self.wbuf, 0).is_ok() {
            let _ = self.flush().await;
        }
    }

    async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        encode(packet, self.protocol, &mut self.wbuf, 0)?;
        self.flush().await
    }

    /// Reads until one whole packet is buffered and decodes it (handshake only).
    async fn next_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = decode(&mut self.rbuf, self.protocol, 0)? {
                return Ok(p);
            }
            self.read().await?;
        }
    }

    /// Writes out `wbuf` entirely.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await.context("write to broker failed")?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Waits for bytes from the broker and appends them to the read buffer.
    pub async fn read(&mut self) -> anyhow::Result<()> {
        self.rbuf.reserve(READ_CHUNK);
        let n = self.stream.read_buf(&mut self.rbuf).await.context("read from broker failed")?;
        if n == 0 {
            bail!("broker closed the connection");
        }
        Ok(())
    }

    /// Reads whatever is available without waiting; returns whether anything was read.
    pub fn try_read(&mut self) -> anyhow::Result<bool> {
        self.rbuf.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => bail!("broker closed the connection"),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e).context("read from broker failed"),
        }
    }

    /// Calls `f` for every complete packet in the read buffer, then drops them from it. `f`
    /// may append replies (PUBACKs) to the write buffer it is given.
    pub fn drain(&mut self, mut f: impl FnMut(Event<'_>, &mut BytesMut) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let v5 = self.protocol.is_v5();
        let buf = &self.rbuf[..];
        let mut pos = 0;
        while let Some(frame) = peek_frame(&buf[pos..], 0)? {
            let end = pos + frame.total();
            if end > buf.len() {
                break;
            }
            let body = &buf[pos + frame.header_len..end];
            let event = match frame.header >> 4 {
                3 => parse_publish(frame.header, body, v5)?,
                4 if body.len() >= 2 => {
                    Event::PubAck { reason: if v5 { body.get(2).copied().unwrap_or(0) } else { 0 } }
                }
                _ => Event::Other(Box::new(decode_body(frame.header, Bytes::copy_from_slice(body), self.protocol)?)),
            };
            f(event, &mut self.wbuf)?;
            pos = end;
        }
        self.rbuf.advance(pos);
        Ok(())
    }
}

/// Parses a PUBLISH body in place: topic and properties are skipped, not validated.
fn parse_publish(header: u8, body: &[u8], v5: bool) -> anyhow::Result<Event<'_>> {
    let malformed = || anyhow::anyhow!("malformed PUBLISH from the broker");
    let qos = QoS::from_u8((header >> 1) & 3).ok_or_else(malformed)?;
    let topic_len = u16::from_be_bytes([*body.first().ok_or_else(malformed)?, *body.get(1).ok_or_else(malformed)?]);
    let mut i = 2 + topic_len as usize;
    let mut packet_id = 0;
    if qos != QoS::AtMostOnce {
        let id = body.get(i..i + 2).ok_or_else(malformed)?;
        packet_id = u16::from_be_bytes([id[0], id[1]]);
        i += 2;
    }
    if v5 {
        let mut len = 0usize;
        for shift in 0..4 {
            let b = *body.get(i).ok_or_else(malformed)?;
            i += 1;
            len |= ((b & 0x7F) as usize) << (7 * shift);
            if b & 0x80 == 0 {
                break;
            }
        }
        i += len;
    }
    let payload = body.get(i..).ok_or_else(malformed)?;
    Ok(Event::Publish { qos, packet_id, payload })
}

/// Handles a packet that is neither PUBLISH nor PUBACK on a connection of `role`: PINGRESP is
/// ignored, DISCONNECT and anything else end the run with an error.
pub(crate) fn other_packet(packet: Packet, role: &str) -> anyhow::Result<()> {
    match packet {
        Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => bail!("broker disconnected a {role}: reason {:#04x}", d.reason),
        p => bail!("unexpected {} sent to a {role}", p.name()),
    }
}

/// Appends a PUBACK for `packet_id`.
pub(crate) fn put_puback(out: &mut BytesMut, packet_id: u16) {
    out.extend_from_slice(&[0x40, 2]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use alicia_codec::{encode_publish, PublishOut};

    #[test]
    fn publish_fast_path_matches_the_codec() {
        let properties = Properties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        };
        for (protocol, qos) in [
            (Protocol::V311, QoS::AtMostOnce),
            (Protocol::V311, QoS::AtLeastOnce),
            (Protocol::V5, QoS::AtLeastOnce),
            (Protocol::V5, QoS::AtMostOnce),
        ] {
            let mut buf = BytesMut::new();
            let p = PublishOut {
                dup: false,
                qos,
                retain: false,
                topic: "bench/x/p1",
                packet_id: 7,
                properties: &properties,
                payload: b"hello payload",
            };
            encode_publish(&mut buf, protocol, &p).unwrap();
            let frame = peek_frame(&buf, 0).unwrap().unwrap();
            let body = &buf[frame.header_len..frame.total()];
            let Event::Publish { qos: q, packet_id, payload } =
                parse_publish(frame.header, body, protocol.is_v5()).unwrap()
            else {
                panic!("not a publish")
            };
            assert_eq!((q, payload), (qos, &b"hello payload"[..]));
            assert_eq!(packet_id, if qos == QoS::AtMostOnce { 0 } else { 7 });
            // Truncated bodies are errors, not panics.
            for cut in 0..body.len() - 13 {
                assert!(parse_publish(frame.header, &body[..cut], protocol.is_v5()).is_err(), "cut {cut}");
            }
        }
    }
}
