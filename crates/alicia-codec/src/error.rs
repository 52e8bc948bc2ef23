//! Codec errors. Every decode error knows the MQTT 5 reason code the broker must send back.

use crate::reason;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet grammar (reason 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The bytes parse but break a protocol rule (reason 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is larger than the negotiated maximum (reason 0x95).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced packet size.
        size: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// CONNECT names a protocol we do not speak (CONNACK 0x84 / 3.1.1 return code 1).
    #[error("unsupported protocol name or level")]
    UnsupportedProtocol,
}

impl DecodeError {
    /// The MQTT 5 reason code that describes this error in a DISCONNECT (or CONNACK).
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::Malformed(_) => reason::MALFORMED_PACKET,
            DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            DecodeError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol => reason::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded packet would exceed the peer's maximum packet size.
    #[error("packet of {size} bytes exceeds the peer's maximum of {max}")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Peer's maximum.
        max: usize,
    },
    /// The remaining length does not fit the 4-byte variable integer.
    #[error("packet too large for MQTT")]
    Overflow,
    /// A string or binary field is longer than the 65,535 bytes its 16-bit length can say.
    #[error("a field of {len} bytes is longer than MQTT's 65,535")]
    FieldTooLong {
        /// The field's length.
        len: usize,
    },
}
