//! `soak`: a venue day, compressed. Appliance A serves the load and suffers the faults;
//! appliance B and a relay keep it company:
//! - kiosks check attendees in over HTTP and over MQTT, each retrying with the same
//!   idempotency key until it is answered, as the kiosk app does;
//! - attendees' phones hold WebSocket connections to `announcements`, reconnecting when cut;
//! - staff post an announcement every few seconds over HTTP (idempotent);
//! - the demo's simulated badges walk between zones (presence, MQTT, the hub);
//! - faults: the relay goes down and comes back, A is `kill -9`ed at random, and (with
//!   `--disk-fill`) A's disk, a tmpfs, fills up and is freed again.
//!
//! Every few seconds it samples A's RSS, open files, outbox backlog and check-in latency into
//! a CSV (and an SVG plot). At the end, with every fault lifted, it checks: every acknowledged
//! check-in and announcement is in A's database exactly once and reached B, A and B hold the
//! same ops, and RSS and open files after warm-up stay within bounds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use hw_tests::disk::{Tmpfs, fill};
use hw_tests::relay::{self, Relay};
use hw_tests::{Venued, VenuedBuilder};
use rand::Rng;
use serde_json::json;

const EVENT: &str = "soak";
/// Size of A's disk when it is a tmpfs.
const TMPFS_MIB: u64 = 512;
/// Seconds between samples.
const SAMPLE_SECS: u64 = 5;

/// The soak's knobs (see `venue-load soak --help`).
#[derive(clap::Args, Clone)]
pub(crate) struct SoakArgs {
    /// Length of the loaded run.
    #[arg(long, default_value_t = 1800)]
    seconds: u64,
    /// WebSocket connections (attendees' phones).
    #[arg(long, default_value_t = 2000)]
    connections: usize,
    /// Kiosks, half over HTTP and half over MQTT.
    #[arg(long, default_value_t = 20)]
    kiosks: usize,
    /// Check-ins per second, all kiosks together.
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Mean seconds between `kill -9`s of appliance A.
    #[arg(long, default_value_t = 240)]
    kill_every: u64,
    /// Seconds the relay is up, then down, in turn.
    #[arg(long, default_value_t = 60)]
    relay_flap: u64,
    /// Put A's data on a tmpfs (needs root) that fills up for 20 s every 2 minutes (in a run
    /// shorter than 6 minutes: for a ninth of it, every third).
    #[arg(long)]
    disk_fill: bool,
    /// Where the samples go (CSV); a plot goes next to it as .svg.
    #[arg(long, default_value = "soak.csv")]
    csv: PathBuf,
}

/// Appliance A, restartable in place on fixed ports.
struct Appliance {
    data: PathBuf,
    http_port: u16,
    mqtt_port: u16,
    relay_port: u16,
    token: String,
    running: tokio::sync::Mutex<Option<Venued>>,
    /// Bumped at every (re)start; clients reconnect when it moves.
    generation: AtomicU64,
    pid: AtomicU64,
}

