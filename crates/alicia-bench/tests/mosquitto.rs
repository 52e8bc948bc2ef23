//! Runs the load generator against a real Mosquitto (Debian's `/usr/sbin/mosquitto`) on a free
//! loopback port and checks that every count in the report adds up. Skipped, with a message,
//! where Mosquitto is not installed.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alicia_bench::{run, BenchArgs, Report, Scenario};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto process, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Mosquitto on a free loopback port, or returns `None` if it is not installed.
fn mosquitto() -> Option<Mosquitto> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("SKIPPED: {MOSQUITTO} not found (apt-get install mosquitto)");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    // Unlimited in-flight QoS 1: Mosquitto 2.0.11 (Debian 12) can strand queued QoS 1
    // messages (inflight quota bug, fixed in 2.0.13), which exact-count checks cannot afford.
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n"))
        .unwrap();
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let broker = Mosquitto { child, port, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not start listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(broker)
}

fn args(port: u16, scenario: Scenario) -> BenchArgs {
    BenchArgs { port, scenario, duration: 20.0, quiet: true, ..BenchArgs::default() }
}

/// Checks the relations every report must satisfy.
fn consistent(r: &Report) {
    assert_eq!(r.lost, r.expected - r.received, "{r:?}");
    assert!(r.received <= r.expected, "{r:?}");
    assert!(r.elapsed >= r.send_elapsed, "{r:?}");
    let rate = r.received as f64 / r.elapsed.as_secs_f64();
    assert!((r.throughput - rate).abs() <= rate * 1e-9, "{r:?}");
    let text = r.to_string();
    assert!(text.contains(&format!("received   {} of {}", r.received, r.expected)), "{text}");
    let json = r.to_json();
    assert!(json.contains(&format!("\"received\":{},", r.received)), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_qos1_delivers_and_acknowledges_everything() {
    let Some(m) = mosquitto() else { return };
    let a = BenchArgs { publishers: Some(3), qos: 1, messages: 500, ..args(m.port, Scenario::FanIn) };
    let r = run(&a).await.unwrap();
    consistent(&r);
    assert_eq!((r.publishers, r.subscribers), (3, 1));
    assert_eq!(r.sent, 1500);
    assert_eq!(r.acked, 1500);
    assert_eq!(r.expected, 1500);
    assert_eq!(r.received, 1500);
    assert_eq!((r.lost, r.out_of_order, r.rejected), (0, 0, 0));
    assert!(r.complete && r.throughput > 0.0);
    assert!(r.latency.is_none(), "no latency without a rate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_counts_every_delivery() {
    let Some(m) = mosquitto() else { return };
    let a = BenchArgs { subscribers: Some(5), messages: 300, ..args(m.port, Scenario::FanOut) };
    let r = run(&a).await.unwrap();
    consistent(&r);
    assert_eq!((r.publishers, r.subscribers), (1, 5));
    assert_eq!(r.sent, 300);
    assert_eq!(r.expected, 1500);
    assert_eq!(r.received, 1500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_over_mqtt5_keep_order() {
    let Some(m) = mosquitto() else { return };
    let a = BenchArgs { publishers: Some(4), qos: 1, protocol: 5, messages: 250, ..args(m.port, Scenario::Pairs) };
    let r = run(&a).await.unwrap();
    consistent(&r);
    assert_eq!((r.publishers, r.subscribers, r.protocol), (4, 4, 5));
    assert_eq!((r.sent, r.acked, r.received, r.out_of_order), (1000, 1000, 1000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_runs_at_the_requested_rate() {
    let Some(m) = mosquitto() else { return };
    let a = BenchArgs { rate: Some(2000), messages: 400, ..args(m.port, Scenario::Latency) };
    let r = run(&a).await.unwrap();
    consistent(&r);
    assert_eq!(r.received, 400);
    // 400 messages at 2000/s: the last one is due 0.2 s after the first.
    assert!(r.send_elapsed >= Duration::from_millis(180), "{r:?}");
    assert!(r.send_elapsed < Duration::from_secs(2), "{r:?}");
    let l = r.latency.as_ref().expect("latency measured");
    assert_eq!(l.samples, 400);
    assert!(0.0 < l.p50_us && l.p50_us <= l.p99_us && l.p99_us <= l.max_us, "{l:?}");
    assert!(r.to_string().contains("p99"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_bounds_the_run() {
    let Some(m) = mosquitto() else { return };
    let a = BenchArgs { messages: u64::from(u32::MAX), duration: 1.5, ..args(m.port, Scenario::Pairs) };
    let started = Instant::now();
    let r = run(&a).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    consistent(&r);
    assert!(!r.complete);
    assert!(r.sent > 0 && r.received > 0);
}
