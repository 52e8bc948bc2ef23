//! Test services and the scenarios that run against every broker (the brokers, proxy and
//! observer come from `alicia-testkit`).

#![allow(dead_code)]

pub use alicia_testkit::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alicia_envelope::{Destination, Envelope, MessageId};
use alicia_sdk::{BusService, Context, HandlerResult, ServiceError};
use parking_lot::Mutex;
use serde_json::{json, Value};

/// Handled messages: (instance, message id).
pub type Log = Arc<Mutex<Vec<(String, MessageId)>>>;

/// Answers `{"echo": data, "instance": id}`; `{"fail": true}` fails with code `refused`,
/// `{"panic": true}` panics, `{"sleep_ms": n}` waits first.
pub struct Echo {
    pub name: &'static str,
    pub log: Log,
}

impl Echo {
    pub fn new(name: &'static str) -> (Echo, Log) {
        let log = Log::default();
        (Echo { name, log: log.clone() }, log)
    }
}

impl BusService for Echo {
    fn name(&self) -> &str {
        self.name
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        self.log.lock().push((ctx.bus().instance().to_string(), envelope.message_id));
        let data = envelope.payload.data;
        if let Some(ms) = data.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if data.get("fail").is_some() {
            return Err(ServiceError::new("refused", "asked to fail").into());
        }
        if data.get("panic").is_some() {
            panic!("asked to panic");
        }
        Ok(Some(json!({ "echo": data, "instance": ctx.bus().instance() })))
    }
}

/// A service that answers by asking another: `voice` transcribes through `stt`.
pub struct Voice;

impl BusService for Voice {
    fn name(&self) -> &str {
        "voice"
    }

    async fn handle(&self, ctx: &Context, envelope: Envelope) -> HandlerResult {
        let stt = ctx.bus().request(Destination::service("stt"), envelope.payload.data, Duration::from_secs(5)).await?;
        Ok(Some(json!({ "transcript": stt.payload.data["echo"]["audio"], "by": stt.source })))
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios run against each broker.

/// Two services talk request/response: a client asks `voice`, which asks `stt`.
pub async fn request_response(addr: SocketAddr) {
    let (stt, stt_log) = Echo::new("stt");
    let _stt = online(config(addr), stt).await;
    let _voice = online(config(addr), Voice).await;
    let tester = client(config(addr)).await;

    let response = tester
        .request(Destination::service("voice"), json!({ "audio": "hello world" }), WAIT)
        .await
        .expect("voice answers");
    assert_eq!(response.payload.data["transcript"], "hello world");
    assert_eq!(response.payload.data["by"], "stt");
    assert_eq!(response.source, "voice");
    assert_eq!(response.destination, Destination::service("tester"));
    assert_eq!(response.message_type, alicia_envelope::MessageType::Response);
    response.validate().unwrap();
    assert_eq!(stt_log.lock().len(), 1);

    // Directly, several at once: each gets its own answer.
    let calls = (0..10).map(|i| {
        let bus = tester.bus().clone();
        async move { (i, bus.request(Destination::service("stt"), json!({ "n": i }), WAIT).await) }
    });
    for (i, result) in futures_join_all(calls).await {
        let r = result.unwrap();
        assert_eq!(r.payload.data["echo"]["n"], i);
        assert!(r.correlation_id.is_some());
    }

    // An error response is an error, with the handler's code.
    let err = tester.request(Destination::service("stt"), json!({ "fail": true }), WAIT).await.unwrap_err();
    match &err {
        alicia_sdk::SdkError::Remote { from, code, message, .. } => {
            assert_eq!((from.as_str(), code.as_str(), message.as_str()), ("stt", "refused", "asked to fail"))
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    assert!(err.to_string().contains("`stt` refused request"), "{err}");
}

/// Two instances of one service share its inbox: every request is handled once, and both
/// instances handle some.
pub async fn shared_inbox(addr: SocketAddr) {
    let (a, log) = Echo::new("worker");
    let b = Echo { name: "worker", log: log.clone() };
    let mut config_a = config(addr);
    config_a.instance_id = Some("a".into());
    let mut config_b = config(addr);
    config_b.instance_id = Some("b".into());
    let _a = online(config_a, a).await;
    let _b = online(config_b, b).await;
    let tester = client(config(addr)).await;

    let n = 40;
    let calls = (0..n).map(|i| {
        let bus = tester.bus().clone();
        async move { bus.request(Destination::service("worker"), json!({ "n": i }), WAIT).await.unwrap() }
    });
    let responses = futures_join_all(calls).await;
    let mut by_instance = std::collections::HashMap::<String, usize>::new();
    for r in &responses {
        *by_instance.entry(r.payload.data["instance"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let handled = log.lock().clone();
    assert_eq!(handled.len(), n, "each request handled exactly once");
    let mut ids: Vec<MessageId> = handled.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no request handled twice");
    assert!(by_instance.get("a").copied().unwrap_or(0) > 0, "instance a got none: {by_instance:?}");
    assert!(by_instance.get("b").copied().unwrap_or(0) > 0, "instance b got none: {by_instance:?}");
}

/// The will: a service whose connection dies is marked offline on its status topic.
pub async fn will_marks_offline(addr: SocketAddr) {
    let mut watcher = Observer::start(addr, &["alicia/system/services/lamp/status"]).await;
    let (lamp, _) = Echo::new("lamp");
    let running = online(config(addr), lamp).await;
    assert_eq!(&watcher.next().await.payload[..], b"online");
    // Gone without a DISCONNECT, as in a crash.
    drop(running);
    let p = watcher.next().await;
    assert_eq!(&p.payload[..], b"offline");
    // Retained: a newcomer reads offline.
    let mut late = Observer::start(addr, &["alicia/system/services/lamp/status"]).await;
    let p = late.next().await;
    assert!(p.retain);
    assert_eq!(&p.payload[..], b"offline");
}

/// `join_all` without the futures crate: spawn each, await in order.
pub async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
