//! MQTT 5 properties (section 2.2.2). One struct for every packet type; the decoder checks that
//! each property is allowed in the packet it arrived in and appears at most once where the
//! specification says so.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::decode::Reader;
use crate::encode::{put_binary, put_str, put_varint, varint_len};
use crate::error::{DecodeError, EncodeError};

/// All MQTT 5 properties. `None` / empty means absent.
#[derive(Debug, Clone, PartialEq, Default)]
#[allow(missing_docs)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<ByteString>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    /// Subscription identifiers: several in PUBLISH, at most one in SUBSCRIBE.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<ByteString>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<ByteString>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<ByteString>,
    pub server_reference: Option<ByteString>,
    pub reason_string: Option<ByteString>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(ByteString, ByteString)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

/// Where a property block sits; decides which identifiers are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Connect,
    ConnAck,
    Publish,
    Will,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    Disconnect,
    Auth,
}

/// Whether MQTT 5 defines property `id` at all.
fn defined(id: u8) -> bool {
    matches!(id, 0x01..=0x03 | 0x08 | 0x09 | 0x0B | 0x11..=0x13 | 0x15..=0x19 | 0x1A | 0x1C | 0x1F | 0x21..=0x2A)
}

fn allowed(id: u8, ctx: Ctx) -> bool {
    use Ctx::*;
    match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => matches!(ctx, Publish | Will),
        0x0B => matches!(ctx, Publish | Subscribe),
        0x11 => matches!(ctx, Connect | ConnAck | Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => ctx == ConnAck,
        0x15 | 0x16 => matches!(ctx, Connect | ConnAck | Auth),
        0x17 | 0x19 => ctx == Connect,
        0x18 => ctx == Will,
        0x1C => matches!(ctx, ConnAck | Disconnect),
        0x1F => matches!(ctx, ConnAck | Ack | SubAck | Disconnect | Auth),
        0x21 | 0x22 | 0x27 => matches!(ctx, Connect | ConnAck),
        0x23 => ctx == Publish,
        0x26 => true,
        _ => false,
    }
}

