//! Logging setup: human-readable text on stderr, or the systemd journal with structured fields.
//!
//! `systemd-journal-logger` is a `log` backend, while the workspace logs with `tracing`; the small
//! layer here hands each tracing event to it as a `log` record, with the event's fields as
//! key-values (the journal gets them as fields such as `DEVICE=kiosk-1`), so one `RUST_LOG`
//! filter governs both outputs.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use venued::config::{LogConfig, LogOutput};

/// Installs the global subscriber. `RUST_LOG` wins over `log.filter`.
pub(crate) fn init(config: &LogConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    let to_journal = match config.output {
        LogOutput::Journal => true,
        LogOutput::Text => false,
        LogOutput::Auto => systemd_journal_logger::connected_to_journal(),
    };
    if to_journal {
        match JournalLog::new() {
            Ok(journal) => {
                let journal = journal
                    .with_syslog_identifier("venued".into())
                    .add_extra_field("VENUED_VERSION", env!("CARGO_PKG_VERSION"));
                tracing_subscriber::registry()
                    .with(filter)
                    .with(JournalLayer { journal })
                    .init();
                return;
            }
            Err(e) => crate::say(format_args!(
                "venued: cannot reach journald ({e}); logging to stderr"
            )),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        // A record that cannot be written (stderr's file on a full disk) is lost; reporting that
        // goes through `eprintln!`, which would panic the daemon on the same full disk.
        .log_internal_errors(false)
        .init();
}

struct JournalLayer {
    journal: JournalLog,
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        let message = fields.message;
        let pairs: Vec<(&str, &str)> = fields
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A journal that went away must not take the daemon with it; nothing to do but drop.
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&pairs)
                .args(format_args!("{message}"))
                .build(),
        );
    }
}

/// The event's message and its other fields, rendered as text.
#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.pairs
                .push((field.name().to_ascii_uppercase(), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_str(field, &text);
    }
}
