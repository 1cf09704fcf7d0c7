//! Badge printing endpoints: printers (admin), a kiosk's print setting (admin), print jobs and
//! reprints (kiosks for their own, the admin for all).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, ApiJson, KioskOrAdmin};
use crate::domain::print_jobs::{self, JobFilter, PrintMode};
use crate::domain::printers::{self, PrinterSpec};

/// `GET /api/v1/admin/printers`: every printer with its latest health.
pub(super) async fn list(
    State(state): State<AppState>,
    _: Admin,
) -> Result<impl IntoResponse, ApiError> {
    let health = state.print.health.snapshot();
    let printers: Vec<_> = printers::list(&state.store)
        .await?
        .into_iter()
        .map(|p| {
            let h = health.get(&p.id).cloned();
            json!({ "printer": p, "health": h })
        })
        .collect();
    Ok(Json(json!({ "printers": printers })))
}

/// `POST /api/v1/admin/printers`: registers a printer (201), or 409 when the id is taken.
pub(super) async fn create(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(spec): ApiJson<PrinterSpec>,
) -> Result<impl IntoResponse, ApiError> {
    let id = spec
        .id
        .clone()
        .ok_or_else(|| ApiError::invalid("give the printer an `id` (e.g. \"desk-1\")"))?;
    if printers::get(&state.store, id.clone()).await.is_ok() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("printer `{id}` exists; change it with PUT /api/v1/admin/printers/{id}"),
        ));
    }
    let printer = printers::put(&state.store, state.event_id(), id, spec).await?;
    state.print.probe();
    Ok((StatusCode::CREATED, Json(printer)))
}

/// `PUT /api/v1/admin/printers/{id}`: registers or replaces.
pub(super) async fn put(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    ApiJson(spec): ApiJson<PrinterSpec>,
) -> Result<impl IntoResponse, ApiError> {
    if spec.id.as_ref().is_some_and(|given| *given != id) {
        return Err(ApiError::invalid(
            "the body's `id` differs from the path's; leave it out",
        ));
    }
    let printer = printers::put(&state.store, state.event_id(), id, spec).await?;
    state.print.probe();
    state.print.wake();
    Ok(Json(printer))
}

/// Query of `GET /api/v1/admin/printers/discover`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiscoverQuery {
    #[serde(default)]
    secs: Option<u64>,
}

/// `GET /api/v1/admin/printers/discover?secs=3`: IPP printers answering DNS-SD on the LAN.
pub(super) async fn discover(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<DiscoverQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(format!("{e}; use ?secs=1..10")))?;
    if !state.config.mdns.enabled {
        // Browsing multicasts on the LAN: not when venue IT turned mDNS off.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "mdns_off",
            "mDNS is off (`[mdns] enabled = false`); type the printer's address instead",
        ));
    }
    let wait = std::time::Duration::from_secs(query.secs.unwrap_or(3).clamp(1, 10));
    let found = crate::print::discover::ipp_printers(&state.config.mdns, wait)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "mdns_unavailable",
                e.to_string(),
            )
        })?;
    Ok(Json(json!({ "printers": found })))
}

/// `GET /api/v1/admin/printers/{id}`.
pub(super) async fn get_one(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let health = state.print.health.snapshot().get(&id).cloned();
    let printer = printers::get(&state.store, id).await?;
    Ok(Json(json!({ "printer": printer, "health": health })))
}

/// `DELETE /api/v1/admin/printers/{id}`: 204; its waiting jobs are cancelled.
pub(super) async fn remove(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    printers::remove(&state.store, id).await?;
    state.print.probe();
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `PUT /api/v1/admin/devices/{id}/print`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModeBody {
    mode: PrintMode,
}

/// `PUT /api/v1/admin/devices/{id}/print`: a kiosk's print setting (`always`, `ask`, `never`).
pub(super) async fn set_mode(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ModeBody>,
) -> Result<impl IntoResponse, ApiError> {
    print_jobs::set_mode(&state.store, id.clone(), body.mode).await?;
    Ok(Json(json!({ "device_id": id, "print": body.mode })))
}

/// `GET /api/v1/print/jobs?printer=&attendee=&state=&limit=`: newest first; a kiosk sees its own.
pub(super) async fn jobs(
    State(state): State<AppState>,
    who: KioskOrAdmin,
    query: Result<Query<JobFilter>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(filter) = query
        .map_err(|e| ApiError::invalid(format!("{e}; use ?printer=&attendee=&state=&limit=")))?;
    let jobs = print_jobs::list(&state.store, filter, kiosk_of(who)).await?;
    Ok(Json(json!({ "jobs": jobs })))
}

/// `GET /api/v1/print/jobs/{id}`: a kiosk sees its own.
pub(super) async fn job(
    State(state): State<AppState>,
    who: KioskOrAdmin,
    Path(id): Path<i64>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(
        print_jobs::get(&state.store, id, kiosk_of(who)).await?,
    ))
}

/// Body of `POST /api/v1/print/jobs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReprintBody {
    attendee_id: String,
    #[serde(default)]
    printer_id: Option<String>,
}

/// `POST /api/v1/print/jobs`: a reprint by staff, 201 with the job. A kiosk prints on its own
/// printer; the admin names one.
pub(super) async fn reprint(
    State(state): State<AppState>,
    who: KioskOrAdmin,
    ApiJson(body): ApiJson<ReprintBody>,
) -> Result<impl IntoResponse, ApiError> {
    let kiosk = kiosk_of(who);
    let by = kiosk
        .as_ref()
        .map(|k| format!("device:{k}"))
        .unwrap_or_else(|| "admin".into());
    let job = print_jobs::reprint(
        &state.store,
        state.event_id(),
        by,
        kiosk,
        body.attendee_id,
        body.printer_id,
    )
    .await?;
    state.print.wake();
    Ok((StatusCode::CREATED, Json(job)))
}

fn kiosk_of(who: KioskOrAdmin) -> Option<String> {
    match who {
        KioskOrAdmin::Kiosk(id) => Some(id),
        KioskOrAdmin::Admin => None,
    }
}
