//! The appliance's provisioning file: one TOML file venue IT writes onto the boot partition.
//!
//! It is a `venued.toml` with one more table, `[appliance]`, for what belongs to the box rather
//! than to the daemon (its host name, its network, who may log in over SSH). [`check`] validates
//! both halves and reports every problem at once, with the daemon's half checked by the same
//! loader `venued check-config` uses, so a file that provisions is a file `venued` starts with.
//! [`Provisioning::write_into`] splits it into the files the image's first-boot service installs
//! (`image/README.md`); nothing here touches the system itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::config::{self, ConfigErrors, ConfigProblem};

/// The provisioning file's name on the boot partition.
pub const FILE_NAME: &str = "venue-edge.toml";

/// Where the image installs what [`Provisioning::write_into`] writes (`venue-provision`'s
/// `$state`): the configuration names the TLS files there.
pub const INSTALLED_DIR: &str = "/var/lib/venue-edge";

/// The MQTT over TLS listener a provisioned certificate opens, unless `mqtt.listen_tls` says
/// otherwise.
pub const DEFAULT_TLS_LISTEN: &str = "0.0.0.0:8883";

/// `[appliance]`: the box itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Appliance {
    /// Host name, one DNS label. Also the mDNS name (`<hostname>.local`) unless `mdns.hostname`
    /// is given. Default `venue-edge`.
    pub hostname: String,
    /// OpenSSH public keys allowed to log in as root. None: SSH stays off.
    pub ssh_authorized_keys: Vec<String>,
    /// Wired network; DHCP when no address is given.
    pub network: Network,
    /// MQTT devices (kiosks, displays, gateways) with the passwords they were set up with.
    pub devices: Vec<ApplianceDevice>,
    /// How long the first boot of an updated slot may take to get `venued` ready before the box
    /// gives up on it and boots the slot before. Default 180 s.
    pub update_trial_secs: u64,
    /// The box's TLS certificate, for MQTT over TLS.
    pub tls: Tls,
    /// A Wi-Fi network to join, besides the wired network.
    pub wifi: Wifi,
}

/// `[appliance.wifi]`: a WPA2/WPA3-Personal (or open) network the box joins with `iwd`, with
/// DHCP. The wired settings of `[appliance.network]` stay on the wired interface.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Wifi {
    /// The network's name (1-32 bytes).
    pub ssid: String,
    /// Its passphrase (8-63 printable ASCII characters); empty for an open network.
    pub passphrase: String,
}

impl Wifi {
    /// The file `iwd` keeps the network in (`iwd.network(5)`): the SSID itself when it is made
    /// of letters, digits, space, `-` and `_`, else `=` and its bytes in hex; `.psk` or `.open`.
    pub fn iwd_file_name(&self) -> String {
        let plain = self
            .ssid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " -_".contains(c));
        let name = match plain {
            true => self.ssid.clone(),
            false => format!("={}", hex::encode(self.ssid.as_bytes())),
        };
        let kind = if self.passphrase.is_empty() {
            "open"
        } else {
            "psk"
        };
        format!("{name}.{kind}")
    }

    /// The network's settings for `iwd`.
    fn iwd_settings(&self) -> String {
        let mut text =
            String::from("# Written by `venued provision`.\n[Settings]\nAutoConnect=true\n");
        if !self.passphrase.is_empty() {
            let _ = write!(text, "\n[Security]\nPassphrase={}\n", self.passphrase);
        }
        text
    }
}

/// `[appliance.tls]`: a certificate for the box's name, in PEM, pasted into the file. It is
/// checked here as the MQTT listener will load it, installed beside the configuration, and
/// opens MQTT over TLS (`mqtt.listen_tls`, 8883 unless given).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain, leaf first (`-----BEGIN CERTIFICATE-----` blocks).
    pub certificate: String,
    /// Its private key (PKCS#8, RSA or SEC1 PEM), unencrypted.
    pub private_key: String,
}

impl Tls {
    fn is_given(&self) -> bool {
        !self.certificate.is_empty() || !self.private_key.is_empty()
    }
}