impl Appliance {
    /// Starts A as its systemd unit does (`Restart=on-failure`, `RestartSec=2`): a start that
    /// fails (on a full disk, the demo kiosk's new password cannot be stored) is tried again
    /// every 2 s, for up to 90 s.
    async fn start(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match self.start_once().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    note_failed_start(&e);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_once(&self) -> anyhow::Result<()> {
        let venued = VenuedBuilder::new(&self.data)
            .arg("--demo")
            .env("VENUED_EVENT_ID", EVENT)
            .env("VENUED_LOG_FILTER", "warn")
            .env(
                "VENUED_HTTP_LISTEN",
                &format!("127.0.0.1:{}", self.http_port),
            )
            .env(
                "VENUED_MQTT_LISTEN",
                &format!("127.0.0.1:{}", self.mqtt_port),
            )
            .env(
                "VENUED_SYNC_RELAY_URL",
                &format!("http://127.0.0.1:{}", self.relay_port),
            )
            .env("VENUED_SYNC_TOKEN", &self.token)
            .spawn()
            .await?;
        self.pid.store(u64::from(venued.pid()), Ordering::Relaxed);
        *self.running.lock().await = Some(venued);
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn kill9(&self) -> anyhow::Result<()> {
        if let Some(venued) = self.running.lock().await.take() {
            venued.kill9().await?;
        }
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }
}

/// A failed start, on the tool's stderr (its stdout is the JSON summary).
fn note_failed_start(e: &anyhow::Error) {
    use std::io::Write;
    let first = e.to_string();
    let first = first.lines().next().unwrap_or_default();
    let _ = writeln!(
        std::io::stderr(),
        "venue-load: A did not start ({first}); again in 2 s"
    );
}

/// What the clients were told was done.
#[derive(Default)]
struct Acked {
    /// Check-in key → attendee.
    checkins: Mutex<BTreeMap<String, String>>,
    /// Announcement keys.
    announcements: Mutex<BTreeSet<String>>,
    /// Check-in latencies (ms) since the last sample.
    latency: Mutex<Vec<f64>>,
    /// Answers that were neither 2xx nor a documented retryable refusal.
    unexpected: Mutex<Vec<String>>,
    ws_frames: AtomicU64,
    ws_reconnects: AtomicU64,
    retries: AtomicU64,
}

pub(crate) async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let database = relay::sqlite_database(dir.path());
    let (_, token_a) = relay::add_appliance(&database, "soak", &[EVENT]).await?;
    let (_, token_b) = relay::add_appliance(&database, "soak", &[EVENT]).await?;
    let relay_port = relay::free_port()?;
    let relay_log = dir.path().join("relay.log");
    let mut relay = Some(Relay::start(&database, relay_port, &relay_log).await?);

    let disk = dir.path().join("a");
    let _tmpfs = match args.disk_fill {
        true => Some(Tmpfs::mount(&disk, TMPFS_MIB)?),
        false => None,
    };
    let a = Arc::new(Appliance {
        data: disk.join("data"),
        http_port: relay::free_port()?,
        mqtt_port: relay::free_port()?,
        relay_port,
        token: token_a,
        running: tokio::sync::Mutex::new(None),
        generation: AtomicU64::new(0),
        pid: AtomicU64::new(0),
    });
    a.start().await?;
    let b = VenuedBuilder::new(&dir.path().join("b"))
        .env("VENUED_EVENT_ID", EVENT)
        .env("VENUED_MQTT_ENABLED", "false")
        .env("VENUED_LOG_FILTER", "warn")
        .env(
            "VENUED_SYNC_RELAY_URL",
            &format!("http://127.0.0.1:{relay_port}"),
        )
        .env("VENUED_SYNC_TOKEN", &token_b)
        .spawn()
        .await?;

    // The registry: one attendee per check-in the run can make, and the phones' owners.
    let checkins_max = (args.rate * args.seconds) as usize + 1000;
    let admin_token = std::fs::read_to_string(a.data.join("admin-token"))?
        .trim()
        .to_string();
    let mut csv = String::from("id,name\n");
    for i in 0..checkins_max.max(args.connections) {
        csv.push_str(&format!("s{i},Soak attendee {i}\n"));
    }
    post_csv(&a.url("/api/v1/admin/attendees/import"), &admin_token, csv).await?;
    let mut kiosk_auth = Vec::new();
    for k in 0..args.kiosks {
        let (code, body) = admin_call(
            &a.url("/api/v1/admin/devices"),
            &admin_token,
            json!({"id": format!("kiosk-{k}"), "kind": "kiosk"}),
        )
        .await?;
        anyhow::ensure!(code == 201 || code == 200, "kiosk: {code} {body}");
        kiosk_auth.push((
            format!("kiosk-{k}"),
            body["password"].as_str().context("password")?.to_string(),
        ));
    }
    let key = std::fs::read(a.data.join("token-signing-key.pk8"))?;
    let kid = hw_tests::appliance_kid(&a.data)?;

    let acked = Arc::new(Acked::default());
    let stop = Arc::new(AtomicBool::new(false));
    let next_attendee = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    let per_kiosk = Duration::from_secs_f64(args.kiosks as f64 / args.rate.max(1) as f64);
    for (k, (id, password)) in kiosk_auth.into_iter().enumerate() {
        let (a, acked, stop, next) = (
            a.clone(),
            acked.clone(),
            stop.clone(),
            next_attendee.clone(),
        );
        match k % 2 {
            0 => load.spawn(http_kiosk(a, id, password, per_kiosk, acked, stop, next)),
            _ => load.spawn(mqtt_kiosk(a, id, password, per_kiosk, acked, stop, next)),
        };
    }
    for i in 0..args.connections {
        let token = crate::hub::sign(&key, &kid, EVENT, &format!("s{i}"))?;
        load.spawn(phone(a.clone(), token, acked.clone(), stop.clone()));
    }
    load.spawn(staff(
        a.clone(),
        admin_token.clone(),
        acked.clone(),
        stop.clone(),
    ));

    // Faults and samples, on one clock.
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut kills = 0u64;
    let mut next_kill = started + jitter(args.kill_every);
    let mut next_flap = started + Duration::from_secs(args.relay_flap);
    let fill_every = Duration::from_secs((args.seconds / 3).clamp(1, 120));
    let fill_for = (fill_every / 3).min(Duration::from_secs(20));
    // The disk fills and empties on its own clock: a restart of A that falls into a full spell
    // (and waits for it, as systemd would) must not hold the disk full.
    let filling = args.disk_fill.then(|| {
        let (path, stop) = (disk.join("ballast"), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let (mut next, mut full_since) = (Instant::now() + fill_every, None::<Instant>);
            loop {
                tick.tick().await;
                let stopping = stop.load(Ordering::Relaxed);
                match full_since {
                    None if stopping => break,
                    None if Instant::now() >= next => {
                        fill(&path)?;
                        full_since = Some(Instant::now());
                    }
                    Some(since) if stopping || since.elapsed() >= fill_for => {
                        std::fs::remove_file(&path)?;
                        full_since = None;
                        next = Instant::now() + fill_every;
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        })
    });
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_sample = Instant::now();
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        let now = Instant::now();
        if now >= next_kill {
            a.kill9().await?;
            a.start().await?;
            kills += 1;
            next_kill = now + jitter(args.kill_every);
        }
        if now >= next_flap {
            relay = match relay.take() {
                Some(r) => {
                    r.kill9().await?;
                    None
                }
                None => Some(Relay::start(&database, relay_port, &relay_log).await?),
            };
            next_flap = now + Duration::from_secs(args.relay_flap);
        }
        if last_sample.elapsed() >= Duration::from_secs(SAMPLE_SECS) {
            last_sample = Instant::now();
            samples.push(sample(&a, &acked, started).await);
        }
    }

    // Faults lifted: the load stops, the relay is up, and everything settles.
    stop.store(true, Ordering::Relaxed);
    if let Some(filling) = filling {
        // Ends within a tick, the ballast removed.
        filling.await??;
    }
    let _relay = match relay {
        Some(r) => r,
        None => Relay::start(&database, relay_port, &relay_log).await?,
    };
    while load.join_next().await.is_some() {}
    let settled = settle(&a, &b).await?;
    a.kill9().await?;
    let verdict = verify(&a.data, &b.data_dir, &acked)?;

    write_csv(&args.csv, &samples)?;
    let svg = args.csv.with_extension("svg");
    std::fs::write(&svg, plot(&samples))?;
    let warm = &samples[samples.len() / 5..];
    let rss: Vec<f64> = warm.iter().map(|s| s.rss_kib as f64 / 1024.0).collect();
    let fds: Vec<f64> = warm.iter().map(|s| s.open_files as f64).collect();
    let unexpected = acked
        .unexpected
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let summary = json!({
        "mode": "soak",
        "seconds": args.seconds,
        "connections": args.connections,
        "kiosks": args.kiosks,
        "rate": args.rate,
        "kills": kills,
        "disk_fill": args.disk_fill,
        "checkins_acked": verdict.checkins,
        "announcements_acked": verdict.announcements,
        "ops_on_a": verdict.ops_a,
        "ops_on_b": verdict.ops_b,
        "lost": verdict.lost,
        "doubled": verdict.doubled,
        "missing_on_b": verdict.missing_on_b,
        "converged": verdict.converged,
        "settle_secs": settled.as_secs_f64(),
        "retries": acked.retries.load(Ordering::Relaxed),
        "ws_frames": acked.ws_frames.load(Ordering::Relaxed),
        "ws_reconnects": acked.ws_reconnects.load(Ordering::Relaxed),
        "unexpected_answers": unexpected.len(),
        "unexpected_first": unexpected.first(),
        "rss_mib_after_warmup": {"min": min(&rss), "median": median(&rss), "max": max(&rss)},
        "open_files_after_warmup": {"min": min(&fds), "median": median(&fds), "max": max(&fds)},
        "checkin_p99_ms_max_window": samples.iter().map(|s| s.p99_ms).fold(0.0, f64::max),
        "samples": args.csv.display().to_string(),
        "plot": svg.display().to_string(),
    });
    crate::print(&summary);
    if verdict.lost > 0 || verdict.doubled > 0 || verdict.missing_on_b > 0 || !verdict.converged {
        bail!("acknowledged work was lost, doubled or not converged: {summary}");
    }
    if !unexpected.is_empty() {
        bail!(
            "{} unexpected answers, first: {}",
            unexpected.len(),
            unexpected[0]
        );
    }
    // Flat after warm-up: restarts reset RSS, so the bound is on the spread, not the trend.
    if max(&rss) > 2.0 * median(&rss).max(32.0) || max(&fds) > 2.0 * median(&fds).max(64.0) {
        bail!("RSS or open files grew after warm-up: {summary}");
    }
    Ok(())
}

fn jitter(mean: u64) -> Duration {
    let mean = mean.max(2) as f64;
    Duration::from_secs_f64(rand::thread_rng().gen_range(mean * 0.5..mean * 1.5))
}

async fn post_csv(url: &str, token: &str, csv: String) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "import: {}", r.text().await?);
    Ok(())
}

