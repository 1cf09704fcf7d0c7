//! The relay's API from outside, against a real `venue-relay`: tenant isolation, revocation, and
//! bad batches (corrupt, oversized, foreign scope, bad envelopes, unknown kinds), each with a
//! clear error and nothing partially stored.

use std::time::Duration;

use hw_tests::relay::{self, Relay};
use hw_tests::{Admin, VenuedBuilder};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sync_agent::codec::{self, Encoding};

fn op(scope: &str, kind: &str, entity: &str, body: Value) -> Value {
    op_from("test-node", 1_700_000_000_000, scope, kind, entity, body)
}

/// An op as node `node` would make it, stamped `wall_ms`.
fn op_from(node: &str, wall_ms: u64, scope: &str, kind: &str, entity: &str, body: Value) -> Value {
    json!({
        "id": uuid::Uuid::now_v7(),
        "v": 1,
        "hlc": {"wall_ms": wall_ms, "counter": 0, "node": node},
        "origin": node,
        "scope": scope,
        "kind": kind,
        "entity_id": entity,
        "body": body,
    })
}

async fn push(relay: &Relay, token: &str, body: Vec<u8>, encoding: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(relay.url("/v1/ops"))
        .bearer_auth(token)
        .header("content-encoding", encoding)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(relay: &Relay, token: &str, path: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(relay.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn zstd(v: &Value) -> Vec<u8> {
    codec::encode(v.to_string().as_bytes(), Encoding::Zstd).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_bad_batches_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = relay::sqlite_database(dir.path());
    let (_, x1) = relay::add_appliance(&db, "org1", &["event-x"])
        .await
        .unwrap();
    let (_, x2) = relay::add_appliance(&db, "org1", &["event-x"])
        .await
        .unwrap();
    let (y_id, y) = relay::add_appliance(&db, "org2", &["event-y"])
        .await
        .unwrap();
    let operator1 = relay::cli(&db, &["operator", "add", "--org", "org1"])
        .await
        .unwrap();
    let operator1 = operator1.trim();
    let relay = Relay::start(
        &db,
        relay::free_port().unwrap(),
        &dir.path().join("relay.log"),
    )
    .await
    .unwrap();

    // X pushes into its event; Y cannot push into X's, and sees nothing of it.
    let good = op("event-x", "attendee.upsert", "a1", json!({"name": "Ada"}));
    let (status, body) = push(&relay, &x1, zstd(&json!({"ops": [good]})), "zstd").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"].as_array().map(Vec::len), Some(1));
    let foreign = op("event-x", "attendee.upsert", "a2", json!({"name": "Eve"}));
    let mine = op("event-y", "attendee.upsert", "a3", json!({"name": "Eve"}));
    let (status, body) = push(&relay, &y, zstd(&json!({"ops": [mine, foreign]})), "zstd").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "scope_forbidden");
    let (status, pulled) = get(&relay, &y, "/v1/ops?after=0").await;
    assert_eq!(status, 200);
    assert_eq!(
        pulled["ops"],
        json!([]),
        "Y sees nothing of X, and its own refused batch left nothing"
    );
    let (_, pulled) = get(&relay, &x2, "/v1/ops?after=0").await;
    let ids: Vec<&str> = pulled["ops"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["entity_id"].as_str())
        .collect();
    assert_eq!(ids, ["a1"], "X2 sees X1's op and none of Y's refused batch");

    // Operators see their own org only; appliance tokens have no operator API.
    let (status, listed) = get(&relay, operator1, "/v1/admin/appliances").await;
    assert_eq!(status, 200);
    let orgs: Vec<&str> = listed["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["org"].as_str())
        .collect();
    assert_eq!(orgs, ["org1", "org1"]);
    let (status, _) = get(&relay, &x1, "/v1/admin/appliances").await;
    assert_eq!(status, 403);
    let (status, _) = reqwest::Client::new()
        .delete(relay.url(&format!("/v1/admin/appliances/{y_id}")))
        .bearer_auth(operator1)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(
        status, 404,
        "org1's operator cannot revoke org2's appliance"
    );

    // Bad batches: each a named error, nothing stored.
    let (status, body) = push(&relay, &x1, b"\x28\xb5\x2f\xfdgarbage".to_vec(), "zstd").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("corrupt_body"))
    );
    let (status, body) = push(&relay, &x1, b"{\"ops\": [".to_vec(), "identity").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_batch"))
    );
    let many: Vec<Value> = (0..1001)
        .map(|i| op("event-x", "attendee.upsert", &format!("m{i}"), json!({})))
        .collect();
    let (status, body) = push(&relay, &x1, zstd(&json!({"ops": many})), "zstd").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("batch_too_large"))
    );
    let bomb = codec::encode(&vec![b' '; 2 * 1024 * 1024], Encoding::Zstd).unwrap();
    let (status, body) = push(&relay, &x1, bomb, "zstd").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("batch_too_large"))
    );
    let (status, _) = push(&relay, &x1, b"{}".to_vec(), "br").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (_, pulled) = get(&relay, &x2, "/v1/ops?after=0").await;
    assert_eq!(
        pulled["ops"].as_array().map(Vec::len),
        Some(1),
        "none of the bad batches stored anything"
    );

    // A bad envelope is refused per op and parked on the relay; the rest of the batch is stored.
    let bad = op("event-x", "Not A Kind", "z1", json!({}));
    let fine = op("event-x", "attendee.upsert", "a9", json!({"name": "Zed"}));
    let (status, body) = push(&relay, &x1, zstd(&json!({"ops": [bad, fine]})), "zstd").await;
    assert_eq!(status, 200);
    assert_eq!(body["rejected"][0]["code"], "invalid_kind", "{body}");
    assert_eq!(body["accepted"].as_array().map(Vec::len), Some(1));
    let (_, parked) = get(&relay, operator1, "/v1/admin/parked").await;
    assert_eq!(
        parked["parked"][0]["rejection"]["code"], "invalid_kind",
        "{parked}"
    );

    // Revoked: 401 from then on.
    relay::cli(&db, &["appliance", "revoke", &y_id])
        .await
        .unwrap();
    let (status, body) = get(&relay, &y, "/v1/ops?after=0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    let (status, _) = get(&relay, "vr_not-a-token", "/v1/ops?after=0").await;
    assert_eq!(status, 401);
    let (status, body) = get(&relay, &x1, "/v1/ops?after=0&limit=5000").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

/// An op of a kind this venued does not know (from a newer appliance) is parked on arrival with
/// the reason, and the ops behind it are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_op_kind_is_parked_by_the_appliance_and_the_rest_applied() {
    let dir = tempfile::tempdir().unwrap();
    let db = relay::sqlite_database(dir.path());
    let (_, pusher) = relay::add_appliance(&db, "org1", &["ev1"]).await.unwrap();
    let (_, token) = relay::add_appliance(&db, "org1", &["ev1"]).await.unwrap();
    let port = relay::free_port().unwrap();
    let relay = Relay::start(&db, port, &dir.path().join("relay.log"))
        .await
        .unwrap();
    let future = op("ev1", "vote.cast", "poll-1", json!({"choice": 2}));
    let bad_body = op(
        "ev1",
        "attendee.upsert",
        "a1",
        json!({"privacy": "everyone-everywhere"}),
    );
    let after = op("ev1", "attendee.upsert", "a2", json!({"name": "Grace"}));
    let (status, body) = push(
        &relay,
        &pusher,
        zstd(&json!({"ops": [future, bad_body, after]})),
        "zstd",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let venued = VenuedBuilder::new(&dir.path().join("b"))
        .env("VENUED_EVENT_ID", "ev1")
        .env("VENUED_MQTT_ENABLED", "false")
        .env("VENUED_SYNC_RELAY_URL", &relay.url(""))
        .env("VENUED_SYNC_TOKEN", &token)
        .spawn()
        .await
        .unwrap();
    hw_tests::wait_for_json(
        &venued.url("/api/v1/status"),
        None,
        "the pulled batch applied",
        Duration::from_secs(30),
        |s| s["sync"]["agent"]["parked_ops"] == 2 && s["sync"]["agent"]["applied_ops"] == 1,
    )
    .await
    .unwrap();
    let admin = Admin::new(&venued);
    let (_, parked) = admin
        .call(reqwest::Method::GET, "/api/v1/admin/sync/parked", None)
        .await
        .unwrap();
    let reasons: Vec<String> = parked["parked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{} {}", p["kind"], p["reason"]))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("vote.cast") && r.contains("unknown op kind")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("privacy")), "{reasons:?}");
    let (status, a2) = admin
        .call(reqwest::Method::GET, "/api/v1/admin/attendees/a2", None)
        .await
        .unwrap();
    assert_eq!((status, a2["name"].as_str()), (200, Some("Grace")));
    let (status, _) = admin
        .call(reqwest::Method::GET, "/api/v1/admin/attendees/a1", None)
        .await
        .unwrap();
    assert_eq!(status, 404, "nothing of the refused op was applied");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The outside probe's two relay findings: one op stamped past i64::MAX poisoned the clock of
