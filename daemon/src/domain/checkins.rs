//! Check-ins from kiosks: idempotent under the kiosk's key, one op per new check-in.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use serde_json::json;

use super::idempotency::{self, Stored};
use super::print_jobs::{self, BadgeChoice};
use super::{DomainError, rfc3339};
use crate::oplog::CHECKIN_RECORD;
use crate::store::Store;

/// A check-in request: exactly one of `attendee_id` or `ticket_code`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    /// The attendee's id.
    #[serde(default)]
    pub attendee_id: Option<String>,
    /// The code printed on the ticket (QR or barcode).
    #[serde(default)]
    pub ticket_code: Option<String>,
    /// Print a badge or not; when absent, the kiosk's print setting decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<BadgeChoice>,
}

/// The answer: HTTP status and body.
#[derive(Debug, Clone)]
pub struct CheckinOutcome {
    /// 201 for a new check-in, 200 for an attendee already checked in or a replayed key.
    pub status: u16,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Whether this answer was replayed from an earlier request with the same key.
    pub replayed: bool,
    /// Whether a badge was queued for printing (the print worker is to be woken).
    pub badge_queued: bool,
}

/// Records a check-in by `device_id` under `key`, or replays the answer first given for `key`.
pub async fn check_in(
    store: &Store,
    event_id: &str,
    device_id: &str,
    key: &str,
    request: CheckinRequest,
) -> Result<CheckinOutcome, DomainError> {
    idempotency::validate_key(key)?;
    let target = match (&request.attendee_id, &request.ticket_code) {
        (Some(id), None) => Target::Id(id.clone()),
        (None, Some(code)) => Target::Ticket(code.clone()),
        _ => {
            return Err(DomainError::Invalid(
                "give exactly one of `attendee_id` or `ticket_code`".into(),
            ));
        }
    };
    let hash = idempotency::request_hash(&serde_json::to_value(&request).unwrap_or_default());
    let principal = format!("device:{device_id}");
    let choice = request.badge;
    let (event_id, device_id, key) = (event_id.to_string(), device_id.to_string(), key.to_string());
    store
        .write(move |ctx| {
            if let Some(stored) = idempotency::get(ctx.conn(), &principal, &key)? {
                if stored.request_hash != hash {
                    return Err(DomainError::KeyReused(key));
                }
                return Ok(CheckinOutcome {
                    status: stored.status,
                    body: stored.response,
                    replayed: true,
                    badge_queued: false,
                });
            }
            // Unknown attendees are not remembered under the key: a retry after the attendee
            // list is imported must succeed.
            let attendee = find_attendee(ctx.conn(), &event_id, &target)?;
            let (status, mut body, checkin_id) = match existing_checkin(ctx.conn(), &attendee.id)? {
                Some(existing) => {
                    let id = existing.id.clone();
                    (200, answer(&attendee, &existing, true), id)
                }
                None => {
                    let op = ctx.new_op(
                        &event_id,
                        CHECKIN_RECORD,
                        &attendee.id,
                        json!({ "device_id": device_id }),
                    );
                    let fresh = Existing {
                        id: op.id.to_string(),
                        at_ms: op.hlc.wall_ms as i64,
                        device_id: Some(device_id.clone()),
                    };
                    ctx.apply_owned(op)?;
                    let id = fresh.id.clone();
                    (201, answer(&attendee, &fresh, false), id)
                }
            };
            // The badge's job is written in this transaction: committed with the check-in, or
            // not at all.
            let now = ctx.now_ms();
            body["badge"] = print_jobs::for_checkin(
                ctx.conn(),
                &device_id,
                &attendee.id,
                &checkin_id,
                status == 201,
                choice,
                now,
            )?;
            let badge_queued = body["badge"]["job_id"].is_i64();
            let stored = Stored {
                request_hash: hash,
                status,
                response: body.clone(),
            };
            idempotency::put(ctx.conn(), &principal, &key, &stored, ctx.now_ms())?;
            Ok(CheckinOutcome {
                status,
                body,
                replayed: false,
                badge_queued,
            })
        })
        .await
}

enum Target {
    Id(String),
    Ticket(String),
}

struct Attendee {
    id: String,
    name: String,
    company: Option<String>,
    ticket_code: Option<String>,
}

struct Existing {
    id: String,
    at_ms: i64,
    device_id: Option<String>,
}

fn find_attendee(
    conn: &Connection,
    event_id: &str,
    target: &Target,
) -> Result<Attendee, DomainError> {
    let (sql, value, what) = match target {
        Target::Id(id) => ("id = ?2", id, "id"),
        Target::Ticket(code) => ("ticket_code = ?2", code, "ticket code"),
    };
    conn.prepare_cached(&format!(
        "SELECT id, name, company, ticket_code FROM attendees
         WHERE event_id = ?1 AND {sql} AND deleted = 0 ORDER BY id LIMIT 1"
    ))?
    .query_row(params![event_id, value], |r| {
        Ok(Attendee {
            id: r.get(0)?,
            name: r.get(1)?,
            company: r.get(2)?,
            ticket_code: r.get(3)?,
        })
    })
    .optional()?
    .ok_or_else(|| {
        DomainError::NotFound(format!(
            "no attendee with {what} `{value}` in event `{event_id}`; check the code, or import the attendee list"
        ))
    })
}

fn existing_checkin(conn: &Connection, attendee_id: &str) -> Result<Option<Existing>, DomainError> {
    Ok(conn
        .prepare_cached(
            "SELECT op_id, hlc_wall, device_id FROM checkins
             WHERE attendee_id = ?1 AND duplicate_of IS NULL LIMIT 1",
        )?
        .query_row(params![attendee_id], |r| {
            Ok(Existing {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                device_id: r.get(2)?,
            })
        })
        .optional()?)
}

fn answer(attendee: &Attendee, checkin: &Existing, already: bool) -> serde_json::Value {
    json!({
        "checkin_id": checkin.id,
        "already_checked_in": already,
        "checked_in_at": rfc3339(checkin.at_ms),
        "device_id": checkin.device_id,
        "attendee": {
            "id": attendee.id,
            "name": attendee.name,
            "company": attendee.company,
            "ticket_code": attendee.ticket_code,
        },
    })
}
