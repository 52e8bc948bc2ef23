//! Mosquitto-compatible security and configuration files.
//!
//! Users switching from Mosquitto keep their files: a password file written by
//! `mosquitto_passwd` ([`passwd`]), an `acl_file` ([`acl`]) and a `mosquitto.conf` ([`conf`]).
//! This module only reads and writes those formats; it decides nothing on its own. The binary
//! turns them into a [`crate::Security`] implementation and listener settings.
//!
//! Every file comes from a user, so nothing here panics on any input, and every error names the
//! file and line it is about ([`Error`]).

pub mod acl;
pub mod conf;
mod files;
pub mod passwd;

use std::path::{Path, PathBuf};

pub use acl::Acl;
pub use conf::{FileKind, FileOption, ListenerConf, LogDest, LogType, MosquittoConf, SecurityConf, Warning};
pub use files::FileSecurity;
pub use passwd::{hash_password, set_user, PasswordFile};

/// Why a password, ACL or configuration file could not be used.
///
/// Each variant carries the file (and line, where there is one) so the message alone tells the
/// user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A configuration option has a wrong or missing value, or is not known.
    #[error("{}:{line}: {option}: {message}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The option, as written.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// A user name cannot be stored in a password file (Mosquitto would misread the line).
    #[error("invalid user name {user:?}: {why}")]
    InvalidUser {
        /// The rejected user name.
        user: String,
        /// Why.
        why: &'static str,
    },
    /// A password cannot be stored in a password file.
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    /// The system's secure random number generator failed, so no salt could be made.
    #[error("the system random number generator failed")]
    Random,
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }

    fn line(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Error::Line { path: path.to_path_buf(), line, message: message.into() }
    }
}

/// Reads a whole file as UTF-8. Invalid UTF-8 is reported with the line it is on, because
/// these files are edited by hand.
fn read_text(path: &Path) -> Result<String, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes().get(..valid).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) + 1;
        Error::line(path, line, "not valid UTF-8")
    })
}

/// Splits off the first whitespace-separated word: `("topic", "read a/b")`.
fn first_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(first_word("  topic   read a b "), ("topic", "read a b "));
        assert_eq!(first_word("user"), ("user", ""));
        assert_eq!(first_word(""), ("", ""));
        assert_eq!(first_word("a\tb"), ("a", "b"));
    }

    #[test]
    fn invalid_utf8_names_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"ok\nfine\nbad \xff here\n").unwrap();
        let err = read_text(&path).unwrap_err().to_string();
        assert!(err.ends_with("f:3: not valid UTF-8"), "{err}");
        let err = read_text(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
