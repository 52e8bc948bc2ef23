//! Decoding: framing (fixed header + remaining length) and the body of every packet type.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::DecodeError;
use crate::packet::*;
use crate::props::{Ctx, Properties};

/// The fixed header of a frame that is fully or partly in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// First byte: packet type and flags.
    pub header: u8,
    /// Bytes taken by the fixed header (1 + length bytes).
    pub header_len: usize,
    /// Remaining length announced by the fixed header.
    pub remaining: usize,
}

impl Frame {
    /// Total size of the packet on the wire.
    pub fn total(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Looks at the start of `buf` and returns the frame header once it is complete.
/// `max` bounds the total packet size (0 = the protocol's limit of 268,435,460 bytes).
pub fn peek_frame(buf: &[u8], max: usize) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                // MQTT-1.5.5-1: the fewest bytes that hold the value.
                return Err(DecodeError::Malformed("remaining length not minimally encoded"));
            }
            let frame = Frame { header: buf[0], header_len: 2 + i, remaining };
            if max > 0 && frame.total() > max {
                return Err(DecodeError::TooLarge { size: frame.total(), max });
            }
            return Ok(Some(frame));
        }
    }
    Err(DecodeError::Malformed("remaining length longer than 4 bytes"))
}

/// Decodes one packet from the front of `buf`, consuming it. Returns `Ok(None)` when more bytes
/// are needed. `protocol` is the version agreed by CONNECT (CONNECT itself carries its own).
pub fn decode(buf: &mut BytesMut, protocol: Protocol, max: usize) -> Result<Option<Packet>, DecodeError> {
    let Some(frame) = peek_frame(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < frame.total() {
        // Make room for more of the frame, but never more than 64 KiB ahead of the bytes that
        // actually arrived: a header may announce up to 256 MiB, and memory must follow what a
        // client sends, not what it claims.
        buf.reserve((frame.total() - buf.len()).min(64 * 1024));
        return Ok(None);
    }
    buf.advance(frame.header_len);
    let body = buf.split_to(frame.remaining).freeze();
    decode_body(frame.header, body, protocol).map(Some)
}

/// Decodes the body of a packet whose first byte is `header`.
pub fn decode_body(header: u8, body: Bytes, protocol: Protocol) -> Result<Packet, DecodeError> {
    let v5 = protocol.is_v5();
    let flags = header & 0x0F;
    let mut r = Reader::new(body);
    let fixed = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(DecodeError::Malformed("reserved fixed header flags"))
        }
    };
    // PUBREL, SUBSCRIBE and UNSUBSCRIBE have flags 0010. MQTT 3.1 also let their resends carry
    // DUP (its §2.1: DUP "is set when the client or server attempts to re-deliver a PUBLISH,
    // PUBREL, SUBSCRIBE or UNSUBSCRIBE message"); 3.1.1 and 5 reserve that bit.
    let qos1_fixed = || {
        if flags == 2 || (protocol == Protocol::V31 && flags == 0x0A) {
            Ok(())
        } else {
            Err(DecodeError::Malformed("reserved fixed header flags"))
        }
    };
    let packet = match header >> 4 {
        1 => {
            let c = connect(&mut r)?;
            // MQTT 3.1 had DUP/QoS/RETAIN bits in every fixed header and ignored them on
            // CONNECT; 3.1.1 and 5 reserve them.
            if c.protocol != Protocol::V31 {
                fixed(0)?;
            }
            Packet::Connect(Box::new(c))
        }
        2 => {
            fixed(0)?;
            let ack_flags = r.u8()?;
            if ack_flags & 0xFE != 0 {
                return Err(DecodeError::Malformed("reserved CONNACK flags"));
            }
            let code = r.u8()?;
            // The packet type always holds an MQTT 5 reason code; 3.1.1 return codes map onto it.
            let reason = if v5 {
                code
            } else {
                match code {
                    0 => 0,
                    1 => crate::reason::UNSUPPORTED_PROTOCOL_VERSION,
                    2 => crate::reason::CLIENT_ID_NOT_VALID,
                    3 => crate::reason::SERVER_UNAVAILABLE,
                    4 => crate::reason::BAD_USERNAME_OR_PASSWORD,
                    5 => crate::reason::NOT_AUTHORIZED,
                    _ => return Err(DecodeError::Malformed("reserved CONNACK return code")),
                }
            };
            let properties = if v5 { Properties::decode(&mut r, Ctx::ConnAck)? } else { Properties::default() };
            Packet::ConnAck(ConnAck { session_present: ack_flags & 1 == 1, reason, properties })
        }
        3 => Packet::Publish(publish(flags, &mut r, v5)?),
        4 => {
            fixed(0)?;
            Packet::PubAck(ack(&mut r, v5, &PUBACK_REASONS)?)
        }
        5 => {
            fixed(0)?;
            Packet::PubRec(ack(&mut r, v5, &PUBACK_REASONS)?)
        }
        6 => {
            qos1_fixed()?;
            Packet::PubRel(ack(&mut r, v5, &PUBREL_REASONS)?)
        }
        7 => {
            fixed(0)?;
            Packet::PubComp(ack(&mut r, v5, &PUBREL_REASONS)?)
        }
        8 => {
            qos1_fixed()?;
            Packet::Subscribe(subscribe(&mut r, v5)?)
        }
        9 => {
            fixed(0)?;
            let packet_id = r.u16()?;
            let properties = if v5 { Properties::decode(&mut r, Ctx::SubAck)? } else { Properties::default() };
            let reasons = r.rest().to_vec();
            Packet::SubAck(SubAck { packet_id, properties, reasons })
        }
        10 => {
            qos1_fixed()?;
            let packet_id = nonzero_id(r.u16()?)?;
            let properties = if v5 { Properties::decode(&mut r, Ctx::Unsubscribe)? } else { Properties::default() };
            let mut filters = Vec::new();
            while r.remaining() > 0 {
                let filter = r.name()?;
                check_filter(&filter)?;
                filters.push(filter);
            }
            if filters.is_empty() {
                return Err(DecodeError::Protocol("UNSUBSCRIBE without topic filters"));
            }
            Packet::Unsubscribe(Unsubscribe { packet_id, properties, filters })
        }
        11 => {
            fixed(0)?;
            let packet_id = r.u16()?;
            let (properties, reasons) = if v5 {
                (Properties::decode(&mut r, Ctx::SubAck)?, r.rest().to_vec())
            } else {
                (Properties::default(), Vec::new())
            };
            Packet::UnsubAck(SubAck { packet_id, properties, reasons })
        }
        12 => {
            fixed(0)?;
            Packet::PingReq
        }
        13 => {
            fixed(0)?;
            Packet::PingResp
        }
        14 => {
            fixed(0)?;
            let mut d = Disconnect::default();
            if v5 && r.remaining() > 0 {
                d.reason = r.u8()?;
                if r.remaining() > 0 {
                    d.properties = Properties::decode(&mut r, Ctx::Disconnect)?;
                }
            }
            Packet::Disconnect(d)
        }
        15 if v5 => {
            fixed(0)?;
            let mut a = Auth::default();
            if r.remaining() > 0 {
                a.reason = r.u8()?;
                if r.remaining() > 0 {
                    a.properties = Properties::decode(&mut r, Ctx::Auth)?;
                }
            }
            Packet::Auth(a)
        }
        _ => return Err(DecodeError::Malformed("reserved packet type")),
    };
    if r.remaining() > 0 {
        return Err(DecodeError::Malformed("bytes left over after the packet"));
    }
    Ok(packet)
}

