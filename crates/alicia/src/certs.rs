//! `alicia certs`: a small certificate authority for the home, with rcgen (no openssl needed).
//!
//! Layout of the certificate directory (default `./certs`):
//! `ca.crt`, `ca.key` (the CA), `server.crt`/`server.key` (the broker),
//! `devices/ID.crt`/`.key` and `services/NAME.crt`/`.key`. Keys are written with mode 0600 and
//! never printed. A client certificate's Common Name is its device id or service name, which
//! the broker uses as the MQTT user name (`use_identity_as_username`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
        /// Certificate directory.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Issue the broker's server certificate for the given host names and IP addresses.
    Server {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Host name or IP address clients use to reach the broker (repeatable).
        #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hosts: Vec<String>,
    },
    /// Issue a client certificate for a device; its CN is the device id.
    Device {
        id: String,
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
    /// Issue a client certificate for a service; its CN is the service name.
    Service {
        name: String,
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
    },
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Ca { dir } => {
            let written = create_ca(&dir)?;
            eprintln!("created {}", written.display());
        }
        CertsCommand::Server { dir, hosts } => {
            let p = issue_server(&dir, &hosts)?;
            eprintln!("issued {}", p.display());
        }
        CertsCommand::Device { id, dir } => {
            let p = issue(&dir.join("devices"), &id, &id, &[], false)?;
            eprintln!("issued {}", p.display());
        }
        CertsCommand::Service { name, dir } => {
            let p = issue(&dir.join("services"), &name, &name, &[], false)?;
            eprintln!("issued {}", p.display());
        }
    }
    Ok(())
}

/// Writes a file readable only by its owner.
pub fn write_secret(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

/// Creates `ca.crt` and `ca.key` in `dir`.
pub fn create_ca(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let crt = dir.join("ca.crt");
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
    write_secret(&dir.join("ca.key"), key.serialize_pem().as_bytes())?;
    std::fs::write(&crt, cert.pem())?;
    Ok(crt)
}

/// Issues the broker's `server.crt`/`server.key` in the certificate directory.
pub fn issue_server(dir: &Path, hosts: &[String]) -> anyhow::Result<PathBuf> {
    issue(dir, "server", "alicia-broker", hosts, true)
}

fn load_ca(dir: &Path) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let crt = std::fs::read_to_string(dir.join("ca.crt"))
        .with_context(|| format!("no CA in {} (run `alicia certs ca` first)", dir.display()))?;
    let key =
        std::fs::read_to_string(dir.join("ca.key")).with_context(|| format!("cannot read {}/ca.key", dir.display()))?;
    let key = KeyPair::from_pem(&key).context("ca.key is not a private key")?;
    Issuer::from_ca_cert_pem(&crt, key).context("ca.crt is not a certificate")
}

/// Issues `name.crt`/`name.key` in `out_dir`, signed by the CA in the certificate directory.
fn issue(out_dir: &Path, name: &str, cn: &str, hosts: &[String], server: bool) -> anyhow::Result<PathBuf> {
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
    validity(&mut p, 825);
    let cert = p.signed_by(&key, &issuer)?;
    write_secret(&out_dir.join(format!("{name}.key")), key.serialize_pem().as_bytes())?;
    let crt = out_dir.join(format!("{name}.crt"));
    std::fs::write(&crt, cert.pem())?;
    Ok(crt)
}
