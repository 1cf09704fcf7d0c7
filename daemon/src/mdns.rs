//! The appliance advertised on the venue LAN (mDNS and DNS-SD, RFC 6762/6763): it answers as
//! `<hostname>.local`, and as a `_venue-edge._tcp` service whose TXT record carries the MQTT
//! port, the event and the node id, so phones, kiosks and displays reach it by name.
//!
//! `mdns-sd` runs its own thread and sockets; this module only describes what to announce and
//! on which interfaces. A failure to advertise never stops the daemon: the `mdns` subsystem is
//! then degraded, and the appliance is reachable by address as before.

use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo};

use crate::config::MdnsConfig;

/// The DNS-SD service type.
pub const SERVICE_TYPE: &str = "_venue-edge._tcp.local.";
/// The DNS-SD service type of peer sync (`[peers]`): the same port, for the venue's other boxes.
pub const PEER_SERVICE_TYPE: &str = "_venue-sync._tcp.local.";

/// What is announced besides the host name.
pub struct Announced<'a> {
    /// The HTTP (and attendee WebSocket) port.
    pub http_port: u16,
    /// The MQTT (TCP) port, when MQTT runs.
    pub mqtt_port: Option<u16>,
    /// The event served.
    pub event: &'a str,
    /// This appliance's node id.
    pub node: &'a str,
    /// Announce `_venue-sync._tcp` too (peer sync is on).
    pub peer_sync: bool,
}

/// Why the appliance cannot be advertised.
#[derive(Debug, thiserror::Error)]
#[error("cannot advertise on the LAN (mDNS): {0}")]
pub struct MdnsError(#[from] mdns_sd::Error);

/// A running advertisement; dropping it withdraws it (goodbye packets) and stops the daemon.
pub struct Advertiser {
    daemon: ServiceDaemon,
    fullnames: Vec<String>,
}

/// Starts advertising per `config` (which must be enabled).
pub fn advertise(config: &MdnsConfig, what: &Announced<'_>) -> Result<Advertiser, MdnsError> {
    let daemon = ServiceDaemon::new()?;
    let interfaces = config.interface_names();
    if !interfaces.is_empty() {
        daemon.disable_interface(IfKind::All)?;
        for name in interfaces {
            daemon.enable_interface(IfKind::Name(name.to_string()))?;
        }
    }
    let mut properties = vec![
        ("path".to_string(), "/".to_string()),
        ("event".to_string(), what.event.to_string()),
        ("node".to_string(), what.node.to_string()),
    ];
    if let Some(port) = what.mqtt_port {
        properties.push(("mqtt".to_string(), port.to_string()));
    }
    let host = format!("{}.local.", config.hostname);
    // No addresses given: the daemon fills in each interface's own, and follows them as DHCP
    // changes them.
    let service = ServiceInfo::new(
        SERVICE_TYPE,
        &config.hostname,
        &host,
        "",
        what.http_port,
        &properties[..],
    )?
    .enable_addr_auto();
    let mut fullnames = vec![service.get_fullname().to_string()];
    daemon.register(service)?;
    if what.peer_sync {
        let properties = [("event", what.event), ("node", what.node)];
        let peer = ServiceInfo::new(
            PEER_SERVICE_TYPE,
            &config.hostname,
            &host,
            "",
            what.http_port,
            &properties[..],
        )?
        .enable_addr_auto();
        fullnames.push(peer.get_fullname().to_string());
        daemon.register(peer)?;
    }
    tracing::info!(host = %host.trim_end_matches('.'), services = ?fullnames, "advertising on the LAN (mDNS)");
    Ok(Advertiser { daemon, fullnames })
}

impl Advertiser {
    /// Browses for the venue's other boxes (`_venue-sync._tcp`) on the advertised interfaces.
    pub fn browse_peers(&self) -> Result<mdns_sd::Receiver<mdns_sd::ServiceEvent>, MdnsError> {
        Ok(self.daemon.browse(PEER_SERVICE_TYPE)?)
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        // Best effort: a goodbye so browsers forget the appliance at once rather than after
        // the records' time to live.
        for name in &self.fullnames {
            let _ = self.daemon.unregister(name);
        }
        let _ = self.daemon.shutdown();
    }
}
