//! One conformance suite, run against every storage backend: SQLite on a temporary file, and a
//! real PostgreSQL (a fresh database on the server `VENUE_TEST_PG` names; `scripts/test` starts
//! Debian's PostgreSQL and sets it).

use std::collections::HashSet;
use std::time::Duration;

use cloud_relay::store::postgres::PgStore;
use cloud_relay::store::sqlite::SqliteStore;
use cloud_relay::store::{Appliance, NewAppliance, NodeBinding, Principal, RelayStore};
use sync_agent::wire::{ConflictReport, Op, Rejection, Report, TokenKey};
use sync_agent::{Hlc, OP_SCHEMA_VERSION};
use uuid::Uuid;

fn op(scope: &str, entity: &str) -> Op {
    Op {
        id: Uuid::now_v7(),
        v: OP_SCHEMA_VERSION,
        hlc: Hlc {
            wall_ms: 1,
            counter: 0,
            node: "n".into(),
        },
        origin: "n".into(),
        scope: scope.into(),
        kind: "attendee.upsert".into(),
        entity_id: entity.into(),
        body: serde_json::json!({"name": entity}),
        extra: serde_json::Map::new(),
    }
}

fn appliance(id: &str, org: &str, events: &[&str]) -> Appliance {
    Appliance {
        id: id.into(),
        org: org.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        name: id.into(),
        node: None,
    }
}

async fn add<S: RelayStore>(store: &S, a: &Appliance) {
    store
        .add_appliance(NewAppliance {
            appliance: a.clone(),
            token_hash: format!("hash-{}", a.id),
        })
        .await
        .expect("add appliance");
}

/// Pulls everything `a` may see after `after`, page by page.
async fn pull_all<S: RelayStore>(
    store: &S,
    a: &Appliance,
    mut after: u64,
    limit: u32,
) -> (Vec<Op>, u64) {
    let mut out = Vec::new();
    loop {
        let page = store.pull(a.clone(), after, limit).await.expect("pull");
        assert!(page.cursor >= after, "the cursor never goes back");
        after = page.cursor;
        out.extend(page.ops);
        if !page.has_more {
            return (out, after);
        }
    }
}

