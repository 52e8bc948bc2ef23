//! The broker driven over real sockets by rumqttc, an MQTT client written elsewhere.

use std::net::SocketAddr;
use std::time::Duration;

use alicia_broker::{Broker, Config};
use rumqttc::v5 as mq5;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::timeout;

async fn start(config: Config) -> (Broker, SocketAddr) {
    let broker = Broker::new(config);
    let listener = broker.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(listener.serve());
    (broker, addr)
}

/// A v3.1.1 client whose incoming PUBLISHes arrive on a channel.
async fn client(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    will: Option<LastWill>,
) -> (AsyncClient, mpsc::UnboundedReceiver<rumqttc::Publish>, tokio::task::JoinHandle<()>) {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_clean_session(clean).set_keep_alive(Duration::from_secs(30));
    if let Some(w) = will {
        opts.set_last_will(w);
    }
    let (c, mut ev) = AsyncClient::new(opts, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    let _ = conn_tx.send(a);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    timeout(Duration::from_secs(5), conn_rx.recv()).await.expect("CONNACK in time").expect("connected");
    (c, rx, task)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<rumqttc::Publish>) -> rumqttc::Publish {
    timeout(Duration::from_secs(5), rx.recv()).await.expect("message in time").expect("channel open")
}

async fn nothing(rx: &mut mpsc::UnboundedReceiver<rumqttc::Publish>) {
    assert!(timeout(Duration::from_millis(300), rx.recv()).await.is_err(), "unexpected message");
}

#[tokio::test]
async fn qos_0_1_2_round_trip_and_wildcards() {
    let (_b, addr) = start(Config::default()).await;
    let (sub, mut rx, _t) = client(addr, "sub", true, None).await;
    sub.subscribe("home/+/temp", QoS::ExactlyOnce).await.unwrap();
    // "#" must not match "$SYS/..." topics (the broker publishes a presence event there for
    // the publisher below): only the three messages may arrive.
    sub.subscribe("#", QoS::AtMostOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (publ, _prx, _t2) = client(addr, "pub", true, None).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
        publ.publish("home/kitchen/temp", qos, false, format!("m{i}")).await.unwrap();
        let m = next(&mut rx).await;
        assert_eq!(m.topic, "home/kitchen/temp");
        assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
        // Overlapping "#" (QoS 0) and "home/+/temp" (QoS 2): one copy at the higher QoS.
        assert_eq!(m.qos, qos);
    }
    nothing(&mut rx).await;
}

#[tokio::test]
async fn retained_messages_are_kept_and_cleared() {
    let (b, addr) = start(Config::default()).await;
    let (publ, _r, _t) = client(addr, "pub", true, None).await;
    publ.publish("state/lamp", QoS::AtLeastOnce, true, "on").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.retained_count(), 1);
    let (sub, mut rx, _t2) = client(addr, "sub", true, None).await;
    sub.subscribe("state/#", QoS::AtLeastOnce).await.unwrap();
    let m = next(&mut rx).await;
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"on");
    publ.publish("state/lamp", QoS::AtLeastOnce, true, "").await.unwrap();
    let m = next(&mut rx).await;
    assert!(m.payload.is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.retained_count(), 0);
}

