//! The pages in a real browser: Debian's headless Chromium driven by Python Playwright
//! (`hw-tests/scripts/attendee_app.py`) against a real `venued`. `scripts/test` installs both
//! (the `chromium` package, and `playwright` into `target/test-venv`) and runs these on their own
//! with `--ignored`: a browser loads both cores, which would slow the timing-sensitive tests
//! beside it, and the page's 1 s announcement check would then measure the machine.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hw_tests::{Admin, Venued, VenuedBuilder};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Where the tests leave the screenshots (`docs/screenshots/` holds the copies shown in the
/// README, refreshed from here).
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback port that was free a moment ago: the page's origin must survive a restart of
/// venued, so the daemon listens on a fixed port here rather than one the kernel picks.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One appliance as the browser tests run it: its data, a fixed HTTP port (the page's origin
/// must survive a restart) and whatever else it is started with.
pub(crate) struct Appliance {
    pub(crate) data: PathBuf,
    pub(crate) port: u16,
    pub(crate) env: Vec<(&'static str, String)>,
    pub(crate) args: Vec<String>,
}

impl Appliance {
    pub(crate) fn new(data: PathBuf) -> Self {
        Appliance {
            data,
            port: free_port(),
            env: Vec::new(),
            args: Vec::new(),
        }
    }

    pub(crate) async fn start(&self) -> Venued {
        let mut builder = VenuedBuilder::new(&self.data)
            .env("VENUED_HTTP_LISTEN", &format!("127.0.0.1:{}", self.port));
        for (key, value) in &self.env {
            builder = builder.env(key, value);
        }
        for arg in &self.args {
            builder = builder.arg(arg);
        }
        builder.spawn().await.unwrap()
    }
}

/// The attendee app: sign-in with wrong and right pairs and the per-ticket budget, the session
/// kept across a reload, an announcement posted by staff over HTTP shown within 1 s, a
/// `kill -9` and restart of venued survived with nothing lost or doubled, a dead spot (the app
/// reopens from its service worker with the last announcements, and catches up), the event-stream
/// fallback where WebSockets are blocked, the schedule (now and next per room, occupancy against
/// capacity), and an axe-core audit of each view.
#[tokio::test]
#[ignore = "run alone by scripts/test (a browser loads the machine)"]
async fn the_attendee_app_signs_in_and_shows_announcements_live() {
    let dir = tempfile::tempdir().unwrap();
    let appliance = Appliance::new(dir.path().join("data"));
    let venued = Some(appliance.start().await);
    let admin = Admin::new(venued.as_ref().unwrap());
    admin
        .import_csv(
            "id,name,email,ticket_code\n\
             a1,Grace Lovelace,,T1\n\
             a2,Ada Byron,ada@example.org,T2\n\
             a3,Grace Hopper,,T3\n\
             staff1,Desk Staff,,S1\n"
                .into(),
        )
        .await
        .unwrap();
    let staff = super::hub::token(venued.as_ref().unwrap(), "staff1", &["staff"]).await;
    drive(
        "attendee_app.py",
        &[
            ("VENUE_STAFF_TOKEN", staff),
            ("VENUE_ADMIN_TOKEN", venued.as_ref().unwrap().admin_token()),
        ],
        &appliance,
        venued,
        Duration::from_secs(240),
    )
    .await;
}

/// Runs `hw-tests/scripts/{script}` with `VENUE_URL`, `VENUE_SCREENSHOTS` and `env`, and does
/// what it asks on its stdout: `STOP` (SIGKILL venued), `START` (again, on the same data and
/// port), `RESTART` (both), `CHECKINS <attendee id>` (answers how many check-ins the database
/// holds for them). Fails with the script's output and venued's log unless it exits 0.
#[allow(
    clippy::print_stdout,
    reason = "the script's lines (the figures BENCHMARKS.md records) show with --nocapture"
)]
pub(crate) async fn drive(
    script: &str,
    env: &[(&str, String)],
    appliance: &Appliance,
    venued: Option<Venued>,
    within: Duration,
) {
    let mut venued = venued;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let mut command = tokio::process::Command::new(hw_tests::s3::tool("python3"));
    command
        .arg(&path)
        .env("VENUE_URL", format!("http://127.0.0.1:{}", appliance.port))
        .env("VENUE_SCREENSHOTS", screenshots());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut python = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 from target/test-venv runs (scripts/test installs playwright there)");
    let mut stdin = python.stdin.take().unwrap();
    let mut lines = BufReader::new(python.stdout.take().unwrap()).lines();
    let mut stderr = python.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        stderr.read_to_string(&mut text).await.map(|_| text)
    });
    let mut printed = String::new();
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            println!("{line}");
            printed.push_str(&line);
            printed.push('\n');
            if line == "STOP" || line == "RESTART" {
                venued.take().unwrap().kill9().await.unwrap();
            }
            if line == "START" || line == "RESTART" {
                venued = Some(appliance.start().await);
            }
            if ["STOP", "START", "RESTART"].contains(&line.as_str()) {
                stdin.write_all(b"done\n").await.unwrap();
            }
            if let Some(attendee) = line.strip_prefix("CHECKINS ") {
                let db = hw_tests::open_db(&appliance.data).unwrap();
                let n: i64 = db
                    .query_row(
                        "SELECT count(*) FROM checkins WHERE attendee_id = ?1",
                        [attendee],
                        |r| r.get(0),
                    )
                    .unwrap();
                stdin.write_all(format!("{n}\n").as_bytes()).await.unwrap();
            }
        }
        python.wait().await.unwrap()
    };
    let status = tokio::time::timeout(within, run)
        .await
        .unwrap_or_else(|_| panic!("{script} ends within {within:?}"));
    let stderr = errors.await.unwrap().unwrap_or_default();
    assert!(
        status.success(),
        "{script} failed in Chromium:\n{printed}\n{stderr}\nvenued log:\n{}",
        venued.map(|v| v.log()).unwrap_or_default()
    );
}

