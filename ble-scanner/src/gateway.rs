//! Decoders for adverts that BLE gateways (cheap ESP32 receivers) forward over MQTT, so one
//! appliance covers a hall. Each gateway is a scanner of its own.
//!
//! - OpenMQTTGateway / Theengs Gateway raw adverts (`home/<gateway>/BTtoMQTT/<MAC>`):
//!   `{"id": "<MAC>", "rssi": -60, "manufacturerdata": "<hex>", "servicedata": "<hex>",
//!   "servicedatauuid": "0xfeaa", "txpower": -12, "name": "…"}`. The manufacturer data hex
//!   starts with the company id, little-endian (`4c00…` for Apple), as on air.
//! - ESPresense (`espresense/devices/<id>/<room>`): already decoded per room:
//!   `{"id": "iBeacon:<uuid>-<major>-<minor>", "rssi": -70, "rssi@1m": -59, …}`, which becomes a
//!   sighting directly.
//!
//! Bad input (not JSON, missing or ill-typed fields, odd-length hex, absurd RSSI, ids in a
//! format we do not key on) is an error naming what was wrong; the caller counts it and goes on.

use uuid::Uuid;

use crate::advert::{Advertisement, EDDYSTONE_SERVICE};
use crate::beacon::BeaconId;

/// Largest gateway payload accepted; a raw advert is ≤ 31 bytes, so its JSON is small.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// Why a gateway message was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes is larger than {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    /// Not JSON of the expected shape.
    #[error("not a gateway advert: {0}")]
    Malformed(String),
    /// A field has an impossible value.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An ESPresense id in a format that is not a payload id (MAC-based, Apple fingerprint, …).
    #[error("id `{0}` is not a beacon payload id; only iBeacon and Eddystone UID ids are used")]
    UnsupportedId(String),
}

/// Plausible RSSI range, dBm; anything else is a gateway bug.
const RSSI_RANGE_DBM: std::ops::RangeInclusive<f64> = -127.0..=20.0;

/// The JSON object of a message, with field accessors whose errors name the field.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Fields {
    fn parse(payload: &[u8]) -> Result<Self, GatewayError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(GatewayError::TooLarge(payload.len()));
        }
        match serde_json::from_slice(payload) {
            Ok(serde_json::Value::Object(map)) => Ok(Self(map)),
            Ok(other) => Err(GatewayError::Malformed(format!(
                "expected a JSON object, found {}",
                json_kind(&other)
            ))),
            Err(e) => Err(GatewayError::Malformed(e.to_string())),
        }
    }

    fn string(&self, field: &'static str) -> Result<Option<String>, GatewayError> {
        match self.0.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(invalid(
                field,
                format!("expected a string, found {}", json_kind(other)),
            )),
        }
    }

    fn number(&self, field: &'static str) -> Result<Option<f64>, GatewayError> {
        match self.0.get(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(invalid(
                field,
                format!("expected a number, found {}", json_kind(other)),
            )),
        }
    }

    fn required<T>(field: &'static str, value: Option<T>) -> Result<T, GatewayError> {
        value.ok_or_else(|| invalid(field, "missing".into()))
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn invalid(field: &'static str, reason: String) -> GatewayError {
    GatewayError::Invalid { field, reason }
}

/// Decodes an OpenMQTTGateway / Theengs raw advert heard by `gateway` at `at_ms`.
pub fn decode_raw(
    gateway: &str,
    payload: &[u8],
    at_ms: u64,
) -> Result<Advertisement, GatewayError> {
    let fields = Fields::parse(payload)?;
    let address = Fields::required("id", fields.string("id")?)?;
    let rssi_dbm = Fields::required("rssi", fields.number("rssi")?)?;
    let tx_power = fields.number("txpower")?;
    let mut advert = Advertisement {
        scanner: gateway.to_string(),
        address,
        rssi: Some(rssi(rssi_dbm)?),
        tx_power: tx_power
            .map(|t| {
                Some(t)
                    .filter(|t| (-127.0..=20.0).contains(t))
                    .map(|t| t.round() as i16)
                    .ok_or_else(|| invalid("txpower", format!("{t} dBm is not a transmit power")))
            })
            .transpose()?,
        local_name: fields.string("name")?,
        at_ms,
        ..Advertisement::default()
    };
    if let Some(hexdata) = fields.string("manufacturerdata")? {
        let bytes = unhex("manufacturerdata", &hexdata)?;
        let [lo, hi, data @ ..] = bytes.as_slice() else {
            return Err(GatewayError::Invalid {
                field: "manufacturerdata",
                reason: "shorter than the 2-byte company id".into(),
            });
        };
        advert
            .manufacturer_data
            .insert(u16::from_le_bytes([*lo, *hi]), data.to_vec());
    }
    if let Some(hexdata) = fields.string("servicedata")? {
        let bytes = unhex("servicedata", &hexdata)?;
        let uuid = match fields.string("servicedatauuid")?.as_deref() {
            Some(u) => service_uuid(u)?,
            // OpenMQTTGateway omits the UUID for Eddystone frames it forwards.
            None => EDDYSTONE_SERVICE,
        };
        advert.service_data.insert(uuid, bytes);
    }
    Ok(advert)
}

/// A sighting that a gateway decoded itself (ESPresense).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySighting {
    /// The room (the gateway's scanner id).
    pub room: String,
    /// The beacon.
    pub beacon: BeaconId,
    /// RSSI, dBm.
    pub rssi: i16,
    /// The beacon's calibrated RSSI at 1 m, if the gateway knew it.
    pub measured_power_1m: Option<i16>,
}

