//! The MQTT protocol state machine of one connection, without I/O.
//!
//! Bytes in, state changes and bytes out: the connection task (`connection`) reads from its
//! socket into [`Core::rbuf`], calls [`Core::input`], and writes whatever [`Core::wbuf`] then
//! holds. Nothing here awaits, reads a socket or starts a timer, so the whole state machine is
//! unit-tested by feeding bytes and reading the bytes it wrote (see the tests below). The only
//! waits of the protocol (for an old connection to give up its client id, for room in a
//! subscriber's queue, for keep-alive) are the driver's; this module tells it what to wait
//! for.
//!
//! Why the split: rumqttd keeps framing in `link/network.rs` and orchestration in
//! `link/remote.rs`; the same split here keeps the 1,000 lines of protocol rules readable and
//! lets every reason code be tested without a socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_codec::{
    decode, encode, encode_publish, peek_frame, publish_len, reason, topic, Ack, ByteString, BytesMut, ConnAck,
    Connect, DecodeError, Disconnect, EncodeError, Packet, Properties, Protocol, Publish, PublishOut, QoS,
    RetainHandling, SubAck, Subscribe, Unsubscribe, Will,
};

use crate::index::Sub;
use crate::info::{ConnInfo, Slot};
use crate::message::{Delivery, Message};
use crate::outbox::SessionHandle;
use crate::persist::Event;
use crate::security::{Access, AuthMethod, Credentials, Identity, AUTH_PROPERTY, USER_PROPERTY};
use crate::session::{Inflight, SessionState, Stage, Subscription};
use crate::shared::{delivery_properties, Batch, Entry, Live, Shared};

/// Stop encoding deliveries once the write buffer holds this much; the driver writes it first.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// DISCONNECT from the client; `will` is true for reason 0x04.
    Disconnect {
        /// Whether the client asked for its will to be published.
        will: bool,
    },
    /// The socket closed or failed.
    Closed,
    /// The client broke the protocol: DISCONNECT with this reason (v5), then close.
    Violation(u8, &'static str),
    /// Keep-alive expired.
    KeepAlive,
    /// Another connection took over the client id.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
}

/// A CONNECT that passed every check, with what the broker grants.
pub(crate) struct Admission {
    protocol: Protocol,
    client_id: Arc<str>,
    username: Option<Arc<str>>,
    method: AuthMethod,
    clean_start: bool,
    will: Option<Will>,
    stamp: Option<Vec<(ByteString, ByteString)>>,
    keep_alive: u16,
    expiry: u32,
    /// CONNACK properties so far (assigned client id, server keep alive, ...).
    props: Properties,
    client_receive_max: usize,
    client_max_packet: usize,
    client_alias_max: u16,
    problem_info: bool,
    peer: SocketAddr,
    slot: Option<Slot>,
}

impl Admission {
    /// The client id the connection claims.
    pub(crate) fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }
}

/// The CONNACK for a client whose client id is still held by a connection that did not end
/// in time: Server Busy (3.1.1: server unavailable).
pub(crate) fn busy(shared: &Shared, adm: &Admission) -> Refused {
    refusal(shared, adm.protocol, reason::SERVER_BUSY, "previous connection did not end")
}

/// A refusal to put on the wire before closing (possibly nothing at all).
pub(crate) type Refused = BytesMut;

/// The refusal CONNACK for `code`, in the client's protocol.
fn refusal(shared: &Shared, protocol: Protocol, code: u8, why: &str) -> Refused {
    let mut out = BytesMut::new();
    let mut ack = ConnAck { reason: code, ..ConnAck::default() };
    if protocol.is_v5() && shared.config.reason_strings {
        ack.properties.reason_string = Some(why.into());
    }
    // A CONNACK of a few bytes always encodes.
    let _ = encode(&Packet::ConnAck(ack), protocol, &mut out, 0);
    out
}

