//! `[event]`: the event this appliance serves.

use serde::{Deserialize, Serialize};

use super::{ConfigProblem, invalid, is_valid_id};

/// Default event id; one appliance usually serves one event.
pub const DEFAULT_EVENT_ID: &str = "default";

/// `[event]`: the event this appliance serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventConfig {
    /// Event id: the scope of every op and the unit of isolation on the relay. Default `default`.
    pub id: String,
    /// Human-readable name. Default empty.
    pub name: String,
}

impl Default for EventConfig {
    fn default() -> Self {
        Self {
            id: DEFAULT_EVENT_ID.into(),
            name: String::new(),
        }
    }
}

/// Checks `[event]`.
pub(super) fn validate(event: &EventConfig, problems: &mut Vec<ConfigProblem>) {
    if !is_valid_id(&event.id) {
        invalid(
            problems,
            "event.id",
            format!(
                "`{}` must be 1-64 characters of a-z, A-Z, 0-9, `-`, `_` or `.`",
                event.id
            ),
        );
    }
}
