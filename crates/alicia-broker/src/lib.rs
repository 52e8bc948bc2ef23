//! Alicia's embedded MQTT 3.1.1 and 5.0 broker.
//!
//! The broker knows MQTT and nothing of Alicia's envelopes or services. Its parts:
//! - [`connection`]: one task per client, the protocol state machine;
//! - [`index`]: the subscription trie, read lock-free by publishers;
//! - [`outbox`]: per-session delivery queues, the only place publishers and subscribers meet;
//! - [`session`]: state that survives reconnects; [`retained`]: retained messages;
//! - [`broker`]: shared state, routing, the client registry and the accept loop.
//!
//! See `ARCHITECTURE.md` at the repository root for the path of one PUBLISH.

pub mod auth;
mod broker;
pub mod config;
mod connection;
pub mod index;
pub mod listener;
pub mod message;
mod metrics;
pub mod outbox;
pub mod persist;
pub mod retained;
pub mod security;
pub mod session;
pub mod stats;
pub mod sys;
mod ws;

pub use alicia_codec::reason;
pub use broker::Broker;
pub use config::Config;
pub use listener::{ConnInfo, Listener, ListenerConfig, PreparedTls, TlsFiles, TlsReloader, Transport};
pub use security::{
    Access, AllowAll, AuthMethod, Credentials, Identity, Refusal, Security, AUTH_PROPERTY, USER_PROPERTY,
};
pub use stats::Stats;
