//! Sync load: backlog drain into the relay, and pull fan-out to many appliances. Real processes
//! throughout: release `venued`s and a `venue-relay` next to this tool, fsync on every side.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hw_tests::relay::{self, Relay};
use hw_tests::{Admin, Venued, VenuedBuilder};

const EVENT: &str = "bench";
/// Attendees per import request (well under the 16 MiB import limit).
const IMPORT_CHUNK: usize = 100_000;

fn relay_database(database: &str, dir: &Path) -> String {
    match database {
        "sqlite" => relay::sqlite_database(dir),
        url => url.to_string(),
    }
}

async fn appliance(dir: &Path, name: &str, token: &str, port: u16) -> anyhow::Result<Venued> {
    VenuedBuilder::new(&dir.join(name))
        .env("VENUED_EVENT_ID", EVENT)
        .env("VENUED_MQTT_ENABLED", "false")
        .env("VENUED_LOG_FILTER", "warn")
        .env("VENUED_SYNC_RELAY_URL", &format!("http://127.0.0.1:{port}"))
        .env("VENUED_SYNC_TOKEN", token)
        .spawn()
        .await
}

/// Writes `n` ops on `venued` (attendee imports, one op each); how long it took.
async fn backlog(venued: &Venued, n: usize) -> anyhow::Result<Duration> {
    let admin = Admin::new(venued);
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + IMPORT_CHUNK).min(n);
        let mut csv = String::with_capacity((end - i) * 32);
        csv.push_str("id,name\n");
        for k in i..end {
            csv.push_str(&format!("att-{k},Attendee {k}\n"));
        }
        admin.import_csv(csv).await?;
        i = end;
    }
    Ok(started.elapsed())
}

async fn status(venued: &Venued) -> anyhow::Result<serde_json::Value> {
    Ok(reqwest::get(venued.url("/api/v1/status"))
        .await?
        .json()
        .await?)
}

async fn kick(venued: &Venued) -> anyhow::Result<()> {
    let (code, _) = Admin::new(venued)
        .call(reqwest::Method::POST, "/api/v1/admin/sync/retry", None)
        .await?;
    anyhow::ensure!(code == 202, "sync retry answered {code}");
    Ok(())
}

/// `sync-drain`.
pub(crate) async fn drain(ops: usize, database: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = relay_database(database, dir.path());
    let (_, token) = relay::add_appliance(&database, "bench", &[EVENT]).await?;
    let port = relay::free_port()?;
    let source = appliance(dir.path(), "source", &token, port).await?;
    let write_time = backlog(&source, ops).await?;
    let queued = status(&source).await?["outbox"]["ops"]
        .as_u64()
        .unwrap_or(0);
    if queued < ops as u64 {
        bail!("only {queued} ops queued of {ops}");
    }
    let relay = Relay::start(&database, port, &dir.path().join("relay.log")).await?;
    kick(&source).await?;
    let started = Instant::now();
    let (mut rss_daemon, mut rss_relay) = (0, 0);
    loop {
        let left = status(&source).await?["outbox"]["ops"]
            .as_u64()
            .context("outbox")?;
        rss_daemon = rss_daemon.max(crate::rss_kib(source.pid())?);
        rss_relay = rss_relay.max(crate::rss_kib(relay.pid())?);
        if left == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("{left} ops still queued after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    crate::print(&serde_json::json!({
        "mode": "sync-drain",
        "relay_backend": if database.starts_with("sqlite:") { "sqlite" } else { "postgres" },
        "ops": queued,
        "backlog_written_secs": write_time.as_secs_f64(),
        "drain_secs": secs,
        "ops_per_sec": queued as f64 / secs,
        "rss_kib_max_daemon": rss_daemon,
        "rss_kib_max_relay": rss_relay,
    }));
    Ok(())
}

/// `sync-fanout`.
pub(crate) async fn fanout(appliances: usize, ops: usize, database: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = relay_database(database, dir.path());
    let port = relay::free_port()?;
    let (_, token) = relay::add_appliance(&database, "bench", &[EVENT]).await?;
    let source = appliance(dir.path(), "source", &token, port).await?;
    backlog(&source, ops).await?;
    let relay = Relay::start(&database, port, &dir.path().join("relay.log")).await?;
    kick(&source).await?;
    while status(&source).await?["outbox"]["ops"]
        .as_u64()
        .context("outbox")?
        > 0
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The relay holds the ops; now the receivers come online together and pull them.
    let mut receivers = Vec::with_capacity(appliances);
    for i in 0..appliances {
        let (_, token) = relay::add_appliance(&database, "bench", &[EVENT]).await?;
        receivers.push(appliance(dir.path(), &format!("receiver-{i}"), &token, port).await?);
    }
    let started = Instant::now();
    let mut done: Vec<Option<f64>> = vec![None; appliances];
    let mut rss_relay = 0;
    while done.iter().any(Option::is_none) {
        for (i, r) in receivers.iter().enumerate() {
            if done[i].is_none() {
                let applied = status(r).await?["sync"]["agent"]["applied_ops"]
                    .as_u64()
                    .unwrap_or(0);
                if applied >= ops as u64 {
                    done[i] = Some(started.elapsed().as_secs_f64());
                }
            }
        }
        rss_relay = rss_relay.max(crate::rss_kib(relay.pid())?);
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("receivers not done after 30 minutes: {done:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let times: Vec<f64> = done.into_iter().flatten().collect();
    let last = times.iter().cloned().fold(0.0, f64::max);
    crate::print(&serde_json::json!({
        "mode": "sync-fanout",
        "relay_backend": if database.starts_with("sqlite:") { "sqlite" } else { "postgres" },
        "appliances": appliances,
        "ops_each": ops,
        "first_done_secs": times.iter().cloned().fold(f64::MAX, f64::min),
        "last_done_secs": last,
        "delivered_ops_per_sec": (ops * appliances) as f64 / last,
        "rss_kib_max_relay": rss_relay,
    }));
    Ok(())
}
