//! Bad input gets a clear error, never a panic or a partial write.

use std::process::Command;
use std::time::Duration;

use hw_tests::{Admin, VenuedBuilder, basic, binary, open_db};
use serde_json::Value;

#[test]
fn bad_config_exits_78_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("venued.toml");
    std::fs::write(
        &config,
        "[http]\nlisen = \"x\"\nmax_body_bytes = \"big\"\n[stroe]\n",
    )
    .unwrap();
    let out = Command::new(binary("venued"))
        .args(["check-config", "--config"])
        .arg(&config)
        .env("VENUED_EVENT_ID", "bad id")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "`http.lisen`",
        "`http.max_body_bytes`",
        "`stroe`",
        "`event.id`",
        "4 problem(s)",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
}

#[test]
fn check_config_accepts_the_defaults() {
    let out = Command::new(binary("venued"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("http.listen = \"0.0.0.0:8080\""));
}

#[tokio::test]
async fn a_database_from_a_newer_release_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    VenuedBuilder::new(&data)
        .spawn()
        .await
        .unwrap()
        .terminate(Duration::from_secs(10))
        .await
        .unwrap();
    rusqlite::Connection::open(data.join("venued.db"))
        .unwrap()
        .execute_batch("PRAGMA user_version = 999")
        .unwrap();
    let out = Command::new(binary("venued"))
        .arg("--data-dir")
        .arg(&data)
        .env("VENUED_HTTP_LISTEN", "127.0.0.1:0")
        .env("VENUED_MDNS_ENABLED", "false")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("schema version 999 is newer"), "{stderr}");
}

async fn request(
    method: reqwest::Method,
    url: String,
    auth: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .header("content-type", content_type)
        .header("idempotency-key", "k")
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    (status, json)
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_write_nothing() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    let admin = Admin::new(&venued);
    admin.import_attendees(2).await.unwrap();
    let kiosk = admin.kiosk("kiosk-1").await.unwrap();
    let bearer = format!("Bearer {}", venued.admin_token());
    let checkins = venued.url("/api/v1/checkins");
    let import = venued.url("/api/v1/admin/attendees/import");
    let json = "application/json";

    // (method, url, Authorization, Content-Type, body, expected status, expected error code)
    type Case<'a> = (
        Method,
        String,
        Option<String>,
        &'a str,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            checkins.clone(),
            None,
            json,
            b"{}".to_vec(),
            401,
            "unauthorized",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(basic("kiosk-1", "wrong")),
            json,
            b"{}".to_vec(),
            401,
            "unauthorized",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(basic("nobody", "x")),
            json,
            b"{}".to_vec(),
            401,
            "unauthorized",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(bearer.clone()),
            json,
            b"{}".to_vec(),
            401,
            "unauthorized",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(kiosk.clone()),
            json,
            b"{\"attendee_id\":".to_vec(),
            400,
            "malformed_json",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(kiosk.clone()),
            json,
            b"{\"attendee_id\":5}".to_vec(),
            422,
            "invalid",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(kiosk.clone()),
            json,
            b"{\"attendee_id\":\"a1\",\"x\":1}".to_vec(),
            422,
            "invalid",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(kiosk.clone()),
            json,
            b"{}".to_vec(),
            422,
            "invalid",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(kiosk.clone()),
            "text/plain",
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(kiosk.clone()),
            json,
            vec![b' '; 70 * 1024],
            413,
            "payload_too_large",
        ),
        (
            Method::POST,
            checkins.clone(),
            Some(kiosk.clone()),
            json,
            b"{\"attendee_id\":\"ghost\"}".to_vec(),
            404,
            "not_found",
        ),
        (
            Method::POST,
            import.clone(),
            Some(kiosk.clone()),
            "text/csv",
            b"id\nz\n".to_vec(),
            401,
            "unauthorized",
        ),
        (
            Method::POST,
            import.clone(),
            Some(bearer.clone()),
            "text/csv",
            b"id,name,privacy\nn1,New,zone\nn2,Bad,loud\n".to_vec(),
            422,
            "invalid",
        ),
        (
            Method::POST,
            import.clone(),
            Some(bearer.clone()),
            json,
            b"[{\"id\":\"n1\"},{\"id\":\"bad id\"}]".to_vec(),
            422,
            "invalid",
        ),
        (
            Method::POST,
            import.clone(),
            Some(bearer.clone()),
            "application/xml",
            b"<a/>".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            Method::GET,
            venued.url("/api/v1/admin/zones"),
            None,
            json,
            vec![],
            401,
            "unauthorized",
        ),
        (
            Method::GET,
            venued.url("/api/v1/admin/nonsense"),
            Some(bearer.clone()),
            json,
            vec![],
            404,
            "not_found",
        ),
        (
            Method::GET,
            venued.url("/no/such/path"),
            None,
            json,
            vec![],
            404,
            "not_found",
        ),
        (
            Method::POST,
            venued.url("/api/v1/admin/zones"),
            Some(bearer.clone()),
            json,
            b"{\"id\":\"z1\",\"capacity\":-1}".to_vec(),
            422,
            "invalid",
        ),
    ];
    for (method, url, auth, content_type, body, status, code) in cases {
        let label = format!("{method} {url} ({content_type}, {} bytes)", body.len());
        let (got, json) = request(method, url, auth.as_deref(), content_type, body).await;
        assert_eq!(got, status, "{label}: {json}");
        assert_eq!(json["error"]["code"], code, "{label}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{label}"
        );
    }
    // The refused CSV import names the line and the field.
    let (_, refused) = request(
        Method::POST,
        import,
        Some(&bearer),
        "text/csv",
        b"id,name,privacy\nn1,New,zone\nn2,Bad,loud\n".to_vec(),
    )
    .await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("line 3") && message.contains("privacy"),
        "{message}"
    );

    let exit = venued.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(exit.success());
    let db = open_db(&data).unwrap();
    let (attendees, checkins, zones): (i64, i64, i64) = db
        .query_row(
            "SELECT (SELECT count(*) FROM attendees), (SELECT count(*) FROM checkins),
                    (SELECT count(*) FROM zones)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (attendees, checkins, zones),
        (2, 0, 0),
        "nothing partial was written"
    );
}

