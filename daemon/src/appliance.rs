//! What the appliance image tells `venued` about the system it runs on: the image's version, the
//! root slot booted (A or B), and a provisioning file that was refused while the box kept its
//! earlier configuration. Operators see these in `/api/v1/status`, in `daemon/status` over MQTT,
//! on the console page and, through the sync report, in the relay's fleet view.
//!
//! The image passes them as environment variables (its `venued.service` drop-in reads the file
//! `venue-provision.service` writes at every boot) rather than `venued` reading `/proc/cmdline`:
//! the hardened unit's `ProcSubset=pid` hides it, and a plain Debian install has none of them.
//! The binary reads the environment and hands the variables in ([`SystemInfo::from_vars`]).

use std::io::Read;
use std::path::Path;

use serde::Serialize;

/// The image's release (`VENUE_EDGE_IMAGE_VERSION` in `/usr/lib/venue-edge/release`).
pub const IMAGE_VERSION_ENV: &str = "VENUE_EDGE_IMAGE_VERSION";
/// The root slot booted (RAUC's `rauc.slot=` on the kernel command line).
pub const SLOT_ENV: &str = "VENUE_EDGE_SLOT";
/// A file holding the problems of a provisioning file that was not applied.
pub const PROVISIONING_ERROR_ENV: &str = "VENUE_EDGE_PROVISIONING_ERROR_FILE";

/// At most this much of the provisioning error is read: it names every problem of one file, a
/// few KiB at most; a larger file is cut with a note rather than read whole.
const MAX_ERROR_BYTES: u64 = 16 * 1024;

/// The appliance image's facts about this system; every field is `None` outside the image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SystemInfo {
    /// The image's release, e.g. `1.2.0`.
    pub image_version: Option<String>,
    /// The root slot booted, e.g. `A`.
    pub slot: Option<String>,
    /// Why the provisioning file on the boot partition was not applied (the box runs on what
    /// it had before); `None` when the last file was applied or there was none.
    pub provisioning_error: Option<String>,
}

impl SystemInfo {
    /// From the image's variables, as `var` gives them (the binary passes the environment's). A
    /// value that is not what the image writes (too long, or not printable) is left out with a
    /// warning rather than shown.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        Self {
            image_version: var(IMAGE_VERSION_ENV).and_then(|v| checked(IMAGE_VERSION_ENV, v)),
            slot: var(SLOT_ENV).and_then(|v| checked(SLOT_ENV, v)),
            provisioning_error: var(PROVISIONING_ERROR_ENV)
                .and_then(|path| read_error(Path::new(&path))),
        }
    }
}

/// A version or slot name: short and printable, since it is shown on pages and sent upstream.
fn checked(name: &str, value: String) -> Option<String> {
    let ok = value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-~".contains(c));
    if !ok {
        tracing::warn!(variable = name, "ignored: not a short version or slot name");
    }
    ok.then_some(value)
}

/// The provisioning error's text, when the file exists; trimmed, at most [`MAX_ERROR_BYTES`].
fn read_error(path: &Path) -> Option<String> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the provisioning error");
            return Some(format!(
                "A provisioning file was not applied, but its problems cannot be read ({}: {e}).",
                path.display()
            ));
        }
    };
    let mut bytes = Vec::new();
    let read = file.take(MAX_ERROR_BYTES + 1).read_to_end(&mut bytes);
    if let Err(e) = read {
        tracing::warn!(path = %path.display(), error = %e, "cannot read the provisioning error");
    }
    let cut = bytes.len() as u64 > MAX_ERROR_BYTES;
    bytes.truncate(MAX_ERROR_BYTES as usize);
    let mut text = String::from_utf8_lossy(&bytes).replace('\r', "");
    if cut {
        text.push_str("\n… (cut; the whole text is in ");
        text.push_str(&path.display().to_string());
        text.push(')');
    }
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_printable_names_are_shown() {
        assert_eq!(
            checked("v", "1.2.0+git.3".into()),
            Some("1.2.0+git.3".into())
        );
        assert_eq!(checked("v", "A".into()), Some("A".into()));
        assert_eq!(checked("v", "<script>".into()), None);
        assert_eq!(checked("v", "x".repeat(65)), None);
    }

    #[test]
    fn the_provisioning_error_is_read_whole_or_cut_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provisioning-error");
        assert_eq!(read_error(&path), None, "no file, no error");
        std::fs::write(
            &path,
            "The file was NOT applied.\r\n  - `event.id`: bad\r\n",
        )
        .unwrap();
        assert_eq!(
            read_error(&path).as_deref(),
            Some("The file was NOT applied.\n  - `event.id`: bad")
        );
        std::fs::write(&path, "x".repeat(100_000)).unwrap();
        let cut = read_error(&path).unwrap();
        assert!(
            cut.len() < 17_000 && cut.ends_with("provisioning-error)"),
            "{cut}"
        );
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(read_error(&path), None, "an empty file is no error");
    }
}
