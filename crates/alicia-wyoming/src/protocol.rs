//! Wyoming's framing: one JSON header line (`type`, `version`, optional `data`, `data_length`,
//! `payload_length`), then `data_length` bytes of JSON merged into `data`, then
//! `payload_length` bytes of payload (audio). As the reference implementation (PyPI `wyoming`)
//! reads and writes it.
//!
//! Hand-written: no maintained Rust crate implements Wyoming, and the framing is this small.
//! Every length is bounded ([`Limits`]) so a peer cannot make the server buffer without limit.

use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version we speak (the PyPI reference's, which we are tested against).
pub const VERSION: &str = "1.10.0";

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Option<Vec<u8>>,
}

impl Event {
    pub fn new(kind: &str) -> Self {
        Event { kind: kind.to_string(), data: Map::new(), payload: None }
    }

    pub fn with_data(kind: &str, data: Value) -> Self {
        let data = match data {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Event { kind: kind.to_string(), data, payload: None }
    }

    pub fn with_payload(mut self, payload: Vec<u8>) -> Self {
        self.payload = Some(payload);
        self
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        self.data.get(key).and_then(Value::as_u64)
    }

    /// The PCM format an `audio-start` (or a chunk) names: `rate`, `width`, `channels`, with
    /// Wyoming's defaults (16 kHz, 16-bit, mono) for absent fields.
    pub fn pcm_format(&self) -> Result<alicia_audio::pcm::PcmFormat, alicia_audio::AudioError> {
        alicia_audio::pcm::PcmFormat::from_fields(
            self.u64("rate").unwrap_or(16_000),
            self.u64("width").unwrap_or(2),
            self.u64("channels").unwrap_or(1),
        )
    }

    /// `error` with a text and a code.
    pub fn error(text: &str, code: &str) -> Self {
        Event::with_data("error", serde_json::json!({"text": text, "code": code}))
    }
}

/// Bounds on what a peer may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header: usize,
    pub max_data: usize,
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // An audio chunk is a few KB; 4 MB is generous for one.
        Limits { max_header: 64 << 10, max_data: 1 << 20, max_payload: 4 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the header line is longer than {0} bytes")]
    HeaderTooLong(usize),
    #[error("the header is not a JSON object with a `type`: {0}")]
    BadHeader(String),
    #[error("{what} of {len} bytes is over the limit of {max}")]
    TooLarge { what: &'static str, len: u64, max: usize },
    #[error("the data is not a JSON object: {0}")]
    BadData(String),
    #[error("the connection closed in the middle of an event")]
    Truncated,
    #[error("{0} bytes after the event's payload (one message holds one event)")]
    Trailing(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one event; `None` at a clean end of stream.
pub async fn read_event<R: AsyncBufRead + Unpin>(r: &mut R, limits: &Limits) -> Result<Option<Event>, ProtocolError> {
    let mut line = Vec::new();
    // Read the header line without letting it grow past the limit.
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return if line.iter().all(u8::is_ascii_whitespace) { Ok(None) } else { Err(ProtocolError::Truncated) };
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > limits.max_header {
            return Err(ProtocolError::HeaderTooLong(limits.max_header));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            if line.iter().all(u8::is_ascii_whitespace) {
                line.clear(); // blank lines between events are tolerated
                continue;
            }
            break;
        }
    }
    let Header { kind, mut data, data_len, payload_len } = Header::parse(&line, limits)?;
    if data_len > 0 {
        merge_data(&mut data, &read_exact(r, data_len).await?)?;
    }
    let payload = if payload_len > 0 { Some(read_exact(r, payload_len).await?) } else { None };
    Ok(Some(Event { kind, data, payload }))
}

/// An event's header line, read: its type, the data it carries inline, and the lengths of
/// the data and payload that follow it (each within `limits`). One parser for the stream
/// ([`read_event`]) and for whole messages ([`decode`]), so both refuse the same things.
struct Header {
    kind: String,
    data: Map<String, Value>,
    data_len: usize,
    payload_len: usize,
}

impl Header {
    fn parse(line: &[u8], limits: &Limits) -> Result<Header, ProtocolError> {
        let header: Value = serde_json::from_slice(line).map_err(|e| ProtocolError::BadHeader(e.to_string()))?;
        let Value::Object(mut header) = header else { return Err(ProtocolError::BadHeader("not an object".into())) };
        let kind = match header.remove("type") {
            Some(Value::String(t)) if !t.is_empty() => t,
            _ => return Err(ProtocolError::BadHeader("no `type`".into())),
        };
        let data = match header.remove("data") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(ProtocolError::BadData("`data` is not an object".into())),
        };
        let length = |key: &str, what: &'static str, max: usize| -> Result<usize, ProtocolError> {
            let len = match header.get(key) {
                None | Some(Value::Null) => 0,
                Some(v) => v.as_u64().ok_or_else(|| ProtocolError::BadHeader(format!("`{key}` is not a length")))?,
            };
            if len > max as u64 {
                return Err(ProtocolError::TooLarge { what, len, max });
            }
            Ok(len as usize)
        };
        let data_len = length("data_length", "data", limits.max_data)?;
        let payload_len = length("payload_length", "payload", limits.max_payload)?;
        Ok(Header { kind, data, data_len, payload_len })
    }
}

/// Adds the data that followed the header (a JSON object) to the header's own.
fn merge_data(data: &mut Map<String, Value>, bytes: &[u8]) -> Result<(), ProtocolError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => {
            data.extend(m);
            Ok(())
        }
        Ok(_) => Err(ProtocolError::BadData("not an object".into())),
        Err(e) => Err(ProtocolError::BadData(e.to_string())),
    }
}

