//! The topic tree under `{root}/{event}/` and who may publish where.
//!
//! rumqttd has no ACL, so this is the broker's authorisation: the front checks every PUBLISH,
//! will and SUBSCRIBE of a device connection against [`Tree::may_publish`] and
//! [`Tree::may_subscribe`] before the broker sees it. docs/protocol/mqtt-topics.md is the
//! reference for device firmware.

use crate::config::is_valid_id;
use crate::domain::devices::DeviceKind;

/// Alert severities, least to most severe.
pub const SEVERITIES: &[&str] = &["info", "warning", "critical"];

/// A topic of the tree, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `kiosk/{kiosk}/checkin`: a check-in request (kiosk → daemon, QoS 1).
    Checkin {
        /// The kiosk.
        kiosk: &'a str,
    },
    /// `kiosk/{kiosk}/checkin/result` (daemon → kiosk, QoS 1).
    CheckinResult {
        /// The kiosk.
        kiosk: &'a str,
    },
    /// `kiosk/{kiosk}/print/result`: the kiosk's badge print jobs as they change (daemon →
    /// kiosk, QoS 1).
    PrintResult {
        /// The kiosk.
        kiosk: &'a str,
    },
    /// `printer/{printer}/status` (retained printer health, daemon-owned).
    PrinterStatus {
        /// The printer.
        printer: &'a str,
    },
    /// `kiosk/{id}/status`, `signage/{id}/status`, `gateway/{id}/status` (retained; will `lost`).
    Status {
        /// The device kind the topic is for.
        kind: DeviceKind,
        /// The device.
        id: &'a str,
    },
    /// `signage/{display}/content` (retained manifest, daemon → display).
    SignageContent {
        /// The display.
        display: &'a str,
    },
    /// `alert/{severity}/{source}` (QoS 1, alert id in the payload).
    Alert {
        /// One of [`SEVERITIES`].
        severity: &'a str,
        /// What it is about: the device that raised it, or for the daemon's alerts the beacon
        /// or subsystem concerned.
        source: &'a str,
    },
    /// `alerts/active` (retained list, daemon-owned).
    AlertsActive,
    /// `presence/{zone}` (retained occupancy, daemon-owned).
    Presence {
        /// The zone.
        zone: &'a str,
    },
    /// `beacon/{zone}` (QoS 0 summary, daemon-owned).
    Beacon {
        /// The zone.
        zone: &'a str,
    },
    /// `daemon/status` (retained, daemon-owned; replaces `$SYS`).
    DaemonStatus,
    /// `gateway/{gateway}/BTtoMQTT/{address}`: a raw advert in the OpenMQTTGateway / Theengs
    /// format.
    GatewayRaw {
        /// The gateway (a scanner of `[[ble.scanners]]`).
        gateway: &'a str,
    },
    /// `gateway/{gateway}/espresense/{device}`: an ESPresense report.
    GatewayEspresense {
        /// The gateway.
        gateway: &'a str,
    },
}

/// Why a publish or subscription is refused; the label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Outside `{root}/{event}/`, or not a topic of the tree.
    UnknownTopic,
    /// A device topic whose id is not the publisher's client id.
    NotOwnTopic,
    /// A topic the publisher's kind may not publish on (daemon-owned, or another kind's).
    WrongKind,
    /// Anonymous connections (demo mode only) publish nothing.
    Anonymous,
    /// QoS 2 is not accepted (see the topic reference).
    Qos2,
    /// A filter outside the event's tree.
    FilterOutsideTree,
    /// A filter that reaches another device's private topics (check-ins, raw adverts).
    NotOwnFilter,
}

impl Denied {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTopic => "unknown_topic",
            Self::NotOwnTopic => "not_own_topic",
            Self::WrongKind => "wrong_kind",
            Self::Anonymous => "anonymous",
            Self::Qos2 => "qos2",
            Self::FilterOutsideTree => "filter_outside_tree",
            Self::NotOwnFilter => "not_own_filter",
        }
    }
}

/// The tree of one event: `{root}/{event}/`.
#[derive(Debug, Clone)]
pub struct Tree {
    prefix: String,
}

impl Tree {
    /// The tree under `root` (already validated) for `event`.
    pub fn new(root: &str, event: &str) -> Self {
        Self {
            prefix: format!("{root}/{event}/"),
        }
    }

