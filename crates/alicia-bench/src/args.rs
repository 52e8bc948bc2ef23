//! Command-line arguments and their validation into a [`Plan`].

use std::net::SocketAddr;
use std::time::Duration;

use alicia_codec::{Protocol, QoS};
use anyhow::{bail, Context};

/// The shape of a run: who publishes to whom.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// N publishers → 1 subscriber (default 10 → 1) on one topic prefix.
    FanIn,
    /// 1 publisher → N subscribers (default 1 → 50); every delivery counts as received.
    FanOut,
    /// N independent publisher → subscriber pairs (default 10), each on its own topic.
    Pairs,
    /// Publishers at a fixed aggregate `--rate` → 1 subscriber; reports p50/p99/max latency.
    Latency,
    /// Envelopes at `--rate` (default 10000/s) for a device, straight to its topic and then
    /// through Alicia's router (started in this process against the broker under test):
    /// reports both latencies and what routing adds at p99. `--duration` bounds each phase.
    Route,
    /// Sentences to Alicia's assistant (`ai_service`, started in this process with the router
    /// against the broker under test) in a home of 500 devices: from the text sent to the
    /// device receiving its command, and to the answer; `--messages` requests from
    /// `--publishers` askers at once, after the same commands sent straight to the router
    /// (the reference). Needs Home Assistant's intents data (`--intents`).
    AssistantText,
    /// Alicia's speech services (`stt_service`, `tts_service`, started in this process with the
    /// registry and the router against the broker under test, on the model store's models):
    /// STT of a ~2 s utterance and TTS time to first audio at a satellite through
    /// `capability:` requests (`--requests` each), word error rate (`--utterances`), then
    /// `--sessions` satellites at once for `--duration` s; faster-whisper and piper-tts in the
    /// same run (a virtual environment the bench creates) unless `--no-reference`.
    Voice,
    /// Spoken commands through the whole voice chain (satellites → stt_service →
    /// voice_pipeline → ai_service → the router → simulated lights, and the answer from
    /// tts_service back to the satellite), all in this process on the model store's models:
    /// end of speech → first answer audio and → the device's command, one satellite at a time
    /// (`--requests`) and `--sessions` satellites at once. Needs `--intents`.
    Assistant,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FanIn => "fan-in",
            Scenario::FanOut => "fan-out",
            Scenario::Pairs => "pairs",
            Scenario::Latency => "latency",
            Scenario::Route => "route",
            Scenario::AssistantText => "assistant-text",
            Scenario::Voice => "voice",
            Scenario::Assistant => "assistant",
        }
    }
}

/// Arguments of `alicia bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Broker host. Only loopback addresses are accepted: this tool loads this machine only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// What to measure.
    #[arg(long, value_enum, default_value = "fan-in")]
    pub scenario: Scenario,
    /// Publisher connections (default: 10 for fan-in and pairs, 1 otherwise).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Subscriber connections (default: 50 for fan-out, as many as publishers for pairs, 1
    /// otherwise).
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// QoS of publications and subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Payload size in bytes. The first 16 bytes carry a send timestamp and a sequence number.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages sent by each publisher.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Hard upper bound on the whole run in seconds, connecting included; the run always ends.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Aggregate publish rate in messages per second, spread over the publishers (latency
    /// scenario: default 10000; other scenarios: unlimited unless given).
    #[arg(long)]
    pub rate: Option<u64>,
    /// QoS 1 messages a publisher keeps in flight (capped by the broker's Receive Maximum).
    #[arg(long, default_value_t = 100)]
    pub inflight: u16,
    /// Deliveries a subscriber may lag behind before publishers pause (0 = never pause). This
    /// end-to-end window measures the rate a broker sustains instead of how fast it can
    /// swallow an unbounded burst, and keeps broker queues below their usual limit of 1000.
    #[arg(long, default_value_t = 1000)]
    pub backlog: u64,
    /// MQTT protocol level: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub protocol: u8,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// assistant-text: Home Assistant's intents data (`en.json` of the home-assistant-intents
    /// package) [default: as `alicia up` finds it].
    #[arg(long, value_name = "FILE")]
    pub intents: Option<std::path::PathBuf>,
    /// voice: requests for the STT and the TTS latency, one at a time.
    #[arg(long, default_value_t = 30)]
    pub requests: usize,
    /// voice: satellites speaking at once in the sustained phase (`--duration` long).
    #[arg(long, default_value_t = 10)]
    pub sessions: usize,
    /// voice: utterances per synthesiser (espeak-ng, Piper) for the word error rate, 1 to 20.
    #[arg(long, default_value_t = 20)]
    pub utterances: usize,
    /// voice: no Python references (faster-whisper, piper-tts).
    #[arg(long)]
    pub no_reference: bool,
    /// voice: the Python that runs the references [default: a virtual environment the bench
    /// creates in the cache directory, with the pinned faster-whisper and piper-tts].
    #[arg(long, value_name = "PYTHON")]
    pub reference_python: Option<std::path::PathBuf>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            host: "127.0.0.1".into(),
            port: 1883,
            scenario: Scenario::FanIn,
            publishers: None,
            subscribers: None,
            qos: 0,
            payload: 64,
            messages: 10_000,
            duration: 10.0,
            rate: None,
            inflight: 100,
            backlog: 1000,
            protocol: 4,
            json: false,
            quiet: false,
            intents: None,
            requests: 30,
            sessions: 10,
            utterances: 20,
            no_reference: false,
            reference_python: None,
        }
    }
}

/// Bytes at the front of every payload: send time (u64 ns), publisher (u32), sequence (u32).
pub(crate) const STAMP_LEN: usize = 16;