impl GatewaySighting {
    /// The advert that would have produced this sighting, so decoded reports take the same
    /// path (registry, engine, privacy) as raw ones. `None` for ids that carry no advert form
    /// here (AltBeacon, EID: ESPresense does not report them as such).
    pub fn into_advert(self, at_ms: u64) -> Option<Advertisement> {
        let power = self.measured_power_1m.unwrap_or(DEFAULT_POWER_1M_DBM);
        let mut advert = Advertisement {
            scanner: self.room,
            address: String::new(),
            rssi: Some(self.rssi),
            at_ms,
            ..Advertisement::default()
        };
        match self.beacon {
            BeaconId::IBeacon { uuid, major, minor } => {
                let power = i8::try_from(power).unwrap_or(DEFAULT_POWER_1M_DBM as i8);
                advert.address = format!("espresense:{uuid}-{major}-{minor}");
                advert.manufacturer_data.insert(
                    crate::advert::APPLE_COMPANY_ID,
                    crate::beacon::ibeacon_payload(uuid, major, minor, power),
                );
            }
            BeaconId::Eddystone {
                namespace,
                instance,
            } => {
                // Eddystone advertises power at 0 m; the parser subtracts the 41 dB again.
                let at_0m = (power + 41).clamp(-100, 20) as i8;
                let mut frame = vec![0x00, at_0m as u8];
                frame.extend(namespace);
                frame.extend(instance);
                advert.address = format!("espresense:eddy:{}", hexstr(&frame[2..]));
                advert.service_data.insert(EDDYSTONE_SERVICE, frame);
            }
            _ => return None,
        }
        Some(advert)
    }
}

/// Calibrated RSSI at 1 m assumed when a gateway does not report one (a typical badge).
const DEFAULT_POWER_1M_DBM: i16 = -59;

