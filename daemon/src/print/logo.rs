//! The logo of a badge: a PNG decoded to 8-bit grey with alpha (the `png` crate), placed in its
//! box with its proportions kept, and turned to black and white dots for ZPL's `^GF`.

use std::fmt::Write as _;

/// A decoded picture: grey level and alpha per pixel, row by row.
pub struct Pixels {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `(grey, alpha)` per pixel.
    pub data: Vec<(u8, u8)>,
}

/// The largest side accepted, in pixels.
const MAX_SIDE: u32 = 4096;

/// Decodes a PNG to grey and alpha.
pub fn decode(bytes: &[u8]) -> Result<Pixels, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("not a PNG image ({e})"))?;
    let (width, height) = (reader.info().width, reader.info().height);
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!(
            "{width} × {height} pixels; a logo must be 1-{MAX_SIDE} a side"
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "the image is too large to decode".to_string())?;
    let mut buffer = vec![0; size];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|e| format!("cannot decode the PNG ({e})"))?;
    let bytes = &buffer[..frame.buffer_size()];
    let channels = frame.color_type.samples();
    let data = bytes
        .chunks_exact(channels)
        .map(|px| match px {
            [g] => (*g, 255),
            [g, a] => (*g, *a),
            [r, g, b] => (luma(*r, *g, *b), 255),
            [r, g, b, a] => (luma(*r, *g, *b), *a),
            _ => (255, 0),
        })
        .collect();
    Ok(Pixels {
        width,
        height,
        data,
    })
}

fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114) / 1000) as u8
}

/// The largest `(width, height)` of the picture's proportions that fits `(w, h)`.
pub fn fit(picture: (f32, f32), w: f32, h: f32) -> (f32, f32) {
    let scale = (w / picture.0).min(h / picture.1);
    (picture.0 * scale, picture.1 * scale)
}

/// The picture scaled (nearest pixel) to `width` × `height` dots, a dot black where the pixel
/// is dark and opaque, as a `^GFA` graphic field.
pub fn zpl_graphic(pixels: &Pixels, width: u32, height: u32) -> String {
    let row_bytes = width.div_ceil(8);
    let total = row_bytes * height;
    let mut hex = String::with_capacity(total as usize * 2);
    for y in 0..height {
        let sy = (y * pixels.height / height.max(1)).min(pixels.height - 1);
        for byte in 0..row_bytes {
            let mut bits = 0u8;
            for bit in 0..8 {
                let x = byte * 8 + bit;
                if x >= width {
                    continue;
                }
                let sx = (x * pixels.width / width.max(1)).min(pixels.width - 1);
                let (grey, alpha) = pixels.data[(sy * pixels.width + sx) as usize];
                if grey < 128 && alpha >= 128 {
                    bits |= 0x80 >> bit;
                }
            }
            let _ = write!(hex, "{bits:02X}");
        }
    }
    format!("^GFA,{total},{total},{row_bytes},{hex}")
}

#[cfg(test)]
mod tests {
    use crate::print::fonts::Fonts;
    use crate::print::template::{Area, Badge, Field, Media, Template};

    /// A 16 × 8 PNG: the left half black, the right half white.
    fn half_black_png() -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, 16, 8);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let pixels: Vec<u8> = (0..8)
            .flat_map(|_| (0..16).map(|x| if x < 8 { 0 } else { 255 }))
            .collect();
        if let Ok(mut writer) = encoder.write_header() {
            let _ = writer.write_image_data(&pixels);
        }
        out
    }

    /// A template of one image field, top left, half the label, its file holding `bytes`.
    fn logo_template(bytes: &[u8]) -> (tempfile::TempDir, Template) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("logo.png");
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        let area = Area {
            x: 0.0,
            y: 0.0,
            w: 50.0,
            h: 50.0,
        };
        let path = path.display().to_string();
        let template = Template {
            fields: vec![Field::Image {
                path,
                area,
                png: None,
            }],
        };
        (dir, template)
    }

    #[test]
    fn a_logo_prints_as_a_zpl_graphic_and_in_the_pdf() {
        let (_dir, mut template) = logo_template(&half_black_png());
        assert_eq!(template.load_images(), Ok(()));
        let badge = Badge {
            name: "Ada".into(),
            company: None,
            role: None,
            ticket_code: None,
            event_name: String::new(),
        };
        let media = Media {
            width_mm: 50.8,
            height_mm: 25.4,
            dpi: 203,
        };
        let fonts = Fonts::load(&[]);
        let zpl =
            crate::print::zpl::render(&template, &badge, &media, &fonts, None).unwrap_or_default();
        // The box is 203 × 102 dots; the 2:1 picture fills it: 203 dots wide, 26 bytes a row,
        // each row starting with 101 black dots (12 bytes of FF, then 1111 1000).
        let graphic = zpl.lines().find(|l| l.contains("^GFA")).unwrap_or_default();
        assert!(graphic.starts_with("^FO0,0^GFA,2626,2626,26,"), "{graphic}");
        assert!(
            graphic.contains(&format!("{}F", "FF".repeat(12))),
            "{graphic}"
        );
        let pdf = crate::print::pdf::render(&template, &badge, &media, &fonts).unwrap_or_default();
        assert!(pdf.starts_with(b"%PDF-") && pdf.len() > 500);
    }

    #[test]
    fn a_file_that_is_not_a_png_is_named() {
        let (_dir, mut template) = logo_template(b"GIF89a");
        let problems = template
            .load_images()
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(
            problems[0].starts_with("field 1: `") && problems[0].contains("not a PNG"),
            "{problems:?}"
        );
    }
}