#[tokio::test]
async fn repeated_wrong_credentials_are_refused_per_source_address() {
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .spawn()
        .await
        .unwrap();
    let right = Admin::new(&venued).kiosk("kiosk-1").await.unwrap();
    let wrong = basic("kiosk-1", "guess");
    let lookup = venued.url("/api/v1/attendees?q=ada");
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let attacker = from([127, 0, 0, 1]);
    for attempt in 1..=10 {
        let status = attacker
            .get(&lookup)
            .header("authorization", &wrong)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "attempt {attempt}");
    }
    let refused = attacker
        .get(&lookup)
        .header("authorization", &wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // While limited, even the right password is not tried from that address...
    let status = attacker
        .get(&lookup)
        .header("authorization", &right)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 429);
    // ...but another address is not affected.
    let status = from([127, 0, 0, 2])
        .get(&lookup)
        .header("authorization", &right)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

/// The outside probe: with the ceiling at 100, kiosks were refused while 100 bare sockets were
/// held, and a header dribbled a byte every 5 s kept its connection for 150 s. Now bare sockets
/// fill only their share and give way to newcomers, a kiosk checks in through the flood, and
/// every socket that never sends a whole request is closed within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_flood_of_bare_sockets_neither_holds_the_box_nor_locks_out_kiosks() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .env("VENUED_HTTP_MAX_CONNECTIONS", "100")
        .env("VENUED_MQTT_ENABLED", "false")
        .spawn()
        .await
        .unwrap();
    let admin = Admin::new(&venued);
    admin.import_attendees(1).await.unwrap();
    let kiosk = admin.kiosk("kiosk-1").await.unwrap();
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(tokio::net::TcpStream::connect(venued.addr).await.unwrap());
    }
    let mut dribbler = tokio::net::TcpStream::connect(venued.addr).await.unwrap();
    dribbler.write_all(b"G").await.unwrap();

    // A kiosk's fresh connection gets through (a reqwest client of its own, so no pooled
    // connection from before the flood helps it).
    let r = reqwest::Client::new()
        .post(venued.url("/api/v1/checkins"))
        .header("authorization", &kiosk)
        .header("idempotency-key", "through-the-flood")
        .json(&serde_json::json!({"attendee_id": "a0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Every bare socket and the dribbler are closed by the server, none later than the
    // unproven idle time (10 s) and a margin.
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    let all = futures::future::join_all(flood.into_iter().chain([dribbler]).map(closed));
    tokio::time::timeout(Duration::from_secs(20), all)
        .await
        .expect("every bare socket closed by the server");
    let metrics = venued.metrics().await.unwrap();
    for reason in ["unproven_idle", "unproven_evicted"] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted"
        );
    }
}

/// The outside probe: a body sent too slowly got a bare 408 while every other error is the API's
/// JSON. Now it is `{"error":{"code":"request_timeout",…}}` like the rest.
#[tokio::test]
async fn regression_a_body_sent_too_slowly_gets_a_json_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let venued = VenuedBuilder::new(&dir.path().join("data"))
        .env("VENUED_HTTP_REQUEST_TIMEOUT_SECS", "2")
        .env("VENUED_MQTT_ENABLED", "false")
        .spawn()
        .await
        .unwrap();
    let kiosk = Admin::new(&venued).kiosk("kiosk-1").await.unwrap();
    let mut socket = tokio::net::TcpStream::connect(venued.addr).await.unwrap();
    // A kiosk's headers whole, the body promised and never finished.
    let head = format!(
        "POST /api/v1/checkins HTTP/1.1\r\nHost: venued\r\nAuthorization: {kiosk}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"attendee"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer))
        .await
        .expect("answered and closed within the request timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
}

/// A stderr every write to fails with ENOSPC, as on a full disk.
fn dev_full() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
}

/// The soak caught a restart on a full disk never reaching READY=1: with stderr's file on the
/// full disk, tracing-subscriber reported its failed write with `eprintln!`, which panicked the
/// daemon (exit 101). With stderr unwritable (`/dev/full`), venued now serves anyway.
#[tokio::test]
async fn regression_an_unwritable_stderr_does_not_stop_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(binary("venued"))
        .arg("--demo")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("VENUED_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("VENUED_MQTT_ENABLED", "false")
        // Nothing multicast on the machine's real interfaces.
        .env("VENUED_MDNS_ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(dev_full())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "venued exited with an unwritable stderr"
        );
        let healthy = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if healthy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "venued never answered"
        );
        every.tick().await;
    }
}

/// Found by the soak (CI, 2026-12-06): a restart on a full disk that could not start wrote its
/// reason with `eprintln!` to a stderr on the same disk, which panicked (exit 101) instead of
/// exiting 1. A start that fails (its HTTP port is taken) with stderr unwritable exits 1.
#[tokio::test]
async fn regression_a_failed_start_with_an_unwritable_stderr_exits_1_not_101() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let status = tokio::process::Command::new(binary("venued"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env(
            "VENUED_HTTP_LISTEN",
            taken.local_addr().unwrap().to_string(),
        )
        .env("VENUED_MQTT_ENABLED", "false")
        // Nothing multicast on the machine's real interfaces.
        .env("VENUED_MDNS_ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(dev_full())
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(30), status)
        .await
        .expect("venued gives up on a taken port")
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status:?}");
}
