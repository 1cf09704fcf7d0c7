//! `venue-load`: measures a running `venued` from outside, as a separate process, and prints a
//! JSON summary. Each mode starts a `venued` (the one built next to this tool) on a fresh data
//! directory and samples its CPU time and resident memory from `/proc`.
//!
//! - `idle`: a fresh daemon doing nothing.
//! - `mqtt-devices`: N MQTT kiosks connected as docs/protocol/mqtt-topics.md has them (their
//!   two result topics subscribed, their status published retained), then idle (keep-alives only).
//! - `mqtt-checkins`: kiosks checking attendees in over MQTT at a fixed rate; round-trip
//!   latency from publish to result (each result follows an fsync'd commit).
//! - `mqtt-fanin`: BLE gateways publishing QoS 0 adverts into the daemon's link at a fixed
//!   rate; every advert must come out in the presence engine's counter.
//! - `mqtt-compare`: the same MQTT scenarios (fan-in, fan-out, QoS 1) against venued and a real
//!   Mosquitto started by the tool, one after the other; both and their ratios.
//! - `ws-acks`: WebSocket senders posting in session-less channels at a fixed total rate;
//!   `message.send` → `ack` latency (each ack follows an fsync'd commit).
//! - `ws-fanout`: N WebSocket subscribers of `announcements`; a staff sender posts; latency from
//!   send to delivery at every subscriber, and losses.
//! - `sync-drain`: an appliance with an N-op backlog meets its relay; ops/s until the backlog is
//!   empty (fsync'd on both sides).
//! - `sync-fanout`: one appliance's N ops pulled by M other appliances through the relay.
//! - `replica-lag`: writes at a fixed rate with the S3 replica on (moto); commit → in the bucket.
//! - `replica-restore`: restore of a large database by `venued restore` and `litestream restore`.
//! - `soak`: a venue day with faults (a flapping relay, `kill -9`, a full disk); checks that
//!   nothing acknowledged was lost or doubled and that memory and files stay flat.