async fn read_exact<R: AsyncBufRead + Unpin>(r: &mut R, n: usize) -> Result<Vec<u8>, ProtocolError> {
    let mut buf = vec![0u8; n];
    match r.read_exact(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProtocolError::Truncated),
        Err(e) => Err(e.into()),
    }
}

/// The bytes of one event, as the reference writes them (data after the header line).
pub fn encode(event: &Event) -> Vec<u8> {
    let mut header = Map::new();
    header.insert("type".into(), Value::String(event.kind.clone()));
    header.insert("version".into(), Value::String(VERSION.into()));
    let data = if event.data.is_empty() {
        None
    } else {
        Some(serde_json::to_vec(&event.data).expect("a JSON map serialises"))
    };
    if let Some(d) = &data {
        header.insert("data_length".into(), d.len().into());
    }
    if let Some(p) = event.payload.as_ref().filter(|p| !p.is_empty()) {
        header.insert("payload_length".into(), p.len().into());
    }
    let mut out = serde_json::to_vec(&header).expect("a JSON map serialises");
    out.push(b'\n');
    if let Some(d) = data {
        out.extend_from_slice(&d);
    }
    if let Some(p) = event.payload.as_ref().filter(|p| !p.is_empty()) {
        out.extend_from_slice(p);
    }
    out
}

/// One event from a message that holds exactly one (an MQTT message on a satellite's topic,
/// see `alicia-voice`): the header line, its `data_length` bytes of data, then its
/// `payload_length` bytes of payload, and nothing after. Synchronous: the whole message is
/// in memory.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Event, ProtocolError> {
    let end = match bytes.iter().position(|b| *b == b'\n') {
        Some(i) if i < limits.max_header => i,
        Some(_) => return Err(ProtocolError::HeaderTooLong(limits.max_header)),
        // A header alone may leave out its newline.
        None if bytes.len() <= limits.max_header => bytes.len(),
        None => return Err(ProtocolError::HeaderTooLong(limits.max_header)),
    };
    let rest = &bytes[(end + 1).min(bytes.len())..];
    let Header { kind, mut data, data_len, payload_len } = Header::parse(&bytes[..end], limits)?;
    if rest.len() < data_len + payload_len {
        return Err(ProtocolError::Truncated);
    }
    if rest.len() > data_len + payload_len {
        return Err(ProtocolError::Trailing(rest.len() - data_len - payload_len));
    }
    if data_len > 0 {
        merge_data(&mut data, &rest[..data_len])?;
    }
    let payload = (payload_len > 0).then(|| rest[data_len..].to_vec());
    Ok(Event { kind, data, payload })
}

