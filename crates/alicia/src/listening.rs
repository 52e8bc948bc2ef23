//! The `<what> listening on ADDR` lines, and the same addresses in the home for the CLI.
//!
//! Scripts and tests read the printed lines to learn the ports chosen for port 0. `alicia up`
//! also writes them to `<home>/alicia.addresses` (JSON, `{"mqtt": "127.0.0.1:1883", ...}`)
//! while it runs, so `alicia devices` talks to the running instance and `alicia devices add`
//! prints the ports devices must really use, whatever flags `up` was started with.

use std::net::SocketAddr;
use std::path::Path;

use parking_lot::Mutex;

/// The addresses announced so far by this process.
static ANNOUNCED: Mutex<Vec<(String, SocketAddr)>> = Mutex::new(Vec::new());

/// Prints `<what> listening on ADDR` and remembers it.
pub fn announce(what: &str, addr: SocketAddr) {
    println!("{what} listening on {addr}");
    ANNOUNCED.lock().push((what.to_string(), addr));
}

/// Writes what was announced to `<home>/alicia.addresses`.
pub fn write(home: &Path) -> std::io::Result<()> {
    let map: serde_json::Map<String, serde_json::Value> =
        ANNOUNCED.lock().iter().map(|(k, a)| (k.clone(), serde_json::Value::String(a.to_string()))).collect();
    // Replaced whole: a CLI reading it while `alicia up` starts sees the old file or the new.
    let text = serde_json::Value::Object(map).to_string() + "\n";
    alicia_home::write_file(
        &alicia_home::Home::new(home).addresses_file(),
        text.as_bytes(),
        alicia_home::Access::Public,
    )
    .map_err(|e| std::io::Error::other(e.to_string()))
}

/// The address of `what` that a running `alicia up` in `home` announced, if any. An address
/// bound to all interfaces is read as loopback (this machine).
pub fn running(home: &Path, what: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(alicia_home::Home::new(home).addresses_file()).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let mut addr: SocketAddr = v.get(what)?.as_str()?.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    Some(addr)
}
