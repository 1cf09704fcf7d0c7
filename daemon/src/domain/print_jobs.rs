//! The print queue: one row per badge to print, written in the same transaction as the check-in
//! (or reprint) that asks for it, so a crash or a printer that is off never loses a badge. The
//! worker (`print::worker`) takes them in order per printer.
//!
//! States: `queued` (waiting its turn, or for the printer: `detail` says why) → `sending` (being
//! handed over) → `printing` (the IPP printer has it as job `printer_job_id`) → `done`; or
//! `failed` with the printer's reason; or `cancelled` when its printer is removed.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{DomainError, rfc3339};
use crate::print::template::Badge;
use crate::store::Store;

/// What a kiosk does about badges on a new check-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PrintMode {
    /// Print on every first check-in, unless the request says `"badge": "skip"`.
    #[default]
    Always,
    /// Print only when the request says `"badge": "print"` (staff ask the attendee).
    Ask,
    /// Never print from this kiosk.
    Never,
}

impl PrintMode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Ask => "ask",
            Self::Never => "never",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "ask" => Self::Ask,
            "never" => Self::Never,
            _ => Self::Always,
        }
    }
}

/// What a check-in request says about a badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadgeChoice {
    /// Print one (also for someone already checked in: that is staff asking for it).
    Print,
    /// Do not print.
    Skip,
}

/// A print job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// The job's id on this appliance.
    pub id: i64,
    /// The printer.
    pub printer_id: String,
    /// Whose badge.
    pub attendee_id: String,
    /// The check-in that asked for it (none for a reprint).
    pub checkin_id: Option<String>,
    /// `device:<id>` or `admin`.
    pub requested_by: String,
    /// `checkin` or `reprint`.
    pub reason: String,
    /// See the module doc.
    pub state: String,
    /// Send attempts so far.
    pub attempts: i64,
    /// The IPP printer's job id.
    pub printer_job_id: Option<i64>,
    /// Why it waits or failed, in the printer's words where it gave any.
    pub detail: Option<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// When the worker may next try it (ms since the epoch).
    #[serde(skip)]
    pub next_attempt_ms: i64,
}

impl Job {
    /// The short form put in a check-in's answer.
    pub fn summary(&self) -> Value {
        json!({
            "job_id": self.id,
            "printer_id": self.printer_id,
            "state": self.state,
            "detail": self.detail,
        })
    }
}

/// The kiosk's print setting.
pub(crate) fn mode_of(conn: &Connection, kiosk: &str) -> Result<PrintMode, DomainError> {
    let mode: Option<String> = conn
        .prepare_cached("SELECT print_mode FROM devices WHERE id = ?1")?
        .query_row(params![kiosk], |r| r.get(0))
        .optional()?;
    Ok(mode.map(|m| PrintMode::parse(&m)).unwrap_or_default())
}

/// Sets a kiosk's print setting.
pub async fn set_mode(store: &Store, kiosk: String, mode: PrintMode) -> Result<(), DomainError> {
    store
        .write(move |ctx| {
            let changed = ctx.conn().execute(
                "UPDATE devices SET print_mode = ?2 WHERE id = ?1 AND kind = 'kiosk' AND revoked_ms IS NULL",
                params![kiosk, mode.as_str()],
            )?;
            if changed == 0 {
                return Err(DomainError::NotFound(format!("no active kiosk `{kiosk}`")));
            }
            Ok(())
        })
        .await
}

