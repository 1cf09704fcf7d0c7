//! What venue IT's console reads beyond the status: each registered device with the last
//! status it published (kept as its retained `{kind}/{id}/status`), the active alerts, and the
//! count of ops the relay parked.

use serde_json::{Value as Json, json};

use super::{DomainError, devices, retained};
use crate::store::Store;

/// Active alerts the console shows.
pub const ALERTS: usize = 20;

/// `{"devices": [{"id", "kind", "name", "created_at", "revoked_at", "state", "state_at"}],
/// "alerts": [...]}`. `state` is the last status the device published (`ready`, `lost`, …;
/// `null` if it never did), `state_at` when the appliance stored it, `topic_prefix` the event's
/// tree (`venue/default/`).
pub async fn devices_and_alerts(store: &Store, topic_prefix: &str) -> Result<Json, DomainError> {
    let registered = devices::list(store).await?;
    let prefix = topic_prefix.to_string();
    store
        .read(move |conn| {
            let mut out = Vec::new();
            for device in registered {
                let topic = format!("{prefix}{}/{}/status", device.kind.as_str(), device.id);
                let status = retained::get_dated(conn, &topic)?.and_then(|(payload, at)| {
                    Some((serde_json::from_slice::<Json>(&payload).ok()?, at))
                });
                let mut row = serde_json::to_value(&device).unwrap_or_default();
                row["state"] = status
                    .as_ref()
                    .map_or(Json::Null, |(s, _)| s["state"].clone());
                // When the appliance stored it: devices' own clocks may be anything.
                row["state_at"] = status
                    .as_ref()
                    .map_or(Json::Null, |(_, at)| json!(super::rfc3339(*at)));
                out.push(row);
            }
            let alerts = retained::active_alerts(conn, ALERTS)?;
            Ok::<_, DomainError>(json!({ "devices": out, "alerts": alerts }))
        })
        .await
}
