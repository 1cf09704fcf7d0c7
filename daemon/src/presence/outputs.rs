//! Presence on MQTT: retained occupancy per zone (`presence/{zone}`), a periodic QoS 0 summary
//! per zone (`beacon/{zone}`), and low-battery alerts (`alert/warning/{beacon}`). The bridge
//! carries `presence/{zone}` into each zone's hub channel. Only counts and venue beacons leave
//! here: no attendee, badge or address (invariant 7).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::mqtt::{MqttHandle, envelope};

/// How often the `beacon/{zone}` summaries go out.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// What was last published, so only changes are written and sent.
pub(super) struct MqttOutputs {
    handle: MqttHandle,
    published: BTreeMap<String, usize>,
    last_summary: Option<Instant>,
}

impl MqttOutputs {
    pub(super) fn new(handle: MqttHandle) -> Self {
        Self {
            handle,
            published: BTreeMap::new(),
            last_summary: None,
        }
    }

    /// Publishes the zones whose occupancy changed (a zone that emptied publishes 0), and the
    /// summaries when they are due. Runs in its own task so the engine never waits on a commit.
    pub(super) fn occupancy(&mut self, zones: &BTreeMap<String, usize>, tracked: usize) {
        let mut changed: Vec<(String, usize)> = zones
            .iter()
            .filter(|(zone, n)| self.published.get(*zone) != Some(n))
            .map(|(zone, n)| (zone.clone(), *n))
            .collect();
        changed.extend(
            self.published
                .iter()
                .filter(|(zone, n)| **n > 0 && !zones.contains_key(*zone))
                .map(|(zone, _)| (zone.clone(), 0)),
        );
        for (zone, n) in &changed {
            self.published.insert(zone.clone(), *n);
        }
        let summary_due = self
            .last_summary
            .is_none_or(|at| at.elapsed() >= SUMMARY_INTERVAL);
        let summaries = match summary_due {
            true => {
                self.last_summary = Some(Instant::now());
                self.published.clone()
            }
            false => BTreeMap::new(),
        };
        if changed.is_empty() && summaries.is_empty() {
            return;
        }
        let handle = self.handle.clone();
        tokio::spawn(async move {
            for (zone, n) in changed {
                let payload = envelope(json!({ "zone": zone, "occupancy": n }));
                if let Err(e) = handle
                    .set_retained(&format!("presence/{zone}"), payload)
                    .await
                {
                    tracing::warn!(zone, error = %e, "cannot publish zone occupancy");
                }
            }
            for (zone, n) in summaries {
                let payload =
                    envelope(json!({ "zone": zone, "present": n, "tracked_venue_wide": tracked }));
                handle.publish(&format!("beacon/{zone}"), payload).await;
            }
        });
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
