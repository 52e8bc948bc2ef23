//! Log analysis: rules (regex, severity, message) applied to log lines from Alicia itself
//! (through [`LogLayer`], a `tracing_subscriber` layer) and from containers.

use std::fmt::Write;

use alicia_config::LogRule;
use regex::Regex;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// A log line and where it came from (`alicia` for the process's own logs, `container:<name>`).
#[derive(Debug, Clone)]
pub struct LogLine {
    pub source: String,
    pub line: String,
}

/// A rule that matched.
#[derive(Debug, Clone)]
pub struct Match<'a> {
    pub rule: &'a LogRule,
}

/// Compiled rules.
#[derive(Debug)]
pub struct LogAnalyzer {
    rules: Vec<(LogRule, Regex)>,
}

impl LogAnalyzer {
    /// Compiles `rules` (invalid patterns are an error naming the rule).
    pub fn new(rules: &[LogRule]) -> Result<Self, String> {
        let rules = rules
            .iter()
            .map(|r| {
                Regex::new(&r.pattern).map(|re| (r.clone(), re)).map_err(|e| format!("log rule `{}`: {e}", r.name))
            })
            .collect::<Result<_, _>>()?;
        Ok(LogAnalyzer { rules })
    }

    /// The most severe rule matching `line` (the first of equals), if any: one alert per line.
    pub fn analyze(&self, line: &str) -> Option<Match<'_>> {
        let mut best: Option<&LogRule> = None;
        for (rule, re) in &self.rules {
            if re.is_match(line) && best.is_none_or(|b| rule.severity > b.severity) {
                best = Some(rule);
            }
        }
        best.map(|rule| Match { rule })
    }

    pub fn rules(&self) -> impl Iterator<Item = &LogRule> {
        self.rules.iter().map(|(r, _)| r)
    }
}

/// Where [`LogLayer`] sends lines; give it to [`crate::MonitorConfig::log_feed`].
pub struct LogFeed(pub(crate) mpsc::Receiver<LogLine>);

/// A `tracing_subscriber` layer that hands this process's log events (INFO and above) to the
/// monitor's analyzer. Never blocks: when the monitor is behind, lines are dropped.
///
/// No loop: events from the monitor's own crate (`alicia_monitor::*`, which logs the alerts)
/// are not analyzed, so an alert about a log line cannot produce another one.
pub struct LogLayer {
    tx: mpsc::Sender<LogLine>,
    source: String,
}

/// A layer for the binary to install and the feed for [`crate::start`].
pub fn log_layer() -> (LogLayer, LogFeed) {
    let (tx, rx) = mpsc::channel(1024);
    (LogLayer { tx, source: "alicia".into() }, LogFeed(rx))
}

struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || meta.target().starts_with(env!("CARGO_CRATE_NAME")) {
            return;
        }
        let level = match *meta.level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARN",
            _ => "INFO",
        };
        let mut line = format!("{level} {}:", meta.target());
        event.record(&mut Line(&mut line));
        let _ = self.tx.try_send(LogLine { source: self.source.clone(), line });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_rules_match_the_seed_patterns() {
        let a = LogAnalyzer::new(&alicia_config::default_log_rules()).unwrap();
        let name = |l: &str| a.analyze(l).map(|m| m.rule.name.clone());
        assert_eq!(name("ERROR alicia_router: boom").as_deref(), Some("log_error"));
        assert_eq!(name("Traceback (most recent call last):").as_deref(), Some("log_exception"));
        assert_eq!(name("ERROR java.lang.NullPointerException").as_deref(), Some("log_exception"), "most severe wins");
        assert_eq!(name("dial tcp: Connection refused").as_deref(), Some("log_connection_refused"));
        assert_eq!(name("request timed out").as_deref(), Some("log_timeout"));
        assert_eq!(name("WARN something odd").as_deref(), Some("log_warning"));
        assert_eq!(name("option x is deprecated").as_deref(), Some("log_deprecated"));
        assert_eq!(name("retrying in 2s").as_deref(), Some("log_retrying"));
        assert_eq!(name("INFO all good"), None);
    }
}
