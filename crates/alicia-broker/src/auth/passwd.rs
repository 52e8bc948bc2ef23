//! Mosquitto password files: one `user:hash` line per user, as written by `mosquitto_passwd`.
//!
//! Two hash formats exist (Mosquitto's `src/password_mosq.c`), both over a 12-byte salt and a
//! 64-byte hash, written in standard base64 with padding:
//! - `$6$SALT$HASH`: `HASH = SHA-512(password ‖ salt)`, the Mosquitto 1.x default;
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA-512, the Mosquitto 2.0 default with 101
//!   iterations. [`hash_password`] writes this one.
//!
//! Mosquitto skips lines starting with `#`. Unlike Mosquitto, which logs and drops entries it
//! cannot decode, [`PasswordFile::load`] refuses the whole file and names the line: a user
//! silently unable to log in is harder to diagnose than a broker that says why it won't start.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};
use subtle::ConstantTimeEq;

use super::{read_text, Error};

/// Salt length Mosquitto writes and requires.
const SALT_LEN: usize = 12;
/// SHA-512 output length; Mosquitto requires exactly this many hash bytes.
const HASH_LEN: usize = 64;
/// PBKDF2 iterations `mosquitto_passwd` uses by default (and that we write).
pub const DEFAULT_ITERATIONS: u32 = 101;
const DEFAULT_ITERATIONS_NZ: NonZeroU32 = match NonZeroU32::new(DEFAULT_ITERATIONS) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// Standard alphabet; padding written on encode, accepted with or without on decode.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One stored password hash.
#[derive(Clone)]
enum Hash {
    /// `$6$`: one SHA-512 over password then salt.
    Sha512 { salt: [u8; SALT_LEN], hash: [u8; HASH_LEN] },
    /// `$7$`: PBKDF2-HMAC-SHA-512.
    Pbkdf2 { iterations: NonZeroU32, salt: [u8; SALT_LEN], hash: [u8; HASH_LEN] },
}

/// Compared against when the user is unknown, so that an unknown user costs about as much
/// time as a wrong password and user names cannot be probed by timing.
const DUMMY: Hash = Hash::Pbkdf2 { iterations: DEFAULT_ITERATIONS_NZ, salt: [0; SALT_LEN], hash: [0; HASH_LEN] };

impl Hash {
    fn parse(s: &str) -> Result<Hash, String> {
        let mut parts = s.split('$');
        if parts.next() != Some("") {
            return Err("password hash must start with $6$ or $7$ (plain-text passwords must first be hashed, \
                        e.g. with mosquitto_passwd -U)"
                .into());
        }
        let kind = parts.next().unwrap_or("");
        let iterations = match kind {
            "6" => None,
            "7" => {
                let it = parts.next().unwrap_or("");
                match it.parse::<u32>().ok().and_then(NonZeroU32::new) {
                    Some(n) => Some(n),
                    None => return Err(format!("invalid PBKDF2 iteration count {it:?}")),
                }
            }
            other => return Err(format!("unsupported hash type ${other}$ (Mosquitto 2.0 knows $6$ and $7$)")),
        };
        let salt = decode::<SALT_LEN>(parts.next().unwrap_or(""), "salt")?;
        let hash = decode::<HASH_LEN>(parts.next().unwrap_or(""), "hash")?;
        if parts.next().is_some() {
            return Err("unexpected '$' after the hash".into());
        }
        Ok(match iterations {
            None => Hash::Sha512 { salt, hash },
            Some(iterations) => Hash::Pbkdf2 { iterations, salt, hash },
        })
    }

    /// Constant-time in the password's correctness (not in its length or the iteration count).
    fn verify(&self, password: &[u8]) -> bool {
        let mut out = [0u8; HASH_LEN];
        let expected = match self {
            Hash::Sha512 { salt, hash } => {
                let mut ctx = digest::Context::new(&digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                out.copy_from_slice(ctx.finish().as_ref());
                hash
            }
            Hash::Pbkdf2 { iterations, salt, hash } => {
                pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA512, *iterations, salt, password, &mut out);
                hash
            }
        };
        bool::from(out.ct_eq(expected))
    }
}

