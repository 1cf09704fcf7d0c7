//! The print queue's worker: one task per printer with open jobs, taking them strictly in order,
//! each sent, tracked to completion, or retried with backoff while the printer is away.
//!
//! Exactly once across a crash: an IPP job is submitted under a name made of this appliance's
//! node id and the job's id, so a job found in `sending` after a restart is first looked up on
//! the printer (Get-Jobs) and adopted if the printer has it. Raw ZPL has no job ids: a ZPL job
//! in flight at the moment of a crash is sent again (a second badge beats a lost one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ipp::{self, IppError};
use super::{Deps, now_ms};
use crate::domain::print_jobs::{self, Job, Update};
use crate::domain::printers::{self, Printer, PrinterKind, ZPL_PORT};
use crate::metrics::WhyLabel;

/// Runs until `shutdown`: starts a task for each printer whose next job is due, and sleeps
/// until woken (a job queued, a printer back) or the earliest retry is due.
pub async fn run(deps: Arc<Deps>, mut shutdown: watch::Receiver<bool>) {
    let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        running.retain(|_, task| !task.is_finished());
        let now = now_ms();
        let mut next = now + 30_000;
        match print_jobs::open_printers(&deps.store).await {
            Ok(open) => {
                for (printer, due) in open {
                    if running.contains_key(&printer) {
                        continue;
                    }
                    if due <= now {
                        let task = tokio::spawn(serve_printer(
                            deps.clone(),
                            printer.clone(),
                            shutdown.clone(),
                        ));
                        running.insert(printer, task);
                    } else {
                        next = next.min(due);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the print queue; trying again"),
        }
        let wait = Duration::from_millis(next.saturating_sub(now_ms()).max(50) as u64);
        tokio::select! {
            _ = deps.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => break,
        }
    }
    // Each printer task stops at its next step on the same signal; what it decided is stored.
    for (_, task) in running {
        let _ = task.await;
    }
}

/// Works through `printer_id`'s open jobs in order until none is due, then hands back to the
/// supervisor.
async fn serve_printer(deps: Arc<Deps>, printer_id: String, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            break;
        }
        let job = match print_jobs::next_open(&deps.store, printer_id.clone()).await {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(printer = %printer_id, error = %e, "cannot read the print queue");
                break;
            }
        };
        if job.state == "queued" && job.next_attempt_ms > now_ms() {
            break;
        }
        let printer = match printers::get(&deps.store, printer_id.clone()).await {
            Ok(p) => p,
            Err(_) => break,
        };
        let finished = tokio::select! {
            finished = work(&deps, &printer, job) => finished,
            _ = shutdown.changed() => false,
        };
        if !finished {
            break;
        }
    }
    // The supervisor looks again: a retry to schedule, or jobs queued meanwhile.
    deps.wake.notify_one();
}

/// Takes `job` one step to an end; `true` when the job ended (the next may go), `false` when
/// it waits (retry scheduled).
async fn work(deps: &Deps, printer: &Printer, job: Job) -> bool {
    match printer.kind {
        PrinterKind::Ipp => work_ipp(deps, printer, job).await,
        PrinterKind::Zpl => work_zpl(deps, printer, job).await,
    }
}

async fn work_ipp(deps: &Deps, printer: &Printer, job: Job) -> bool {
    let timeout = Duration::from_secs(deps.config.timeout_secs);
    let client = match ipp::Client::new(&printer.uri, timeout) {
        Ok(c) => c,
        Err(e) => return fail(deps, &job, format!("bad printer address: {e}")).await,
    };
    let name = job_name(deps, &job);
    let mut printer_job = job.printer_job_id.and_then(|id| i32::try_from(id).ok());
    if printer_job.is_none() && job.state == "sending" {
        // A previous attempt may have reached the printer before a crash or a lost answer.
        match client.find_job(&name).await {
            Ok(Some(id)) => {
                tracing::info!(
                    job = job.id,
                    printer_job = id,
                    "the printer already had this badge; tracking it"
                );
                printer_job = Some(id);
                let _ = record(
                    deps,
                    &job,
                    Update::Printing {
                        printer_job_id: id.into(),
                    },
                )
                .await;
            }
            Ok(None) => {}
            Err(e) => return retry(deps, &job, e.to_string()).await,
        }
    }
    let printer_job = match printer_job {
        Some(id) => id,
        None => {
            let pdf = match render_pdf(deps, &job).await {
                Ok(pdf) => pdf,
                Err(reason) => return fail(deps, &job, reason).await,
            };
            if record(deps, &job, Update::Sending).await.is_none() {
                return false;
            }
            match client.print_pdf(&name, pdf).await {
                Ok(id) => {
                    let _ = record(
                        deps,
                        &job,
                        Update::Printing {
                            printer_job_id: id.into(),
                        },
                    )
                    .await;
                    id
                }
                Err(IppError::Refused {
                    transient: false,
                    status,
                    message,
                }) => {
                    let reason = match message {
                        Some(m) => format!("the printer refused the badge: {status} ({m})"),
                        None => format!("the printer refused the badge: {status}"),
                    };
                    return fail(deps, &job, reason).await;
                }
                Err(e) => return retry(deps, &job, e.to_string()).await,
            }
        }
    };
    track(deps, &client, &job, printer_job).await
}

