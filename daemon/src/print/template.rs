//! Badge templates as data: fields placed on the label in percent of its size, so one template
//! fits every label a printer holds, and a check that names every problem at once.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The most fields a template may have; a badge is a handful of lines and a code.
pub const MAX_FIELDS: usize = 32;
/// The longest literal text a field may carry, in bytes.
pub const MAX_TEXT_BYTES: usize = 256;

/// A badge layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// What is printed where, drawn in this order.
    pub fields: Vec<Field>,
}

/// One thing printed on the badge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Field {
    /// A line of text, auto-fitted to its box: as large as the box's height allows, smaller
    /// when the text is wider than the box.
    Text {
        /// Where the text comes from.
        source: Source,
        /// The literal text, for `source = "text"` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The box: left edge and width in percent of the label's width, top edge and height in
        /// percent of its height.
        #[serde(flatten)]
        area: Area,
        /// Bold type (the attendee's name usually is).
        #[serde(default)]
        bold: bool,
        /// Where the text sits in its box.
        #[serde(default)]
        align: Align,
    },
    /// A picture (the event's logo): a PNG file, scaled to fit its box with its proportions kept,
    /// centred. Printed in grey levels on IPP printers, in black and white on ZPL ones.
    Image {
        /// The PNG file, read when the configuration is loaded.
        path: String,
        /// The box, as for text.
        #[serde(flatten)]
        area: Area,
        /// The file's bytes, once loaded ([`Template::load_images`]).
        #[serde(skip)]
        png: Option<Arc<Vec<u8>>>,
    },
    /// A QR code of the attendee's ticket code: the kiosk and the attendee sign-in scan it.
    Qr {
        /// Left edge, in percent of the label's width.
        x: f32,
        /// Top edge, in percent of the label's height.
        y: f32,
        /// Side, in percent of the label's shorter side. Shrunk to fit when the label is too
        /// small.
        size: f32,
    },
}

/// A text box in percent of the label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    /// Left edge, percent of the width.
    pub x: f32,
    /// Top edge, percent of the height.
    pub y: f32,
    /// Width, percent of the width.
    pub w: f32,
    /// Height, percent of the height.
    pub h: f32,
}

/// Where a text field's words come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The attendee's name.
    Name,
    /// The attendee's company.
    Company,
    /// The attendee's role or ticket type.
    Role,
    /// The ticket code as text.
    TicketCode,
    /// The event's name.
    EventName,
    /// The field's own `text`.
    Text,
}

/// Horizontal alignment in the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Align {
    /// Left (right for right-to-left scripts is not flipped: the template decides).
    Left,
    /// Centred.
    #[default]
    Center,
    /// Right.
    Right,
}

/// What is printed for one attendee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Badge {
    /// The attendee's name.
    pub name: String,
    /// Their company.
    pub company: Option<String>,
    /// Their role or ticket type.
    pub role: Option<String>,
    /// Their ticket code (the QR code's content).
    pub ticket_code: Option<String>,
    /// The event's name.
    pub event_name: String,
}

impl Badge {
    /// The text of `source` for this badge (`Text` is the field's own).
    pub fn text<'a>(&'a self, source: Source, literal: Option<&'a str>) -> Option<&'a str> {
        let value = match source {
            Source::Name => Some(self.name.as_str()),
            Source::Company => self.company.as_deref(),
            Source::Role => self.role.as_deref(),
            Source::TicketCode => self.ticket_code.as_deref(),
            Source::EventName => Some(self.event_name.as_str()),
            Source::Text => literal,
        };
        value.map(str::trim).filter(|v| !v.is_empty())
    }
}

/// The label a printer holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// Width in millimetres.
    pub width_mm: f32,
    /// Height in millimetres.
    pub height_mm: f32,
    /// Dots per inch (ZPL positions are in dots; 203 and 300 are the usual).
    #[serde(default = "default_dpi")]
    pub dpi: u32,
}

fn default_dpi() -> u32 {
    203
}

impl Default for Media {
    /// A 4 × 3 inch label at 203 dpi, the most common badge label.
    fn default() -> Self {
        Self {
            width_mm: 101.6,
            height_mm: 76.2,
            dpi: default_dpi(),
        }
    }
}

