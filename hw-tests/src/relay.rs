//! A real `venue-relay` process for the sync tests, on a fixed loopback port so it can be killed
//! and brought back where the appliances expect it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::binary;

/// A running relay.
pub struct Relay {
    child: Child,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Its `--database`.
    pub database: String,
    log_path: PathBuf,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `sqlite:` database in `dir`.
pub fn sqlite_database(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("relay.db").display())
}

impl Relay {
    /// Starts `venue-relay serve` on `port` with `database`, logging to `log`; returns once
    /// `/healthz` answers.
    pub async fn start(database: &str, port: u16, log: &Path) -> anyhow::Result<Relay> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(binary("venue-relay"))
            .args(["--database", database, "serve", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start venue-relay")?;
        let mut relay = Relay {
            child,
            port,
            database: database.into(),
            log_path: log.to_path_buf(),
        };
        // The relay has no readiness notification; its health endpoint answering is the event.
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(relay.url("/healthz")).send().await {
                if r.status().is_success() {
                    return Ok(relay);
                }
            }
            if let Some(status) = relay.child.try_wait()? {
                bail!("venue-relay exited ({status}); log:\n{}", relay.log());
            }
            if Instant::now() >= deadline {
                bail!("venue-relay not healthy within 30 s; log:\n{}", relay.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// `http://127.0.0.1:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `kill -9` and reap.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Runs `venue-relay --database DB args…` to completion; its stdout.
pub async fn cli(database: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary("venue-relay"))
        .arg("--database")
        .arg(database)
        .args(args)
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "venue-relay {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Adds an appliance of `org` for `events`; its id and token.
pub async fn add_appliance(
    database: &str,
    org: &str,
    events: &[&str],
) -> anyhow::Result<(String, String)> {
    let mut args = vec!["appliance", "add", "--json", "--org", org];
    for e in events {
        args.extend(["--event", e]);
    }
    let out: serde_json::Value = serde_json::from_str(&cli(database, &args).await?)?;
    Ok((
        out["id"].as_str().context("id")?.to_string(),
        out["token"].as_str().context("token")?.to_string(),
    ))
}

/// A fresh PostgreSQL database on the server `VENUE_TEST_PG` names (scripts/test starts one).
pub async fn fresh_pg_database() -> anyhow::Result<String> {
    let server = std::env::var("VENUE_TEST_PG").context(
        "VENUE_TEST_PG (a PostgreSQL URL) is unset; scripts/test starts PostgreSQL and sets it",
    )?;
    let name = format!("relay_{}", uuid::Uuid::new_v4().simple());
    let out = Command::new("psql")
        .arg(&server)
        .args(["-q", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .await
        .context("psql")?;
    if !out.status.success() {
        bail!(
            "cannot create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    match server.rsplit_once('/') {
        Some((base, _)) => Ok(format!("{base}/{name}")),
        None => bail!("VENUE_TEST_PG `{server}` has no database part"),
    }
}
