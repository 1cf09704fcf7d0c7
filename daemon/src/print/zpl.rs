//! A badge as ZPL II for Zebra printers and compatibles: text as text in the printer's scalable
//! font 0 and the QR code as `^BQ`, not a bitmap, so the label prints sharp and the job is a few
//! hundred bytes.
//!
//! Field data is sent in UTF-8 (`^CI28`) with `^FH`, so `^`, `~` and `\` in a name cannot end
//! a field or start a command. Font 0 covers Latin text (more on recent firmware); other scripts
//! need a font stored on the printer, named by the printer's `zpl_font` (e.g. `E:NOTOSANS.TTF`).

use std::fmt::Write as _;

use qrcode::{EcLevel, QrCode};

use super::RenderError;
use super::fonts::Fonts;
use super::template::{Align, Badge, Field, Media, Template};

/// The smallest character height drawn, in dots.
const MIN_FONT_DOTS: u32 = 10;

/// Renders `badge` on `media` with `template`; `printer_font` names a font stored on the
/// printer to use instead of font 0.
pub fn render(
    template: &Template,
    badge: &Badge,
    media: &Media,
    fonts: &Fonts,
    printer_font: Option<&str>,
) -> Result<String, RenderError> {
    let dots = |mm: f32| (mm / 25.4 * media.dpi as f32).round() as u32;
    let (width, height) = (dots(media.width_mm), dots(media.height_mm));
    let mut out = String::with_capacity(512);
    // ^CI28: field data is UTF-8. ^PW/^LL: the label's size. ^LH0,0: positions from its corner.
    let _ = write!(out, "^XA\n^CI28\n^PW{width}\n^LL{height}\n^LH0,0\n");
    let measure = fonts.zebra_measure();
    for field in &template.fields {
        match field {
            Field::Text {
                source,
                text,
                area,
                align,
                ..
            } => {
                let Some(words) = badge.text(*source, text.as_deref()) else {
                    continue;
                };
                let x = pct(area.x, width);
                let (w, h) = (pct(area.w, width).max(1), pct(area.h, height).max(1));
                let advance = measure.advance_em(words).max(f32::EPSILON);
                let size = (h as f32).min(w as f32 / advance).max(MIN_FONT_DOTS as f32) as u32;
                let y = pct(area.y, height) + h.saturating_sub(size) / 2;
                let justify = match align {
                    Align::Left => 'L',
                    Align::Center => 'C',
                    Align::Right => 'R',
                };
                let font = match printer_font {
                    Some(name) => format!("^A@N,{size},{size},{name}"),
                    None => format!("^A0N,{size},{size}"),
                };
                // ^FB: a one-line block as wide as the box, so the printer aligns the text and
                // never runs it past the box.
                let _ = writeln!(
                    out,
                    "^FO{x},{y}{font}^FB{w},1,0,{justify},0^FH\\^FD{}^FS",
                    escape(words)
                );
            }
            Field::Image { area, png, .. } => {
                let Some(png) = png else { continue };
                let pixels = super::logo::decode(png).map_err(RenderError::Pdf)?;
                let (bw, bh) = (pct(area.w, width) as f32, pct(area.h, height) as f32);
                let (w, h) = super::logo::fit((pixels.width as f32, pixels.height as f32), bw, bh);
                let (w, h) = ((w as u32).max(1), (h as u32).max(1));
                let left = pct(area.x, width) + (bw as u32).saturating_sub(w) / 2;
                let top = pct(area.y, height) + (bh as u32).saturating_sub(h) / 2;
                let _ = writeln!(
                    out,
                    "^FO{left},{top}{}^FS",
                    super::logo::zpl_graphic(&pixels, w, h)
                );
            }
            Field::Qr { x, y, size } => {
                let Some(code) = badge.ticket_code.as_deref().filter(|c| !c.is_empty()) else {
                    continue;
                };
                let (left, top) = (pct(*x, width), pct(*y, height));
                let side = pct(*size, width.min(height))
                    .min(width.saturating_sub(left))
                    .min(height.saturating_sub(top));
                let modules = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)
                    .map_err(|e| RenderError::Qr(e.to_string()))?
                    .width() as u32;
                // ^BQ magnifies each module to 1-10 dots.
                let magnification = (side / modules.max(1)).clamp(1, 10);
                // `MA,`: error correction M, automatic input mode; the same code as the PDF's.
                let _ = writeln!(
                    out,
                    "^FO{left},{top}^BQN,2,{magnification}^FH\\^FDMA,{}^FS",
                    escape(code)
                );
            }
        }
    }
    out.push_str("^XZ\n");
    Ok(out)
}

