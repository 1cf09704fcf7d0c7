//! Presence on MQTT: retained occupancy per zone (`presence/{zone}`), a periodic QoS 0 summary
//! per zone (`beacon/{zone}`), and low-battery alerts (`alert/warning/{beacon}`). The bridge
//! carries `presence/{zone}` into each zone's hub channel. Only counts and venue beacons leave
//! here: no attendee, badge or address (invariant 7).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::Occupancy;
use crate::mqtt::{MqttHandle, envelope};

/// How often the `beacon/{zone}` summaries go out.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Publishes zone occupancy from `view` until `stop`: the retained `presence/{zone}` of each
/// zone whose count moved (a zone that emptied publishes 0), one at a time and in order, and
/// the `beacon/{zone}` summaries every 10 s. It follows the view in its own task, so the
/// engine never waits on a commit or the broker, and nothing piles up behind a slow one: a
/// follower that was busy sees only the latest counts.
pub async fn publish_occupancy(
    handle: MqttHandle,
    mut view: watch::Receiver<Occupancy>,
    mut stop: watch::Receiver<bool>,
) {
    let mut published: BTreeMap<String, usize> = BTreeMap::new();
    let mut summary = tokio::time::interval(SUMMARY_INTERVAL);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                let moved = super::occupancy_changes(&published, &view.borrow_and_update().zones);
                for (zone, n) in moved {
                    let payload = envelope(json!({ "zone": zone, "occupancy": n }));
                    match handle.set_retained(&format!("presence/{zone}"), payload).await {
                        Ok(()) => {
                            published.insert(zone, n);
                        }
                        Err(e) => tracing::warn!(zone, error = %e, "cannot publish zone occupancy"),
                    }
                }
            }
            _ = summary.tick() => {
                let tracked = view.borrow().tracked;
                for (zone, n) in &published {
                    let payload =
                        envelope(json!({ "zone": zone, "present": n, "tracked_venue_wide": tracked }));
                    handle.publish(&format!("beacon/{zone}"), payload).await;
                }
            }
        }
    }
}

/// Low-battery alerts on MQTT.
pub(super) struct MqttOutputs {
    handle: MqttHandle,
}

impl MqttOutputs {
    pub(super) fn new(handle: MqttHandle) -> Self {
        Self { handle }
    }

    /// Raises the low-battery alert for a beacon (once per battery; the caller re-arms).
    pub(super) fn low_battery(&self, beacon: String, battery_mv: u16, threshold_mv: u16) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let id = uuid::Uuid::now_v7().to_string();
            let message = format!(
                "beacon {beacon} reports {battery_mv} mV, below {threshold_mv} mV: replace its battery"
            );
            if let Err(e) = handle.raise_alert("warning", &beacon, &id, &message).await {
                tracing::warn!(beacon, error = %e, "cannot raise the low-battery alert");
            }
        });
    }
}
