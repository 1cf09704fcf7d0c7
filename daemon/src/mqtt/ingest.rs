//! What the daemon takes in from MQTT through its link: kiosk check-ins, device statuses,
//! alerts and BLE gateway adverts. The front has already checked who published; this checks
//! what they published. Nothing invalid changes state; everything is counted.

use std::sync::Arc;

use ble_scanner::Advertisement;
use ble_scanner::gateway;
use rumqttd::Notification;
use rumqttd::local::LinkRx;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use super::losses::Reason;
use super::topics::Topic;
use super::{MqttHandle, envelope, publish_active_alerts};
use crate::domain::checkins::{self, CheckinRequest};
use crate::domain::retained;
use crate::metrics::{MqttMetrics, WhyLabel};

/// Check-ins being applied at once; more wait (the store's group commit batches them).
const CHECKIN_CONCURRENCY: usize = 256;
/// Check-ins, statuses and alerts being handled or waiting at once. Past it a message is dropped
/// and counted (`venued_mqtt_dropped_total`), never queued without bound: the device retries
/// under the same id, and the link must keep draining.
const MAX_PENDING: usize = 4096;
/// The subscriptions of the daemon's link, under the tree.
const SUBSCRIPTIONS: &[&str] = &[
    "kiosk/+/checkin",
    "+/+/status",
    "alert/+/+",
    "gateway/+/BTtoMQTT/+",
    "gateway/+/espresense/+",
];
/// Device states a status may carry (Homie's `$state` values).
const DEVICE_STATES: &[&str] = &["init", "ready", "disconnected", "sleeping", "lost", "alert"];
/// Longest alert message kept.
const MAX_ALERT_MESSAGE: usize = 1024;

/// The daemon's consumer of device messages.
pub(super) struct Ingest {
    handle: MqttHandle,
    event_id: String,
    metrics: MqttMetrics,
    losses: Arc<super::losses::Losses>,
    adverts: Option<mpsc::Sender<Advertisement>>,
    checkins: Arc<Semaphore>,
    pending: Arc<Semaphore>,
    inbox: Option<super::Inbox>,
    /// Woken when a check-in queued a badge (the print queue's signal).
    badge_queued: Arc<tokio::sync::Notify>,
}

impl Ingest {
    pub(super) fn new(
        handle: MqttHandle,
        event_id: String,
        metrics: MqttMetrics,
        losses: Arc<super::losses::Losses>,
        adverts: Option<mpsc::Sender<Advertisement>>,
        inbox: Option<super::Inbox>,
        badge_queued: Arc<tokio::sync::Notify>,
    ) -> Self {
        Self {
            badge_queued,
            handle,
            event_id,
            metrics,
            losses,
            adverts,
            checkins: Arc::new(Semaphore::new(CHECKIN_CONCURRENCY)),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            inbox,
        }
    }

    /// Runs `work` on its own task if fewer than [`MAX_PENDING`] are pending; otherwise drops
    /// the message, counted and logged.
    fn spawn(&self, topic: &str, work: impl std::future::Future<Output = ()> + Send + 'static) {
        match self.pending.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    work.await;
                    drop(slot);
                });
            }
            // A QoS 1 device retries (its check-in's idempotency key absorbs the repeat).
            Err(_) => self
                .losses
                .dropped(Reason::DaemonQueue, 1, super::DAEMON_CLIENT_ID, topic),
        }
    }

    fn invalid(&self, reason: &'static str) {
        self.metrics
            .invalid
            .get_or_create(&WhyLabel { reason })
            .inc();
    }
}

/// Drains the link until shutdown. The link must never stay full: the broker pauses a full
/// link (`Unschedule`) until it is woken, and drops what its segments no longer hold.
pub(super) async fn run(mut rx: LinkRx, ingest: Arc<Ingest>, mut stop: watch::Receiver<bool>) {
    let mut paths: Vec<String> = SUBSCRIPTIONS.iter().map(|p| p.to_string()).collect();
    for filter in ingest.inbox.iter().flat_map(|inbox| &inbox.filters) {
        if !paths.contains(filter) {
            paths.push(filter.clone());
        }
    }
    for path in &paths {
        let filter = ingest.handle.tree.topic(path);
        if let Err(e) = subscribe(&ingest.handle, filter.clone()).await {
            tracing::error!(filter, error = %e, "cannot subscribe the daemon's link");
        }
    }
    loop {
        let notification = tokio::select! {
            _ = stop.changed() => return,
            n = rx.next() => n,
        };
        match notification {
            Ok(Some(Notification::Forward(forward))) => {
                let publish = forward.publish;
                match std::str::from_utf8(&publish.topic) {
                    Ok(topic) => dispatch(&ingest, topic, publish.payload.to_vec()),
                    Err(_) => ingest.invalid("topic_not_utf8"),
                }
            }
            Ok(Some(Notification::Unschedule)) => {
                ingest.metrics.link_unscheduled.inc();
                if let Err(e) = rx.wake().await {
                    tracing::error!(error = %e, "cannot wake the daemon's MQTT link");
                    return;
                }
            }
            Ok(Some(Notification::Disconnect(..))) => {
                tracing::error!("the broker disconnected the daemon's link; MQTT input stops");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "the daemon's MQTT link failed; MQTT input stops");
                return;
            }
        }
    }
}