fn decode<const N: usize>(s: &str, what: &str) -> Result<[u8; N], String> {
    let bytes = B64.decode(s).map_err(|e| format!("{what} is not valid base64 ({e})"))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{what} decodes to {} bytes, Mosquitto requires {N}", bytes.len()))
}

/// The users of a Mosquitto password file and their password hashes.
///
/// Loaded once and replaced whole on reload; lookups never touch the disk.
#[derive(Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
}

impl fmt::Debug for PasswordFile {
    /// Lists user names only: hashes are secrets too (they allow offline guessing).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users();
        users.sort_unstable();
        f.debug_struct("PasswordFile").field("users", &users).finish()
    }
}

impl PasswordFile {
    /// Reads a password file. Errors name the file and, for a bad entry, the line.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, Error> {
        let path = path.as_ref();
        PasswordFile::parse(&read_text(path)?, path)
    }

    /// Parses password-file text; `origin` only names the source in errors.
    ///
    /// Blank lines and lines starting with `#` are skipped. Every other line must be
    /// `user:hash` with a `$6$` or `$7$` hash; spaces around the user name and the hash are
    /// trimmed, as Mosquitto does. A user listed twice is an error (Mosquitto's choice between
    /// the two is unspecified).
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<PasswordFile, Error> {
        let origin = origin.as_ref();
        let mut users = HashMap::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let lineno = n + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(Error::line(origin, lineno, "expected user:hash"));
            };
            let (user, hash) = (user.trim(), hash.trim());
            if user.is_empty() {
                return Err(Error::line(origin, lineno, "empty user name"));
            }
            if hash.is_empty() {
                return Err(Error::line(origin, lineno, format!("no password hash for user {user:?}")));
            }
            if hash.contains(':') {
                return Err(Error::line(origin, lineno, format!("unexpected ':' in the hash of user {user:?}")));
            }
            let hash = Hash::parse(hash).map_err(|m| Error::line(origin, lineno, format!("user {user:?}: {m}")))?;
            if let Some(first) = lines.insert(user.to_string(), lineno) {
                return Err(Error::line(origin, lineno, format!("user {user:?} already listed on line {first}")));
            }
            users.insert(user.to_string(), hash);
        }
        Ok(PasswordFile { users })
    }

    /// Whether `password` is `user`'s password. Unknown users are refused after the same work
    /// as a wrong password, and the hash comparison is constant-time.
    ///
    /// `password` is the raw bytes from CONNECT. Mosquitto hashes a password only up to its
    /// first NUL byte; we hash all of it, so `"secret\0junk"` is refused here.
    pub fn verify(&self, user: &str, password: impl AsRef<[u8]>) -> bool {
        match self.users.get(user) {
            Some(hash) => hash.verify(password.as_ref()),
            None => {
                DUMMY.verify(password.as_ref());
                false
            }
        }
    }

    /// Whether `user` has an entry.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The user names, in no particular order.
    pub fn users(&self) -> Vec<&str> {
        self.users.keys().map(String::as_str).collect()
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users (then nobody can log in with a password).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Hashes a password the way `mosquitto_passwd` 2.0 does: `$7$101$SALT$HASH` with a fresh random
/// 12-byte salt. The result is the part after `user:` in a password file.
///
/// Fails only if the system has no secure randomness, or if the password contains a NUL byte
/// (Mosquitto would truncate it there, so the stored hash would not match what it checks).
pub fn hash_password(password: impl AsRef<[u8]>) -> Result<String, Error> {
    let password = password.as_ref();
    if password.contains(&0) {
        return Err(Error::InvalidPassword("contains a NUL byte"));
    }
    let mut salt = [0u8; SALT_LEN];
    SystemRandom::new().fill(&mut salt).map_err(|_| Error::Random)?;
    let mut hash = [0u8; HASH_LEN];
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA512, DEFAULT_ITERATIONS_NZ, &salt, password, &mut hash);
    Ok(format!("$7${DEFAULT_ITERATIONS}${}${}", B64.encode(salt), B64.encode(hash)))
}

