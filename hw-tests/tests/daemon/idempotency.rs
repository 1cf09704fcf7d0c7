//! A retried check-in returns the original answer and never creates a second one, also across
//! a restart.

use std::time::Duration;

use hw_tests::{Admin, VenuedBuilder, open_db};
use serde_json::{Value, json};

async fn post(url: &str, auth: &str, key: &str, body: Value) -> (u16, Value, bool) {
    let response = reqwest::Client::new()
        .post(url)
        .header("authorization", auth)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    (status, response.json().await.unwrap(), replayed)
}

#[tokio::test]
async fn retries_return_the_original_result_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();
    let admin = Admin::new(&venued);
    admin.import_attendees(3).await.unwrap();
    let auth = admin.kiosk("kiosk-1").await.unwrap();

    let (status, first, replayed) = post(
        &venued.url("/api/v1/checkins"),
        &auth,
        "k-1",
        json!({"ticket_code": "T1"}),
    )
    .await;
    assert_eq!((status, replayed), (201, false), "{first}");
    assert_eq!(first["attendee"]["id"], "a1");
    let (status, again, replayed) = post(
        &venued.url("/api/v1/checkins"),
        &auth,
        "k-1",
        json!({"ticket_code": "T1"}),
    )
    .await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first);

    // A new key for the same attendee: not a new check-in, the existing one is reported.
    let (status, other, _) = post(
        &venued.url("/api/v1/checkins"),
        &auth,
        "k-2",
        json!({"attendee_id": "a1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(other["already_checked_in"], true);
    assert_eq!(other["checkin_id"], first["checkin_id"]);

    let exit = venued.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(exit.success());
    let venued = VenuedBuilder::new(&data).spawn().await.unwrap();

    let (status, after, replayed) = post(
        &venued.url("/api/v1/checkins"),
        &auth,
        "k-1",
        json!({"ticket_code": "T1"}),
    )
    .await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(after, first);
    // The same key with another body is a client bug, not a retry.
    let (status, reused, _) = post(
        &venued.url("/api/v1/checkins"),
        &auth,
        "k-1",
        json!({"ticket_code": "T2"}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    drop(venued);

    let n: i64 = open_db(&data)
        .unwrap()
        .query_row("SELECT count(*) FROM checkins", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}