/// Subscriptions go through the same publisher path as publishes would block; the link's
/// `subscribe` is a short blocking send into the router's queue, so it runs off the runtime.
async fn subscribe(handle: &MqttHandle, filter: String) -> Result<(), super::SubscribeError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    handle
        .tx
        .send(super::Outgoing::Subscribe(filter, tx))
        .await
        .map_err(|_| super::SubscribeError::PublisherGone)?;
    rx.await.map_err(|_| super::SubscribeError::PublisherGone)?
}

fn dispatch(ingest: &Arc<Ingest>, topic: &str, payload: Vec<u8>) {
    let inbox = match (
        &ingest.inbox,
        topic.strip_prefix(ingest.handle.tree.prefix()),
    ) {
        (Some(inbox), Some(path)) if (inbox.takes)(path) => Some((inbox, path)),
        _ => None,
    };
    let bridged = inbox.is_some();
    if let Some((inbox, path)) = inbox {
        if inbox
            .tx
            .try_send((path.to_string(), payload.clone()))
            .is_err()
        {
            ingest
                .losses
                .dropped(Reason::BridgeBehind, 1, super::DAEMON_CLIENT_ID, topic);
        }
    }
    let Some(parsed) = ingest.handle.tree.parse(topic) else {
        if !bridged {
            ingest.invalid("unknown_topic");
        }
        return;
    };
    match parsed {
        Topic::Checkin { kiosk } => {
            let (task, kiosk) = (ingest.clone(), kiosk.to_string());
            ingest.spawn(topic, async move {
                let Ok(_permit) = task.checkins.clone().acquire_owned().await else {
                    return;
                };
                check_in(&task, &kiosk, &payload).await;
            });
        }
        Topic::Status { .. } => {
            if status_is_valid(&payload) {
                let (task, owned) = (ingest.clone(), topic.to_string());
                ingest.spawn(
                    topic,
                    async move { store_status(&task, owned, payload).await },
                );
            } else {
                ingest.invalid("bad_status");
            }
        }
        Topic::Alert { severity, source } => {
            let (task, severity, source) =
                (ingest.clone(), severity.to_string(), source.to_string());
            ingest.spawn(topic, async move {
                alert(&task, &severity, &source, &payload).await
            });
        }
        Topic::GatewayRaw { gateway } => {
            let now = crate::store::now_ms();
            match gateway::decode_raw(gateway, &payload, now) {
                Ok(advert) => forward_advert(ingest, topic, advert),
                Err(_) => ingest.invalid("bad_gateway_advert"),
            }
        }
        Topic::GatewayEspresense { gateway } => {
            let now = crate::store::now_ms();
            match gateway::decode_espresense(gateway, &payload).map(|s| s.into_advert(now)) {
                Ok(Some(advert)) => forward_advert(ingest, topic, advert),
                Ok(None) | Err(_) => ingest.invalid("bad_gateway_advert"),
            }
        }
        // The daemon's own topics; its link does not subscribe to them.
        _ => {}
    }
}

fn forward_advert(ingest: &Ingest, topic: &str, advert: Advertisement) {
    let Some(adverts) = &ingest.adverts else {
        ingest.invalid("ble_presence_off");
        return;
    };
    if adverts.try_send(advert).is_err() {
        // Presence is a degradable extra: a full queue drops the newest sighting.
        ingest
            .losses
            .dropped(Reason::PresenceQueue, 1, super::DAEMON_CLIENT_ID, topic);
    }
}

