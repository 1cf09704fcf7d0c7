//! The embedded front-end files: each one's bytes, media type, ETag and gzip form, made once at
//! first use. The files live in `daemon/web/` and are compiled into the binary, so `cargo build`
//! alone makes a `venued` that serves every page (no Node.js, no bundler, nothing on disk).

use std::io::Write;
use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// One file as served.
pub struct Asset {
    /// The name under `/assets/` (or `index.html` for the app's page).
    pub name: &'static str,
    /// Its `Content-Type`.
    pub media_type: &'static str,
    /// The bytes as written.
    pub raw: Vec<u8>,
    /// The same, gzip-compressed; `None` when that would not be smaller.
    pub gzip: Option<Vec<u8>>,
    /// A strong validator: the first 16 hex digits of the SHA-256 of `raw`.
    pub etag: String,
}

/// The files under `/assets/`, as they are in the source tree.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "chat.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/chat.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/console.js"),
    ),
    (
        "hub.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/hub.js"),
    ),
    (
        "kiosk.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/kiosk.css"),
    ),
    (
        "kiosk.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/kiosk.js"),
    ),
    (
        "mqtt.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/mqtt.js"),
    ),
    (
        "names.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/names.js"),
    ),
    (
        "outbox.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/outbox.js"),
    ),
    (
        "page.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/page.js"),
    ),
    (
        "people.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/people.js"),
    ),
    (
        "saved.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/saved.js"),
    ),
    (
        "scans.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/scans.js"),
    ),
    (
        "signage.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/signage.css"),
    ),
    (
        "signage.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/signage.js"),
    ),
    (
        "scan.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/scan.js"),
    ),
    (
        "strings.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/strings.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../web/icon.svg"),
    ),
    (
        "app.webmanifest",
        "application/manifest+json",
        include_bytes!("../web/app.webmanifest"),
    ),
];

/// The app's page, before its asset links get their versions.
const INDEX: &str = include_str!("../web/index.html");
/// The check-in desk's page (`/kiosk`).
const KIOSK: &str = include_str!("../web/kiosk.html");
/// Venue IT's console (`/console`).
const CONSOLE: &str = include_str!("../web/console.html");
/// A room's display (`/signage/{display}`).
const SIGNAGE: &str = include_str!("../web/signage.html");
/// The service worker (served at `/sw.js`, so its scope is the whole app), before the URLs of
/// the shell it keeps get their versions.
const SERVICE_WORKER: &str = include_str!("../web/sw.js");

/// Every asset, then the page and the service worker (whose links carry the others' ETags).
struct Table {
    assets: Vec<Asset>,
    index: Asset,
    kiosk: Asset,
    signage: Asset,
    console: Asset,
    service_worker: Asset,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let assets: Vec<Asset> = FILES
        .iter()
        .map(|(name, media_type, bytes)| asset(name, media_type, bytes.to_vec()))
        .collect();
    let index = asset(
        "index.html",
        "text/html; charset=utf-8",
        versioned(INDEX, &assets),
    );
    let kiosk = asset(
        "kiosk.html",
        "text/html; charset=utf-8",
        versioned(KIOSK, &assets),
    );
    let signage = asset(
        "signage.html",
        "text/html; charset=utf-8",
        versioned(SIGNAGE, &assets),
    );
    let console = asset(
        "console.html",
        "text/html; charset=utf-8",
        versioned(CONSOLE, &assets),
    );
    let service_worker = asset(
        "sw.js",
        "text/javascript; charset=utf-8",
        versioned(SERVICE_WORKER, &assets),
    );
    Table {
        assets,
        index,
        kiosk,
        signage,
        console,
        service_worker,
    }
});

/// `text` with every `"/assets/app.js"` as `"/assets/app.js?v=<etag>"`: a changed file gets a
/// new URL, so browsers may keep each version for a year and still never run a stale one.
fn versioned(text: &str, assets: &[Asset]) -> Vec<u8> {
    let mut text = text.to_string();
    for a in assets {
        let link = format!("/assets/{}\"", a.name);
        text = text.replace(&link, &format!("/assets/{}?v={}\"", a.name, a.etag));
    }
    text.into_bytes()
}