/// What to do about a badge for a check-in by `kiosk`: the job's summary when one was queued;
/// a `not_printed` note when one was asked for and cannot be; `available` with the printer when
/// none was printed but the kiosk has a printer (staff may offer one); `null` otherwise. Runs
/// inside the check-in's transaction.
pub(crate) fn for_checkin(
    conn: &Connection,
    kiosk: &str,
    attendee_id: &str,
    checkin_id: &str,
    first: bool,
    choice: Option<BadgeChoice>,
    now_ms: u64,
) -> Result<Value, DomainError> {
    let mode = mode_of(conn, kiosk)?;
    if mode == PrintMode::Never {
        return Ok(match choice {
            Some(BadgeChoice::Print) => not_printed(format!(
                "kiosk `{kiosk}` is set to never print; change its print setting in the console"
            )),
            _ => Value::Null,
        });
    }
    let wanted = match (choice, mode) {
        (Some(BadgeChoice::Skip), _) => false,
        (Some(BadgeChoice::Print), _) => true,
        // A second check-in of the same person never prints by itself.
        (None, PrintMode::Always) => first,
        (None, _) => false,
    };
    let printer = super::printers::for_kiosk(conn, kiosk)?;
    match (wanted, printer) {
        (true, Some(printer)) => {
            let job = enqueue(
                conn,
                &printer,
                attendee_id,
                Some(checkin_id),
                &format!("device:{kiosk}"),
                "checkin",
                now_ms,
            )?;
            Ok(job.summary())
        }
        (true, None) if choice.is_some() => Ok(not_printed(format!(
            "no printer prints for kiosk `{kiosk}`; add the kiosk to a printer in the console"
        ))),
        // Nothing printed, but the kiosk has a printer: staff may offer the badge.
        (_, Some(printer)) => Ok(json!({ "state": "available", "printer_id": printer })),
        (_, None) => Ok(Value::Null),
    }
}

fn not_printed(reason: String) -> Value {
    json!({ "state": "not_printed", "detail": reason })
}

/// Queues a badge for `attendee_id` on `printer_id`.
pub(crate) fn enqueue(
    conn: &Connection,
    printer_id: &str,
    attendee_id: &str,
    checkin_id: Option<&str>,
    requested_by: &str,
    reason: &str,
    now_ms: u64,
) -> Result<Job, DomainError> {
    conn.prepare_cached(
        "INSERT INTO print_jobs (printer_id, attendee_id, checkin_id, requested_by, reason, state,
             next_attempt_ms, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?6, ?6)",
    )?
    .execute(params![
        printer_id,
        attendee_id,
        checkin_id,
        requested_by,
        reason,
        now_ms as i64
    ])?;
    let id = conn.last_insert_rowid();
    one(conn, id)?.ok_or_else(|| DomainError::NotFound(format!("print job {id} vanished")))
}

/// A reprint asked for by staff: `kiosk` (its own printer) or the admin (`printer_id` needed).
pub async fn reprint(
    store: &Store,
    event_id: &str,
    requested_by: String,
    kiosk: Option<String>,
    attendee_id: String,
    printer_id: Option<String>,
) -> Result<Job, DomainError> {
    let event_id = event_id.to_string();
    store
        .write(move |ctx| {
            let conn = ctx.conn();
            let known: Option<String> = conn
                .prepare_cached("SELECT id FROM attendees WHERE id = ?1 AND event_id = ?2 AND deleted = 0")?
                .query_row(params![attendee_id, event_id], |r| r.get(0))
                .optional()?;
            if known.is_none() {
                return Err(DomainError::NotFound(format!(
                    "no attendee `{attendee_id}` in event `{event_id}`"
                )));
            }
            let printer = match (printer_id, &kiosk) {
                (Some(p), None) => super::printers::one(conn, &p)?
                    .map(|p| p.id)
                    .ok_or_else(|| DomainError::NotFound(format!("no printer `{p}`")))?,
                (Some(p), Some(k)) => {
                    let own = super::printers::for_kiosk(conn, k)?;
                    if own.as_deref() != Some(p.as_str()) {
                        return Err(DomainError::Invalid(format!(
                            "printer `{p}` does not print for kiosk `{k}`; leave `printer_id` out to use the kiosk's own"
                        )));
                    }
                    p
                }
                (None, Some(k)) => super::printers::for_kiosk(conn, k)?.ok_or_else(|| {
                    DomainError::Invalid(format!(
                        "no printer prints for kiosk `{k}`; add the kiosk to a printer in the console"
                    ))
                })?,
                (None, None) => {
                    return Err(DomainError::Invalid(
                        "give `printer_id`: the admin has no printer of its own".into(),
                    ));
                }
            };
            let now = ctx.now_ms();
            enqueue(conn, &printer, &attendee_id, None, &requested_by, "reprint", now)
        })
        .await
}

