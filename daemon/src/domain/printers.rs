//! The printer registry: badge printers on the venue LAN, each with its label and the kiosks it
//! prints for. Like devices, printers are this appliance's own (not ops).

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{DomainError, rfc3339};
use crate::print::template::Media;
use crate::store::Store;

/// The port raw ZPL printers listen on.
pub const ZPL_PORT: u16 = 9100;
/// The most kiosks one printer may serve.
pub const MAX_KIOSKS: usize = 64;

/// How a printer is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrinterKind {
    /// IPP Everywhere (driverless): a PDF per badge, `ipp://` or `ipps://`.
    Ipp,
    /// Zebra ZPL II over raw TCP (port 9100).
    Zpl,
}

impl PrinterKind {
    /// The name stored and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipp => "ipp",
            Self::Zpl => "zpl",
        }
    }
}

/// A printer as given by staff (the body of `POST` and `PUT /api/v1/admin/printers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrinterSpec {
    /// Its id (as device ids: also used in MQTT topics). Taken from the path on `PUT`.
    #[serde(default)]
    pub id: Option<String>,
    /// A label for staff.
    #[serde(default)]
    pub name: String,
    /// How it is spoken to.
    pub kind: PrinterKind,
    /// `ipp://host[:631]/ipp/print` or `ipps://…` for IPP; `tcp://host[:9100]` for ZPL.
    pub uri: String,
    /// Its labels (default 4 × 3 inch at 203 dpi).
    #[serde(default)]
    pub media: Media,
    /// The kiosks whose check-ins print here.
    #[serde(default)]
    pub kiosks: Vec<String>,
    /// ZPL only: a font stored on the printer (e.g. `E:NOTOSANS.TTF`) for scripts beyond its
    /// built-in font.
    #[serde(default)]
    pub zpl_font: Option<String>,
}

/// A registered printer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Printer {
    /// Its id.
    pub id: String,
    /// A label for staff.
    pub name: String,
    /// How it is spoken to.
    pub kind: PrinterKind,
    /// Where it is.
    pub uri: String,
    /// Its labels.
    pub media: Media,
    /// The kiosks it prints for.
    pub kiosks: Vec<String>,
    /// ZPL only: the printer-stored font used for text.
    pub zpl_font: Option<String>,
    /// When it was registered (RFC 3339).
    pub created_at: String,
}

impl PrinterSpec {
    /// Checks every field; returns every problem at once.
    fn check(&self, id: &str) -> Result<(), DomainError> {
        let mut problems = Vec::new();
        if !crate::config::is_valid_id(id) {
            problems.push(format!(
                "printer id `{id}` must be 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.` (it is part of MQTT topics)"
            ));
        }
        if self.name.len() > 256 {
            problems.push("`name` is longer than 256 bytes".into());
        }
        if let Err(e) = check_uri(self.kind, &self.uri) {
            problems.push(e);
        }
        if let Err(e) = self.media.check() {
            problems.push(format!("`media`: {e}"));
        }
        if self.kiosks.len() > MAX_KIOSKS {
            problems.push(format!("`kiosks` lists more than {MAX_KIOSKS}"));
        }
        for kiosk in &self.kiosks {
            if !crate::config::is_valid_id(kiosk) {
                problems.push(format!("`kiosks`: `{kiosk}` is not a device id"));
            }
        }
        match (&self.zpl_font, self.kind) {
            (Some(_), PrinterKind::Ipp) => {
                problems.push("`zpl_font` is for ZPL printers only".into());
            }
            (Some(font), PrinterKind::Zpl) => {
                let ok = (3..=40).contains(&font.len())
                    && font.as_bytes().get(1) == Some(&b':')
                    && font
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
                if !ok {
                    problems.push(format!(
                        "`zpl_font` `{font}` must name a font on the printer, like `E:NOTOSANS.TTF`"
                    ));
                }
            }
            (None, _) => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DomainError::Invalid(problems.join("; ")))
        }
    }
}

/// Checks a printer's address for its kind.
pub fn check_uri(kind: PrinterKind, uri: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(uri)
        .map_err(|e| format!("`uri` `{uri}` is not an address ({e}); {}", example(kind)))?;
    let scheme_ok = match kind {
        PrinterKind::Ipp => matches!(parsed.scheme(), "ipp" | "ipps" | "http" | "https"),
        PrinterKind::Zpl => parsed.scheme() == "tcp",
    };
    if !scheme_ok || parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("`uri` `{uri}`: {}", example(kind)));
    }
    if kind == PrinterKind::Zpl && !matches!(parsed.path(), "" | "/") {
        return Err(format!(
            "`uri` `{uri}`: a ZPL printer's address has no path; {}",
            example(kind)
        ));
    }
    Ok(())
}

fn example(kind: PrinterKind) -> &'static str {
    match kind {
        PrinterKind::Ipp => {
            "an IPP printer is `ipp://host:631/ipp/print` (or `ipps://` for TLS), as DNS-SD or the printer's page shows it"
        }
        PrinterKind::Zpl => "a ZPL printer is `tcp://host:9100`",
    }
}

