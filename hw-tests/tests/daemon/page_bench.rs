//! The pages' long runs for BENCHMARKS.md, not part of the test command (each takes minutes):
//!
//! ```sh
//! cargo build --release --bins
//! VENUED_BIN=$PWD/target/release/venued cargo test -p hw-tests --test daemon -- \
//!     --ignored page_bench:: --nocapture --test-threads=1
//! ```
//!
//! `VENUE_BENCH_SCANS` (default 600: ten minutes at one a second) and `VENUE_BENCH_UPDATES`
//! (default 20,000: a display's day compressed) change their length.

use std::time::Duration;

use hw_tests::Admin;

use super::browser::{Appliance, drive};

/// A kiosk sustaining one scan a second: each scan's time from the scanner's Enter to the result
/// on screen (measured in the page), as percentiles.
#[tokio::test]
#[ignore = "a 10-minute benchmark: run by hand for BENCHMARKS.md"]
async fn a_kiosk_sustains_a_scan_a_second() {
    let scans: usize = std::env::var("VENUE_BENCH_SCANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let dir = tempfile::tempdir().unwrap();
    let appliance = Appliance::new(dir.path().join("data"));
    let venued = appliance.start().await;
    let mut csv = String::from("id,name,ticket_code\n");
    for i in 0..scans {
        csv.push_str(&format!("b{i},Bench Person {i},B{i:05}\n"));
    }
    Admin::new(&venued).import_csv(csv).await.unwrap();
    let password = Admin::new(&venued).device("desk-b", "kiosk").await.unwrap();
    drive(
        "kiosk_bench.py",
        &[
            ("VENUE_KIOSK_PASSWORD", password),
            ("VENUE_BENCH_SCANS", scans.to_string()),
        ],
        &appliance,
        Some(venued),
        Duration::from_secs(scans as u64 * 2 + 120),
    )
    .await;
}

/// A display's day compressed: `VENUE_BENCH_UPDATES` content updates and announcements as fast as
/// the appliance takes them, the JS heap and the DOM's size sampled as they go.
#[tokio::test]
#[ignore = "a benchmark of minutes: run by hand for BENCHMARKS.md"]
async fn a_displays_memory_over_a_compressed_day() {
    let updates: usize = std::env::var("VENUE_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let mut appliance = Appliance::new(dir.path().join("data"));
    appliance.args.push("--demo".into());
    let venued = appliance.start().await;
    let password = Admin::new(&venued)
        .device("door-b", "signage")
        .await
        .unwrap();
    let staff = super::hub::token(&venued, "att-0001", &["staff"]).await;
    drive(
        "signage_bench.py",
        &[
            ("VENUE_DISPLAY_PASSWORD", password),
            ("VENUE_ADMIN_TOKEN", venued.admin_token()),
            ("VENUE_STAFF_TOKEN", staff),
            ("VENUE_BENCH_UPDATES", updates.to_string()),
        ],
        &appliance,
        Some(venued),
        Duration::from_secs(3600),
    )
    .await;
}
