//! One client connection: the MQTT protocol state machine.
//!
//! Each connection is one task that owns its socket, its read and write buffers and (while
//! connected) its session state, so the hot path takes no locks beyond pushing into other
//! sessions' outboxes. The loop reads whatever the socket has, decodes every complete packet,
//! handles them, then drains its own outbox, and writes everything produced in one go: many
//! packets per system call in both directions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alicia_codec::{
    decode, encode, encode_publish, publish_len, reason, topic, Ack, ByteString, BytesMut, ConnAck, Connect,
    DecodeError, Disconnect, EncodeError, Packet, Properties, Protocol, Publish, PublishOut, QoS, RetainHandling,
    SubAck, Subscribe, Unsubscribe, Will,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::broker::{delivery_properties, Batch, Entry, Shared};
use crate::index::Sub;
use crate::listener::ConnInfo;
use crate::message::{Delivery, Message};
use crate::persist::Event;
use crate::security::{Access, Credentials, Identity, AUTH_PROPERTY, USER_PROPERTY};
use crate::session::{Inflight, SessionState, Stage, Subscription};

/// Flush the write buffer once it holds this much.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Read in chunks of at least this much.
const READ_CHUNK: usize = 64 * 1024;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client; `will` is true for reason 0x04.
    Disconnect { will: bool },
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

/// Serves one accepted socket until it closes.
pub(crate) async fn serve<S>(shared: Arc<Shared>, mut stream: S, info: ConnInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let peer = info.peer;
    let mut rbuf = BytesMut::with_capacity(4096);
    let connect = match read_connect(&shared, &mut stream, &mut rbuf).await {
        Ok(c) => c,
        Err(why) => {
            tracing::debug!(%peer, why, "connection refused before CONNECT");
            return;
        }
    };
    let Some(mut conn) = accept(&shared, &mut stream, *connect, rbuf, &info).await else {
        return;
    };
    let end = conn.run(&mut stream).await;
    conn.finish(&mut stream, end).await;
}