mod broker;
mod hub;
mod latency;
mod replica;
mod soak;
mod sync;

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
    /// N kiosks connected over MQTT as a kiosk connects, then idle.
    MqttDevices {
        /// Devices to connect.
        #[arg(long, default_value_t = 500)]
        devices: usize,
        /// Length of the measuring window once all are connected.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Connect only: no subscriptions, no status (what each connection costs by itself).
        #[arg(long)]
        bare: bool,
    },
    /// Check-ins over MQTT at a fixed rate, each a new attendee.
    MqttCheckins {
        /// Check-ins per second, all kiosks together.
        #[arg(long, default_value_t = 200)]
        rate: u64,
        /// Length of the run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Kiosks sharing the rate.
        #[arg(long, default_value_t = 20)]
        kiosks: usize,
    },
    /// QoS 0 gateway adverts into the daemon at a fixed rate.
    MqttFanin {
        /// Publishing gateways.
        #[arg(long, default_value_t = 100)]
        publishers: usize,
        /// Messages per second, all gateways together.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// Length of the run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Also carry every message through the MQTT → hub bridge (as frames into
        /// `zone:<gateway>`), and count what the bridge carried.
        #[arg(long)]
        through_bridge: bool,
    },
    /// `message.send` → `ack` latency at a fixed rate over WebSockets.
    WsAcks {
        /// Messages per second, all senders together.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Length of the run.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Sending attendees (each is rate-limited to 10/s by the hub).
        #[arg(long, default_value_t = 200)]
        senders: usize,
    },
    /// A venue day, compressed: kiosks (HTTP and MQTT), phones, staff, moving badges, a
    /// flapping relay, `kill -9`s and (optionally) a full disk; checks nothing acknowledged was
    /// lost or doubled, both appliances converged, and RSS and open files stayed flat.
    Soak(soak::SoakArgs),
    /// Drain of an offline backlog into the relay.
    SyncDrain {
        /// Ops in the backlog (attendee imports, one op each).
        #[arg(long, default_value_t = 1_000_000)]
        ops: usize,
        /// The relay's database: `sqlite` (a file in a temporary directory) or the URL of an
        /// empty PostgreSQL database.
        #[arg(long, default_value = "sqlite")]
        database: String,
    },
    /// One appliance's ops pulled by many others.
    SyncFanout {
        /// Receiving appliances.
        #[arg(long, default_value_t = 10)]
        appliances: usize,
        /// Ops the source appliance writes.
        #[arg(long, default_value_t = 100_000)]
        ops: usize,
        /// As for sync-drain.
        #[arg(long, default_value = "sqlite")]
        database: String,
    },
    /// Lag from an acknowledged write to its TXID in the bucket.
    ReplicaLag {
        /// Writes per second (each its own transaction).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Length of the run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Restore time of a large database, venued and litestream side by side.
    ReplicaRestore {
        /// Database size in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
    },
    /// Many WebSocket connections (over several processes) subscribed to 3 channels each and
    /// held with heartbeats; then one announcement to all.
    WsHold {
        /// Connections in all.
        #[arg(long, default_value_t = 19_000)]
        connections: usize,
        /// Worker processes sharing them (one process may hold only its file limit).
        #[arg(long, default_value_t = 4)]
        processes: usize,
        /// How long they are held.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Announcements at a fixed rate to many subscribers over several processes: delivery
    /// latency, delivered frames/s, losses; optionally beside subscribers that never read.
    WsSpread {
        /// Subscribed connections.
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        /// Worker processes sharing them.
        #[arg(long, default_value_t = 2)]
        processes: usize,
        /// Announcements per second (spread over staff senders under the rate limit).
        #[arg(long, default_value_t = 50)]
        rate: u64,
        /// Length of the run.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Subscribers that never read.
        #[arg(long, default_value_t = 0)]
        stalled: usize,
        /// Bytes of padding in each announcement (to fill a stalled reader's buffers sooner).
        #[arg(long, default_value_t = 0)]
        pad: usize,
    },
    /// The same MQTT scenario against venued and against a real Mosquitto, and their ratios.
    MqttCompare(broker::CompareArgs),
    /// One worker of ws-hold / ws-spread (started by them).
    #[command(hide = true)]
    WsWorker(hub::WorkerArgs),
    /// Fan-out of announcements to many WebSocket subscribers.
    WsFanout {
        /// Subscribed connections.
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        /// Announcements sent (at 5/s, under the staff sender's rate limit).
        #[arg(long, default_value_t = 50)]
        messages: usize,
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
        Mode::MqttDevices {
            devices,
            seconds,
            bare,
        } => mqtt_devices(devices, seconds, bare).await,
        Mode::MqttCheckins {
            rate,
            seconds,
            kiosks,
        } => mqtt_checkins(rate, seconds, kiosks).await,
        Mode::MqttFanin {
            publishers,
            rate,
            seconds,
            through_bridge,
        } => mqtt_fanin(publishers, rate, seconds, through_bridge).await,
        Mode::WsAcks {
            rate,
            seconds,
            senders,
        } => ws_acks(rate, seconds, senders).await,
        Mode::WsFanout {
            connections,
            messages,
        } => ws_fanout(connections, messages).await,
        Mode::SyncDrain { ops, database } => sync::drain(ops, &database).await,
        Mode::WsHold {
            connections,
            processes,
            seconds,
        } => hub::hold(connections, processes, seconds).await,
        Mode::WsSpread {
            connections,
            processes,
            rate,
            seconds,
            stalled,
            pad,
        } => hub::spread(connections, processes, rate, seconds, stalled, pad).await,
        Mode::WsWorker(args) => hub::worker(args).await,
        Mode::MqttCompare(args) => broker::compare(args).await,
        Mode::Soak(args) => soak::soak(args).await,
        Mode::ReplicaLag { rate, seconds } => replica::lag(rate, seconds).await,
        Mode::ReplicaRestore { mib } => replica::restore(mib).await,
        Mode::SyncFanout {
            appliances,
            ops,
            database,
        } => sync::fanout(appliances, ops, &database).await,
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
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
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

pub(crate) fn print(summary: &serde_json::Value) {
    #[allow(clippy::print_stdout, reason = "the summary is the tool's output")]
    {
        println!("{summary}");
    }
}

/// CPU seconds and peak RSS of `pid` over a window, sampled once a second.
struct Sampler {
    pid: u32,
    ticks_per_sec: f64,
    start_ticks: u64,
    started: Instant,
    rss_max: u64,
}

impl Sampler {
    fn start(pid: u32) -> anyhow::Result<Self> {
        let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
            .context("CLK_TCK unknown")? as f64;
        Ok(Self {
            pid,
            ticks_per_sec,
            start_ticks: cpu_ticks(pid)?,
            started: Instant::now(),
            rss_max: rss_kib(pid)?,
        })
    }

    fn sample(&mut self) {
        if let Ok(rss) = rss_kib(self.pid) {
            self.rss_max = self.rss_max.max(rss);
        }
    }

    fn finish(&mut self) -> anyhow::Result<serde_json::Value> {
        self.sample();
        let elapsed = self.started.elapsed().as_secs_f64();
        let cpu = (cpu_ticks(self.pid)? - self.start_ticks) as f64 / self.ticks_per_sec;
        Ok(serde_json::json!({
            "window_secs": elapsed,
            "venued_cpu_percent_of_one_core": 100.0 * cpu / elapsed,
            "venued_rss_kib_max": self.rss_max,
            "venued_rss_kib_end": rss_kib(self.pid)?,
        }))
    }
}

/// Registers devices `{prefix}{i}` of `kind`; their passwords.
async fn register(
    venued: &hw_tests::Venued,
    prefix: &str,
    kind: &str,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let admin = hw_tests::Admin::new(venued);
    let mut passwords = Vec::with_capacity(n);
    for i in 0..n {
        passwords.push(admin.device(&format!("{prefix}{i}"), kind).await?);
    }
    Ok(passwords)
}

async fn connect_all(
    venued: &hw_tests::Venued,
    prefix: &str,
    passwords: &[String],
) -> anyhow::Result<Vec<hw_tests::mqtt::Client>> {
    let addr = venued.mqtt_addr("tcp").await?;
    let mut clients = Vec::with_capacity(passwords.len());
    for (i, password) in passwords.iter().enumerate() {
        let id = format!("{prefix}{i}");
        clients.push(
            hw_tests::mqtt::connect(addr, hw_tests::mqtt::Options::device(&id, password))
                .await
                .with_context(|| format!("connecting {id}"))?,
        );
    }
    Ok(clients)
}

async fn mqtt_devices(devices: usize, seconds: u64, bare: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let venued = VenuedBuilder::new(&dir.path().join("data")).spawn().await?;
    let passwords = register(&venued, "kiosk-", "kiosk", devices).await?;
    let connecting = Instant::now();
    let clients = connect_all(&venued, "kiosk-", &passwords).await?;
    let connect_secs = connecting.elapsed().as_secs_f64();
    // What an MQTT kiosk does once connected: its results, its status. Each kiosk's filters are
    // its own, so the broker keeps two filter logs per kiosk.
    if !bare {
        for (i, kiosk) in clients.iter().enumerate() {
            for topic in ["checkin/result", "print/result"] {
                kiosk
                    .client
                    .subscribe(
                        format!("venue/default/kiosk/kiosk-{i}/{topic}"),
                        rumqttc::QoS::AtLeastOnce,
                    )
                    .await?;
            }
            kiosk
                .client
                .publish(
                    format!("venue/default/kiosk/kiosk-{i}/status"),
                    rumqttc::QoS::AtLeastOnce,
                    true,
                    r#"{"v":1,"state":"ready"}"#,
                )
                .await?;
        }
    }
    let mut sampler = Sampler::start(venued.pid())?;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    while sampler.started.elapsed() < Duration::from_secs(seconds) {
        every.tick().await;
        sampler.sample();
    }
    let mut summary = sampler.finish()?;
    summary["mode"] = "mqtt-devices".into();
    summary["devices"] = devices.into();
    summary["bare"] = bare.into();
    summary["connected_per_venued"] = venued.metric_sum("venued_mqtt_connections").await?.into();
    summary["connect_all_secs"] = connect_secs.into();
    drop(clients);
    venued.terminate(Duration::from_secs(10)).await?;
    print(&summary);
    Ok(())
}

/// p50, p90, p99 and max of latencies in milliseconds (`latency::Latencies`).
fn spread(ms: &[f64]) -> serde_json::Value {
    latency::Latencies::of(ms).spread()
}

/// Waits for every load task, sampling the daemon as each ends; all their latencies (sorted),
/// their errors, and the seconds it took.
async fn gather(
    tasks: &mut tokio::task::JoinSet<(Vec<f64>, u64)>,
    sampler: &mut Sampler,
) -> anyhow::Result<(Vec<f64>, u64, f64)> {
    let started = Instant::now();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done?;
        latencies.extend(l);
        errors += e;
        sampler.sample();
    }
    latencies.sort_by(f64::total_cmp);
    Ok((latencies, errors, started.elapsed().as_secs_f64()))
}

/// The `p`th percentile of latencies in milliseconds (`latency::Latencies`).
fn percentile(ms: &[f64], p: f64) -> f64 {
    latency::Latencies::of(ms).percentile(p)
}

async fn mqtt_checkins(rate: u64, seconds: u64, kiosks: usize) -> anyhow::Result<()> {
    use rumqttc::QoS;
    let dir = tempfile::tempdir()?;
    let venued = VenuedBuilder::new(&dir.path().join("data")).spawn().await?;
    let total = (rate * seconds) as usize;
    hw_tests::Admin::new(&venued)
        .import_attendees(total)
        .await?;
    let passwords = register(&venued, "kiosk-", "kiosk", kiosks).await?;
    let clients = connect_all(&venued, "kiosk-", &passwords).await?;
    let mut sampler = Sampler::start(venued.pid())?;
    let per_kiosk_interval = Duration::from_secs_f64(kiosks as f64 / rate as f64);
    let mut tasks = tokio::task::JoinSet::new();
    for (k, mut client) in clients.into_iter().enumerate() {
        let result_topic = format!("venue/default/kiosk/kiosk-{k}/checkin/result");
        client
            .client
            .subscribe(&result_topic, QoS::AtLeastOnce)
            .await?;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut every = tokio::time::interval(per_kiosk_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = std::collections::HashMap::new();
            let mut next = k;
            let mut pending = 0usize;
            loop {
                if next >= total && pending == 0 {
                    break;
                }
                tokio::select! {
                    _ = every.tick(), if next < total => {
                        let id = format!("load-{next}");
                        let body = serde_json::json!({"v": 1, "id": id, "attendee_id": format!("a{next}")});
                        sent.insert(id, Instant::now());
                        pending += 1;
                        let topic = format!("venue/default/kiosk/kiosk-{k}/checkin");
                        if client.client.publish(topic, QoS::AtLeastOnce, false, body.to_string()).await.is_err() {
                            errors += 1;
                        }
                        next += kiosks;
                    }
                    received = client.next(Duration::from_secs(30)) => {
                        match received {
                            Some(hw_tests::mqtt::Received::Message(_, payload, _)) => {
                                let answer: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                                if let Some(at) = answer["ref"].as_str().and_then(|r| sent.remove(r)) {
                                    pending -= 1;
                                    if answer["status"] == 201 {
                                        latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                                    } else {
                                        errors += 1;
                                    }
                                }
                            }
                            _ => { errors += pending as u64; break; }
                        }
                    }
                }
            }
            (latencies, errors)
        });
    }
    let (latencies, errors, elapsed) = gather(&mut tasks, &mut sampler).await?;
    let mut summary = sampler.finish()?;
    summary["mode"] = "mqtt-checkins".into();
    summary["offered_rate"] = rate.into();
    summary["achieved_rate"] = (latencies.len() as f64 / elapsed).into();
    summary["checkins"] = latencies.len().into();
    summary["errors"] = errors.into();
    summary["round_trip_ms"] = spread(&latencies);
    let stored: i64 = hw_tests::open_db(&venued.data_dir)?.query_row(
        "SELECT count(*) FROM checkins",
        [],
        |r| r.get(0),
    )?;
    summary["stored_checkins"] = stored.into();
    venued.terminate(Duration::from_secs(10)).await?;
    print(&summary);
    Ok(())
}

async fn mqtt_fanin(
    publishers: usize,
    rate: u64,
    seconds: u64,
    through_bridge: bool,
) -> anyhow::Result<()> {
    use rumqttc::QoS;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let venued = VenuedBuilder::new(&data).spawn().await?;
    let passwords = register(&venued, "gw-", "gateway", publishers).await?;
    venued.terminate(Duration::from_secs(10)).await?;
    let mut config = String::new();
    if through_bridge {
        config.push_str(
            "[[mqtt.bridge]]\nfilter = \"gateway/+/BTtoMQTT/+\"\nchannel = \"zone:{1}\"\ndirection = \"in\"\nas = \"frame\"\n",
        );
    }
    config.push_str("[ble]\nsource = \"gateways\"\n");
    for i in 0..publishers {
        config.push_str(&format!(
            "[[ble.scanners]]\nid = \"gw-{i}\"\nzone = \"zone-{}\"\n",
            i % 5
        ));
    }
    let config_path = dir.path().join("venued.toml");
    std::fs::write(&config_path, config)?;
    let venued = VenuedBuilder::new(&data)
        .arg("--config")
        .arg(config_path.to_str().context("path")?)
        .spawn()
        .await?;
    let clients = connect_all(&venued, "gw-", &passwords).await?;
    let mut sampler = Sampler::start(venued.pid())?;
    // Every 10 ms each gateway publishes its share; 500 badges cycle through the payloads.
    let per_tick = (rate as f64 / publishers as f64 / 100.0).max(1.0);
    let ticks = seconds * 100;
    let mut tasks = tokio::task::JoinSet::new();
    for (g, client) in clients.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0u64;
            let mut owed = 0.0f64;
            for _ in 0..ticks {
                every.tick().await;
                owed += per_tick;
                while owed >= 1.0 {
                    owed -= 1.0;
                    let minor = (sent as usize * publishers + g) % 500;
                    let payload = format!(
                        r#"{{"id":"C0:00:00:00:{:02X}:{:02X}","rssi":-{},"manufacturerdata":"4c000215f7826da64fa24e988024bc5b71e0893e0001{minor:04x}c5"}}"#,
                        minor / 256,
                        minor % 256,
                        55 + (sent % 20)
                    );
                    let topic = format!("venue/default/gateway/gw-{g}/BTtoMQTT/C000000000{:02X}", minor % 256);
                    if client.client.publish(topic, QoS::AtMostOnce, false, payload).await.is_ok() {
                        sent += 1;
                    }
                }
            }
            // Let rumqttc's event loop write out what is queued before the client is dropped.
            let _ = client.client.disconnect().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            sent
        });
    }
    let started = Instant::now();
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += done?;
        sampler.sample();
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Wait until the daemon's counter stops moving: everything queued has been processed.
    let mut processed = venued.metric_sum("venued_ble_adverts_total").await?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = venued.metric_sum("venued_ble_adverts_total").await?;
        if now == processed {
            break;
        }
        processed = now;
    }
    let mut summary = sampler.finish()?;
    summary["mode"] = "mqtt-fanin".into();
    summary["publishers"] = publishers.into();
    summary["offered_rate"] = rate.into();
    summary["sent"] = sent.into();
    summary["sent_rate"] = (sent as f64 / elapsed).into();
    summary["processed"] = processed.into();
    summary["lost"] = (sent as f64 - processed).into();
    summary["through_bridge"] = through_bridge.into();
    summary["bridged"] = venued.metric_sum("venued_mqtt_bridged_total").await?.into();
    summary["dropped"] = venued.metric_sum("venued_mqtt_dropped_total").await?.into();
    summary["link_unscheduled"] = venued
        .metric_sum("venued_mqtt_link_unscheduled_total")
        .await?
        .into();
    venued.terminate(Duration::from_secs(10)).await?;
    print(&summary);
    Ok(())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn mint(venued: &hw_tests::Venued, attendee: &str, roles: &[&str]) -> anyhow::Result<String> {
    hw_tests::Admin::new(venued)
        .ensure_attendee(attendee)
        .await?;
    let (status, body) = hw_tests::Admin::new(venued)
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/tokens",
            Some(serde_json::json!({"attendee_id": attendee, "roles": roles})),
        )
        .await?;
    anyhow::ensure!(status == 201, "cannot mint a token: {body}");
    Ok(body["token"].as_str().context("token")?.to_string())
}