/// Default of `appliance.update_trial_secs`.
pub const DEFAULT_UPDATE_TRIAL_SECS: u64 = 180;

impl Default for Appliance {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            ssh_authorized_keys: Vec::new(),
            network: Network::default(),
            devices: Vec::new(),
            update_trial_secs: DEFAULT_UPDATE_TRIAL_SECS,
            tls: Tls::default(),
            wifi: Wifi::default(),
        }
    }
}

/// `[[appliance.devices]]`: a device and its password, which `venued provision` hashes into
/// the daemon's `[[devices]]`; the password itself is not kept on the box.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApplianceDevice {
    /// Its id, also its MQTT client id and user name.
    pub id: String,
    /// `kiosk`, `signage` or `gateway`.
    pub kind: String,
    /// A label for staff.
    pub name: String,
    /// At least [`MIN_DEVICE_PASSWORD`] characters drawn at random, e.g. from
    /// `openssl rand -base64 20`: the box stores it with a fast hash, which is only safe for
    /// secrets nobody could guess.
    pub password: String,
}

/// The shortest device password accepted: 160 random bits in base64 are 27 characters.
pub const MIN_DEVICE_PASSWORD: usize = 27;

/// `[appliance.network]`: the wired interface.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// Static address with its prefix length, e.g. `10.20.0.5/24`. Empty: DHCP.
    pub address: String,
    /// Default gateway for a static address.
    pub gateway: String,
    /// DNS servers for a static address.
    pub dns: Vec<String>,
}

/// A validated provisioning file.
#[derive(Debug, Clone)]
pub struct Provisioning {
    /// The `[appliance]` table.
    pub appliance: Appliance,
    /// The file without `[appliance]`, as TOML: the daemon's configuration.
    pub venued_toml: String,
    /// The daemon's configuration, validated.
    pub config: config::Config,
}

/// Key types OpenSSH accepts in `authorized_keys`.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Validates a provisioning file's text (`origin` names it in messages). Every problem is
/// reported, the appliance's and the daemon's together.
pub fn check(text: &str, origin: &str) -> Result<Provisioning, ConfigErrors> {
    let fail = |problems| ConfigErrors {
        origin: origin.into(),
        problems,
    };
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(vec![ConfigProblem::Syntax(e.to_string())]))?;
    let mut problems = Vec::new();
    let appliance = match table.remove("appliance") {
        None => Appliance::default(),
        Some(value) => match value.try_into::<Appliance>() {
            Ok(a) => a,
            Err(e) => {
                problems.push(ConfigProblem::Invalid {
                    key: "appliance".into(),
                    reason: e.message().to_string(),
                });
                Appliance::default()
            }
        },
    };
    validate_appliance(&appliance, &mut problems);
    if !appliance.devices.is_empty() {
        if table.contains_key("devices") {
            problems.push(ConfigProblem::Invalid {
                key: "devices".into(),
                reason: "declare devices in [[appliance.devices]] (with their passwords), not in \
                         [[devices]]"
                    .into(),
            });
        }
        // Hashed here, so the daemon's own checks of `[[devices]]` (ids, kinds, duplicates)
        // apply to them, with `appliance.` in front of their keys below.
        let hashed = appliance
            .devices
            .iter()
            .map(|d| {
                let mut entry = toml::Table::new();
                entry.insert("id".into(), d.id.clone().into());
                entry.insert("kind".into(), d.kind.clone().into());
                entry.insert("name".into(), d.name.clone().into());
                entry.insert(
                    "password_hash".into(),
                    crate::domain::devices::hash_password(&d.password).into(),
                );
                toml::Value::Table(entry)
            })
            .collect();
        table.insert("devices".into(), toml::Value::Array(hashed));
    }
    if appliance.tls.is_given() {
        install_tls(&mut table, &mut problems);
    }
    let venued_toml = toml::to_string(&table).unwrap_or_default();
    // The daemon's half as `venued` itself would load it: no environment, no --data-dir.
    let config = match config::load_str(&venued_toml, origin, &BTreeMap::new(), None) {
        Ok(c) => Some(c),
        Err(errors) => {
            problems.extend(errors.problems.into_iter().map(|p| match p {
                ConfigProblem::Invalid { key, reason } if key.starts_with("devices[") => {
                    ConfigProblem::Invalid {
                        key: format!("appliance.{key}"),
                        reason,
                    }
                }
                other => other,
            }));
            None
        }
    };
    match config {
        Some(config) if problems.is_empty() => Ok(Provisioning {
            appliance,
            venued_toml,
            config,
        }),
        _ => Err(fail(problems)),
    }
}

