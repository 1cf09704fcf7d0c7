//! Subsystem states, as reported by `/readyz`, `/api/v1/status` and the retained `daemon/status`.
//!
//! Each subsystem sets its own state; the daemon is ready while none has failed. A degraded
//! subsystem (say, BLE with its adapter unplugged) is reported but does not make the appliance
//! unready: check-ins and messages must keep working.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// The state of one subsystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "lowercase")]
pub enum SubsystemState {
    /// Working.
    Ok,
    /// Working with reduced function; the detail says what is missing.
    Degraded(String),
    /// Not working; the appliance is not ready. The detail says why.
    Failed(String),
    /// Not configured in this run.
    Disabled,
}

/// Shared, named subsystem states.
#[derive(Clone, Default)]
pub struct Subsystems {
    states: Arc<RwLock<BTreeMap<&'static str, SubsystemState>>>,
}

impl Subsystems {
    /// Sets the state of `name`.
    pub fn set(&self, name: &'static str, state: SubsystemState) {
        let mut states = self
            .states
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if states.get(name) != Some(&state) {
            tracing::info!(subsystem = name, state = ?state, "subsystem state changed");
        }
        states.insert(name, state);
    }

    /// A copy of every state.
    pub fn snapshot(&self) -> BTreeMap<&'static str, SubsystemState> {
        self.states
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
