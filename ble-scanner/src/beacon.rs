//! Beacon parsers: pure functions from an [`Advertisement`] to the beacon frames it carries.
//!
//! Byte layouts follow Apple's Proximity Beacon Specification (iBeacon), the AltBeacon v1.0
//! spec, and Google's Eddystone specification (UID, URL, TLM, EID); see
//! `shared/research/ble.md` §3. Anything that does not match a layout exactly (wrong length,
//! wrong prefix, reserved bits set, reserved URL bytes) yields no frame: garbage is ignored,
//! never guessed at, and never a panic.

use std::fmt;

use uuid::Uuid;

use crate::advert::{APPLE_COMPANY_ID, Advertisement, EDDYSTONE_SERVICE};

/// The stable identity of a beacon: always from the payload, never the MAC or D-Bus path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BeaconId {
    /// iBeacon proximity UUID, major, minor.
    IBeacon {
        /// Proximity UUID.
        uuid: Uuid,
        /// Major.
        major: u16,
        /// Minor.
        minor: u16,
    },
    /// AltBeacon 20-byte beacon id.
    AltBeacon([u8; 20]),
    /// Eddystone-UID namespace and instance.
    Eddystone {
        /// 10-byte namespace.
        namespace: [u8; 10],
        /// 6-byte instance.
        instance: [u8; 6],
    },
    /// Eddystone-EID ephemeral id (opaque without the identity key; rotates).
    Eid([u8; 8]),
}

impl fmt::Display for BeaconId {
    /// The id as stored in the beacon registry, e.g. `ibeacon:<uuid>:<major>:<minor>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IBeacon { uuid, major, minor } => write!(f, "ibeacon:{uuid}:{major}:{minor}"),
            Self::AltBeacon(id) => write!(f, "altbeacon:{}", hex(id)),
            Self::Eddystone {
                namespace,
                instance,
            } => write!(f, "eddystone:{}:{}", hex(namespace), hex(instance)),
            Self::Eid(eid) => write!(f, "eid:{}", hex(eid)),
        }
    }
}

/// A string that is not a beacon id in the registry form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a beacon id (ibeacon:, altbeacon:, eddystone: or eid:)")]
pub struct NotABeaconId(pub String);

impl std::str::FromStr for BeaconId {
    type Err = NotABeaconId;