impl Media {
    /// Checks the label size: 20–300 mm a side, 100–600 dpi.
    pub fn check(&self) -> Result<(), String> {
        let side = |v: f32| v.is_finite() && (20.0..=300.0).contains(&v);
        if !side(self.width_mm) || !side(self.height_mm) {
            return Err(format!(
                "label {} × {} mm: each side must be 20-300 mm (a 4 × 3 inch label is 101.6 × 76.2)",
                self.width_mm, self.height_mm
            ));
        }
        if !(100..=600).contains(&self.dpi) {
            return Err(format!(
                "dpi {} must be 100-600 (Zebra printers are 203 or 300)",
                self.dpi
            ));
        }
        Ok(())
    }
}

/// Every problem of a template, each naming the field and what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("badge template: {}", .0.join("; "))]
pub struct TemplateError(pub Vec<String>);

impl Template {
    /// The template used when none is configured: the event's name on top, the attendee's
    /// name large across the label, company and role below it on the left, the ticket's QR
    /// code on the right.
    pub fn default_badge() -> Self {
        let text = |source, x, y, w, h, bold, align| Field::Text {
            source,
            text: None,
            area: Area { x, y, w, h },
            bold,
            align,
        };
        Self {
            fields: vec![
                text(Source::EventName, 5.0, 5.0, 90.0, 9.0, false, Align::Center),
                text(Source::Name, 5.0, 18.0, 90.0, 24.0, true, Align::Center),
                text(Source::Company, 5.0, 52.0, 55.0, 11.0, false, Align::Left),
                text(Source::Role, 5.0, 68.0, 55.0, 9.0, true, Align::Left),
                Field::Qr {
                    x: 62.0,
                    y: 48.0,
                    size: 44.0,
                },
            ],
        }
    }

    /// Parses and checks a template in JSON.
    pub fn from_json(text: &str) -> Result<Self, TemplateError> {
        let template: Template = serde_json::from_str(text).map_err(|e| {
            TemplateError(vec![format!(
                "{e}; a template is {{\"fields\": [{{\"type\": \"text\", \"source\": \"name\", \"x\": 5, \"y\": 20, \"w\": 90, \"h\": 25, \"bold\": true}}, {{\"type\": \"qr\", \"x\": 64, \"y\": 48, \"size\": 44}}]}}"
            )])
        })?;
        template.check()?;
        Ok(template)
    }