/// Reads the first packet, which must be CONNECT.
async fn read_connect<S>(shared: &Shared, stream: &mut S, rbuf: &mut BytesMut) -> Result<Box<Connect>, &'static str>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Duration::from_secs(shared.config.connect_timeout);
    let max = shared.config.max_packet_size as usize;
    let read = async {
        loop {
            match decode(rbuf, Protocol::V311, max) {
                Ok(Some(Packet::Connect(c))) => return Ok(c),
                Ok(Some(_)) => return Err("first packet is not CONNECT"),
                Ok(None) => {}
                Err(DecodeError::UnsupportedProtocol) => {
                    // Answer in 3.1.1 form: return code 1, unacceptable protocol version.
                    let _ = write_out(stream, &[0x20, 2, 0, 1]).await;
                    return Err("unsupported protocol version");
                }
                Err(_) => return Err("malformed CONNECT"),
            }
            match stream.read_buf(rbuf).await {
                Ok(0) | Err(_) => return Err("closed before CONNECT"),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(deadline, read).await.unwrap_or(Err("no CONNECT in time"))
}

/// Validates CONNECT, takes over or creates the session and sends CONNACK.
async fn accept<S>(shared: &Arc<Shared>, stream: &mut S, c: Connect, rbuf: BytesMut, info: &ConnInfo) -> Option<Conn>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = info.peer;
    let protocol = c.protocol;
    let v5 = protocol.is_v5();
    let refuse = |code: u8, why: &str| {
        let mut out = BytesMut::new();
        let mut ack = ConnAck { reason: code, ..ConnAck::default() };
        if v5 {
            ack.properties.reason_string = Some(why.into());
        }
        let _ = encode(&Packet::ConnAck(ack), protocol, &mut out, 0);
        out
    };
    if c.properties.authentication_method.is_some() {
        let out = refuse(reason::BAD_AUTH_METHOD, "enhanced authentication is not supported");
        let _ = write_out(stream, &out).await;
        return None;
    }
    let mut props = Properties::default();
    let client_id: Arc<str> = if c.client_id.is_empty() {
        if !v5 && !c.clean_start {
            let _ = write_out(stream, &refuse(reason::CLIENT_ID_NOT_VALID, "")).await;
            return None;
        }
        let id = format!("alicia-{:016x}", shared.new_session_id() ^ random_u64());
        if v5 {
            props.assigned_client_identifier = Some(ByteString::from(id.as_str()));
        }
        Arc::from(id)
    } else {
        Arc::from(&*c.client_id)
    };
    let slot = match &info.slots {
        Some(slots) => match slots.take() {
            Some(slot) => Some(slot),
            None => {
                let _ = write_out(stream, &refuse(reason::QUOTA_EXCEEDED, "listener connection limit reached")).await;
                return None;
            }
        },
        None => None,
    };
    let max_conn = shared.config.max_connections as u64;
    if max_conn > 0 && shared.stats.clients_connected.load(Ordering::Relaxed) >= max_conn {
        let _ = write_out(stream, &refuse(reason::QUOTA_EXCEEDED, "too many connections")).await;
        return None;
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
                let _ = write_out(stream, &refuse(r.reason, &r.why)).await;
                return None;
            }
        };
        if let Some(w) = &c.will {
            if !security.authorize(&client_id, identity.username.as_deref(), Access::Write, &w.topic) {
                tracing::info!(client = %client_id, %peer, topic = %w.topic, "will topic not authorised");
                let _ = write_out(stream, &refuse(reason::NOT_AUTHORIZED, "will topic not authorised")).await;
                return None;
            }
        }
        identity
    };
    let stamp = shared.config.identity_properties.then(|| identity_stamp(&identity));
    let mut will = c.will;
    if let (Some(w), Some(stamp)) = (&mut will, &stamp) {
        apply_stamp(&mut w.properties, stamp);
    }
    let method = identity.method;
    let username = identity.username.map(Arc::<str>::from);

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

    // Take the client id: end a live connection that holds it, then resume or replace its
    // session.
    let kick = Arc::new(Notify::new());
    let mut waited = 0;
    let (mut session, present, generation, stale) = loop {
        let taken = {
            let mut reg = shared.registry.lock();
            match reg.get_mut(&client_id) {
                Some(e) if e.active.is_some() => {
                    if waited == 0 {
                        if let Some(k) = &e.active {
                            k.notify_one();
                        }
                    }
                    None
                }
                Some(e) => {
                    e.generation += 1;
                    e.active = Some(kick.clone());
                    Some((e.parked.take(), e.generation))
                }
                None => {
                    reg.insert(client_id.clone(), Entry { generation: 1, active: Some(kick.clone()), parked: None });
                    Some((None, 1))
                }
            }
        };
        match taken {
            Some((Some(s), generation)) if !c.clean_start => break (s, true, generation, None),
            Some((old, generation)) => {
                break (SessionState::new(shared.new_handle(client_id.clone())), false, generation, old)
            }
            None => {
                waited += 1;
                if waited > 500 {
                    let _ = write_out(stream, &refuse(reason::SERVER_BUSY, "previous connection did not end")).await;
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    if let Some(old) = stale {
        shared.drop_subscriptions(&old);
        if old.handle.durable.load(Ordering::Relaxed) {
            shared.record(Event::SessionEnd { client_id: &client_id });
        }
    }
    session.expiry = expiry;
    if shared.store.is_some() {
        let durable = &session.handle.durable;
        if expiry > 0 {
            shared.record(Event::Session { client_id: &client_id, expiry });
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
    session.handle.online.store(true, Ordering::Relaxed);
    shared.stats.connected();

    if v5 {
        props.receive_maximum = Some(shared.config.receive_maximum);
        props.topic_alias_maximum = Some(shared.config.topic_alias_maximum);
        if shared.config.max_packet_size > 0 {
            props.maximum_packet_size = Some(shared.config.max_packet_size);
        }
    }
    let client_receive_max = if v5 {
        c.properties.receive_maximum.unwrap_or(u16::MAX).min(shared.config.max_inflight.max(1))
    } else {
        shared.config.max_inflight.max(1)
    };
    let mut conn = Conn {
        shared: shared.clone(),
        protocol,
        client_id,
        username,
        peer,
        rbuf,
        wbuf: BytesMut::with_capacity(4096),
        session,
        generation,
        kick,
        will,
        stamp,
        keep_alive: Duration::from_millis(keep_alive as u64 * 1500),
        client_receive_max: client_receive_max as usize,
        client_max_packet: c.properties.maximum_packet_size.unwrap_or(0) as usize,
        client_alias_max: c.properties.topic_alias_maximum.unwrap_or(0),
        out_aliases: HashMap::new(),
        in_aliases: HashMap::new(),
        last_read: tokio::time::Instant::now(),
        problem_info: c.properties.request_problem_information != Some(0),
        received: 0,
        sent: 0,
        batch: Batch::default(),
        logged: false,
        _slot: slot,
    };
    conn.send(Packet::ConnAck(ConnAck { session_present: present, reason: 0, properties: props }));
    tracing::debug!(client = %conn.client_id, %peer, ?protocol, present, "connected");
    if present {
        conn.resend_inflight();
    }
    let peer_s = peer.to_string();
    let proto = if v5 { "5" } else { "3.1.1" };
    let user = conn.username.as_deref().unwrap_or("").to_string();
    let detail = [("peer", &*peer_s), ("protocol", proto), ("username", &user), ("auth", method.as_str())];
    shared.presence(&conn.client_id, "connected", &detail);
    Some(conn)
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

/// Writes and flushes: TLS and WebSocket streams buffer until flushed.
async fn write_out<S: AsyncWrite + Unpin>(stream: &mut S, buf: &[u8]) -> std::io::Result<()> {
    stream.write_all(buf).await?;
    stream.flush().await
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// A connected client.
struct Conn {
    shared: Arc<Shared>,
    protocol: Protocol,
    client_id: Arc<str>,
    /// User name that authorisation uses (certificate identity or CONNECT user name).
    username: Option<Arc<str>>,
    peer: SocketAddr,
    rbuf: BytesMut,
    wbuf: BytesMut,
    session: SessionState,
    generation: u64,
    kick: Arc<Notify>,
    will: Option<Will>,
    /// The identity user properties stamped on everything this client publishes
    /// (`Config::identity_properties`).
    stamp: Option<Vec<(ByteString, ByteString)>>,
    /// 1.5 × the keep-alive; zero when disabled.
    keep_alive: Duration,
    client_receive_max: usize,
    client_max_packet: usize,
    client_alias_max: u16,
    out_aliases: HashMap<ByteString, u16>,
    in_aliases: HashMap<u16, ByteString>,
    last_read: tokio::time::Instant,
    problem_info: bool,
    received: u64,
    sent: u64,
    batch: Batch,
    /// Changes were recorded for the store that must reach it before the next write.
    logged: bool,
    /// This client's place in its listener's connection limit.
    _slot: Option<crate::listener::Slot>,
}

impl Conn {
    async fn run<S>(&mut self, stream: &mut S) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handle = self.session.handle.clone();
        let kick = self.kick.clone();
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            return End::Shutdown;
        }
        let keep_alive = self.keep_alive;
        let sleep = tokio::time::sleep(if keep_alive.is_zero() { Duration::from_secs(86400) } else { keep_alive });
        tokio::pin!(sleep);
        // Bytes of the CONNECT read may already hold further packets.
        if let Some(end) = self.process_input() {
            return end;
        }
        self.pump();
        loop {
            if self.logged {
                // Acknowledgements below promise durability: the store gets the data first.
                self.shared.sync_store();
                self.logged = false;
            }
            while !self.wbuf.is_empty() {
                if let Err(e) = write_out(stream, &self.wbuf).await {
                    tracing::debug!(client = %self.client_id, error = %e, "write failed");
                    return End::Closed;
                }
                self.shared.stats.bytes_sent.fetch_add(self.wbuf.len() as u64, Ordering::Relaxed);
                self.wbuf.clear();
                self.pump();
            }
            self.flush_counters();
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                _ = kick.notified() => return End::TakenOver,
                _ = shutdown.changed() => return End::Shutdown,
                r = stream.read_buf(&mut self.rbuf) => {
                    match r {
                        Ok(0) => return End::Closed,
                        Err(e) => {
                            tracing::debug!(client = %self.client_id, error = %e, "read failed");
                            return End::Closed;
                        }
                        Ok(n) => {
                            self.shared.stats.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                            self.last_read = tokio::time::Instant::now();
                        }
                    }
                    if let Some(end) = self.process_input() {
                        return end;
                    }
                    self.pump();
                }
                _ = handle.ready() => self.pump(),
                _ = &mut sleep, if !keep_alive.is_zero() => {
                    let deadline = self.last_read + keep_alive;
                    if tokio::time::Instant::now() >= deadline {
                        return End::KeepAlive;
                    }
                    sleep.as_mut().reset(deadline);
                }
            }
        }
    }

    fn flush_counters(&mut self) {
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
    fn process_input(&mut self) -> Option<End> {
        let end = self.decode_all();
        if self.batch.flush(self.shared.store.as_ref()) {
            self.logged = true;
        }
        end
    }

    fn decode_all(&mut self) -> Option<End> {
        let max = self.shared.config.max_packet_size as usize;
        loop {
            match decode(&mut self.rbuf, self.protocol, max) {
                Ok(Some(p)) => {
                    if let Some(end) = self.handle(p) {
                        return Some(end);
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    let why = match e {
                        DecodeError::Malformed(w) | DecodeError::Protocol(w) => w,
                        DecodeError::TopicName(w) | DecodeError::TopicFilter(w) => w,
                        DecodeError::TooLarge { .. } => "packet exceeds the maximum packet size",
                        DecodeError::UnsupportedProtocol => "unsupported protocol",
                    };
                    return Some(End::Violation(e.reason_code(), why));
                }
            }
        }
    }

    /// Encodes a control packet; if it would exceed the client's maximum packet size, tries
    /// again without the optional properties (the spec allows dropping reason strings).
    fn send(&mut self, mut p: Packet) {
        let max = self.client_max_packet;
        if !self.problem_info {
            strip_problem_info(&mut p);
        }
        if let Err(EncodeError::TooLarge { .. }) = encode(&p, self.protocol, &mut self.wbuf, max) {
            strip_problem_info(&mut p);
            let _ = encode(&p, self.protocol, &mut self.wbuf, max);
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

    fn handle(&mut self, p: Packet) -> Option<End> {
        match p {
            Packet::Publish(p) => return self.on_publish(p),
            Packet::PubAck(a) => {
                if let Some(i) = self.session.find(a.packet_id) {
                    if self.session.inflight[i].stage == Stage::Published {
                        self.complete(i);
                    }
                }
            }
            Packet::PubRec(a) => {
                let mut reason = reason::PACKET_ID_NOT_FOUND;
                if let Some(i) = self.session.find(a.packet_id) {
                    reason = 0;
                    if a.reason >= 0x80 {
                        // The receiver refused the message: the exchange ends here.
                        self.complete(i);
                        return None;
                    }
                    self.session.inflight[i].stage = Stage::Released;
                }
                self.send(Packet::PubRel(Ack { packet_id: a.packet_id, reason, properties: Properties::default() }));
            }
            Packet::PubComp(a) => {
                if let Some(i) = self.session.find(a.packet_id) {
                    if self.session.inflight[i].stage == Stage::Released {
                        self.complete(i);
                    }
                }
            }
            Packet::PubRel(a) => {
                let reason =
                    if self.session.incoming_qos2.remove(&a.packet_id) { 0 } else { reason::PACKET_ID_NOT_FOUND };
                self.send(Packet::PubComp(Ack { packet_id: a.packet_id, reason, properties: Properties::default() }));
            }
            Packet::Subscribe(s) => return self.on_subscribe(s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(u),
            Packet::PingReq => self.send(Packet::PingResp),
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
            Packet::Connect(_) => return Some(End::Violation(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::Auth(_) => {
                return Some(End::Violation(reason::PROTOCOL_ERROR, "AUTH without an authentication method"))
            }
            other => {
                tracing::debug!(client = %self.client_id, packet = other.name(), "unexpected packet from client");
                return Some(End::Violation(reason::PROTOCOL_ERROR, "packet type not sent by clients"));
            }
        }
        None
    }

    fn on_publish(&mut self, mut p: Publish) -> Option<End> {
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
        let limit = self.shared.config.message_size_limit;
        if limit > 0 && p.payload.len() > limit {
            if self.protocol.is_v5() {
                return Some(End::Violation(reason::PACKET_TOO_LARGE, "payload exceeds message_size_limit"));
            }
            self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.send(Packet::PubAck(Ack::new(packet_id))),
                QoS::ExactlyOnce => {
                    self.session.incoming_qos2.insert(packet_id);
                    self.send(Packet::PubRec(Ack::new(packet_id)));
                }
            }
            return None;
        }
        let allowed =
            self.shared.security.load().authorize(&self.client_id, self.username.as_deref(), Access::Write, &p.topic);
        if !allowed {
            tracing::debug!(client = %self.client_id, topic = %p.topic, "publish not authorised");
            // MQTT 5 says why; 3.1.1 has no way to, so the message is acknowledged and dropped.
            let reason = if self.protocol.is_v5() { reason::NOT_AUTHORIZED } else { 0 };
            let ack = Ack { packet_id, reason, properties: Properties::default() };
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.send(Packet::PubAck(ack)),
                QoS::ExactlyOnce => {
                    if reason == 0 {
                        self.session.incoming_qos2.insert(packet_id);
                    }
                    self.send(Packet::PubRec(ack));
                }
            }
            return None;
        }
        if qos == QoS::ExactlyOnce {
            if self.session.incoming_qos2.contains(&packet_id) {
                // A resend of a message we already have: acknowledge, do not route again.
                self.send(Packet::PubRec(Ack::new(packet_id)));
                return None;
            }
            if self.session.incoming_qos2.len() >= self.shared.config.receive_maximum as usize {
                return Some(End::Violation(reason::RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded"));
            }
        }
        let mut properties = p.properties;
        properties.subscription_identifiers.clear();
        if let Some(stamp) = &self.stamp {
            apply_stamp(&mut properties, stamp);
        }
        let expires_at =
            properties.message_expiry_interval.take().map(|s| Instant::now() + Duration::from_secs(s as u64));
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
        let reason = if reached == 0 && self.protocol.is_v5() { reason::NO_MATCHING_SUBSCRIBERS } else { 0 };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(Packet::PubAck(Ack { packet_id, reason, properties: Properties::default() })),
            QoS::ExactlyOnce => {
                self.session.incoming_qos2.insert(packet_id);
                self.send(Packet::PubRec(Ack { packet_id, reason, properties: Properties::default() }));
            }
        }
        None
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Option<End> {
        let v5 = self.protocol.is_v5();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (raw, options) in s.filters {
            let parsed = match topic::parse_filter(&raw) {
                Ok(f) => f,
                Err(why) => {
                    tracing::debug!(client = %self.client_id, filter = %raw, why, "invalid topic filter");
                    reasons.push(if v5 { reason::TOPIC_FILTER_INVALID } else { 0x80 });
                    continue;
                }
            };
            if parsed.group.is_some() && options.no_local {
                return Some(End::Violation(reason::PROTOCOL_ERROR, "no local on a shared subscription"));
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
                reasons.push(if v5 { reason::NOT_AUTHORIZED } else { 0x80 });
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
            if existed && self.session.handle.durable.load(Ordering::Relaxed) {
                self.shared.record(Event::Unsubscribe { client_id: &self.client_id, filter: &raw });
                self.logged = true;
            }
            if let Ok(f) = topic::parse_filter(&raw) {
                self.shared.index.unsubscribe(f.group, f.filter, self.session.handle.id);
            }
            reasons.push(if existed { 0 } else { reason::NO_SUBSCRIPTION_EXISTED });
        }
        self.send(Packet::UnsubAck(SubAck { packet_id: u.packet_id, properties: Properties::default(), reasons }));
    }

    /// Moves queued deliveries to the wire as far as flow control and the write buffer allow.
    fn pump(&mut self) {
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
            let d = self.session.pending.pop_front().expect("front exists");
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
            } else if (self.out_aliases.len() as u16) < self.client_alias_max {
                alias = Some(self.out_aliases.len() as u16 + 1);
                new_alias = true;
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
        if new_alias {
            self.out_aliases.insert(msg.topic.clone(), alias.expect("alias chosen"));
        }
        if d.qos != QoS::AtMostOnce {
            out.packet_id = self.session.next_id();
        }
        encode_publish(&mut self.wbuf, self.protocol, &out);
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
                Stage::Released => self.send(Packet::PubRel(Ack::new(f.id))),
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

    /// Ends the connection: tells a v5 client why, handles the will and parks or ends the
    /// session.
    async fn finish<S>(mut self, stream: &mut S, end: End)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tracing::debug!(client = %self.client_id, peer = %self.peer, ?end, "connection ended");
        let notice = match end {
            End::Violation(code, why) => Some((code, why)),
            End::KeepAlive => Some((reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout")),
            End::TakenOver => Some((reason::SESSION_TAKEN_OVER, "another connection took over this client id")),
            End::Shutdown => Some((reason::SERVER_SHUTTING_DOWN, "server shutting down")),
            End::Disconnect { .. } | End::Closed => None,
        };
        if self.logged {
            self.shared.sync_store();
            self.logged = false;
        }
        // Acknowledgements already produced still go out, then the reason for closing.
        if let Some((code, why)) = notice {
            if self.protocol.is_v5() {
                self.send(Packet::Disconnect(Disconnect::with_reason(code, why)));
            }
        }
        if !self.wbuf.is_empty() && !matches!(end, End::Closed) {
            let _ = tokio::time::timeout(Duration::from_secs(1), write_out(stream, &self.wbuf)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        self.flush_counters();

        let shared = self.shared.clone();
        shared.stats.disconnected();
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
        self.session.handle.online.store(false, Ordering::Relaxed);
        let will = match end {
            End::Disconnect { will } => will.then(|| self.will.take()).flatten(),
            _ => self.will.take(),
        };
        let expiry = self.session.expiry;
        let client_id = self.client_id.clone();
        {
            let taken_over = matches!(end, End::TakenOver);
            let mut reg = shared.registry.lock();
            let Some(entry) = reg.get_mut(&client_id) else {
                return;
            };
            if entry.generation != self.generation {
                return;
            }
            entry.active = None;
            if taken_over {
                // The new connection decides what happens to the session. A will without delay
                // goes now; a delayed one is cancelled by the reconnect.
                entry.parked = Some(self.session);
                drop(reg);
                if let Some(w) = will.filter(|w| w.properties.will_delay_interval.unwrap_or(0) == 0) {
                    shared.publish_will(w);
                }
            } else if expiry == 0 {
                reg.remove(&client_id);
                drop(reg);
                shared.drop_subscriptions(&self.session);
                if self.session.handle.durable.load(Ordering::Relaxed) {
                    shared.record(Event::SessionEnd { client_id: &client_id });
                    shared.sync_store();
                }
                if let Some(w) = will {
                    shared.publish_will(w);
                }
            } else {
                entry.parked = Some(self.session);
                drop(reg);
                shared.schedule_expiry(client_id, self.generation, will, expiry);
            }
        }
        if notice.is_some() && !matches!(end, End::Shutdown) {
            linger(stream).await;
        }
    }
}

/// After the broker closed a connection on its own, reads and discards what the client still
/// sends, for a short while, before the socket is dropped. Dropping a socket with unread data
/// makes the kernel send a reset, and a client that is still writing would see that instead of
/// the DISCONNECT that says why.
async fn linger<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Removes reason strings and user properties, which a client may ask not to receive and
/// which are the first thing to go when a packet would be too large.
fn strip_problem_info(p: &mut Packet) {
    let props = match p {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => &mut a.properties,
        Packet::SubAck(s) | Packet::UnsubAck(s) => &mut s.properties,
        Packet::Disconnect(d) => &mut d.properties,
        _ => return,
    };
    props.reason_string = None;
    props.user_properties.clear();
}