/// Points the daemon's MQTT TLS listener at the certificate the image installs, and opens it on
/// [`DEFAULT_TLS_LISTEN`] unless the file chose a listener. Files of the daemon's own are refused:
/// a path on a laptop means nothing on the box.
fn install_tls(table: &mut toml::Table, problems: &mut Vec<ConfigProblem>) {
    let mqtt = table
        .entry("mqtt")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(mqtt) = mqtt.as_table_mut() else {
        return; // not a table: the daemon's loader names it below
    };
    for key in ["tls_cert", "tls_key"] {
        if mqtt
            .get(key)
            .and_then(toml::Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            invalid(
                problems,
                &format!("mqtt.{key}"),
                "the certificate is given in [appliance.tls]; remove mqtt.tls_cert and                  mqtt.tls_key, the box installs it and names it there"
                    .into(),
            );
        }
    }
    mqtt.insert("tls_cert".into(), format!("{INSTALLED_DIR}/tls.crt").into());
    mqtt.insert("tls_key".into(), format!("{INSTALLED_DIR}/tls.key").into());
    mqtt.entry("listen_tls")
        .or_insert_with(|| DEFAULT_TLS_LISTEN.into());
}

fn invalid(problems: &mut Vec<ConfigProblem>, key: &str, reason: String) {
    problems.push(ConfigProblem::Invalid {
        key: key.into(),
        reason,
    });
}

fn validate_appliance(a: &Appliance, problems: &mut Vec<ConfigProblem>) {
    if !a.hostname.is_empty() && !is_dns_label(&a.hostname) {
        invalid(
            problems,
            "appliance.hostname",
            format!(
                "`{}` must be one DNS label: 1-63 of a-z, 0-9 and `-`, not starting or ending with `-`",
                a.hostname
            ),
        );
    }
    for (i, key) in a.ssh_authorized_keys.iter().enumerate() {
        if let Err(reason) = check_ssh_key(key) {
            invalid(
                problems,
                &format!("appliance.ssh_authorized_keys[{i}]"),
                reason,
            );
        }
    }
    for (i, d) in a.devices.iter().enumerate() {
        if d.password.chars().count() < MIN_DEVICE_PASSWORD {
            invalid(
                problems,
                &format!("appliance.devices[{i}].password"),
                format!(
                    "is shorter than {MIN_DEVICE_PASSWORD} characters; draw one at random, e.g. \
                     `openssl rand -base64 20`"
                ),
            );
        }
    }
    if a.tls.is_given() {
        validate_tls(&a.tls, problems);
    }
    validate_wifi(&a.wifi, problems);
    if !(30..=3600).contains(&a.update_trial_secs) {
        invalid(
            problems,
            "appliance.update_trial_secs",
            format!("{} is outside 30..=3600", a.update_trial_secs),
        );
    }
    let n = &a.network;
    if n.address.is_empty() {
        if !n.gateway.is_empty() || !n.dns.is_empty() {
            invalid(
                problems,
                "appliance.network.address",
                "a gateway or DNS servers were given without a static address; add `address` \
                 (e.g. \"10.20.0.5/24\") or remove them to use DHCP"
                    .into(),
            );
        }
    } else if parse_cidr(&n.address).is_none() {
        invalid(
            problems,
            "appliance.network.address",
            format!(
                "`{}` is not an address with a prefix length, e.g. \"10.20.0.5/24\"",
                n.address
            ),
        );
    }
    if !n.gateway.is_empty() && n.gateway.parse::<IpAddr>().is_err() {
        invalid(
            problems,
            "appliance.network.gateway",
            format!("`{}` is not an IP address", n.gateway),
        );
    }
    for (i, dns) in n.dns.iter().enumerate() {
        if dns.parse::<IpAddr>().is_err() {
            invalid(
                problems,
                &format!("appliance.network.dns[{i}]"),
                format!("`{dns}` is not an IP address"),
            );
        }
    }
}

