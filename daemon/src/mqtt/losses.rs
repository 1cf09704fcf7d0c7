//! Every MQTT message that is not delivered is counted here, by reason, and named in a
//! rate-limited warning: the broker's own losses (a subscriber that fell further behind a
//! filter's log than the log keeps) reach the daemon as rumqttd alerts, the daemon's own queues
//! report theirs directly.

use rumqttd::alerts::AlertsLink;
use rumqttd::{Alert, AlertKind};
use tokio::sync::watch;

use super::log_limit::LogLimit;
use crate::metrics::{MqttMetrics, WhyLabel};

/// At most one loss warning (whatever its reason) per this many milliseconds; every drop is
/// counted.
const LOG_INTERVAL_MS: u64 = 1000;

/// Why a message was dropped (the `reason` label of `venued_mqtt_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A subscriber fell behind the broker's log for a filter by more than the log keeps
    /// (`mqtt.segment_bytes` × `mqtt.segment_count`); the broker skipped it ahead.
    SubscriberBehind,
    /// The same, for the daemon's own link (its check-in, status, alert and advert handling).
    DaemonBehind,
    /// The daemon's own handling of device messages had too many pending.
    DaemonQueue,
    /// The MQTT → hub bridge was behind.
    BridgeBehind,
    /// The BLE presence pipeline's queue was full (gateway adverts).
    PresenceQueue,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Self::SubscriberBehind => "subscriber_behind",
            Self::DaemonBehind => "daemon_behind",
            Self::DaemonQueue => "daemon_queue",
            Self::BridgeBehind => "bridge_behind",
            Self::PresenceQueue => "presence_queue",
        }
    }
}

/// The drop counter and its warning's rate limit.
pub struct Losses {
    metrics: MqttMetrics,
    warnings: LogLimit,
}

impl Losses {
    /// Counts into `metrics.dropped`.
    pub fn new(metrics: MqttMetrics) -> Self {
        Self {
            metrics,
            warnings: LogLimit::new(LOG_INTERVAL_MS),
        }
    }

    /// Counts `count` messages dropped for `reason`, for `client` on `topic` (a topic or a
    /// filter), and warns unless a warning went out in the last second.
    pub fn dropped(&self, reason: Reason, count: u64, client: &str, topic: &str) {
        self.metrics
            .dropped
            .get_or_create(&WhyLabel {
                reason: reason.label(),
            })
            .inc_by(count);
        if self.warnings.allow(crate::store::now_ms()) {
            tracing::warn!(
                reason = reason.label(),
                count,
                client,
                topic,
                "MQTT messages dropped (further drops within 1 s are only counted in venued_mqtt_dropped_total)"
            );
        }
    }

    fn alert(&self, alert: &Alert) {
        if let AlertKind::CursorJump { filter, lost } = &alert.kind {
            let reason = match alert.client_id == super::DAEMON_CLIENT_ID {
                true => Reason::DaemonBehind,
                false => Reason::SubscriberBehind,
            };
            self.dropped(reason, *lost as u64, &alert.client_id, filter);
        }
    }
}

/// Counts the broker's alerts until `stop` (or until the router is gone).
pub(super) async fn follow_alerts(
    link: AlertsLink,
    losses: std::sync::Arc<Losses>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let alerts = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            alerts = link.next() => alerts,
        };
        match alerts {
            Ok(alerts) => alerts.iter().for_each(|a| losses.alert(a)),
            Err(_) => return,
        }
    }
}
