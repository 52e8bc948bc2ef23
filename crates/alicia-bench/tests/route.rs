//! The route scenario end to end: a broker (Alicia's, in this process, and Mosquitto), the
//! router started by the bench, every envelope accounted for in both phases.

use alicia_bench::route::{run, RouteReport};
use alicia_bench::{BenchArgs, Scenario};

fn args(port: u16) -> BenchArgs {
    BenchArgs {
        port,
        scenario: Scenario::Route,
        messages: 2000,
        rate: Some(4000),
        duration: 10.0,
        quiet: true,
        ..BenchArgs::default()
    }
}

fn check(r: &RouteReport) {
    for (name, p) in [("direct", &r.direct), ("routed", &r.routed)] {
        assert_eq!((p.sent, p.received), (2000, 2000), "{name}: {r}");
        let l = p.latency.as_ref().expect("latency samples");
        assert_eq!(l.samples, 2000, "{name}");
        assert!(l.p50_us > 0.0 && l.p50_us <= l.p99_us && l.p99_us <= l.max_us, "{name}: {r}");
    }
    assert_eq!(r.dead_letters, 0, "{r}");
    assert!(r.added_p99_us().is_some());
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["routed"]["received"], 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_against_alicia() {
    let (_broker, addr) = alicia_testkit::alicia_broker().await;
    let r = run(&args(addr.port())).await.unwrap();
    check(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_against_mosquitto() {
    let Some(m) = alicia_testkit::Mosquitto::start().await else { return };
    let r = run(&args(m.addr.port())).await.unwrap();
    check(&r);
}
