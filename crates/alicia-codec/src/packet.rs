//! The packet types. One tree for both protocol versions: fields that exist only in MQTT 5
//! (reason codes, properties) are simply left at their defaults for 3.1.1.

use bytes::Bytes;
use bytestring::ByteString;

use crate::props::Properties;

/// Protocol version negotiated by CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1 (`MQIsdp`, level 3); handled like 3.1.1.
    V31,
    /// MQTT 3.1.1 (level 4).
    V311,
    /// MQTT 5.0 (level 5).
    V5,
}

impl Protocol {
    /// Whether this is MQTT 5.
    pub fn is_v5(self) -> bool {
        self == Protocol::V5
    }
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            Protocol::V31 => 3,
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        }
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// From the two wire bits; `None` for the reserved value 3.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// CONNECT
    Connect(Box<Connect>),
    /// CONNACK
    ConnAck(ConnAck),
    /// PUBLISH
    Publish(Publish),
    /// PUBACK
    PubAck(Ack),
    /// PUBREC
    PubRec(Ack),
    /// PUBREL
    PubRel(Ack),
    /// PUBCOMP
    PubComp(Ack),
    /// SUBSCRIBE
    Subscribe(Subscribe),
    /// SUBACK
    SubAck(SubAck),
    /// UNSUBSCRIBE
    Unsubscribe(Unsubscribe),
    /// UNSUBACK
    UnsubAck(SubAck),
    /// PINGREQ
    PingReq,
    /// PINGRESP
    PingResp,
    /// DISCONNECT
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only)
    Auth(Auth),
}

impl Packet {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}

/// The will message carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Will {
    /// Topic to publish on.
    pub topic: ByteString,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Will properties (v5): will delay, expiry, content type, ...
    pub properties: Properties,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct Connect {
    /// Protocol version.
    pub protocol: Protocol,
    /// Clean session (3.1.1) / clean start (5).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: ByteString,
    /// Will message.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<ByteString>,
    /// Password.
    pub password: Option<Bytes>,
    /// CONNECT properties (v5).
    pub properties: Properties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnAck {
    /// Session present flag.
    pub session_present: bool,
    /// MQTT 5 reason code; for 3.1.1 it is mapped with [`crate::reason::v3_connack`].
    pub reason: u8,
    /// CONNACK properties (v5).
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Publish {
    /// Duplicate delivery flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name; may be empty in v5 when a topic alias is used.
    pub topic: ByteString,
    /// Packet identifier (non-zero for QoS 1 and 2, 0 for QoS 0).
    pub packet_id: u16,
    /// Properties (v5).
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ack {
    /// Packet identifier.
    pub packet_id: u16,
    /// Reason code (v5); 0 = success.
    pub reason: u8,
    /// Properties (v5).
    pub properties: Properties,
}

impl Ack {
    /// A plain success acknowledgement.
    pub fn new(packet_id: u16) -> Ack {
        Ack { packet_id, ..Ack::default() }
    }
}

/// Retain handling subscription option (v5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at subscribe time.
    #[default]
    SendAtSubscribe = 0,
    /// Send retained messages only if the subscription did not exist.
    SendIfNew = 1,
    /// Never send retained messages at subscribe time.
    DoNotSend = 2,
}

/// Subscription options of one topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (v5): do not deliver the client's own publications.
    pub no_local: bool,
    /// Retain As Published (v5).
    pub retain_as_published: bool,
    /// Retain Handling (v5).
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (v5): subscription identifier, user properties.
    pub properties: Properties,
    /// Topic filters with their options.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

/// SUBACK and UNSUBACK.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubAck {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (v5).
    pub properties: Properties,
    /// One reason code per filter. For UNSUBACK in 3.1.1 these are not sent.
    pub reasons: Vec<u8>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// Properties (v5).
    pub properties: Properties,
    /// Topic filters.
    pub filters: Vec<ByteString>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Disconnect {
    /// Reason code (v5).
    pub reason: u8,
    /// Properties (v5): session expiry, reason string, server reference.
    pub properties: Properties,
}

impl Disconnect {
    /// A DISCONNECT with a reason code and a human-readable reason string.
    pub fn with_reason(reason: u8, why: &str) -> Disconnect {
        let mut properties = Properties::default();
        if !why.is_empty() {
            properties.reason_string = Some(ByteString::from(why));
        }
        Disconnect { reason, properties }
    }
}

/// AUTH (v5).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Auth {
    /// Reason code.
    pub reason: u8,
    /// Properties: authentication method and data.
    pub properties: Properties,
}