async fn conformance<S: RelayStore + Clone>(store: S) {
    let a = appliance("ap-a", "org1", &["ev1"]);
    let b = appliance("ap-b", "org1", &["ev1"]);
    let c = appliance("ap-c", "org2", &["ev2"]);
    for x in [&a, &b, &c] {
        add(&store, x).await;
    }

    // Authentication, and revocation.
    assert_eq!(
        store.authenticate("hash-ap-a".into()).await.expect("auth"),
        Some(Principal::Appliance(a.clone()))
    );
    assert_eq!(store.authenticate("nope".into()).await.expect("auth"), None);
    store
        .add_operator(Some("org2".into()), "op-hash".into())
        .await
        .expect("operator");
    assert_eq!(
        store.authenticate("op-hash".into()).await.expect("auth"),
        Some(Principal::Operator {
            org: Some("org2".into())
        })
    );

    // A push wakes `changes`, dedupes by op id (also within a batch), and reaches B, not A.
    let mut changes = store.changes();
    changes.borrow_and_update();
    let mut first: Vec<Op> = (0..5).map(|i| op("ev1", &format!("a{i}"))).collect();
    // A field from a newer schema version rides along untouched.
    first[1]
        .extra
        .insert("signature".into(), serde_json::json!({"alg": "future"}));
    let mut batch = first.clone();
    batch.push(first[0].clone());
    let r = store
        .push(a.clone(), batch, vec![], None)
        .await
        .expect("push");
    assert_eq!(r.accepted, first.iter().map(|o| o.id).collect::<Vec<_>>());
    assert_eq!(r.duplicates, vec![first[0].id]);
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .expect("a push wakes waiting pulls")
        .expect("store alive");
    let again = store
        .push(a.clone(), first.clone(), vec![], None)
        .await
        .expect("push again");
    assert!(again.accepted.is_empty());
    assert_eq!(again.duplicates.len(), 5);

    let (seen_by_b, b_cursor) = pull_all(&store, &b, 0, 2).await;
    assert_eq!(
        seen_by_b, first,
        "B gets A's ops once, in order, unknown fields and all"
    );
    let (seen_by_a, a_cursor) = pull_all(&store, &a, 0, 2).await;
    assert!(seen_by_a.is_empty(), "an appliance is not sent its own ops");
    assert_eq!(a_cursor, b_cursor, "but its cursor moves past them");

    // Other orgs' and events' appliances see nothing.
    let (seen_by_c, _) = pull_all(&store, &c, 0, 100).await;
    assert!(seen_by_c.is_empty());

    // B answers; A gets exactly that.
    let reply = vec![op("ev1", "b1")];
    store
        .push(b.clone(), reply.clone(), vec![], None)
        .await
        .expect("push b");
    let (seen_by_a, _) = pull_all(&store, &a, a_cursor, 100).await;
    assert_eq!(seen_by_a, reply);

    // Rejections are parked; reports and conflicts are kept, per org.
    let bad = op("ev1", "x");
    let report = Report {
        version: "1.2.3".into(),
        node_id: "node-a".into(),
        backlog_ops: 7,
        conflicts: vec![ConflictReport {
            op_id: "o1".into(),
            kind: "checkin.record".into(),
            entity_id: "att1".into(),
            winner_op_id: "o0".into(),
            detail: "checked in twice".into(),
            recorded_ms: 5,
        }],
        ..Report::default()
    };
    let rejection = Rejection {
        id: bad.id,
        code: "invalid_kind".into(),
        reason: "because".into(),
    };
    let r = store
        .push(
            a.clone(),
            vec![],
            vec![(bad.clone(), rejection.clone())],
            Some(report),
        )
        .await
        .expect("push with a rejection");
    assert_eq!(r.rejected, vec![rejection.clone()]);
    let parked = store.parked(Some("org1".into()), 10).await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].rejection, rejection);
    assert!(
        store
            .parked(Some("org2".into()), 10)
            .await
            .expect("parked")
            .is_empty()
    );
    let conflicts = store
        .conflicts(Some("org1".into()), 10)
        .await
        .expect("conflicts");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].conflict.detail, "checked in twice");
    let listed = store
        .list_appliances(Some("org1".into()))
        .await
        .expect("list");
    assert_eq!(listed.len(), 2);
    let listed_a = listed
        .iter()
        .find(|i| i.appliance.id == "ap-a")
        .expect("a listed");
    assert_eq!(listed_a.report.as_ref().map(|r| r.backlog_ops), Some(7));
    assert!(listed_a.last_seen_ms.is_some());
    assert_eq!(store.list_appliances(None).await.expect("list").len(), 3);
    let (after_parking, _) = pull_all(&store, &b, b_cursor, 100).await;
    assert!(
        !after_parking.iter().any(|o| o.id == bad.id),
        "a parked op is never served"
    );

    // Keys, per event.
    store
        .add_key(TokenKey {
            event: "ev1".into(),
            kid: "k1".into(),
            alg: "EdDSA".into(),
            public_pem: "pem".into(),
        })
        .await
        .expect("key");
    assert_eq!(store.keys(vec!["ev1".into()]).await.expect("keys").len(), 1);
    assert!(
        store
            .keys(vec!["ev2".into()])
            .await
            .expect("keys")
            .is_empty()
    );

    // Revocation: scoped to the operator's org, then the token is nobody.
    assert!(
        !store
            .revoke_appliance("ap-a".into(), Some("org2".into()))
            .await
            .expect("revoke")
    );
    assert!(
        store
            .revoke_appliance("ap-a".into(), None)
            .await
            .expect("revoke")
    );
    assert_eq!(
        store.authenticate("hash-ap-a".into()).await.expect("auth"),
        None
    );

    // Concurrent pushers and a reader paging as they go: the reader ends with every op exactly
    // once, i.e. no cursor ever moved past an op that committed later.
    let pushers: Vec<Appliance> = (0..4)
        .map(|i| appliance(&format!("ap-p{i}"), "org1", &["ev1"]))
        .collect();
    for p in &pushers {
        add(&store, p).await;
    }
    let reader = appliance("ap-reader", "org1", &["ev1"]);
    add(&store, &reader).await;
    let (_, start) = pull_all(&store, &reader, 0, 1000).await;
    let mut tasks = Vec::new();
    for p in pushers.clone() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for round in 0..20 {
                let ops: Vec<Op> = (0..25)
                    .map(|i| op("ev1", &format!("{}-{round}-{i}", p.id)))
                    .collect();
                ids.extend(ops.iter().map(|o| o.id));
                store
                    .push(p.clone(), ops, vec![], None)
                    .await
                    .expect("concurrent push");
            }
            ids
        }));
    }
    let mut got = Vec::new();
    let mut cursor = start;
    let mut done = false;
    while !done {
        done = tasks.iter().all(|t| t.is_finished());
        let page = store.pull(reader.clone(), cursor, 37).await.expect("pull");
        cursor = page.cursor;
        got.extend(page.ops.into_iter().map(|o| o.id));
    }
    let (rest, _) = pull_all(&store, &reader, cursor, 1000).await;
    got.extend(rest.into_iter().map(|o| o.id));
    let mut expected = HashSet::new();
    for t in tasks {
        expected.extend(t.await.expect("pusher"));
    }
    let unique: HashSet<Uuid> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no op served twice");
    assert_eq!(unique, expected, "every op served");

    node_binding(&store).await;
    carried_ops(&store).await;
}