/// every appliance of the event, and an appliance could push ops under another's node id. The
/// relay now parks both, and the appliance that pulls never sees them: its later edits win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_poisoned_clock_or_a_forged_origin_is_parked_by_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let db = relay::sqlite_database(dir.path());
    let (_, a_token) = relay::add_appliance(&db, "org1", &["ev1"]).await.unwrap();
    let (_, b_token) = relay::add_appliance(&db, "org1", &["ev1"]).await.unwrap();
    let (_, c_token) = relay::add_appliance(&db, "org1", &["ev1"]).await.unwrap();
    let relay = Relay::start(
        &db,
        relay::free_port().unwrap(),
        &dir.path().join("relay.log"),
    )
    .await
    .unwrap();
    let a = VenuedBuilder::new(&dir.path().join("a"))
        .env("VENUED_EVENT_ID", "ev1")
        .env("VENUED_MQTT_ENABLED", "false")
        .env("VENUED_SYNC_RELAY_URL", &relay.url(""))
        .env("VENUED_SYNC_TOKEN", &a_token)
        .spawn()
        .await
        .unwrap();
    let admin = Admin::new(&a);
    let (status, _) = admin
        .call(
            reqwest::Method::POST,
            "/api/v1/admin/attendees",
            Some(json!({"id": "a1", "name": "Ada", "ticket_code": "T-1"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    // A's node id, as its own pushes bind it at the relay.
    let (_, status_a) = get_json(&a.url("/api/v1/status")).await;
    let a_node = status_a["node_id"].as_str().unwrap().to_string();
    hw_tests::wait_for_json(
        &a.url("/api/v1/status"),
        None,
        "A's first op pushed",
        Duration::from_secs(30),
        |s| s["outbox"]["ops"] == 0 && s["sync"]["agent"]["pushed_ops"].as_u64() > Some(0),
    )
    .await
    .unwrap();
    // Found on the way: the relay's operators saw the drained backlog only at the next 30 s
    // heartbeat. The report of what is left follows the push at once.
    let operator = relay::cli(&db, &["operator", "add"]).await.unwrap();
    hw_tests::wait_for_json(
        &relay.url("/v1/admin/appliances"),
        Some(operator.trim()),
        "A's report of an empty backlog at the relay",
        Duration::from_secs(10),
        |list| {
            list["appliances"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|a| a["node"] == a_node.as_str() && a["report"]["backlog_ops"] == 0)
            })
        },
    )
    .await
    .unwrap();

    // B binds itself with one honest op, then tries the poisons.
    let now = now_ms();
    let honest = op_from(
        "node-b",
        now,
        "ev1",
        "attendee.upsert",
        "b1",
        json!({"name": "Bo"}),
    );
    let (status, body) = push(&relay, &b_token, zstd(&json!({"ops": [honest]})), "zstd").await;
    assert_eq!(status, 200, "{body}");
    let overflow = op_from(
        "node-b",
        9_223_372_036_854_775_813,
        "ev1",
        "attendee.upsert",
        "a1",
        json!({"name": "Poison"}),
    );
    let year_2100 = op_from(
        "node-b",
        4_102_444_800_000,
        "ev1",
        "attendee.upsert",
        "a1",
        json!({"name": "Poison 2100"}),
    );
    // An op whose stamp names another node than its origin: refused. (An op of A's carried
    // by B, origin and stamp both A's, is welcome: B pulled it on the LAN; sync.rs::lan.)
    let mut forged = op_from(
        &a_node,
        now,
        "ev1",
        "checkin.record",
        "a1",
        json!({"device_id": "kiosk-1"}),
    );
    forged["hlc"]["node"] = json!("node-b");
    let (status, body) = push(
        &relay,
        &b_token,
        zstd(&json!({"ops": [overflow, year_2100, forged]})),
        "zstd",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<&str> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert_eq!(
        codes,
        ["invalid_hlc", "clock_ahead", "origin_forbidden"],
        "{body}"
    );
    assert_eq!(body["accepted"], json!([]));
    // C's first push claims A's node: refused whole.
    let forged = op_from(
        &a_node,
        now,
        "ev1",
        "attendee.upsert",
        "a1",
        json!({"name": "Eve"}),
    );
    let (status, body) = push(&relay, &c_token, zstd(&json!({"ops": [forged]})), "zstd").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("node_taken"))
    );

    // A pulls B's honest op and nothing else; its own later edit of a1 wins.
    hw_tests::wait_for_json(
        &a.url("/api/v1/status"),
        None,
        "B's honest op pulled",
        Duration::from_secs(30),
        |s| s["sync"]["agent"]["applied_ops"] == 1,
    )
    .await
    .unwrap();
    let (status, _) = admin
        .call(
            reqwest::Method::PUT,
            "/api/v1/admin/attendees/a1",
            Some(json!({"name": "Ada Lovelace", "ticket_code": "T-1"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (_, a1) = admin
        .call(reqwest::Method::GET, "/api/v1/admin/attendees/a1", None)
        .await
        .unwrap();
    assert_eq!(a1["name"], "Ada Lovelace", "{a1}");
    let metrics = reqwest::get(relay.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("venue_relay_refused_ops_total{code=\"clock_ahead\"} 1"),
        "{metrics}"
    );
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let r = reqwest::get(url).await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}
