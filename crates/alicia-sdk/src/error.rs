//! What can go wrong when using the bus.

use std::time::Duration;

use alicia_envelope::{Destination, EnvelopeError, MessageId};

/// Errors of the SDK's operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The configuration cannot work (bad prefix, name, delays, unreadable password file).
    #[error("invalid service configuration: {0}")]
    Config(String),
    /// An envelope to be sent is not valid.
    #[error("invalid envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// No response arrived in time. Either nobody serves the destination, or it is slow or
    /// down; the request's ttl was set to the timeout, so a late handler drops it.
    #[error("no response from `{destination}` to request {message_id} within {timeout:?}")]
    Timeout {
        /// Where the request went.
        destination: Destination,
        /// The request's `message_id`.
        message_id: MessageId,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The service was not connected to the broker during the whole timeout (a request was
    /// therefore not sent).
    #[error("not connected to the broker at {broker} (waited {waited:?})")]
    NotConnected {
        /// `host:port` of the broker.
        broker: String,
        /// How long the caller waited for a connection.
        waited: Duration,
    },
    /// The broker refused this client's login (wrong user name or password, not authorised).
    #[error("the broker at {broker} refused the login: {reason}")]
    LoginRefused {
        /// `host:port` of the broker.
        broker: String,
        /// What the broker answered.
        reason: String,
    },
    /// Nothing answered at the broker's address (nothing listens there, no route, no name).
    #[error("cannot reach the broker at {broker}: {reason}")]
    Unreachable {
        /// `host:port` of the broker.
        broker: String,
        /// What the network said.
        reason: String,
    },
    /// The destination answered with an error response.
    #[error("`{from}` refused request {message_id}: {code}: {message}")]
    Remote {
        /// The responder (`source` of the response).
        from: String,
        /// The request's `message_id`.
        message_id: MessageId,
        /// The error code of the response.
        code: String,
        /// The error message of the response.
        message: String,
    },
    /// An envelope could not be protected (encrypted or signed) for sending.
    #[error("cannot protect the envelope: {0}")]
    Security(String),
    /// The service was shut down; its connection is gone.
    #[error("the bus connection is closed (the service was shut down)")]
    Closed,
}