    /// `{root}/{event}/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full topic for a path under the tree.
    pub fn topic(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// Parses a full topic name.
    pub fn parse<'a>(&self, topic: &'a str) -> Option<Topic<'a>> {
        let rest = topic.strip_prefix(self.prefix.as_str())?;
        let levels: Vec<&str> = rest.split('/').collect();
        let id = |s: &'a str| is_valid_id(s).then_some(s);
        Some(match levels.as_slice() {
            ["kiosk", k, "checkin"] => Topic::Checkin { kiosk: id(k)? },
            ["kiosk", k, "checkin", "result"] => Topic::CheckinResult { kiosk: id(k)? },
            ["kiosk", k, "print", "result"] => Topic::PrintResult { kiosk: id(k)? },
            ["printer", p, "status"] => Topic::PrinterStatus { printer: id(p)? },
            [kind, i, "status"] => Topic::Status {
                kind: match *kind {
                    "kiosk" => DeviceKind::Kiosk,
                    "signage" => DeviceKind::Signage,
                    "gateway" => DeviceKind::Gateway,
                    _ => return None,
                },
                id: id(i)?,
            },
            ["signage", d, "content"] => Topic::SignageContent { display: id(d)? },
            ["alert", severity, source] if SEVERITIES.contains(severity) => Topic::Alert {
                severity,
                source: entity_id(source)?,
            },
            ["alerts", "active"] => Topic::AlertsActive,
            ["presence", zone] => Topic::Presence {
                zone: entity_id(zone)?,
            },
            ["beacon", zone] => Topic::Beacon {
                zone: entity_id(zone)?,
            },
            ["daemon", "status"] => Topic::DaemonStatus,
            ["gateway", g, "BTtoMQTT", address] if !address.is_empty() => {
                Topic::GatewayRaw { gateway: id(g)? }
            }
            ["gateway", g, "espresense", device] if !device.is_empty() => {
                Topic::GatewayEspresense { gateway: id(g)? }
            }
            _ => return None,
        })
    }

    /// May a device (`None`: an anonymous demo connection) publish on `topic` at `qos`?
    /// The parsed topic when it may.
    pub fn may_publish<'a>(
        &self,
        device: Option<(DeviceKind, &str)>,
        topic: &'a str,
        qos: u8,
    ) -> Result<Topic<'a>, Denied> {
        let Some((kind, client)) = device else {
            return Err(Denied::Anonymous);
        };
        if qos > 1 {
            return Err(Denied::Qos2);
        }
        let parsed = self.parse(topic).ok_or(Denied::UnknownTopic)?;
        let own = |id: &str| {
            if id == client {
                Ok(parsed)
            } else {
                Err(Denied::NotOwnTopic)
            }
        };
        match parsed {
            Topic::Checkin { kiosk } if kind == DeviceKind::Kiosk => own(kiosk),
            Topic::Status { kind: k, id } if k == kind => own(id),
            Topic::Alert { source, .. } => own(source),
            Topic::GatewayRaw { gateway } | Topic::GatewayEspresense { gateway }
                if kind == DeviceKind::Gateway =>
            {
                own(gateway)
            }
            _ => Err(Denied::WrongKind),
        }
    }

    /// May a device (`None`: an anonymous demo connection) subscribe to `filter`? Only filters
    /// inside the event's tree (one appliance's broker never carries another event's traffic,
    /// and `$` topics do not exist), and none that reaches another device's private topics
    /// ([`PRIVATE`]): a kiosk reads its own check-in results, a gateway its own adverts, and
    /// nobody else reads either, not even through a wildcard.
    pub fn may_subscribe(
        &self,
        device: Option<(DeviceKind, &str)>,
        filter: &str,
    ) -> Result<(), Denied> {
        let rest = match filter.strip_prefix(self.prefix.as_str()) {
            Some(rest) if !rest.is_empty() => rest,
            _ => return Err(Denied::FilterOutsideTree),
        };
        let levels: Vec<&str> = rest.split('/').collect();
        for private in PRIVATE {
            if !intersects(&levels, private.levels) {
                continue;
            }
            // Private topics are readable only through the owner's own id, written out.
            let own = device.is_some_and(|(kind, id)| {
                kind == private.owner && levels.get(private.id_level) == Some(&id)
            });
            if !own {
                return Err(Denied::NotOwnFilter);
            }
        }
        Ok(())
    }
}

/// A family of topics only one device may read: `levels` (under the tree) with `+` at
/// `id_level`, the owner's id.
struct Private {
    levels: &'static [&'static str],
    id_level: usize,
    owner: DeviceKind,
}

