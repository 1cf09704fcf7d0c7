//! The one latency summary every mode reports: an HDR histogram of microseconds (3 significant
//! digits), so p50/p90/p99 mean the same thing in every figure of BENCHMARKS.md, and worker
//! processes can send theirs to the parent to be merged exactly.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latencies, recorded in milliseconds, kept in microseconds.
#[derive(Clone)]
pub(crate) struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        // 1 µs to one hour; anything outside is clamped into range.
        Self(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
            }),
        )
    }
}

impl Latencies {
    /// Records one latency of `ms` milliseconds.
    pub(crate) fn record(&mut self, ms: f64) {
        self.0
            .saturating_record((ms.max(0.0) * 1000.0).round() as u64);
    }

    /// All of `ms`.
    pub(crate) fn of(ms: &[f64]) -> Self {
        let mut all = Self::default();
        for &m in ms {
            all.record(m);
        }
        all
    }

    /// How many were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// The `p`th percentile in milliseconds (NaN when empty).
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        match self.0.is_empty() {
            true => f64::NAN,
            false => self.0.value_at_quantile(p / 100.0) as f64 / 1000.0,
        }
    }

    /// p50, p90, p99 and max, in milliseconds.
    pub(crate) fn spread(&self) -> Value {
        json!({
            "p50": self.percentile(50.0),
            "p90": self.percentile(90.0),
            "p99": self.percentile(99.0),
            "max": match self.0.is_empty() {
                true => f64::NAN,
                false => self.0.max() as f64 / 1000.0,
            },
        })
    }

    /// The recorded values as `[[µs, count], …]`, for a parent process to [`merge`](Self::merge).
    pub(crate) fn to_json(&self) -> Value {
        self.0
            .iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect()
    }

    /// Adds what [`to_json`](Self::to_json) gave.
    pub(crate) fn merge(&mut self, other: &Value) {
        for pair in other.as_array().into_iter().flatten() {
            if let (Some(us), Some(n)) = (pair[0].as_u64(), pair[1].as_u64()) {
                let _ = self.0.record_n(us.max(1), n);
            }
        }
    }
}