#[tokio::test]
async fn will_is_published_when_the_connection_drops() {
    let (_b, addr) = start(Config::default()).await;
    let (sub, mut rx, _t) = client(addr, "watcher", true, None).await;
    sub.subscribe("status/#", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let will = LastWill::new("status/dev", "offline", QoS::AtLeastOnce, false);
    let (_dev, _r, task) = client(addr, "dev", true, Some(will)).await;
    task.abort(); // the socket closes without DISCONNECT
    let m = next(&mut rx).await;
    assert_eq!(m.topic, "status/dev");
    assert_eq!(&m.payload[..], b"offline");
}

#[tokio::test]
async fn clean_disconnect_discards_the_will() {
    let (_b, addr) = start(Config::default()).await;
    let (sub, mut rx, _t) = client(addr, "watcher", true, None).await;
    sub.subscribe("status/#", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let will = LastWill::new("status/dev", "offline", QoS::AtLeastOnce, false);
    let (dev, _r, _task) = client(addr, "dev", true, Some(will)).await;
    dev.disconnect().await.unwrap();
    nothing(&mut rx).await;
}

#[tokio::test]
async fn persistent_session_queues_while_offline() {
    let (_b, addr) = start(Config::default()).await;
    let (sub, _rx, task) = client(addr, "sleepy", false, None).await;
    sub.subscribe("queue/t", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    sub.disconnect().await.unwrap();
    let _ = timeout(Duration::from_secs(2), task).await;
    let (publ, _r, _t) = client(addr, "pub", true, None).await;
    for i in 0..5 {
        publ.publish("queue/t", QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_sub, mut rx, _t2) = client(addr, "sleepy", false, None).await;
    for i in 0..5 {
        assert_eq!(next(&mut rx).await.payload, format!("{i}").as_bytes());
    }
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_once() {
    let (_b, addr) = start(Config::default()).await;
    let (a, mut ra, _t1) = client(addr, "worker-a", true, None).await;
    let (b, mut rb, _t2) = client(addr, "worker-b", true, None).await;
    a.subscribe("$share/workers/jobs", QoS::AtLeastOnce).await.unwrap();
    b.subscribe("$share/workers/jobs", QoS::AtLeastOnce).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (publ, _r, _t) = client(addr, "pub", true, None).await;
    for i in 0..10 {
        publ.publish("jobs", QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = Vec::new();
    while let Ok(m) = ra.try_recv() {
        got.push(m.payload);
    }
    let from_a = got.len();
    while let Ok(m) = rb.try_recv() {
        got.push(m.payload);
    }
    assert_eq!(got.len(), 10, "every message exactly once");
    assert!(from_a > 0 && from_a < 10, "both members got work: a={from_a}");
}

/// A v5 client with its own event loop, returning incoming PUBLISHes.
async fn client5(
    addr: SocketAddr,
    id: &str,
) -> (mq5::AsyncClient, mpsc::UnboundedReceiver<mq5::mqttbytes::v5::Publish>) {
    let mut opts = mq5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (c, mut ev) = mq5::AsyncClient::new(opts, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (conn_tx, mut conn_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(mq5::Event::Incoming(mq5::Incoming::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(mq5::Event::Incoming(mq5::Incoming::ConnAck(a))) => {
                    let _ = conn_tx.send(a);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    timeout(Duration::from_secs(5), conn_rx.recv()).await.expect("CONNACK in time").expect("connected");
    (c, rx)
}

#[tokio::test]
async fn v5_subscription_identifiers_and_properties_pass_through() {
    use mq5::mqttbytes::v5::{PublishProperties, SubscribeProperties};
    let (_b, addr) = start(Config::default()).await;
    let (sub, mut rx) = client5(addr, "sub5").await;
    let props = SubscribeProperties { id: Some(7), user_properties: vec![] };
    sub.subscribe_with_properties("v5/+", mq5::mqttbytes::QoS::AtLeastOnce, props).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (publ, _r) = client5(addr, "pub5").await;
    let props = PublishProperties {
        response_topic: Some("v5/reply".into()),
        correlation_data: Some("c-1".into()),
        content_type: Some("text/plain".into()),
        payload_format_indicator: Some(1),
        user_properties: vec![("room".into(), "kitchen".into())],
        ..PublishProperties::default()
    };
    publ.publish_with_properties("v5/req", mq5::mqttbytes::QoS::AtLeastOnce, false, "hello", props).await.unwrap();
    let m = timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"hello");
    let p = m.properties.expect("properties forwarded");
    assert_eq!(p.subscription_identifiers, vec![7]);
    assert_eq!(p.response_topic.as_deref(), Some("v5/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"c-1"[..]));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.payload_format_indicator, Some(1));
    assert_eq!(p.user_properties, vec![("room".to_string(), "kitchen".to_string())]);
}

#[tokio::test]
async fn sys_topics_report_live_counters() {
    let (b, addr) = start(Config::default()).await;
    b.spawn_sys(Duration::from_secs(1));
    let (sub, mut rx, _t) = client(addr, "dashboard", true, None).await;
    sub.subscribe("$SYS/broker/#", QoS::AtMostOnce).await.unwrap();
    let (publ, _r, _t2) = client(addr, "pub", true, None).await;
    for _ in 0..5 {
        publ.publish("x/y", QoS::AtLeastOnce, false, "m").await.unwrap();
    }
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        let Ok(Some(m)) = timeout(Duration::from_millis(500), rx.recv()).await else { continue };
        seen.insert(m.topic.clone(), String::from_utf8_lossy(&m.payload).to_string());
        let received: u64 = seen.get("$SYS/broker/messages/received").and_then(|v| v.parse().ok()).unwrap_or(0);
        // The dropped-messages load is the last topic of each round: stop after a full round.
        if received >= 5 && m.topic == "$SYS/broker/load/publish/dropped/15min" {
            break;
        }
    }
    assert!(seen["$SYS/broker/version"].starts_with("alicia "), "{seen:?}");
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    assert_eq!(seen["$SYS/broker/clients/connected"], "2");
    assert!(seen["$SYS/broker/messages/received"].parse::<u64>().unwrap() >= 5, "{seen:?}");
    assert!(seen["$SYS/broker/subscriptions/count"].parse::<u64>().unwrap() >= 1);
    assert!(seen["$SYS/broker/load/messages/received/1min"].parse::<f64>().unwrap() > 0.0, "{seen:?}");
}