/// Registers `spec` as `id`, or replaces the printer of that id.
pub async fn put(
    store: &Store,
    event_id: &str,
    id: String,
    spec: PrinterSpec,
) -> Result<Printer, DomainError> {
    spec.check(&id)?;
    let event_id = event_id.to_string();
    let media = serde_json::to_string(&spec.media).unwrap_or_default();
    let kiosks = serde_json::to_string(&spec.kiosks).unwrap_or_default();
    store
        .write(move |ctx| {
            let now = ctx.now_ms();
            ctx.conn().execute(
                "INSERT INTO printers (id, event_id, name, kind, uri, media, kiosks, zpl_font, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET event_id = excluded.event_id, name = excluded.name,
                     kind = excluded.kind, uri = excluded.uri, media = excluded.media,
                     kiosks = excluded.kiosks, zpl_font = excluded.zpl_font,
                     created_ms = CASE WHEN removed_ms IS NULL THEN created_ms ELSE excluded.created_ms END,
                     removed_ms = NULL",
                params![id, event_id, spec.name, spec.kind.as_str(), spec.uri, media, kiosks, spec.zpl_font, now],
            )?;
            one(ctx.conn(), &id)?.ok_or_else(|| DomainError::NotFound(format!("printer `{id}` vanished")))
        })
        .await
}

/// Removes a printer; its waiting jobs are cancelled (they would never print).
pub async fn remove(store: &Store, id: String) -> Result<(), DomainError> {
    store
        .write(move |ctx| {
            let now = ctx.now_ms();
            let removed = ctx.conn().execute(
                "UPDATE printers SET removed_ms = ?2 WHERE id = ?1 AND removed_ms IS NULL",
                params![id, now],
            )?;
            if removed == 0 {
                return Err(DomainError::NotFound(format!("no printer `{id}`")));
            }
            ctx.conn().execute(
                "UPDATE print_jobs SET state = 'cancelled', detail = 'the printer was removed', updated_ms = ?2
                 WHERE printer_id = ?1 AND state IN ('queued', 'sending', 'printing')",
                params![id, now],
            )?;
            Ok(())
        })
        .await
}

/// Every registered printer, by id.
pub async fn list(store: &Store) -> Result<Vec<Printer>, DomainError> {
    store
        .read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM printers WHERE removed_ms IS NULL ORDER BY id"
            ))?;
            let rows = stmt.query_map([], row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
}

/// One registered printer.
pub async fn get(store: &Store, id: String) -> Result<Printer, DomainError> {
    store
        .read(move |conn| {
            one(conn, &id)?.ok_or_else(|| DomainError::NotFound(format!("no printer `{id}`")))
        })
        .await
}

/// The printer that prints for `kiosk`: the first by id that lists it.
pub(crate) fn for_kiosk(conn: &Connection, kiosk: &str) -> Result<Option<String>, DomainError> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM printers
             WHERE removed_ms IS NULL AND EXISTS (SELECT 1 FROM json_each(kiosks) WHERE value = ?1)
             ORDER BY id LIMIT 1",
        )?
        .query_row(params![kiosk], |r| r.get(0))
        .optional()?)
}

const COLUMNS: &str = "id, name, kind, uri, media, kiosks, zpl_font, created_ms";

pub(crate) fn one(conn: &Connection, id: &str) -> Result<Option<Printer>, DomainError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM printers WHERE id = ?1 AND removed_ms IS NULL"
        ))?
        .query_row(params![id], row)
        .optional()?)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Printer> {
    let kind: String = r.get(2)?;
    let media: String = r.get(4)?;
    let kiosks: String = r.get(5)?;
    Ok(Printer {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: if kind == "zpl" {
            PrinterKind::Zpl
        } else {
            PrinterKind::Ipp
        },
        uri: r.get(3)?,
        // Written by `put` from checked values; a hand-edited row falls back to the defaults.
        media: serde_json::from_str(&media).unwrap_or_default(),
        kiosks: serde_json::from_str(&kiosks).unwrap_or_default(),
        zpl_font: r.get(6)?,
        created_at: rfc3339(r.get(7)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_for_the_printer_kind() {
        assert!(check_uri(PrinterKind::Ipp, "ipp://10.0.0.5:631/ipp/print").is_ok());
        assert!(check_uri(PrinterKind::Ipp, "ipps://printer.local/ipp/print").is_ok());
        assert!(check_uri(PrinterKind::Zpl, "tcp://10.0.0.6:9100").is_ok());
        let wrong = check_uri(PrinterKind::Zpl, "ipp://10.0.0.6/ipp/print").unwrap_err();
        assert!(wrong.contains("tcp://host:9100"), "{wrong}");
        assert!(
            check_uri(PrinterKind::Ipp, "printer")
                .unwrap_err()
                .contains("ipp://host:631")
        );
        assert!(check_uri(PrinterKind::Zpl, "tcp://10.0.0.6:9100/x").is_err());
    }
}