/// Validated arguments with every default filled in.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub scenario: Scenario,
    pub addr: SocketAddr,
    pub publishers: usize,
    pub subscribers: usize,
    /// Whether subscriber `i` hears only publisher `i` (pairs) rather than all of them.
    pub paired: bool,
    pub qos: QoS,
    pub protocol: Protocol,
    pub payload: usize,
    pub messages: u64,
    pub duration: Duration,
    /// Messages per second for each publisher, if throttled.
    pub rate_per_publisher: Option<f64>,
    pub inflight: u16,
    /// Deliveries (all subscribers together) that may be outstanding before publishers pause.
    pub backlog: Option<u64>,
    /// Subscribers that receive each message.
    pub fanout: u64,
}

impl Plan {
    /// Checks `args` and resolves the host, refusing anything but loopback addresses.
    pub async fn new(args: &BenchArgs) -> anyhow::Result<Plan> {
        let addr = resolve_loopback(&args.host, args.port).await?;
        let s = args.scenario;
        let publishers = args.publishers.unwrap_or(match s {
            Scenario::FanIn | Scenario::Pairs => 10,
            Scenario::FanOut
            | Scenario::Latency
            | Scenario::Route
            | Scenario::AssistantText
            | Scenario::Voice
            | Scenario::Assistant => 1,
        });
        let subscribers = args.subscribers.unwrap_or(match s {
            Scenario::FanOut => 50,
            Scenario::Pairs => publishers,
            Scenario::FanIn
            | Scenario::Latency
            | Scenario::Route
            | Scenario::AssistantText
            | Scenario::Voice
            | Scenario::Assistant => 1,
        });
        if publishers == 0 || subscribers == 0 {
            bail!("--publishers and --subscribers must be at least 1");
        }
        if publishers + subscribers > 10_000 {
            bail!("at most 10000 connections");
        }
        if s == Scenario::Pairs && publishers != subscribers {
            bail!("pairs needs as many subscribers as publishers");
        }
        if !(args.duration > 0.0 && args.duration <= 86_400.0) {
            bail!("--duration must be between 0 and 86400 seconds");
        }
        if args.messages == 0 {
            bail!("--messages must be at least 1");
        }
        if args.inflight == 0 {
            bail!("--inflight must be at least 1");
        }
        if args.payload > 16 * 1024 * 1024 {
            bail!("--payload is limited to 16 MiB");
        }
        let rate = match (s, args.rate) {
            (_, Some(0)) => bail!("--rate must be at least 1"),
            (Scenario::Latency, None) => Some(10_000),
            (_, r) => r,
        };
        if s == Scenario::Latency && args.payload < STAMP_LEN {
            bail!("latency runs need --payload of at least {STAMP_LEN} bytes for the timestamp");
        }
        Ok(Plan {
            scenario: s,
            addr,
            publishers,
            subscribers,
            paired: s == Scenario::Pairs,
            qos: if args.qos == 1 { QoS::AtLeastOnce } else { QoS::AtMostOnce },
            protocol: if args.protocol == 5 { Protocol::V5 } else { Protocol::V311 },
            payload: args.payload,
            messages: args.messages,
            duration: Duration::from_secs_f64(args.duration),
            rate_per_publisher: rate.map(|r| r as f64 / publishers as f64),
            inflight: args.inflight,
            backlog: (args.backlog > 0).then(|| args.backlog * subscribers as u64),
            fanout: if s == Scenario::Pairs { 1 } else { subscribers as u64 },
        })
    }

    /// Publishers heard by subscriber `sub`.
    pub fn sources(&self, sub: usize) -> std::ops::Range<usize> {
        if self.paired {
            sub..sub + 1
        } else {
            0..self.publishers
        }
    }
}

/// Resolves `host:port` and fails unless every address it names is a loopback address.
pub(crate) async fn resolve_loopback(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.with_context(|| format!("cannot resolve {host}"))?.collect();
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        Some(a) => bail!("refusing to load {a}: alicia bench only targets loopback addresses"),
        None => addrs.first().copied().with_context(|| format!("{host} resolves to no address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_loopback_targets_are_accepted() {
        for host in ["10.1.2.3", "192.168.0.1", "8.8.8.8", "::ffff:10.0.0.1"] {
            let err = resolve_loopback(host, 1883).await.unwrap_err();
            assert!(err.to_string().contains("loopback"), "{host}: {err}");
        }
        for host in ["127.0.0.1", "127.3.2.1", "::1"] {
            assert!(resolve_loopback(host, 1883).await.unwrap().ip().is_loopback());
        }
    }

    #[tokio::test]
    async fn defaults_follow_the_scenario() {
        let plan = |scenario, publishers| {
            let args = BenchArgs { scenario, publishers, ..BenchArgs::default() };
            async move { Plan::new(&args).await }
        };
        let p = plan(Scenario::FanIn, None).await.unwrap();
        assert_eq!((p.publishers, p.subscribers, p.fanout), (10, 1, 1));
        let p = plan(Scenario::FanOut, None).await.unwrap();
        assert_eq!((p.publishers, p.subscribers, p.fanout), (1, 50, 50));
        let p = plan(Scenario::Pairs, Some(3)).await.unwrap();
        assert_eq!((p.publishers, p.subscribers, p.fanout, p.sources(2)), (3, 3, 1, 2..3));
        let p = plan(Scenario::Latency, Some(4)).await.unwrap();
        assert_eq!(p.rate_per_publisher, Some(2500.0));
        assert!(plan(Scenario::FanIn, Some(0)).await.is_err());
    }
}
