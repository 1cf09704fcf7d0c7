//! Hub load over many processes: `ws-hold` (many idle connections held with heartbeats) and
//! `ws-spread` (fan-out to many subscribers at a fixed message rate).
//!
//! One process may hold at most its open-file limit of sockets (20,000 on the test machine,
//! not raisable there), so the connections are spread over `--processes` workers: this same
//! binary run as `venue-load ws-worker`, each connecting from its own loopback source address
//! (127.0.0.2, 127.0.0.3, ...) so more than one address's ~28,000 ephemeral ports are
//! available. Workers sign their own attendee tokens with the demo signing key, report
//! `ready` on stdout once every connection is subscribed, `done` once every connection has the
//! expected messages, and a summary when their stdin closes.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use hw_tests::VenuedBuilder;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use super::{Sampler, print, rss_kib};

use crate::latency::Latencies as Histogram;

fn unix_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Arguments of one worker process.
#[derive(clap::Args, Clone)]
pub(crate) struct WorkerArgs {
    /// The daemon's address.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// The demo signing key (PKCS#8 Ed25519) in the daemon's data directory.
    #[arg(long)]
    key: std::path::PathBuf,
    /// The event the tokens are for.
    #[arg(long, default_value = "default")]
    event: String,
    /// Attendee id prefix; connection i is attendee `{prefix}{i}`.
    #[arg(long)]
    prefix: String,
    /// Connections to open.
    #[arg(long)]
    count: usize,
    /// Local source address.
    #[arg(long)]
    source: std::net::Ipv4Addr,
    /// Channels each connection subscribes to, comma-separated.
    #[arg(long)]
    channels: String,
    /// Messages each connection should receive before the worker reports `done` (0: none).
    #[arg(long, default_value_t = 0)]
    expect: u64,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(args: &WorkerArgs, token: &str) -> anyhow::Result<Socket> {
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.bind((args.source, 0).into())?;
    let stream = tcp.connect(args.addr).await?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{}/ws?token={token}", args.addr);
    // tungstenite's default 128 KiB read buffer is zeroed per read: at thousands of sockets
    // per process that memset, not the frames, would dominate the client's time.
    let config =
        tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let (mut socket, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
    let frame = json!({"type": "subscribe", "id": "s", "payload": {"channels": args.channels.split(',').collect::<Vec<_>>()}});
    socket.send(Message::text(frame.to_string())).await?;
    // Welcome, then the subscribe ack.
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .context("no ack within 60 s")?
            .context("closed before the ack")??;
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text)?;
            if frame["type"] == "ack" {
                anyhow::ensure!(
                    frame["payload"]["refused"]
                        .as_array()
                        .is_none_or(|r| r.is_empty()),
                    "subscription refused: {frame}"
                );
                return Ok(socket);
            }
        }
    }
}

/// A token for `attendee`, signed with the appliance's key `key` whose id is `kid`.
pub(crate) fn sign(key: &[u8], kid: &str, event: &str, attendee: &str) -> anyhow::Result<String> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    let claims = json!({"sub": attendee, "event": event, "exp": unix_secs() as u64 + 86_400, "roles": ["attendee"]});
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(key),
    )?)
}

