//! A badge as a one-page PDF (krilla) for IPP Everywhere printers: the label's size as the page,
//! text as real text in embedded, subset fonts (sharp at any resolution, and `pdftotext` reads
//! it), the QR code as vector squares.

use krilla::Document;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::page::PageSettings;
use qrcode::{Color, EcLevel, QrCode};

use super::RenderError;
use super::fonts::{Fonts, direction};
use super::template::{Align, Badge, Field, Media, Template};

/// Points per millimetre.
const PT_PER_MM: f32 = 72.0 / 25.4;
/// The smallest type drawn, in points: below this a name is unreadable anyway.
const MIN_FONT_PT: f32 = 4.0;

/// Renders `badge` on `media` with `template`.
pub fn render(
    template: &Template,
    badge: &Badge,
    media: &Media,
    fonts: &Fonts,
) -> Result<Vec<u8>, RenderError> {
    let (width, height) = (media.width_mm * PT_PER_MM, media.height_mm * PT_PER_MM);
    let settings = PageSettings::from_wh(width, height).ok_or(RenderError::Media)?;
    let mut document = Document::new();
    {
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        for field in &template.fields {
            match field {
                Field::Text {
                    source,
                    text,
                    area,
                    bold,
                    align,
                } => {
                    let Some(words) = badge.text(*source, text.as_deref()) else {
                        continue;
                    };
                    let font = fonts.pick(words, *bold);
                    let (x, y) = (area.x / 100.0 * width, area.y / 100.0 * height);
                    let (w, h) = (area.w / 100.0 * width, area.h / 100.0 * height);
                    let (ascent, descent) = font.vertical_em();
                    let advance = font.advance_em(words).max(f32::EPSILON);
                    let size = (h / (ascent - descent)).min(w / advance).max(MIN_FONT_PT);
                    let drawn = advance * size;
                    let left = match align {
                        Align::Left => x,
                        Align::Center => x + (w - drawn) / 2.0,
                        Align::Right => x + w - drawn,
                    };
                    // The line is centred vertically in its box, on its baseline.
                    let baseline = y + (h - size * (ascent - descent)) / 2.0 + size * ascent;
                    surface.draw_text(
                        Point::from_xy(left, baseline),
                        font.pdf.clone(),
                        size,
                        words,
                        false,
                        direction(words).1,
                    );
                }
                Field::Image { area, png, .. } => {
                    let Some(png) = png else { continue };
                    let image =
                        krilla::image::Image::from_png(krilla::Data::from(png.clone()), true)
                            .map_err(RenderError::Pdf)?;
                    let (pw, ph) = image.size();
                    let (bx, by) = (area.x / 100.0 * width, area.y / 100.0 * height);
                    let (bw, bh) = (area.w / 100.0 * width, area.h / 100.0 * height);
                    let (w, h) = super::logo::fit((pw as f32, ph as f32), bw, bh);
                    if let Some(size) = krilla::geom::Size::from_wh(w, h) {
                        surface.push_transform(&krilla::geom::Transform::from_translate(
                            bx + (bw - w) / 2.0,
                            by + (bh - h) / 2.0,
                        ));
                        surface.draw_image(image, size);
                        surface.pop();
                    }
                }
                Field::Qr { x, y, size } => {
                    let Some(code) = badge.ticket_code.as_deref().filter(|c| !c.is_empty()) else {
                        continue;
                    };
                    let (left, top) = (x / 100.0 * width, y / 100.0 * height);
                    let side = (size / 100.0 * width.min(height))
                        .min(width - left)
                        .min(height - top);
                    if let Some(path) = qr_path(code, left, top, side)? {
                        surface.draw_path(&path);
                    }
                }
            }
        }
        surface.finish();
        page.finish();
    }
    document
        .finish()
        .map_err(|e| RenderError::Pdf(format!("{e:?}")))
}

/// The dark modules of `code`'s QR code as one path of squares, `side` points wide at
/// (`left`, `top`), runs of a row merged into one rectangle.
fn qr_path(
    code: &str,
    left: f32,
    top: f32,
    side: f32,
) -> Result<Option<krilla::geom::Path>, RenderError> {
    let qr = QrCode::with_error_correction_level(code.as_bytes(), EcLevel::M)
        .map_err(|e| RenderError::Qr(e.to_string()))?;
    let modules = qr.width();
    let colors = qr.to_colors();
    let module = side / modules as f32;
    let mut path = PathBuilder::new();
    for row in 0..modules {
        let mut col = 0;
        while col < modules {
            if colors[row * modules + col] != Color::Dark {
                col += 1;
                continue;
            }
            let start = col;
            while col < modules && colors[row * modules + col] == Color::Dark {
                col += 1;
            }
            if let Some(rect) = Rect::from_xywh(
                left + start as f32 * module,
                top + row as f32 * module,
                (col - start) as f32 * module,
                module,
            ) {
                path.push_rect(rect);
            }
        }
    }
    Ok(path.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_badge_is_one_page_of_the_label_size_with_the_fonts_embedded() {
        let badge = Badge {
            name: "Zoë Ångström".into(),
            company: Some("Δέλτα".into()),
            role: Some("Speaker".into()),
            ticket_code: Some("TCK-0001".into()),
            event_name: "Venue Edge Conf".into(),
        };
        let pdf = render(
            &Template::default_badge(),
            &badge,
            &Media::default(),
            &Fonts::load(&[]),
        )
        .unwrap_or_default();
        assert!(pdf.starts_with(b"%PDF-"), "not a PDF");
        if let Some(path) = std::env::var_os("VENUED_PDF_OUT") {
            let _ = std::fs::write(path, &pdf);
        }
    }
}