/// Why `user` cannot be written as `user:hash` and read back identically by Mosquitto.
fn check_user(user: &str) -> Result<(), Error> {
    let why = if user.is_empty() {
        "empty"
    } else if user.contains(':') {
        "contains ':'"
    } else if user.starts_with('#') {
        "starts with '#', which makes the line a comment"
    } else if user.chars().any(char::is_control) {
        "contains a control character"
    } else if user.trim() != user {
        "starts or ends with white space, which Mosquitto trims"
    } else if user.len() > usize::from(u16::MAX) {
        "longer than 65535 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidUser { user: user.to_string(), why })
}

/// The user name a password-file line is for, if it is an entry.
fn line_user(line: &str) -> Option<&str> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(user, _)| user.trim())
}

/// Adds `user` with `password` to the password file at `path`, or replaces the user's entry.
/// Other lines, comments included, are kept as they are; a missing file is created.
///
/// The file is replaced atomically (a temporary file in the same directory, flushed to disk,
/// then renamed over it) so a crash never leaves a half-written password file, and it gets
/// mode 0600 because the hashes allow offline guessing. The replacement is a new file, owned by
/// the calling user: if a separate `mosquitto` daemon must read it, fix ownership afterwards.
pub fn set_user(path: impl AsRef<Path>, user: &str, password: impl AsRef<[u8]>) -> Result<(), Error> {
    let path = path.as_ref();
    check_user(user)?;
    let entry = format!("{user}:{}\n", hash_password(password)?);
    let existing = match path.try_exists() {
        Ok(true) => read_text(path)?,
        Ok(false) => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = String::with_capacity(existing.len() + entry.len());
    let mut replaced = false;
    for line in existing.split_inclusive('\n') {
        if line_user(line) == Some(user) {
            if !replaced {
                out.push_str(&entry);
                replaced = true;
            }
            continue;
        }
        out.push_str(line);
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&entry);
    }
    write_atomically(path, out.as_bytes())
}

