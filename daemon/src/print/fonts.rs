//! The fonts badges are drawn with: DejaVu Sans (embedded in the binary, so a badge prints on a
//! box with no fonts installed) for Latin, Greek, Cyrillic, Hebrew and Arabic, and font files
//! from the system for the scripts DejaVu lacks (CJK, Devanagari, ...), picked per text by
//! which font has a glyph for every character.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Fonts tried, in order, when DejaVu lacks a character: Debian's Noto packages
/// (`fonts-noto-cjk`, `fonts-noto-core`), which the appliance image installs. Missing files are
/// skipped.
pub const SYSTEM_FALLBACKS: &[&str] = &[
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansDevanagari-Bold.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansThai-Bold.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansBengali-Bold.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansTamil-Bold.ttf",
];

/// One font file, ready for drawing (krilla) and measuring (rustybuzz, the shaper krilla uses).
#[derive(Clone)]
pub struct FontFile {
    bytes: Arc<Vec<u8>>,
    /// The font for krilla.
    pub pdf: krilla::text::Font,
    /// Where it came from, for logs.
    pub origin: String,
}

impl FontFile {
    fn new(bytes: Vec<u8>, origin: String) -> Option<Self> {
        let bytes = Arc::new(bytes);
        rustybuzz::Face::from_slice(&bytes, 0)?;
        let pdf = krilla::text::Font::new(krilla::Data::from(bytes.clone()), 0)?;
        Some(Self { bytes, pdf, origin })
    }

    fn face(&self) -> Option<rustybuzz::Face<'_>> {
        rustybuzz::Face::from_slice(&self.bytes, 0)
    }

    /// Whether every visible character of `text` has a glyph here.
    pub fn covers(&self, text: &str) -> bool {
        self.face().is_some_and(|face| {
            text.chars()
                .filter(|c| !c.is_whitespace() && !c.is_control())
                .all(|c| face.glyph_index(c).is_some())
        })
    }

    /// The width of `text` set in this font, in ems (multiply by the size).
    pub fn advance_em(&self, text: &str) -> f32 {
        let Some(face) = self.face() else { return 0.0 };
        let mut buffer = rustybuzz::UnicodeBuffer::new();
        buffer.push_str(text);
        buffer.set_direction(direction(text).0);
        buffer.guess_segment_properties();
        let shaped = rustybuzz::shape(&face, &[], buffer);
        let units: i32 = shaped.glyph_positions().iter().map(|p| p.x_advance).sum();
        units as f32 / f32::from(face.units_per_em().max(1) as u16)
    }

    /// Ascender and descender (negative) in ems.
    pub fn vertical_em(&self) -> (f32, f32) {
        match self.face() {
            Some(face) => {
                let upem = f32::from(face.units_per_em().max(1) as u16);
                (
                    f32::from(face.ascender()) / upem,
                    f32::from(face.descender()) / upem,
                )
            }
            None => (0.8, -0.2),
        }
    }
}

/// The direction to set `text` in: right to left when it holds Hebrew or Arabic letters.
pub fn direction(text: &str) -> (rustybuzz::Direction, krilla::text::TextDirection) {
    let rtl = text
        .chars()
        .any(|c| matches!(u32::from(c), 0x0590..=0x08FF | 0xFB1D..=0xFDFF | 0xFE70..=0xFEFF));
    if rtl {
        (
            rustybuzz::Direction::RightToLeft,
            krilla::text::TextDirection::RightToLeft,
        )
    } else {
        (
            rustybuzz::Direction::LeftToRight,
            krilla::text::TextDirection::LeftToRight,
        )
    }
}

/// The fonts of this appliance.
#[derive(Clone)]
pub struct Fonts {
    regular: FontFile,
    bold: FontFile,
    /// Condensed bold: the measure for Zebra's font 0 (itself a condensed sans), so a ZPL name
    /// is sized to fit.
    condensed_bold: FontFile,
    fallbacks: Vec<FontFile>,
}

impl Fonts {
    /// DejaVu, plus each of `fallbacks` that exists and parses (the others are skipped: the
    /// image decides which are installed).
    pub fn load(fallbacks: &[PathBuf]) -> Self {
        let embedded = |bytes: &'static [u8], name: &str| {
            FontFile::new(bytes.to_vec(), format!("embedded {name}"))
        };
        // The embedded fonts are fixed bytes, checked by the unit tests below.
        let (Some(regular), Some(bold), Some(condensed_bold)) = (
            embedded(dejavu::sans::regular(), "DejaVu Sans"),
            embedded(dejavu::sans::bold(), "DejaVu Sans Bold"),
            embedded(dejavu::sans_condensed::bold(), "DejaVu Sans Condensed Bold"),
        ) else {
            unreachable!("the embedded DejaVu fonts parse");
        };
        let fallbacks = fallbacks
            .iter()
            .filter_map(|path| load_file(path))
            .collect();
        Self {
            regular,
            bold,
            condensed_bold,
            fallbacks,
        }
    }

    /// The embedded fonts and the system fallbacks that are installed.
    pub fn with_system_fallbacks() -> Self {
        let paths: Vec<PathBuf> = SYSTEM_FALLBACKS.iter().map(PathBuf::from).collect();
        Self::load(&paths)
    }

    /// The font to set `text` in: DejaVu when it has every glyph, else the first fallback
    /// that does, else DejaVu anyway (a missing glyph prints as a box rather than no badge).
    pub fn pick(&self, text: &str, bold: bool) -> &FontFile {
        let first = if bold { &self.bold } else { &self.regular };
        if first.covers(text) {
            return first;
        }
        self.fallbacks
            .iter()
            .find(|f| f.covers(text))
            .unwrap_or(first)
    }

    /// The measure for Zebra's built-in font.
    pub fn zebra_measure(&self) -> &FontFile {
        &self.condensed_bold
    }
}

fn load_file(path: &Path) -> Option<FontFile> {
    let bytes = std::fs::read(path).ok()?;
    let font = FontFile::new(bytes, path.display().to_string());
    if font.is_none() {
        tracing::warn!(path = %path.display(), "not a font file this appliance can use; skipped");
    }
    font
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dejavu_covers_accents_greek_cyrillic_and_hebrew_but_not_cjk() {
        let fonts = Fonts::load(&[]);
        for name in ["Zoë Ångström-Łukasiewicz", "Δημήτρης", "Иван Петров", "דוד"]
        {
            assert!(fonts.pick(name, true).covers(name), "{name}");
        }
        assert!(!fonts.pick("李小龍", true).covers("李小龍"));
        assert!(fonts.pick("Ada", true).advance_em("Ada") > 1.0);
        assert!(
            fonts.pick("Ada", true).advance_em("Ada Lovelace")
                > fonts.pick("Ada", true).advance_em("Ada")
        );
    }

    #[test]
    fn right_to_left_is_recognised() {
        assert_eq!(direction("דוד").0, rustybuzz::Direction::RightToLeft);
        assert_eq!(direction("Ada").0, rustybuzz::Direction::LeftToRight);
    }
}