fn asset(name: &'static str, media_type: &'static str, raw: Vec<u8>) -> Asset {
    let etag = hex::encode(&Sha256::digest(&raw)[..8]);
    let gzip = compress(&raw).filter(|z| z.len() < raw.len());
    Asset {
        name,
        media_type,
        raw,
        gzip,
        etag,
    }
}

fn compress(raw: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(raw).ok()?;
    encoder.finish().ok()
}

/// The asset called `name`, if there is one.
pub fn get(name: &str) -> Option<&'static Asset> {
    TABLE.assets.iter().find(|a| a.name == name)
}

/// The app's page.
pub fn index() -> &'static Asset {
    &TABLE.index
}

/// The check-in desk's page.
pub fn kiosk() -> &'static Asset {
    &TABLE.kiosk
}

/// A room display's page.
pub fn signage() -> &'static Asset {
    &TABLE.signage
}

/// Venue IT's console page.
pub fn console() -> &'static Asset {
    &TABLE.console
}

/// The app's service worker.
pub fn service_worker() -> &'static Asset {
    &TABLE.service_worker
}

/// Every asset, the page and the service worker.
pub fn all() -> impl Iterator<Item = &'static Asset> {
    TABLE.assets.iter().chain([
        &TABLE.index,
        &TABLE.kiosk,
        &TABLE.signage,
        &TABLE.service_worker,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_link_every_script_and_style_with_its_version() {
        for (page, names) in [
            (index(), &["app.css", "app.js", "app.webmanifest"][..]),
            (kiosk(), &["app.css", "kiosk.css", "kiosk.js"][..]),
            (signage(), &["signage.css", "signage.js"][..]),
            (console(), &["app.css", "console.css", "console.js"][..]),
        ] {
            let text = String::from_utf8(page.raw.clone()).unwrap_or_default();
            for name in names {
                let asset = get(name).unwrap_or_else(|| panic!("{name} is embedded"));
                let link = format!("/assets/{name}?v={}\"", asset.etag);
                assert!(text.contains(&link), "{} links {link}", page.name);
            }
        }
    }

    #[test]
    fn the_service_worker_keeps_every_file_at_its_version() {
        let sw = String::from_utf8(service_worker().raw.clone()).unwrap_or_default();
        for a in &TABLE.assets {
            let link = format!("\"/assets/{}?v={}\"", a.name, a.etag);
            assert!(sw.contains(&link), "sw.js keeps {link}");
        }
    }

    #[test]
    fn every_file_the_page_the_worker_or_a_module_names_is_embedded() {
        for a in all() {
            let text = String::from_utf8_lossy(&a.raw);
            let named = text
                .split("\"/assets/")
                .skip(1)
                .chain(text.split("from \"./").skip(1))
                .filter_map(|rest| rest.split(['"', '?']).next())
                // `"/assets/"` alone is a prefix (the worker's), not a file.
                .filter(|name| !name.is_empty());
            for name in named {
                assert!(
                    get(name).is_some(),
                    "{} names {name}, which is not embedded",
                    a.name
                );
            }
        }
    }

    #[test]
    fn the_pages_have_no_inline_script_or_style_and_no_other_origin() {
        for page in [index(), kiosk(), signage(), console()] {
            let text = String::from_utf8(page.raw.clone()).unwrap_or_default();
            // Every <script> has a src (the CSP forbids inline script, so one would not run).
            for tag in text.split("<script").skip(1) {
                let open = tag.split('>').next().unwrap_or_default();
                assert!(
                    open.contains("src=\"/assets/"),
                    "inline script in {}: <script{open}>",
                    page.name
                );
            }
            assert!(!text.contains("style=\""), "inline style in {}", page.name);
        }
        for a in all() {
            // An SVG's XML namespace is a name, not a fetch.
            let text = String::from_utf8_lossy(&a.raw).replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{} names another origin (the venue may have no internet)",
                a.name
            );
        }
    }

    #[test]
    fn compressible_assets_are_served_smaller_and_round_trip() {
        use std::io::Read;
        let js = get("app.js").unwrap_or_else(|| panic!("app.js is embedded"));
        let gz = js
            .gzip
            .as_ref()
            .unwrap_or_else(|| panic!("app.js compresses"));
        assert!(gz.len() < js.raw.len());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap_or_default();
        assert_eq!(back, js.raw);
    }
}
