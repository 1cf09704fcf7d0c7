//! Replica load: lag from commit to the bucket at a fixed write rate, and restore time of a large
//! database by `venued restore` and by the real `litestream restore`, side by side. The bucket is
//! moto on loopback (PyPI `moto[server]`, from scripts/test's venv).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hw_tests::s3::{Moto, litestream};
use hw_tests::{Admin, VenuedBuilder, binary};
use sync_agent::replica::layout::SNAPSHOT_LEVEL;
use sync_agent::replica::restore::snapshot_of_file;
use sync_agent::replica::store::{ReplicaStore, S3Location, S3Store};

/// `replica-lag`.
pub(crate) async fn lag(rate: u64, seconds: u64) -> anyhow::Result<()> {
    let moto = Moto::start("venue").await?;
    let dir = tempfile::tempdir()?;
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .env("VENUED_MQTT_ENABLED", "false")
        .env("VENUED_LOG_FILTER", "warn")
        .env("VENUED_REPLICA_ENABLED", "true")
        .env("VENUED_REPLICA_BUCKET", "venue")
        .env("VENUED_REPLICA_PATH", "bench")
        .env("VENUED_REPLICA_ENDPOINT", &moto.endpoint)
        .env("VENUED_REPLICA_ACCESS_KEY_ID", "test")
        .env("VENUED_REPLICA_SECRET_ACCESS_KEY", "test")
        .spawn()
        .await?;
    let admin = std::sync::Arc::new(Admin::new(&venued));
    let status_url = venued.url("/api/v1/status");
    let started = Instant::now();
    // Sampler: (time, staged TXID, uploaded TXID) every 10 ms.
    let sampler = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(seconds + 10) {
            if let Ok(r) = client.get(&status_url).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    let s = &v["replica"]["state"];
                    samples.push((
                        started.elapsed().as_secs_f64(),
                        s["staged_txid"].as_u64().unwrap_or(0),
                        s["uploaded_txid"].as_u64().unwrap_or(0),
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        samples
    });
    let mut every = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let total = rate * seconds;
    for i in 0..total {
        every.tick().await;
        let admin = admin.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let ok = admin
                .call(
                    reqwest::Method::PUT,
                    &format!("/api/v1/admin/attendees/w{}", i % 5000),
                    Some(serde_json::json!({"name": format!("n{i}")})),
                )
                .await
                .map(|(s, _)| s < 300)
                .unwrap_or(false);
            let _ = done.send((ok, started.elapsed().as_secs_f64()));
        });
    }
    drop(done_tx);
    let mut writes = Vec::new();
    let mut errors = 0u64;
    while let Some((ok, at)) = done_rx.recv().await {
        match ok {
            true => writes.push(at),
            false => errors += 1,
        }
    }
    let samples = sampler.await?;
    // A write acked at t is in TXID staged(t) + 1 (the next sync stages everything committed);
    // its lag is the first sample showing that TXID uploaded, minus t.
    let mut lags = Vec::with_capacity(writes.len());
    for t in &writes {
        let Some(before) = samples.iter().rev().find(|s| s.0 <= *t) else {
            continue;
        };
        let target = before.1 + 1;
        if let Some(up) = samples.iter().find(|s| s.0 >= *t && s.2 >= target) {
            lags.push((up.0 - t) * 1000.0);
        }
    }
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| crate::percentile(&lags, p * 100.0);
    crate::print(&serde_json::json!({
        "mode": "replica-lag",
        "rate": rate,
        "writes_ok": writes.len(),
        "errors": errors,
        "measured": lags.len(),
        "lag_ms_p50": pct(0.5),
        "lag_ms_p99": pct(0.99),
        "lag_ms_max": lags.last(),
        "txids": samples.last().map(|s| s.2),
        "sync_interval_ms": 1000,
    }));
    venued.terminate(Duration::from_secs(20)).await?;
    Ok(())
}

/// `replica-restore`.
pub(crate) async fn restore(mib: u64) -> anyhow::Result<()> {
    let moto = Moto::start("venue").await?;
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("source.db");
    // Rows of hex text: compressible like real records, unlike raw random bytes.
    let rows = mib * 1024 * 1024 / 1100;
    hw_tests::s3::sqlite3(
        &source,
        &format!(
            "PRAGMA page_size = 4096; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO t SELECT i, hex(randomblob(500)) FROM n;"
        ),
    )?;
    let size = std::fs::metadata(&source)?.len();
    let url = format!("s3://venue/big?endpoint={}", moto.endpoint);
    let s3 = S3Store::connect_with_keys(S3Location::from_url(&url)?, "test", "test").await;
    let encoded = Instant::now();
    let bytes = snapshot_of_file(&source, 1, 0)?;
    let ltx_bytes = bytes.len();
    let encode_secs = encoded.elapsed().as_secs_f64();
    s3.put(SNAPSHOT_LEVEL, 1, 1, bytes, 0).await?;
    let ours = dir.path().join("venued.db");
    let t = Instant::now();
    let out = tokio::process::Command::new(binary("venued"))
        .args([
            "restore",
            "--to",
            ours.to_str().context("path")?,
            "--from",
            &url,
        ])
        .env("VENUED_REPLICA_ACCESS_KEY_ID", "test")
        .env("VENUED_REPLICA_SECRET_ACCESS_KEY", "test")
        .output()
        .await?;
    let venued_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "venued restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = dir.path().join("litestream.db");
    let t = Instant::now();
    let out = litestream(&["restore", "-o", theirs.to_str().context("path")?, &url]).await;
    let litestream_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "litestream restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let same =
        |p: &Path| -> anyhow::Result<bool> { Ok(std::fs::read(p)? == std::fs::read(&source)?) };
    crate::print(&serde_json::json!({
        "mode": "replica-restore",
        "database_bytes": size,
        "ltx_bytes": ltx_bytes,
        "encode_secs": encode_secs,
        "venued_restore_secs": venued_secs,
        "litestream_restore_secs": litestream_secs,
        "venued_identical": same(&ours)?,
        "litestream_identical": same(&theirs)?,
    }));
    Ok(())
}