/// What carries personal data: check-ins (names, companies, ticket codes), badge print jobs
/// (whose badge) and raw adverts
/// (badge identifiers, so where a person is). Everything else of the tree (statuses, signage
/// content, occupancy, alerts, the daemon's status, bridged hub channels) is readable by every
/// connection; docs/protocol/mqtt-topics.md has the table.
const PRIVATE: &[Private] = &[
    Private {
        levels: &["kiosk", "+", "checkin"],
        id_level: 1,
        owner: DeviceKind::Kiosk,
    },
    Private {
        levels: &["kiosk", "+", "checkin", "result"],
        id_level: 1,
        owner: DeviceKind::Kiosk,
    },
    Private {
        levels: &["kiosk", "+", "print", "result"],
        id_level: 1,
        owner: DeviceKind::Kiosk,
    },
    Private {
        levels: &["gateway", "+", "BTtoMQTT", "+"],
        id_level: 1,
        owner: DeviceKind::Gateway,
    },
    Private {
        levels: &["gateway", "+", "espresense", "+"],
        id_level: 1,
        owner: DeviceKind::Gateway,
    },
];

/// Whether some topic matches both the subscription filter `filter` (with `+` and `#`) and the
/// pattern `pattern` (with `+`).
fn intersects(filter: &[&str], pattern: &[&str]) -> bool {
    match (filter.split_first(), pattern.split_first()) {
        // `#` matches the rest, however long (also nothing more).
        (Some((&"#", _)), _) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((f, f_rest)), Some((p, p_rest))) => {
            (*f == "+" || *p == "+" || f == p) && intersects(f_rest, p_rest)
        }
    }
}

