//! `[log]`: the log filter and where records go.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, invalid};

/// Default log filter: info, with the embedded broker's chatter at warn.
pub const DEFAULT_LOG_FILTER: &str = "info,rumqttd=warn";

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter; the `RUST_LOG` environment variable wins. Default `info`.
    pub filter: String,
    /// `auto` (journald when `JOURNAL_STREAM` is set, else stderr), `journal`, or `text`.
    pub output: LogOutput,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: DEFAULT_LOG_FILTER.into(),
            output: LogOutput::Auto,
        }
    }
}

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogOutput {
    /// journald when started by systemd with its stderr connected to the journal, else stderr.
    Auto,
    /// Always journald (native protocol, structured fields).
    Journal,
    /// Always human-readable text on stderr.
    Text,
}

/// Checks `[log]`.
pub(super) fn validate(log: &LogConfig, problems: &mut Vec<ConfigProblem>) {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.filter) {
        invalid(
            problems,
            "log.filter",
            format!("`{}` is not a valid filter: {e}", log.filter),
        );
    }
}
