//! Encoding packets into a caller-owned buffer. Appending to one `BytesMut` per connection lets
//! the broker coalesce many packets into a single socket write.

use bytes::{BufMut, BytesMut};

use crate::error::EncodeError;
use crate::packet::*;
use crate::props::Properties;

pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(out: &mut BytesMut, mut v: usize) {
    loop {
        // Seven bits at a time: always fits a byte.
        #[allow(clippy::cast_possible_truncation)]
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            break;
        }
    }
}

pub(crate) fn put_str(out: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    put_binary(out, s.as_bytes())
}

/// A length-prefixed field. Its length must fit 16 bits: a longer one is an error, never a
/// silently truncated length (which would corrupt the frame for the reader).
pub(crate) fn put_binary(out: &mut BytesMut, b: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong { len: b.len() })?;
    out.put_u16(len);
    out.put_slice(b);
    Ok(())
}

const MAX_REMAINING: usize = 268_435_455;

fn header(out: &mut BytesMut, first: u8, remaining: usize) -> Result<(), EncodeError> {
    if remaining > MAX_REMAINING {
        return Err(EncodeError::Overflow);
    }
    out.reserve(1 + varint_len(remaining) + remaining);
    out.put_u8(first);
    put_varint(out, remaining);
    Ok(())
}

/// Appends `packet` to `out` in the given protocol version. MQTT 5-only fields are left out for
/// 3.1.1. `max` is the peer's maximum packet size (0 = unlimited); a packet that would exceed it
/// is not written and `EncodeError::TooLarge` is returned.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut, max: usize) -> Result<(), EncodeError> {
    let start = out.len();
    if let Err(e) = encode_unchecked(packet, protocol, out) {
        out.truncate(start);
        return Err(e);
    }
    let size = out.len() - start;
    if max > 0 && size > max {
        out.truncate(start);
        return Err(EncodeError::TooLarge { size, max });
    }
    Ok(())
}

fn props_len(p: &Properties, v5: bool) -> usize {
    if v5 {
        p.encoded_len()
    } else {
        0
    }
}

fn encode_unchecked(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
    let v5 = protocol.is_v5();
    match packet {
        Packet::Connect(c) => {
            let (name, level): (&str, u8) = match c.protocol {
                Protocol::V31 => ("MQIsdp", 3),
                p => ("MQTT", p.level()),
            };
            let v5 = c.protocol.is_v5();
            let mut len = 2 + name.len() + 1 + 1 + 2 + props_len(&c.properties, v5) + 2 + c.client_id.len();
            let mut flags = 0u8;
            if c.clean_start {
                flags |= 0x02;
            }
            if let Some(w) = &c.will {
                flags |= 0x04 | ((w.qos as u8) << 3);
                if w.retain {
                    flags |= 0x20;
                }
                len += props_len(&w.properties, v5) + 2 + w.topic.len() + 2 + w.payload.len();
            }
            if let Some(u) = &c.username {
                flags |= 0x80;
                len += 2 + u.len();
            }
            if let Some(p) = &c.password {
                flags |= 0x40;
                len += 2 + p.len();
            }
            header(out, 0x10, len)?;
            put_str(out, name)?;
            out.put_u8(level);
            out.put_u8(flags);
            out.put_u16(c.keep_alive);
            if v5 {
                c.properties.encode(out)?;
            }
            put_str(out, &c.client_id)?;
            if let Some(w) = &c.will {
                if v5 {
                    w.properties.encode(out)?;
                }
                put_str(out, &w.topic)?;
                put_binary(out, &w.payload)?;
            }
            if let Some(u) = &c.username {
                put_str(out, u)?;
            }
            if let Some(p) = &c.password {
                put_binary(out, p)?;
            }
        }
        Packet::ConnAck(a) => {
            header(out, 0x20, 2 + props_len(&a.properties, v5))?;
            out.put_u8(u8::from(a.session_present));
            out.put_u8(if v5 { a.reason } else { crate::reason::v3_connack(a.reason) });
            if v5 {
                a.properties.encode(out)?;
            }
        }
        Packet::Publish(p) => {
            let view = PublishOut {
                dup: p.dup,
                qos: p.qos,
                retain: p.retain,
                topic: &p.topic,
                packet_id: p.packet_id,
                properties: &p.properties,
                payload: &p.payload,
            };
            encode_publish(out, protocol, &view)?;
        }
        Packet::PubAck(a) => ack(out, 0x40, a, v5)?,
        Packet::PubRec(a) => ack(out, 0x50, a, v5)?,
        Packet::PubRel(a) => ack(out, 0x62, a, v5)?,
        Packet::PubComp(a) => ack(out, 0x70, a, v5)?,
        Packet::Subscribe(s) => {
            let len = 2 + props_len(&s.properties, v5) + s.filters.iter().map(|(f, _)| 2 + f.len() + 1).sum::<usize>();
            header(out, 0x82, len)?;
            out.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(out)?;
            }
            for (f, o) in &s.filters {
                put_str(out, f)?;
                let mut b = o.qos as u8;
                if v5 {
                    b |= (o.no_local as u8) << 2 | (o.retain_as_published as u8) << 3 | (o.retain_handling as u8) << 4;
                }
                out.put_u8(b);
            }
        }
        Packet::SubAck(s) => {
            header(out, 0x90, 2 + props_len(&s.properties, v5) + s.reasons.len())?;
            out.put_u16(s.packet_id);
            if v5 {
                s.properties.encode(out)?;
            }
            out.put_slice(&s.reasons);
        }
        Packet::Unsubscribe(u) => {
            let len = 2 + props_len(&u.properties, v5) + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>();
            header(out, 0xA2, len)?;
            out.put_u16(u.packet_id);
            if v5 {
                u.properties.encode(out)?;
            }
            for f in &u.filters {
                put_str(out, f)?;
            }
        }
        Packet::UnsubAck(s) => {
            if v5 {
                header(out, 0xB0, 2 + s.properties.encoded_len() + s.reasons.len())?;
                out.put_u16(s.packet_id);
                s.properties.encode(out)?;
                out.put_slice(&s.reasons);
            } else {
                header(out, 0xB0, 2)?;
                out.put_u16(s.packet_id);
            }
        }
        Packet::PingReq => out.put_slice(&[0xC0, 0]),
        Packet::PingResp => out.put_slice(&[0xD0, 0]),
        Packet::Disconnect(d) => {
            if !v5 || (d.reason == 0 && d.properties.is_empty()) {
                out.put_slice(&[0xE0, 0]);
            } else if d.properties.is_empty() {
                // The property length may be left out when there are none (MQTT 5 §3.14.2.2).
                out.put_slice(&[0xE0, 1, d.reason]);
            } else {
                header(out, 0xE0, 1 + d.properties.encoded_len())?;
                out.put_u8(d.reason);
                d.properties.encode(out)?;
            }
        }
        Packet::Auth(a) => {
            if a.reason == 0 && a.properties.is_empty() {
                out.put_slice(&[0xF0, 0]);
            } else {
                header(out, 0xF0, 1 + a.properties.encoded_len())?;
                out.put_u8(a.reason);
                a.properties.encode(out)?;
            }
        }
    }
    Ok(())
}

