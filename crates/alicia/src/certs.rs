//! `alicia certs`: a small certificate authority for the home, with rcgen (no openssl needed).
//!
//! Layout of the certificate directory (default: the Alicia home's `certs/`, the one `alicia
//! init` made and `alicia up` uses; `--dir` for another):
//! `ca.crt`, `ca.key` (the CA), `server.crt`/`server.key` (the broker),
//! `devices/ID.crt`/`.key` and `services/NAME.crt`/`.key`, and `crl.pem`, the CA's certificate
//! revocation list (`alicia certs revoke`). Keys are written with mode 0600 and never printed. A client certificate's Common Name is its device id or service name, which
//! the broker uses as the MQTT user name (`use_identity_as_username`).

use std::path::{Path, PathBuf};

use alicia_home::{Access, Certs, Home};
use anyhow::{bail, Context};
use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

#[derive(Subcommand, Clone)]
pub enum CertsCommand {
    /// Create the certificate authority (refuses to overwrite an existing one).
    Ca {
        /// Certificate directory [default: <Alicia home>/certs].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Issue the broker's server certificate for the given host names and IP addresses.
    Server {
        /// Certificate directory [default: <Alicia home>/certs].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Host name or IP address clients use to reach the broker (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Issue a client certificate for a device; its CN is the device id.
    Device {
        id: String,
        /// Certificate directory [default: <Alicia home>/certs].
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        validity: Validity,
    },
    /// Issue a client certificate for a service; its CN is the service name.
    Service {
        name: String,
        /// Certificate directory [default: <Alicia home>/certs].
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        validity: Validity,
    },
    /// Revoke a certificate: add it to the CA's revocation list (`crl.pem` in the certificate
    /// directory). The gateway honours it on the next request; the broker on reload, which
    /// this command asks for when the home has a running `alicia up` (its `alicia.pid`).
    Revoke {
        /// A device id or service name (its certificate in devices/ or services/), or a
        /// certificate file.
        #[arg(required_unless_present = "serial", conflicts_with = "serial")]
        target: Option<String>,
        /// The serial number (hex, as `openssl x509 -serial` prints it) instead.
        #[arg(long)]
        serial: Option<String>,
        /// Certificate directory [default: <Alicia home>/certs].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write an empty revocation list (`crl.pem`) if there is none.
    Crl {
        /// Certificate directory [default: <Alicia home>/certs].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// How long a client certificate is valid.
#[derive(clap::Args, Clone, Debug)]
pub struct Validity {
    /// Days from now until the certificate expires.
    #[arg(long, default_value_t = 825)]
    days: i64,
    /// Expiry date (YYYY-MM-DD, UTC midnight) instead of --days; a date in the past gives an
    /// already expired certificate (for testing that it is refused).
    #[arg(long, value_name = "DATE", conflicts_with = "days")]
    not_after: Option<String>,
}

impl Validity {
    fn apply(&self, p: &mut CertificateParams) -> anyhow::Result<()> {
        match &self.not_after {
            None => validity(p, self.days),
            Some(date) => {
                let end = parse_date(date)?;
                p.not_after = end;
                p.not_before = end.min(time::OffsetDateTime::now_utc()) - time::Duration::days(1);
            }
        }
        Ok(())
    }
}

impl Default for Validity {
    fn default() -> Self {
        Self { days: 825, not_after: None }
    }
}

fn parse_date(s: &str) -> anyhow::Result<time::OffsetDateTime> {
    let bad = || anyhow::anyhow!("{s:?} is not a date YYYY-MM-DD");
    let mut parts = s.splitn(3, '-').map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (y, m, d) = (parts.next().ok_or_else(bad)??, parts.next().ok_or_else(bad)??, parts.next().ok_or_else(bad)??);
    let month = time::Month::try_from(u8::try_from(m).map_err(|_| bad())?).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(
        i32::try_from(y).map_err(|_| bad())?,
        month,
        u8::try_from(d).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    Ok(date.midnight().assume_utc())
}

/// The certificate directory: `--dir`, else the Alicia home's `certs/`.
fn dir_or_home(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| Home::default_location().certs_dir())
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Ca { dir } => {
            let dir = dir_or_home(dir);
            let written = create_ca(&dir)?;
            eprintln!("created {}", written.display());
        }
        CertsCommand::Server { dir, hosts } => {
            let dir = dir_or_home(dir);
            let p = issue_server(&dir, &hosts)?;
            eprintln!("issued {}", p.display());
        }
        CertsCommand::Device { id, dir, validity } => {
            let dir = dir_or_home(dir);
            let p = issue(&Certs::new(&dir).devices_dir(), &id, &id, &[], Some(&validity))?;
            eprintln!("issued {}", p.display());
        }
        CertsCommand::Service { name, dir, validity } => {
            let dir = dir_or_home(dir);
            let p = issue(&Certs::new(&dir).services_dir(), &name, &name, &[], Some(&validity))?;
            eprintln!("issued {}", p.display());
        }
        CertsCommand::Revoke { target, serial, dir } => {
            let dir = dir_or_home(dir);
            let serial = match (target, serial) {
                (_, Some(s)) => parse_serial(&s)?,
                (Some(t), None) => serial_of(&certificate_file(&dir, &t)?)?,
                (None, None) => bail!("give a device id, service name, certificate file or --serial"),
            };
            let (crl, added) = revoke(&dir, &serial)?;
            let hex = hex(&serial);
            if added {
                eprintln!("revoked serial {hex}; {} updated", crl.display());
            } else {
                eprintln!("serial {hex} was already revoked ({})", crl.display());
            }
            tell_broker(&dir);
        }
        CertsCommand::Crl { dir } => {
            let dir = dir_or_home(dir);
            let crl = Certs::new(&dir).crl();
            if crl.exists() {
                eprintln!("{} exists", crl.display());
            } else {
                write_crl(&dir, &[])?;
                eprintln!("created {}", crl.display());
            }
        }
    }
    Ok(())
}

/// Writes a file readable only by its owner (atomically and durably, mode 0600 from the
/// start: [`alicia_home::write_file`]).
pub fn write_secret(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    Ok(alicia_home::write_file(path, data, Access::Secret)?)
}

/// Writes a file everyone may read (a certificate, a revocation list), atomically and durably.
pub fn write_public(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    Ok(alicia_home::write_file(path, data, Access::Public)?)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// Creates `ca.crt` and `ca.key` in `dir`.
pub fn create_ca(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let crt = Certs::new(dir).ca_cert();
    if crt.exists() {
        bail!("{} exists: refusing to replace the certificate authority", crt.display());
    }
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, "Alicia home CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut p, 3650);
    let cert = p.self_signed(&key)?;
    write_secret(&Certs::new(dir).ca_key(), key.serialize_pem().as_bytes())?;
    write_public(&crt, cert.pem().as_bytes())?;
    Ok(crt)
}

/// Issues the broker's `server.crt`/`server.key` in the certificate directory.
pub fn issue_server(dir: &Path, hosts: &[String]) -> anyhow::Result<PathBuf> {
    issue(dir, "server", "alicia-broker", hosts, None)
}

fn load_ca(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let certs = Certs::new(dir);
    let crt = match std::fs::read_to_string(certs.ca_cert()) {
        Ok(crt) => crt,
        Err(e) => bail!("no certificate authority in {}: {e}; {}", dir.display(), where_the_ca_is(dir)),
    };
    let key =
        std::fs::read_to_string(certs.ca_key()).with_context(|| format!("cannot read {}", certs.ca_key().display()))?;
    let key = KeyPair::from_pem(&key).context("ca.key is not a private key")?;
    Issuer::from_ca_cert_pem(&crt, key).context("ca.crt is not a certificate")
}

/// Issues a device's client certificate (`devices/ID.crt` and `.key`) in the certificate
/// directory `dir`; its CN is `id`.
pub fn issue_device(dir: &Path, id: &str, validity: &Validity) -> anyhow::Result<PathBuf> {
    issue(&Certs::new(dir).devices_dir(), id, id, &[], Some(validity))
}

/// Revokes the certificate `target` names (a device id, service name or file) and asks a
/// running `alicia up` to reload. Returns whether it was newly revoked.
pub fn revoke_named(dir: &Path, target: &str) -> anyhow::Result<bool> {
    let serial = serial_of(&certificate_file(dir, target)?)?;
    let (_, added) = revoke(dir, &serial)?;
    tell_broker(dir);
    Ok(added)
}

/// The host names and addresses of the broker's certificate (`server.crt`), as devices must
/// write them to verify it.
pub fn server_hosts(dir: &Path) -> Vec<String> {
    let Ok(pem) = std::fs::read(Certs::new(dir).server_cert()) else { return Vec::new() };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else { return Vec::new() };
    let Ok(cert) = pem.parse_x509() else { return Vec::new() };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
            }
            _ => None,
        })
        .collect()
}

/// What to do about a missing CA: never make a second one when a home has the first.
fn where_the_ca_is(dir: &Path) -> String {
    let home = Home::default_location();
    let home_ca = home.ca_cert();
    if home_ca.exists() && home.certs_dir() != dir {
        format!(
            "the Alicia home {} has its certificate authority in {}: issue with `--dir {}` (or without --dir)",
            home.root().display(),
            home_ca.display(),
            home.certs_dir().display()
        )
    } else if home.exists() {
        format!(
            "the Alicia home {} has no certificate authority: restore certs/ca.crt and ca.key from a backup \
             (a new CA would not be trusted by the devices and broker that trust the old one)",
            home.root().display()
        )
    } else {
        format!(
            "create the Alicia home and its CA with `alicia init` (or `alicia up`), or give --dir (home: {})",
            home.root().display()
        )
    }
}

/// Issues `name.crt`/`name.key` in `out_dir`, signed by the CA in the certificate directory:
/// a server certificate when `client` is `None`, else a client certificate valid as it says.
fn issue(out_dir: &Path, name: &str, cn: &str, hosts: &[String], client: Option<&Validity>) -> anyhow::Result<PathBuf> {
    let server = client.is_none();
    if name.is_empty() || name.contains(['/', '\\', '+', '#']) || name.starts_with('.') {
        bail!("{name:?} cannot be used as a certificate name");
    }
    let ca_dir = if server { out_dir } else { out_dir.parent().unwrap_or(Path::new(".")) };
    let issuer = load_ca(ca_dir)?;
    std::fs::create_dir_all(out_dir)?;
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, cn);
    for h in hosts {
        p.subject_alt_names.push(match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.clone().try_into()?),
        });
    }
    p.extended_key_usages =
        vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    match client {
        Some(v) => v.apply(&mut p)?,
        None => validity(&mut p, 825),
    }
    let cert = p.signed_by(&key, &issuer)?;
    write_secret(&out_dir.join(format!("{name}.key")), key.serialize_pem().as_bytes())?;
    let crt = out_dir.join(format!("{name}.crt"));
    write_public(&crt, cert.pem().as_bytes())?;
    Ok(crt)
}

