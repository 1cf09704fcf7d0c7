//! The print queue's worker: one task per printer with open jobs, sending them strictly in
//! order (each once the printer has taken the one before; the printer queues them), tracking
//! every job the printer holds to its end side by side, and retrying with backoff while the
//! printer is away.
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

/// What one send attempt came to.
enum Sent {
    /// The IPP printer holds the job now: it is tracked from here.
    Accepted(Box<Job>),
    /// The job ended (ZPL delivered, or failed): the next may go.
    Ended,
    /// It waits (a retry is scheduled): nothing more goes to this printer until it is due.
    Waiting,
}

/// Feeds `printer_id`'s jobs to it strictly in order, each as soon as the printer has taken
/// the one before (the printer queues them itself), while the jobs it holds are tracked side
/// by side; hands back to the supervisor when nothing is left to send or follow.
async fn serve_printer(deps: Arc<Deps>, printer_id: String, mut shutdown: watch::Receiver<bool>) {
    let interval = Duration::from_millis(deps.config.track_interval_ms);
    let mut trackers = tokio::task::JoinSet::new();
    let mut tracked = std::collections::HashSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let (jobs, printer) = match (
            print_jobs::open_of(&deps.store, printer_id.clone()).await,
            printers::get(&deps.store, printer_id.clone()).await,
        ) {
            (Ok(jobs), Ok(printer)) => (jobs, printer),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(printer = %printer_id, error = %e, "cannot read the print queue");
                break;
            }
        };
        let (held, waiting): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.state == "printing");
        for job in held {
            if tracked.insert(job.id) {
                trackers.spawn(follow(deps.clone(), printer.clone(), job));
            }
        }
        let sent = match waiting.into_iter().next() {
            Some(job) if !(job.state == "queued" && job.next_attempt_ms > now_ms()) => {
                tokio::select! {
                    sent = send(&deps, &printer, job) => sent,
                    _ = shutdown.changed() => break,
                }
            }
            _ => Sent::Waiting,
        };
        match sent {
            Sent::Accepted(job) => {
                if tracked.insert(job.id) {
                    trackers.spawn(follow(deps.clone(), printer.clone(), *job));
                }
            }
            Sent::Ended => {}
            Sent::Waiting if trackers.is_empty() => break,
            // Nothing to send now: look again when a tracked job ends, or shortly (a job may
            // have been queued meanwhile).
            Sent::Waiting => tokio::select! {
                ended = trackers.join_next() => {
                    if let Some(Ok(id)) = ended {
                        tracked.remove(&id);
                    }
                }
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => break,
            },
        }
    }
    // At shutdown a tracked job stays `printing` and is followed again after the restart.
    trackers.shutdown().await;
    // The supervisor looks again: a retry to schedule, or jobs queued meanwhile.
    deps.wake.notify_one();
}

/// Hands `job` to `printer`.
async fn send(deps: &Deps, printer: &Printer, job: Job) -> Sent {
    match printer.kind {
        PrinterKind::Ipp => send_ipp(deps, printer, job).await,
        PrinterKind::Zpl => send_zpl(deps, printer, job).await,
    }
}

async fn send_ipp(deps: &Deps, printer: &Printer, job: Job) -> Sent {
    let timeout = Duration::from_secs(deps.config.timeout_secs);
    let client = match ipp::Client::new(&printer.uri, timeout) {
        Ok(c) => c,
        Err(e) => return fail(deps, &job, format!("bad printer address: {e}")).await,
    };
    let name = job_name(deps, &job);
    if job.state == "sending" {
        // A previous attempt may have reached the printer before a crash or a lost answer.
        match client.find_job(&name).await {
            Ok(Some(id)) => {
                tracing::info!(
                    job = job.id,
                    printer_job = id,
                    "the printer already had this badge; tracking it"
                );
                return accepted(deps, &job, id).await;
            }
            Ok(None) => {}
            Err(e) => return retry(deps, &job, e.to_string()).await,
        }
    }
    let pdf = match render_pdf(deps, &job).await {
        Ok(pdf) => pdf,
        Err(reason) => return fail(deps, &job, reason).await,
    };
    if record(deps, &job, Update::Sending).await.is_none() {
        return Sent::Waiting;
    }
    match client.print_pdf(&name, pdf).await {
        Ok(id) => accepted(deps, &job, id).await,
        Err(IppError::Refused {
            transient: false,
            status,
            message,
        }) => {
            let reason = match message {
                Some(m) => format!("the printer refused the badge: {status} ({m})"),
                None => format!("the printer refused the badge: {status}"),
            };
            fail(deps, &job, reason).await
        }
        // A printer still busy with the badge before: soon again, without backing off (its
        // queue is full, it is not away).
        Err(e @ IppError::Refused { .. }) if e.is_busy() => {
            let at_ms = now_ms() + deps.config.track_interval_ms as i64;
            let _ = record(
                deps,
                &job,
                Update::Retry {
                    at_ms,
                    detail: e.to_string(),
                },
            )
            .await;
            Sent::Waiting
        }
        Err(e) => retry(deps, &job, e.to_string()).await,
    }
}