fn validate_wifi(wifi: &Wifi, problems: &mut Vec<ConfigProblem>) {
    if wifi.ssid.is_empty() {
        if !wifi.passphrase.is_empty() {
            invalid(
                problems,
                "appliance.wifi.ssid",
                "a passphrase was given without the network's name (`ssid`)".into(),
            );
        }
        return;
    }
    if wifi.ssid.len() > 32 || wifi.ssid.chars().any(char::is_control) {
        invalid(
            problems,
            "appliance.wifi.ssid",
            format!(
                "`{}` is not a network name: at most 32 bytes, without control characters",
                wifi.ssid.escape_debug()
            ),
        );
    }
    let p = &wifi.passphrase;
    // WPA's passphrase is 8-63 printable ASCII characters. Spaces at either end are refused:
    // they are easily pasted by mistake, and iwd's settings file would not keep them.
    if !p.is_empty()
        && (!(8..=63).contains(&p.len())
            || !p.bytes().all(|b| (0x20..0x7f).contains(&b))
            || p.starts_with(' ')
            || p.ends_with(' '))
    {
        invalid(
            problems,
            "appliance.wifi.passphrase",
            "must be 8-63 printable ASCII characters, without spaces at either end (WPA2/WPA3 \
             Personal); leave it out for an open network"
                .into(),
        );
    }
}

fn validate_tls(tls: &Tls, problems: &mut Vec<ConfigProblem>) {
    use crate::mqtt::front::{PemProblem, tls_server_config};
    let missing = |what: &str| {
        format!(
            "{what} is missing: paste the whole PEM text, `-----BEGIN …-----` to `-----END …-----`,              between triple quotes (\"\"\"…\"\"\")"
        )
    };
    if tls.certificate.is_empty() {
        return invalid(
            problems,
            "appliance.tls.certificate",
            missing("the certificate"),
        );
    }
    if tls.private_key.is_empty() {
        return invalid(
            problems,
            "appliance.tls.private_key",
            missing("its private key"),
        );
    }
    match tls_server_config(tls.certificate.as_bytes(), tls.private_key.as_bytes()) {
        Ok(_) => {}
        Err(PemProblem::Certificate(reason)) => invalid(
            problems,
            "appliance.tls.certificate",
            format!("is not a PEM certificate chain ({reason}); give the full chain, leaf first"),
        ),
        Err(PemProblem::Key(reason)) => invalid(
            problems,
            "appliance.tls.private_key",
            format!("holds no unencrypted PKCS#8, RSA or SEC1 private key in PEM ({reason})"),
        ),
        Err(PemProblem::Identity(reason)) => invalid(
            problems,
            "appliance.tls",
            format!("the certificate and key do not make a usable TLS identity: {reason}"),
        ),
    }
}

fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}

