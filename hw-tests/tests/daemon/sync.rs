//! Sync between real appliances (`venued` processes) through a real relay (`venue-relay`), on
//! SQLite and on a real PostgreSQL (two relay instances sharing it): ops both ways, a long
//! offline backlog, `kill -9` at random points, skewed clocks, tenant isolation and bad batches.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hw_tests::relay::{self, Relay};
use hw_tests::{Admin, Venued, VenuedBuilder, open_db};
use rand::Rng;

const EVENT: &str = "ev1";

/// An appliance's fixed identity across restarts: data dir and relay token.
struct Box_ {
    dir: PathBuf,
    token: String,
    /// A libfaketime offset for its clock, e.g. `+10m`.
    clock: Option<&'static str>,
}

/// Debian's libfaketime (package `faketime`, installed by scripts/test).
fn libfaketime() -> anyhow::Result<PathBuf> {
    for dir in std::fs::read_dir("/usr/lib")? {
        let candidate = dir?.path().join("faketime/libfaketime.so.1");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("libfaketime.so.1 not found under /usr/lib/*/faketime; install Debian's faketime")
}

impl Box_ {
    async fn start(&self, relay_port: u16) -> anyhow::Result<Venued> {
        let mut b = VenuedBuilder::new(&self.dir)
            .env("VENUED_EVENT_ID", EVENT)
            .env("VENUED_MQTT_ENABLED", "false")
            .env(
                "VENUED_SYNC_RELAY_URL",
                &format!("http://127.0.0.1:{relay_port}"),
            )
            .env("VENUED_SYNC_TOKEN", &self.token)
            .env("VENUED_SYNC_PULL_WAIT_SECS", "10");
        if let Some(offset) = self.clock {
            // Preloaded into venued itself (not through the `faketime` wrapper, whose child
            // would outlive a killed wrapper). Only the wall clock moves; timers stay true.
            b = b
                .env("LD_PRELOAD", libfaketime()?.to_str().context("path")?)
                .env("FAKETIME", offset)
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        b.spawn().await
    }
}

async fn new_box(dir: &Path, name: &str, database: &str) -> anyhow::Result<Box_> {
    let (_, token) = relay::add_appliance(database, "org1", &[EVENT]).await?;
    Ok(Box_ {
        dir: dir.join(name),
        token,
        clock: None,
    })
}

/// CSV of `n` attendees `{prefix}{i}` named `{name}`.
pub(crate) fn attendees(prefix: &str, n: usize, name: &str) -> String {
    let mut csv = String::from("id,name\n");
    for i in 0..n {
        csv.push_str(&format!("{prefix}{i},{name} {i}\n"));
    }
    csv
}

/// A digest of everything sync must make equal: the op ids, and the domain state (local message
/// seqs excluded: each appliance numbers messages in the order it learns of them).
pub(crate) fn digest(data_dir: &Path) -> anyhow::Result<(u64, usize)> {
    let db = open_db(data_dir)?;
    let mut h = DefaultHasher::new();
    let mut ops = 0;
    for query in [
        "SELECT id FROM ops ORDER BY id",
        "SELECT * FROM events ORDER BY id",
        "SELECT * FROM zones ORDER BY id",
        "SELECT * FROM beacons ORDER BY id",
        "SELECT * FROM attendees ORDER BY id",
        "SELECT * FROM sessions ORDER BY id",
        "SELECT * FROM field_versions ORDER BY entity, entity_id, field",
        "SELECT op_id, attendee_id, duplicate_of FROM checkins ORDER BY op_id",
        "SELECT message_id, channel, sender, content FROM messages ORDER BY message_id",
    ] {
        let mut stmt = db.prepare(query)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            if query.starts_with("SELECT id FROM ops") {
                ops += 1;
            }
            for i in 0..columns {
                format!("{:?}", row.get_ref(i)?).hash(&mut h);
            }
        }
        query.hash(&mut h);
    }
    Ok((h.finish(), ops))
}

/// Waits until every appliance has `ops` ops, nothing left to push, and the same digest.
async fn converged(boxes: &[&Venued], ops: usize, within: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + within;
    let client = reqwest::Client::new();
    loop {
        let mut digests = Vec::new();
        let mut backlog = 0;
        for b in boxes {
            digests.push(digest(&b.data_dir)?);
            let status: serde_json::Value = client
                .get(b.url("/api/v1/status"))
                .send()
                .await?
                .json()
                .await?;
            backlog += status["outbox"]["ops"].as_u64().unwrap_or(u64::MAX);
        }
        if backlog == 0 && digests.iter().all(|d| *d == (digests[0].0, ops)) {
            return Ok(digests[0].0);
        }
        if Instant::now() >= deadline {
            let mut states = String::new();
            for b in boxes {
                let status: serde_json::Value = client
                    .get(b.url("/api/v1/status"))
                    .send()
                    .await?
                    .json()
                    .await?;
                states.push_str(&format!("\n{}: {}", b.data_dir.display(), status["sync"]));
            }
            bail!(
                "no convergence within {within:?}: (digest, ops) {digests:?}, expected {ops} ops; backlog {backlog}{states}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Local ops of this appliance (its own origin).
fn local_ops(data_dir: &Path) -> anyhow::Result<usize> {
    let db = open_db(data_dir)?;
    let node: String = db.query_row("SELECT value FROM meta WHERE key = 'node_id'", [], |r| {
        r.get(0)
    })?;
    Ok(
        db.query_row("SELECT count(*) FROM ops WHERE origin = ?1", [node], |r| {
            r.get::<_, i64>(0)
        })? as usize,
    )
}

async fn retry_now(b: &Venued) -> anyhow::Result<()> {
    let (status, _) = Admin::new(b)
        .call(reqwest::Method::POST, "/api/v1/admin/sync/retry", None)
        .await?;
    anyhow::ensure!(status == 202, "retry: {status}");
    Ok(())
}

/// An Ed25519 key pair made by openssl: (private PKCS#8 PEM, public PEM path).
async fn organiser_key(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let private = dir.join("organiser.pem");
    let public = dir.join("organiser.pub.pem");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "ed25519",
            "-out",
            private.to_str().context("path")?,
        ],
        vec![
            "pkey",
            "-in",
            private.to_str().context("path")?,
            "-pubout",
            "-out",
            public.to_str().context("path")?,
        ],
    ] {
        let out = tokio::process::Command::new("openssl")
            .args(&args)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((std::fs::read_to_string(&private)?, public))
}

fn sign(private_pem: &str, sub: &str, roles: &[&str]) -> anyhow::Result<String> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("organiser-1".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sub": sub, "event": EVENT, "exp": exp, "roles": roles});
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(private_pem.as_bytes())?,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ops_keys_and_messages_flow_both_ways_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let database = relay::sqlite_database(dir.path());
    let (private, public) = organiser_key(dir.path()).await.unwrap();
    relay::cli(
        &database,
        &[
            "key",
            "add",
            "--event",
            EVENT,
            "--kid",
            "organiser-1",
            "--alg",
            "EdDSA",
            "--public-key",
            public.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let a = new_box(dir.path(), "a", &database).await.unwrap();
    let b = new_box(dir.path(), "b", &database).await.unwrap();
    let port = relay::free_port().unwrap();
    let _relay = Relay::start(&database, port, &dir.path().join("relay.log"))
        .await
        .unwrap();
    let va = a.start(port).await.unwrap();
    let vb = b.start(port).await.unwrap();

    Admin::new(&va)
        .import_csv(attendees("from-a-", 3, "Ada"))
        .await
        .unwrap();
    Admin::new(&vb)
        .import_csv(attendees("from-b-", 2, "Bob"))
        .await
        .unwrap();
    let ops = local_ops(&va.data_dir).unwrap() + local_ops(&vb.data_dir).unwrap();
    converged(&[&va, &vb], ops, Duration::from_secs(60))
        .await
        .unwrap();
    let (status, body) = Admin::new(&vb)
        .call(
            reqwest::Method::GET,
            "/api/v1/admin/attendees/from-a-2",
            None,
        )
        .await
        .unwrap();
    assert_eq!((status, body["name"].as_str()), (200, Some("Ada 2")));

    // The organiser's key reached both appliances through GET /v1/keys: a token it signed works
    // on B, and a staff announcement posted on A reaches a long-poll waiting on B.
    for v in [&va, &vb] {
        hw_tests::wait_for_json(
            &v.url("/api/v1/status"),
            None,
            "keys installed",
            Duration::from_secs(30),
            |s| s["sync"]["agent"]["keys"] == 1,
        )
        .await
        .unwrap();
    }
    // A token A signed itself (an attendee's on-site sign-in, the admin's mint) opens B too:
    // A's key travelled as an op, and B took it into use when it arrived.
    let (status, minted) = Admin::new(&va)
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/tokens",
            Some(serde_json::json!({"attendee_id": "from-b-1"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{minted}");
    hw_tests::wait_for_json(
        &vb.url("/api/v1/me"),
        minted["token"].as_str(),
        "a token signed on A accepted on B",
        Duration::from_secs(30),
        |me| me["id"] == "from-b-1",
    )
    .await
    .unwrap();

    let attendee = sign(&private, "from-a-0", &["attendee"]).unwrap();
    let staff = sign(&private, "from-b-0", &["staff"]).unwrap();
    let waiting = {
        let url = vb.url("/api/v1/channels/announcements/messages?after=0&wait=25");
        let token = attendee.clone();
        tokio::spawn(async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await?;
            anyhow::ensure!(r.status() == 200, "long-poll on B: {}", r.status());
            Ok::<serde_json::Value, anyhow::Error>(r.json().await?)
        })
    };
    let posted = reqwest::Client::new()
        .post(va.url("/api/v1/channels/announcements/messages"))
        .bearer_auth(&staff)
        .header("Idempotency-Key", "announce-1")
        .json(&serde_json::json!({"content": "Keynote moved to Hall B"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        posted.status(),
        201,
        "{}",
        posted.text().await.unwrap_or_default()
    );
    let got = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("B's long-poll answered")
        .unwrap()
        .unwrap();
    assert_eq!(
        got["messages"][0]["content"], "Keynote moved to Hall B",
        "{got}"
    );
    assert_eq!(got["messages"][0]["seq"], 1);
}

/// Both appliances work offline while the relay is down, 50,000 ops each (attendee imports,
/// half of them edits of the same 25,000 attendees on both sides); when the relay is back they
/// converge to the same state with every op exactly once.
async fn offline_backlog_converges(database: &str, second_relay: bool) {
    let dir = tempfile::tempdir().unwrap();
    let a = new_box(dir.path(), "a", database).await.unwrap();
    let b = new_box(dir.path(), "b", database).await.unwrap();
    let (port_a, port_b) = (relay::free_port().unwrap(), relay::free_port().unwrap());
    let port_b = if second_relay { port_b } else { port_a };
    let va = a.start(port_a).await.unwrap();
    let vb = b.start(port_b).await.unwrap();
    for (v, side) in [(&va, "A"), (&vb, "B")] {
        let admin = Admin::new(v);
        admin
            .import_csv(attendees(&format!("own-{side}-"), 25_000, side))
            .await
            .unwrap();
        admin
            .import_csv(attendees("shared-", 25_000, side))
            .await
            .unwrap();
    }
    let ops = local_ops(&va.data_dir).unwrap() + local_ops(&vb.data_dir).unwrap();
    assert!(ops >= 100_000, "{ops} ops");
    let _one = Relay::start(database, port_a, &dir.path().join("relay-1.log"))
        .await
        .unwrap();
    let _two = match second_relay {
        true => Some(
            Relay::start(database, port_b, &dir.path().join("relay-2.log"))
                .await
                .unwrap(),
        ),
        false => None,
    };
    retry_now(&va).await.unwrap();
    retry_now(&vb).await.unwrap();
    converged(&[&va, &vb], ops, Duration::from_secs(300))
        .await
        .unwrap();
    // The same 25,000 attendees were edited on both sides: one winner each, the same on both.
    let db = open_db(&va.data_dir).unwrap();
    let names: Vec<String> = db
        .prepare("SELECT DISTINCT substr(name, 1, 1) FROM attendees WHERE id LIKE 'shared-%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "A" || n == "B"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_backlog_converges_through_a_sqlite_relay() {
    let dir = tempfile::tempdir().unwrap();
    offline_backlog_converges(&relay::sqlite_database(dir.path()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_backlog_converges_through_two_relays_on_one_postgres() {
    let database = relay::fresh_pg_database().await.unwrap();
    offline_backlog_converges(&database, true).await;
}

/// `kill -9` of an appliance, of the relay, and of both, at random points while ops are being
/// written and synced, 21 times: every op arrives exactly once and both converge.
async fn kill_nine_during_sync(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let a = new_box(dir.path(), "a", database).await.unwrap();
    let b = new_box(dir.path(), "b", database).await.unwrap();
    let port = relay::free_port().unwrap();
    let log = dir.path().join("relay.log");
    let mut relay = Some(Relay::start(database, port, &log).await.unwrap());
    let mut va = Some(a.start(port).await.unwrap());
    let vb = b.start(port).await.unwrap();
    let mut rng = rand::thread_rng();
    for round in 0..21 {
        let admin_a = Admin::new(va.as_ref().unwrap());
        let admin_b = Admin::new(&vb);
        let (ra, rb) = tokio::join!(
            admin_a.import_csv(attendees(&format!("a{round}-"), 400, "A")),
            admin_b.import_csv(attendees(&format!("b{round}-"), 400, "B")),
        );
        ra.unwrap();
        rb.unwrap();
        // The random point: somewhere in the push/pull of what was just written.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        let victim = round % 3;
        if victim != 1 {
            va.take().unwrap().kill9().await.unwrap();
        }
        if victim != 0 {
            relay.take().unwrap().kill9().await.unwrap();
            relay = Some(Relay::start(database, port, &log).await.unwrap());
        }
        if va.is_none() {
            va = Some(a.start(port).await.unwrap());
        }
    }
    let va = va.unwrap();
    retry_now(&va).await.unwrap();
    retry_now(&vb).await.unwrap();
    let ops = local_ops(&va.data_dir).unwrap() + local_ops(&vb.data_dir).unwrap();
    converged(&[&va, &vb], ops, Duration::from_secs(180))
        .await
        .unwrap();
    let db = open_db(&vb.data_dir).unwrap();
    let imported: i64 = db
        .query_row(
            "SELECT count(*) FROM attendees WHERE id GLOB '[ab][0-9]*-*'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        imported,
        21 * 800,
        "every attendee of every round on both sides, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_of_appliance_relay_or_both_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    kill_nine_during_sync(&relay::sqlite_database(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_with_a_postgres_relay_loses_and_duplicates_nothing() {
    let database = relay::fresh_pg_database().await.unwrap();
    kill_nine_during_sync(&database).await;
}

/// A's clock is 2 minutes fast, B's 2 minutes slow (libfaketime): 4 minutes apart, inside the
/// 5-minute clock bound (a larger skew is parked, `regression_a_poisoned_clock…`). Both edit the
/// same attendee offline, B last in real time; they converge on A's edit (the later HLC), and on
/// every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skewed_clocks_converge_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let database = relay::sqlite_database(dir.path());
    let mut a = new_box(dir.path(), "a", &database).await.unwrap();
    let mut b = new_box(dir.path(), "b", &database).await.unwrap();
    a.clock = Some("+2m");
    b.clock = Some("-2m");
    let port = relay::free_port().unwrap();
    let va = a.start(port).await.unwrap();
    let vb = b.start(port).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let node_wall = |v: &Venued| -> i64 {
        let db = open_db(&v.data_dir).unwrap();
        db.query_row("SELECT max(hlc_wall) FROM ops", [], |r| r.get(0))
            .unwrap()
    };
    Admin::new(&va)
        .import_csv("id,name\nshared,from A\n".into())
        .await
        .unwrap();
    Admin::new(&vb)
        .import_csv("id,name\nshared,from B\n".into())
        .await
        .unwrap();
    // The same attendee also checks in at both venues' kiosks while they are apart: a business
    // conflict that must resolve the same way on both, and reach the relay's operators.
    for (v, kiosk) in [(&va, "kiosk-a"), (&vb, "kiosk-b")] {
        let auth = Admin::new(v).kiosk(kiosk).await.unwrap();
        let r = reqwest::Client::new()
            .post(v.url("/api/v1/checkins"))
            .header("authorization", auth)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&serde_json::json!({"attendee_id": "shared"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // The skew is real: A stamps ~2 minutes ahead of this process, B ~2 minutes behind.
    assert!(
        node_wall(&va) - now > 90_000,
        "A is not fast: {}",
        node_wall(&va) - now
    );
    assert!(
        now - node_wall(&vb) > 90_000,
        "B is not slow: {}",
        now - node_wall(&vb)
    );
    let _relay = Relay::start(&database, port, &dir.path().join("relay.log"))
        .await
        .unwrap();
    retry_now(&va).await.unwrap();
    retry_now(&vb).await.unwrap();
    let ops = local_ops(&va.data_dir).unwrap() + local_ops(&vb.data_dir).unwrap();
    converged(&[&va, &vb], ops, Duration::from_secs(60))
        .await
        .unwrap();
    for v in [&va, &vb] {
        let (_, body) = Admin::new(v)
            .call(reqwest::Method::GET, "/api/v1/admin/attendees/shared", None)
            .await
            .unwrap();
        assert_eq!(body["name"], "from A", "{}", v.data_dir.display());
    }
    // B's later edit lost by HLC, after which B's clock has observed A's stamps: a new edit on
    // B now wins, although B's wall clock is still 4 minutes behind A's.
    Admin::new(&vb)
        .import_csv("id,name\nshared,B again\n".into())
        .await
        .unwrap();
    let ops = local_ops(&va.data_dir).unwrap() + local_ops(&vb.data_dir).unwrap();
    converged(&[&va, &vb], ops, Duration::from_secs(60))
        .await
        .unwrap();
    let (_, body) = Admin::new(&va)
        .call(reqwest::Method::GET, "/api/v1/admin/attendees/shared", None)
        .await
        .unwrap();
    assert_eq!(body["name"], "B again");

    // The double check-in: one winner, the same on both, flagged on both.
    let mut winners = Vec::new();
    for v in [&va, &vb] {
        let (_, conflicts) = Admin::new(v)
            .call(reqwest::Method::GET, "/api/v1/admin/conflicts", None)
            .await
            .unwrap();
        let list = conflicts["conflicts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(list.len(), 1, "{conflicts}");
        winners.push(list[0]["winner_op_id"].clone());
    }
    assert_eq!(winners[0], winners[1]);
    let operator = relay::cli(&database, &["operator", "add"]).await.unwrap();
    hw_tests::wait_for_json(
        &format!("http://127.0.0.1:{port}/v1/admin/conflicts"),
        Some(operator.trim()),
        "the conflict reported to the relay by both appliances",
        Duration::from_secs(60),
        |c| {
            c["conflicts"]
                .as_array()
                .is_some_and(|l| l.len() == 2 && l.iter().all(|x| x["kind"] == "checkin.duplicate"))
        },
    )
    .await
    .unwrap();
}