    /// Checks every field: boxes inside the label, literal text where `source = "text"`.
    pub fn check(&self) -> Result<(), TemplateError> {
        let mut problems = Vec::new();
        if self.fields.is_empty() {
            problems.push("`fields` is empty; a badge needs at least the name".to_string());
        }
        if self.fields.len() > MAX_FIELDS {
            problems.push(format!(
                "{} fields; at most {MAX_FIELDS}",
                self.fields.len()
            ));
        }
        for (n, field) in self.fields.iter().enumerate() {
            let at = format!("field {}", n + 1);
            match field {
                Field::Text {
                    source, text, area, ..
                } => {
                    check_span(&mut problems, &at, "x", "w", area.x, area.w);
                    check_span(&mut problems, &at, "y", "h", area.y, area.h);
                    match (source, text) {
                        (Source::Text, None) => problems.push(format!(
                            "{at}: `source = \"text\"` needs a `text` to print"
                        )),
                        (Source::Text, Some(t)) if t.len() > MAX_TEXT_BYTES => problems.push(
                            format!("{at}: `text` is longer than {MAX_TEXT_BYTES} bytes"),
                        ),
                        (Source::Text, Some(_)) => {}
                        (_, Some(_)) => problems.push(format!(
                            "{at}: `text` is only for `source = \"text\"`; this field prints the attendee's data"
                        )),
                        (_, None) => {}
                    }
                }
                Field::Image { area, .. } => {
                    check_span(&mut problems, &at, "x", "w", area.x, area.w);
                    check_span(&mut problems, &at, "y", "h", area.y, area.h);
                }
                Field::Qr { x, y, size } => {
                    check_span(&mut problems, &at, "x", "size", *x, 0.0);
                    check_span(&mut problems, &at, "y", "size", *y, 0.0);
                    if !(size.is_finite() && (5.0..=100.0).contains(size)) {
                        problems.push(format!(
                            "{at}: `size` {size} must be 5-100 (percent of the label's shorter side)"
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TemplateError(problems))
        }
    }
}

impl Template {
    /// Reads every image field's file and checks it is a PNG of at most [`MAX_IMAGE_BYTES`]
    /// and 4096 × 4096 pixels.
    pub fn load_images(&mut self) -> Result<(), TemplateError> {
        let mut problems = Vec::new();
        for (n, field) in self.fields.iter_mut().enumerate() {
            let Field::Image { path, png, .. } = field else {
                continue;
            };
            match std::fs::read(&*path) {
                Ok(bytes) if bytes.len() > MAX_IMAGE_BYTES => problems.push(format!(
                    "field {}: `{path}` is larger than {MAX_IMAGE_BYTES} bytes; a logo needs far less",
                    n + 1
                )),
                Ok(bytes) => match super::logo::decode(&bytes) {
                    Ok(_) => *png = Some(Arc::new(bytes)),
                    Err(e) => problems.push(format!("field {}: `{path}`: {e}", n + 1)),
                },
                Err(e) => problems.push(format!(
                    "field {}: cannot read `{path}`: {e}; give a PNG file's path",
                    n + 1
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TemplateError(problems))
        }
    }
}

/// The largest logo file accepted.
pub const MAX_IMAGE_BYTES: usize = 4 << 20;

/// A start and a length in percent: both finite, the start 0-100, the length up to what is
/// left of the label.
fn check_span(problems: &mut Vec<String>, at: &str, start: &str, len: &str, s: f32, l: f32) {
    if !(s.is_finite() && (0.0..=100.0).contains(&s)) {
        problems.push(format!("{at}: `{start}` {s} must be 0-100 (percent)"));
    } else if !(l.is_finite() && l >= 0.0 && s + l <= 100.0) {
        problems.push(format!(
            "{at}: `{start}` + `{len}` = {} passes the label's edge; keep it at most 100",
            s + l
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_template_is_valid_and_round_trips_as_json() {
        let template = Template::default_badge();
        assert_eq!(template.check(), Ok(()));
        let text = serde_json::to_string(&template).unwrap_or_default();
        assert_eq!(Template::from_json(&text), Ok(template));
    }

    #[test]
    fn every_problem_is_named_with_its_field() {
        let text = r#"{"fields": [
            {"type": "text", "source": "name", "x": 50, "y": 10, "w": 60, "h": 20},
            {"type": "text", "source": "text", "x": 0, "y": 0, "w": 10, "h": 10},
            {"type": "qr", "x": -1, "y": 10, "size": 200}
        ]}"#;
        let Err(TemplateError(problems)) = Template::from_json(text) else {
            panic!("accepted a bad template");
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].starts_with("field 1: `x` + `w` = 110"),
            "{problems:?}"
        );
        assert!(problems[1].contains("field 2") && problems[1].contains("needs a `text`"));
        assert!(problems[2].contains("field 3: `x` -1"));
        assert!(problems[3].contains("`size` 200"));
    }

    #[test]
    fn unknown_keys_and_types_are_refused_with_the_shape_to_use() {
        for text in [
            r#"{"fields": [{"type": "text", "source": "name", "x": 0, "y": 0, "w": 1, "h": 1, "colour": "red"}]}"#,
            r#"{"fields": [{"type": "barcode", "x": 0, "y": 0}]}"#,
            r#"{"fields": [{"type": "text", "source": "nickname", "x": 0, "y": 0, "w": 1, "h": 1}]}"#,
            r#"{"fields": []"#,
        ] {
            let Err(TemplateError(problems)) = Template::from_json(text) else {
                panic!("accepted {text}");
            };
            assert!(problems[0].contains("a template is {"), "{problems:?}");
        }
    }

    #[test]
    fn empty_values_print_nothing() {
        let badge = Badge {
            name: "  Ada  ".into(),
            company: Some(" ".into()),
            role: None,
            ticket_code: Some("T-1".into()),
            event_name: "Conf".into(),
        };
        assert_eq!(badge.text(Source::Name, None), Some("Ada"));
        assert_eq!(badge.text(Source::Company, None), None);
        assert_eq!(badge.text(Source::Text, Some("Speaker")), Some("Speaker"));
    }
}