/// Number of levels of a topic name or filter.
fn levels(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

/// Whether `topic` is beyond the configured depth.
fn too_deep(shared: &Shared, topic: &str) -> bool {
    let max = shared.config.max_topic_levels;
    max > 0 && levels(topic) > max
}

/// Topics only the broker publishes on.
fn reserved(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Checks a CONNECT: protocol rules, limits, authentication, the will. On success the client
/// may claim its client id ([`claim`]); on failure the returned bytes go out before closing.
pub(crate) fn admit(shared: &Shared, c: Connect, info: &ConnInfo) -> Result<Admission, Refused> {
    let protocol = c.protocol;
    let v5 = protocol.is_v5();
    let peer = info.peer;
    let refuse = |code: u8, why: &str| refusal(shared, protocol, code, why);
    if c.properties.authentication_method.is_some() {
        return Err(refuse(reason::BAD_AUTH_METHOD, "enhanced authentication is not supported"));
    }
    let mut props = Properties::default();
    let client_id: Arc<str> = if c.client_id.is_empty() {
        // MQTT 3.1 requires a client id; 3.1.1 allows none only with a clean session.
        if protocol == Protocol::V31 || (!v5 && !c.clean_start) {
            return Err(refuse(reason::CLIENT_ID_NOT_VALID, "a client identifier is required"));
        }
        let id = format!("alicia-{:016x}", shared.new_session_id() ^ random_u64());
        if v5 {
            props.assigned_client_identifier = Some(ByteString::from(id.as_str()));
        }
        Arc::from(id)
    } else {
        Arc::from(&*c.client_id)
    };
    let client_max_packet = c.properties.maximum_packet_size.map_or(0, |m| m as usize);
    let slot = match &info.slots {
        Some(slots) => match slots.take() {
            Some(slot) => Some(slot),
            None => return Err(refuse(reason::QUOTA_EXCEEDED, "listener connection limit reached")),
        },
        None => None,
    };
    let max_conn = shared.config.max_connections as u64;
    if max_conn > 0 && shared.stats.clients_connected.load(Ordering::Relaxed) >= max_conn {
        return Err(refuse(reason::QUOTA_EXCEEDED, "too many connections"));
    }
    if let Some(w) = &c.will {
        if w.topic.starts_with("$share/") {
            return Err(refuse(reason::PROTOCOL_ERROR, "a will topic cannot be a shared subscription"));
        }
        if too_deep(shared, &w.topic) {
            return Err(refuse(reason::TOPIC_NAME_INVALID, "will topic has too many levels"));
        }
        if reserved(&w.topic) && !shared.config.allow_sys_publish {
            return Err(refuse(reason::NOT_AUTHORIZED, "will topic is reserved for the broker"));
        }
        // The will is published later as a message like any other: one no PUBLISH of its size
        // would be accepted for is refused now, as Mosquitto does (v5 0x95; 3.1.1 code 5).
        let limit = shared.config.message_size_limit;
        if limit > 0 && w.payload.len() > limit {
            return Err(refuse(reason::PACKET_TOO_LARGE, "will payload exceeds message_size_limit"));
        }
    }

    let identity = {
        let security = shared.security.load();
        let creds = Credentials {
            client_id: &client_id,
            username: c.username.as_deref(),
            password: c.password.as_deref(),
            info,
        };
        let identity = match security.authenticate(&creds) {
            Ok(u) => u,
            Err(r) => {
                tracing::info!(client = %client_id, %peer, why = %r.why, "connection refused");
                return Err(refuse(r.reason, &r.why));
            }
        };
        if let Some(w) = &c.will {
            if !security.authorize(&client_id, identity.username.as_deref(), Access::Write, &w.topic) {
                tracing::info!(client = %client_id, %peer, topic = %w.topic, "will topic not authorised");
                return Err(refuse(reason::NOT_AUTHORIZED, "will topic not authorised"));
            }
        }
        identity
    };
    let stamp = shared.config.identity_properties.then(|| identity_stamp(&identity));
    let mut will = c.will;
    if let (Some(w), Some(stamp)) = (&mut will, &stamp) {
        apply_stamp(&mut w.properties, stamp);
    }

    // Keep alive: a v5 client asking for more than allowed (or for none) is told the maximum.
    let max_ka = shared.config.max_keepalive;
    let mut keep_alive = c.keep_alive;
    if v5 && (keep_alive > max_ka || (keep_alive == 0 && max_ka < u16::MAX)) {
        keep_alive = max_ka;
        props.server_keep_alive = Some(max_ka);
    }
    let expiry = if v5 {
        let asked = c.properties.session_expiry_interval.unwrap_or(0);
        let granted = asked.min(shared.config.max_session_expiry);
        if granted != asked {
            props.session_expiry_interval = Some(granted);
        }
        granted
    } else if c.clean_start {
        0
    } else {
        u32::MAX
    };
    if v5 {
        props.receive_maximum = Some(shared.config.receive_maximum);
        props.topic_alias_maximum = Some(shared.config.topic_alias_maximum);
        if shared.config.max_packet_size > 0 {
            props.maximum_packet_size = Some(shared.config.max_packet_size);
        }
    }
    let problem_info = c.properties.request_problem_information != Some(0);
    // The CONNACK must fit the client's Maximum Packet Size (MQTT-3.1.2-24); if not even the
    // bare one does, nothing can be said to this client: close.
    if client_max_packet > 0 {
        let mut probe = BytesMut::new();
        let ack = Packet::ConnAck(ConnAck { session_present: false, reason: 0, properties: props.clone() });
        if encode(&ack, protocol, &mut probe, client_max_packet).is_err() {
            tracing::debug!(client = %client_id, %peer, max = client_max_packet, "CONNACK exceeds the client's maximum packet size");
            return Err(BytesMut::new());
        }
    }
    let inflight = shared.config.max_inflight.max(1);
    let client_receive_max = if v5 { c.properties.receive_maximum.unwrap_or(u16::MAX).min(inflight) } else { inflight };
    Ok(Admission {
        protocol,
        client_id,
        username: identity.username.map(Arc::<str>::from),
        method: identity.method,
        clean_start: c.clean_start,
        will,
        stamp,
        keep_alive,
        expiry,
        props,
        client_receive_max: usize::from(client_receive_max),
        client_max_packet,
        client_alias_max: c.properties.topic_alias_maximum.unwrap_or(0),
        problem_info,
        peer,
        slot,
    })
}

/// The outcome of [`claim`].
pub(crate) enum Claim {
    /// The client id is this connection's now.
    Taken(Claimed),
    /// A live connection holds it; it has been asked to end. Wait for its `gone` and retry.
    Busy(Arc<Live>),
}

/// A client id just taken, with its session.
pub(crate) struct Claimed {
    session: SessionState,
    present: bool,
    generation: u64,
}

/// Takes the client id for `live`: resumes the parked session (unless the client asked for a
/// clean start), or starts a fresh one. A live connection holding the id is told to end.
pub(crate) fn claim(shared: &Shared, adm: &Admission, live: &Arc<Live>) -> Claim {
    let client_id = &adm.client_id;
    let mut reg = shared.registry.lock();
    let (resumed, stale, generation) = match reg.get_mut(client_id) {
        Some(e) => {
            if let Some(old) = &e.active {
                old.kick.notify_one();
                return Claim::Busy(old.clone());
            }
            e.generation += 1;
            e.active = Some(live.clone());
            let parked = e.parked.take();
            if adm.clean_start {
                (None, parked, e.generation)
            } else {
                (parked, None, e.generation)
            }
        }
        None => (None, None, 1),
    };
    let (session, present) = match resumed {
        Some(s) => (s, true),
        None => (SessionState::new(shared.new_handle(client_id.clone())), false),
    };
    match reg.get_mut(client_id) {
        Some(e) => e.handle = session.handle.clone(),
        None => {
            let entry = Entry { generation, active: Some(live.clone()), parked: None, handle: session.handle.clone() };
            reg.insert(client_id.clone(), entry);
        }
    }
    drop(reg);
    if let Some(old) = stale {
        shared.end_session(client_id, &old);
    }
    Claim::Taken(Claimed { session, present, generation })
}

/// Whether `live` still holds `client_id` (a connection waiting to take over checks this after
/// registering for `live.gone`, so it cannot miss the signal).
pub(crate) fn still_held(shared: &Shared, client_id: &str, live: &Arc<Live>) -> bool {
    let reg = shared.registry.lock();
    reg.get(client_id).and_then(|e| e.active.as_ref()).is_some_and(|a| Arc::ptr_eq(a, live))
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// The user properties that say who published (`Config::identity_properties`).
fn identity_stamp(identity: &Identity) -> Vec<(ByteString, ByteString)> {
    let mut stamp = Vec::with_capacity(2);
    if let Some(user) = identity.authenticated_user() {
        stamp.push((ByteString::from_static(USER_PROPERTY), ByteString::from(user)));
    }
    stamp.push((ByteString::from_static(AUTH_PROPERTY), ByteString::from_static(identity.method.as_str())));
    stamp
}

/// Replaces any identity user properties a client set with the broker's own.
fn apply_stamp(properties: &mut Properties, stamp: &[(ByteString, ByteString)]) {
    properties.user_properties.retain(|(k, _)| k != USER_PROPERTY && k != AUTH_PROPERTY);
    properties.user_properties.extend_from_slice(stamp);
}

/// One connected client's protocol state.
pub(crate) struct Core {
    shared: Arc<Shared>,
    protocol: Protocol,
    client_id: Arc<str>,
    /// User name that authorisation uses (certificate identity or CONNECT user name).
    username: Option<Arc<str>>,
    peer: SocketAddr,
    /// Bytes read from the client and not yet decoded.
    pub(crate) rbuf: BytesMut,
    /// Bytes to write to the client.
    pub(crate) wbuf: BytesMut,
    session: SessionState,
    generation: u64,
    live: Arc<Live>,
    will: Option<Will>,
    stamp: Option<Vec<(ByteString, ByteString)>>,
    keep_alive: Duration,
    client_receive_max: usize,
    client_max_packet: usize,
    client_alias_max: u16,
    out_aliases: HashMap<ByteString, u16>,
    in_aliases: HashMap<u16, ByteString>,
    problem_info: bool,
    received: u64,
    sent: u64,
    batch: Batch,
    /// Changes were recorded for the store that must reach it before the next write.
    logged: bool,
    /// Online sessions this client's messages filled up: read nothing more until they have
    /// room (backpressure).
    blocked: Vec<Arc<SessionHandle>>,
    /// This client's place in its listener's connection limit.
    _slot: Option<Slot>,
}

impl Core {
    /// The connection is established: sends CONNACK (into `wbuf`), resends what the resumed
    /// session had in flight and announces the client. `rbuf` may already hold packets that
    /// followed CONNECT.
    pub(crate) fn start(
        shared: Arc<Shared>,
        adm: Admission,
        claimed: Claimed,
        live: Arc<Live>,
        rbuf: BytesMut,
    ) -> Core {
        let Claimed { mut session, present, generation } = claimed;
        let client_id = adm.client_id;
        session.expiry = adm.expiry;
        if shared.store.is_some() {
            let durable = &session.handle.durable;
            if adm.expiry > 0 {
                shared.record(Event::Session { client_id: &client_id, expiry: adm.expiry });
                if !durable.swap(true, Ordering::Relaxed) {
                    // A session becoming persistent now: record what it already has.
                    for (filter, sub) in &session.subscriptions {
                        shared.record(Event::Subscribe { client_id: &client_id, filter, sub: *sub });
                    }
                }
            } else if durable.swap(false, Ordering::Relaxed) {
                shared.record(Event::SessionEnd { client_id: &client_id });
            }
            shared.sync_store();
        }
        session.handle.set_online(true);
        shared.stats.connected();
        let mut core = Core {
            shared: shared.clone(),
            protocol: adm.protocol,
            client_id,
            username: adm.username,
            peer: adm.peer,
            rbuf,
            wbuf: BytesMut::with_capacity(4096),
            session,
            generation,
            live,
            will: adm.will,
            stamp: adm.stamp,
            keep_alive: Duration::from_millis(u64::from(adm.keep_alive) * 1500),
            client_receive_max: adm.client_receive_max,
            client_max_packet: adm.client_max_packet,
            client_alias_max: adm.client_alias_max,
            out_aliases: HashMap::new(),
            in_aliases: HashMap::new(),
            problem_info: adm.problem_info,
            received: 0,
            sent: 0,
            batch: Batch::default(),
            logged: false,
            blocked: Vec::new(),
            _slot: adm.slot,
        };
        // MQTT 3.1 has no session-present flag: the byte must be 0.
        let present = present && core.protocol != Protocol::V31;
        core.send(Packet::ConnAck(ConnAck { session_present: present, reason: 0, properties: adm.props }));
        tracing::debug!(client = %core.client_id, peer = %core.peer, protocol = ?core.protocol, present, "connected");
        if present {
            core.resend_inflight();
        }
        let peer = core.peer.to_string();
        let proto = match core.protocol {
            Protocol::V5 => "5",
            Protocol::V311 => "3.1.1",
            Protocol::V31 => "3.1",
        };
        let user = core.username.as_deref().unwrap_or("").to_string();
        let detail = [("peer", &*peer), ("protocol", proto), ("username", &user), ("auth", adm.method.as_str())];
        shared.presence(&core.client_id, "connected", &detail);
        core
    }

    /// The client's session's shared half (its outbox).
    pub(crate) fn handle(&self) -> Arc<SessionHandle> {
        self.session.handle.clone()
    }

    /// The registry's view of this connection (takeover signal).
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Watches the broker's shutdown flag.
    pub(crate) fn shutdown_watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.shutdown.subscribe()
    }

    /// 1.5 × the keep-alive; zero when the client has none.
    pub(crate) fn keep_alive(&self) -> Duration {
        self.keep_alive
    }

    /// The client id.
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The first session this client is waiting for room in, if any (see [`crate::outbox`]).
    pub(crate) fn blocked_on(&mut self) -> Option<Arc<SessionHandle>> {
        self.blocked.retain(|s| s.needs_room());
        self.blocked.first().cloned()
    }

    /// `n` bytes were read into `rbuf`.
    pub(crate) fn read(&mut self, n: usize) {
        self.shared.stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `wbuf` was written out: counts it, clears it and encodes what waits next.
    pub(crate) fn written(&mut self) {
        self.shared.stats.bytes_sent.fetch_add(self.wbuf.len() as u64, Ordering::Relaxed);
        self.wbuf.clear();
        self.pump();
    }

    /// Writes recorded changes to the store before anything they promise is sent.
    pub(crate) fn sync_store(&mut self) {
        if self.logged {
            // Acknowledgements in `wbuf` promise durability: the store gets the data first.
            self.shared.sync_store();
            self.logged = false;
        }
    }

    /// Adds this connection's message counts to the broker's.
    pub(crate) fn flush_counters(&mut self) {
        let stats = &self.shared.stats;
        if self.received > 0 {
            stats.messages_received.fetch_add(self.received, Ordering::Relaxed);
            self.received = 0;
        }
        if self.sent > 0 {
            stats.messages_sent.fetch_add(self.sent, Ordering::Relaxed);
            self.sent = 0;
        }
    }

    /// Decodes and handles every complete packet in the read buffer, then hands the messages
    /// they published to their subscribers.
    pub(crate) fn input(&mut self) -> Option<End> {
        let end = self.decode_all();
        if !self.batch.is_empty() {
            let flushed = self.batch.flush(self.shared.store.as_ref());
            self.logged |= flushed.recorded;
            for s in flushed.full {
                if !self.blocked.iter().any(|b| b.id == s.id) {
                    self.blocked.push(s);
                }
            }
        }
        end
    }

    fn decode_all(&mut self) -> Option<End> {
        let max = self.shared.config.max_packet_size as usize;
        loop {
            // Packet types a client never sends are protocol errors whatever they contain, so
            // they are refused on their fixed header, before their body is parsed.
            match peek_frame(&self.rbuf, max) {
                Ok(Some(frame)) => match frame.header >> 4 {
                    0 => return Some(End::Violation(reason::PROTOCOL_ERROR, "reserved packet type 0")),
                    1 => return Some(End::Violation(reason::PROTOCOL_ERROR, "second CONNECT")),
                    2 | 9 | 11 | 13 => {
                        return Some(End::Violation(reason::PROTOCOL_ERROR, "packet type not sent by clients"))
                    }
                    15 => return Some(End::Violation(reason::PROTOCOL_ERROR, "AUTH without an authentication method")),
                    _ => {}
                },
                Ok(None) => return None,
                Err(e) => return Some(violation(e)),
            }
            match decode(&mut self.rbuf, self.protocol, max) {
                Ok(Some(p)) => {
                    if let Some(end) = self.handle_packet(p) {
                        return Some(end);
                    }
                }
                Ok(None) => return None,
                Err(e) => return Some(violation(e)),
            }
        }
    }

    /// Encodes a control packet; if it would exceed the client's maximum packet size, tries
    /// again without the optional properties (the spec allows dropping reason strings).
    /// Returns whether it was written.
    fn send(&mut self, mut p: Packet) -> bool {
        let max = self.client_max_packet;
        if !self.problem_info || !self.shared.config.reason_strings {
            strip_problem_info(&mut p);
        }
        match encode(&p, self.protocol, &mut self.wbuf, max) {
            Ok(()) => true,
            Err(EncodeError::TooLarge { .. }) => {
                strip_problem_info(&mut p);
                encode(&p, self.protocol, &mut self.wbuf, max).is_ok()
            }
            Err(e) => {
                tracing::debug!(client = %self.client_id, packet = p.name(), error = %e, "packet not encodable");
                false
            }
        }
    }

    /// Removes a fully acknowledged in-flight message and forgets it in the store.
    fn complete(&mut self, i: usize) {
        if let Some(f) = self.session.inflight.remove(i) {
            self.forget(f.delivery.seq);
        }
    }

    /// Records that a stored delivery needs no further attempt.
    fn forget(&mut self, seq: u64) {
        if seq != 0 {
            self.shared.record(Event::Done { client_id: &self.client_id, seq });
            self.logged = true;
        }
    }

    fn handle_packet(&mut self, p: Packet) -> Option<End> {
        let wrong_ack = End::Violation(reason::PROTOCOL_ERROR, "acknowledgement does not match the delivery");
        match p {
            Packet::Publish(p) => return self.on_publish(p),
            // An acknowledgement for an unknown packet id is ignored (it may be late); one of
            // the wrong kind for a message in flight is a protocol error.
            Packet::PubAck(a) => {
                if let Some(i) = self.session.find(a.packet_id) {
                    let f = &self.session.inflight[i];
                    if f.delivery.qos != QoS::AtLeastOnce {
                        return Some(wrong_ack);
                    }
                    self.complete(i);
                }
            }
            Packet::PubRec(a) => match self.session.find(a.packet_id) {
                Some(i) => {
                    let f = &mut self.session.inflight[i];
                    if f.delivery.qos != QoS::ExactlyOnce {
                        return Some(wrong_ack);
                    }
                    if a.reason >= 0x80 {
                        // The receiver refused the message: the exchange ends here.
                        self.complete(i);
                        return None;
                    }
                    f.stage = Stage::Released;
                    self.send(Packet::PubRel(Ack::new(a.packet_id)));
                }
                // A refusal of something unknown needs no answer; otherwise say it is unknown.
                None if a.reason >= 0x80 => {}
                None => {
                    let ack = Ack { packet_id: a.packet_id, reason: reason::PACKET_ID_NOT_FOUND, ..Ack::default() };
                    self.send(Packet::PubRel(ack));
                }
            },
            Packet::PubComp(a) => {
                if let Some(i) = self.session.find(a.packet_id) {
                    if self.session.inflight[i].stage != Stage::Released {
                        return Some(wrong_ack);
                    }
                    self.complete(i);
                }
            }
            Packet::PubRel(a) => {
                let reason =
                    if self.session.incoming_qos2.remove(&a.packet_id) { 0 } else { reason::PACKET_ID_NOT_FOUND };
                self.send(Packet::PubComp(Ack { packet_id: a.packet_id, reason, properties: Properties::default() }));
            }
            Packet::Subscribe(s) => return self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => {
                self.send(Packet::PingResp);
            }
            Packet::Disconnect(d) => {
                if let Some(new) = d.properties.session_expiry_interval {
                    if self.session.expiry == 0 && new != 0 && self.protocol.is_v5() {
                        return Some(End::Violation(
                            reason::PROTOCOL_ERROR,
                            "session expiry set on DISCONNECT after 0",
                        ));
                    }
                    self.session.expiry = new.min(self.shared.config.max_session_expiry);
                    if self.session.expiry > 0 && self.session.handle.durable.load(Ordering::Relaxed) {
                        self.shared.record(Event::Session { client_id: &self.client_id, expiry: self.session.expiry });
                        self.logged = true;
                    }
                }
                return Some(End::Disconnect { will: d.reason == reason::DISCONNECT_WITH_WILL });
            }
            other => {
                // Server-only packet types are refused on their fixed header in decode_all.
                tracing::debug!(client = %self.client_id, packet = other.name(), "unexpected packet from client");
                return Some(End::Violation(reason::PROTOCOL_ERROR, "packet type not sent by clients"));
            }
        }
        None
    }

    /// Acknowledges a PUBLISH that is not routed, with `code` for v5 (3.1.1 cannot say why:
    /// the message is acknowledged and dropped).
    fn refuse_publish(&mut self, qos: QoS, packet_id: u16, code: u8) {
        let code = if self.protocol.is_v5() { code } else { 0 };
        let ack = Ack { packet_id, reason: code, properties: Properties::default() };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.send(Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                if code < 0x80 {
                    self.session.incoming_qos2.insert(packet_id);
                }
                self.send(Packet::PubRec(ack));
            }
        }
    }

    fn on_publish(&mut self, mut p: Publish) -> Option<End> {
        let v5 = self.protocol.is_v5();
        if !p.properties.subscription_identifiers.is_empty() {
            // MQTT-3.3.4-6: only the server sends subscription identifiers.
            return Some(End::Violation(reason::PROTOCOL_ERROR, "subscription identifier in a client's PUBLISH"));
        }
        if let Some(alias) = p.properties.topic_alias.take() {
            if alias == 0 || alias > self.shared.config.topic_alias_maximum {
                return Some(End::Violation(reason::TOPIC_ALIAS_INVALID, "topic alias out of range"));
            }
            if p.topic.is_empty() {
                match self.in_aliases.get(&alias) {
                    Some(t) => p.topic = t.clone(),
                    None => return Some(End::Violation(reason::PROTOCOL_ERROR, "unknown topic alias")),
                }
            } else {
                self.in_aliases.insert(alias, p.topic.clone());
            }
        }
        self.received += 1;
        let qos = p.qos;
        let packet_id = p.packet_id;
        if p.topic.starts_with("$share/") {
            return Some(End::Violation(reason::PROTOCOL_ERROR, "a shared subscription is not a topic name"));
        }
        if too_deep(&self.shared, &p.topic) {
            if !v5 {
                // 3.1.1 has no way to say why: close, as Mosquitto does.
                return Some(End::Violation(reason::TOPIC_NAME_INVALID, "topic has too many levels"));
            }
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.refuse_publish(qos, packet_id, reason::TOPIC_NAME_INVALID);
            return None;
        }
        let limit = self.shared.config.message_size_limit;
        if limit > 0 && p.payload.len() > limit {
            if v5 {
                return Some(End::Violation(reason::PACKET_TOO_LARGE, "payload exceeds message_size_limit"));
            }
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.refuse_publish(qos, packet_id, 0);
            return None;
        }
        let allowed = (!reserved(&p.topic) || self.shared.config.allow_sys_publish)
            && self.shared.security.load().authorize(
                &self.client_id,
                self.username.as_deref(),
                Access::Write,
                &p.topic,
            );
        if !allowed {
            tracing::debug!(client = %self.client_id, topic = %p.topic, "publish not authorised");
            self.refuse_publish(qos, packet_id, reason::NOT_AUTHORIZED);
            return None;
        }
        if qos == QoS::ExactlyOnce {
            if self.session.incoming_qos2.contains(&packet_id) {
                // A resend of a message we already have: acknowledge, do not route again.
                self.send(Packet::PubRec(Ack::new(packet_id)));
                return None;
            }
            if self.session.incoming_qos2.len() >= usize::from(self.shared.config.receive_maximum) {
                return Some(End::Violation(reason::RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded"));
            }
        }
        let mut properties = p.properties;
        if let Some(stamp) = &self.stamp {
            apply_stamp(&mut properties, stamp);
        }
        let expires_at =
            properties.message_expiry_interval.take().map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        let msg = Message {
            topic: p.topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            properties,
            expires_at,
            origin: self.session.handle.id,
        };
        let reached = self.shared.route(Arc::new(msg), &mut self.batch);
        let reason = if reached == 0 && v5 { reason::NO_MATCHING_SUBSCRIBERS } else { 0 };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.send(Packet::PubAck(Ack { packet_id, reason, properties: Properties::default() }));
            }
            QoS::ExactlyOnce => {
                self.session.incoming_qos2.insert(packet_id);
                self.send(Packet::PubRec(Ack { packet_id, reason, properties: Properties::default() }));
            }
        }
        None
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Option<End> {
        let v5 = self.protocol.is_v5();
        let failure = |code: u8| if v5 { code } else { 0x80 };
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (raw, options) in s.filters {
            // The codec has checked the syntax; what is left is policy.
            let Ok(parsed) = topic::parse_filter(&raw) else {
                reasons.push(failure(reason::TOPIC_FILTER_INVALID));
                continue;
            };
            if parsed.group.is_some() && options.no_local {
                return Some(End::Violation(reason::PROTOCOL_ERROR, "no local on a shared subscription"));
            }
            if too_deep(&self.shared, parsed.filter) {
                tracing::debug!(client = %self.client_id, "topic filter has too many levels");
                reasons.push(failure(reason::TOPIC_FILTER_INVALID));
                continue;
            }
            if self.shared.config.deny_subscribe.iter().any(|d| d == &*raw) {
                reasons.push(reason::UNSPECIFIED_ERROR);
                continue;
            }
            let allowed = self.shared.security.load().authorize(
                &self.client_id,
                self.username.as_deref(),
                Access::Subscribe,
                parsed.filter,
            );
            if !allowed {
                tracing::debug!(client = %self.client_id, filter = %raw, "subscription not authorised");
                reasons.push(failure(reason::NOT_AUTHORIZED));
                continue;
            }
            let sub = Sub { session: self.session.handle.clone(), options, id: sub_id };
            let existed = self.shared.index.subscribe(parsed.group, parsed.filter, sub);
            let sub = Subscription { options, id: sub_id };
            self.session.subscriptions.insert(raw.to_string(), sub);
            if self.session.handle.durable.load(Ordering::Relaxed) {
                self.shared.record(Event::Subscribe { client_id: &self.client_id, filter: &raw, sub });
                self.logged = true;
            }
            reasons.push(options.qos as u8);
            let send_retained = parsed.group.is_none()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                for msg in self.shared.retained.matching(parsed.filter) {
                    retained.push(Delivery {
                        qos: msg.qos.min(options.qos),
                        msg,
                        retain: true,
                        sub_ids: sub_id.into_iter().collect(),
                        seq: 0,
                    });
                }
            }
        }
        self.send(Packet::SubAck(SubAck { packet_id: s.packet_id, properties: Properties::default(), reasons }));
        // Retained messages go out after the SUBACK, ahead of anything queued later.
        for d in retained.into_iter().rev() {
            self.session.pending.push_front(d);
        }
        None
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for raw in u.filters {
            let existed = self.session.subscriptions.remove(&*raw).is_some();
            if existed {
                if self.session.handle.durable.load(Ordering::Relaxed) {
                    self.shared.record(Event::Unsubscribe { client_id: &self.client_id, filter: &raw });
                    self.logged = true;
                }
                // Only a filter this session subscribed to reaches the index (it was checked,
                // depth included, when it was subscribed).
                if let Ok(f) = topic::parse_filter(&raw) {
                    self.shared.index.unsubscribe(f.group, f.filter, self.session.handle.id);
                }
            }
            reasons.push(if existed { 0 } else { reason::NO_SUBSCRIPTION_EXISTED });
        }
        self.send(Packet::UnsubAck(SubAck { packet_id: u.packet_id, properties: Properties::default(), reasons }));
    }

    /// Moves queued deliveries to the wire as far as flow control and the write buffer allow.
    pub(crate) fn pump(&mut self) {
        if self.session.pending.len() < self.client_receive_max.max(1024) {
            self.session.handle.drain_into(&mut self.session.pending);
        }
        let now = Instant::now();
        let security = self.shared.security.load();
        let check_reads = security.checks_reads();
        while self.wbuf.len() < WRITE_HIGH_WATER {
            let Some(front) = self.session.pending.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && self.session.inflight.len() >= self.client_receive_max {
                break;
            }
            let Some(d) = self.session.pending.pop_front() else { break };
            if d.msg.expired(now) {
                self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.forget(d.seq);
                continue;
            }
            if check_reads && !security.authorize(&self.client_id, self.username.as_deref(), Access::Read, &d.msg.topic)
            {
                self.forget(d.seq);
                continue;
            }
            self.send_publish(d, now);
        }
    }

    /// Encodes one delivery, choosing its packet id and topic alias.
    fn send_publish(&mut self, d: Delivery, now: Instant) {
        let msg = &d.msg;
        let v5 = self.protocol.is_v5();
        let expiry = msg.remaining_expiry(now);
        let mut alias = None;
        let mut new_alias = false;
        if v5 && self.client_alias_max > 0 {
            if let Some(a) = self.out_aliases.get(&msg.topic) {
                alias = Some(*a);
            } else if self.out_aliases.len() < usize::from(self.client_alias_max) {
                // Fewer than client_alias_max (a u16) entries: the next number fits.
                alias = u16::try_from(self.out_aliases.len() + 1).ok();
                new_alias = alias.is_some();
            }
        }
        let topic: &str = if alias.is_some() && !new_alias { "" } else { &msg.topic };
        let extra = expiry.is_some() || alias.is_some() || !d.sub_ids.is_empty();
        let owned;
        let properties = if v5 && extra {
            owned = delivery_properties(&msg.properties, expiry, alias, &d.sub_ids);
            &owned
        } else {
            &msg.properties
        };
        let mut out = PublishOut {
            dup: false,
            qos: d.qos,
            retain: d.retain,
            topic,
            packet_id: 0,
            properties,
            payload: &msg.payload,
        };
        if self.client_max_packet > 0 && publish_len(self.protocol, &out) > self.client_max_packet {
            // MQTT 5 §3.1.2.11.4: a message too large for the client is discarded as if sent.
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let seq = d.seq;
            self.forget(seq);
            return;
        }
        if d.qos != QoS::AtMostOnce {
            out.packet_id = self.session.next_id();
        }
        if let Err(e) = encode_publish(&mut self.wbuf, self.protocol, &out) {
            // A field longer than MQTT can carry (for example a user property built from a
            // huge certificate name): this copy cannot be sent, and is counted as dropped.
            tracing::debug!(client = %self.client_id, error = %e, "delivery not encodable");
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            let seq = d.seq;
            self.forget(seq);
            return;
        }
        if let (true, Some(a)) = (new_alias, alias) {
            self.out_aliases.insert(msg.topic.clone(), a);
        }
        self.sent += 1;
        if d.qos != QoS::AtMostOnce {
            let id = out.packet_id;
            let alloc = self.session.allocated;
            self.session.inflight.push_back(Inflight { id, delivery: d, stage: Stage::Published, alloc });
        }
    }

    /// After a session resumes: resend unacknowledged PUBLISHes with DUP, and PUBRELs.
    fn resend_inflight(&mut self) {
        let now = Instant::now();
        let inflight: Vec<Inflight> = self.session.inflight.iter().cloned().collect();
        for f in inflight {
            match f.stage {
                Stage::Released => {
                    self.send(Packet::PubRel(Ack::new(f.id)));
                }
                Stage::Published => {
                    let msg = &f.delivery.msg;
                    let expiry = msg.remaining_expiry(now);
                    let p = Publish {
                        dup: true,
                        qos: f.delivery.qos,
                        retain: f.delivery.retain,
                        topic: msg.topic.clone(),
                        packet_id: f.id,
                        properties: if self.protocol.is_v5() {
                            delivery_properties(&msg.properties, expiry, None, &f.delivery.sub_ids)
                        } else {
                            Properties::default()
                        },
                        payload: msg.payload.clone(),
                    };
                    self.send(Packet::Publish(p));
                }
            }
        }
    }

    /// The connection is ending for `end`: appends what the client is still owed (a v5
    /// DISCONNECT saying why) to `wbuf`. Returns whether the driver should linger (read and
    /// discard for a moment) so the client sees that DISCONNECT rather than a reset.
    pub(crate) fn closing(&mut self, end: End) -> bool {
        tracing::debug!(client = %self.client_id, peer = %self.peer, ?end, "connection ended");
        let notice = match end {
            End::Violation(code, why) => Some((code, why)),
            End::KeepAlive => Some((reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout")),
            End::TakenOver => Some((reason::SESSION_TAKEN_OVER, "another connection took over this client id")),
            End::Shutdown => Some((reason::SERVER_SHUTTING_DOWN, "server shutting down")),
            End::Disconnect { .. } | End::Closed => None,
        };
        self.sync_store();
        if let Some((code, why)) = notice {
            if self.protocol.is_v5() {
                self.send(Packet::Disconnect(Disconnect::with_reason(code, why)));
            }
        }
        notice.is_some() && end != End::Shutdown
    }

    /// The connection has ended: handles the will and parks or ends the session. The socket
    /// is already closed.
    pub(crate) fn end(mut self, end: End) {
        self.flush_counters();
        let shared = self.shared.clone();
        shared.disconnected();
        let why = match &end {
            End::Disconnect { will: false } => "client disconnected",
            End::Disconnect { will: true } => "client disconnected with will",
            End::Closed => "connection closed",
            End::Violation(_, why) => why,
            End::KeepAlive => "keep alive timeout",
            End::TakenOver => "session taken over",
            End::Shutdown => "server shutting down",
        };
        shared.presence(&self.client_id, "disconnected", &[("reason", why)]);
        let will = match end {
            End::Disconnect { will } => will.then(|| self.will.take()).flatten(),
            _ => self.will.take(),
        };
        let expiry = self.session.expiry;
        let client_id = self.client_id.clone();
        let live = self.live.clone();
        {
            let mut reg = shared.registry.lock();
            let Some(entry) = reg.get_mut(&client_id) else {
                return;
            };
            if entry.generation != self.generation {
                return;
            }
            entry.active = None;
            if expiry == 0 {
                // MQTT-3.1.2-6 / Clean Start with Session Expiry 0: the session ends with its
                // connection, also when another connection takes the client id over; that one
                // starts afresh (session present 0).
                reg.remove(&client_id);
                drop(reg);
                live.gone.notify_waiters();
                shared.end_session(&client_id, &self.session);
                if let Some(w) = will {
                    shared.publish_will(w);
                }
            } else if end == End::TakenOver {
                // The new connection resumes the session. A will without delay goes now; a
                // delayed one is cancelled by the reconnect.
                self.session.handle.set_online(false);
                entry.parked = Some(self.session);
                drop(reg);
                live.gone.notify_waiters();
                if let Some(w) = will.filter(|w| w.properties.will_delay_interval.unwrap_or(0) == 0) {
                    shared.publish_will(w);
                }
            } else {
                self.session.handle.set_online(false);
                entry.parked = Some(self.session);
                drop(reg);
                live.gone.notify_waiters();
                shared.schedule_expiry(client_id, self.generation, will, expiry);
            }
        }
    }
}

/// The DISCONNECT a decode error calls for.
fn violation(e: DecodeError) -> End {
    let why = match e {
        DecodeError::Malformed(w) | DecodeError::Protocol(w) => w,
        DecodeError::TooLarge { .. } => "packet exceeds the maximum packet size",
        DecodeError::UnsupportedProtocol => "unsupported protocol",
    };
    End::Violation(e.reason_code(), why)
}

/// Removes reason strings and user properties, which a client may ask not to receive and
/// which are the first thing to go when a packet would be too large.
fn strip_problem_info(p: &mut Packet) {
    let props = match p {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => &mut a.properties,
        Packet::SubAck(s) | Packet::UnsubAck(s) => &mut s.properties,
        Packet::Disconnect(d) => &mut d.properties,
        Packet::ConnAck(a) => {
            a.properties.reason_string = None;
            return;
        }
        _ => return,
    };
    props.reason_string = None;
    props.user_properties.clear();
}

#[cfg(test)]
mod tests {
    //! The state machine driven by bytes: each test feeds what a client would send and checks
    //! the exact bytes the broker would write, without a socket or a runtime.
    #![allow(clippy::cast_possible_truncation)] // short test packets

    use super::*;
    use crate::config::Config;
    use crate::security::AllowAll;
    use std::net::SocketAddr;

    fn shared(config: Config) -> Arc<Shared> {
        Arc::new(Shared::new(Config { reason_strings: false, ..config }, None, Box::new(AllowAll)))
    }

    fn info() -> ConnInfo {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        ConnInfo::new(a, a)
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn admission(shared: &Shared, connect: &[u8]) -> Result<Admission, Refused> {
        let mut buf = BytesMut::from(connect);
        let Some(Packet::Connect(c)) = decode(&mut buf, Protocol::V311, 0).unwrap() else { panic!("not CONNECT") };
        admit(shared, *c, &info())
    }

    /// Connects from CONNECT bytes; returns the core (CONNACK still in `wbuf`).
    fn connect(shared: &Arc<Shared>, connect: &[u8]) -> Core {
        let adm = admission(shared, connect).unwrap_or_else(|r| panic!("refused: {r:?}"));
        let live = Arc::new(Live::default());
        let Claim::Taken(claimed) = claim(shared, &adm, &live) else { panic!("client id held") };
        Core::start(shared.clone(), adm, claimed, live, BytesMut::new())
    }

    /// Feeds bytes and returns what the broker wrote, or how the connection ended.
    fn feed(core: &mut Core, bytes: &[u8]) -> Result<Vec<u8>, End> {
        core.rbuf.extend_from_slice(bytes);
        let end = core.input();
        core.pump();
        match end {
            Some(end) => Err(end),
            None => Ok(take(core)),
        }
    }

    fn take(core: &mut Core) -> Vec<u8> {
        let out = core.wbuf.to_vec();
        core.wbuf.clear();
        out
    }

    const V311: &str = "10 0D 0004 4D515454 04 02 003C 0001 61"; // client id "a"
    const V5: &str = "10 0E 0004 4D515454 05 02 003C 00 0001 62"; // client id "b"

    #[test]
    fn connack_and_ping() {
        let s = shared(Config::default());
        let mut c = connect(&s, &hex(V311));
        assert_eq!(take(&mut c), hex("20 02 00 00"));
        assert_eq!(feed(&mut c, &hex("C0 00")).unwrap(), hex("D0 00"));
        // Several packets in one read: every answer in one write.
        assert_eq!(feed(&mut c, &hex("C0 00 C0 00")).unwrap(), hex("D0 00 D0 00"));
        // Half a packet waits for the rest.
        assert_eq!(feed(&mut c, &hex("C0")).unwrap(), b"");
        assert_eq!(feed(&mut c, &hex("00")).unwrap(), hex("D0 00"));
    }

    #[test]
    fn v5_connack_matches_mosquitto_with_its_defaults() {
        let s = shared(Config { receive_maximum: 20, topic_alias_maximum: 10, ..Config::default() });
        let mut c = connect(&s, &hex(V5));
        assert_eq!(take(&mut c), hex("20 09 00 00 06 22000A 210014"));
        // QoS 1 PUBLISH nobody subscribed to: PUBACK "no matching subscribers".
        assert_eq!(feed(&mut c, &hex("32 0B 0005 746F706963 0001 00 70")).unwrap(), hex("40 03 0001 10"));
    }

    #[test]
    fn publish_reaches_a_subscriber_in_its_write_buffer() {
        let s = shared(Config::default());
        let mut sub = connect(&s, &hex(V311));
        take(&mut sub);
        assert_eq!(feed(&mut sub, &hex("82 06 0001 0001 74 01")).unwrap(), hex("90 03 0001 01"));
        let mut publ = connect(&s, &hex(V5));
        take(&mut publ);
        assert_eq!(feed(&mut publ, &hex("32 07 0001 74 0009 00 68")).unwrap(), hex("40 02 0009"));
        sub.pump();
        // QoS 1 delivery with the broker's own packet id 1, payload "h".
        assert_eq!(take(&mut sub), hex("32 06 0001 74 0001 68"));
        assert_eq!(feed(&mut sub, &hex("40 02 0001")).unwrap(), b"");
    }

    #[test]
    fn malformed_and_protocol_errors() {
        let s = shared(Config::default());
        let cases: &[(&str, u8)] = &[
            ("40 09 0001 00 05 1100000001", 0x81), // PUBACK with a session expiry interval (§2.2.2.2)
            ("40 08 0001 00 04 23000170", 0x81),   // PUBACK with a topic alias, then an undefined property
            ("40 06 0001 00 02 0400", 0x81),       // PUBACK with undefined property 0x04
            ("E0 03 00 01 00", 0x81),              // DISCONNECT with property identifier 0
            ("82 06 1234 00 0000 00", 0x81),       // SUBSCRIBE with an empty filter
            ("30 05 0002 612B 00", 0x81),          // wildcard in a topic name
            ("C0 80 00", 0x81),                    // non-minimal remaining length
            ("20 02 00 00", 0x82),                 // CONNACK from a client
            ("29 02 00 01", 0x82),                 // ... even a malformed one
            ("00 00", 0x82),                       // reserved packet type
            ("F0 00", 0x82),                       // AUTH without an authentication method
            ("10 0E 0004 4D515454 05 02 003C 00 0001 62", 0x82), // second CONNECT
            ("30 07 0001 74 02 0B01 78", 0x82),    // subscription identifier from a client
            ("40 04 0001 FF 00", 0x82),            // PUBACK reason code 0xFF
            ("30 0A 0000 00 7061796C6F6164", 0x82), // empty topic without alias (MQTT 5 §3.3.2.3.4)
            ("30 0A 0007 247368617265 2F 00", 0x82), // "$share/" as a topic name
        ];
        for (i, (bytes, code)) in cases.iter().enumerate() {
            let id = format!("m{i}");
            let mut connect_bytes = hex("10 00 0004 4D515454 05 02 003C 00");
            connect_bytes.extend_from_slice(&(id.len() as u16).to_be_bytes());
            connect_bytes.extend_from_slice(id.as_bytes());
            connect_bytes[1] = (connect_bytes.len() - 2) as u8;
            let mut c = connect(&s, &connect_bytes);
            take(&mut c);
            match feed(&mut c, &hex(bytes)) {
                Err(end @ End::Violation(got, _)) => {
                    assert_eq!(got, *code, "{bytes}");
                    assert!(c.closing(end), "lingers after telling why");
                    assert_eq!(take(&mut c), vec![0xE0, 0x01, *code], "{bytes}: the DISCONNECT on the wire");
                }
                other => panic!("{bytes}: {other:?}"),
            }
        }
    }

    #[test]
    fn acknowledgements_follow_the_delivery() {
        let s = shared(Config::default());
        let mut sub = connect(&s, &hex(V5));
        take(&mut sub);
        feed(&mut sub, &hex("82 07 0001 00 0001 74 02")).unwrap();
        let mut publ = connect(&s, &hex(V311));
        take(&mut publ);
        feed(&mut publ, &hex("34 06 0001 74 0005 71")).unwrap(); // QoS 2
        sub.pump();
        assert_eq!(take(&mut sub), hex("34 07 0001 74 0001 00 71"));
        // PUBACK for a QoS 2 delivery is a protocol error.
        assert!(matches!(feed(&mut sub, &hex("40 02 0001")), Err(End::Violation(0x82, _))));
        // An unknown PUBREC that reports failure gets no PUBREL; a successful one is told 0x92.
        let mut other = connect(&s, &hex("10 0E 0004 4D515454 05 02 003C 00 0001 7A"));
        take(&mut other);
        assert_eq!(feed(&mut other, &hex("50 03 0007 80")).unwrap(), b"");
        assert_eq!(feed(&mut other, &hex("50 02 0007")).unwrap(), hex("62 03 0007 92"));
    }

    #[test]
    fn refusals_before_the_session() {
        let s = shared(Config::default());
        // MQTT 3.1 requires a client id: identifier rejected.
        let r = admission(&s, &hex("10 0E 0006 4D5149736470 03 02 000A 0000")).err().unwrap();
        assert_eq!(&r[..], hex("20 02 00 02"));
        // A Maximum Packet Size too small for any CONNACK: nothing can be said, close.
        let r = admission(&s, &hex("10 13 0004 4D515454 05 02 000A 05 2700000002 0001 70")).err().unwrap();
        assert!(r.is_empty());
        // Enhanced authentication is not offered.
        let r = admission(&s, &hex("10 16 0004 4D515454 05 02 000A 08 15 0005 5343524D31 0001 70")).err().unwrap();
        assert_eq!(&r[..], hex("20 03 00 8C 00"));
    }

    #[tokio::test]
    async fn mqtt_3_1_has_no_session_present_flag() {
        let s = shared(Config::default());
        let connect31 = hex("10 0F 0006 4D5149736470 03 00 000A 0001 70"); // clean session 0
        let c = connect(&s, &connect31);
        c.end(End::Disconnect { will: false });
        let mut again = connect(&s, &connect31);
        assert_eq!(take(&mut again), hex("20 02 00 00"));
    }

    #[test]
    fn topic_depth_and_reserved_topics() {
        let s = shared(Config { max_topic_levels: 3, ..Config::default() });
        let mut c = connect(&s, &hex(V5));
        take(&mut c);
        // "a/b/c/d" (4 levels): SUBACK 0x8F; "a/b/c": granted.
        assert_eq!(feed(&mut c, &hex("82 0D 0001 00 0007 612F622F632F64 00")).unwrap(), hex("90 04 0001 00 8F"));
        assert_eq!(feed(&mut c, &hex("82 0B 0001 00 0005 612F622F63 00")).unwrap(), hex("90 04 0001 00 00"));
        // A 4-level QoS 1 PUBLISH: PUBACK 0x90.
        assert_eq!(feed(&mut c, &hex("32 0D 0007 612F622F632F64 0002 00 78")).unwrap(), hex("40 03 0002 90"));
        // $SYS is the broker's: PUBACK 0x87, nothing retained.
        assert_eq!(feed(&mut c, &hex("33 0C 0006 245359532F78 0003 00 78")).unwrap(), hex("40 03 0003 87"));
        assert_eq!(s.retained.len(), 0);
        let open = shared(Config { allow_sys_publish: true, ..Config::default() });
        let mut c = connect(&open, &hex(V5));
        take(&mut c);
        assert_eq!(feed(&mut c, &hex("33 0C 0006 245359532F78 0003 00 78")).unwrap(), hex("40 03 0003 10"));
        assert_eq!(open.retained.len(), 1);
    }

    #[test]
    fn a_full_online_queue_blocks_its_publishers_until_drained() {
        let s = shared(Config { max_buffered: 4, ..Config::default() });
        let mut sub = connect(&s, &hex(V311));
        take(&mut sub);
        feed(&mut sub, &hex("82 06 0001 0001 74 01")).unwrap();
        let mut publ = connect(&s, &hex(V5));
        take(&mut publ);
        let one = hex("32 07 0001 74 0009 00 68");
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 10).collect();
        let acks = feed(&mut publ, &burst).unwrap();
        assert_eq!(acks.len(), 10 * 4, "all ten acknowledged: they are queued, not dropped");
        assert!(publ.blocked_on().is_some(), "the publisher must wait");
        sub.pump(); // the subscriber's connection takes its queue
        assert!(publ.blocked_on().is_none(), "room again");
        assert_eq!(s.stats.dropped.load(Ordering::Relaxed), 0);
        let delivered = take(&mut sub);
        assert_eq!(delivered.len(), 10 * 8, "ten QoS 1 deliveries of 8 bytes");
    }

    #[test]
    fn a_takeover_of_a_clean_session_starts_afresh() {
        let s = shared(Config::default());
        let mut first = connect(&s, &hex(V311)); // clean session
        feed(&mut first, &hex("82 06 0001 0001 74 01")).unwrap();
        // The same client id with clean session 0.
        let adm = admission(&s, &hex("10 0D 0004 4D515454 04 00 003C 0001 61")).unwrap();
        let live = Arc::new(Live::default());
        let Claim::Busy(old) = claim(&s, &adm, &live) else { panic!("the first connection holds the id") };
        assert!(still_held(&s, "a", &old));
        first.end(End::TakenOver);
        assert!(!still_held(&s, "a", &old));
        let Claim::Taken(claimed) = claim(&s, &adm, &live) else { panic!("free now") };
        let mut second = Core::start(s.clone(), adm, claimed, live, BytesMut::new());
        assert_eq!(take(&mut second), hex("20 02 00 00"), "session present 0");
        assert_eq!(s.index.len(), 0, "the clean session's subscription ended with it");
    }

    #[test]
    fn identity_properties_replace_what_the_client_set() {
        let mut p = Properties::default();
        p.user_properties.push(("alicia-user".into(), "front_door_lock".into()));
        p.user_properties.push(("room".into(), "kitchen".into()));
        apply_stamp(&mut p, &identity_stamp(&Identity::password("stt_service")));
        let got: Vec<(&str, &str)> = p.user_properties.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(got, [("room", "kitchen"), ("alicia-user", "stt_service"), ("alicia-auth", "password")]);
        let mut p = Properties::default();
        apply_stamp(&mut p, &identity_stamp(&Identity::anonymous(Some("claimed".into()))));
        assert_eq!(p.user_properties, vec![("alicia-auth".into(), "anonymous".into())]);
    }
}
