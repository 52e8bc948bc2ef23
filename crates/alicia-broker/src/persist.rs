//! Persistence: an append-only log of session and retained-message changes, with checksums.
//!
//! Every change that must survive a restart (a persistent session created or ended, a
//! subscription, a QoS 1/2 message queued for a persistent session, its final acknowledgement,
//! a retained message) is applied to an in-memory mirror and appended to a buffer. The buffer
//! is written to the log file before the broker acknowledges the messages it contains
//! ([`Store::sync`], called by a connection before it writes its PUBACKs), so a `kill -9` loses
//! nothing acknowledged; the operating system holds the written bytes even if the process dies.
//! Every `autosave_interval` (and at shutdown) the mirror is written as a fresh log to a
//! temporary file, fsynced and renamed over the old one ([`Store::compact`]), which bounds the
//! log's size and makes the state durable against power loss too.
//!
//! Records are `[length u32][crc32 u32][payload]`. On start the log is replayed up to the first
//! torn or damaged record. A file whose header is not ours, or whose records stop before its
//! end, is moved aside (`*.corrupt-<unix time>`) with a log line, and the broker starts with
//! what could be read: it never refuses to start because of its own store.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alicia_codec::{decode, encode_publish, Packet, Protocol, PublishOut, QoS, SubscriptionOptions};
use bytes::{Buf, BufMut, BytesMut};
use parking_lot::Mutex;

use crate::message::{Delivery, Message};
use crate::session::Subscription;

const MAGIC: &[u8; 16] = b"ALICIA-STORE\0\0\0\x01";
const FILE_NAME: &str = "alicia.store";

/// A change to durable state.
#[derive(Debug)]
pub enum Event<'a> {
    /// A persistent session exists with this expiry (created, resumed or changed).
    Session {
        /// Client id.
        client_id: &'a str,
        /// Session expiry interval in seconds.
        expiry: u32,
    },
    /// The session ended: forget it and everything queued for it.
    SessionEnd {
        /// Client id.
        client_id: &'a str,
    },
    /// A subscription was added or replaced.
    Subscribe {
        /// Client id.
        client_id: &'a str,
        /// Raw filter (with any `$share/` prefix).
        filter: &'a str,
        /// Options and identifier.
        sub: Subscription,
    },
    /// A subscription was removed.
    Unsubscribe {
        /// Client id.
        client_id: &'a str,
        /// Raw filter.
        filter: &'a str,
    },
    /// A QoS 1/2 message was queued for a persistent session under sequence number `seq`.
    Enqueue {
        /// Client id.
        client_id: &'a str,
        /// Per-session sequence number.
        seq: u64,
        /// The delivery.
        delivery: &'a Delivery,
    },
    /// The message `seq` needs no further delivery (acknowledged, expired or discarded).
    Done {
        /// Client id.
        client_id: &'a str,
        /// Sequence number.
        seq: u64,
    },
    /// A retained message was set (or cleared, with an empty payload).
    Retain(&'a Arc<Message>),
}

/// A persistent session as the store knows it.
#[derive(Debug, Default, Clone)]
pub struct DurableSession {
    /// Session expiry interval.
    pub expiry: u32,
    /// Subscriptions by raw filter.
    pub subs: BTreeMap<String, Subscription>,
    /// Messages not yet fully delivered, by sequence number.
    pub msgs: BTreeMap<u64, Delivery>,
}

/// What a restart brings back.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Sessions by client id.
    pub sessions: HashMap<Arc<str>, DurableSession>,
    /// Retained messages by topic.
    pub retained: HashMap<Arc<str>, Arc<Message>>,
}

struct Inner {
    file: File,
    buf: BytesMut,
    state: Recovered,
    log_len: u64,
}