pub async fn write_event<W: AsyncWrite + Unpin>(w: &mut W, event: &Event) -> std::io::Result<()> {
    w.write_all(&encode(event)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8]) -> Vec<Result<Option<Event>, String>> {
        let mut r = tokio::io::BufReader::new(bytes);
        let mut out = Vec::new();
        loop {
            match read_event(&mut r, &Limits::default()).await {
                Ok(None) => break,
                Ok(Some(e)) => out.push(Ok(Some(e))),
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn round_trip_and_the_references_layouts() {
        let ev = Event::with_data("audio-chunk", serde_json::json!({"rate": 16000, "width": 2, "channels": 1}))
            .with_payload(vec![1, 2, 3, 4]);
        let bytes = encode(&ev);
        let got = read_all(&bytes).await;
        assert_eq!(got, [Ok(Some(ev))]);
        // Data inline in the header (older peers), and data split between both.
        let inline = b"{\"type\": \"transcript\", \"data\": {\"text\": \"hi\"}}\n";
        let split = b"{\"type\": \"x\", \"data\": {\"a\": 1}, \"data_length\": 8}\n{\"b\": 2}";
        let got = read_all(&[&inline[..], &split[..]].concat()).await;
        let e0 = got[0].clone().unwrap().unwrap();
        assert_eq!((e0.kind.as_str(), e0.str("text")), ("transcript", Some("hi")));
        let e1 = got[1].clone().unwrap().unwrap();
        assert_eq!((e1.u64("a"), e1.u64("b")), (Some(1), Some(2)));
        // An event without data has no data_length.
        assert_eq!(
            String::from_utf8(encode(&Event::new("describe"))).unwrap(),
            "{\"type\":\"describe\",\"version\":\"1.10.0\"}\n"
        );
    }

    #[test]
    fn one_event_per_message() {
        let ev = Event::with_data("audio-chunk", serde_json::json!({"rate": 16000})).with_payload(vec![9; 640]);
        assert_eq!(decode(&encode(&ev), &Limits::default()).unwrap(), ev);
        let bare = decode(b"{\"type\": \"audio-stop\"}", &Limits::default()).unwrap();
        assert_eq!((bare.kind.as_str(), bare.payload), ("audio-stop", None));
        let mut extra = encode(&ev);
        extra.push(0);
        assert!(matches!(decode(&extra, &Limits::default()), Err(ProtocolError::Trailing(1))));
        let short = &encode(&ev)[..100];
        assert!(matches!(decode(short, &Limits::default()), Err(ProtocolError::Truncated)));
        for bad in [&b""[..], b"\x00\x01", b"{}", b"[1]\n"] {
            assert!(decode(bad, &Limits::default()).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn bad_frames_are_errors_not_panics() {
        for (bytes, want) in [
            (&b"not json\n"[..], "not a JSON object"),
            (b"[1,2]\n", "not a JSON object"),
            (b"{\"data\": {}}\n", "no `type`"),
            (b"{\"type\": \"x\", \"payload_length\": 10}\nabc", "closed in the middle"),
            (b"{\"type\": \"x\", \"payload_length\": 99999999999}\n", "over the limit"),
            (b"{\"type\": \"x\", \"data_length\": -1}\n", "not a length"),
            (b"{\"type\": \"x\", \"data_length\": 3}\n[1]", "not an object"),
            (b"{\"type\": \"x\"", "closed in the middle"),
        ] {
            let got = read_all(bytes).await;
            match got.last() {
                Some(Err(e)) => assert!(e.contains(want), "{:?}: {e}", String::from_utf8_lossy(bytes)),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
            }
        }
        let long = vec![b'a'; 70 << 10];
        assert!(read_all(&long).await.last().unwrap().as_ref().unwrap_err().contains("longer than"));
    }
}
