//! Where `alicia broker` and `alicia up` log, from the configuration file's `log_dest` and
//! `log_type` (Mosquitto's options), unless `ALICIA_LOG` says otherwise.
//!
//! - `log_dest stderr` (the default), `stdout`, `file PATH` (appended to; its directory must
//!   exist) and `syslog` (the system logger's socket, `/dev/log`, facility daemon) are honoured,
//!   several at once; `topic` and `dlt` are not supported and say so at start, as does `syslog`
//!   when no system logger listens (the lines then go to stderr).
//! - `log_type` sets the level of Alicia's own lines (targets `alicia*`): the most detailed type
//!   given wins (`debug`, `all`, `subscribe`, ... → debug; `information`, `notice` → info;
//!   `warning` → warn; `error` → error; `none` → nothing). Other crates (rustls, hyper, tokio,
//!   ...) stay at warn, so `log_type debug` does not bury the log in their detail.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use alicia_broker::auth::{LogDest, LogType, MosquittoConf};
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

/// Where the log goes and at which level.
#[derive(Debug, PartialEq)]
pub struct LogPlan {
    /// An `EnvFilter` directive.
    pub filter: String,
    /// Destinations, in the order the file gave them.
    pub outputs: Vec<Output>,
    /// What could not be honoured, to say once logging runs.
    pub notes: Vec<String>,
}

/// One destination.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Stderr,
    Stdout,
    File(PathBuf),
    Syslog(PathBuf),
}

/// The system logger's socket (`ALICIA_SYSLOG_SOCKET` overrides it, for tests).
fn syslog_socket() -> PathBuf {
    std::env::var_os("ALICIA_SYSLOG_SOCKET").map_or_else(|| PathBuf::from("/dev/log"), PathBuf::from)
}

/// The filter for `log_type`s (`None`: not given).
pub fn filter(types: Option<&[LogType]>) -> String {
    let level = match types {
        None => "info",
        Some([]) => return "off".to_string(),
        Some(t)
            if t.iter()
                .any(|t| !matches!(t, LogType::Error | LogType::Warning | LogType::Notice | LogType::Information)) =>
        {
            "debug"
        }
        Some(t) if t.iter().any(|t| matches!(t, LogType::Information | LogType::Notice)) => "info",
        Some(t) if t.contains(&LogType::Warning) => "warn",
        Some(_) => "error",
    };
    // Third-party crates: warn at most, never their debug noise. rustls warns about every
    // client that connects to an IP address with SNI ("Illegal SNI extension: ignoring IP
    // address presented as hostname"), which devices on a home network all do: not a warning.
    let others = if level == "error" { "error" } else { "warn" };
    format!("{others},rustls::msgs::handshake=error,alicia={level}")
}

/// The plan for a configuration (`None`: no file).
pub fn plan(conf: Option<&MosquittoConf>) -> LogPlan {
    let mut notes = Vec::new();
    let mut outputs = Vec::new();
    let dests = conf.and_then(|c| c.log_dest.clone()).unwrap_or_else(|| vec![LogDest::Stderr]);
    for d in dests {
        match d {
            LogDest::Stderr => outputs.push(Output::Stderr),
            LogDest::Stdout => outputs.push(Output::Stdout),
            LogDest::File(p) => outputs.push(Output::File(p)),
            LogDest::Syslog => {
                let socket = syslog_socket();
                match UnixDatagram::unbound().and_then(|s| s.connect(&socket)) {
                    Ok(()) => outputs.push(Output::Syslog(socket)),
                    Err(e) => {
                        notes.push(format!(
                            "log_dest syslog: no system logger at {} ({e}); logging to stderr instead",
                            socket.display()
                        ));
                        outputs.push(Output::Stderr);
                    }
                }
            }
            LogDest::Topic => notes.push("log_dest topic: not supported (no $SYS/broker/log messages); ignored".into()),
            LogDest::Dlt => notes.push("log_dest dlt: not supported; ignored".into()),
        }
    }
    let mut unique: Vec<Output> = Vec::new();
    for o in outputs {
        if !unique.contains(&o) {
            unique.push(o);
        }
    }
    LogPlan { filter: filter(conf.and_then(|c| c.log_type.as_deref())), outputs: unique, notes }
}

/// Sends each log line as one datagram to the system logger (RFC 3164 framing, facility
/// daemon), at the line's severity.
pub struct Syslog {
    socket: UnixDatagram,
}

impl Syslog {
    pub fn connect(path: &std::path::Path) -> std::io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(Syslog { socket })
    }
}

/// One line on its way to syslog.
pub struct SyslogLine<'a> {
    socket: &'a UnixDatagram,
    priority: u8,
}

impl Write for SyslogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let msg = format!("<{}>alicia[{}]: {}", self.priority, std::process::id(), text.trim_end());
        // A full or absent logger must not stop the broker: the line is lost, not the broker.
        let _ = self.socket.send(msg.as_bytes());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine { socket: &self.socket, priority: 3 * 8 + 6 }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let severity = match *meta.level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        SyslogLine { socket: &self.socket, priority: 3 * 8 + severity }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_types_set_alicias_level_only() {
        use LogType::*;
        let f = |t: Option<&[LogType]>| filter(t).replace(",rustls::msgs::handshake=error", "");
        assert_eq!(f(None), "warn,alicia=info");
        assert_eq!(f(Some(&[])), "off");
        assert_eq!(f(Some(&[Error])), "error,alicia=error");
        assert_eq!(f(Some(&[Error, Warning])), "warn,alicia=warn");
        assert_eq!(f(Some(&[Error, Warning, Notice, Information])), "warn,alicia=info");
        assert_eq!(f(Some(&[Error, Warning, Notice, Information, Debug])), "warn,alicia=debug");
        assert_eq!(f(Some(&[Subscribe])), "warn,alicia=debug");
    }

    #[test]
    fn destinations_are_honoured_or_noted() {
        let conf = MosquittoConf::parse(
            "log_dest file /tmp/x.log\nlog_dest stdout\nlog_dest topic\nlog_dest stderr\n",
            "/etc/m.conf",
        )
        .unwrap();
        let p = plan(Some(&conf));
        assert_eq!(p.outputs, vec![Output::File("/tmp/x.log".into()), Output::Stdout, Output::Stderr]);
        assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
        assert_eq!(plan(None).outputs, vec![Output::Stderr]);
    }

    #[test]
    fn syslog_lines_are_datagrams_with_a_priority() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let sys = Syslog::connect(&path).unwrap();
        let mut w = sys.make_writer();
        w.write_all(b"broker started\n").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<30>alicia[") && got.ends_with("]: broker started"), "{got}");
    }
}