/// The revocation list's file name in the certificate directory.
pub const CRL_FILE: &str = "crl.pem";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A serial number in hex (`0x`, colons and case allowed), as big-endian bytes.
fn parse_serial(s: &str) -> anyhow::Result<Vec<u8>> {
    let digits: String = s.trim().trim_start_matches("0x").chars().filter(|c| *c != ':').collect();
    let digits = if digits.len() % 2 == 1 { format!("0{digits}") } else { digits };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{s:?} is not a hexadecimal serial number");
    }
    Ok((0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex")).collect())
}

/// The certificate a revocation names: an existing file, else `devices/ID.crt`, else
/// `services/ID.crt` in the certificate directory.
fn certificate_file(dir: &Path, target: &str) -> anyhow::Result<PathBuf> {
    let as_file = Path::new(target);
    if as_file.is_file() {
        return Ok(as_file.to_path_buf());
    }
    if !target.contains(['/', '\\']) && !target.starts_with('.') && !target.is_empty() {
        for sub in ["devices", "services"] {
            let p = dir.join(sub).join(format!("{target}.crt"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "no certificate {target:?}: neither a file nor devices/{target}.crt or services/{target}.crt in {}",
        dir.display()
    )
}

/// The serial number of the first certificate in a PEM file.
fn serial_of(file: &Path) -> anyhow::Result<Vec<u8>> {
    let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", file.display()))?;
    let cert = pem.parse_x509().map_err(|e| anyhow::anyhow!("{}: not a certificate: {e}", file.display()))?;
    Ok(cert.tbs_certificate.raw_serial().to_vec())
}

/// One entry of the revocation list.
struct Revoked {
    serial: Vec<u8>,
    when: time::OffsetDateTime,
}

/// The entries of the CRL in `dir` (none if there is no file), and its number.
fn read_crl(dir: &Path) -> anyhow::Result<(Vec<Revoked>, u64)> {
    let path = Certs::new(dir).crl();
    let pem = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PEM CRL: {e}", path.display()))?;
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents)
        .map_err(|e| anyhow::anyhow!("{}: not a CRL: {e}", path.display()))?;
    let number = crl.crl_number().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    let entries = crl
        .iter_revoked_certificates()
        .map(|r| Revoked {
            serial: r.raw_serial().to_vec(),
            when: time::OffsetDateTime::from_unix_timestamp(r.revocation_date.timestamp())
                .unwrap_or_else(|_| time::OffsetDateTime::now_utc()),
        })
        .collect();
    Ok((entries, number))
}

/// Writes `crl.pem` with `entries`, signed by the CA, numbered one above the current file:
/// to a temporary file first, then renamed over the old one, so a reader never sees half of it.
fn write_crl(dir: &Path, entries: &[Revoked]) -> anyhow::Result<PathBuf> {
    use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
    let issuer = load_ca(dir)?;
    let (_, number) = read_crl(dir)?;
    let now = time::OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now,
        // Nothing re-signs the list on a schedule in a home; it stays in force until replaced.
        next_update: now + time::Duration::days(3650),
        crl_number: SerialNumber::from(number + 1),
        issuing_distribution_point: None,
        revoked_certs: entries
            .iter()
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&r.serial),
                revocation_time: r.when,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer).context("cannot sign the revocation list")?;
    let path = Certs::new(dir).crl();
    // Replaced atomically: the gateway and the broker re-read it when it changes and must never
    // see half a list.
    write_public(&path, crl.pem()?.as_bytes())?;
    Ok(path)
}

/// Adds `serial` to the CA's revocation list. Returns the file and whether it was new.
pub fn revoke(dir: &Path, serial: &[u8]) -> anyhow::Result<(PathBuf, bool)> {
    let (mut entries, _) = read_crl(dir)?;
    let strip = |s: &[u8]| s.iter().skip_while(|b| **b == 0).copied().collect::<Vec<u8>>();
    if entries.iter().any(|r| strip(&r.serial) == strip(serial)) {
        return Ok((Certs::new(dir).crl(), false));
    }
    entries.push(Revoked { serial: serial.to_vec(), when: time::OffsetDateTime::now_utc() });
    Ok((write_crl(dir, &entries)?, true))
}

/// Writes an empty revocation list if `dir` has none (for `alicia init`).
pub fn ensure_crl(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = Certs::new(dir).crl();
    if path.exists() {
        return Ok(path);
    }
    write_crl(dir, &[])
}

/// Whether a `/proc/PID/cmdline` (NUL-separated arguments) is an `alicia … up` process.
fn is_alicia_up(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
    let program = args.next().unwrap_or_default();
    let name = program.rsplit(|b| *b == b'/').next().unwrap_or_default();
    name.starts_with(b"alicia") && args.any(|a| a == b"up")
}

/// After a revocation: the gateway reads the list by itself; the broker needs a reload. If the
/// home (the certificate directory's parent) has a running `alicia up`, signal it.
fn tell_broker(dir: &Path) {
    let home = Home::new(dir.parent().unwrap_or(Path::new(".")));
    if let Ok(config) = std::fs::read_to_string(home.config_file()) {
        if !config.contains("crlfile") {
            eprintln!(
                "warning: {} has no crlfile: add `crlfile: {}/{CRL_FILE}` to the broker's TLS listener so \
                 the broker honours revocations",
                home.config_file().display(),
                dir.file_name().map_or("certs".into(), |n| n.to_string_lossy())
            );
        }
    }
    let pid_file = home.pid_file();
    // A pid file left behind by a killed `alicia up` may name another program by now: only an
    // alicia process is signalled.
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_alicia_up(&c)));
    let signalled = pid.is_some_and(|pid| {
        std::process::Command::new("kill")
            .arg("-HUP")
            .arg(pid.to_string())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if signalled {
        eprintln!(
            "asked the running broker ({}) to reload: it refuses the certificate from now on",
            pid_file.display()
        );
    } else {
        eprintln!(
            "the gateway refuses the certificate from its next request; a running broker does after \
             `alicia broker reload --pid-file FILE` (or SIGHUP)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_keeps_a_signed_growing_list() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path();
        create_ca(certs).unwrap();
        ensure_crl(certs).unwrap();
        assert!(read_crl(certs).unwrap().0.is_empty());
        let a = issue(&certs.join("devices"), "a", "a", &[], Some(&Validity::default())).unwrap();
        let b = issue(&certs.join("devices"), "b", "b", &[], Some(&Validity::default())).unwrap();
        let (sa, sb) = (serial_of(&a).unwrap(), serial_of(&b).unwrap());
        assert_eq!(certificate_file(certs, "a").unwrap(), a);
        assert!(certificate_file(certs, "../a").is_err());

        assert!(revoke(certs, &sa).unwrap().1);
        assert!(!revoke(certs, &sa).unwrap().1, "revoking twice changes nothing");
        assert!(revoke(certs, &parse_serial(&format!("0x{}", hex(&sb).to_uppercase())).unwrap()).unwrap().1);
        let (entries, number) = read_crl(certs).unwrap();
        assert_eq!(entries.iter().map(|e| e.serial.clone()).collect::<Vec<_>>(), vec![sa, sb]);
        assert_eq!(number, 3);

        // The gateway's check (rustls/webpki, the broker's verifier too) reads it as the CA's.
        let auth = alicia_gateway::DeviceAuthority::load(&certs.join("ca.crt"), Some(&certs.join(CRL_FILE))).unwrap();
        let pem = std::fs::read_to_string(&a).unwrap();
        assert_eq!(auth.verify_pem(&pem), Err(alicia_gateway::DeviceAuthError::Revoked));
        assert!(parse_serial("xyz").is_err());
    }

    #[test]
    fn only_alicia_up_is_signalled() {
        assert!(is_alicia_up(b"/work/target/debug/alicia\0up\0--home\0h\0"));
        assert!(!is_alicia_up(b"/usr/bin/vim\0up\0"));
        assert!(!is_alicia_up(b"alicia\0broker\0"));
        assert!(!is_alicia_up(b""));
    }

    #[test]
    fn expiry_dates() {
        let dir = tempfile::tempdir().unwrap();
        create_ca(dir.path()).unwrap();
        let old = Validity { days: 825, not_after: Some("2020-01-01".into()) };
        let p = issue(&dir.path().join("devices"), "old", "old", &[], Some(&old)).unwrap();
        let auth = alicia_gateway::DeviceAuthority::load(&dir.path().join("ca.crt"), None).unwrap();
        assert_eq!(
            auth.verify_pem(&std::fs::read_to_string(p).unwrap()),
            Err(alicia_gateway::DeviceAuthError::Expired)
        );
        assert!(parse_date("2020-13-01").is_err() && parse_date("soon").is_err());
    }
}