    /// Parses the registry form written by `Display`.
    fn from_str(s: &str) -> Result<Self, NotABeaconId> {
        let bad = || NotABeaconId(s.to_string());
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        fn bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
            let mut out = [0u8; N];
            if text.len() != 2 * N {
                return None;
            }
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(out)
        }
        match kind {
            "ibeacon" => {
                let mut parts = rest.rsplitn(3, ':');
                let minor = parts.next().and_then(|m| m.parse().ok()).ok_or_else(bad)?;
                let major = parts.next().and_then(|m| m.parse().ok()).ok_or_else(bad)?;
                let uuid = parts
                    .next()
                    .and_then(|u| Uuid::parse_str(u).ok())
                    .ok_or_else(bad)?;
                Ok(Self::IBeacon { uuid, major, minor })
            }
            "altbeacon" => bytes(rest).map(Self::AltBeacon).ok_or_else(bad),
            "eddystone" => {
                let (ns, inst) = rest.split_once(':').ok_or_else(bad)?;
                Ok(Self::Eddystone {
                    namespace: bytes(ns).ok_or_else(bad)?,
                    instance: bytes(inst).ok_or_else(bad)?,
                })
            }
            "eid" => bytes(rest).map(Self::Eid).ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

/// The manufacturer data of an iBeacon advert (after Apple's company id) for `id`, the inverse
/// of the parser; sources that synthesise adverts (the demo simulator) use it.
pub fn ibeacon_payload(uuid: Uuid, major: u16, minor: u16, measured_power_1m: i8) -> Vec<u8> {
    let mut data = Vec::with_capacity(23);
    data.extend([0x02, 0x15]);
    data.extend(uuid.as_bytes());
    data.extend(major.to_be_bytes());
    data.extend(minor.to_be_bytes());
    data.push(measured_power_1m as u8);
    data
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One decoded beacon frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// An identity frame (iBeacon, AltBeacon, Eddystone UID or EID).
    Id {
        /// The beacon's identity.
        id: BeaconId,
        /// Calibrated RSSI at 1 m, dBm (Eddystone's 0 m power converted by −41 dB).
        measured_power_1m: i16,
    },
    /// Eddystone-URL.
    Url {
        /// The expanded URL.
        url: String,
        /// Calibrated RSSI at 1 m, dBm.
        measured_power_1m: i16,
    },
    /// Eddystone-TLM (unencrypted): health data, no identity; join it to an id by address.
    Telemetry(Telemetry),
}

/// Eddystone-TLM version 0 contents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Telemetry {
    /// Battery voltage, millivolts; `None` when the beacon does not measure it (0 on air).
    pub battery_mv: Option<u16>,
    /// Temperature in °C (8.8 fixed point on air); `None` when not supported (0x8000).
    pub temperature_c: Option<f32>,
    /// Advertisements sent since boot.
    pub adv_count: u32,
    /// Time since boot, in tenths of a second.
    pub uptime_ds: u32,
}

/// Eddystone ranging data is the power at 0 m; the 1 m reference is 41 dB lower (spec).
const EDDYSTONE_0M_TO_1M_DB: i16 = 41;

/// Every beacon frame in `advert` (usually zero or one).
pub fn parse(advert: &Advertisement) -> Vec<Frame> {
    let mut frames = Vec::new();
    for (company, data) in &advert.manufacturer_data {
        if *company == APPLE_COMPANY_ID {
            frames.extend(ibeacon(data));
        }
        frames.extend(altbeacon(data));
    }
    if let Some(data) = advert.service_data.get(&EDDYSTONE_SERVICE) {
        frames.extend(eddystone(data));
    }
    frames
}

/// iBeacon: `02 15`, UUID (16), major (2, BE), minor (2, BE), measured power (i8): 23 bytes.
pub fn ibeacon(data: &[u8]) -> Option<Frame> {
    let [0x02, 0x15, rest @ ..] = data else {
        return None;
    };
    let (uuid, rest) = rest.split_first_chunk::<16>()?;
    let [ma0, ma1, mi0, mi1, power] = *rest else {
        return None;
    };
    Some(Frame::Id {
        id: BeaconId::IBeacon {
            uuid: Uuid::from_bytes(*uuid),
            major: u16::from_be_bytes([ma0, ma1]),
            minor: u16::from_be_bytes([mi0, mi1]),
        },
        measured_power_1m: i16::from(power as i8),
    })
}

/// AltBeacon: `BE AC`, beacon id (20), reference RSSI (i8), reserved (1): 24 bytes, any company.
pub fn altbeacon(data: &[u8]) -> Option<Frame> {
    let [0xBE, 0xAC, rest @ ..] = data else {
        return None;
    };
    let (id, rest) = rest.split_first_chunk::<20>()?;
    let [power, _reserved] = *rest else {
        return None;
    };
    Some(Frame::Id {
        id: BeaconId::AltBeacon(*id),
        measured_power_1m: i16::from(power as i8),
    })
}

/// Eddystone service data: UID, URL, TLM (plain) or EID, by the frame type's high nibble.
pub fn eddystone(data: &[u8]) -> Option<Frame> {
    let (&kind, rest) = data.split_first()?;
    match kind {
        0x00 => eddystone_uid(rest),
        0x10 => eddystone_url(rest),
        0x20 => eddystone_tlm(rest),
        0x30 => eddystone_eid(rest),
        // Other types, and a set low nibble, are reserved.
        _ => None,
    }
}

fn power_1m(tx_0m: u8) -> i16 {
    i16::from(tx_0m as i8) - EDDYSTONE_0M_TO_1M_DB
}

fn eddystone_uid(rest: &[u8]) -> Option<Frame> {
    // 19 bytes after the type with the RFU pair, 17 without (older beacons truncate it).
    if rest.len() != 19 && rest.len() != 17 {
        return None;
    }
    let (&tx, rest) = rest.split_first()?;
    let (namespace, rest) = rest.split_first_chunk::<10>()?;
    let (instance, _rfu) = rest.split_first_chunk::<6>()?;
    Some(Frame::Id {
        id: BeaconId::Eddystone {
            namespace: *namespace,
            instance: *instance,
        },
        measured_power_1m: power_1m(tx),
    })
}

const URL_SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
const URL_EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];
/// At most 17 encoded URL bytes fit in one advert.
const MAX_URL_BYTES: usize = 17;

fn eddystone_url(rest: &[u8]) -> Option<Frame> {
    let [tx, scheme, encoded @ ..] = rest else {
        return None;
    };
    if encoded.len() > MAX_URL_BYTES {
        return None;
    }
    let mut url = URL_SCHEMES.get(usize::from(*scheme))?.to_string();
    for &b in encoded {
        match b {
            0x00..=0x0d => url.push_str(URL_EXPANSIONS[usize::from(b)]),
            // 0x0E-0x20 and 0x7F-0xFF are reserved: not a valid Eddystone-URL.
            0x21..=0x7e => url.push(char::from(b)),
            _ => return None,
        }
    }
    Some(Frame::Url {
        url,
        measured_power_1m: power_1m(*tx),
    })
}

fn eddystone_tlm(rest: &[u8]) -> Option<Frame> {
    // Version 0 is plain; version 1 is encrypted (ETLM) and opaque without the identity key.
    let [0x00, v0, v1, t0, t1, a0, a1, a2, a3, s0, s1, s2, s3] = *rest else {
        return None;
    };
    let battery = u16::from_be_bytes([v0, v1]);
    let temp_raw = i16::from_be_bytes([t0, t1]);
    Some(Frame::Telemetry(Telemetry {
        battery_mv: (battery != 0).then_some(battery),
        temperature_c: (temp_raw != i16::MIN).then(|| f32::from(temp_raw) / 256.0),
        adv_count: u32::from_be_bytes([a0, a1, a2, a3]),
        uptime_ds: u32::from_be_bytes([s0, s1, s2, s3]),
    }))
}

fn eddystone_eid(rest: &[u8]) -> Option<Frame> {
    let (&tx, rest) = rest.split_first()?;
    let eid: [u8; 8] = rest.try_into().ok()?;
    Some(Frame::Id {
        id: BeaconId::Eid(eid),
        measured_power_1m: power_1m(tx),
    })
}

#[cfg(test)]
mod tests;
