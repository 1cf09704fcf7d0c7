//! The relay's Prometheus metrics.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sync_agent::wire::PushResponse;

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    ops: Family<Vec<(String, String)>, Counter>,
    refused: Family<Vec<(String, String)>, Counter>,
    pushes: Family<Vec<(String, String)>, Counter>,
    push_seconds: Histogram,
    /// Pull requests.
    pub pulls: Counter,
    /// Ops served by pulls.
    pub pulled: Counter,
    /// Long-polls waiting now.
    pub polls_waiting: Gauge,
    /// Failed authentications.
    pub auth_failures: Counter,
    /// Pushes refused for an op outside the appliance's events.
    pub scope_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("venue_relay");
        let ops = Family::default();
        registry.register(
            "ops",
            "Pushed ops by result (accepted, duplicate, rejected)",
            ops.clone(),
        );
        let refused = Family::default();
        registry.register(
            "refused_ops",
            "Pushed ops refused (parked), by reason code (invalid_kind, clock_ahead, origin_forbidden, ...)",
            refused.clone(),
        );
        let pushes = Family::default();
        registry.register(
            "push_requests",
            "Push requests by HTTP status",
            pushes.clone(),
        );
        let push_seconds =
            Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        registry.register(
            "push_seconds",
            "Push handling time, storage commit included",
            push_seconds.clone(),
        );
        let pulls = Counter::default();
        registry.register("pull_requests", "Pull requests", pulls.clone());
        let pulled = Counter::default();
        registry.register("pulled_ops", "Ops served to pulls", pulled.clone());
        let polls_waiting = Gauge::default();
        registry.register(
            "long_polls_waiting",
            "Long-polls waiting for ops",
            polls_waiting.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests with a missing, unknown or revoked token",
            auth_failures.clone(),
        );
        let scope_refusals = Counter::default();
        registry.register(
            "scope_refusals",
            "Pushes refused for an op outside the appliance's events",
            scope_refusals.clone(),
        );
        Self {
            registry,
            ops,
            refused,
            pushes,
            push_seconds,
            pulls,
            pulled,
            polls_waiting,
            auth_failures,
            scope_refusals,
        }
    }
}

impl Metrics {
    /// Counts a push's ops by result.
    pub fn ops(&self, r: &PushResponse) {
        for (result, n) in [
            ("accepted", r.accepted.len()),
            ("duplicate", r.duplicates.len()),
            ("rejected", r.rejected.len()),
        ] {
            self.ops
                .get_or_create(&vec![("result".into(), result.into())])
                .inc_by(n as u64);
        }
    }

    /// Counts one refused op (or refused push, for `node_taken`) by its reason code.
    pub fn refused_op(&self, code: &str) {
        self.refused
            .get_or_create(&vec![("code".into(), code.into())])
            .inc();
    }

    /// Counts a push request.
    pub fn push(&self, status: &str, took: Duration) {
        self.pushes
            .get_or_create(&vec![("status".into(), status.into())])
            .inc();
        self.push_seconds.observe(took.as_secs_f64());
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