fn nonzero_id(id: u16) -> Result<u16, DecodeError> {
    if id == 0 {
        Err(DecodeError::Protocol("packet identifier 0"))
    } else {
        Ok(id)
    }
}

/// A topic filter's syntax (MQTT 5 §4.7). A filter that breaks it is a Malformed Packet: reason
/// code 0x8F is for filters that are "correctly formed, but not accepted". A broken shared
/// subscription (`$share/` without a share name or filter) is a protocol error, as the
/// requirements of §4.8.2 are written, and as Mosquitto answers.
fn check_filter(raw: &str) -> Result<(), DecodeError> {
    if raw.starts_with("$share/") {
        crate::topic::parse_filter(raw).map(|_| ()).map_err(DecodeError::Protocol)
    } else {
        crate::topic::valid_filter(raw).map_err(DecodeError::Malformed)
    }
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    let protocol = match (&*name, level) {
        ("MQTT", 4) => Protocol::V311,
        ("MQTT", 5) => Protocol::V5,
        ("MQIsdp", 3) => Protocol::V31,
        ("MQTT" | "MQIsdp", _) => return Err(DecodeError::UnsupportedProtocol),
        // MQTT-3.1.2-1: not MQTT at all; the server may just close the connection.
        _ => return Err(DecodeError::Malformed("unknown protocol name")),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 1 != 0 && protocol != Protocol::V31 {
        return Err(DecodeError::Malformed("reserved CONNECT flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let has_will = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 3).ok_or(DecodeError::Malformed("will QoS 3"))?;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::Malformed("will QoS or retain without a will"));
    }
    if !v5 && has_password && !has_username {
        return Err(DecodeError::Malformed("password without user name"));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 { Properties::decode(r, Ctx::Connect)? } else { Properties::default() };
    let client_id = r.name()?;
    let will = if has_will {
        let properties = if v5 { Properties::decode(r, Ctx::Will)? } else { Properties::default() };
        let topic = r.name()?;
        crate::topic::valid_name(&topic).map_err(DecodeError::Malformed)?;
        let payload = r.binary()?;
        Some(Will { topic, payload, qos: will_qos, retain: will_retain, properties })
    } else {
        None
    };
    let username = if has_username { Some(r.name()?) } else { None };
    let password = if has_password { Some(r.binary()?) } else { None };
    Ok(Connect { protocol, clean_start, keep_alive, client_id, will, username, password, properties })
}

fn publish(flags: u8, r: &mut Reader, v5: bool) -> Result<Publish, DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_u8((flags >> 1) & 3).ok_or(DecodeError::Malformed("PUBLISH with QoS 3"))?;
    let retain = flags & 1 != 0;
    if qos == QoS::AtMostOnce && dup {
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.name()?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        // A topic name with a wildcard is not a topic name: malformed (0x90 is for names that
        // are well formed but refused).
        return Err(DecodeError::Malformed("wildcard in topic name"));
    }
    let packet_id = if qos == QoS::AtMostOnce { 0 } else { nonzero_id(r.u16()?)? };
    let properties = if v5 { Properties::decode(r, Ctx::Publish)? } else { Properties::default() };
    if topic.is_empty() && properties.topic_alias.is_none() {
        return Err(DecodeError::Protocol("empty topic name without a topic alias"));
    }
    let payload = r.rest();
    Ok(Publish { dup, qos, retain, topic, packet_id, properties, payload })
}

/// Reason codes a PUBACK or PUBREC may carry (MQTT 5 §3.4.2.1, §3.5.2.1).
const PUBACK_REASONS: [u8; 9] = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// Reason codes a PUBREL or PUBCOMP may carry (§3.6.2.1, §3.7.2.1).
const PUBREL_REASONS: [u8; 2] = [0x00, 0x92];

fn ack(r: &mut Reader, v5: bool, allowed: &[u8]) -> Result<Ack, DecodeError> {
    let packet_id = nonzero_id(r.u16()?)?;
    let mut a = Ack { packet_id, ..Ack::default() };
    if v5 && r.remaining() > 0 {
        a.reason = r.u8()?;
        if !allowed.contains(&a.reason) {
            return Err(DecodeError::Protocol("reason code not defined for this packet"));
        }
        if r.remaining() > 0 {
            a.properties = Properties::decode(r, Ctx::Ack)?;
        }
    }
    Ok(a)
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = nonzero_id(r.u16()?)?;
    let properties = if v5 { Properties::decode(r, Ctx::Subscribe)? } else { Properties::default() };
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.name()?;
        check_filter(&filter)?;
        let o = r.u8()?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if o & reserved != 0 {
            return Err(DecodeError::Malformed("reserved subscription option bits"));
        }
        let qos = QoS::from_u8(o & 3).ok_or(DecodeError::Malformed("subscription QoS 3"))?;
        let retain_handling = match (o >> 4) & 3 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::Protocol("retain handling 3")),
        };
        let options =
            SubscriptionOptions { qos, no_local: o & 0x04 != 0, retain_as_published: o & 0x08 != 0, retain_handling };
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe { packet_id, properties, filters })
}

