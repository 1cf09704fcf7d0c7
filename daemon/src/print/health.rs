//! Printer health: every `print.probe_interval_secs`, each printer is asked how it is (IPP
//! Get-Printer-Attributes; for ZPL, whether its port takes a connection). A change is kept for
//! `/api/v1/status`, `/metrics` and the console, published as the retained
//! `printer/{id}/status` on MQTT, and raised as an alert when the printer needs attention. A
//! printer that comes back makes its waiting jobs due at once.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use super::Deps;
use super::ipp;
use crate::domain::print_jobs;
use crate::domain::printers::{self, Printer, PrinterKind, ZPL_PORT};
use crate::metrics::PrinterLabel;

/// Printer-state reasons that stop badges until someone acts (RFC 8011 and PWG 5100.9).
const ATTENTION: &[&str] = &[
    "media-empty",
    "media-needed",
    "media-jam",
    "marker-supply-empty",
    "toner-empty",
    "cover-open",
    "door-open",
    "input-tray-missing",
    "output-area-full",
    "paused",
    "offline",
    "shutdown",
];

/// Whether a printer-state reason stops badges: an `-error`, or a reason of [`ATTENTION`] given
/// bare (as a `-warning` or `-report` it is only a heads-up).
fn stops_badges(reason: &str) -> bool {
    reason.ends_with("-error") || ATTENTION.contains(&reason)
}

/// How one printer is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrinterHealth {
    /// `idle`, `printing`, `stopped` or `offline`.
    pub state: &'static str,
    /// The printer's reasons (`media-empty`, `media-jam`, ...), `-error`/`-warning` suffixes
    /// as it gave them.
    pub reasons: Vec<String>,
    /// Its own words, when it gave any.
    pub message: Option<String>,
    /// Supplies: name and level in percent (-1: unknown).
    pub markers: Vec<Marker>,
    /// Whether badges cannot print until someone acts.
    pub needs_attention: bool,
    /// When it was last asked (RFC 3339).
    pub checked_at: String,
}

/// A supply level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Marker {
    /// E.g. `black ink` or `labels`.
    pub name: String,
    /// Percent; -1 when the printer does not know.
    pub level: i32,
}

/// The latest health of every printer, by id.
#[derive(Clone, Default)]
pub struct HealthView(Arc<RwLock<BTreeMap<String, PrinterHealth>>>);