/// One job; `kiosk` limits it to that kiosk's own requests.
pub async fn get(store: &Store, id: i64, kiosk: Option<String>) -> Result<Job, DomainError> {
    store
        .read(move |conn| {
            let job = one(conn, id)?.filter(|j| {
                kiosk
                    .as_ref()
                    .is_none_or(|k| j.requested_by == format!("device:{k}"))
            });
            job.ok_or_else(|| DomainError::NotFound(format!("no print job {id}")))
        })
        .await
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// Only this printer's.
    #[serde(default)]
    pub printer: Option<String>,
    /// Only this attendee's.
    #[serde(default)]
    pub attendee: Option<String>,
    /// Only in this state.
    #[serde(default)]
    pub state: Option<String>,
    /// At most this many, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Jobs, newest first; `kiosk` limits them to that kiosk's own requests.
pub async fn list(
    store: &Store,
    filter: JobFilter,
    kiosk: Option<String>,
) -> Result<Vec<Job>, DomainError> {
    let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
    let by = kiosk.map(|k| format!("device:{k}"));
    store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM print_jobs
                 WHERE (?1 IS NULL OR printer_id = ?1) AND (?2 IS NULL OR attendee_id = ?2)
                   AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR requested_by = ?4)
                 ORDER BY id DESC LIMIT ?5"
            ))?;
            let rows = stmt.query_map(
                params![filter.printer, filter.attendee, filter.state, by, limit],
                row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}

/// `printer_id`'s open jobs (queued, sending, printing), oldest first.
pub async fn open_of(store: &Store, printer_id: String) -> Result<Vec<Job>, DomainError> {
    store
        .read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM print_jobs
                 WHERE printer_id = ?1 AND state IN ('queued', 'sending', 'printing')
                 ORDER BY id"
            ))?;
            let rows = stmt.query_map(params![printer_id], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}

/// The printers with open jobs, and when each next wants attention (ms since the epoch).
pub async fn open_printers(store: &Store) -> Result<Vec<(String, i64)>, DomainError> {
    store
        .read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT printer_id, min(next_attempt_ms) FROM print_jobs
                 WHERE state IN ('queued', 'sending', 'printing') GROUP BY printer_id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}

/// Makes `printer_id`'s waiting jobs due now (the printer is back).
pub async fn due_now(store: &Store, printer_id: String) -> Result<(), DomainError> {
    store
        .write(move |ctx| {
            let now = ctx.now_ms() as i64;
            ctx.conn().execute(
                "UPDATE print_jobs SET next_attempt_ms = ?2
                 WHERE printer_id = ?1 AND state = 'queued' AND next_attempt_ms > ?2",
                params![printer_id, now],
            )?;
            Ok(())
        })
        .await
}

/// How many jobs are in each state (for metrics and the console).
pub async fn counts(store: &Store) -> Result<Vec<(String, i64)>, DomainError> {
    store
        .read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT state, count(*) FROM print_jobs GROUP BY state")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}

/// A change of a job's state by the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// About to hand it over: counts an attempt.
    Sending,
    /// The IPP printer accepted it as its job `printer_job_id`.
    Printing {
        /// The printer's job id.
        printer_job_id: i64,
    },
    /// Printed (IPP: completed; ZPL: delivered).
    Done,
    /// Waits: try again at `at_ms`, and say why.
    Retry {
        /// When to try again.
        at_ms: i64,
        /// Why it waits.
        detail: String,
    },
    /// Still with the printer (or about to be): only the reason changes.
    Detail(String),
    /// Will not print: the printer's reason.
    Failed(String),
}