/// A cursor over one packet's body. Every read is bounds-checked and fails as "malformed".
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Malformed("packet shorter than its fields"))
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(DecodeError::Malformed("variable byte integer not minimally encoded"));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed("variable byte integer longer than 4 bytes"))
    }

    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()? as usize;
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }

    /// A UTF-8 string as MQTT defines it: well-formed and without U+0000.
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        if raw.contains(&0) {
            return Err(DecodeError::Malformed("U+0000 in a string"));
        }
        ByteString::try_from(raw).map_err(|_| DecodeError::Malformed("string is not UTF-8"))
    }

    /// A string the broker interprets (client id, user name, topic name or filter): also free
    /// of the control characters U+0001–U+001F and U+007F–U+009F, which MQTT 5 §1.5.4 lets a
    /// receiver treat as malformed, and which have no business in a topic or a log line.
    pub(crate) fn name(&mut self) -> Result<ByteString, DecodeError> {
        let s = self.string()?;
        if s.chars().any(|c| matches!(c, '\u{1}'..='\u{1f}' | '\u{7f}'..='\u{9f}')) {
            return Err(DecodeError::Malformed("control character in a name or topic"));
        }
        Ok(s)
    }

    /// Splits off the next `len` bytes as their own reader.
    pub(crate) fn sub(&mut self, len: usize) -> Result<Reader, DecodeError> {
        self.need(len)?;
        Ok(Reader::new(self.buf.split_to(len)))
    }

    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }
}