impl HealthView {
    /// The latest health of each printer checked so far.
    pub fn snapshot(&self) -> BTreeMap<String, PrinterHealth> {
        self.0.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Stores `health` for `id`; the previous one.
    fn set(&self, id: &str, health: PrinterHealth) -> Option<PrinterHealth> {
        self.0.write().ok()?.insert(id.to_string(), health)
    }

    fn retain(&self, ids: &[String]) -> Vec<String> {
        let Ok(mut map) = self.0.write() else {
            return Vec::new();
        };
        let gone: Vec<String> = map.keys().filter(|k| !ids.contains(k)).cloned().collect();
        for id in &gone {
            map.remove(id);
        }
        gone
    }
}

/// Runs until `shutdown`.
pub async fn run(deps: Arc<Deps>, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_secs(deps.config.probe_interval_secs);
    loop {
        let list = printers::list(&deps.store).await.unwrap_or_default();
        let ids: Vec<String> = list.iter().map(|p| p.id.clone()).collect();
        for gone in deps.health.retain(&ids) {
            deps.metrics.printer_up.remove(&PrinterLabel {
                printer: gone.clone(),
            });
            if let Some(mqtt) = &deps.mqtt {
                let _ = mqtt
                    .delete_retained(&format!("printer/{gone}/status"))
                    .await;
            }
        }
        let probes = list.iter().map(|p| probe(&deps, p));
        let results = futures::future::join_all(probes).await;
        for (printer, health) in list.iter().zip(results) {
            changed(&deps, printer, health).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = deps.probe_now.notified() => {}
            _ = shutdown.changed() => break,
        }
    }
}

async fn probe(deps: &Deps, printer: &Printer) -> PrinterHealth {
    let timeout = Duration::from_secs(deps.config.timeout_secs.min(5));
    let checked_at = crate::domain::rfc3339(super::now_ms());
    let offline = |why: String| PrinterHealth {
        state: "offline",
        reasons: vec!["offline".into()],
        message: Some(why),
        markers: Vec::new(),
        needs_attention: true,
        checked_at: checked_at.clone(),
    };
    match printer.kind {
        PrinterKind::Ipp => {
            let status = match ipp::Client::new(&printer.uri, timeout) {
                Ok(client) => client.printer().await,
                Err(e) => Err(e),
            };
            match status {
                Ok(s) => {
                    let state = match s.state {
                        3 => "idle",
                        4 => "printing",
                        _ => "stopped",
                    };
                    let needs_attention = state == "stopped"
                        || !s.accepting
                        || s.reasons.iter().any(|r| stops_badges(r));
                    PrinterHealth {
                        state,
                        reasons: s.reasons,
                        message: s.message,
                        markers: s
                            .markers
                            .into_iter()
                            .map(|(name, level)| Marker { name, level })
                            .collect(),
                        needs_attention,
                        checked_at,
                    }
                }
                Err(e) => offline(e.to_string()),
            }
        }
        PrinterKind::Zpl => {
            let target = reqwest::Url::parse(&printer.uri).ok().and_then(|u| {
                Some((
                    u.host_str()?.trim_matches(['[', ']']).to_string(),
                    u.port().unwrap_or(ZPL_PORT),
                ))
            });
            let Some((host, port)) = target else {
                return offline(format!("bad address `{}`", printer.uri));
            };
            match tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            {
                Ok(Ok(_)) => PrinterHealth {
                    state: "idle",
                    reasons: Vec::new(),
                    message: None,
                    markers: Vec::new(),
                    needs_attention: false,
                    checked_at,
                },
                Ok(Err(e)) => offline(format!("printer unreachable: {e}")),
                Err(_) => offline(format!("no answer within {}s", timeout.as_secs())),
            }
        }
    }
}

/// Keeps `health`; when it differs from the last (ignoring the time), publishes it and acts.
async fn changed(deps: &Deps, printer: &Printer, health: PrinterHealth) {
    let up = !health.needs_attention;
    deps.metrics
        .printer_up
        .get_or_create(&PrinterLabel {
            printer: printer.id.clone(),
        })
        .set(i64::from(up));
    let previous = deps.health.set(&printer.id, health.clone());
    let same = previous.as_ref().is_some_and(|p| {
        p.state == health.state && p.reasons == health.reasons && p.markers == health.markers
    });
    if same {
        return;
    }
    let was_up = previous.as_ref().is_some_and(|p| !p.needs_attention);
    tracing::info!(printer = %printer.id, state = health.state, reasons = ?health.reasons, "printer state changed");
    if up && !was_up {
        // Back: its waiting jobs go now, not at their next backoff.
        let _ = print_jobs::due_now(&deps.store, printer.id.clone()).await;
        deps.wake.notify_one();
    }
    let Some(mqtt) = &deps.mqtt else { return };
    let payload = crate::mqtt::envelope(json!({
        "printer": printer.id,
        "name": printer.name,
        "kind": printer.kind.as_str(),
        "state": health.state,
        "reasons": health.reasons,
        "message": health.message,
        "markers": health.markers,
        "needs_attention": health.needs_attention,
    }));
    if let Err(e) = mqtt
        .set_retained(&format!("printer/{}/status", printer.id), payload)
        .await
    {
        tracing::warn!(printer = %printer.id, error = %e, "cannot publish printer status");
    }
    if health.needs_attention && (was_up || previous.is_none()) {
        let why = match (&health.message, health.reasons.is_empty()) {
            (Some(m), _) => m.clone(),
            (None, false) => health.reasons.join(", "),
            (None, true) => health.state.to_string(),
        };
        let alert_id = format!("printer-{}-{}", printer.id, super::now_ms());
        let text = format!("printer `{}` needs attention: {why}", printer.id);
        if let Err(e) = mqtt
            .raise_alert("warning", &printer.id, &alert_id, &text)
            .await
        {
            tracing::warn!(printer = %printer.id, error = %e, "cannot raise the printer alert");
        }
    }
}