/// Writes `bytes` over `path`, atomically and durably, mode 0600 ([`alicia_home::write_file`]).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    alicia_home::write_file(path, bytes, alicia_home::Access::Secret).map_err(|e| Error::io(&e.path, e.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
    const MOSQUITTO: &str = "/usr/sbin/mosquitto";
    const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";

    fn have(tool: &str) -> bool {
        let ok = Path::new(tool).exists();
        if !ok {
            eprintln!("note: {tool} not installed, skipping the Mosquitto interoperability part of this test");
        }
        ok
    }

    fn sha512_entry(password: &[u8], salt: &[u8; SALT_LEN]) -> String {
        let mut ctx = digest::Context::new(&digest::SHA512);
        ctx.update(password);
        ctx.update(salt);
        format!("$6${}${}", B64.encode(salt), B64.encode(ctx.finish().as_ref()))
    }

    #[test]
    fn verifies_both_formats() {
        let six = sha512_entry(b"pw6", b"0123456789ab");
        let seven = hash_password("pw7").unwrap();
        assert!(seven.starts_with("$7$101$"));
        let text = format!("# comment\n\n alice : {six} \r\nbob:{seven}\n");
        let pw = PasswordFile::parse(&text, Path::new("pw")).unwrap();
        assert_eq!(pw.len(), 2);
        assert!(pw.verify("alice", "pw6"));
        assert!(!pw.verify("alice", "pw7"));
        assert!(!pw.verify("alice", "pw6\0"));
        assert!(pw.verify("bob", b"pw7"));
        assert!(!pw.verify("bob", ""));
        assert!(!pw.verify("carol", "pw6"));
        assert!(!pw.verify("Alice", "pw6"));
        let debug = format!("{pw:?}");
        assert!(debug.contains("alice") && !debug.contains(&six[4..20]), "{debug}");
    }

    #[test]
    fn independent_vectors() {
        // Computed with Python's hashlib (sha512 and pbkdf2_hmac), salt "saltsaltsalt".
        let text = "six:$6$c2FsdHNhbHRzYWx0$OeQ5oAbOQHyO7Lq8Yy6QA9elYJe+j/9D8PsO2kAAWvXjKHDQRRQWfQVtuTJGiL7WcNKmunUtEqh9n4tloqTh+g==
seven:$7$1000$c2FsdHNhbHRzYWx0$qEWuBHP82uzPrybCUpp9FMGVDoszagDwOgBhAY44y2gPun4RFBM9zjAnhQjJRk+l/dEEhatLCI65Yj/OYq4dcQ==
unpadded:$6$c2FsdHNhbHRzYWx0$OeQ5oAbOQHyO7Lq8Yy6QA9elYJe+j/9D8PsO2kAAWvXjKHDQRRQWfQVtuTJGiL7WcNKmunUtEqh9n4tloqTh+g
";
        let pw = PasswordFile::parse(text, Path::new("x")).unwrap();
        for user in ["six", "seven", "unpadded"] {
            assert!(pw.verify(user, "password"), "{user}");
            assert!(!pw.verify(user, "passwore"), "{user}");
        }
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let good = hash_password("x").unwrap();
        let salt16 = B64.encode([0u8; 16]);
        let hash64 = B64.encode([0u8; 64]);
        let cases = [
            ("alice".to_string(), "expected user:hash"),
            (":{good}".replace("{good}", &good), "empty user name"),
            ("alice:".into(), "no password hash"),
            ("alice:secret".into(), "must start with $6$ or $7$"),
            ("alice:$5$abc$def".into(), "unsupported hash type"),
            ("alice:$7$0$AAAAAAAAAAAAAAAA$AAAA".into(), "iteration count"),
            ("alice:$7$x$AAAAAAAAAAAAAAAA$AAAA".into(), "iteration count"),
            ("alice:$6$!!!$AAAA".into(), "salt is not valid base64"),
            (format!("alice:$6${salt16}${hash64}"), "salt decodes to 16 bytes"),
            ("alice:$6$AAAAAAAAAAAAAAAA$AAAA".into(), "hash decodes to 3 bytes"),
            ("alice:$6$AAAAAAAAAAAAAAAA".into(), "hash decodes to 0 bytes"),
            (format!("alice:{good}$"), "unexpected '$'"),
            (format!("alice:{good}:x"), "unexpected ':'"),
        ];
        for (text, want) in cases {
            let text = format!("# header\n{text}");
            let err = PasswordFile::parse(&text, Path::new("/etc/pw")).unwrap_err().to_string();
            assert!(err.starts_with("/etc/pw:2: "), "{text}: {err}");
            assert!(err.contains(want), "{text}: {err}");
        }
        let err = PasswordFile::parse(&format!("alice:{good}\n\nalice:{good}"), Path::new("pw")).unwrap_err();
        assert_eq!(err.to_string(), "pw:3: user \"alice\" already listed on line 1");
        let err = PasswordFile::load("/nonexistent/pw").unwrap_err().to_string();
        assert!(err.starts_with("/nonexistent/pw: "), "{err}");
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x1234_5678_u32;
        let alphabet = b"$:67#AZaz09+/= \n\t\xc3";
        for _ in 0..2000 {
            let len = (seed % 40) as usize;
            let mut s = String::from("u:");
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                s.push(char::from(alphabet[seed as usize % (alphabet.len() - 1)]));
            }
            if let Ok(pw) = PasswordFile::parse(&s, Path::new("fuzz")) {
                pw.verify("u", "x");
            }
        }
    }

    #[test]
    fn set_user_adds_replaces_and_preserves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        set_user(&path, "alice", "one").unwrap();
        set_user(&path, "bob", "two").unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("# keep me\n{before}\nno newline at end")).unwrap();
        let err = PasswordFile::load(&path).unwrap_err().to_string();
        assert!(err.ends_with("passwd:5: expected user:hash"), "{err}");
        std::fs::write(&path, format!("# keep me\n{before}")).unwrap();
        set_user(&path, "alice", "three").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "# keep me");
        assert!(lines[1].starts_with("alice:$7$101$"));
        assert_eq!(lines[2], before.lines().nth(1).unwrap(), "bob's line untouched");
        let pw = PasswordFile::load(&path).unwrap();
        assert!(pw.verify("alice", "three") && !pw.verify("alice", "one") && pw.verify("bob", "two"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");

        for bad in ["", "a:b", "#x", " x", "x\n", "x\ty"] {
            assert!(matches!(set_user(&path, bad, "p"), Err(Error::InvalidUser { .. })), "{bad:?}");
        }
        assert!(matches!(set_user(&path, "x", "a\0b"), Err(Error::InvalidPassword(_))));
        assert!(set_user(dir.path().join("no/such/dir/pw"), "x", "p").is_err());
    }

    #[test]
    fn reads_mosquitto_passwd_output() {
        if !have(MOSQUITTO_PASSWD) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let run = |args: &[&str]| {
            let out = Command::new(MOSQUITTO_PASSWD).args(args).output().unwrap();
            assert!(out.status.success(), "mosquitto_passwd {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let p = path.to_str().unwrap();
        run(&["-c", "-b", p, "alice", "s3cret pass"]);
        run(&["-H", "sha512", "-b", p, "bob", "other"]);
        run(&["-H", "sha512-pbkdf2", "-b", p, "carol", "ünïcode"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("alice:$7$101$") && text.contains("bob:$6$"), "{text}");
        let pw = PasswordFile::load(&path).unwrap();
        assert!(pw.verify("alice", "s3cret pass"));
        assert!(!pw.verify("alice", "s3cret"));
        assert!(pw.verify("bob", "other"));
        assert!(!pw.verify("bob", "Other"));
        assert!(pw.verify("carol", "ünïcode"));

        // And mosquitto_passwd keeps reading files we edited.
        set_user(&path, "dave", "mine").unwrap();
        run(&["-b", p, "erin", "theirs"]);
        let pw = PasswordFile::load(&path).unwrap();
        assert!(pw.verify("dave", "mine") && pw.verify("erin", "theirs") && pw.verify("alice", "s3cret pass"));
    }

    /// A real broker, stopped when dropped.
    struct Broker(Child);

    impl Drop for Broker {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn start_mosquitto(dir: &Path, password_file: &Path) -> (Broker, u16) {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // Run as root, mosquitto would switch to the `mosquitto` user, which cannot read a
        // 0600 file in our temporary directory.
        let owner = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(password_file).unwrap().uid()
        };
        let user_line = if owner == 0 { "user root\n" } else { "" };
        std::fs::write(
            &conf,
            format!(
                "{user_line}listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
                password_file.display()
            ),
        )
        .unwrap();
        let child =
            Command::new(MOSQUITTO).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let broker = Broker(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start listening on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        (broker, port)
    }

    fn publish(port: u16, user: &str, password: &str) -> bool {
        let port = port.to_string();
        let args = ["-h", "127.0.0.1", "-p", &port, "-u", user, "-P", password, "-t", "t", "-m", "hi", "-q", "1"];
        Command::new(MOSQUITTO_PUB).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success()
    }

    #[test]
    fn mosquitto_accepts_our_entries() {
        if !have(MOSQUITTO) || !have(MOSQUITTO_PUB) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        set_user(&path, "alice", "correct horse").unwrap();
        // A hand-made $6$ entry next to ours: the broker must read both formats we verify.
        let six = sha512_entry(b"old style", b"abcdefghijkl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!("bob:{six}\n"));
        std::fs::write(&path, text).unwrap();
        assert!(PasswordFile::load(&path).unwrap().verify("bob", "old style"));

        let (_broker, port) = start_mosquitto(dir.path(), &path);
        assert!(publish(port, "alice", "correct horse"), "mosquitto refused our $7$ entry");
        assert!(!publish(port, "alice", "wrong"), "mosquitto accepted a wrong password");
        assert!(publish(port, "bob", "old style"), "mosquitto refused our $6$ entry");
        assert!(!publish(port, "carol", "correct horse"), "mosquitto accepted an unknown user");
    }
}