/// A check-in request in the envelope. `id` is the idempotency key: the kiosk reuses it when
/// it retries.
#[derive(Deserialize)]
struct CheckinMessage {
    id: String,
    #[serde(default)]
    attendee_id: Option<String>,
    #[serde(default)]
    ticket_code: Option<String>,
    #[serde(default)]
    badge: Option<crate::domain::print_jobs::BadgeChoice>,
}

async fn check_in(ingest: &Ingest, kiosk: &str, payload: &[u8]) {
    let result_path = format!("kiosk/{kiosk}/checkin/result");
    let message: CheckinMessage = match serde_json::from_slice(payload) {
        Ok(m) => m,
        Err(e) => {
            ingest.invalid("bad_checkin");
            ingest
                .metrics
                .checkins
                .get_or_create(&WhyLabel { reason: "invalid" })
                .inc();
            let answer = envelope(json!({
                "ref": Value::Null,
                "status": 422,
                "error": {
                    "code": "invalid",
                    "message": format!("not a check-in message: {e}; send {{\"v\":1,\"id\":\"<uuid, reused on retry>\",\"attendee_id\":\"…\"}} or ticket_code"),
                },
            }));
            ingest.handle.publish(&result_path, answer).await;
            return;
        }
    };
    let request = CheckinRequest {
        attendee_id: message.attendee_id,
        ticket_code: message.ticket_code,
        badge: message.badge,
    };
    let outcome = checkins::check_in(
        &ingest.handle.store,
        &ingest.event_id,
        kiosk,
        &message.id,
        request,
    )
    .await;
    let answer = match outcome {
        Ok(outcome) => {
            if outcome.badge_queued {
                ingest.badge_queued.notify_one();
            }
            let result = match (outcome.replayed, outcome.status) {
                (true, _) => "replayed",
                (false, 201) => "new",
                _ => "already_checked_in",
            };
            ingest
                .metrics
                .checkins
                .get_or_create(&WhyLabel { reason: result })
                .inc();
            envelope(json!({
                "ref": message.id,
                "status": outcome.status,
                "replayed": outcome.replayed,
                "checkin": outcome.body,
            }))
        }
        Err(e) => {
            let (status, code) = (e.code().http_status(), e.code().as_str());
            if status >= 500 {
                tracing::error!(error = %e, kiosk, "cannot record an MQTT check-in; the kiosk should retry");
            }
            ingest
                .metrics
                .checkins
                .get_or_create(&WhyLabel { reason: code })
                .inc();
            envelope(json!({
                "ref": message.id,
                "status": status,
                "error": { "code": code, "message": e.public_message() },
            }))
        }
    };
    ingest.handle.publish(&result_path, answer).await;
}

fn status_is_valid(payload: &[u8]) -> bool {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_string))
        .is_some_and(|s| DEVICE_STATES.contains(&s.as_str()))
}

/// Keeps a device's status (the broker already retains it) so it survives a restart.
async fn store_status(ingest: &Ingest, topic: String, payload: Vec<u8>) {
    if let Err(e) = ingest.handle.store_retained(topic, payload).await {
        tracing::warn!(error = %e, "cannot store a device status");
    }
}

#[derive(Deserialize)]
struct AlertMessage {
    id: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    state: Option<String>,
}

/// Records an alert (raised or cleared) once per alert id, and refreshes `alerts/active`.
async fn alert(ingest: &Ingest, severity: &str, source: &str, payload: &[u8]) {
    let Ok(message) = serde_json::from_slice::<AlertMessage>(payload) else {
        ingest.invalid("bad_alert");
        return;
    };
    if message.id.is_empty() || message.id.len() > 128 {
        ingest.invalid("bad_alert");
        return;
    }
    let cleared = match message.state.as_deref() {
        None | Some("raised") => false,
        Some("cleared") => true,
        Some(_) => {
            ingest.invalid("bad_alert");
            return;
        }
    };
    let text: String = message.message.chars().take(MAX_ALERT_MESSAGE).collect();
    let (id, severity, source) = (message.id, severity.to_string(), source.to_string());
    let changed = ingest
        .handle
        .store
        .write(move |ctx| {
            let now = ctx.now_ms();
            match cleared {
                true => retained::clear_alert(ctx.conn(), &id, now),
                false => retained::raise_alert(ctx.conn(), &id, &severity, &source, &text, now),
            }
        })
        .await;
    match changed {
        Ok(true) => {
            if let Err(e) = publish_active_alerts(&ingest.handle).await {
                tracing::warn!(error = %e, "cannot publish the active alerts");
            }
        }
        // A redelivery, or a clear of an unknown alert: nothing changes.
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot record an alert"),
    }
}
