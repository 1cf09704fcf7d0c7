//! systemd integration: readiness, status, stopping and watchdog notifications.
//!
//! All of it is a no-op when `NOTIFY_SOCKET` is unset (running by hand, or under a supervisor
//! that is not systemd).

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications; failures are logged, never fatal (the service manager may be gone).
pub(crate) fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// The watchdog interval systemd asked for, if any: `WATCHDOG_USEC`, unless `WATCHDOG_PID`
/// names another process (the same rule as libsystemd's `sd_watchdog_enabled`).
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval, but only while the store's writer answers: a daemon
/// whose writer is wedged stops pinging, and systemd restarts it.
pub(crate) async fn watchdog(store: venued::store::Store, interval: Duration) {
    let half = interval / 2;
    let mut every = tokio::time::interval(half);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match tokio::time::timeout(half, store.ping()).await {
            Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store not writable; withholding the watchdog ping")
            }
            Err(_) => tracing::error!("store writer did not answer; withholding the watchdog ping"),
        }
    }
}
