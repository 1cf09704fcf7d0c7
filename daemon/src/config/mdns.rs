//! `[mdns]`: the appliance advertised on the venue LAN by name (mDNS and DNS-SD), so phones,
//! kiosks and displays reach `http://venue-edge.local:8080/` without knowing its address.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, invalid};

/// Default host name: the appliance answers as `venue-edge.local`.
pub const DEFAULT_MDNS_HOSTNAME: &str = "venue-edge";

/// `[mdns]`: advertising on the LAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MdnsConfig {
    /// Advertise `<hostname>.local` and a `_venue-edge._tcp` service. Default on.
    pub enabled: bool,
    /// The host name, without `.local`: one DNS label (1-63 of a-z, 0-9 and `-`). Several
    /// appliances in one venue each need their own. Default `venue-edge`.
    pub hostname: String,
    /// Interfaces to advertise on, comma-separated (e.g. `eth0,wlan0`). Default empty: every
    /// interface but loopback.
    pub interfaces: String,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            hostname: DEFAULT_MDNS_HOSTNAME.into(),
            interfaces: String::new(),
        }
    }
}

impl MdnsConfig {
    /// The interface names of `interfaces`.
    pub fn interface_names(&self) -> Vec<&str> {
        self.interfaces
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect()
    }
}

/// Checks `[mdns]`.
pub(super) fn validate(mdns: &MdnsConfig, problems: &mut Vec<ConfigProblem>) {
    let label = &mdns.hostname;
    let fits = (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-');
    if !fits {
        invalid(
            problems,
            "mdns.hostname",
            format!(
                "`{label}` must be one DNS label: 1-63 of a-z, 0-9 and `-`, not starting or ending with `-` (e.g. \"venue-edge-hall-a\")"
            ),
        );
    }
    for name in mdns.interface_names() {
        let ok = name.len() <= 15
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !ok {
            invalid(
                problems,
                "mdns.interfaces",
                format!("`{name}` is not an interface name; list them like \"eth0,wlan0\""),
            );
        }
    }
}
