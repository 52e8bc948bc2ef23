//! Persistence through the real binary: a persistent subscriber's queued messages and the
//! retained messages survive `kill -9` and a restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

struct Alicia(Child);

impl Drop for Alicia {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `alicia broker` and returns it with the port it printed.
fn start(args: &[&str]) -> (Alicia, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_alicia"))
        .arg("broker")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start alicia");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port =
        line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line:?}"));
    (Alicia(child), port)
}

async fn connect(port: u16, id: &str, clean: bool) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    let (c, mut ev) = AsyncClient::new(o, 100);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await.expect("connack in time") {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("connect failed: {e}"),
        }
    }
    (c, ev)
}

#[tokio::test]
async fn queued_and_retained_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_str().unwrap();
    // autosave far away: only the log written before each acknowledgement can save us.
    let (broker, port) = start(&["--port", "0", "--persistence", store, "--autosave-interval", "3600"]);

    let (sub, mut ev) = connect(port, "kitchen-display", false).await;
    sub.subscribe("house/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = ev.poll().await {
            break;
        }
    }
    sub.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), ev.poll()).await;
    drop(ev);

    let (publ, mut pev) = connect(port, "sensor", true).await;
    let n = 20;
    for i in 0..n {
        publ.publish("house/temp", QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    publ.publish("house/mode", QoS::AtLeastOnce, true, "away").await.unwrap();
    // Wait for every PUBACK: these messages are now acknowledged.
    let mut acked = 0;
    while acked < n + 1 {
        if let Event::Incoming(Packet::PubAck(_)) = pev.poll().await.unwrap() {
            acked += 1;
        }
    }

    let mut broker = broker;
    unsafe_kill_9(&mut broker.0);
    drop(broker);

    let (_broker, port) = start(&["--port", "0", "--persistence", store]);
    let (_sub, mut ev) = connect(port, "kitchen-display", false).await;
    let mut got = Vec::new();
    while got.len() < n + 1 {
        match tokio::time::timeout(Duration::from_secs(5), ev.poll()).await.expect("queued messages arrive") {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                got.push((p.topic, String::from_utf8_lossy(&p.payload).to_string()))
            }
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let temps: Vec<String> = got.iter().filter(|(t, _)| t == "house/temp").map(|(_, p)| p.clone()).collect();
    assert_eq!(temps, (0..n).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(got.contains(&("house/mode".into(), "away".into())));

    // The retained message is there for a new subscriber too.
    let (fresh, mut fev) = connect(port, "phone", true).await;
    fresh.subscribe("house/mode", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::Publish(p)) = fev.poll().await.unwrap() {
            assert!(p.retain);
            assert_eq!(&p.payload[..], b"away");
            break;
        }
    }
}

/// SIGKILL: no chance to save anything on the way out.
fn unsafe_kill_9(child: &mut Child) {
    let status = Command::new("kill").arg("-9").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    let _ = child.wait();
}