/// The store of one broker.
pub struct Store {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovers its contents and compacts it.
    pub fn open(dir: &Path) -> io::Result<(Store, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let state = match File::open(&path) {
            Ok(mut f) => {
                let mut data = Vec::new();
                f.read_to_end(&mut data)?;
                let (state, damage) = replay(&data);
                if let Some(why) = damage {
                    let aside = dir.join(format!(
                        "{FILE_NAME}.corrupt-{}",
                        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
                    ));
                    std::fs::rename(&path, &aside)?;
                    tracing::error!(
                        store = %path.display(), moved_to = %aside.display(), why,
                        sessions = state.sessions.len(), retained = state.retained.len(),
                        "persistence store damaged: kept what could be read, moved the file aside"
                    );
                }
                state
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Recovered::default(),
            Err(e) => return Err(e),
        };
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let store = Store {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner { file, buf: BytesMut::new(), state: Recovered::default(), log_len: 0 }),
        };
        let recovered = Recovered { sessions: state.sessions.clone(), retained: state.retained.clone() };
        store.inner.lock().state = state;
        store.compact()?;
        Ok((store, recovered))
    }

    /// Applies a change to the mirror and queues it for the log.
    pub fn record(&self, event: Event<'_>) {
        let mut inner = self.inner.lock();
        if append(&mut inner.buf, &event) {
            apply(&mut inner.state, event);
        } else {
            tracing::warn!("a message too large to encode was not written to the persistence store");
        }
    }

    /// Writes queued changes to the log file. Survives a crash of this process (the kernel has
    /// the bytes); [`Store::compact`] makes them survive power loss.
    pub fn sync(&self) -> io::Result<()> {
        let mut inner = self.inner.lock();
        if inner.buf.is_empty() {
            return Ok(());
        }
        let Inner { file, buf, log_len, .. } = &mut *inner;
        file.write_all(buf)?;
        *log_len += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// Rewrites the log as the current state: new file, fsync, rename, fsync the directory.
    pub fn compact(&self) -> io::Result<()> {
        let mut inner = self.inner.lock();
        let mut out = BytesMut::new();
        out.put_slice(MAGIC);
        for (id, s) in &inner.state.sessions {
            let mut evs = vec![Event::Session { client_id: id, expiry: s.expiry }];
            evs.extend(s.subs.iter().map(|(f, sub)| Event::Subscribe { client_id: id, filter: f, sub: *sub }));
            evs.extend(s.msgs.iter().map(|(seq, d)| Event::Enqueue { client_id: id, seq: *seq, delivery: d }));
            for ev in evs {
                append(&mut out, &ev);
            }
        }
        for m in inner.state.retained.values() {
            append(&mut out, &Event::Retain(m));
        }
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        inner.file = OpenOptions::new().append(true).open(&path)?;
        inner.log_len = out.len() as u64;
        inner.buf.clear(); // everything buffered is part of the state just written
        Ok(())
    }
}

/// Appends one sealed record; on an encoding failure appends nothing and returns false.
fn append(out: &mut BytesMut, ev: &Event<'_>) -> bool {
    let start = out.len();
    out.put_u64(0); // length and checksum, filled in by seal
    if encode_event(ev, out).is_err() {
        out.truncate(start);
        return false;
    }
    seal(out, start);
    true
}

fn seal(buf: &mut BytesMut, start: usize) {
    let payload = &buf[start + 8..];
    // A record holds at most one PUBLISH (≤ 256 MiB) and a few fields.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_be_bytes());
}

fn apply(state: &mut Recovered, event: Event<'_>) {
    match event {
        Event::Session { client_id, expiry } => {
            state.sessions.entry(Arc::from(client_id)).or_default().expiry = expiry;
        }
        Event::SessionEnd { client_id } => {
            state.sessions.remove(client_id);
        }
        Event::Subscribe { client_id, filter, sub } => {
            if let Some(s) = state.sessions.get_mut(client_id) {
                s.subs.insert(filter.to_string(), sub);
            }
        }
        Event::Unsubscribe { client_id, filter } => {
            if let Some(s) = state.sessions.get_mut(client_id) {
                s.subs.remove(filter);
            }
        }
        Event::Enqueue { client_id, seq, delivery } => {
            if let Some(s) = state.sessions.get_mut(client_id) {
                s.msgs.insert(seq, delivery.clone());
            }
        }
        Event::Done { client_id, seq } => {
            if let Some(s) = state.sessions.get_mut(client_id) {
                s.msgs.remove(&seq);
            }
        }
        Event::Retain(m) => {
            if m.payload.is_empty() {
                state.retained.remove(&*m.topic);
            } else {
                state.retained.insert(Arc::from(&*m.topic), m.clone());
            }
        }
    }
}

// Record payloads: a tag byte, then fields. Strings are u16-length-prefixed; messages are
// stored as MQTT 5 PUBLISH packets (our own codec reads them back) plus their expiry time.
const T_SESSION: u8 = 1;
const T_END: u8 = 2;
const T_SUB: u8 = 3;
const T_UNSUB: u8 = 4;
const T_ENQUEUE: u8 = 5;
const T_DONE: u8 = 6;
const T_RETAIN: u8 = 7;

/// Client ids and filters came from MQTT strings, so they fit a 16-bit length; one that did
/// not would fail the record rather than corrupt it.
fn put_str(out: &mut BytesMut, s: &str) -> Result<(), alicia_codec::EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| alicia_codec::EncodeError::FieldTooLong { len: s.len() })?;
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

