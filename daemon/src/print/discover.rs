//! IPP printers on the venue LAN, found by DNS-SD (`_ipp._tcp` and `_ipps._tcp`, RFC 6763 and
//! PWG 5100.14), for the console's "find printers": each answer becomes the `ipp://` or `ipps://`
//! address staff register. Browsing uses the interfaces of `[mdns]`, like the appliance's own
//! announcement.

use std::collections::BTreeMap;
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};
use serde::Serialize;

use crate::config::MdnsConfig;

/// The longest browse.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// A printer that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Found {
    /// Its DNS-SD instance name, e.g. `Desk Printer._ipp._tcp.local.`.
    pub name: String,
    /// Make and model (`ty`), when it says.
    pub model: Option<String>,
    /// The address to register: `ipp://<address>:<port>/<rp>` (or `ipps://`).
    pub uri: String,
    /// The document formats it takes (`pdl`), when it says.
    pub formats: Option<String>,
}

/// Why browsing failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot browse the LAN for printers (mDNS): {0}")]
pub struct DiscoverError(#[from] mdns_sd::Error);

/// Browses for `wait` (at most [`MAX_WAIT`]); every IPP printer that answered, by address.
pub async fn ipp_printers(mdns: &MdnsConfig, wait: Duration) -> Result<Vec<Found>, DiscoverError> {
    let daemon = ServiceDaemon::new()?;
    let interfaces = mdns.interface_names();
    if !interfaces.is_empty() {
        daemon.disable_interface(IfKind::All)?;
        for name in interfaces {
            daemon.enable_interface(IfKind::Name(name.to_string()))?;
        }
    }
    let plain = daemon.browse("_ipp._tcp.local.")?;
    let tls = daemon.browse("_ipps._tcp.local.")?;
    let mut found = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    loop {
        let event = tokio::select! {
            e = plain.recv_async() => e.ok().map(|e| (e, "ipp")),
            e = tls.recv_async() => e.ok().map(|e| (e, "ipps")),
            _ = tokio::time::sleep_until(deadline) => break,
        };
        // `None`: the browse ended (the daemon stopped); nothing more will come.
        let Some((event, scheme)) = event else { break };
        let ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        let Some(address) = service
            .addresses
            .iter()
            .map(|a| a.to_ip_addr())
            .min_by_key(|a| a.is_ipv6())
        else {
            continue;
        };
        let host = match address {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        };
        let path = service.get_property_val_str("rp").unwrap_or("ipp/print");
        let uri = format!(
            "{scheme}://{host}:{}/{}",
            service.port,
            path.trim_start_matches('/')
        );
        found.insert(
            uri.clone(),
            Found {
                name: service.fullname.clone(),
                model: service.get_property_val_str("ty").map(str::to_string),
                uri,
                formats: service.get_property_val_str("pdl").map(str::to_string),
            },
        );
    }
    let _ = daemon.shutdown();
    Ok(found.into_values().collect())
}
