//! A full disk, for real: the data directory on a small tmpfs that the test fills. Check-ins
//! and a large import race the filling; every answer must be true (a 2xx is in the file exactly
//! once, a refusal is a retryable 503 and left nothing), readiness must say so, and once space is
//! freed the refused check-ins go through on retry with their idempotency keys.

use std::collections::HashMap;
use std::time::Duration;

use hw_tests::disk::{Tmpfs, fill};
use hw_tests::{Admin, VenuedBuilder, open_db};

/// Size of the tmpfs the data directory lives on.
const TMPFS_MIB: u64 = 48;
const ATTENDEES: usize = 2_000;
const CHECKERS: usize = 8;

async fn check_in(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    i: usize,
) -> (u16, Option<String>) {
    let r = client
        .post(url)
        .header("authorization", auth)
        .header("idempotency-key", format!("disk-{i}"))
        .json(&serde_json::json!({ "attendee_id": format!("a{i}") }))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    if status == 503 {
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(retry_after.is_some(), "a 503 says when to retry");
    } else {
        assert!(
            (200..300).contains(&status),
            "a check-in on a full disk is stored or refused with 503, never {status} {body}"
        );
    }
    (status, retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_full_disk_refuses_writes_with_503_and_loses_or_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // The data directory is the mount point; the daemon's log (data.log beside it) stays off it.
    let data = dir.path().join("data");
    let _tmpfs = Tmpfs::mount(&data, TMPFS_MIB).unwrap();
    let venued = VenuedBuilder::new(&data)
        .env("VENUED_MQTT_ENABLED", "false")
        .spawn()
        .await
        .unwrap();
    let admin = Admin::new(&venued);
    admin.import_attendees(ATTENDEES).await.unwrap();
    let auth = admin.kiosk("kiosk-1").await.unwrap();
    let url = venued.url("/api/v1/checkins");
    let client = reqwest::Client::new();
    let ready = client.get(venued.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // Fill the disk, then race check-ins (8 at a time) against a 25k-row import.
    let ballast = data.join("ballast");
    let filled = fill(&ballast).unwrap();
    assert!(filled > 0);
    let mut big = String::from("id,name,company,ticket_code\n");
    for i in 0..25_000 {
        big.push_str(&format!(
            "x{i},Someone With A Long Name {i},A Company Of Some Size {i},TX-{i:08}\n"
        ));
    }
    let import = {
        let admin = Admin::new(&venued);
        tokio::spawn(async move { admin.import_csv(big).await })
    };
    let mut results: HashMap<usize, u16> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CHECKERS {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
        tasks.spawn(async move {
            let mut mine = Vec::new();
            for i in (worker..400).step_by(CHECKERS) {
                mine.push((i, check_in(&client, &url, &auth, i).await.0));
            }
            mine
        });
    }
    while let Some(done) = tasks.join_next().await {
        results.extend(done.unwrap());
    }
    let import_result = import.await.unwrap();
    let refused: Vec<usize> = results
        .iter()
        .filter(|(_, s)| **s == 503)
        .map(|(i, _)| *i)
        .collect();
    assert!(
        !refused.is_empty() || import_result.is_err(),
        "the full disk refused nothing: the test did not fill it"
    );
    let ready = client.get(venued.url("/readyz")).send().await.unwrap();
    let ready_body: serde_json::Value = ready.json().await.unwrap();
    assert_ne!(
        ready_body["checks"]["store"]["state"], "ok",
        "readiness notices the full disk: {ready_body}"
    );

    // Free the space: the refused check-ins go through on retry, each exactly once.
    std::fs::remove_file(&ballast).unwrap();
    hw_tests::wait_for_json(
        &venued.url("/readyz"),
        None,
        "the store writable again (degraded: the whole tmpfs is below the low-space mark)",
        Duration::from_secs(30),
        |r| {
            r["ready"] == true
                && r["checks"]["store"]["state"] == "degraded"
                && r["checks"]["store"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("MiB free"))
        },
    )
    .await
    .unwrap();
    for &i in &refused {
        let (status, _) = check_in(&client, &url, &auth, i).await;
        assert!(
            (200..300).contains(&status),
            "retry of check-in {i} after freeing space: {status}"
        );
    }
    let conn = open_db(&data).unwrap();
    let counts: HashMap<String, i64> = conn
        .prepare("SELECT attendee_id, count(*) FROM checkins GROUP BY attendee_id")
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for i in 0..400 {
        assert_eq!(
            counts.get(&format!("a{i}")).copied(),
            Some(1),
            "check-in {i} (first answer {}) is in the file exactly once",
            results[&i]
        );
    }
    let imported: i64 = conn
        .query_row(
            "SELECT count(*) FROM attendees WHERE id LIKE 'x%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    match import_result {
        Ok(()) => assert_eq!(imported, 25_000, "an acknowledged import is whole"),
        Err(e) => assert_eq!(imported, 0, "a refused import left nothing: {e}"),
    }
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(conn);
    venued.terminate(Duration::from_secs(10)).await.unwrap();
}