/// Applies `update` to job `id`: the job as it now is, and whether anything changed.
pub async fn update(store: &Store, id: i64, update: Update) -> Result<(Job, bool), DomainError> {
    store
        .write(move |ctx| {
            let now = ctx.now_ms() as i64;
            let conn = ctx.conn();
            let sql = match &update {
                Update::Sending => "UPDATE print_jobs SET state = 'sending', attempts = attempts + 1, updated_ms = ?2 WHERE id = ?1",
                Update::Printing { .. } => "UPDATE print_jobs SET state = 'printing', printer_job_id = ?3, detail = NULL, updated_ms = ?2 WHERE id = ?1",
                Update::Done => "UPDATE print_jobs SET state = 'done', detail = NULL, updated_ms = ?2 WHERE id = ?1",
                Update::Retry { .. } => "UPDATE print_jobs SET state = 'queued', next_attempt_ms = ?3, detail = ?4, updated_ms = ?2 WHERE id = ?1",
                Update::Detail(_) => "UPDATE print_jobs SET detail = ?4, updated_ms = ?2 WHERE id = ?1 AND detail IS NOT ?4",
                Update::Failed(_) => "UPDATE print_jobs SET state = 'failed', detail = ?4, updated_ms = ?2 WHERE id = ?1",
            };
            let (number, text): (Option<i64>, Option<&str>) = match &update {
                Update::Printing { printer_job_id } => (Some(*printer_job_id), None),
                Update::Retry { at_ms, detail } => (Some(*at_ms), Some(detail)),
                Update::Detail(d) | Update::Failed(d) => (None, Some(d)),
                Update::Sending | Update::Done => (None, None),
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let expected = stmt.parameter_count();
            // Each statement takes the parameters it names; rusqlite refuses extra ones.
            let all: [&dyn rusqlite::ToSql; 4] = [&id, &now, &number, &text];
            let changed = stmt.execute(&all[..expected])? > 0;
            let job = one(conn, id)?.ok_or_else(|| DomainError::NotFound(format!("no print job {id}")))?;
            Ok((job, changed))
        })
        .await
}

/// What job `job_id`'s badge shows: the attendee now (a name corrected at the desk prints
/// corrected) and the event's name.
pub async fn badge(
    store: &Store,
    event_id: &str,
    attendee_id: String,
) -> Result<Badge, DomainError> {
    let event_id = event_id.to_string();
    store
        .read(move |conn| {
            let event_name: String = conn
                .prepare_cached("SELECT name FROM events WHERE id = ?1")?
                .query_row(params![event_id], |r| r.get(0))
                .optional()?
                .unwrap_or_default();
            conn.prepare_cached(
                "SELECT name, company, role, ticket_code FROM attendees WHERE id = ?1 AND deleted = 0",
            )?
            .query_row(params![attendee_id], |r| {
                Ok(Badge {
                    name: r.get(0)?,
                    company: r.get(1)?,
                    role: r.get(2)?,
                    ticket_code: r.get(3)?,
                    event_name: event_name.clone(),
                })
            })
            .optional()?
            .ok_or_else(|| {
                DomainError::NotFound(format!(
                    "attendee `{attendee_id}` is no longer registered; nothing to print"
                ))
            })
        })
        .await
}

const COLUMNS: &str = "id, printer_id, attendee_id, checkin_id, requested_by, reason, state, attempts, \
                       printer_job_id, detail, created_ms, updated_ms, next_attempt_ms";

fn one(conn: &Connection, id: i64) -> Result<Option<Job>, DomainError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM print_jobs WHERE id = ?1"))?
        .query_row(params![id], row)
        .optional()?)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        printer_id: r.get(1)?,
        attendee_id: r.get(2)?,
        checkin_id: r.get(3)?,
        requested_by: r.get(4)?,
        reason: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        printer_job_id: r.get(8)?,
        detail: r.get(9)?,
        created_at: rfc3339(r.get(10)?),
        updated_at: rfc3339(r.get(11)?),
        next_attempt_ms: r.get(12)?,
    })
}