/// The printer took `job` as its job `id`.
async fn accepted(deps: &Deps, job: &Job, id: i32) -> Sent {
    let update = Update::Printing {
        printer_job_id: id.into(),
    };
    match record(deps, job, update).await {
        Some(job) => Sent::Accepted(Box::new(job)),
        None => Sent::Waiting,
    }
}

/// Follows `job`, which `printer` holds, to its end; the job's id.
async fn follow(deps: Arc<Deps>, printer: Printer, job: Job) -> i64 {
    let timeout = Duration::from_secs(deps.config.timeout_secs);
    let printer_job = job.printer_job_id.and_then(|id| i32::try_from(id).ok());
    match (ipp::Client::new(&printer.uri, timeout), printer_job) {
        (Ok(client), Some(printer_job)) => track(&deps, &client, &job, printer_job).await,
        (Err(e), _) => {
            fail(&deps, &job, format!("bad printer address: {e}")).await;
        }
        (_, None) => {
            fail(&deps, &job, "the printer's job id was lost".into()).await;
        }
    }
    job.id
}

/// Follows the printer's job to its end.
async fn track(deps: &Deps, client: &ipp::Client, job: &Job, printer_job: i32) {
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
                    return;
                }
                7 => {
                    fail(deps, job, "cancelled at the printer".into()).await;
                    return;
                }
                8 => {
                    let why = describe(&status.reasons, status.message.as_deref());
                    fail(deps, job, format!("the printer aborted the badge: {why}")).await;
                    return;
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
                fail(
                    deps,
                    job,
                    format!("the printer no longer knows its job {printer_job} (was it restarted?); reprint if no badge came out"),
                )
                .await;
                return;
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

async fn send_zpl(deps: &Deps, printer: &Printer, job: Job) -> Sent {
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
        return Sent::Waiting;
    }
    let timeout = Duration::from_secs(deps.config.timeout_secs);
    match tokio::time::timeout(timeout, send_raw(&printer.uri, label.as_bytes())).await {
        Ok(Ok(())) => {
            let _ = record(deps, &job, Update::Done).await;
            deps.metrics
                .jobs
                .get_or_create(&WhyLabel { reason: "done" })
                .inc();
            Sent::Ended
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

async fn retry(deps: &Deps, job: &Job, detail: String) -> Sent {
    let attempts = job.attempts.max(1) as u32;
    let backoff_ms = 1000u64
        .saturating_mul(1 << attempts.min(16).saturating_sub(1))
        .min(deps.config.retry_max_secs * 1000);
    deps.metrics.retries.inc();
    tracing::info!(job = job.id, printer = %job.printer_id, %detail, retry_in_ms = backoff_ms, "badge waits for its printer");
    let at_ms = now_ms() + backoff_ms as i64;
    let _ = record(deps, job, Update::Retry { at_ms, detail }).await;
    Sent::Waiting
}

async fn fail(deps: &Deps, job: &Job, reason: String) -> Sent {
    tracing::warn!(job = job.id, printer = %job.printer_id, %reason, "badge not printed");
    deps.metrics
        .jobs
        .get_or_create(&WhyLabel { reason: "failed" })
        .inc();
    let _ = record(deps, job, Update::Failed(reason)).await;
    Sent::Ended
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
