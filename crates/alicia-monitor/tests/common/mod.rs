//! Test helpers: a tiny HTTP/1.1 GET client and a strict Prometheus text-format checker.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use alicia_config::MonitoringConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path`: (status, content type, body).
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    // Chunked bodies: join the chunks.
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, ctype, body)
}

pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = get(addr, path).await;
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

/// Monitoring settings for tests: short windows, no container engine unless asked.
pub fn monitoring(expected: &[&str]) -> MonitoringConfig {
    let mut m = MonitoringConfig {
        expected_services: expected.iter().map(|s| s.to_string()).collect(),
        ..MonitoringConfig::default()
    };
    m.alerts.fire_after_secs = 0.3;
    m.alerts.resolve_after_secs = 0.3;
    m.alerts.missing_after_intervals = 2;
    m.history_interval_secs = 1;
    // The machine may be busy (parallel builds): host alerts would only add noise here.
    m.alerts.cpu_warning_percent = 100.0;
    m.alerts.memory_warning_percent = 100.0;
    m.alerts.disk_warning_percent = 100.0;
    m.docker.enabled = false;
    m
}

fn metric_name_ok(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphabetic() || x == '_' || x == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses Prometheus text format 0.0.4 strictly (panics on any deviation) and returns every
/// series (`name{k="v",…}` with labels sorted) with its value.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut out = BTreeMap::new();
    assert!(text.is_empty() || text.ends_with('\n'), "text must end with a newline");
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or_else(|| panic!("{}", at())).to_string();
            assert!(metric_name_ok(&name), "{}", at());
            match kind {
                "HELP" => assert!(helps.insert(name.clone()), "second HELP: {}", at()),
                "TYPE" => {
                    let t = parts.next().unwrap_or_else(|| panic!("{}", at()));
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "{}", at());
                    assert!(types.insert(name.clone(), t.to_string()).is_none(), "second TYPE: {}", at());
                }
                _ => continue,
            }
            if current.as_deref() != Some(&name) {
                if let Some(c) = current.take() {
                    closed.insert(c);
                }
                assert!(!closed.contains(&name), "family split in two: {}", at());
                current = Some(name);
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{}", at());
        // name, optional {labels}, value
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{}", at()));
        let name = &line[..name_end];
        assert!(metric_name_ok(name), "{}", at());
        let mut rest = &line[name_end..];
        let mut labels: Vec<(String, String)> = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                let (i, c) = chars.next().unwrap_or_else(|| panic!("{}", at()));
                if c == '}' {
                    rest = &r[i + 1..];
                    break;
                }
                let start = i;
                let mut end = i;
                while let Some(&(j, c)) = chars.peek() {
                    if c == '=' {
                        end = j;
                        break;
                    }
                    chars.next();
                }
                let lname = &r[start..end];
                assert!(
                    !lname.is_empty() && lname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "label name {lname:?}: {}",
                    at()
                );
                assert_eq!(chars.next().map(|x| x.1), Some('='), "{}", at());
                assert_eq!(chars.next().map(|x| x.1), Some('"'), "{}", at());
                let mut value = String::new();
                loop {
                    let (_, c) = chars.next().unwrap_or_else(|| panic!("unterminated: {}", at()));
                    match c {
                        '"' => break,
                        '\\' => match chars.next().map(|x| x.1) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => panic!("bad escape: {}", at()),
                        },
                        '\n' => panic!("{}", at()),
                        c => value.push(c),
                    }
                }
                assert!(!labels.iter().any(|(k, _)| k == lname), "duplicate label: {}", at());
                labels.push((lname.to_string(), value));
                match chars.peek().map(|x| x.1) {
                    Some(',') => {
                        chars.next();
                    }
                    Some('}') => {}
                    _ => panic!("{}", at()),
                }
            }
        }
        let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{}", at()));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("value: {}", at())),
        };
        let family = current.clone().unwrap_or_else(|| panic!("sample before TYPE: {}", at()));
        let t = types.get(&family).unwrap_or_else(|| panic!("no TYPE: {}", at()));
        let ok = if t == "histogram" {
            [format!("{family}_bucket"), format!("{family}_sum"), format!("{family}_count")].contains(&name.to_string())
        } else {
            name == family
        };
        assert!(ok, "sample {name} outside its family {family}: {}", at());
        if name.ends_with("_bucket") && t == "histogram" {
            assert!(labels.iter().any(|(k, _)| k == "le"), "bucket without le: {}", at());
        }
        labels.sort();
        let key =
            format!("{name}{{{}}}", labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(","));
        assert!(out.insert(key, value).is_none(), "duplicate series: {}", at());
    }
    out
}

/// The key [`parse_prometheus`] uses for a series.
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<_> = labels.to_vec();
    l.sort();
    format!("{name}{{{}}}", l.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(","))
}

/// Parses `text` with the reference parser, Python's `prometheus_client` (as Prometheus
/// tooling would), returning `{family: {"type", "samples": [[name, labels, value]]}}`; `None`
/// (with a note) when python3 or prometheus_client is not installed.
pub fn prometheus_client_parse(text: &str) -> Option<serde_json::Value> {
    use std::io::Write;
    const SCRIPT: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "samples": [[s.name, s.labels, None if math.isinf(s.value) or math.isnan(s.value) else s.value] for s in f.samples]}
print(json.dumps(out))
"#;
    let probe = std::process::Command::new("python3").args(["-c", "import prometheus_client"]).output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("note: python3 with prometheus_client is not installed; skipping the reference parser");
        return None;
    }
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client rejected the text: {}", String::from_utf8_lossy(&out.stderr));
    Some(serde_json::from_slice(&out.stdout).unwrap())
}