fn hexstr(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes an ESPresense `espresense/devices/<id>/<room>` message.
pub fn decode_espresense(room: &str, payload: &[u8]) -> Result<GatewaySighting, GatewayError> {
    let fields = Fields::parse(payload)?;
    let id = Fields::required("id", fields.string("id")?)?;
    let rssi_dbm = Fields::required("rssi", fields.number("rssi")?)?;
    Ok(GatewaySighting {
        room: room.to_string(),
        beacon: espresense_id(&id)?,
        rssi: rssi(rssi_dbm)?,
        measured_power_1m: fields
            .number("rssi@1m")?
            .filter(|p| (-127.0..=20.0).contains(p))
            .map(|p| p.round() as i16),
    })
}

/// `iBeacon:<uuid>-<major>-<minor>` or `eddy:<namespace hex>-<instance hex>`.
fn espresense_id(id: &str) -> Result<BeaconId, GatewayError> {
    let unsupported = || GatewayError::UnsupportedId(id.chars().take(80).collect());
    if let Some(rest) = id.strip_prefix("iBeacon:") {
        // The UUID itself contains hyphens: major and minor are the last two parts.
        let mut parts = rest.rsplitn(3, '-');
        let minor = parts
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(unsupported)?;
        let major = parts
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(unsupported)?;
        let uuid = parts
            .next()
            .and_then(|u| Uuid::parse_str(u).ok())
            .ok_or_else(unsupported)?;
        return Ok(BeaconId::IBeacon { uuid, major, minor });
    }
    if let Some(rest) = id.strip_prefix("eddy:") {
        let (ns, inst) = rest.split_once('-').ok_or_else(unsupported)?;
        let namespace = hex::decode(ns)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(unsupported)?;
        let instance = hex::decode(inst)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(unsupported)?;
        return Ok(BeaconId::Eddystone {
            namespace,
            instance,
        });
    }
    Err(unsupported())
}

fn rssi(value: f64) -> Result<i16, GatewayError> {
    if RSSI_RANGE_DBM.contains(&value) {
        Ok(value.round() as i16)
    } else {
        Err(GatewayError::Invalid {
            field: "rssi",
            reason: format!("{value} dBm is outside -127..=20"),
        })
    }
}

fn unhex(field: &'static str, text: &str) -> Result<Vec<u8>, GatewayError> {
    hex::decode(text).map_err(|e| GatewayError::Invalid {
        field,
        reason: format!("not hex: {e}"),
    })
}

/// `0xfeaa`, `feaa` (16-bit, on the Bluetooth base UUID) or a full UUID.
fn service_uuid(text: &str) -> Result<Uuid, GatewayError> {
    let short = text.trim_start_matches("0x");
    if short.len() == 4 {
        if let Ok(n) = u16::from_str_radix(short, 16) {
            return Ok(Uuid::from_u128(
                (u128::from(n) << 96) | 0x0000_0000_0000_1000_8000_0080_5f9b_34fb,
            ));
        }
    }
    Uuid::parse_str(text).map_err(|_| GatewayError::Invalid {
        field: "servicedatauuid",
        reason: format!("`{text}` is neither a 16-bit UUID nor a full UUID"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::beacon::{Frame, parse};

    const IBEACON_HEX: &str = "4c000215f7826da64fa24e988024bc5b71e0893e0002012cc5";

    #[test]
    fn theengs_raw_ibeacon_decodes_to_the_same_frame_as_the_local_radio() {
        let payload = format!(
            r#"{{"id":"C0:11:22:33:44:55","rssi":-71,"manufacturerdata":"{IBEACON_HEX}","name":"badge"}}"#
        );
        let advert = decode_raw("gw-hall-a", payload.as_bytes(), 5).expect("decodes");
        assert_eq!(advert.scanner, "gw-hall-a");
        assert_eq!(advert.rssi, Some(-71));
        let frames = parse(&advert);
        let [
            Frame::Id {
                id,
                measured_power_1m: -59,
            },
        ] = frames.as_slice()
        else {
            panic!("{frames:?}");
        };
        assert_eq!(
            id.to_string(),
            "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:2:300"
        );
    }

    #[test]
    fn service_data_uuid_forms_are_understood() {
        for uuid in [
            None,
            Some("0xfeaa"),
            Some("feaa"),
            Some("0000feaa-0000-1000-8000-00805f9b34fb"),
        ] {
            let mut json = serde_json::json!({"id": "x", "rssi": -60,
                "servicedata": "20000bb8198000000001000000010"});
            json["servicedata"] = "20000bb81980000000010000000a".into();
            if let Some(u) = uuid {
                json["servicedatauuid"] = u.into();
            }
            let advert = decode_raw("gw", json.to_string().as_bytes(), 0).expect("decodes");
            assert!(
                matches!(parse(&advert).as_slice(), [Frame::Telemetry(_)]),
                "{uuid:?}"
            );
        }
    }

    #[test]
    fn bad_raw_adverts_are_errors_naming_the_problem() {
        for (payload, expected) in [
            (r#"{"id":"x"}"#, "rssi"),
            (r#"{"id":"x","rssi":"loud"}"#, "rssi"),
            (r#"{"id":"x","rssi":-500}"#, "outside"),
            (
                r#"{"id":"x","rssi":-60,"manufacturerdata":"4c0"}"#,
                "manufacturerdata",
            ),
            (r#"{"id":7,"rssi":-60}"#, "`id`: expected a string"),
            (
                r#"{"id":"x","rssi":-60,"manufacturerdata":"zz"}"#,
                "not hex",
            ),
            (
                r#"{"id":"x","rssi":-60,"manufacturerdata":"4c"}"#,
                "company id",
            ),
            (
                r#"{"id":"x","rssi":-60,"servicedata":"00","servicedatauuid":"nope"}"#,
                "servicedatauuid",
            ),
            (r#"{"id":"x","rssi":-60,"txpower":99}"#, "txpower"),
            ("not json", "not a gateway advert"),
            ("[1,2]", "expected a JSON object, found an array"),
        ] {
            let err = decode_raw("gw", payload.as_bytes(), 0)
                .expect_err(payload)
                .to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
        let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(
            decode_raw("gw", &huge, 0),
            Err(GatewayError::TooLarge(_))
        ));
    }

    #[test]
    fn espresense_ids_become_payload_ids() {
        let s = decode_espresense(
            "hall-a",
            br#"{"id":"iBeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e-2-300","rssi":-70.4,"rssi@1m":-59,"distance":3.2}"#,
        )
        .expect("decodes");
        assert_eq!(
            s.beacon.to_string(),
            "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:2:300"
        );
        assert_eq!(
            (s.room.as_str(), s.rssi, s.measured_power_1m),
            ("hall-a", -70, Some(-59))
        );
        let e = decode_espresense(
            "r",
            br#"{"id":"eddy:edd1ebeac04e5defa017-000000001234","rssi":-80}"#,
        )
        .expect("decodes");
        assert_eq!(
            e.beacon.to_string(),
            "eddystone:edd1ebeac04e5defa017:000000001234"
        );
    }

    #[test]
    fn espresense_sightings_become_adverts_the_parser_reads_back() {
        for (id, want) in [
            (
                "iBeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e-2-300",
                "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:2:300",
            ),
            (
                "eddy:edd1ebeac04e5defa017-000000001234",
                "eddystone:edd1ebeac04e5defa017:000000001234",
            ),
        ] {
            let payload = format!(r#"{{"id":"{id}","rssi":-70,"rssi@1m":-61}}"#);
            let sighting = decode_espresense("hall-a", payload.as_bytes()).expect("decodes");
            let advert = sighting.into_advert(1_000).expect("has an advert form");
            assert_eq!(
                (advert.scanner.as_str(), advert.rssi, advert.at_ms),
                ("hall-a", Some(-70), 1_000)
            );
            let frames = parse(&advert);
            let Some(Frame::Id {
                id: parsed,
                measured_power_1m,
            }) = frames.first()
            else {
                panic!("{id}: no id frame in {frames:?}");
            };
            assert_eq!(parsed.to_string(), want);
            assert_eq!(*measured_power_1m, -61, "{id}");
        }
    }

    #[test]
    fn espresense_ids_we_do_not_key_on_are_refused() {
        for id in [
            "known:c0112233",
            "apple:1005:9-26",
            "iBeacon:not-a-uuid-1-2",
            "eddy:abc",
            "irk:00",
        ] {
            let payload = format!(r#"{{"id":"{id}","rssi":-70}}"#);
            assert!(
                matches!(
                    decode_espresense("r", payload.as_bytes()),
                    Err(GatewayError::UnsupportedId(_))
                ),
                "{id}"
            );
        }
        assert!(decode_espresense("r", br#"{"id":"eddy:x","rssi":1e999}"#).is_err());
        let err = decode_espresense(
            "r",
            br#"{"id":"iBeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e-2-300","rssi":"near"}"#,
        )
        .expect_err("ill-typed")
        .to_string();
        assert!(err.contains("`rssi`: expected a number"), "{err}");
    }
}
