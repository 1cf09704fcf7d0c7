//! Badge printing: templates, rendering to PDF (IPP Everywhere) and ZPL (Zebra), the durable
//! print queue's worker, and printer health.
//!
//! Print jobs are this appliance's own outbox rows (`domain::print_jobs`), written in the same
//! transaction as the check-in that asks for a badge, and not ops: like signage, they are local
//! presentation (docs/architecture.md).

pub mod discover;
pub mod fonts;
pub mod ipp;
pub mod logo;
pub mod pdf;
pub mod template;
pub mod zpl;

/// Why a badge could not be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The label size cannot be a page.
    #[error("the label size cannot be drawn on; check the printer's media")]
    Media,
    /// The ticket code does not fit a QR code.
    #[error("the ticket code cannot be a QR code: {0}")]
    Qr(String),
    /// The PDF writer failed, or the logo could not be drawn.
    #[error("cannot draw the badge: {0}")]
    Pdf(String),
}

pub mod health;
pub mod worker;

use std::sync::Arc;

use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::config::PrintConfig;
use crate::domain::print_jobs::Job;
use crate::metrics::PrintMetrics;
use crate::mqtt::MqttHandle;
use crate::store::Store;
use template::Template;

/// What the rest of the daemon holds of printing: a way to wake the queue, and printer health.
#[derive(Clone, Default)]
pub struct Printing {
    wake: Arc<Notify>,
    probe_now: Arc<Notify>,
    /// The latest health of each printer.
    pub health: health::HealthView,
}

impl Printing {
    /// Tells the queue a job was committed (a check-in or a reprint).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The queue's wake-up signal, for transports that queue badges (MQTT check-ins).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Asks for a health check of every printer now (one was added or changed).
    pub fn probe(&self) {
        self.probe_now.notify_one();
    }
}

/// What the queue worker and the health checks need.
pub struct Deps {
    /// The store.
    pub store: Store,
    /// The event served.
    pub event_id: String,
    /// This appliance's node id (print jobs are named with it).
    pub node_id: String,
    /// `[print]`.
    pub config: PrintConfig,
    /// The badge template.
    pub template: Template,
    /// The fonts.
    pub fonts: fonts::Fonts,
    /// Counters.
    pub metrics: PrintMetrics,
    /// Publishing on MQTT, when it runs.
    pub mqtt: Option<MqttHandle>,
    wake: Arc<Notify>,
    probe_now: Arc<Notify>,
    health: health::HealthView,
}

impl Deps {
    /// Everything the tasks need, sharing `printing`'s signals and health view.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        event_id: String,
        node_id: String,
        config: PrintConfig,
        template: Template,
        metrics: PrintMetrics,
        mqtt: Option<MqttHandle>,
        printing: &Printing,
    ) -> Self {
        let mut fallbacks: Vec<std::path::PathBuf> = fonts::SYSTEM_FALLBACKS
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
        fallbacks.extend(config.font_paths());
        Self {
            store,
            event_id,
            node_id,
            fonts: fonts::Fonts::load(&fallbacks),
            config,
            template,
            metrics,
            mqtt,
            wake: printing.wake.clone(),
            probe_now: printing.probe_now.clone(),
            health: printing.health.clone(),
        }
    }
}

/// Tells the kiosk that asked for `job` how it stands, on its private
/// `kiosk/{kiosk}/print/result` (QoS 1).
async fn announce_job(deps: &Deps, job: &Job) {
    let (Some(mqtt), Some(kiosk)) = (&deps.mqtt, job.requested_by.strip_prefix("device:")) else {
        return;
    };
    let payload = crate::mqtt::envelope(json!({ "job": job }));
    mqtt.publish(&format!("kiosk/{kiosk}/print/result"), payload)
        .await;
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Starts the queue worker and the health checks on `tasks`.
pub fn start(deps: Deps, tasks: &mut tokio::task::JoinSet<()>, shutdown: watch::Receiver<bool>) {
    let deps = Arc::new(deps);
    tasks.spawn(worker::run(deps.clone(), shutdown.clone()));
    tasks.spawn(health::run(deps, shutdown));
}