fn put_message(out: &mut BytesMut, m: &Message) -> Result<(), alicia_codec::EncodeError> {
    let expires = m.expires_at.map_or(0, |at| {
        let left = at.saturating_duration_since(Instant::now());
        u64::try_from((SystemTime::now() + left).duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
            .unwrap_or(u64::MAX)
    });
    out.put_u64(expires);
    let mut packet = BytesMut::new();
    let p = PublishOut {
        dup: false,
        qos: m.qos,
        retain: m.retain,
        topic: &m.topic,
        packet_id: 1,
        properties: &m.properties,
        payload: &m.payload,
    };
    encode_publish(&mut packet, Protocol::V5, &p)?;
    out.put_u32(u32::try_from(packet.len()).map_err(|_| alicia_codec::EncodeError::Overflow)?);
    out.put_slice(&packet);
    Ok(())
}

fn encode_event(e: &Event<'_>, out: &mut BytesMut) -> Result<(), alicia_codec::EncodeError> {
    match e {
        Event::Session { client_id, expiry } => {
            out.put_u8(T_SESSION);
            put_str(out, client_id)?;
            out.put_u32(*expiry);
        }
        Event::SessionEnd { client_id } => {
            out.put_u8(T_END);
            put_str(out, client_id)?;
        }
        Event::Subscribe { client_id, filter, sub } => {
            out.put_u8(T_SUB);
            put_str(out, client_id)?;
            put_str(out, filter)?;
            let o = sub.options;
            out.put_u8(
                o.qos as u8
                    | (o.no_local as u8) << 2
                    | (o.retain_as_published as u8) << 3
                    | (o.retain_handling as u8) << 4,
            );
            out.put_u32(sub.id.unwrap_or(0));
        }
        Event::Unsubscribe { client_id, filter } => {
            out.put_u8(T_UNSUB);
            put_str(out, client_id)?;
            put_str(out, filter)?;
        }
        Event::Enqueue { client_id, seq, delivery } => {
            out.put_u8(T_ENQUEUE);
            put_str(out, client_id)?;
            out.put_u64(*seq);
            out.put_u8(delivery.qos as u8 | (delivery.retain as u8) << 2);
            // At most one identifier per subscription of the session: far below 65,535.
            out.put_u16(u16::try_from(delivery.sub_ids.len()).unwrap_or(u16::MAX));
            for id in delivery.sub_ids.iter().take(usize::from(u16::MAX)) {
                out.put_u32(*id);
            }
            put_message(out, &delivery.msg)?;
        }
        Event::Done { client_id, seq } => {
            out.put_u8(T_DONE);
            put_str(out, client_id)?;
            out.put_u64(*seq);
        }
        Event::Retain(m) => {
            out.put_u8(T_RETAIN);
            put_message(out, m)?;
        }
    }
    Ok(())
}

/// A record that does not parse: the log is damaged from here on.
struct Bad;

struct Rd<'a>(&'a [u8]);

