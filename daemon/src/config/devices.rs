//! `[[devices]]`: MQTT devices declared in the configuration, as the appliance image's
//! provisioning file declares them, instead of registered one by one through the admin API.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, invalid, is_valid_id};

/// The kinds a device may be (`DeviceKind` in the domain).
pub const DEVICE_KINDS: &[&str] = &["kiosk", "signage", "gateway"];

/// One `[[devices]]` entry. At every start the daemon makes the registry agree with it: the
/// device exists, active, with this kind, name and password. Devices registered through the
/// admin API are left alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Its id, also its MQTT client id and user name.
    pub id: String,
    /// `kiosk`, `signage` or `gateway`.
    pub kind: String,
    /// A label for staff. Default empty.
    #[serde(default)]
    pub name: String,
    /// The password as stored: `sha256$<salt hex>$<digest hex>`, which `venued provision`
    /// makes from the provisioning file's password. The password itself is never kept.
    pub password_hash: String,
}

/// Checks `[[devices]]`.
pub(super) fn validate(devices: &[DeviceConfig], problems: &mut Vec<ConfigProblem>) {
    for (i, d) in devices.iter().enumerate() {
        let key = |field: &str| format!("devices[{i}].{field}");
        if !is_valid_id(&d.id) {
            invalid(
                problems,
                &key("id"),
                format!(
                    "`{}` must be 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.` (it is also \
                     the MQTT client id)",
                    d.id
                ),
            );
        } else if devices[..i].iter().any(|other| other.id == d.id) {
            invalid(
                problems,
                &key("id"),
                format!("`{}` is declared twice", d.id),
            );
        }
        if !DEVICE_KINDS.contains(&d.kind.as_str()) {
            invalid(
                problems,
                &key("kind"),
                format!("`{}` is not one of {}", d.kind, DEVICE_KINDS.join(", ")),
            );
        }
        if d.name.len() > 256 {
            invalid(problems, &key("name"), "is longer than 256 bytes".into());
        }
        if !is_stored_hash(&d.password_hash) {
            invalid(
                problems,
                &key("password_hash"),
                "must be `sha256$<32 hex digits>$<64 hex digits>`, as `venued provision` writes \
                 it; give the password in the provisioning file's [[appliance.devices]] instead"
                    .into(),
            );
        }
    }
}

fn is_stored_hash(s: &str) -> bool {
    let hex =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = s.split('$');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("sha256"), Some(salt), Some(digest), None) if hex(salt, 32) && hex(digest, 64)
    )
}