/// The check-in desk: a kiosk signs in with its device credentials (kept across a reload),
/// checks people in by a scanner's keystrokes (a ticket code, or the badge QR code's link) and by
/// name search, answers a doubled scan "already checked in" and an unknown code "unknown
/// ticket", and keeps scans made while venued is stopped (a reload in between included) until
/// it is back, when each is stored exactly once; with a badge printer it shows the badge
/// printing, then printed, reprints on request, and says why a badge waits.
#[tokio::test]
#[ignore = "run alone by scripts/test (a browser loads the machine)"]
async fn the_kiosk_checks_people_in_by_scan_and_search_and_keeps_scans_while_offline() {
    let dir = tempfile::tempdir().unwrap();
    let appliance = Appliance::new(dir.path().join("data"));
    let venued = appliance.start().await;
    let admin = Admin::new(&venued);
    admin
        .import_csv(
            "id,name,company,ticket_code\n\
             a1,Grace Lovelace,Analytical Engines,T1\n\
             a2,Ada Byron,,T2\n\
             a3,Grace Hopper,Navy,T3\n\
             a4,Alan Turing,Bletchley,T4\n\
             a5,Katherine Johnson,NASA,T5\n\
             a6,Dorothy Vaughan,NASA,T6\n"
                .into(),
        )
        .await
        .unwrap();
    let password = admin.device("desk-1", "kiosk").await.unwrap();
    drive(
        "kiosk.py",
        &[
            ("VENUE_KIOSK_ID", "desk-1".to_string()),
            ("VENUE_KIOSK_PASSWORD", password),
            ("VENUE_ADMIN_TOKEN", venued.admin_token()),
        ],
        &appliance,
        Some(venued),
        Duration::from_secs(240),
    )
    .await;
}

/// A room's display at 1920×1080 on the demo event: set up with its signage device, it shows
/// the room, the sessions, the app's QR code, and follows over MQTT over WebSocket the demo
/// simulator's occupancy (full unmistakable), content set through the admin API and
/// announcements; it comes back by itself after venued restarts; its JS heap stays flat through
/// 2,000 updates.
#[tokio::test]
#[ignore = "run alone by scripts/test (a browser loads the machine)"]
async fn a_signage_display_follows_occupancy_content_and_announcements_with_a_flat_heap() {
    let dir = tempfile::tempdir().unwrap();
    let mut appliance = Appliance::new(dir.path().join("data"));
    // The display's MQTT link must find the broker on the same port after a restart.
    appliance.env.push((
        "VENUED_MQTT_LISTEN_WS",
        format!("127.0.0.1:{}", free_port()),
    ));
    appliance.args.push("--demo".into());
    let venued = appliance.start().await;
    let password = Admin::new(&venued)
        .device("door-hall-a", "signage")
        .await
        .unwrap();
    let staff = super::hub::token(&venued, "att-0001", &["staff"]).await;
    drive(
        "signage.py",
        &[
            ("VENUE_DISPLAY", "door-hall-a".to_string()),
            ("VENUE_DISPLAY_PASSWORD", password),
            ("VENUE_ADMIN_TOKEN", venued.admin_token()),
            ("VENUE_STAFF_TOKEN", staff),
        ],
        &appliance,
        Some(venued),
        Duration::from_secs(300),
    )
    .await;
}