/// One worker: opens its connections, reports, reads until stdin closes, summarises.
pub(crate) async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let key = std::fs::read(&args.key).with_context(|| format!("{}", args.key.display()))?;
    // The key lives in the daemon's data directory, whose database names its id.
    let data_dir = args.key.parent().context("the key's directory")?;
    let kid = hw_tests::appliance_kid(data_dir)?;
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(args.parallel));
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..args.count {
        let token = sign(&key, &kid, &args.event, &format!("{}{i}", args.prefix))?;
        let slot = slots.clone().acquire_owned().await?;
        let args = args.clone();
        opening.spawn(async move {
            let at = Instant::now();
            let socket = open(&args, &token).await;
            drop(slot);
            (socket, at.elapsed().as_secs_f64() * 1000.0)
        });
    }
    let mut sockets = Vec::with_capacity(args.count);
    let mut connect = Histogram::default();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(done) = opening.join_next().await {
        match done? {
            (Ok(socket), ms) => {
                connect.record(ms);
                sockets.push(socket);
            }
            (Err(e), _) => *failures.entry(e.to_string()).or_default() += 1,
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    print(&json!({"ready": sockets.len(), "failed": failures.values().sum::<u64>()}));

    // Readers: every frame read (pings are answered by tungstenite as it reads).
    let stats = Arc::new(std::sync::Mutex::new(Stats::default()));
    let complete = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let target = sockets.len() as u64;
    let mut readers = tokio::task::JoinSet::new();
    for mut socket in sockets {
        let (complete, all_done, stats) = (complete.clone(), all_done.clone(), stats.clone());
        let expect = args.expect;
        readers.spawn(async move {
            let mut got = 0u64;
            while let Some(message) = socket.next().await {
                match message {
                    Ok(Message::Text(text)) => {
                        // Cheap check first: most frames are message.new.
                        if !text.contains("\"message.new\"") {
                            continue;
                        }
                        let now = unix_secs();
                        let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                            continue;
                        };
                        let sent: f64 = frame["payload"]["content"]
                            .as_str()
                            .and_then(|c| c.split(' ').next()?.parse().ok())
                            .unwrap_or(now);
                        stats
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .message(now, (now - sent) * 1000.0);
                        got += 1;
                        if expect > 0
                            && got == expect
                            && complete.fetch_add(1, Ordering::SeqCst) + 1 == target
                        {
                            all_done.notify_one();
                        }
                    }
                    Ok(Message::Close(frame)) => {
                        let reason =
                            frame.map_or("no reason".to_string(), |f| f.reason.to_string());
                        stats
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .closed(reason);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        stats
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .closed(e.to_string());
                        return;
                    }
                }
            }
            stats
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .closed("ended".into());
        });
    }
    // Until the parent closes stdin; meanwhile say when every connection has what it expects.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let mut reported = args.expect == 0;
    loop {
        tokio::select! {
            read = stdin.read(&mut sink) => if matches!(read, Ok(0) | Err(_)) { break },
            () = all_done.notified(), if !reported => {
                reported = true;
                print(&json!({"done": true}));
            }
        }
    }
    readers.abort_all();
    let stats = stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    print(&json!({
        "summary": true,
        "connect_ms": connect.to_json(),
        "connect_secs": connect_secs,
        "failures": failures,
        "closed_early": stats.closed,
        "received": stats.received,
        "latency_ms": stats.latency.to_json(),
        "first_at": stats.first,
        "last_at": stats.last,
    }));
    Ok(())
}

/// What a worker's readers saw.
#[derive(Default)]
struct Stats {
    latency: Histogram,
    received: u64,
    first: Option<f64>,
    last: Option<f64>,
    closed: BTreeMap<String, u64>,
}

impl Stats {
    fn message(&mut self, at: f64, latency_ms: f64) {
        self.latency.record(latency_ms);
        self.received += 1;
        self.first.get_or_insert(at);
        self.last = Some(at);
    }

    fn closed(&mut self, reason: String) {
        *self.closed.entry(reason).or_default() += 1;
    }
}

/// Makes the attendees the workers will sign tokens for (worker k's connection i is attendee
/// `w{k}-{i}`), in one import: tokens of anyone else open nothing.
async fn register_workers(
    venued: &hw_tests::Venued,
    connections: usize,
    processes: usize,
) -> anyhow::Result<()> {
    let mut csv = String::from("id,name\n");
    for k in 0..processes {
        let count = connections / processes + usize::from(k < connections % processes);
        for i in 0..count {
            csv.push_str(&format!("w{k}-{i},Worker {k} attendee {i}\n"));
        }
    }
    hw_tests::Admin::new(venued).import_csv(csv).await
}

/// The worker processes of one run.
struct Workers {
    children: Vec<tokio::process::Child>,
    lines: Vec<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
}