/// An op carried by another appliance than its origin's is kept once, and the log shows whose
/// it is and who brought it, to its org's operators only.
async fn carried_ops<S: RelayStore>(store: &S) {
    let a = appliance("ap-carry-a", "org-carry", &["ev-carry"]);
    let b = appliance("ap-carry-b", "org-carry", &["ev-carry"]);
    add(store, &a).await;
    add(store, &b).await;
    store
        .bind_node(a.id.clone(), "node-carry-a".into())
        .await
        .expect("bind a");
    store
        .bind_node(b.id.clone(), "node-carry-b".into())
        .await
        .expect("bind b");
    let mut of_a = op("ev-carry", "x1");
    of_a.origin = "node-carry-a".into();
    of_a.hlc.node = "node-carry-a".into();
    let r = store
        .push(b.clone(), vec![of_a.clone()], vec![], None)
        .await
        .expect("B carries A's op");
    assert_eq!(r.accepted, vec![of_a.id]);
    let r = store
        .push(a.clone(), vec![of_a.clone()], vec![], None)
        .await
        .expect("A pushes its own op later");
    assert_eq!(r.duplicates, vec![of_a.id], "kept once");
    let log = store
        .log(Some("org-carry".into()), 0, 100)
        .await
        .expect("log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (
            log[0].origin.as_str(),
            log[0].carrier.as_str(),
            log[0].carrier_node.as_deref(),
            log[0].kind.as_str()
        ),
        (
            "node-carry-a",
            "ap-carry-b",
            Some("node-carry-b"),
            "attendee.upsert"
        )
    );
    let after = store
        .log(Some("org-carry".into()), log[0].seq, 100)
        .await
        .expect("log after");
    assert!(after.is_empty());
    let other_org = store.log(Some("org2".into()), 0, 100).await.expect("log");
    assert!(other_org.iter().all(|e| e.op_id != of_a.id.to_string()));
}

/// An appliance is bound to the first node it claims; the binding stands, and no other
/// appliance can claim that node.
async fn node_binding<S: RelayStore>(store: &S) {
    let a = appliance("ap-bind-a", "org", &["ev"]);
    let b = appliance("ap-bind-b", "org", &["ev"]);
    add(store, &a).await;
    add(store, &b).await;
    let bind = |who: &Appliance, node: &str| store.bind_node(who.id.clone(), node.into());
    assert_eq!(
        bind(&a, "node-a").await.expect("bind"),
        NodeBinding::Bound("node-a".into())
    );
    assert_eq!(
        bind(&a, "node-other").await.expect("bind again"),
        NodeBinding::Bound("node-a".into()),
        "the first binding stands"
    );
    assert_eq!(
        bind(&b, "node-a").await.expect("bind b"),
        NodeBinding::Taken,
        "another appliance's node cannot be claimed"
    );
    match store
        .authenticate(format!("hash-{}", a.id))
        .await
        .expect("auth")
    {
        Some(Principal::Appliance(got)) => assert_eq!(got.node.as_deref(), Some("node-a")),
        other => panic!("expected the appliance, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backend_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("relay.db")).expect("open");
    conformance(store).await;
}

/// A fresh database on the test server, and its URL.
pub async fn fresh_pg_database() -> String {
    let server = std::env::var("VENUE_TEST_PG").expect(
        "VENUE_TEST_PG (a PostgreSQL URL) is unset; scripts/test starts PostgreSQL and sets it",
    );
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("connect to VENUE_TEST_PG");
    tokio::spawn(connection);
    let name = format!("relay_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("VENUE_TEST_PG `{server}` has no database part"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backend_conforms() {
    let url = fresh_pg_database().await;
    let store = PgStore::connect(&url, 8).await.expect("connect");
    conformance(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_on_one_postgres_instance_wakes_pulls_on_another() {
    let url = fresh_pg_database().await;
    let one = PgStore::connect(&url, 4).await.expect("connect one");
    let two = PgStore::connect(&url, 4).await.expect("connect two");
    let a = appliance("ap-a", "org", &["ev"]);
    add(&one, &a).await;
    // The listener may still be connecting: push until `two` wakes (its connect also wakes it).
    let mut changes = two.changes();
    let mut woke = false;
    for i in 0..20 {
        one.push(a.clone(), vec![op("ev", &format!("warm{i}"))], vec![], None)
            .await
            .expect("push");
        if tokio::time::timeout(Duration::from_millis(500), changes.changed())
            .await
            .is_ok()
        {
            woke = true;
            break;
        }
    }
    assert!(woke, "the other instance's listener never woke");
    // Now it is listening: this push can only reach it through NOTIFY.
    changes.borrow_and_update();
    one.push(a, vec![op("ev", "e1")], vec![], None)
        .await
        .expect("push");
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .expect("NOTIFY reaches the other instance")
        .expect("alive");
}