async fn ws_connect(venued: &hw_tests::Venued, token: &str) -> anyhow::Result<Socket> {
    let url = format!("ws://{}/ws?token={token}", venued.addr);
    // TCP_NODELAY, as a phone's WebSocket stack sets it.
    Ok(
        tokio_tungstenite::connect_async_with_config(url, None, true)
            .await?
            .0,
    )
}

async fn ws_send(socket: &mut Socket, frame: serde_json::Value) -> anyhow::Result<()> {
    use futures::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(
            frame.to_string(),
        ))
        .await?;
    Ok(())
}

/// The next text frame, parsed.
async fn ws_next(socket: &mut Socket) -> Option<serde_json::Value> {
    use futures::StreamExt;
    loop {
        match socket.next().await? {
            Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                return serde_json::from_str(&t).ok();
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

async fn ws_acks(rate: u64, seconds: u64, senders: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .arg("--demo")
        .spawn()
        .await?;
    let mut sockets = Vec::with_capacity(senders);
    for i in 0..senders {
        let token = mint(&venued, &format!("a{i}"), &["attendee"]).await?;
        // Not subscribed: posting needs no subscription, and this measures acks, not fan-out.
        sockets.push(ws_connect(&venued, &token).await?);
    }
    let mut sampler = Sampler::start(venued.pid())?;
    let per_sender = Duration::from_secs_f64(senders as f64 / rate as f64);
    let per_sender_total = (rate * seconds) as usize / senders;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut socket) in sockets.into_iter().enumerate() {
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_sender_total);
            let mut errors = 0u64;
            let mut sent_at = std::collections::HashMap::new();
            // Senders are staggered across the period, so the offered load is uniform rather
            // than a burst from every sender at once.
            let offset = per_sender.mul_f64(i as f64 / senders as f64);
            let mut every =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, per_sender);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut next_id = 0usize;
            while next_id < per_sender_total || !sent_at.is_empty() {
                tokio::select! {
                    _ = every.tick(), if next_id < per_sender_total => {
                        let id = format!("{i}-{next_id}");
                        sent_at.insert(id.clone(), Instant::now());
                        next_id += 1;
                        let frame = serde_json::json!({"type": "message.send", "id": id,
                            "payload": {"channel": "zone:hall-a", "content": "load"}});
                        if ws_send(&mut socket, frame).await.is_err() {
                            errors += 1;
                        }
                    }
                    frame = tokio::time::timeout(Duration::from_secs(30), ws_next(&mut socket)) => {
                        let Ok(Some(frame)) = frame else { errors += sent_at.len() as u64; break };
                        let kind = frame["type"].as_str().unwrap_or_default();
                        if kind == "ack" || kind == "error" {
                            let reference = frame["payload"]["ref_id"].as_str().unwrap_or_default();
                            if let Some(at) = sent_at.remove(reference) {
                                if frame["payload"]["status"] == "ok" {
                                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                                } else {
                                    errors += 1;
                                }
                            }
                        }
                    }
                }
            }
            (latencies, errors)
        });
    }
    let (latencies, errors, elapsed) = gather(&mut tasks, &mut sampler).await?;
    let mut summary = sampler.finish()?;
    summary["mode"] = "ws-acks".into();
    // The daemon's own view: how long its commits (one fsync each) took on average.
    let commit_sum = venued.metric_sum("venued_store_commit_seconds_sum").await?;
    let commits = venued
        .metric_sum("venued_store_commit_seconds_count")
        .await?;
    let groups = venued.metric_sum("venued_store_group_writes_sum").await?;
    summary["store_commit_ms_mean"] = (1000.0 * commit_sum / commits.max(1.0)).into();
    summary["store_writes_per_commit"] = (groups / commits.max(1.0)).into();
    summary["offered_rate"] = rate.into();
    summary["acked"] = latencies.len().into();
    summary["achieved_rate"] = (latencies.len() as f64 / elapsed).into();
    summary["errors"] = errors.into();
    summary["ack_ms"] = spread(&latencies);
    venued.terminate(Duration::from_secs(10)).await?;
    print(&summary);
    Ok(())
}