impl Rd<'_> {
    fn need(&self, n: usize) -> Result<(), Bad> {
        if self.0.remaining() < n {
            Err(Bad)
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, Bad> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u16(&mut self) -> Result<u16, Bad> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    fn u32(&mut self) -> Result<u32, Bad> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn u64(&mut self) -> Result<u64, Bad> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn bytes(&mut self, n: usize) -> Result<&[u8], Bad> {
        self.need(n)?;
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn str(&mut self) -> Result<String, Bad> {
        let n = self.u16()? as usize;
        String::from_utf8(self.bytes(n)?.to_vec()).map_err(|_| Bad)
    }
    fn message(&mut self) -> Result<Option<Arc<Message>>, Bad> {
        let expires = self.u64()?;
        let n = self.u32()? as usize;
        let mut packet = BytesMut::from(self.bytes(n)?);
        let Ok(Some(Packet::Publish(p))) = decode(&mut packet, Protocol::V5, 0) else { return Err(Bad) };
        let expires_at = if expires == 0 {
            None
        } else {
            let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
                .unwrap_or(u64::MAX);
            if expires <= now_ms {
                return Ok(None); // expired while the broker was down
            }
            Some(Instant::now() + Duration::from_millis(expires - now_ms))
        };
        Ok(Some(Arc::new(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties: p.properties,
            expires_at,
            origin: 0,
        })))
    }
}

fn qos(v: u8) -> Result<QoS, Bad> {
    QoS::from_u8(v & 3).ok_or(Bad)
}

fn decode_record(payload: &[u8], state: &mut Recovered) -> Result<(), Bad> {
    let mut r = Rd(payload);
    match r.u8()? {
        T_SESSION => {
            let id = r.str()?;
            let expiry = r.u32()?;
            apply(state, Event::Session { client_id: &id, expiry });
        }
        T_END => {
            let id = r.str()?;
            apply(state, Event::SessionEnd { client_id: &id });
        }
        T_SUB => {
            let id = r.str()?;
            let filter = r.str()?;
            let o = r.u8()?;
            let sub_id = r.u32()?;
            let options = SubscriptionOptions {
                qos: qos(o)?,
                no_local: o & 4 != 0,
                retain_as_published: o & 8 != 0,
                retain_handling: match (o >> 4) & 3 {
                    0 => alicia_codec::RetainHandling::SendAtSubscribe,
                    1 => alicia_codec::RetainHandling::SendIfNew,
                    _ => alicia_codec::RetainHandling::DoNotSend,
                },
            };
            let sub = Subscription { options, id: (sub_id != 0).then_some(sub_id) };
            apply(state, Event::Subscribe { client_id: &id, filter: &filter, sub });
        }
        T_UNSUB => {
            let id = r.str()?;
            let filter = r.str()?;
            apply(state, Event::Unsubscribe { client_id: &id, filter: &filter });
        }
        T_ENQUEUE => {
            let id = r.str()?;
            let seq = r.u64()?;
            let flags = r.u8()?;
            let n = r.u16()? as usize;
            let mut sub_ids = Vec::with_capacity(n);
            for _ in 0..n {
                sub_ids.push(r.u32()?);
            }
            if let Some(msg) = r.message()? {
                let delivery = Delivery {
                    msg,
                    qos: qos(flags)?,
                    retain: flags & 4 != 0,
                    sub_ids: sub_ids.into_boxed_slice(),
                    seq,
                };
                apply(state, Event::Enqueue { client_id: &id, seq, delivery: &delivery });
            }
        }
        T_DONE => {
            let id = r.str()?;
            let seq = r.u64()?;
            apply(state, Event::Done { client_id: &id, seq });
        }
        T_RETAIN => {
            if let Some(m) = r.message()? {
                apply(state, Event::Retain(&m));
            }
        }
        _ => return Err(Bad),
    }
    if r.0.is_empty() {
        Ok(())
    } else {
        Err(Bad)
    }
}

/// Replays a log. Returns the state and, if the file is damaged, why.
fn replay(data: &[u8]) -> (Recovered, Option<String>) {
    let mut state = Recovered::default();
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        return (state, Some("not an Alicia store (bad header)".into()));
    }
    let mut pos = MAGIC.len();
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.len() < 8 {
            return (state, Some(format!("torn record at byte {pos}")));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if rest.len() < 8 + len {
            return (state, Some(format!("torn record at byte {pos}")));
        }
        let payload = &rest[8..8 + len];
        if crc32fast::hash(payload) != crc {
            return (state, Some(format!("checksum mismatch at byte {pos}")));
        }
        if decode_record(payload, &mut state).is_err() {
            return (state, Some(format!("unreadable record at byte {pos}")));
        }
        pos += 8 + len;
    }
    (state, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alicia_codec::{ByteString, Bytes, Properties};

    fn msg(topic: &str, payload: &'static [u8]) -> Arc<Message> {
        Arc::new(Message {
            topic: ByteString::from(topic),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties { content_type: Some("text/plain".into()), ..Properties::default() },
            expires_at: Some(Instant::now() + Duration::from_secs(3600)),
            origin: 0,
        })
    }

    #[test]
    fn survives_reopen_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (store, rec) = Store::open(dir.path()).unwrap();
        assert!(rec.sessions.is_empty());
        store.record(Event::Session { client_id: "c", expiry: 60 });
        let sub =
            Subscription { options: SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() }, id: Some(4) };
        store.record(Event::Subscribe { client_id: "c", filter: "a/#", sub });
        let d =
            Delivery { msg: msg("a/b", b"one"), qos: QoS::AtLeastOnce, retain: false, sub_ids: Box::new([4]), seq: 1 };
        store.record(Event::Enqueue { client_id: "c", seq: 1, delivery: &d });
        store.record(Event::Enqueue { client_id: "c", seq: 2, delivery: &d });
        store.record(Event::Done { client_id: "c", seq: 1 });
        let mut r = msg("r/1", b"kept");
        Arc::get_mut(&mut r).unwrap().retain = true;
        store.record(Event::Retain(&r));
        store.sync().unwrap();
        drop(store);
        // A torn half-record at the end (a crash mid-write) loses only that record.
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0, 0, 0, 40, 1, 2]).unwrap();
        drop(f);
        let (_store, rec) = Store::open(dir.path()).unwrap();
        let s = &rec.sessions["c"];
        assert_eq!(s.expiry, 60);
        assert_eq!(s.subs["a/#"].id, Some(4));
        assert_eq!(s.msgs.keys().copied().collect::<Vec<_>>(), vec![2]);
        let m = &s.msgs[&2].msg;
        assert_eq!(&m.payload[..], b"one");
        assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
        assert!(m.expires_at.is_some());
        assert_eq!(&rec.retained["r/1"].payload[..], b"kept");
        // The damaged file was moved aside, not deleted.
        assert!(std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("corrupt")));
    }

    #[test]
    fn garbage_file_is_moved_aside_and_the_store_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"this is not a store").unwrap();
        let (store, rec) = Store::open(dir.path()).unwrap();
        assert!(rec.sessions.is_empty() && rec.retained.is_empty());
        store.record(Event::Session { client_id: "x", expiry: 5 });
        store.sync().unwrap();
        drop(store);
        let (_s, rec) = Store::open(dir.path()).unwrap();
        assert_eq!(rec.sessions["x"].expiry, 5);
    }
}
