//! Progress of long steps (downloads, conversion): indicatif bars on a terminal, plain lines
//! otherwise (CI logs, services' logs), nothing when asked for quiet.

use parking_lot::Mutex;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bars when standard error is a terminal, lines otherwise.
    Auto,
    Bars,
    /// One line per 10 % (or every 5 s) on standard error.
    Lines,
    Quiet,
}

impl Progress {
    fn resolved(self) -> Progress {
        match self {
            Progress::Auto if std::io::stderr().is_terminal() => Progress::Bars,
            Progress::Auto => Progress::Lines,
            p => p,
        }
    }

    /// Starts one task: `label` (what), `total` bytes if known.
    pub fn task(self, label: &str, total: Option<u64>) -> Task {
        match self.resolved() {
            Progress::Bars => {
                let bar = match total {
                    Some(n) => ProgressBar::new(n),
                    None => ProgressBar::new_spinner(),
                };
                let template = if total.is_some() {
                    "{msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
                } else {
                    "{msg:40!} {spinner} {bytes} {bytes_per_sec}"
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_message(label.to_string());
                Task { inner: Inner::Bar(bar) }
            }
            Progress::Lines => {
                eprintln!("{label}: started{}", total.map(|t| format!(" ({})", mb(t))).unwrap_or_default());
                Task {
                    inner: Inner::Lines(Mutex::new(Lines {
                        label: label.to_string(),
                        total,
                        done: 0,
                        next_pct: 10,
                        last: Instant::now(),
                        start: Instant::now(),
                    })),
                }
            }
            _ => Task { inner: Inner::Quiet },
        }
    }

    /// A one-off message (which source is tried, what failed).
    pub fn note(self, msg: &str) {
        match self.resolved() {
            Progress::Quiet => tracing::info!("{msg}"),
            _ => eprintln!("{msg}"),
        }
    }
}

pub struct Task {
    inner: Inner,
}

enum Inner {
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
    Quiet,
}

struct Lines {
    label: String,
    total: Option<u64>,
    done: u64,
    next_pct: u64,
    last: Instant,
    start: Instant,
}

impl Task {
    pub fn inc(&self, n: u64) {
        match &self.inner {
            Inner::Bar(b) => b.inc(n),
            Inner::Lines(l) => {
                let mut l = l.lock();
                l.done += n;
                let pct = l.total.filter(|t| *t > 0).map(|t| l.done * 100 / t);
                let due = match pct {
                    Some(p) => p >= l.next_pct && p < 100,
                    None => l.last.elapsed() >= Duration::from_secs(5),
                };
                if due {
                    match (pct, l.total) {
                        (Some(p), Some(t)) => {
                            eprintln!("{}: {p}% ({} of {})", l.label, mb(l.done), mb(t));
                            l.next_pct = (p / 10 + 1) * 10;
                        }
                        _ => eprintln!("{}: {}", l.label, mb(l.done)),
                    }
                    l.last = Instant::now();
                }
            }
            Inner::Quiet => {}
        }
    }

    pub fn finish(self, msg: &str) {
        match self.inner {
            Inner::Bar(b) => b.finish_with_message(msg.to_string()),
            Inner::Lines(l) => {
                let l = l.into_inner();
                eprintln!("{}: {msg} ({}, {:.1} s)", l.label, mb(l.done), l.start.elapsed().as_secs_f64());
            }
            Inner::Quiet => {}
        }
    }
}

fn mb(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}