/// One `authorized_keys` line without options: `type base64 [comment]`.
fn check_ssh_key(line: &str) -> Result<(), String> {
    use base64::Engine as _;
    if line.contains('\n') {
        return Err("one key per list entry, without line breaks".into());
    }
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err("expected `<type> <base64 key> [comment]`, as in a .pub file".into());
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(format!(
            "`{kind}` is not an OpenSSH public key type; paste the whole line of the .pub file \
             (e.g. \"ssh-ed25519 AAAA... it@venue\")"
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| {
            "the key is not valid base64; paste the .pub file's line unchanged".to_string()
        })?;
    // The blob starts with its own type as an SSH string: a pasted key of another type, or a
    // truncated one, does not.
    let named = bytes.get(4..).zip(bytes.get(..4)).and_then(|(rest, len)| {
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        rest.get(..len)
    });
    if named != Some(kind.as_bytes()) {
        return Err(format!(
            "the key's data does not say `{kind}`: it is truncated or of another type"
        ));
    }
    Ok(())
}

impl Provisioning {
    /// The host name the box takes: `appliance.hostname`, else `venue-edge`.
    pub fn hostname(&self) -> &str {
        match self.appliance.hostname.as_str() {
            "" => "venue-edge",
            name => name,
        }
    }

    /// Writes what the first-boot service installs into `dir` (created if missing):
    /// `venued.toml` (with `mdns.hostname` set to the host name unless given), `hostname`,
    /// `authorized_keys` (only when keys were given), `tls.crt` and `tls.key` (only with
    /// `[appliance.tls]`), `wifi/` (with `[appliance.wifi]`: the network's `iwd` file and
    /// `wifi/network`, a systemd-networkd unit for it), `network` (a systemd-networkd unit),
    /// `update-trial-secs` and `summary.txt` (what was applied, without secrets, for the boot
    /// partition).
    pub fn write_into(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(dir)?;
        let mut table: toml::Table = self.venued_toml.parse().unwrap_or_default();
        let mdns = table
            .entry("mdns")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(mdns) = mdns.as_table_mut() {
            mdns.entry("hostname")
                .or_insert_with(|| toml::Value::String(self.hostname().into()));
        }
        let venued_toml = format!(
            "# Written by `venued provision` from the boot partition's {FILE_NAME}; edit that \
             file, not this one.\n{}",
            toml::to_string(&table).unwrap_or_default()
        );
        let secret = |name: &str, text: &str| -> std::io::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640))
        };
        secret("venued.toml", &venued_toml)?;
        std::fs::write(dir.join("hostname"), format!("{}\n", self.hostname()))?;
        let keys = dir.join("authorized_keys");
        if self.appliance.ssh_authorized_keys.is_empty() {
            match std::fs::remove_file(&keys) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        } else {
            secret(
                "authorized_keys",
                &self.appliance.ssh_authorized_keys.join("\n"),
            )?;
        }
        let tls = &self.appliance.tls;
        for (name, text) in [("tls.crt", &tls.certificate), ("tls.key", &tls.private_key)] {
            if tls.is_given() {
                secret(name, text)?;
            } else {
                match std::fs::remove_file(dir.join(name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        std::fs::write(dir.join("network"), self.network_unit())?;
        // Wi-Fi: the network for iwd (its passphrase, so not world-readable) and a
        // systemd-networkd unit for the wireless interface; both gone without `[appliance.wifi]`.
        let wifi = dir.join("wifi");
        match std::fs::remove_dir_all(&wifi) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let w = &self.appliance.wifi;
        if !w.ssid.is_empty() {
            std::fs::create_dir_all(&wifi)?;
            let path = wifi.join(w.iwd_file_name());
            std::fs::write(&path, w.iwd_settings())?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            std::fs::write(
                dir.join("wifi").join("network"),
                "# Written by `venued provision`.\n[Match]\nType=wlan\n\n[Network]\nDHCP=yes\n\
                 MulticastDNS=no\nLLMNR=no\n",
            )?;
        }
        std::fs::write(
            dir.join("update-trial-secs"),
            format!("{}\n", self.appliance.update_trial_secs),
        )?;
        std::fs::write(dir.join("summary.txt"), self.summary())
    }

    /// A systemd-networkd unit for the wired interfaces.
    fn network_unit(&self) -> String {
        let n = &self.appliance.network;
        let mut unit = String::from(
            "# Written by `venued provision`.\n[Match]\nType=ether\n\n[Network]\nMulticastDNS=no\n\
             LLMNR=no\n",
        );
        if n.address.is_empty() {
            unit.push_str("DHCP=yes\n");
        } else {
            let _ = writeln!(unit, "Address={}", n.address);
            if !n.gateway.is_empty() {
                let _ = writeln!(unit, "Gateway={}", n.gateway);
            }
            for dns in &n.dns {
                let _ = writeln!(unit, "DNS={dns}");
            }
        }
        unit
    }

    /// What was applied, without secrets.
    fn summary(&self) -> String {
        let c = &self.config;
        let network = match self.appliance.network.address.as_str() {
            "" => "DHCP".to_string(),
            a => format!("static {a}"),
        };
        format!(
            "event: {}\nhostname: {}\nnetwork: {network}\nwifi: {}\nrelay: {}\nreplica: {}\nssh keys: {}\n\
             devices: {}\nadmin token: {}\nmqtt over tls: {}\n",
            c.event.id,
            self.hostname(),
            match &self.appliance.wifi {
                w if w.ssid.is_empty() => "off".to_string(),
                w => format!("{} (DHCP)", w.ssid),
            },
            if c.sync.relay_url.is_empty() {
                "off"
            } else {
                &c.sync.relay_url
            },
            if c.replica.enabled { "on" } else { "off" },
            self.appliance.ssh_authorized_keys.len(),
            self.appliance
                .devices
                .iter()
                .map(|d| format!("{} ({})", d.id, d.kind))
                .collect::<Vec<_>>()
                .join(", "),
            if c.http.admin_token_sha256.is_empty() {
                "generated on the box"
            } else {
                "provisioned"
            },
            match c.mqtt_listeners.tls {
                Some(addr) => format!("on, port {}", addr.port()),
                None => "off".into(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl it@venue";

    #[test]
    fn a_full_file_splits_into_the_daemon_config_and_the_box() {
        let text = format!(
            r#"
[appliance]
hostname = "hall-a"
ssh_authorized_keys = ["{KEY}"]
[appliance.network]
address = "10.20.0.5/24"
gateway = "10.20.0.1"
dns = ["10.20.0.1"]

[event]
id = "conf-2026"
[sync]
relay_url = "https://relay.example.com"
token = "vrt_secret"
"#
        );
        let p = check(&text, "venue-edge.toml").expect("valid");
        assert_eq!(p.config.event.id, "conf-2026");
        assert_eq!(p.hostname(), "hall-a");
        let dir = tempfile::tempdir().expect("tempdir");
        p.write_into(dir.path()).expect("writes");
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
        let written = config::load_str(&read("venued.toml"), "x", &BTreeMap::new(), None)
            .expect("the written config loads");
        assert_eq!(written.mdns.hostname, "hall-a");
        assert_eq!(written.sync.token, "vrt_secret");
        assert!(read("network").contains("Address=10.20.0.5/24\nGateway=10.20.0.1\nDNS=10.20.0.1"));
        assert_eq!(read("authorized_keys"), KEY);
        assert_eq!(read("hostname"), "hall-a\n");
        let summary = read("summary.txt");
        assert!(summary.contains("event: conf-2026"), "{summary}");
        assert!(!summary.contains("vrt_secret"), "no secret in the summary");
    }

    #[test]
    fn device_passwords_become_hashes_and_bad_devices_are_named() {
        let password = "x".repeat(MIN_DEVICE_PASSWORD);
        let text = format!(
            "[[appliance.devices]]\nid = \"kiosk-1\"\nkind = \"kiosk\"\npassword = \"{password}\"\n"
        );
        let p = check(&text, "f").expect("valid");
        assert!(
            !p.venued_toml.contains(&password),
            "the password itself is not kept"
        );
        let [device] = p.config.devices.as_slice() else {
            panic!("one device: {:?}", p.config.devices);
        };
        assert_eq!(
            crate::domain::devices::check_password(&password, &device.password_hash),
            crate::domain::devices::PasswordCheck::Match
        );
        let text =
            "[[appliance.devices]]\nid = \"k 1\"\nkind = \"printer\"\npassword = \"short\"\n";
        let errors = check(text, "f").expect_err("invalid").to_string();
        for key in [
            "appliance.devices[0].password",
            "appliance.devices[0].id",
            "appliance.devices[0].kind",
        ] {
            assert!(
                errors.contains(&format!("`{key}`")),
                "{key} missing in:\n{errors}"
            );
        }
    }

    /// The example venue IT copies from the boot partition is itself a valid file.
    #[test]
    fn the_example_on_the_boot_partition_is_valid() {
        let example = include_str!("../../image/venue-edge.example.toml");
        if let Err(e) = check(example, "venue-edge.example.toml") {
            panic!("{e}");
        }
    }

    #[test]
    fn an_empty_file_is_dhcp_without_ssh_and_removes_old_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("authorized_keys"), KEY).expect("writes");
        let p = check("", "f").expect("valid");
        p.write_into(dir.path()).expect("writes");
        assert!(!dir.path().join("authorized_keys").exists());
        let network = std::fs::read_to_string(dir.path().join("network")).expect("network");
        assert!(network.contains("DHCP=yes"));
        assert_eq!(p.hostname(), "venue-edge");
    }

    /// A self-signed certificate for `hall-a.local` and its key, in PEM.
    fn certificate() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["hall-a.local".into()]).expect("cert");
        (made.cert.pem(), made.key_pair.serialize_pem())
    }

    fn with_tls(certificate: &str, private_key: &str, rest: &str) -> String {
        format!(
            "[appliance.tls]\ncertificate = \"\"\"\n{certificate}\"\"\"\n\
             private_key = \"\"\"\n{private_key}\"\"\"\n{rest}"
        )
    }

    #[test]
    fn a_certificate_is_installed_and_opens_mqtt_over_tls() {
        let (cert, key) = certificate();
        let p = check(&with_tls(&cert, &key, ""), "venue-edge.toml").expect("valid");
        assert_eq!(
            p.config.mqtt_listeners.tls,
            Some(DEFAULT_TLS_LISTEN.parse().unwrap())
        );
        assert_eq!(p.config.mqtt.tls_cert, "/var/lib/venue-edge/tls.crt");
        assert_eq!(p.config.mqtt.tls_key, "/var/lib/venue-edge/tls.key");
        let dir = tempfile::tempdir().expect("tempdir");
        p.write_into(dir.path()).expect("writes");
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
        assert_eq!(read("tls.crt"), cert);
        assert_eq!(read("tls.key"), key);
        assert!(read("summary.txt").contains("mqtt over tls: on, port 8883"));
        assert!(!read("summary.txt").contains("PRIVATE KEY"));
        // The listener the file chose is kept; a later file without a certificate removes it.
        let p = check(
            &with_tls(&cert, &key, "[mqtt]\nlisten_tls = \"0.0.0.0:9883\"\n"),
            "venue-edge.toml",
        )
        .expect("valid");
        assert_eq!(p.config.mqtt_listeners.tls.map(|a| a.port()), Some(9883));
        check("", "venue-edge.toml")
            .expect("valid")
            .write_into(dir.path())
            .expect("writes");
        assert!(!dir.path().join("tls.crt").exists() && !dir.path().join("tls.key").exists());
    }

    #[test]
    fn wifi_becomes_an_iwd_network_and_a_dhcp_unit() {
        let text =
            "[appliance.wifi]\nssid = \"Venue Staff\"\npassphrase = \"correct horse battery\"\n";
        let p = check(text, "venue-edge.toml").expect("valid");
        let dir = tempfile::tempdir().expect("tempdir");
        p.write_into(dir.path()).expect("writes");
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);
        let psk = read("wifi/Venue Staff.psk");
        assert!(
            psk.contains("[Security]\nPassphrase=correct horse battery\n"),
            "{psk}"
        );
        assert!(read("wifi/network").contains("[Match]\nType=wlan\n"));
        assert!(read("summary.txt").contains("wifi: Venue Staff (DHCP)"));
        assert!(
            !read("summary.txt").contains("horse"),
            "no passphrase in the summary"
        );
        // Names iwd cannot use as they are, and open networks.
        let odd = Wifi {
            ssid: "Café/1".into(),
            passphrase: String::new(),
        };
        assert_eq!(odd.iwd_file_name(), "=436166c3a92f31.open");
        // A later file without Wi-Fi removes it.
        check("", "venue-edge.toml")
            .expect("valid")
            .write_into(dir.path())
            .expect("writes");
        assert!(!dir.path().join("wifi").exists());
    }

    #[test]
    fn bad_wifi_settings_are_named() {
        for (wifi, key) in [
            ("passphrase = \"12345678\"", "appliance.wifi.ssid"),
            (
                &format!("ssid = \"{}\"", "x".repeat(33)),
                "appliance.wifi.ssid",
            ),
            (
                "ssid = \"a\"\npassphrase = \"short\"",
                "appliance.wifi.passphrase",
            ),
            (
                "ssid = \"a\"\npassphrase = \" leading space\"",
                "appliance.wifi.passphrase",
            ),
            (
                "ssid = \"a\"\npassphrase = \"naïve passphrase\"",
                "appliance.wifi.passphrase",
            ),
        ] {
            let text = format!("[appliance.wifi]\n{wifi}\n");
            let problem = check(&text, "venue-edge.toml")
                .expect_err(&text)
                .to_string();
            assert!(
                problem.contains(&format!("`{key}`")),
                "{key} not in:\n{problem}"
            );
        }
    }

    #[test]
    fn a_bad_certificate_or_key_is_named() {
        let (cert, key) = certificate();
        let (_, other_key) = certificate();
        let problem = |text: &str| {
            check(text, "venue-edge.toml")
                .expect_err("invalid")
                .to_string()
        };
        let cases = [
            (
                with_tls(&cert, &other_key, ""),
                "`appliance.tls`: the certificate and key do not make a usable TLS identity",
            ),
            (
                with_tls("hello", &key, ""),
                "`appliance.tls.certificate`: is not a PEM certificate chain",
            ),
            (
                with_tls(&cert, &cert, ""),
                "`appliance.tls.private_key`: holds no unencrypted",
            ),
            (
                "[appliance.tls]\nprivate_key = \"x\"\n".to_string(),
                "`appliance.tls.certificate`: the certificate is missing",
            ),
            (
                with_tls(&cert, &key, "[mqtt]\ntls_cert = \"/home/it/cert.pem\"\n"),
                "`mqtt.tls_cert`: the certificate is given in [appliance.tls]",
            ),
        ];
        for (text, expected) in cases {
            let problem = problem(&text);
            assert!(problem.contains(expected), "{expected} not in:\n{problem}");
        }
    }

    #[test]
    fn every_problem_of_both_halves_is_reported_by_key() {
        let text = r#"
[appliance]
hostname = "Hall A"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1yc2EAAAA it@venue", "hello"]
[appliance.network]
gateway = "10.0.0.1"
[event]
id = "bad id!"
[mqtt]
listen = "nowhere"
"#;
        let errors = check(text, "venue-edge.toml").expect_err("invalid");
        let text = errors.to_string();
        for key in [
            "appliance.hostname",
            "appliance.ssh_authorized_keys[0]",
            "appliance.ssh_authorized_keys[1]",
            "appliance.network.address",
            "event.id",
            "mqtt.listen",
        ] {
            assert!(
                text.contains(&format!("`{key}`")),
                "{key} missing in:\n{text}"
            );
        }
        assert!(
            text.starts_with("6 problem(s) in configuration venue-edge.toml"),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_named() {
        let errors = check("[appliance]\nwlan = 1\n", "f").expect_err("unknown");
        assert!(
            errors.to_string().contains("unknown field `wlan`"),
            "{errors}"
        );
        let errors = check("[event\nid=", "f").expect_err("syntax");
        assert!(errors.to_string().contains("not valid TOML"), "{errors}");
        let errors = check("[evnt]\nid = \"x\"\n", "f").expect_err("unknown section");
        assert!(
            errors.to_string().contains("unknown key `evnt`"),
            "{errors}"
        );
    }
}
