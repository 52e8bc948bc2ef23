//! Alicia's embedded MQTT 3.1.1 and 5.0 broker.
//!
//! The broker knows MQTT and nothing of Alicia's envelopes or services. Its parts, from the
//! socket inwards:
//! - `listener` (TCP, TLS, WebSockets) hands each socket to `connection`, one task per client,
//!   which does the waiting and the I/O around `protocol`, the synchronous protocol state
//!   machine (bytes in, state changes and bytes out);
//! - `shared` is the state all connections share and what they do with it (routing, wills,
//!   parking and expiring sessions); it imports neither of the above;
//! - `index` (the subscription trie, read lock-free by publishers), `outbox` (per-session
//!   queues with backpressure, the only place publishers and subscribers meet), `session`
//!   (state that survives reconnects), `retained`, `persist` (the store), `sys` (`$SYS`);
//! - [`Broker`] is the handle the binary holds; [`Security`] is how it decides who may do
//!   what; [`auth`] reads Mosquitto's password, ACL and configuration files.
//!
//! The public surface is what the binary and the tests use; everything else is private. See
//! `ARCHITECTURE.md` at the repository root for the path of one PUBLISH.

// Bytes from the network must never truncate silently or panic: casts that can lose bits,
// unwrap and expect are errors here (tests excepted); each exception says why, locally.
#![warn(clippy::cast_possible_truncation, clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
mod broker;
mod config;
mod connection;
mod index;
mod info;
mod listener;
mod message;
mod metrics;
mod outbox;
mod persist;
mod protocol;
mod retained;
mod security;
mod session;
mod shared;
mod stats;
mod sys;
mod ws;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use alicia_codec::reason;
pub use broker::Broker;
pub use config::Config;
pub use info::ConnInfo;
pub use listener::{server_config, Listener, ListenerConfig, PreparedTls, TlsError, TlsFiles, TlsReloader, Transport};
pub use security::{
    Access, AllowAll, AuthMethod, Credentials, Identity, Refusal, Security, AUTH_PROPERTY, USER_PROPERTY,
};
pub use stats::Stats;
