//! Each scanner's traffic as venue IT's console shows it: adverts in all, adverts a second over
//! the last tick, when it was last heard. The presence task counts without a lock and publishes
//! once a tick; only scanners of the configuration are counted, so the list stays bounded.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;

/// One scanner's traffic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScannerStats {
    /// The scanner's id (the adapter, or a gateway's device id).
    pub scanner: String,
    /// Adverts heard since start.
    pub adverts: u64,
    /// Adverts a second over the last tick.
    pub adverts_per_sec: f64,
    /// When the last advert was heard (ms since the epoch, the advert's own time).
    pub last_seen_ms: Option<u64>,
}

/// The shared view, read by the console's overview.
#[derive(Clone, Default)]
pub struct ScannerView(Arc<RwLock<Vec<ScannerStats>>>);

impl ScannerView {
    /// The scanners as of the last tick.
    pub fn get(&self) -> Vec<ScannerStats> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, stats: Vec<ScannerStats>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = stats;
    }
}

/// The presence task's own counts between ticks.
#[derive(Default)]
pub(super) struct ScannerCounts {
    /// scanner → (adverts in all, adverts since the last tick, last heard).
    counts: BTreeMap<String, (u64, u64, Option<u64>)>,
    last_tick: Option<Instant>,
}

impl ScannerCounts {
    /// Counts an advert of a configured scanner.
    pub(super) fn advert(&mut self, scanner: &str, at_ms: u64) {
        let entry = match self.counts.get_mut(scanner) {
            Some(entry) => entry,
            None => self.counts.entry(scanner.to_string()).or_default(),
        };
        entry.0 += 1;
        entry.1 += 1;
        entry.2 = Some(entry.2.map_or(at_ms, |last| last.max(at_ms)));
    }

    /// Publishes the counts to `view`, the rates over the time since the last tick.
    pub(super) fn publish(&mut self, view: &ScannerView, now: Instant) {
        let secs = self
            .last_tick
            .map(|t| now.duration_since(t).as_secs_f64())
            .filter(|s| *s > 0.0);
        self.last_tick = Some(now);
        let stats = self
            .counts
            .iter_mut()
            .map(|(scanner, (all, since, last))| {
                let rate = secs.map_or(0.0, |s| *since as f64 / s);
                *since = 0;
                ScannerStats {
                    scanner: scanner.clone(),
                    adverts: *all,
                    adverts_per_sec: (rate * 10.0).round() / 10.0,
                    last_seen_ms: *last,
                }
            })
            .collect();
        view.set(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_are_per_tick_and_totals_keep_growing() {
        let view = ScannerView::default();
        let mut counts = ScannerCounts::default();
        let start = Instant::now();
        counts.publish(&view, start);
        for at in 0..20 {
            counts.advert("scanner-a", 1_000 + at);
        }
        counts.advert("scanner-b", 500);
        counts.publish(&view, start + Duration::from_secs(2));
        let stats = view.get();
        assert_eq!(stats.len(), 2);
        assert_eq!(
            (
                stats[0].adverts,
                stats[0].adverts_per_sec,
                stats[0].last_seen_ms
            ),
            (20, 10.0, Some(1_019))
        );
        counts.publish(&view, start + Duration::from_secs(3));
        let quiet = view.get();
        assert_eq!((quiet[0].adverts, quiet[0].adverts_per_sec), (20, 0.0));
    }
}