impl Workers {
    /// Starts `processes` workers sharing `connections`, worker k from 127.0.0.(k+2).
    fn start(
        venued: &hw_tests::Venued,
        connections: usize,
        processes: usize,
        channels: &str,
        expect: u64,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let key = venued.data_dir.join("token-signing-key.pk8");
        let (mut children, mut lines) = (Vec::new(), Vec::new());
        for k in 0..processes {
            let count = connections / processes + usize::from(k < connections % processes);
            let mut child = tokio::process::Command::new(&exe)
                .arg("ws-worker")
                .args(["--addr", &venued.addr.to_string()])
                .arg("--key")
                .arg(&key)
                .args(["--prefix", &format!("w{k}-")])
                .args(["--count", &count.to_string()])
                .args(["--source", &format!("127.0.0.{}", k + 2)])
                .args(["--channels", channels])
                .args(["--expect", &expect.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = child.stdout.take().context("worker stdout")?;
            lines.push(BufReader::new(stdout).lines());
            children.push(child);
        }
        Ok(Self { children, lines })
    }

    /// The next JSON line of every worker.
    async fn next_lines(&mut self, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        for lines in &mut self.lines {
            let line = tokio::time::timeout(timeout, lines.next_line())
                .await
                .context("a worker did not report in time")??
                .context("a worker exited early")?;
            out.push(serde_json::from_str(&line)?);
        }
        Ok(out)
    }

    /// Closes the workers' stdin and merges their summaries.
    async fn finish(mut self) -> anyhow::Result<Value> {
        for child in &mut self.children {
            drop(child.stdin.take());
        }
        let summaries = self.next_lines(Duration::from_secs(120)).await?;
        for child in &mut self.children {
            child.wait().await?;
        }
        let (mut connect, mut latency) = (Histogram::default(), Histogram::default());
        let mut received = 0u64;
        let (mut first, mut last) = (f64::INFINITY, 0f64);
        let mut closed: BTreeMap<String, u64> = BTreeMap::new();
        let mut failures: BTreeMap<String, u64> = BTreeMap::new();
        let mut connect_secs = 0f64;
        for s in &summaries {
            connect.merge(&s["connect_ms"]);
            latency.merge(&s["latency_ms"]);
            received += s["received"].as_u64().unwrap_or(0);
            if let Some(f) = s["first_at"].as_f64() {
                first = first.min(f);
            }
            if let Some(l) = s["last_at"].as_f64() {
                last = last.max(l);
            }
            connect_secs = connect_secs.max(s["connect_secs"].as_f64().unwrap_or(0.0));
            for (map, field) in [(&mut closed, "closed_early"), (&mut failures, "failures")] {
                for (reason, n) in s[field].as_object().into_iter().flatten() {
                    *map.entry(reason.clone()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
        Ok(json!({
            "connected": connect.count(),
            "connect_failures": failures,
            "connect_ms": connect.spread(),
            "connect_all_secs": connect_secs,
            "received": received,
            "delivery_ms": latency.spread(),
            "delivery_window_secs": (last - first).max(0.0),
            "closed_during_run": closed,
        }))
    }
}

async fn staff_socket(venued: &hw_tests::Venued, who: &str) -> anyhow::Result<super::Socket> {
    let token = super::mint(venued, who, &["staff"]).await?;
    super::ws_connect(venued, &token).await
}

/// A venued with the demo event (and its token signing key) in a temporary directory.
async fn demo_venued() -> anyhow::Result<(tempfile::TempDir, hw_tests::Venued)> {
    let dir = tempfile::tempdir()?;
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .arg("--demo")
        .spawn()
        .await?;
    Ok((dir, venued))
}

/// `ws-hold`: N connections subscribed to 3 channels each, held with heartbeats.
pub(crate) async fn hold(connections: usize, processes: usize, seconds: u64) -> anyhow::Result<()> {
    let (_dir, venued) = demo_venued().await?;
    register_workers(&venued, connections, processes).await?;
    let pid = venued.pid();
    // Opened first: at the ceiling there would be no place for it later.
    let mut staff = staff_socket(&venued, "staff-hold").await?;
    let rss_start = rss_kib(pid)?;
    let mut workers = Workers::start(
        &venued,
        connections,
        processes,
        "announcements,zone:hall-a,session:keynote",
        1,
    )?;
    let ready = workers.next_lines(Duration::from_secs(600)).await?;
    let connected: u64 = ready.iter().map(|r| r["ready"].as_u64().unwrap_or(0)).sum();
    let rss_connected = rss_kib(pid)?;
    let mut sampler = Sampler::start(pid)?;
    // Held across at least two server heartbeats (every 30 s).
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let held = Instant::now();
    while held.elapsed() < Duration::from_secs(seconds) {
        every.tick().await;
        sampler.sample();
    }
    let rss_held = rss_kib(pid)?;
    // At the ceiling /metrics itself may be refused; it is read again after the run.
    let open = venued
        .metric_sum("venued_hub_websockets_open")
        .await
        .unwrap_or(f64::NAN);
    // Then one announcement to everyone: the connections are alive, not just counted.
    super::ws_send(
        &mut staff,
        json!({"type": "message.send", "id": "hold-1",
               "payload": {"channel": "announcements", "content": format!("{:.6} still there?", unix_secs())}}),
    )
    .await?;
    let done = workers.next_lines(Duration::from_secs(120)).await;
    let mut summary = sampler.finish()?;
    let merged = workers.finish().await?;
    summary["refused_by_the_ceiling"] = venued
        .metric_sum("venued_http_connections_refused_total")
        .await?
        .into();
    summary["refusal_log_lines"] = venued
        .log()
        .lines()
        .filter(|l| l.contains("refusing new connections"))
        .take(3)
        .map(str::to_string)
        .collect::<Vec<_>>()
        .into();
    summary["mode"] = "ws-hold".into();
    summary["connections"] = connections.into();
    summary["processes"] = processes.into();
    summary["held_secs"] = seconds.into();
    summary["ready"] = connected.into();
    summary["open_at_end_of_hold"] = open.into();
    summary["all_got_the_announcement"] = done.is_ok().into();
    summary["workers"] = merged;
    summary["rss_kib_start"] = rss_start.into();
    summary["rss_kib_connected"] = rss_connected.into();
    summary["rss_kib_after_hold"] = rss_held.into();
    summary["rss_kib_per_connection"] =
        (rss_held.saturating_sub(rss_start) as f64 / connected.max(1) as f64).into();
    venued.terminate(Duration::from_secs(20)).await?;
    print(&summary);
    Ok(())
}

/// `ws-spread`: `rate` announcements a second for `seconds` to N subscribers over several
/// processes; optionally with `stalled` subscribers that never read.
pub(crate) async fn spread(
    connections: usize,
    processes: usize,
    rate: u64,
    seconds: u64,
    stalled: usize,
    pad: usize,
) -> anyhow::Result<()> {
    let (_dir, venued) = demo_venued().await?;
    register_workers(&venued, connections, processes).await?;
    let pid = venued.pid();
    let messages = rate * seconds;
    let mut workers = Workers::start(&venued, connections, processes, "announcements", messages)?;
    let ready = workers.next_lines(Duration::from_secs(600)).await?;
    let connected: u64 = ready.iter().map(|r| r["ready"].as_u64().unwrap_or(0)).sum();
    // Stalled readers: subscribed, then never read from again.
    let mut stalled_sockets = Vec::new();
    for i in 0..stalled {
        let token = super::mint(&venued, &format!("stalled-{i}"), &["attendee"]).await?;
        // A small receive window, as on a phone at the edge of the WiFi: the kernel buffers
        // little, so the daemon's own queue is what fills.
        let tcp = tokio::net::TcpSocket::new_v4()?;
        tcp.set_recv_buffer_size(4096)?;
        let stream = tcp.connect(venued.addr).await?;
        let url = format!("ws://{}/ws?token={token}", venued.addr);
        let (mut socket, _) = tokio_tungstenite::client_async(url, stream).await?;
        let frame =
            json!({"type": "subscribe", "id": "s", "payload": {"channels": ["announcements"]}});
        socket.send(Message::text(frame.to_string())).await?;
        stalled_sockets.push(socket);
    }
    let rss_connected = rss_kib(pid)?;
    let mut sampler = Sampler::start(pid)?;
    // Staff senders, each well under the 10 messages/s bucket.
    let senders = rate.div_ceil(8).max(1);
    let mut sending = tokio::task::JoinSet::new();
    let sent = Arc::new(AtomicU64::new(0));
    let padding: Arc<str> = Arc::from("x".repeat(pad).as_str());
    for s in 0..senders {
        let padding = padding.clone();
        let mut socket = staff_socket(&venued, &format!("staff-{s}")).await?;
        let per_sender = messages / senders + u64::from(s < messages % senders);
        let period = Duration::from_secs_f64(senders as f64 / rate as f64);
        let sent = sent.clone();
        sending.spawn(async move {
            let offset = period.mul_f64(s as f64 / senders as f64);
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            for m in 0..per_sender {
                every.tick().await;
                let frame = json!({"type": "message.send", "id": format!("{s}-{m}"),
                    "payload": {"channel": "announcements", "content": format!("{:.6} announcement {padding}", unix_secs())}});
                if super::ws_send(&mut socket, frame).await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                // Acks are read so the sender's own queue never fills.
                while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, super::ws_next(&mut socket)).await {}
            }
            socket
        });
    }
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let mut keep = Vec::new();
    loop {
        tokio::select! {
            done = sending.join_next() => match done {
                Some(socket) => keep.push(socket?),
                None => break,
            },
            _ = every.tick() => sampler.sample(),
        }
    }
    let done = workers.next_lines(Duration::from_secs(60)).await;
    let mut summary = sampler.finish()?;
    let merged = workers.finish().await?;
    let slow = venued
        .metric_sum("venued_hub_slow_consumers_closed_total")
        .await?;
    let expected = connected * sent.load(Ordering::Relaxed);
    summary["mode"] = "ws-spread".into();
    summary["connections"] = connections.into();
    summary["processes"] = processes.into();
    summary["stalled"] = stalled.into();
    summary["content_padding_bytes"] = pad.into();
    summary["stalled_closed_as_slow_consumers"] = slow.into();
    summary["rate"] = rate.into();
    summary["messages"] = sent.load(Ordering::Relaxed).into();
    summary["expected_deliveries"] = expected.into();
    summary["all_delivered"] = done.is_ok().into();
    summary["lost"] = expected
        .saturating_sub(merged["received"].as_u64().unwrap_or(0))
        .into();
    let window = merged["delivery_window_secs"].as_f64().unwrap_or(0.0);
    summary["delivered_frames_per_sec"] =
        (merged["received"].as_f64().unwrap_or(0.0) / window.max(1e-9)).into();
    summary["rss_kib_connected"] = rss_connected.into();
    summary["workers"] = merged;
    venued.terminate(Duration::from_secs(20)).await?;
    drop(stalled_sockets);
    print(&summary);
    Ok(())
}
