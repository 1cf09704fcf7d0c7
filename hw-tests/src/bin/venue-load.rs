//! `venue-load`: measures a running `venued` from outside, as a separate process, and prints a
//! JSON summary. This build has one mode; WebSocket and MQTT load modes come with the hub and
//! MQTT work.
//!
//! - `venue-load idle --seconds 60`: starts a `venued` (the one built next to this tool) on a
//!   fresh data directory, lets it settle, then samples its CPU time and resident memory from
//!   `/proc` over the window.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hw_tests::VenuedBuilder;

/// Load and measurement tool for venued.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Idle CPU and RSS of a fresh venued (embedded defaults, loopback port 0).
    Idle {
        /// Length of the measuring window.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Seconds to wait after READY before measuring (start-up work is not idle).
        #[arg(long, default_value_t = 5)]
        settle: u64,
        /// Start the daemon with --demo (seeded sample event).
        #[arg(long)]
        demo: bool,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::Idle {
            seconds,
            settle,
            demo,
        } => idle(seconds, settle, demo).await,
    }
}

/// CPU time (user + system) of a process in clock ticks, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; fields after it are fixed. utime and stime are the
    // 14th and 15th fields overall, the 12th and 13th after the closing parenthesis.
    let after = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// Resident set size in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

async fn idle(seconds: u64, settle: u64, demo: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut builder = VenuedBuilder::new(&dir.path().join("data"));
    if demo {
        builder = builder.arg("--demo");
    }
    let venued = builder.spawn().await?;
    let pid = venued.pid();
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let ticks_per_sec =
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("CLK_TCK unknown")? as f64;
    let start_ticks = cpu_ticks(pid)?;
    let started = Instant::now();
    let mut rss_max = rss_kib(pid)?;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < Duration::from_secs(seconds) {
        every.tick().await;
        rss_max = rss_max.max(rss_kib(pid)?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_secs = (cpu_ticks(pid)? - start_ticks) as f64 / ticks_per_sec;
    let summary = serde_json::json!({
        "mode": "idle",
        "demo": demo,
        "window_secs": elapsed,
        "cpu_percent_of_one_core": 100.0 * cpu_secs / elapsed,
        "rss_kib_end": rss_kib(pid)?,
        "rss_kib_max": rss_max,
    });
    venued.terminate(Duration::from_secs(10)).await?;
    #[allow(clippy::print_stdout, reason = "the summary is the tool's output")]
    {
        println!("{summary}");
    }
    Ok(())
}