async fn ws_fanout(connections: usize, messages: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .arg("--demo")
        .spawn()
        .await?;
    let rss_before = rss_kib(venued.pid())?;
    let mut tasks = tokio::task::JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(connections);
    for i in 0..connections {
        // One attendee per 5 connections: the hub allows 5 per attendee.
        let token = mint(&venued, &format!("r{}", i / 5), &["attendee"]).await?;
        let mut socket = ws_connect(&venued, &token).await?;
        let ready = ready_tx.clone();
        tasks.spawn(async move {
            let _ = ws_send(&mut socket, serde_json::json!({"type": "subscribe", "id": "s", "payload": {"channels": ["announcements"]}})).await;
            let mut latencies = Vec::with_capacity(messages);
            while latencies.len() < messages {
                let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(60), ws_next(&mut socket)).await else {
                    break;
                };
                match frame["type"].as_str() {
                    Some("ack") => {
                        let _ = ready.send(()).await;
                    }
                    Some("message.new") => {
                        let sent: f64 = frame["payload"]["content"].as_str().and_then(|c| c.parse().ok()).unwrap_or(0.0);
                        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                        latencies.push((now - sent) * 1000.0);
                    }
                    _ => {}
                }
            }
            latencies
        });
    }
    for _ in 0..connections {
        ready_rx.recv().await;
    }
    let rss_connected = rss_kib(venued.pid())?;
    let mut sampler = Sampler::start(venued.pid())?;
    let staff = mint(&venued, "staff-1", &["staff"]).await?;
    let mut sender = ws_connect(&venued, &staff).await?;
    let mut every = tokio::time::interval(Duration::from_millis(200));
    for m in 0..messages {
        every.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        ws_send(
            &mut sender,
            serde_json::json!({"type": "message.send", "id": format!("f{m}"),
            "payload": {"channel": "announcements", "content": format!("{now:.6}")}}),
        )
        .await?;
        sampler.sample();
    }
    let mut latencies = Vec::new();
    let mut short = 0usize;
    while let Some(done) = tasks.join_next().await {
        let l = done?;
        short += messages - l.len();
        latencies.extend(l);
    }
    latencies.sort_by(f64::total_cmp);
    let mut summary = sampler.finish()?;
    summary["mode"] = "ws-fanout".into();
    summary["connections"] = connections.into();
    summary["messages"] = messages.into();
    summary["delivered"] = latencies.len().into();
    summary["lost"] = short.into();
    summary["delivery_ms"] = spread(&latencies);
    summary["rss_kib_per_connection"] =
        ((rss_connected.saturating_sub(rss_before)) as f64 / connections as f64).into();
    venued.terminate(Duration::from_secs(10)).await?;
    print(&summary);
    Ok(())
}
