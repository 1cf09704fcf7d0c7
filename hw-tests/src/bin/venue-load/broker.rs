//! `mqtt-compare`: the same MQTT scenarios against venued and against a real Mosquitto (Debian's
//! `mosquitto`, started here on a loopback port with a password file and an ACL equivalent to
//! venued's rules), one after the other in one run, with the same client code, topics and
//! credentials. Prints both and their ratios.
//!
//! Topics: gateways `gw-N` publish on `venue/default/alert/info/gw-N`, displays subscribe to
//! `venue/default/alert/info/+` (alerts are what a gateway may publish and any display may read
//! in venued's tree; raw adverts are private to their gateway). venued's own link also takes
//! every alert in (and counts these as invalid), work Mosquitto does not have.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hw_tests::mqtt::{self, Options, Received};
use rumqttc::QoS;
use serde_json::{Value, json};

use crate::latency::Latencies;

/// Displays subscribe to this filter; gateway `gw-N` publishes on its own topic under it.
const FILTER: &str = "venue/default/alert/info/+";
/// Makes a message the size of a gateway's advert report (about 180 bytes).
const PADDING: &str = "{\"id\":\"C0:00:00:00:00:01\",\"rssi\":-58,\"manufacturerdata\":\"4c000215f7826da64fa24e988024bc5b71e0893e00010001c5\"}";
/// Quiet this long after the last message: everything the broker will deliver has come.
const QUIET: Duration = Duration::from_secs(3);

/// The scenarios of issue #14.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// 100 publishers → 1 subscriber, QoS 0, at `--rate` msg/s: latency, CPU, RSS.
    Fanin,
    /// 10 publishers × 10 subscribers, QoS 0, unthrottled (`--messages` per publisher).
    Fanout,
    /// 100 publishers → 1 subscriber, QoS 1 both ways, at `--rate` msg/s: latency, losses.
    Qos1,
}

/// The options of `mqtt-compare`.
#[derive(clap::Args)]
pub(crate) struct CompareArgs {
    /// What to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Messages per second offered in all (fanin, qos1).
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Length of a rated run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Messages per publisher (fanout).
    #[arg(long, default_value_t = 5_000)]
    messages: usize,
}

/// What a scenario runs: who publishes how much, at what rate, to whom.
struct Shape {
    publishers: usize,
    subscribers: usize,
    qos: QoS,
    /// Messages per publisher.
    per: u64,
    /// Messages per second per publisher (0: as fast as it can).
    rate_each: f64,
}

impl CompareArgs {
    fn shape(&self) -> Shape {
        let rated = |qos| Shape {
            publishers: 100,
            subscribers: 1,
            qos,
            per: self.rate * self.seconds / 100,
            rate_each: self.rate as f64 / 100.0,
        };
        match self.scenario {
            Scenario::Fanin => rated(QoS::AtMostOnce),
            Scenario::Qos1 => rated(QoS::AtLeastOnce),
            Scenario::Fanout => Shape {
                publishers: 10,
                subscribers: 10,
                qos: QoS::AtMostOnce,
                per: self.messages as u64,
                rate_each: 0.0,
            },
        }
    }
}

/// A broker under test.
enum Broker {
    Venued(hw_tests::Venued),
    Mosquitto {
        child: tokio::process::Child,
        addr: SocketAddr,
        _dir: tempfile::TempDir,
    },
}

impl Broker {
    fn name(&self) -> &'static str {
        match self {
            Self::Venued(_) => "venued",
            Self::Mosquitto { .. } => "mosquitto",
        }
    }

    async fn addr(&self) -> anyhow::Result<SocketAddr> {
        match self {
            Self::Venued(v) => v.mqtt_addr("tcp").await,
            Self::Mosquitto { addr, .. } => Ok(*addr),
        }
    }

    fn pid(&self) -> anyhow::Result<u32> {
        match self {
            Self::Venued(v) => Ok(v.pid()),
            Self::Mosquitto { child, .. } => child.id().context("mosquitto exited"),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Venued(v) => v.terminate(Duration::from_secs(10)).await.map(|_| ()),
            Self::Mosquitto { mut child, .. } => Ok(child.kill().await?),
        }
    }
}

/// The devices of a scenario: (id, kind).
fn devices(publishers: usize, subscribers: usize) -> Vec<(String, &'static str)> {
    (0..publishers)
        .map(|g| (format!("gw-{g}"), "gateway"))
        .chain((0..subscribers).map(|d| (format!("display-{d}"), "signage")))
        .collect()
}

