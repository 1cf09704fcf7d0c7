//! Several appliances of one venue on the LAN (`[peers]`): three real `venued` processes on
//! loopback ports, a real `venue-relay` that is down for most of the test, and boxes holding a
//! foreign key. Check-ins, conflicts, direct messages and a `kill -9` converge box to box; when
//! the relay returns, it keeps every op once, and a fourth box that syncs only with the relay
//! ends with the same digest.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hw_tests::relay::{self, Relay};
use hw_tests::{Admin, Venued, VenuedBuilder, open_db};
use serde_json::{Value, json};

use crate::sync::{attendees, digest};

const EVENT: &str = "ev1";
/// Ops each of A and C writes while B is down (50,000 in all, #19's figure).
const BUSY: usize = 25_002;
const VENUE_KEY: &str = "venue-key-of-the-test-0123456789abcdef";

/// A box's fixed identity: data dir, HTTP port and relay token.
struct Box_ {
    dir: PathBuf,
    port: u16,
    token: String,
}

impl Box_ {
    async fn new(dir: &Path, name: &str, database: &str) -> anyhow::Result<Self> {
        let (_, token) = relay::add_appliance(database, "org1", &[EVENT]).await?;
        Ok(Self {
            dir: dir.join(name),
            port: relay::free_port()?,
            token,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it with `key` and `peers`; with the relay at `relay_port` unless `None`.
    async fn start(
        &self,
        key: &str,
        peers: &[&Box_],
        relay_port: Option<u16>,
    ) -> anyhow::Result<Venued> {
        let urls: Vec<String> = peers.iter().map(|p| p.url()).collect();
        let mut b = VenuedBuilder::new(&self.dir)
            .env("VENUED_HTTP_LISTEN", &format!("127.0.0.1:{}", self.port))
            .env("VENUED_EVENT_ID", EVENT)
            .env("VENUED_MQTT_ENABLED", "false")
            .env("VENUED_PEERS_PULL_WAIT_SECS", "20");
        if !key.is_empty() {
            b = b
                .env("VENUED_PEERS_KEY", key)
                .env("VENUED_PEERS_URLS", &urls.join(","));
        }
        if let Some(port) = relay_port {
            b = b
                .env("VENUED_SYNC_RELAY_URL", &format!("http://127.0.0.1:{port}"))
                .env("VENUED_SYNC_TOKEN", &self.token)
                .env("VENUED_SYNC_PULL_WAIT_SECS", "10");
        }
        b.spawn().await
    }
}

/// Waits until every box has the same digest with at least `min_ops` ops; the digest.
async fn same_digest(boxes: &[&Venued], min_ops: usize, within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    loop {
        let digests = boxes
            .iter()
            .map(|b| digest(&b.data_dir))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if digests[0].1 >= min_ops && digests.iter().all(|d| *d == digests[0]) {
            return Ok(digests[0].0);
        }
        if Instant::now() >= deadline {
            let mut states = String::new();
            for b in boxes {
                let s: Value = reqwest::get(b.url("/api/v1/status")).await?.json().await?;
                states.push_str(&format!("\n{}: {}", b.data_dir.display(), s["peers"]));
            }
            bail!("no common digest within {within:?}: {digests:?}{states}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every box holds `ops` ops (a cheap count, for timing), then checks their
/// digests agree.
async fn until_ops(boxes: &[&Venued], ops: usize, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for b in boxes {
        let db = open_db(&b.data_dir)?;
        loop {
            let n: i64 = db.query_row("SELECT count(*) FROM ops", [], |r| r.get(0))?;
            if n as usize >= ops {
                break;
            }
            if started.elapsed() > within {
                bail!(
                    "{} has {n} of {ops} ops after {within:?}",
                    b.data_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let took = started.elapsed();
    same_digest(boxes, ops, Duration::from_secs(60)).await?;
    Ok(took)
}

/// Check-ins of `attendee` in `data_dir`: (op id, duplicate_of), by op id.
fn checkins_of(data_dir: &Path, attendee: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let db = open_db(data_dir)?;
    let mut stmt = db.prepare(
        "SELECT op_id, duplicate_of FROM checkins WHERE attendee_id = ?1 ORDER BY op_id",
    )?;
    let rows = stmt.query_map([attendee], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

async fn check_in_status(
    v: &Venued,
    kiosk: &str,
    attendee: &str,
    key: &str,
) -> anyhow::Result<u16> {
    let r = reqwest::Client::new()
        .post(v.url("/api/v1/checkins"))
        .header("authorization", kiosk)
        .header("idempotency-key", key)
        .json(&json!({"attendee_id": attendee}))
        .send()
        .await?;
    Ok(r.status().as_u16())
}

async fn check_in(v: &Venued, kiosk: &str, attendee: &str, key: &str) -> anyhow::Result<()> {
    let status = check_in_status(v, kiosk, attendee, key).await?;
    anyhow::ensure!(status == 201, "check-in on {}: {status}", v.addr);
    Ok(())
}

/// Waits until `attendee` has `n` check-ins in `data_dir`; how long it took.
async fn until_checkins(
    data_dir: &Path,
    attendee: &str,
    n: usize,
    within: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if checkins_of(data_dir, attendee)?.len() >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!(
                "{attendee}'s check-in not on {} within {within:?}",
                data_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn mint(v: &Venued, attendee: &str) -> anyhow::Result<String> {
    let (status, body) = Admin::new(v)
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/tokens",
            Some(json!({"attendee_id": attendee})),
        )
        .await?;
    anyhow::ensure!(status == 201, "mint: {status} {body}");
    Ok(body["token"].as_str().context("token")?.to_string())
}

async fn peer_metric(v: &Venued, reason: &str) -> anyhow::Result<f64> {
    let text = v.metrics().await?;
    Ok(text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "venued_peer_refused_total{{reason=\"{reason}\"}} "
            ))
            .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0.0))
}

/// Attendees whose id starts with `prefix` in `dir`'s database.
fn attendees_named(dir: &Path, prefix: &str) -> i64 {
    open_db(dir)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM attendees WHERE id GLOB ?1",
            [format!("{prefix}*")],
            |r| r.get(0),
        )
        .unwrap()
}

/// Ops in the relay's log, and each op id's count (must be 1).
fn relay_log(database: &str) -> anyhow::Result<(usize, usize)> {
    let path = database.strip_prefix("sqlite:").unwrap_or(database);
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let (n, distinct): (i64, i64) = db.query_row(
        "SELECT count(*), count(DISTINCT op_id) FROM log WHERE event = ?1",
        [EVENT],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((n as usize, distinct as usize))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_boxes_stay_one_venue_while_the_relay_is_down_and_the_relay_gets_each_op_once() {
    let dir = tempfile::tempdir().unwrap();
    let database = relay::sqlite_database(dir.path());
    let a = Box_::new(dir.path(), "a", &database).await.unwrap();
    let b = Box_::new(dir.path(), "b", &database).await.unwrap();
    let c = Box_::new(dir.path(), "c", &database).await.unwrap();
    let relay_port = relay::free_port().unwrap();
    let all = [&a, &b, &c];
    // One list for every box, its own URL included (recognised and skipped).
    let va = a.start(VENUE_KEY, &all, Some(relay_port)).await.unwrap();
    let mut vb = Some(b.start(VENUE_KEY, &all, Some(relay_port)).await.unwrap());
    let vc = c.start(VENUE_KEY, &all, Some(relay_port)).await.unwrap();

    // Attendees imported on A reach B and C; a check-in on any box is visible on the next.
    Admin::new(&va)
        .import_csv(attendees("p", 300, "Person"))
        .await
        .unwrap();
    same_digest(
        &[&va, vb.as_ref().unwrap(), &vc],
        300,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let boxes = [&va, vb.as_ref().unwrap(), &vc];
    let mut kiosks = Vec::new();
    for (i, v) in boxes.iter().enumerate() {
        kiosks.push(Admin::new(v).kiosk(&format!("kiosk-{i}")).await.unwrap());
    }
    let mut latencies = Vec::new();
    for i in 0..60 {
        let (from, to) = (i % 3, (i + 1) % 3);
        let attendee = format!("p{i}");
        check_in(boxes[from], &kiosks[from], &attendee, &format!("c{i}"))
            .await
            .unwrap();
        latencies.push(
            until_checkins(&boxes[to].data_dir, &attendee, 1, Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    latencies.sort();
    println!(
        "check-in visible on the next box: p50 {:?}, max {:?} (60 check-ins)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );

    // The same attendee checked in on A and C at once, ten times over. Where C already had A's
    // check-in (or A C's), the desk was told "already checked in" (200); where neither had the
    // other's, both stand (201) and one wins: the other is flagged as a conflict, the same on
    // all three boxes.
    let mut conflicts = 0;
    for i in 0..10 {
        let attendee = format!("p{}", 200 + i);
        let (key_a, key_c) = (format!("twice-a{i}"), format!("twice-c{i}"));
        let (ra, rc) = tokio::join!(
            check_in_status(&va, &kiosks[0], &attendee, &key_a),
            check_in_status(&vc, &kiosks[2], &attendee, &key_c),
        );
        let created = [ra.unwrap(), rc.unwrap()]
            .iter()
            .filter(|s| **s == 201)
            .count();
        assert!(created >= 1, "at least one desk checked {attendee} in");
        for v in &boxes {
            until_checkins(&v.data_dir, &attendee, created, Duration::from_secs(10))
                .await
                .unwrap();
        }
        let on_a = checkins_of(&va.data_dir, &attendee).unwrap();
        assert_eq!(on_a.len(), created, "{on_a:?}");
        assert_eq!(
            on_a.iter().filter(|(_, d)| d.is_none()).count(),
            1,
            "one winner: {on_a:?}"
        );
        for v in &boxes[1..] {
            assert_eq!(checkins_of(&v.data_dir, &attendee).unwrap(), on_a);
        }
        if let Some((loser, _)) = on_a.iter().find(|(_, d)| d.is_some()) {
            conflicts += 1;
            for v in &boxes {
                let (status, flagged) = Admin::new(v)
                    .call(reqwest::Method::GET, "/api/v1/admin/conflicts", None)
                    .await
                    .unwrap();
                assert_eq!(status, 200);
                assert!(flagged.to_string().contains(loser), "{flagged}");
            }
        }
    }
    println!("simultaneous check-ins on A and C: {conflicts} of 10 were conflicts");
    assert!(
        conflicts >= 1,
        "no two desks were ever simultaneous; the conflict path went untested"
    );

    // A direct message from p1 on A reaches p2's long-poll on B, live.
    let token_p2 = mint(vb.as_ref().unwrap(), "p2").await.unwrap();
    let token_p1 = mint(&va, "p1").await.unwrap();
    let waiting = {
        let url = vb
            .as_ref()
            .unwrap()
            .url("/api/v1/channels/dm:p1:p2/messages?after=0&wait=20");
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(token_p2)
                .send()
                .await?;
            anyhow::ensure!(r.status() == 200, "long-poll on B: {}", r.status());
            Ok::<Value, anyhow::Error>(r.json().await?)
        })
    };
    // Let the long-poll reach B first, so the message is delivered to a waiting reader.
    hw_tests::wait_for_json(
        &vb.as_ref().unwrap().url("/api/v1/status"),
        None,
        "B's long-poll waiting",
        Duration::from_secs(10),
        |s| s["hub"]["long_polls_waiting"].as_u64() >= Some(1),
    )
    .await
    .unwrap();
    let posted = reqwest::Client::new()
        .post(va.url("/api/v1/channels/dm:p1:p2/messages"))
        .bearer_auth(&token_p1)
        .header("Idempotency-Key", "dm-1")
        .json(&json!({"content": "coffee at hall B?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        posted.status(),
        201,
        "{}",
        posted.text().await.unwrap_or_default()
    );
    let got = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("B's long-poll answered")
        .unwrap()
        .unwrap();
    assert_eq!(got["messages"][0]["content"], "coffee at hall B?", "{got}");

    // B is killed; A and C go on writing for a minute, 25,000 ops each; B comes back and all
    // three agree. (The minute is the scenario: long enough for the others' retries to reach
    // their longest wait.)
    vb.take().unwrap().kill9().await.unwrap();
    let down = Instant::now();
    let (admin_a, admin_c) = (Admin::new(&va), Admin::new(&vc));
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let (ra, rc) = tokio::join!(
            admin_a.import_csv(attendees(&format!("b-down-a{round}-"), BUSY / ROUNDS, "A")),
            admin_c.import_csv(attendees(&format!("b-down-c{round}-"), BUSY / ROUNDS, "C")),
        );
        ra.unwrap();
        rc.unwrap();
        let next = down + Duration::from_secs(10 * (round as u64 + 1));
        tokio::time::sleep_until(next.into()).await;
    }
    let back = Instant::now();
    let vb = b.start(VENUE_KEY, &all, Some(relay_port)).await.unwrap();
    same_digest(&[&va, &vb, &vc], 2 * BUSY, Duration::from_secs(300))
        .await
        .unwrap();
    println!("B caught up with {} ops in {:?}", 2 * BUSY, back.elapsed());
    // And the others pull from B again: a check-in on B reaches A and C.
    let kiosk_b = Admin::new(&vb).kiosk("kiosk-b-again").await.unwrap();
    check_in(&vb, &kiosk_b, "p250", "after-b-back")
        .await
        .unwrap();
    for v in [&va, &vc] {
        until_checkins(&v.data_dir, "p250", 1, Duration::from_secs(15))
            .await
            .unwrap();
    }
    let status: Value = reqwest::get(va.url("/api/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let peers = status["peers"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3, "{status}");
    let pulled: Vec<&Value> = peers
        .iter()
        .filter(|p| p["last_contact"].is_string())
        .collect();
    assert_eq!(pulled.len(), 2, "two peers, itself skipped: {status}");
    for p in pulled {
        assert!(p["lag_ops"].is_u64() && p["lag_secs"].is_u64(), "{p}");
    }

    // The relay comes back: every op stored once, whichever box carried it, and a fourth box
    // that syncs only with the relay ends with the same digest.
    let relay = Relay::start(&database, relay_port, &dir.path().join("relay.log"))
        .await
        .unwrap();
    let d = Box_::new(dir.path(), "d", &database).await.unwrap();
    let vd = d.start("", &[], Some(relay_port)).await.unwrap();
    let back = Instant::now();
    let digest = same_digest(&[&va, &vb, &vc, &vd], 2 * BUSY, Duration::from_secs(600))
        .await
        .unwrap();
    let ops = crate::sync::digest(&va.data_dir).unwrap().1;
    for v in [&va, &vb, &vc, &vd] {
        hw_tests::wait_for_json(
            &v.url("/api/v1/status"),
            None,
            "nothing left to push",
            Duration::from_secs(60),
            |s| s["outbox"]["ops"] == 0,
        )
        .await
        .unwrap();
    }
    println!(
        "{ops} ops at the relay and on the fourth box in {:?}",
        back.elapsed()
    );
    assert!(ops > 2 * BUSY, "{ops}");
    assert_eq!(
        relay_log(&database).unwrap(),
        (ops, ops),
        "each op once at the relay"
    );
    assert_eq!(crate::sync::digest(&vd.data_dir).unwrap().0, digest);
    // The operators see who carried what: B's check-ins of the first round went up with B or
    // with a box that had them from B.
    let operator = relay::cli(&database, &["operator", "add"]).await.unwrap();
    let log: Value = reqwest::Client::new()
        .get(relay.url("/v1/admin/log?limit=1000"))
        .bearer_auth(operator.trim())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = log["log"].as_array().unwrap();
    assert_eq!(entries.len(), 1000, "{log}");
    let nodes: Vec<String> = [&va, &vb, &vc, &vd]
        .iter()
        .map(|v| {
            open_db(&v.data_dir)
                .unwrap()
                .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
                    r.get(0)
                })
                .unwrap()
        })
        .collect();
    for e in entries {
        for field in ["origin", "carrier_node"] {
            let node = e[field].as_str().unwrap_or_default();
            assert!(nodes.iter().any(|n| n == node), "{field} of {e}");
        }
    }
    let carried = entries
        .iter()
        .filter(|e| e["origin"] != e["carrier_node"])
        .count();
    println!(
        "of the relay's first 1,000 ops, {carried} were carried by a box other than their origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_box_with_a_foreign_key_gets_nothing_and_gives_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let database = relay::sqlite_database(dir.path());
    let a = Box_::new(dir.path(), "a", &database).await.unwrap();
    let e = Box_::new(dir.path(), "e", &database).await.unwrap();
    let va = a.start(VENUE_KEY, &[&e], None).await.unwrap();
    let ve = e
        .start("a-key-of-another-venue-0123456789abcdef", &[&a], None)
        .await
        .unwrap();
    Admin::new(&va)
        .import_csv(attendees("ours", 20, "Ours"))
        .await
        .unwrap();
    Admin::new(&ve)
        .import_csv(attendees("theirs", 20, "Theirs"))
        .await
        .unwrap();
    // Both sides refuse and count each other's requests. (An answer not signed with the key is
    // refused too, before any of it is applied; a real venued never serves one without the
    // key, so that check is tested in sync-agent's peer module.)
    for (v, reason) in [(&va, "bad_credential"), (&ve, "bad_credential")] {
        let started = Instant::now();
        while peer_metric(v, reason).await.unwrap() < 1.0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{reason} never counted:\n{}",
                v.metrics().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // By now each has asked the other at least once: nothing crossed.
    assert_eq!(attendees_named(&va.data_dir, "theirs"), 0);
    assert_eq!(attendees_named(&ve.data_dir, "ours"), 0);
    let status: Value = reqwest::get(ve.url("/api/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let peer = &status["peers"]["peers"][0];
    assert!(peer["refused"].as_u64() >= Some(1), "{status}");
    assert!(
        peer["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("venue's key"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_box_gets_nothing_and_gives_nothing_though_it_holds_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let database = relay::sqlite_database(dir.path());
    let a = Box_::new(dir.path(), "a", &database).await.unwrap();
    let r = Box_::new(dir.path(), "r", &database).await.unwrap();
    // R's node id, as its first start made it.
    let vr = r.start(VENUE_KEY, &[], None).await.unwrap();
    let r_node: String = open_db(&vr.data_dir)
        .unwrap()
        .query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |row| {
            row.get(0)
        })
        .unwrap();
    vr.terminate(Duration::from_secs(10)).await.unwrap();
    // Only A lists R as revoked; R still holds the venue key.
    let va = VenuedBuilder::new(&a.dir)
        .env("VENUED_HTTP_LISTEN", &format!("127.0.0.1:{}", a.port))
        .env("VENUED_EVENT_ID", EVENT)
        .env("VENUED_MQTT_ENABLED", "false")
        .env("VENUED_PEERS_KEY", VENUE_KEY)
        .env("VENUED_PEERS_URLS", &r.url())
        .env("VENUED_PEERS_REVOKED", &r_node)
        .spawn()
        .await
        .unwrap();
    let vr = r.start(VENUE_KEY, &[&a], None).await.unwrap();
    Admin::new(&va)
        .import_csv(attendees("ours", 20, "Ours"))
        .await
        .unwrap();
    Admin::new(&vr)
        .import_csv(attendees("theirs", 20, "Theirs"))
        .await
        .unwrap();
    let started = Instant::now();
    while peer_metric(&va, "revoked").await.unwrap() < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            va.metrics().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A refuses R's answers too.
    hw_tests::wait_for_json(
        &va.url("/api/v1/status"),
        None,
        "A's pull from R refused as revoked",
        Duration::from_secs(20),
        |s| {
            s["peers"]["peers"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("revoked"))
        },
    )
    .await
    .unwrap();
    assert_eq!(attendees_named(&va.data_dir, "theirs"), 0);
    assert_eq!(attendees_named(&vr.data_dir, "ours"), 0);
}

/// Figures for BENCHMARKS.md ("Several boxes on the LAN"), not a check: run by hand with the
/// release build (the command is there). Three boxes, no relay: how soon a check-in made on one
/// box is on the other two (1,000 check-ins, round robin), how fast a bulk import crosses, and
/// how long a box that was off while 200,000 ops were written takes to catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; BENCHMARKS.md has the command"]
async fn lan_bench() {
    let dir = tempfile::tempdir().unwrap();
    let database = relay::sqlite_database(dir.path());
    let a = Box_::new(dir.path(), "a", &database).await.unwrap();
    let b = Box_::new(dir.path(), "b", &database).await.unwrap();
    let c = Box_::new(dir.path(), "c", &database).await.unwrap();
    let all = [&a, &b, &c];
    let va = a.start(VENUE_KEY, &all, None).await.unwrap();
    let vb = b.start(VENUE_KEY, &all, None).await.unwrap();
    let mut vc = Some(c.start(VENUE_KEY, &all, None).await.unwrap());
    Admin::new(&va)
        .import_csv(attendees("p", 1000, "Person"))
        .await
        .unwrap();
    same_digest(
        &[&va, &vb, vc.as_ref().unwrap()],
        1000,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    {
        let boxes = [&va, &vb, vc.as_ref().unwrap()];
        let mut kiosks = Vec::new();
        for (i, v) in boxes.iter().enumerate() {
            kiosks.push(Admin::new(v).kiosk(&format!("kiosk-{i}")).await.unwrap());
        }
        let mut latencies = Vec::new();
        for i in 0..1000 {
            let from = i % 3;
            let attendee = format!("p{i}");
            check_in(boxes[from], &kiosks[from], &attendee, &format!("c{i}"))
                .await
                .unwrap();
            // Visible everywhere: the later of the two other boxes.
            let mut slowest = Duration::ZERO;
            for to in (0..3).filter(|t| *t != from) {
                let took =
                    until_checkins(&boxes[to].data_dir, &attendee, 1, Duration::from_secs(10))
                        .await
                        .unwrap();
                slowest = slowest.max(took);
            }
            latencies.push(slowest);
        }
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "BENCH check-in on one box visible on both others (1,000, round robin): p50 {:?} p90 {:?} p99 {:?} max {:?}",
            at(0.5),
            at(0.9),
            at(0.99),
            latencies[latencies.len() - 1]
        );
    }
    // Throughput: 100,000 attendees imported on A, until C has them all.
    let before = digest(&va.data_dir).unwrap().1;
    let started = Instant::now();
    Admin::new(&va)
        .import_csv(attendees("bulk", 100_000, "Bulk"))
        .await
        .unwrap();
    let imported = started.elapsed();
    until_ops(
        &[&va, &vb, vc.as_ref().unwrap()],
        before + 100_000,
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let crossed = started.elapsed();
    println!(
        "BENCH 100,000 ops imported on A in {imported:?}; on all three boxes after {crossed:?} ({:.0} ops/s end to end)",
        100_000.0 / crossed.as_secs_f64()
    );
    // Catch-up: C off while A and B write 200,000 ops.
    vc.take()
        .unwrap()
        .terminate(Duration::from_secs(10))
        .await
        .unwrap();
    let (admin_a, admin_b) = (Admin::new(&va), Admin::new(&vb));
    for round in 0..10 {
        let (ra, rb) = tokio::join!(
            admin_a.import_csv(attendees(&format!("day-a{round}-"), 10_000, "A")),
            admin_b.import_csv(attendees(&format!("day-b{round}-"), 10_000, "B")),
        );
        ra.unwrap();
        rb.unwrap();
    }
    let target = digest(&va.data_dir).unwrap();
    until_ops(&[&va, &vb], target.1, Duration::from_secs(600))
        .await
        .unwrap();
    let started = Instant::now();
    let vc = c.start(VENUE_KEY, &all, None).await.unwrap();
    until_ops(&[&vc], target.1, Duration::from_secs(1200))
        .await
        .unwrap();
    let took = started.elapsed();
    same_digest(&[&va, &vb, &vc], target.1, Duration::from_secs(60))
        .await
        .unwrap();
    println!(
        "BENCH C, off while 200,000 ops were written, caught up ({} ops in all) in {took:?} ({:.0} ops/s)",
        target.1,
        200_000.0 / took.as_secs_f64()
    );
}

/// Found by the LAN bench: a box stopping with its peers' long-polls in flight waited out the
/// whole HTTP drain (8 s) for them, past a 10 s stop timeout. The long-polls now answer at
/// once when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_box_stops_promptly_while_its_peers_long_poll_it() {
    let dir = tempfile::tempdir().unwrap();
    let database = relay::sqlite_database(dir.path());
    let a = Box_::new(dir.path(), "a", &database).await.unwrap();
    let b = Box_::new(dir.path(), "b", &database).await.unwrap();
    let va = a.start(VENUE_KEY, &[&b], None).await.unwrap();
    let vb = b.start(VENUE_KEY, &[&a], None).await.unwrap();
    // B is long-polling A once it has pulled A's log to the end.
    hw_tests::wait_for_json(
        &vb.url("/api/v1/status"),
        None,
        "B level with A",
        Duration::from_secs(20),
        |s| s["peers"]["peers"][0]["last_caught_up_ms"].is_u64(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let status = va.terminate(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "{status}");
    println!(
        "A stopped in {:?} with B's long-poll in flight",
        started.elapsed()
    );
}
