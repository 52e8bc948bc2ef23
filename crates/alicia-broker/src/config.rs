//! Broker settings. Defaults follow Mosquitto where it has one, so a user switching sees the
//! same behaviour.

/// Settings of one broker instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest keep-alive a client may use. A v5 client asking for more (or for none) is told
    /// this value as Server Keep Alive.
    pub max_keepalive: u16,
    /// Largest packet accepted from a client, in bytes (0 = protocol maximum).
    pub max_packet_size: u32,
    /// How many unacknowledged QoS 2 PUBLISHes a client may have towards the broker
    /// (Receive Maximum in CONNACK). Exceeding it is a protocol violation (0x93).
    pub receive_maximum: u16,
    /// QoS 1/2 messages in flight towards a client (an MQTT 5 client's own Receive Maximum
    /// lowers it). Mosquitto's default is 20; Alicia's 256 keeps a fast subscriber busy across
    /// acknowledgement round trips, at the cost of a few bytes per in-flight message.
    pub max_inflight: u16,
    /// Largest PUBLISH payload accepted, in bytes (0 = no limit; Mosquitto's
    /// `message_size_limit`). MQTT 5 clients that exceed it are disconnected with 0x95; 3.1.1
    /// clients have the message acknowledged and dropped.
    pub message_size_limit: usize,
    /// Messages queued for a session whose client is offline (Mosquitto's
    /// `max_queued_messages`).
    pub max_queued: usize,
    /// Messages waiting for an online client's connection to write them. When a queue reaches
    /// it, publishers to that client are slowed down (the broker stops reading from them until
    /// half of it is left) rather than anything acknowledged being dropped; QoS 0 messages
    /// beyond it are dropped. This bounds memory when a subscriber reads slower than
    /// publishers write.
    pub max_buffered: usize,
    /// Topic aliases a v5 client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// Largest Session Expiry Interval the broker grants (seconds).
    pub max_session_expiry: u32,
    /// Simultaneous client connections allowed (0 = no limit).
    pub max_connections: usize,
    /// Most levels a topic name or filter may have (0 = no limit). Deeper subscriptions get
    /// SUBACK 0x8F (3.1.1: 0x80); a deeper PUBLISH gets PUBACK/PUBREC 0x90 (3.1.1: the
    /// connection is closed, as Mosquitto does). Mosquitto's fixed limit is 200.
    pub max_topic_levels: usize,
    /// Let clients publish to `$SYS/...`. Off by default: those topics are the broker's, and a
    /// client's PUBLISH there is refused (v5 PUBACK/PUBREC 0x87; 3.1.1 acknowledged and dropped),
    /// as in Mosquitto. When on, the ACL decides as for any topic.
    pub allow_sys_publish: bool,
    /// Topic filters whose subscription is refused (SUBACK 0x80).
    pub deny_subscribe: Vec<String>,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout: u64,
    /// Directory of the persistence store; `None` keeps everything in memory only.
    pub persistence: Option<std::path::PathBuf>,
    /// Seconds between full rewrites of the store (Mosquitto's `autosave_interval`).
    pub autosave_interval: u64,
    /// Stamp every application message a client publishes (PUBLISH and its will) with who sent
    /// it: the MQTT 5 user properties [`USER_PROPERTY`](crate::USER_PROPERTY) (`alicia-user`,
    /// the authenticated user name; absent for an anonymous client) and
    /// [`AUTH_PROPERTY`](crate::AUTH_PROPERTY) (`alicia-auth`: `certificate`, `token`,
    /// `password` or `anonymous`). User properties with either name that the client set itself
    /// are removed first, so no client can forge them. Off by default (a plain MQTT broker
    /// leaves user properties alone); `alicia up` turns it on for its services.
    pub identity_properties: bool,
    /// Tell MQTT 5 clients why in a Reason String when the broker refuses a connection or
    /// closes one (`"topic alias out of range"`). On by default; Mosquitto sends none, and
    /// Mosquitto's byte-for-byte tests need them off.
    pub reason_strings: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_keepalive: 65535,
            max_packet_size: 0,
            receive_maximum: 100,
            max_inflight: 256,
            max_queued: 1000,
            message_size_limit: 0,
            max_buffered: 100_000,
            topic_alias_maximum: 100,
            max_session_expiry: u32::MAX,
            max_connections: 0,
            max_topic_levels: 200,
            allow_sys_publish: false,
            deny_subscribe: Vec::new(),
            connect_timeout: 10,
            persistence: None,
            autosave_interval: 1800,
            identity_properties: false,
            reason_strings: true,
        }
    }
}
