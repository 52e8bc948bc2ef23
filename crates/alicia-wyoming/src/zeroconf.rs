//! `_wyoming._tcp` advertisement over mDNS (the mdns-sd crate), as the reference servers do, so
//! Home Assistant discovers the servers by itself. Off unless enabled: it multicasts on the
//! local network.

use std::net::IpAddr;

use mdns_sd::{ServiceDaemon, ServiceInfo};

pub const SERVICE_TYPE: &str = "_wyoming._tcp.local.";

#[derive(Debug, thiserror::Error)]
#[error("zeroconf: {0}")]
pub struct ZeroconfError(String);

/// What is advertised: `<instance>._wyoming._tcp.local.` on `port`, at `addr` (or every address
/// of the machine, kept up to date, when `None`).
pub fn service_info(instance: &str, port: u16, addr: Option<IpAddr>) -> Result<ServiceInfo, ZeroconfError> {
    let host = hostname();
    let host = format!("{host}.local.");
    let props: [(&str, &str); 1] = [("alicia", env!("CARGO_PKG_VERSION"))];
    let info = match addr {
        Some(ip) => ServiceInfo::new(SERVICE_TYPE, instance, &host, ip, port, &props[..]),
        None => ServiceInfo::new(SERVICE_TYPE, instance, &host, (), port, &props[..]).map(|i| i.enable_addr_auto()),
    };
    info.map_err(|e| ZeroconfError(e.to_string()))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| "alicia".into())
}

/// A registered advertisement; withdrawn when dropped.
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Advertisement {
    pub fn fullname(&self) -> &str {
        &self.fullname
    }
}

/// Starts advertising.
pub fn advertise(instance: &str, port: u16, addr: Option<IpAddr>) -> Result<Advertisement, ZeroconfError> {
    let info = service_info(instance, port, addr)?;
    let fullname = info.get_fullname().to_string();
    let daemon = ServiceDaemon::new().map_err(|e| ZeroconfError(e.to_string()))?;
    daemon.register(info).map_err(|e| ZeroconfError(e.to_string()))?;
    tracing::info!(%fullname, port, "zeroconf: advertising");
    Ok(Advertisement { daemon, fullname })
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_wyomings_type_with_our_port() {
        let info = service_info("alicia-asr", 10300, Some("192.0.2.7".parse().unwrap())).unwrap();
        assert_eq!(info.get_fullname(), "alicia-asr._wyoming._tcp.local.");
        assert_eq!(info.get_type(), SERVICE_TYPE);
        assert_eq!(info.get_port(), 10300);
        assert!(info.get_hostname().ends_with(".local."));
        let auto = service_info("alicia-tts", 10200, None).unwrap();
        assert!(auto.is_addr_auto());
    }
}
