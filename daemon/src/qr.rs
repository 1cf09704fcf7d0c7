//! QR codes as SVG (the `qrcode` crate), drawn on the appliance so no page needs a QR library
//! or another origin: the attendee app's address on the signage displays, a device's
//! credentials in the console.

use qrcode::QrCode;
use qrcode::render::svg;

/// `text` as a QR code in SVG (error correction M, the quiet zone included), or `None` when it
/// is too long for a QR code.
pub fn svg(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(256, 256)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_becomes_an_svg_and_an_overlong_text_does_not() {
        let drawn = svg("http://venue-edge.local:8080/").unwrap_or_default();
        assert!(
            drawn.contains("<svg") && drawn.contains("</svg>"),
            "{drawn}"
        );
        assert!(svg(&"x".repeat(8000)).is_none());
    }
}