fn pct(percent: f32, of: u32) -> u32 {
    (percent / 100.0 * of as f32).round() as u32
}

/// Field data for `^FH\`: the three characters that would end the field or start a command
/// become hex escapes; control characters are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '^' => out.push_str("\\5E"),
            '~' => out.push_str("\\7E"),
            '\\' => out.push_str("\\5C"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`escape`], for tests and the ZPL checks: `\XX` hex pairs become bytes.
pub fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(v) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::print::template::Template;

    fn badge(name: &str) -> Badge {
        Badge {
            name: name.into(),
            company: Some("Analytical Engines Ltd".into()),
            role: Some("Speaker".into()),
            ticket_code: Some("TCK-0001".into()),
            event_name: "RustConf Venue Edge 2026".into(),
        }
    }

    #[test]
    fn a_name_that_could_inject_commands_stays_field_data() {
        let fonts = Fonts::load(&[]);
        let zpl = render(
            &Template::default_badge(),
            &badge("Ada ^XZ~JR\\ Byron"),
            &Media::default(),
            &fonts,
            None,
        )
        .unwrap_or_default();
        assert_eq!(zpl.matches("^XZ").count(), 1, "{zpl}");
        assert!(!zpl.contains("~JR"), "{zpl}");
        assert!(zpl.contains("Ada \\5EXZ\\7EJR\\5C Byron"), "{zpl}");
        assert_eq!(unescape("Ada \\5EXZ\\7EJR\\5C Byron"), "Ada ^XZ~JR\\ Byron");
    }

    #[test]
    fn a_long_name_gets_smaller_type_than_a_short_one() {
        let fonts = Fonts::load(&[]);
        let height = |name: &str| {
            let zpl = render(
                &Template::default_badge(),
                &badge(name),
                &Media::default(),
                &fonts,
                None,
            )
            .unwrap_or_default();
            let line = zpl
                .lines()
                .find(|l| l.contains(&escape(name)))
                .unwrap_or_default()
                .to_string();
            let at = line.find("^A0N,").map(|i| i + 5).unwrap_or(0);
            line[at..]
                .split(',')
                .next()
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        };
        let (short, long) = (
            height("Ada"),
            height("Maximiliane Augusta von Hohenzollern-Sigmaringen"),
        );
        assert!(short > long && long >= MIN_FONT_DOTS, "{short} {long}");
    }

    /// The golden label: docs/badges/default.zpl is what the default template prints for the
    /// sample attendee. A change to the layout or the renderer shows here and in review.
    #[test]
    fn the_default_template_matches_the_golden_label() {
        let fonts = Fonts::load(&[]);
        let zpl = render(
            &Template::default_badge(),
            &badge("Ada Lovelace"),
            &Media::default(),
            &fonts,
            None,
        )
        .unwrap_or_default();
        let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/badges/default.zpl");
        if std::env::var_os("VENUED_BLESS").is_some() {
            let _ = std::fs::write(golden_path, &zpl);
        }
        let golden = std::fs::read_to_string(golden_path).unwrap_or_default();
        assert_eq!(
            zpl, golden,
            "run with VENUED_BLESS=1 to accept a deliberate change"
        );
    }
}