fn ack(out: &mut BytesMut, first: u8, a: &Ack, v5: bool) -> Result<(), EncodeError> {
    if !v5 || (a.reason == 0 && a.properties.is_empty()) {
        out.put_u8(first);
        out.put_u8(2);
        out.put_u16(a.packet_id);
    } else if a.properties.is_empty() {
        out.put_u8(first);
        out.put_u8(3);
        out.put_u16(a.packet_id);
        out.put_u8(a.reason);
    } else {
        header(out, first, 3 + a.properties.encoded_len())?;
        out.put_u16(a.packet_id);
        out.put_u8(a.reason);
        a.properties.encode(out)?;
    }
    Ok(())
}

/// A PUBLISH to encode, borrowing its parts, so the broker can send one stored message to many
/// subscribers without building a `Publish` for each.
#[derive(Debug, Clone, Copy)]
pub struct PublishOut<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag of this delivery.
    pub retain: bool,
    /// Topic (empty when an established topic alias stands for it).
    pub topic: &'a str,
    /// Packet identifier (ignored for QoS 0).
    pub packet_id: u16,
    /// Properties of this delivery (v5).
    pub properties: &'a Properties,
    /// Payload.
    pub payload: &'a [u8],
}

/// Appends a PUBLISH. Returns the number of bytes written. A topic or property longer than
/// MQTT can carry, or a packet over the protocol's size limit, is an error and leaves `out` as
/// it was.
pub fn encode_publish(out: &mut BytesMut, protocol: Protocol, p: &PublishOut) -> Result<usize, EncodeError> {
    let v5 = protocol.is_v5();
    let has_id = p.qos != QoS::AtMostOnce;
    let remaining = 2 + p.topic.len() + if has_id { 2 } else { 0 } + props_len(p.properties, v5) + p.payload.len();
    let mut first = 0x30 | ((p.qos as u8) << 1);
    if p.dup && has_id {
        first |= 0x08;
    }
    if p.retain {
        first |= 0x01;
    }
    let start = out.len();
    let written = (|| {
        header(out, first, remaining)?;
        put_str(out, p.topic)?;
        if has_id {
            out.put_u16(p.packet_id);
        }
        if v5 {
            p.properties.encode(out)?;
        }
        out.put_slice(p.payload);
        Ok(())
    })();
    match written {
        Ok(()) => Ok(out.len() - start),
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The size a PUBLISH would have on the wire, to check it against a peer's maximum packet size
/// before choosing a packet identifier for it.
pub fn publish_len(protocol: Protocol, p: &PublishOut) -> usize {
    let remaining = 2
        + p.topic.len()
        + if p.qos != QoS::AtMostOnce { 2 } else { 0 }
        + props_len(p.properties, protocol.is_v5())
        + p.payload.len();
    1 + varint_len(remaining) + remaining
}
