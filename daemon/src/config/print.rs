//! `[print]`: badge printing at check-in (printers themselves are registered through the admin
//! API and the console).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, check_range, invalid};
use crate::print::template::Template;

/// Default seconds between printer health checks.
pub const DEFAULT_PROBE_INTERVAL_SECS: u64 = 15;
/// Default longest wait between two send attempts of a job, seconds.
pub const DEFAULT_RETRY_MAX_SECS: u64 = 30;
/// Default milliseconds between two looks at a job the printer holds.
pub const DEFAULT_TRACK_INTERVAL_MS: u64 = 1000;
/// Default time one exchange with a printer may take, seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 20;

/// `[print]`: badge printing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrintConfig {
    /// Run the print queue and the printer health checks. Default true (nothing prints until a
    /// printer is registered).
    pub enabled: bool,
    /// A badge template (JSON) to use instead of the built-in one; docs/operations.md
    /// describes the format. Default empty: the built-in template.
    pub template: String,
    /// Extra font files (TTF/OTF/TTC), comma-separated, tried after DejaVu and the system's
    /// Noto fonts for scripts those lack.
    pub fonts: String,
    /// Seconds between printer health checks. Default 15.
    pub probe_interval_secs: u64,
    /// Longest wait between two send attempts of a job (doubling from 1 s), seconds. Default 30.
    pub retry_max_secs: u64,
    /// Milliseconds between two looks at a job an IPP printer holds. Default 1000.
    pub track_interval_ms: u64,
    /// Seconds one exchange with a printer may take. Default 20.
    pub timeout_secs: u64,
}

impl Default for PrintConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            template: String::new(),
            fonts: String::new(),
            probe_interval_secs: DEFAULT_PROBE_INTERVAL_SECS,
            retry_max_secs: DEFAULT_RETRY_MAX_SECS,
            track_interval_ms: DEFAULT_TRACK_INTERVAL_MS,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

impl PrintConfig {
    /// The extra font files.
    pub fn font_paths(&self) -> Vec<PathBuf> {
        self.fonts
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

/// Checks `[print]` and loads its template: the built-in one when none is named.
pub(super) fn validate(print: &PrintConfig, problems: &mut Vec<ConfigProblem>) -> Template {
    check_range(
        problems,
        "print.probe_interval_secs",
        print.probe_interval_secs,
        1,
        3600,
    );
    check_range(
        problems,
        "print.retry_max_secs",
        print.retry_max_secs,
        1,
        3600,
    );
    check_range(
        problems,
        "print.track_interval_ms",
        print.track_interval_ms,
        50,
        60_000,
    );
    check_range(problems, "print.timeout_secs", print.timeout_secs, 1, 300);
    for path in print.font_paths() {
        if !path.is_file() {
            invalid(
                problems,
                "print.fonts",
                format!(
                    "`{}` is not a file; list font files like \"/usr/share/fonts/x.ttf\"",
                    path.display()
                ),
            );
        }
    }
    if print.template.is_empty() {
        return Template::default_badge();
    }
    match std::fs::read_to_string(&print.template) {
        Ok(text) => {
            match Template::from_json(&text).and_then(|mut t| t.load_images().map(|()| t)) {
                Ok(template) => template,
                Err(e) => {
                    for problem in e.0 {
                        invalid(
                            problems,
                            "print.template",
                            format!("{}: {problem}", print.template),
                        );
                    }
                    Template::default_badge()
                }
            }
        }
        Err(e) => {
            invalid(
                problems,
                "print.template",
                format!(
                    "cannot read `{}`: {e}; give a JSON template's path, or leave it empty for the built-in one",
                    print.template
                ),
            );
            Template::default_badge()
        }
    }
}