/// Venue IT's console: signed in with the admin token, it shows BLE (a recording played back)
/// going degraded when the recording ends, and a kiosk going offline when its MQTT link
/// vanishes, both without a reload; a CSV with bad lines gets each line's error; registering a
/// kiosk shows its password once and a QR code that decodes to the kiosk page's address with
/// the id and password, which sets a tablet up in one scan; a badge printer added in the
/// console shows ready, then offline when it goes away; a peer box that does not answer shows
/// as unreachable; in the image, the slot and image version show, and so does a provisioning
/// file the box refused (the environment the image's unit sets).
#[tokio::test]
#[ignore = "run alone by scripts/test (a browser loads the machine)"]
async fn the_console_shows_health_live_and_does_venue_its_tasks() {
    use ble_scanner::{Advertisement, replay};
    let dir = tempfile::tempdir().unwrap();
    // Adverts for 25 s: BLE is ok while they play, degraded ("the advert source ended") after.
    let recording = dir.path().join("adverts.jsonl");
    let mut adverts = Vec::new();
    for second in 0..25u64 {
        let advert = Advertisement {
            scanner: "scanner-a".into(),
            address: "c0:00:00:00:00:01".into(),
            rssi: Some(-60),
            at_ms: 1_000_000 + second * 1000,
            ..Advertisement::default()
        };
        replay::write(&mut adverts, &advert).unwrap();
    }
    std::fs::write(&recording, adverts).unwrap();
    let config = dir.path().join("venued.toml");
    std::fs::write(
        &config,
        format!(
            "[ble]\nsource = \"replay\"\nreplay_file = {:?}\n\
             [[ble.scanners]]\nid = \"scanner-a\"\nzone = \"hall-a\"\n\
             [peers]\nkey = \"a-venue-key-for-the-console-test-0123\"\nurls = \"http://127.0.0.1:9\"\n",
            recording.display().to_string()
        ),
    )
    .unwrap();
    let mut appliance = Appliance::new(dir.path().join("data"));
    appliance.args.push("--config".into());
    appliance.args.push(config.to_str().unwrap().into());
    // A printer that goes away shows as offline within a second or two.
    appliance
        .env
        .push(("VENUED_PRINT_PROBE_INTERVAL_SECS", "1".into()));
    let refused = dir.path().join("provisioning-error");
    std::fs::write(
        &refused,
        "The provisioning file venue-edge.toml was NOT applied.\r\n  - `event.id`: `bad id!` is not an id\r\n",
    )
    .unwrap();
    appliance.env.extend([
        ("VENUE_EDGE_IMAGE_VERSION", "1.4.2".into()),
        ("VENUE_EDGE_SLOT", "B".into()),
        (
            "VENUE_EDGE_PROVISIONING_ERROR_FILE",
            refused.to_str().unwrap().into(),
        ),
    ]);
    let venued = appliance.start().await;
    let password = Admin::new(&venued).device("desk-1", "kiosk").await.unwrap();
    let mqtt = venued.mqtt_addr("tcp").await.unwrap();
    drive(
        "console.py",
        &[
            ("VENUE_ADMIN_TOKEN", venued.admin_token()),
            ("VENUE_KIOSK_PASSWORD", password),
            ("VENUE_MQTT_PORT", mqtt.port().to_string()),
        ],
        &appliance,
        Some(venued),
        Duration::from_secs(240),
    )
    .await;
}

/// Two appliances of one event, synced through a real relay: an attendee signs in on A in the
/// browser (A mints the token with its own key), and the same token opens the app on B, whose
/// verifier learned A's key by sync (`token_key.publish`).
#[tokio::test]
#[ignore = "run alone by scripts/test (a browser loads the machine)"]
async fn a_token_signed_in_on_one_appliance_opens_the_app_on_another() {
    use hw_tests::relay::{self, Relay};
    const EVENT: &str = "ev-browser";
    let dir = tempfile::tempdir().unwrap();
    let database = relay::sqlite_database(dir.path());
    let port = relay::free_port().unwrap();
    let _relay = Relay::start(&database, port, &dir.path().join("relay.log"))
        .await
        .unwrap();
    let mut boxes = Vec::new();
    for name in ["registration", "hall"] {
        let (_, token) = relay::add_appliance(&database, "org1", &[EVENT])
            .await
            .unwrap();
        boxes.push(
            VenuedBuilder::new(&dir.path().join(name))
                .env("VENUED_EVENT_ID", EVENT)
                .env("VENUED_MQTT_ENABLED", "false")
                .env("VENUED_SYNC_RELAY_URL", &format!("http://127.0.0.1:{port}"))
                .env("VENUED_SYNC_TOKEN", &token)
                .env("VENUED_SYNC_PULL_WAIT_SECS", "10")
                .spawn()
                .await
                .unwrap(),
        );
    }
    let (a, b) = (&boxes[0], &boxes[1]);
    Admin::new(a)
        .import_csv("id,name,email,ticket_code\na1,Grace Lovelace,,T1\n".into())
        .await
        .unwrap();
    // Synced: a token A signs opens B (A's key and the attendee both arrived there).
    let (status, minted) = Admin::new(a)
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/tokens",
            Some(serde_json::json!({"attendee_id": "a1"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{minted}");
    hw_tests::wait_for_json(
        &b.url("/api/v1/me"),
        minted["token"].as_str(),
        "the registration box's key and attendee synced to the hall box",
        Duration::from_secs(60),
        |me| me["id"] == "a1",
    )
    .await
    .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/two_appliances.py");
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(hw_tests::s3::tool("python3"))
            .arg(&script)
            .env("VENUE_A_URL", a.url(""))
            .env("VENUE_B_URL", b.url(""))
            .env("VENUE_SCREENSHOTS", screenshots())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run ends within 2 minutes")
    .expect("python3 from target/test-venv runs (scripts/test installs playwright there)");
    assert!(
        output.status.success(),
        "the two-appliance run failed in Chromium:\n{}\n{}\nA's log:\n{}\nB's log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        a.log(),
        b.log()
    );
}