/// venued on a fresh data directory with `devices` registered; their passwords.
async fn start_venued(
    dir: &Path,
    devices: &[(String, &'static str)],
) -> anyhow::Result<(Broker, HashMap<String, String>)> {
    let venued = hw_tests::VenuedBuilder::new(&dir.join("venued"))
        .spawn()
        .await?;
    let admin = hw_tests::Admin::new(&venued);
    let mut passwords = HashMap::new();
    for (id, kind) in devices {
        passwords.insert(id.clone(), admin.device(id, kind).await?);
    }
    Ok((Broker::Venued(venued), passwords))
}

/// Mosquitto on a free loopback port: no anonymous clients, a hashed password file, and an ACL
/// equivalent to venued's rules for these topics (a gateway publishes only on its own alert
/// topic, anyone reads alerts). No persistence; its default `max_queued_messages` (1,000).
async fn start_mosquitto(
    devices: &[(String, &'static str)],
) -> anyhow::Result<(Broker, HashMap<String, String>)> {
    let dir = tempfile::tempdir()?;
    let passwords: HashMap<String, String> = devices
        .iter()
        .map(|(id, _)| (id.clone(), format!("pw-{id}")))
        .collect();
    let passwd = dir.path().join("passwd");
    let plain: String = passwords
        .iter()
        .map(|(u, p)| format!("{u}:{p}\n"))
        .collect();
    std::fs::write(&passwd, plain)?;
    let hashed = tokio::process::Command::new("mosquitto_passwd")
        .arg("-U")
        .arg(&passwd)
        .status()
        .await
        .context("cannot run mosquitto_passwd (Debian package `mosquitto`)")?;
    anyhow::ensure!(hashed.success(), "mosquitto_passwd -U failed");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "pattern write venue/default/alert/info/%u\npattern read venue/default/alert/info/+\n",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\nlog_dest stderr\nlog_type error\n",
            passwd.display(),
            acl.display()
        ),
    )?;
    // Debian installs it in /usr/sbin, which a user's PATH may lack.
    let program = ["/usr/sbin/mosquitto", "mosquitto"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .unwrap_or("mosquitto");
    let child = tokio::process::Command::new(program)
        .arg("-c")
        .arg(&conf)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start mosquitto (Debian package `mosquitto`)")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "mosquitto did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((
        Broker::Mosquitto {
            child,
            addr,
            _dir: dir,
        },
        passwords,
    ))
}

async fn client(
    broker: &Broker,
    passwords: &HashMap<String, String>,
    id: &str,
) -> anyhow::Result<mqtt::Client> {
    let password = passwords.get(id).context("no password")?;
    mqtt::connect(broker.addr().await?, Options::device(id, password)).await
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What one subscriber received: messages, latencies, messages out of order per publisher.
async fn receive(mut display: mqtt::Client) -> (u64, Latencies, u64) {
    let (mut count, mut latencies, mut disorder) = (0u64, Latencies::default(), 0u64);
    let mut last: HashMap<String, u64> = HashMap::new();
    while let Some(Received::Message(topic, payload, _)) = display.next(QUIET).await {
        let text = String::from_utf8_lossy(&payload);
        let mut words = text.split(' ');
        let (Some(Ok(seq)), Some(Ok(sent))) = (
            words.next().map(str::parse::<u64>),
            words.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        count += 1;
        latencies.record(now_micros().saturating_sub(sent) as f64 / 1000.0);
        if last.insert(topic, seq).is_some_and(|prev| prev >= seq) {
            disorder += 1;
        }
    }
    (count, latencies, disorder)
}

/// Every gateway publishes `per` messages at `rate_each` msg/s (0: as fast as it can).
async fn publish(
    gateways: Vec<mqtt::Client>,
    per: u64,
    rate_each: f64,
    qos: QoS,
) -> anyhow::Result<u64> {
    let mut tasks = tokio::task::JoinSet::new();
    for (g, gateway) in gateways.into_iter().enumerate() {
        tasks.spawn(async move {
            let topic = format!("venue/default/alert/info/gw-{g}");
            let started = Instant::now();
            let mut sent = 0;
            for seq in 0..per {
                if rate_each > 0.0 {
                    let due = started + Duration::from_secs_f64(seq as f64 / rate_each);
                    tokio::time::sleep_until(due.into()).await;
                }
                let payload = format!("{seq} {} {PADDING}", now_micros());
                if gateway
                    .client
                    .publish(&topic, qos, false, payload)
                    .await
                    .is_ok()
                {
                    sent += 1;
                }
            }
            let _ = gateway.client.disconnect().await;
            // rumqttc writes out what it queued before the DISCONNECT.
            tokio::time::sleep(Duration::from_millis(500)).await;
            sent
        });
    }
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += done?;
    }
    Ok(sent)
}

/// One scenario against one broker.
async fn run(
    broker: &Broker,
    passwords: &HashMap<String, String>,
    args: &CompareArgs,
) -> anyhow::Result<Value> {
    let Shape {
        publishers,
        subscribers,
        qos,
        per,
        rate_each,
    } = args.shape();
    let mut gateways = Vec::new();
    for g in 0..publishers {
        gateways.push(client(broker, passwords, &format!("gw-{g}")).await?);
    }
    let mut displays = Vec::new();
    for d in 0..subscribers {
        let display = client(broker, passwords, &format!("display-{d}")).await?;
        display.client.subscribe(FILTER, qos).await?;
        displays.push(display);
    }
    mqtt::await_subscribed(&gateways[0], "venue/default/alert/info/gw-0", &mut displays).await?;
    let mut sampler = crate::Sampler::start(broker.pid()?)?;
    let readers: Vec<_> = displays
        .into_iter()
        .map(|d| tokio::spawn(receive(d)))
        .collect();
    let started = Instant::now();
    let sent = publish(gateways, per, rate_each, qos).await?;
    let elapsed = started.elapsed().as_secs_f64();
    sampler.sample();
    let (mut delivered, mut latencies, mut disorder) = (0, Latencies::default(), 0);
    for r in readers {
        let (count, l, d) = r.await?;
        delivered += count;
        latencies.merge(&l.to_json());
        disorder += d;
    }
    let load = sampler.finish()?;
    let expected = sent * subscribers as u64;
    let mut summary = json!({
        "broker": broker.name(),
        "sent": sent,
        "sent_rate": sent as f64 / elapsed,
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "out_of_order": disorder,
        "latency_ms": latencies.spread(),
        // The window includes the quiet wait at the end, the same for both brokers; CPU seconds
        // compare the work done.
        "cpu_percent_of_one_core": load["venued_cpu_percent_of_one_core"],
        "cpu_seconds": load["venued_cpu_percent_of_one_core"].as_f64().unwrap_or(0.0) / 100.0
            * load["window_secs"].as_f64().unwrap_or(0.0),
        "rss_kib_max": load["venued_rss_kib_max"],
    });
    if let Broker::Venued(v) = broker {
        summary["venued_mqtt_dropped_total"] =
            v.metric_sum("venued_mqtt_dropped_total").await?.into();
        // `subscriber_behind` is what the displays lost and should equal `lost`; the others
        // are the daemon's own link and queues, which no client here sees.
        summary["venued_mqtt_dropped_by_reason"] = dropped_by_reason(&v.metrics().await?).into();
    }
    Ok(summary)
}

/// `venued_mqtt_dropped_total{reason="…"} N` lines as `{reason: N}`.
fn dropped_by_reason(metrics: &str) -> serde_json::Map<String, serde_json::Value> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("venued_mqtt_dropped_total{reason=\""))
        .filter_map(|l| {
            let (reason, rest) = l.split_once('"')?;
            let n: f64 = rest.rsplit_once(' ')?.1.parse().ok()?;
            Some((reason.to_string(), n.into()))
        })
        .collect()
}

/// Runs the scenario against venued, then against Mosquitto, and prints both and the ratios.
pub(crate) async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let shape = args.shape();
    let devices = devices(shape.publishers, shape.subscribers);
    let dir = tempfile::tempdir()?;
    let (venued, passwords) = start_venued(dir.path(), &devices).await?;
    let ours = run(&venued, &passwords, &args).await?;
    venued.stop().await?;
    let (mosquitto, passwords) = start_mosquitto(&devices).await?;
    let theirs = run(&mosquitto, &passwords, &args).await?;
    mosquitto.stop().await?;
    let ratio = |a: &Value, b: &Value| match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(a / b),
        _ => Value::Null,
    };
    let summary = json!({
        "mode": "mqtt-compare",
        // The name it has on the command line.
        "scenario": clap::ValueEnum::to_possible_value(&args.scenario)
            .map(|v| v.get_name().to_string()),
        "venued": ours,
        "mosquitto": theirs,
        "ratio_venued_to_mosquitto": {
            "p50": ratio(&ours["latency_ms"]["p50"], &theirs["latency_ms"]["p50"]),
            "p99": ratio(&ours["latency_ms"]["p99"], &theirs["latency_ms"]["p99"]),
            "cpu_seconds": ratio(&ours["cpu_seconds"], &theirs["cpu_seconds"]),
            "rss": ratio(&ours["rss_kib_max"], &theirs["rss_kib_max"]),
            "delivered": ratio(&ours["delivered"], &theirs["delivered"]),
        },
    });
    crate::print(&summary);
    Ok(())
}
