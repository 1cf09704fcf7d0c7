//! Badge rendering (`cargo bench -p venued --bench badge`): the default template drawn for one
//! attendee, as a PDF for IPP printers (shaping, font subsetting, the QR code) and as ZPL for
//! Zebra printers. The fonts are loaded once, as the print worker does.

use criterion::Criterion;
use venued::print::fonts::Fonts;
use venued::print::template::{Badge, Media, Template};
use venued::print::{pdf, zpl};

fn badge() -> Badge {
    Badge {
        name: "Zoë Ångström-Łukasiewicz".into(),
        company: Some("Analytical Engines Ltd".into()),
        role: Some("Speaker".into()),
        ticket_code: Some("TCK-0001-ABCD".into()),
        event_name: "Venue Edge Conf 2026".into(),
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    let (template, media, fonts) = (
        Template::default_badge(),
        Media::default(),
        Fonts::load(&[]),
    );
    let badge = badge();
    criterion.bench_function("badge/pdf", |b| {
        b.iter(|| pdf::render(&template, &badge, &media, &fonts).map(|p| p.len()))
    });
    criterion.bench_function("badge/zpl", |b| {
        b.iter(|| zpl::render(&template, &badge, &media, &fonts, None).map(|z| z.len()))
    });
    criterion.final_summary();
}