/// Follows the printer's job to its end.
async fn track(deps: &Deps, client: &ipp::Client, job: &Job, printer_job: i32) -> bool {
    let interval = Duration::from_millis(deps.config.track_interval_ms);
    loop {
        match client.job(printer_job).await {
            Ok(status) => match status.state {
                9 => {
                    let _ = record(deps, job, Update::Done).await;
                    deps.metrics
                        .jobs
                        .get_or_create(&WhyLabel { reason: "done" })
                        .inc();
                    return true;
                }
                7 => return fail(deps, job, "cancelled at the printer".into()).await,
                8 => {
                    let why = describe(&status.reasons, status.message.as_deref());
                    return fail(deps, job, format!("the printer aborted the badge: {why}")).await;
                }
                _ => {
                    let waiting = status
                        .reasons
                        .iter()
                        .any(|r| r != "none" && r != "job-printing" && r != "job-incoming");
                    if waiting {
                        let why = describe(&status.reasons, status.message.as_deref());
                        let _ = record(deps, job, Update::Detail(format!("at the printer: {why}")))
                            .await;
                    }
                }
            },
            Err(IppError::Refused { status, .. }) if status == "client-error-not-found" => {
                return fail(
                    deps,
                    job,
                    format!("the printer no longer knows its job {printer_job} (was it restarted?); reprint if no badge came out"),
                )
                .await;
            }
            Err(e) => {
                let _ = record(
                    deps,
                    job,
                    Update::Detail(format!("waiting for the printer: {e}")),
                )
                .await;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn work_zpl(deps: &Deps, printer: &Printer, job: Job) -> bool {
    let badge = match print_jobs::badge(&deps.store, &deps.event_id, job.attendee_id.clone()).await
    {
        Ok(b) => b,
        Err(e) => return fail(deps, &job, e.to_string()).await,
    };
    let label = match super::zpl::render(
        &deps.template,
        &badge,
        &printer.media,
        &deps.fonts,
        printer.zpl_font.as_deref(),
    ) {
        Ok(l) => l,
        Err(e) => return fail(deps, &job, e.to_string()).await,
    };
    if record(deps, &job, Update::Sending).await.is_none() {
        return false;
    }
    let timeout = Duration::from_secs(deps.config.timeout_secs);
    match tokio::time::timeout(timeout, send_raw(&printer.uri, label.as_bytes())).await {
        Ok(Ok(())) => {
            let _ = record(deps, &job, Update::Done).await;
            deps.metrics
                .jobs
                .get_or_create(&WhyLabel { reason: "done" })
                .inc();
            true
        }
        Ok(Err(e)) => retry(deps, &job, format!("printer unreachable: {e}")).await,
        Err(_) => {
            retry(
                deps,
                &job,
                format!(
                    "printer did not take the label within {}s",
                    timeout.as_secs()
                ),
            )
            .await
        }
    }
}

/// Writes `data` to a raw printer port (`tcp://host[:9100]`) and closes the connection.
async fn send_raw(uri: &str, data: &[u8]) -> std::io::Result<()> {
    let url = reqwest::Url::parse(uri).map_err(std::io::Error::other)?;
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port().unwrap_or(ZPL_PORT);
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    stream.write_all(data).await?;
    stream.shutdown().await
}

async fn render_pdf(deps: &Deps, job: &Job) -> Result<Vec<u8>, String> {
    let badge = print_jobs::badge(&deps.store, &deps.event_id, job.attendee_id.clone())
        .await
        .map_err(|e| e.to_string())?;
    let printer = printers::get(&deps.store, job.printer_id.clone())
        .await
        .map_err(|e| e.to_string())?;
    let (template, fonts) = (deps.template.clone(), deps.fonts.clone());
    // Shaping and font subsetting take milliseconds of CPU: off the async workers.
    tokio::task::spawn_blocking(move || {
        super::pdf::render(&template, &badge, &printer.media, &fonts)
    })
    .await
    .map_err(|e| format!("the badge renderer failed: {e}"))?
    .map_err(|e| e.to_string())
}

/// The name the job is submitted under: unique per appliance and job.
fn job_name(deps: &Deps, job: &Job) -> String {
    format!("venue-badge-{}-{}", deps.node_id, job.id)
}

fn describe(reasons: &[String], message: Option<&str>) -> String {
    let reasons: Vec<&str> = reasons
        .iter()
        .map(String::as_str)
        .filter(|r| *r != "none")
        .collect();
    match (reasons.is_empty(), message) {
        (false, Some(m)) => format!("{} ({m})", reasons.join(", ")),
        (false, None) => reasons.join(", "),
        (true, Some(m)) => m.to_string(),
        (true, None) => "no reason given".into(),
    }
}

async fn retry(deps: &Deps, job: &Job, detail: String) -> bool {
    let attempts = job.attempts.max(1) as u32;
    let backoff_ms = 1000u64
        .saturating_mul(1 << attempts.min(16).saturating_sub(1))
        .min(deps.config.retry_max_secs * 1000);
    deps.metrics.retries.inc();
    tracing::info!(job = job.id, printer = %job.printer_id, %detail, retry_in_ms = backoff_ms, "badge waits for its printer");
    let at_ms = now_ms() + backoff_ms as i64;
    let _ = record(deps, job, Update::Retry { at_ms, detail }).await;
    false
}

async fn fail(deps: &Deps, job: &Job, reason: String) -> bool {
    tracing::warn!(job = job.id, printer = %job.printer_id, %reason, "badge not printed");
    deps.metrics
        .jobs
        .get_or_create(&WhyLabel { reason: "failed" })
        .inc();
    let _ = record(deps, job, Update::Failed(reason)).await;
    true
}

/// Stores `update` and tells the kiosk that asked (MQTT); `None` when it could not be stored.
async fn record(deps: &Deps, job: &Job, update: Update) -> Option<Job> {
    match print_jobs::update(&deps.store, job.id, update).await {
        Ok((now, changed)) => {
            if changed {
                super::announce_job(deps, &now).await;
            }
            Some(now)
        }
        Err(e) => {
            tracing::warn!(job = job.id, error = %e, "cannot store a print job's state");
            None
        }
    }
}
