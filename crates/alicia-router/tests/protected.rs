//! Envelope protection through the router, against Alicia's broker and Mosquitto: a signed and
//! encrypted envelope sent to the routing entry topic reaches a service that requires
//! signatures, which verifies and decrypts it after the router's hop; the router never sees the
//! plaintext; the same bytes with a changed ttl are dead-lettered with the reason.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use alicia_envelope::{Destination, Envelope};
use alicia_router::RouterConfig;
use alicia_sdk::{BusService, Context, DeadLetter, EnvelopeSecurity, HandlerResult};
use common::*;
use parking_lot::Mutex;
use serde_json::{json, Value};

const ROUTER_INBOX: &str = "alicia/services/router/inbox";

/// Records what it was given (after the SDK verified and decrypted it).
struct Recorder(Arc<Mutex<Vec<Envelope>>>);

impl BusService for Recorder {
    fn name(&self) -> &str {
        "stt"
    }

    async fn handle(&self, _ctx: &Context, envelope: Envelope) -> HandlerResult {
        self.0.lock().push(envelope);
        Ok(None)
    }
}

async fn signed_envelope_routed_and_verified(addr: SocketAddr) {
    let home = home_with_keys(&["stt", "tester", "router"]);
    let mut wire = Observer::start(addr, &["alicia/services/stt/inbox"]).await;
    let mut dead = Observer::start(addr, &[DEAD]).await;

    let mut router_cfg = RouterConfig::new(config(addr));
    router_cfg.service.security = EnvelopeSecurity::from_home(home.path(), "router").unwrap();
    let router = alicia_router::start(router_cfg).await.unwrap();
    router.wait_online(WAIT).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stt_cfg = config(addr);
    stt_cfg.security = protected(home.path(), "stt");
    let _stt = online(stt_cfg, Recorder(seen.clone())).await;

    // The tester seals an envelope for `stt` and hands it to the router.
    let secret = "unlock the back door";
    let envelope = Envelope::command("tester", Destination::service("stt"), json!({ "text": secret }));
    let sealed = protected(home.path(), "tester").seal(&envelope).unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains(secret));
    wire.publish(ROUTER_INBOX, sealed.clone(), None).await;

    // On the wire after the router: one hop more, the signature and the ciphertext unchanged.
    let forwarded = wire.next_on("alicia/services/stt/inbox").await;
    assert!(!String::from_utf8_lossy(&forwarded.payload).contains(secret));
    let on_wire = Envelope::parse(&forwarded.payload).unwrap();
    assert_eq!(on_wire.routing.hops, 1);
    let sent: Value = serde_json::from_slice(&sealed).unwrap();
    assert_eq!(serde_json::to_value(&on_wire.security).unwrap(), sent["security"]);

    // The service verified the signature (it requires one) and read the plaintext.
    let deadline = std::time::Instant::now() + WAIT;
    while seen.lock().is_empty() {
        assert!(std::time::Instant::now() < deadline, "stt never got the routed envelope");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got = seen.lock()[0].clone();
    assert_eq!(got.message_id, envelope.message_id);
    assert_eq!(got.payload.data["text"], secret);

    // The same bytes with a longer ttl: the signature no longer matches; dead-lettered with
    // the reason, never handled.
    let mut tampered: Value = serde_json::from_slice(&sealed).unwrap();
    tampered["ttl"] = json!(3600);
    let tampered = serde_json::to_vec(&tampered).unwrap();
    wire.publish(ROUTER_INBOX, tampered.clone(), None).await;
    let letter: DeadLetter = serde_json::from_slice(&dead.next().await.payload).unwrap();
    assert!(letter.reason.contains("bad signature by \"tester\""), "{}", letter.reason);
    assert_eq!(letter.original().unwrap(), tampered);
    dead.quiet(std::time::Duration::from_millis(300)).await;
    assert_eq!(seen.lock().len(), 1, "the tampered envelope was never handled");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_envelope_routed_verified_tampered_dead_lettered() {
    let (_broker, addr) = alicia_broker().await;
    signed_envelope_routed_and_verified(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_envelope_routed_verified_tampered_dead_lettered_over_mosquitto() {
    let Some(mosquitto) = Mosquitto::start().await else { return };
    signed_envelope_routed_and_verified(mosquitto.addr).await;
}