/// Zone and beacon ids are entity ids (`A-Z a-z 0-9 . _ - : @`, up to 128); device ids are a
/// subset, so a device's own alerts parse too.
fn entity_id(s: &str) -> Option<&str> {
    crate::domain::entities::validate_id(s).ok().map(|()| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        Tree::new("venue", "conf26")
    }

    #[test]
    fn every_topic_of_the_tree_parses() {
        let t = tree();
        let cases = [
            ("kiosk/k1/checkin", Topic::Checkin { kiosk: "k1" }),
            ("kiosk/k1/print/result", Topic::PrintResult { kiosk: "k1" }),
            (
                "printer/desk-1/status",
                Topic::PrinterStatus { printer: "desk-1" },
            ),
            (
                "kiosk/k1/checkin/result",
                Topic::CheckinResult { kiosk: "k1" },
            ),
            (
                "kiosk/k1/status",
                Topic::Status {
                    kind: DeviceKind::Kiosk,
                    id: "k1",
                },
            ),
            (
                "signage/lobby/status",
                Topic::Status {
                    kind: DeviceKind::Signage,
                    id: "lobby",
                },
            ),
            (
                "signage/lobby/content",
                Topic::SignageContent { display: "lobby" },
            ),
            (
                "alert/warning/k1",
                Topic::Alert {
                    severity: "warning",
                    source: "k1",
                },
            ),
            ("alerts/active", Topic::AlertsActive),
            ("presence/hall-a", Topic::Presence { zone: "hall-a" }),
            ("beacon/hall-a", Topic::Beacon { zone: "hall-a" }),
            ("daemon/status", Topic::DaemonStatus),
            (
                "gateway/gw1/BTtoMQTT/AABBCCDDEEFF",
                Topic::GatewayRaw { gateway: "gw1" },
            ),
            (
                "gateway/gw1/espresense/iBeacon:x",
                Topic::GatewayEspresense { gateway: "gw1" },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(t.parse(&t.topic(path)), Some(want), "{path}");
        }
        for bad in [
            "other/conf26/kiosk/k1/checkin",
            "venue/other/kiosk/k1/checkin",
            "venue/conf26/kiosk/k+1/checkin",
            "venue/conf26/alert/panic/k1",
            "venue/conf26/kiosk//checkin",
            "venue/conf26/robot/r1/status",
        ] {
            assert_eq!(t.parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_device_publishes_only_on_its_own_topics_of_its_kind() {
        let t = tree();
        let kiosk = Some((DeviceKind::Kiosk, "k1"));
        let sign = Some((DeviceKind::Signage, "lobby"));
        let gw = Some((DeviceKind::Gateway, "gw1"));
        let ok = |d, p: &str| t.may_publish(d, &t.topic(p), 1).is_ok();
        let why = |d, p: &str| t.may_publish(d, &t.topic(p), 1).err();
        assert!(ok(kiosk, "kiosk/k1/checkin"));
        assert!(ok(kiosk, "kiosk/k1/status"));
        assert!(ok(kiosk, "alert/critical/k1"));
        assert!(ok(sign, "signage/lobby/status"));
        assert!(ok(gw, "gateway/gw1/BTtoMQTT/AABB"));
        assert_eq!(why(kiosk, "kiosk/k2/checkin"), Some(Denied::NotOwnTopic));
        assert_eq!(why(kiosk, "alert/info/k2"), Some(Denied::NotOwnTopic));
        assert_eq!(why(sign, "kiosk/lobby/checkin"), Some(Denied::WrongKind));
        assert_eq!(why(kiosk, "signage/k1/status"), Some(Denied::WrongKind));
        assert_eq!(
            why(kiosk, "kiosk/k1/checkin/result"),
            Some(Denied::WrongKind)
        );
        assert_eq!(why(sign, "signage/lobby/content"), Some(Denied::WrongKind));
        assert_eq!(why(gw, "presence/hall"), Some(Denied::WrongKind));
        assert_eq!(why(kiosk, "daemon/status"), Some(Denied::WrongKind));
        assert_eq!(why(kiosk, "kiosk/k1/whatever"), Some(Denied::UnknownTopic));
        assert_eq!(why(None, "kiosk/k1/checkin"), Some(Denied::Anonymous));
        assert_eq!(
            t.may_publish(kiosk, &t.topic("kiosk/k1/checkin"), 2).err(),
            Some(Denied::Qos2)
        );
    }

    /// The outside probe: any kiosk could read every other kiosk's check-ins (names, companies,
    /// ticket codes), and anonymous demo clients could subscribe to `#`.
    #[test]
    fn regression_a_device_reads_only_its_own_private_topics() {
        let t = tree();
        let kiosk = Some((DeviceKind::Kiosk, "k1"));
        let display = Some((DeviceKind::Signage, "lobby"));
        let gateway = Some((DeviceKind::Gateway, "gw1"));
        let check = |who, filter: &str| t.may_subscribe(who, &format!("venue/conf26/{filter}"));
        // Own private topics, and everything shared.
        for (who, filter) in [
            (kiosk, "kiosk/k1/checkin/result"),
            (kiosk, "kiosk/k1/print/result"),
            (kiosk, "kiosk/k1/#"),
            (gateway, "gateway/gw1/BTtoMQTT/+"),
            (display, "presence/+"),
            (display, "signage/lobby/content"),
            (display, "kiosk/+/status"),
            (display, "alert/#"),
            (None, "presence/hall"),
            (None, "daemon/status"),
            (None, "+/+/status"),
        ] {
            assert_eq!(check(who, filter), Ok(()), "{who:?} {filter}");
        }
        // Someone else's, directly or through a wildcard.
        for (who, filter) in [
            (kiosk, "kiosk/k2/checkin/result"),
            (kiosk, "kiosk/+/checkin/result"),
            (kiosk, "kiosk/k2/print/result"),
            (display, "kiosk/+/print/#"),
            (kiosk, "kiosk/+/#"),
            (kiosk, "#"),
            (display, "kiosk/k1/checkin/result"),
            (gateway, "gateway/+/BTtoMQTT/+"),
            (kiosk, "gateway/gw1/BTtoMQTT/+"),
            (None, "#"),
            (None, "kiosk/k1/checkin/result"),
            (None, "gateway/gw1/espresense/x"),
        ] {
            assert_eq!(
                check(who, filter),
                Err(Denied::NotOwnFilter),
                "{who:?} {filter}"
            );
        }
    }

    #[test]
    fn subscriptions_stay_inside_the_event() {
        let t = tree();
        let t = |filter: &str| t.may_subscribe(Some((DeviceKind::Signage, "lobby")), filter);
        assert!(t("venue/conf26/presence/hall").is_ok());
        assert!(t("venue/conf26/signage/#").is_ok());
        for bad in [
            "#",
            "+/conf26/#",
            "venue/+/presence/hall",
            "venue/conf26/",
            "$SYS/#",
        ] {
            assert_eq!(t(bad), Err(Denied::FilterOutsideTree), "{bad}");
        }
    }
}