async fn admin_call(
    url: &str,
    token: &str,
    body: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or_default()))
}

/// Whether an answer is a documented "try again": the daemon is stopping, or its disk is full.
fn retryable(code: u16) -> bool {
    code == 503
}

async fn http_kiosk(
    a: Arc<Appliance>,
    id: String,
    password: String,
    every: Duration,
    acked: Arc<Acked>,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicUsize>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut pace = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let attendee = format!("s{}", next.fetch_add(1, Ordering::Relaxed));
        let key = format!("http-{attendee}");
        let answered = until_answered(&acked, &key, || {
            client
                .post(a.url("/api/v1/checkins"))
                .basic_auth(&id, Some(&password))
                .header("idempotency-key", &key)
                .json(&json!({"attendee_id": attendee}))
                .send()
        })
        .await;
        if let Some(took) = answered {
            lock(&acked.latency).push(took.as_secs_f64() * 1000.0);
            lock(&acked.checkins).insert(key, attendee);
        }
    }
}

/// Sends again and again under the same idempotency key until answered, as a kiosk does: the
/// answer, not the attempt, is what counts. A retryable refusal (a restart, a full disk) or no
/// answer at all (killed mid-request) is tried again; the time of the acknowledged attempt, or
/// `None` for a refusal for good (recorded as unexpected).
async fn until_answered<F, Fut>(acked: &Acked, key: &str, mut send: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    loop {
        let sent = Instant::now();
        match send().await.map(|r| r.status().as_u16()) {
            Ok(code) if (200..300).contains(&code) => return Some(sent.elapsed()),
            Ok(code) if !retryable(code) => {
                lock(&acked.unexpected).push(format!("{key}: {code}"));
                return None;
            }
            _ => {
                acked.retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn mqtt_kiosk(
    a: Arc<Appliance>,
    id: String,
    password: String,
    every: Duration,
    acked: Arc<Acked>,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicUsize>,
) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], a.mqtt_port));
    let result_topic = format!("venue/{EVENT}/kiosk/{id}/checkin/result");
    let mut client: Option<hw_tests::mqtt::Client> = None;
    let mut pace = tokio::time::interval(every);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let attendee = format!("s{}", next.fetch_add(1, Ordering::Relaxed));
        let key = uuid::Uuid::new_v4().to_string();
        loop {
            if client.is_none() {
                client = connect_kiosk(addr, &id, &password, &result_topic).await;
                if client.is_none() {
                    acked.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            let Some(kiosk) = client.as_mut() else {
                continue;
            };
            let sent = Instant::now();
            let payload = json!({"v": 1, "id": key, "attendee_id": attendee});
            let published = kiosk
                .client
                .publish(
                    format!("venue/{EVENT}/kiosk/{id}/checkin"),
                    rumqttc::QoS::AtLeastOnce,
                    false,
                    payload.to_string(),
                )
                .await;
            let answer = match published {
                Ok(()) => {
                    kiosk
                        .message_on(&result_topic, Duration::from_secs(10))
                        .await
                }
                Err(e) => Err(e.into()),
            };
            match answer {
                Ok((result, _)) if result["ref"] == key.as_str() => {
                    let code = result["status"].as_u64().unwrap_or(0) as u16;
                    if (200..300).contains(&code) {
                        lock(&acked.latency).push(sent.elapsed().as_secs_f64() * 1000.0);
                        lock(&acked.checkins).insert(key.clone(), attendee.clone());
                        break;
                    }
                    if !retryable(code) {
                        lock(&acked.unexpected).push(format!("MQTT check-in {key}: {result}"));
                        break;
                    }
                    acked.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                // Another check-in's late result: wait for ours on the next turn.
                Ok(_) => {}
                Err(_) => {
                    acked.retries.fetch_add(1, Ordering::Relaxed);
                    client = None;
                }
            }
        }
    }
}

async fn connect_kiosk(
    addr: std::net::SocketAddr,
    id: &str,
    password: &str,
    result_topic: &str,
) -> Option<hw_tests::mqtt::Client> {
    let client = hw_tests::mqtt::connect(addr, hw_tests::mqtt::Options::device(id, password))
        .await
        .ok()?;
    client
        .client
        .subscribe(result_topic, rumqttc::QoS::AtLeastOnce)
        .await
        .ok()?;
    Some(client)
}

/// A phone: connected to `announcements`, reading every frame, reconnecting when cut.
async fn phone(a: Arc<Appliance>, token: String, acked: Arc<Acked>, stop: Arc<AtomicBool>) {
    let url = format!("ws://127.0.0.1:{}/ws?token={token}", a.http_port);
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let subscribe =
            json!({"type": "subscribe", "id": "s", "payload": {"channels": ["announcements"]}});
        use futures::SinkExt;
        if socket
            .send(tokio_tungstenite::tungstenite::Message::text(
                subscribe.to_string(),
            ))
            .await
            .is_err()
        {
            continue;
        }
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(1), socket.next()).await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match frame {
                Ok(Some(Ok(_))) => {
                    acked.ws_frames.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
        acked.ws_reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Staff: an announcement every 5 s over HTTP, each retried under its key until answered.
async fn staff(a: Arc<Appliance>, admin_token: String, acked: Arc<Acked>, stop: Arc<AtomicBool>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut n = 0u64;
    let mut pace = tokio::time::interval(Duration::from_secs(5));
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        n += 1;
        let key = format!("announce-{n}");
        let token = match client
            .post(a.url("/api/v1/admin/tokens"))
            .bearer_auth(&admin_token)
            .json(&json!({"attendee_id": "s0", "roles": ["staff"]}))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|b| b["token"].as_str().map(str::to_string)),
            _ => None,
        };
        let Some(token) = token else { continue };
        let answered = until_answered(&acked, &key, || {
            client
                .post(a.url("/api/v1/channels/announcements/messages"))
                .bearer_auth(&token)
                .header("idempotency-key", &key)
                .json(&json!({"content": format!("Announcement {n}")}))
                .send()
        })
        .await;
        if answered.is_some() {
            lock(&acked.announcements).insert(key);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One row of the samples.
struct Sample {
    at_secs: f64,
    rss_kib: u64,
    open_files: u64,
    backlog: u64,
    checkins: usize,
    p99_ms: f64,
}

async fn sample(a: &Appliance, acked: &Acked, started: Instant) -> Sample {
    let pid = a.pid.load(Ordering::Relaxed) as u32;
    let backlog = async {
        let status: serde_json::Value = reqwest::get(a.url("/api/v1/status")).await?.json().await?;
        anyhow::Ok(status["outbox"]["ops"].as_u64().unwrap_or(0))
    };
    let mut latency = std::mem::take(&mut *lock(&acked.latency));
    latency.sort_by(f64::total_cmp);
    Sample {
        at_secs: started.elapsed().as_secs_f64(),
        rss_kib: crate::rss_kib(pid).unwrap_or(0),
        open_files: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        backlog: tokio::time::timeout(Duration::from_secs(2), backlog)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0),
        checkins: lock(&acked.checkins).len(),
        p99_ms: match latency.is_empty() {
            true => 0.0,
            false => crate::percentile(&latency, 99.0),
        },
    }
}

/// Waits until A's outbox is empty and B has as many ops as A.
async fn settle(a: &Appliance, b: &Venued) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let status = |url: String| async move {
            let s: serde_json::Value = reqwest::get(url).await?.json().await?;
            anyhow::Ok(s)
        };
        let sa = status(a.url("/api/v1/status")).await?;
        let ops_a = count_ops(&a.data)?;
        let ops_b = count_ops(&b.data_dir)?;
        if sa["outbox"]["ops"] == 0 && ops_a == ops_b {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("not converged after 10 minutes: A {ops_a} ops, B {ops_b} ops, {sa}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn count_ops(data: &Path) -> anyhow::Result<i64> {
    Ok(hw_tests::open_db(data)?.query_row("SELECT count(*) FROM ops", [], |r| r.get(0))?)
}

struct Verdict {
    checkins: usize,
    announcements: usize,
    ops_a: i64,
    ops_b: i64,
    lost: usize,
    doubled: usize,
    missing_on_b: usize,
    converged: bool,
}

fn verify(a: &Path, b: &Path, acked: &Acked) -> anyhow::Result<Verdict> {
    let (db_a, db_b) = (hw_tests::open_db(a)?, hw_tests::open_db(b)?);
    let per_attendee = |db: &rusqlite::Connection| -> anyhow::Result<BTreeMap<String, i64>> {
        Ok(db
            .prepare("SELECT attendee_id, count(*) FROM checkins GROUP BY attendee_id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
    };
    let (on_a, on_b) = (per_attendee(&db_a)?, per_attendee(&db_b)?);
    let checkins = lock(&acked.checkins).clone();
    let mut verdict = Verdict {
        checkins: checkins.len(),
        announcements: 0,
        ops_a: count_ops(a)?,
        ops_b: count_ops(b)?,
        lost: 0,
        doubled: 0,
        missing_on_b: 0,
        converged: false,
    };
    for attendee in checkins.values() {
        match on_a.get(attendee).copied().unwrap_or(0) {
            0 => verdict.lost += 1,
            1 => {}
            _ => verdict.doubled += 1,
        }
        if on_b.get(attendee).copied().unwrap_or(0) == 0 {
            verdict.missing_on_b += 1;
        }
    }
    let announced: BTreeSet<String> = lock(&acked.announcements).clone();
    verdict.announcements = announced.len();
    let stored: i64 = db_a.query_row(
        "SELECT count(*) FROM messages WHERE channel = 'announcements'",
        [],
        |r| r.get(0),
    )?;
    if (stored as usize) < announced.len() {
        verdict.lost += announced.len() - stored as usize;
    }
    let ids = |db: &rusqlite::Connection| -> anyhow::Result<BTreeSet<String>> {
        Ok(db
            .prepare("SELECT id FROM ops")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    };
    verdict.converged = ids(&db_a)? == ids(&db_b)?;
    Ok(verdict)
}

fn write_csv(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut out =
        String::from("seconds,rss_kib,open_files,outbox_backlog,checkins_acked,checkin_p99_ms\n");
    for s in samples {
        out.push_str(&format!(
            "{:.0},{},{},{},{},{:.1}\n",
            s.at_secs, s.rss_kib, s.open_files, s.backlog, s.checkins, s.p99_ms
        ));
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Three stacked line charts (RSS, check-in p99, outbox backlog) over time, as plain SVG.
fn plot(samples: &[Sample]) -> String {
    let series: [(&str, Vec<f64>); 3] = [
        (
            "RSS of A (MiB)",
            samples.iter().map(|s| s.rss_kib as f64 / 1024.0).collect(),
        ),
        (
            "check-in p99 per 5 s (ms)",
            samples.iter().map(|s| s.p99_ms).collect(),
        ),
        (
            "A's outbox backlog (ops)",
            samples.iter().map(|s| s.backlog as f64).collect(),
        ),
    ];
    let end = samples.last().map_or(1.0, |s| s.at_secs.max(1.0));
    let (w, h, pad) = (900.0, 180.0, 50.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        3.0 * (h + pad) + pad
    );
    for (i, (title, values)) in series.iter().enumerate() {
        let top = pad + i as f64 * (h + pad);
        let peak = max(values).max(1.0);
        svg.push_str(&format!(
            "<text x=\"{pad}\" y=\"{}\">{title} (max {peak:.0}); x: 0 to {end:.0} s</text>\n<rect x=\"{pad}\" y=\"{top}\" width=\"{}\" height=\"{h}\" fill=\"none\" stroke=\"#999\"/>\n",
            top - 8.0,
            w - 2.0 * pad
        ));
        let points: Vec<String> = samples
            .iter()
            .zip(values)
            .map(|(s, v)| {
                format!(
                    "{:.1},{:.1}",
                    pad + s.at_secs / end * (w - 2.0 * pad),
                    top + h - v / peak * h
                )
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            points.join(" ")
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}
