//! Sans-I/O MQTT 3.1.1 and 5.0 packet codec.
//!
//! This crate turns bytes into [`Packet`]s and back, and nothing else: it owns no socket, no
//! session, no clock. The broker (and the `alicia bench` load tool) drive it from their own I/O
//! loops. Keeping it pure makes it cheap to fuzz (`fuzz/`) and easy to reason about.
//!
//! Why our own codec instead of a crate: the broker must answer every malformed packet with the
//! *exact* MQTT 5 reason code (0x81 malformed, 0x82 protocol error, 0x95 too large, ...), and it
//! wants to encode an outgoing PUBLISH straight into a per-connection write buffer with a payload
//! that is shared (`Bytes`) across all subscribers. One packet type tree serves both protocol
//! versions, so the broker's state machine is written once. See `ARCHITECTURE.md`.
//!
//! Decoding is zero-copy: strings are [`ByteString`]s and payloads are [`Bytes`] that point into
//! the frame that was read from the socket.

// Bytes from the network must never truncate silently or panic: casts that can lose bits,
// unwrap and expect are errors here (tests excepted); each exception says why, locally.
#![warn(clippy::cast_possible_truncation, clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod decode;
mod encode;
mod error;
mod packet;
mod props;
pub mod topic;

pub use bytes::{Bytes, BytesMut};
pub use bytestring::ByteString;
pub use decode::{decode, decode_body, peek_frame, Frame};
pub use encode::{encode, encode_publish, publish_len, PublishOut};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use props::Properties;

/// Reason codes of MQTT 5.0 (section 2.4). v3.1.1 CONNACK return codes are derived from these
/// by [`reason::v3_connack`].
#[allow(missing_docs)]
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const UNSPECIFIED_ERROR: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BANNED: u8 = 0x8A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTH_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_ID_IN_USE: u8 = 0x91;
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const USE_ANOTHER_SERVER: u8 = 0x9C;
    pub const SERVER_MOVED: u8 = 0x9D;
    pub const SHARED_SUBS_NOT_SUPPORTED: u8 = 0x9E;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
    pub const MAXIMUM_CONNECT_TIME: u8 = 0xA0;
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBS_NOT_SUPPORTED: u8 = 0xA2;

    /// Maps an MQTT 5 CONNACK reason code to the closest v3.1.1 CONNACK return code.
    pub fn v3_connack(code: u8) -> u8 {
        match code {
            SUCCESS => 0,
            UNSUPPORTED_PROTOCOL_VERSION => 1,
            CLIENT_ID_NOT_VALID => 2,
            SERVER_UNAVAILABLE
            | SERVER_BUSY
            | SERVER_SHUTTING_DOWN
            | USE_ANOTHER_SERVER
            | SERVER_MOVED
            | CONNECTION_RATE_EXCEEDED
            | QUOTA_EXCEEDED => 3,
            BAD_USERNAME_OR_PASSWORD | BAD_AUTH_METHOD => 4,
            _ => 5,
        }
    }
}