impl Properties {
    /// True when no property is set (then a v5 encoder writes a zero length).
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    pub(crate) fn decode(r: &mut Reader, ctx: Ctx) -> Result<Properties, DecodeError> {
        let len = r.varint()? as usize;
        let mut r = r.sub(len)?;
        let mut p = Properties::default();
        macro_rules! once {
            ($field:expr, $val:expr) => {{
                if $field.is_some() {
                    return Err(DecodeError::Protocol("property appears twice"));
                }
                $field = Some($val);
            }};
        }
        while r.remaining() > 0 {
            let id = r.varint()?;
            // An identifier MQTT 5 does not define leaves the rest unparseable (its value's
            // length is unknown), and one the packet type does not allow is, in the words of
            // MQTT 5 §2.2.2.2, "an Identifier which is not valid for its packet type": both
            // make a Malformed Packet (0x81). (Mosquitto answers 0x81 for a misplaced property
            // in SUBSCRIBE and UNSUBSCRIBE but 0x82 in PUBLISH, the acknowledgements and
            // DISCONNECT; the specification makes no such difference.)
            let id = match u8::try_from(id) {
                Ok(id) if allowed(id, ctx) => id,
                Ok(id) if defined(id) => {
                    return Err(DecodeError::Malformed("property not allowed in this packet type"))
                }
                _ => return Err(DecodeError::Malformed("unknown property identifier")),
            };
            match id {
                0x01 => {
                    let v = r.u8()?;
                    if v > 1 {
                        return Err(DecodeError::Protocol("payload format indicator must be 0 or 1"));
                    }
                    once!(p.payload_format_indicator, v)
                }
                0x02 => once!(p.message_expiry_interval, r.u32()?),
                0x03 => once!(p.content_type, r.string()?),
                0x08 => {
                    let t = r.string()?;
                    if crate::topic::valid_name(&t).is_err() {
                        return Err(DecodeError::Protocol("response topic contains wildcards"));
                    }
                    once!(p.response_topic, t)
                }
                0x09 => once!(p.correlation_data, r.binary()?),
                0x0B => {
                    let v = r.varint()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("subscription identifier 0"));
                    }
                    if ctx == Ctx::Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::Protocol("property appears twice"));
                    }
                    p.subscription_identifiers.push(v);
                }
                0x11 => once!(p.session_expiry_interval, r.u32()?),
                0x12 => once!(p.assigned_client_identifier, r.string()?),
                0x13 => once!(p.server_keep_alive, r.u16()?),
                0x15 => once!(p.authentication_method, r.string()?),
                0x16 => once!(p.authentication_data, r.binary()?),
                0x17 => {
                    let v = r.u8()?;
                    if v > 1 {
                        return Err(DecodeError::Protocol("request problem information must be 0 or 1"));
                    }
                    once!(p.request_problem_information, v)
                }
                0x18 => once!(p.will_delay_interval, r.u32()?),
                0x19 => {
                    let v = r.u8()?;
                    if v > 1 {
                        return Err(DecodeError::Protocol("request response information must be 0 or 1"));
                    }
                    once!(p.request_response_information, v)
                }
                0x1A => once!(p.response_information, r.string()?),
                0x1C => once!(p.server_reference, r.string()?),
                0x1F => once!(p.reason_string, r.string()?),
                0x21 => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("receive maximum 0"));
                    }
                    once!(p.receive_maximum, v)
                }
                0x22 => once!(p.topic_alias_maximum, r.u16()?),
                0x23 => once!(p.topic_alias, r.u16()?),
                0x24 => once!(p.maximum_qos, r.u8()?),
                0x25 => once!(p.retain_available, r.u8()?),
                0x26 => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v));
                }
                0x27 => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("maximum packet size 0"));
                    }
                    once!(p.maximum_packet_size, v)
                }
                0x28 => once!(p.wildcard_subscription_available, r.u8()?),
                0x29 => once!(p.subscription_identifier_available, r.u8()?),
                0x2A => once!(p.shared_subscription_available, r.u8()?),
                // allowed() admits only the identifiers above.
                _ => return Err(DecodeError::Malformed("unknown property identifier")),
            }
        }
        Ok(p)
    }

    /// Length of the encoded property block without its own length prefix.
    pub(crate) fn body_len(&self) -> usize {
        let s = |o: &Option<ByteString>| o.as_ref().map_or(0, |v| 3 + v.len());
        let b = |o: &Option<Bytes>| o.as_ref().map_or(0, |v| 3 + v.len());
        let n = |o: bool, n: usize| if o { 1 + n } else { 0 };
        let mut len = n(self.payload_format_indicator.is_some(), 1)
            + n(self.message_expiry_interval.is_some(), 4)
            + s(&self.content_type)
            + s(&self.response_topic)
            + b(&self.correlation_data)
            + n(self.session_expiry_interval.is_some(), 4)
            + s(&self.assigned_client_identifier)
            + n(self.server_keep_alive.is_some(), 2)
            + s(&self.authentication_method)
            + b(&self.authentication_data)
            + n(self.request_problem_information.is_some(), 1)
            + n(self.will_delay_interval.is_some(), 4)
            + n(self.request_response_information.is_some(), 1)
            + s(&self.response_information)
            + s(&self.server_reference)
            + s(&self.reason_string)
            + n(self.receive_maximum.is_some(), 2)
            + n(self.topic_alias_maximum.is_some(), 2)
            + n(self.topic_alias.is_some(), 2)
            + n(self.maximum_qos.is_some(), 1)
            + n(self.retain_available.is_some(), 1)
            + n(self.maximum_packet_size.is_some(), 4)
            + n(self.wildcard_subscription_available.is_some(), 1)
            + n(self.subscription_identifier_available.is_some(), 1)
            + n(self.shared_subscription_available.is_some(), 1);
        for id in &self.subscription_identifiers {
            len += 1 + varint_len(*id as usize);
        }
        for (k, v) in &self.user_properties {
            len += 1 + 2 + k.len() + 2 + v.len();
        }
        len
    }

    /// Length including the variable-byte length prefix.
    pub(crate) fn encoded_len(&self) -> usize {
        let body = self.body_len();
        varint_len(body) + body
    }

    /// Appends the property block. Fails (leaving part of it written; callers truncate) when
    /// a string or binary value is longer than 65,535 bytes.
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        put_varint(out, self.body_len());
        macro_rules! put {
            ($id:expr, $opt:expr, $put:ident) => {
                if let Some(v) = &$opt {
                    out.put_u8($id);
                    out.$put(*v);
                }
            };
        }
        macro_rules! put_s {
            ($id:expr, $opt:expr) => {
                if let Some(v) = &$opt {
                    out.put_u8($id);
                    put_str(out, v)?;
                }
            };
        }
        macro_rules! put_b {
            ($id:expr, $opt:expr) => {
                if let Some(v) = &$opt {
                    out.put_u8($id);
                    put_binary(out, v)?;
                }
            };
        }
        put!(0x01, self.payload_format_indicator, put_u8);
        put!(0x02, self.message_expiry_interval, put_u32);
        put_s!(0x03, self.content_type);
        put_s!(0x08, self.response_topic);
        put_b!(0x09, self.correlation_data);
        for id in &self.subscription_identifiers {
            out.put_u8(0x0B);
            put_varint(out, *id as usize);
        }
        put!(0x11, self.session_expiry_interval, put_u32);
        put_s!(0x12, self.assigned_client_identifier);
        put!(0x13, self.server_keep_alive, put_u16);
        put_s!(0x15, self.authentication_method);
        put_b!(0x16, self.authentication_data);
        put!(0x17, self.request_problem_information, put_u8);
        put!(0x18, self.will_delay_interval, put_u32);
        put!(0x19, self.request_response_information, put_u8);
        put_s!(0x1A, self.response_information);
        put_s!(0x1C, self.server_reference);
        put_s!(0x1F, self.reason_string);
        // Topic Alias Maximum before Receive Maximum, as Mosquitto writes its CONNACK (order is
        // free in MQTT 5): byte-for-byte comparisons in Mosquitto's own tests then hold.
        put!(0x22, self.topic_alias_maximum, put_u16);
        put!(0x21, self.receive_maximum, put_u16);
        put!(0x23, self.topic_alias, put_u16);
        put!(0x24, self.maximum_qos, put_u8);
        put!(0x25, self.retain_available, put_u8);
        for (k, v) in &self.user_properties {
            out.put_u8(0x26);
            put_str(out, k)?;
            put_str(out, v)?;
        }
        put!(0x27, self.maximum_packet_size, put_u32);
        put!(0x28, self.wildcard_subscription_available, put_u8);
        put!(0x29, self.subscription_identifier_available, put_u8);
        put!(0x2A, self.shared_subscription_available, put_u8);
        Ok(())
    }
}
