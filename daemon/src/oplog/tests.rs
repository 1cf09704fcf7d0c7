use rusqlite::Connection;
use serde_json::json;
use sync_agent::{Hlc, Op};

use super::*;
use crate::store::migrate_for_tests;

fn db() -> Connection {
    let mut conn = Connection::open_in_memory().expect("memory db");
    migrate_for_tests(&mut conn);
    conn
}

fn op(node: &str, wall: u64, kind: &str, entity: &str, body: serde_json::Value) -> Op {
    Op {
        id: uuid::Uuid::now_v7(),
        v: 1,
        hlc: Hlc {
            wall_ms: wall,
            counter: 0,
            node: node.into(),
        },
        origin: node.into(),
        scope: "ev".into(),
        kind: kind.into(),
        entity_id: entity.into(),
        body,
        extra: Default::default(),
    }
}

/// Applies `ops` in a transaction, the way the writer does.
fn apply_all(conn: &mut Connection, ops: &[Op]) {
    let tx = conn.transaction().expect("tx");
    for o in ops {
        apply(&tx, o, 0).expect("applies");
    }
    tx.commit().expect("commit");
}

/// Every table's rows (minus local bookkeeping such as receive times), for comparing replicas.
fn digest(conn: &Connection) -> String {
    let mut out = String::new();
    for (table, cols) in [
        (
            "attendees",
            "id, event_id, name, email, company, ticket_code, badge_beacon_id, privacy, deleted",
        ),
        ("zones", "id, event_id, name, capacity, deleted"),
        ("checkins", "op_id, attendee_id, device_id, duplicate_of"),
        ("conflicts", "op_id, kind, entity_id, winner_op_id, detail"),
        (
            "ops",
            "id, v, hlc_wall, hlc_counter, hlc_node, origin, scope, kind, entity_id, body, extra",
        ),
        (
            "messages",
            "message_id, channel, sender, content, deleted, edit_wall, edit_counter, edit_node, edited_ms",
        ),
        ("reactions", "tag, message_id, emoji, user_id"),
        ("removed_tags", "tag"),
        ("chat_groups", "group_id, event_id, name, created_by"),
        ("group_members", "tag, group_id, user_id"),
        ("mentions", "user_id, channel, seq"),
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT {cols} FROM {table} ORDER BY 1"))
            .expect("prepare");
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut line = Vec::new();
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    line.push(format!("{v:?}"));
                }
                Ok(line.join("|"))
            })
            .expect("query");
        for row in rows {
            out.push_str(table);
            out.push(':');
            out.push_str(&row.expect("row"));
            out.push('\n');
        }
    }
    out
}

/// All orders of a small list.
fn permutations(items: &[Op]) -> Vec<Vec<Op>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            all.push(tail);
        }
    }
    all
}

fn assert_converges(ops: &[Op]) -> Connection {
    let mut reference = db();
    apply_all(&mut reference, ops);
    let expected = digest(&reference);
    for order in permutations(ops) {
        let mut replica = db();
        apply_all(&mut replica, &order);
        assert_eq!(
            digest(&replica),
            expected,
            "order {:?}",
            order.iter().map(|o| &o.id).collect::<Vec<_>>()
        );
    }
    reference
}

#[test]
fn applying_an_op_twice_is_a_no_op() {
    let mut conn = db();
    let o = op("a", 10, "attendee.upsert", "p1", json!({"name": "Ada"}));
    let tx = conn.transaction().expect("tx");
    assert!(matches!(apply(&tx, &o, 0).expect("first"), Applied::New(_)));
    assert_eq!(apply(&tx, &o, 0).expect("second"), Applied::Duplicate);
    tx.commit().expect("commit");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM ops", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1);
}

#[test]
fn field_updates_converge_last_writer_wins_per_field() {
    let ops = [
        op(
            "a",
            10,
            "attendee.upsert",
            "p1",
            json!({"name": "Ada", "company": "X"}),
        ),
        op("b", 20, "attendee.upsert", "p1", json!({"name": "Ada L."})),
        op(
            "a",
            15,
            "attendee.upsert",
            "p1",
            json!({"company": "Y", "privacy": "hidden"}),
        ),
        op(
            "c",
            20,
            "attendee.upsert",
            "p1",
            json!({"name": "Ada Lovelace"}),
        ), // ties on wall: node c > b
    ];
    let conn = assert_converges(&ops);
    let row: (String, String, String) = conn
        .query_row(
            "SELECT name, company, privacy FROM attendees WHERE id = 'p1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row");
    assert_eq!(row, ("Ada Lovelace".into(), "Y".into(), "hidden".into()));
}

#[test]
fn double_check_in_from_two_nodes_keeps_both_and_flags_the_later_in_any_order() {
    let first = op(
        "kiosk-node-b",
        100,
        CHECKIN_RECORD,
        "p1",
        json!({"device_id": "k2"}),
    );
    let later = op(
        "kiosk-node-a",
        200,
        CHECKIN_RECORD,
        "p1",
        json!({"device_id": "k1"}),
    );
    let latest = op("kiosk-node-c", 300, CHECKIN_RECORD, "p1", json!({}));
    let conn = assert_converges(&[later.clone(), first.clone(), latest.clone()]);
    let dups: Vec<(String, Option<String>)> = conn
        .prepare("SELECT op_id, duplicate_of FROM checkins ORDER BY hlc_wall")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let first_id = first.id.to_string();
    assert_eq!(dups[0], (first_id.clone(), None));
    assert_eq!(dups[1], (later.id.to_string(), Some(first_id.clone())));
    assert_eq!(dups[2], (latest.id.to_string(), Some(first_id.clone())));
    let conflicts: i64 = conn
        .query_row(
            "SELECT count(*) FROM conflicts WHERE kind = 'checkin.duplicate' AND winner_op_id = ?1",
            [first_id],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(conflicts, 2);
}

#[test]
fn refused_ops_leave_no_trace() {
    let mut conn = db();
    let cases = [
        (
            op(
                "a",
                1,
                "attendee.upsert",
                "p1",
                json!({"privacy": "everyone"}),
            ),
            "privacy",
        ),
        (
            op("a", 1, "attendee.upsert", "p1", json!({"name": 5})),
            "`name` must be a string",
        ),
        (
            op("a", 1, "attendee.upsert", "p1", json!(["name"])),
            "JSON object",
        ),
        (
            op("a", 1, "zone.upsert", "z1", json!({"capacity": -3})),
            "capacity",
        ),
        (
            op("a", 1, "teleport.start", "p1", json!({})),
            "unknown op kind `teleport.start`",
        ),
        (
            op("a", 1, CHECKIN_RECORD, "p1", json!({"device_id": "a b"})),
            "device_id",
        ),
        (op("a", 1, "zone.upsert", "", json!({})), "entity id"),
    ];
    for (o, expected) in cases {
        let tx = conn.transaction().expect("tx");
        let err = apply(&tx, &o, 0).expect_err("must be refused").to_string();
        assert!(err.contains(expected), "{err} should mention {expected}");
        drop(tx);
    }
    assert_eq!(digest(&conn), "");
}

#[test]
fn an_entity_cannot_move_between_events() {
    let mut conn = db();
    apply_all(
        &mut conn,
        &[op("a", 1, "zone.upsert", "z1", json!({"name": "Hall"}))],
    );
    let mut other = op("a", 2, "zone.upsert", "z1", json!({"name": "Other"}));
    other.scope = "ev2".into();
    let tx = conn.transaction().expect("tx");
    let err = apply(&tx, &other, 0).expect_err("refused");
    assert!(matches!(err, ApplyError::ScopeMismatch { .. }), "{err}");
}

#[test]
fn unknown_body_fields_are_kept_in_the_log_but_not_applied() {
    let mut conn = db();
    let o = op(
        "a",
        1,
        "zone.upsert",
        "z1",
        json!({"name": "Hall", "colour": "red"}),
    );
    apply_all(&mut conn, &[o]);
    let logged: String = conn
        .query_row("SELECT body FROM ops", [], |r| r.get(0))
        .expect("op");
    assert!(logged.contains("colour"));
}

#[test]
fn logged_ops_read_back_identical_including_unknown_envelope_fields() {
    let mut conn = db();
    let mut newer = op("b", 7, "zone.upsert", "z1", json!({"name": "Hall"}));
    newer.v = 3;
    newer
        .extra
        .insert("signature".into(), json!({"alg": "ed25519", "sig": "abc"}));
    let plain = op("a", 8, CHECKIN_RECORD, "p1", json!({"device_id": "k1"}));
    apply_all(&mut conn, &[newer.clone(), plain.clone()]);
    let back = read_after(&conn, 0, 10).expect("reads");
    let ops: Vec<Op> = back.iter().map(|(_, o)| o.clone()).collect();
    assert_eq!(ops, vec![newer, plain]);
    assert!(back[0].0 < back[1].0, "local sequence follows apply order");
    assert_eq!(read_after(&conn, back[0].0, 10).expect("reads").len(), 1);
}

#[test]
fn forgetting_a_trail_converges_whichever_order_the_ops_arrive_in() {
    let t = |node: &str, wall: u64, at: i64, zone: &str| {
        op(
            node,
            wall,
            presence::TRANSITION,
            "p1",
            json!({"kind": "entered", "zone_id": zone, "at_ms": at}),
        )
    };
    let early = t("a", 10, 1_000, "hall-a");
    let late = t("b", 20, 9_000, "hall-b");
    let other_person = op(
        "a",
        11,
        presence::TRANSITION,
        "p2",
        json!({"kind": "moved", "zone_id": "foyer", "at_ms": 2_000}),
    );
    let forget = op("c", 15, presence::FORGET, "p1", json!({"before_ms": 5_000}));
    let conn = assert_converges(&[early.clone(), late.clone(), other_person.clone(), forget]);
    let kept: Vec<String> = conn
        .prepare("SELECT op_id FROM zone_transitions ORDER BY at_ms")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(kept, vec![other_person.id.to_string(), late.id.to_string()]);
    let early_op: i64 = conn
        .query_row(
            "SELECT count(*) FROM ops WHERE id = ?1",
            [early.id.to_string()],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(early_op, 0, "the forgotten op is gone from the log too");
}

#[test]
fn transitions_are_purged_with_their_ops_after_retention() {
    let mut conn = db();
    let old = op(
        "a",
        1,
        presence::TRANSITION,
        "p1",
        json!({"kind": "left", "at_ms": 100}),
    );
    let new = op(
        "a",
        2,
        presence::TRANSITION,
        "p1",
        json!({"kind": "entered", "zone_id": "z", "at_ms": 9_000}),
    );
    apply_all(&mut conn, &[old, new.clone()]);
    assert_eq!(presence::purge_before(&conn, 5_000).expect("purges"), 1);
    let ops: Vec<String> = conn
        .prepare("SELECT id FROM ops")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(ops, vec![new.id.to_string()]);
}

#[test]
fn malformed_transitions_are_refused() {
    let mut conn = db();
    for body in [
        json!({"kind": "teleported", "at_ms": 1}),
        json!({"kind": "entered", "zone_id": "a b", "at_ms": 1}),
        json!({"kind": "entered", "zone_id": "z"}),
        json!({"kind": "left", "at_ms": -5}),
    ] {
        let o = op("a", 1, presence::TRANSITION, "p1", body.clone());
        let tx = conn.transaction().expect("tx");
        assert!(apply(&tx, &o, 0).is_err(), "{body}");
    }
}

fn post(node: &str, wall: u64, id: &str, content: &str) -> Op {
    op(
        node,
        wall,
        message::POST,
        id,
        json!({"channel": "zone:z", "sender": "a1", "content": content}),
    )
}

#[test]
fn edits_and_deletes_converge_in_any_order_even_before_their_message() {
    let posted = post("n1", 100, "m1", "helo @a2");
    let early = op(
        "n1",
        200,
        message::EDIT,
        "m1",
        json!({"content": "hello @a2"}),
    );
    let late = op(
        "n2",
        300,
        message::EDIT,
        "m1",
        json!({"content": "hello all"}),
    );
    let conn = assert_converges(&[posted.clone(), early.clone(), late.clone()]);
    let content: String = conn
        .query_row(
            "SELECT content FROM messages WHERE message_id = 'm1'",
            [],
            |r| r.get(0),
        )
        .expect("row");
    assert_eq!(content, "hello all", "the later edit by HLC wins");
    let mentioned: i64 = conn
        .query_row(
            "SELECT count(*) FROM mentions WHERE user_id = 'a2'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(mentioned, 1, "mentions come from the post");

    let delete_a = op("n2", 150, message::DELETE, "m1", json!({}));
    let delete_b = op("n1", 400, message::DELETE, "m1", json!({}));
    let conn = assert_converges(&[posted, early, late, delete_a, delete_b]);
    let (content, deleted, edited): (String, i64, i64) = conn
        .query_row(
            "SELECT content, deleted, edited_ms FROM messages WHERE message_id = 'm1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row");
    assert_eq!(
        (content.as_str(), deleted, edited),
        ("", 1, 150),
        "a delete beats every edit"
    );
}

#[test]
fn reactions_are_an_observed_remove_set() {
    let posted = post("n1", 100, "m1", "hi");
    let react =
        |node: &str, wall: u64, body: serde_json::Value| op(node, wall, message::REACT, "m1", body);
    let add_1 = react(
        "n1",
        200,
        json!({"emoji": "👍", "user": "a2", "action": "add"}),
    );
    let remove_1 = react(
        "n1",
        300,
        json!({"emoji": "👍", "user": "a2", "action": "remove", "tags": [add_1.id.to_string()]}),
    );
    // Added again on another appliance, concurrently: the remove never saw it, so it stays.
    let add_2 = react(
        "n2",
        250,
        json!({"emoji": "👍", "user": "a2", "action": "add"}),
    );
    let conn = assert_converges(&[posted, add_1, remove_1, add_2.clone()]);
    let tags: Vec<String> = conn
        .prepare("SELECT tag FROM reactions")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(tags, [add_2.id.to_string()]);
}

#[test]
fn group_membership_is_an_observed_remove_set() {
    let create = op(
        "n1",
        100,
        group::CREATE,
        "g1",
        json!({"name": "Rust folks", "created_by": "a1", "members": ["a1", "a2"]}),
    );
    let a2_tag = format!("{}/a2", create.id);
    let remove_a2 = op(
        "n1",
        200,
        group::MEMBERS,
        "g1",
        json!({"action": "remove", "tags": [a2_tag]}),
    );
    let readd_a2 = op(
        "n2",
        150,
        group::MEMBERS,
        "g1",
        json!({"action": "add", "user_ids": ["a2", "a3"]}),
    );
    let conn = assert_converges(&[create, remove_a2, readd_a2]);
    let members = group::members(&conn, "g1").expect("members");
    assert_eq!(
        members,
        ["a1", "a2", "a3"],
        "the concurrent re-add survives the remove"
    );
    assert!(!group::is_member(&conn, "g1", "a9").expect("query"));
}

#[test]
fn malformed_changes_and_group_ops_are_refused() {
    let conn = db();
    for bad in [
        op("n", 1, message::EDIT, "m1", json!({"content": ""})),
        op(
            "n",
            1,
            message::REACT,
            "m1",
            json!({"emoji": "a b", "user": "u", "action": "add"}),
        ),
        op(
            "n",
            1,
            message::REACT,
            "m1",
            json!({"emoji": "x", "user": "u", "action": "toggle"}),
        ),
        op(
            "n",
            1,
            message::REACT,
            "m1",
            json!({"emoji": "x", "user": "u", "action": "remove"}),
        ),
        op(
            "n",
            1,
            group::CREATE,
            "g",
            json!({"name": "n", "created_by": "a", "members": "a"}),
        ),
        op(
            "n",
            1,
            group::MEMBERS,
            "g",
            json!({"action": "add", "user_ids": [1]}),
        ),
    ] {
        assert!(
            matches!(apply(&conn, &bad, 0), Err(ApplyError::InvalidBody { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn mentions_are_attendee_ids_after_an_at_sign() {
    assert_eq!(
        message::mentions("hi @a1 and @b-2, also @a1. mail x@y"),
        ["a1", "b-2", "y"]
    );
    assert!(message::mentions("no one").is_empty());
    let many: String = (0..50).map(|i| format!("@u{i} ")).collect();
    assert_eq!(message::mentions(&many).len(), message::MAX_MENTIONS);
}

#[test]
fn a_published_token_key_is_installed_once_and_never_replaces_another_source() {
    let mut conn = db();
    let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n";
    let publish = |node: &str, kid: &str| {
        op(
            node,
            1,
            token_key::PUBLISH,
            kid,
            json!({"alg": "EdDSA", "public_key_pem": pem}),
        )
    };
    // An admin put a key under this kid on purpose: a published one does not replace it.
    conn.execute(
        "INSERT INTO token_keys (kid, alg, public_pem, added_ms, source)
         VALUES ('appliance-admin', 'ES256', 'admin pem', 0, 'local')",
        [],
    )
    .expect("admin key");
    apply_all(
        &mut conn,
        &[
            publish("n1", "appliance-aaaa"),
            publish("n2", "appliance-aaaa"),
            publish("n1", "appliance-admin"),
        ],
    );
    let keys: Vec<(String, String, String)> = conn
        .prepare("SELECT kid, source, public_pem FROM token_keys ORDER BY kid")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("read");
    assert_eq!(
        keys,
        [
            ("appliance-aaaa".into(), "appliance".into(), pem.into()),
            ("appliance-admin".into(), "local".into(), "admin pem".into()),
        ]
    );
    // A key that is not one, or a kid that is not an id, is refused.
    let tx = conn.transaction().expect("tx");
    for bad in [
        op(
            "n1",
            2,
            token_key::PUBLISH,
            "k",
            json!({"alg": "RS256", "public_key_pem": pem}),
        ),
        op(
            "n1",
            2,
            token_key::PUBLISH,
            "k",
            json!({"alg": "EdDSA", "public_key_pem": "x"}),
        ),
        op(
            "n1",
            2,
            token_key::PUBLISH,
            "bad kid!",
            json!({"alg": "EdDSA", "public_key_pem": pem}),
        ),
    ] {
        assert!(
            matches!(apply(&tx, &bad, 0), Err(ApplyError::InvalidBody { .. })),
            "{bad:?}"
        );
    }
}

/// Ops met from a peer are pushed to the relay like this box's own; ops that came from the
/// relay never are (the relay has them), and an op first met from a peer and then pulled from
/// the relay is not pushed either.
#[test]
fn the_outbox_holds_every_op_the_relay_may_lack_whoever_made_it() {
    let mut conn = db();
    let attendee = |node: &str, id: &str| {
        op(
            node,
            1_000,
            "attendee.upsert",
            id,
            json!({"name": format!("{node} {id}")}),
        )
    };
    let (own, from_peer, from_relay, both) = (
        attendee("me", "a1"),
        attendee("peer", "a2"),
        attendee("far", "a3"),
        attendee("peer", "a4"),
    );
    apply_all(
        &mut conn,
        &[
            own.clone(),
            from_peer.clone(),
            from_relay.clone(),
            both.clone(),
        ],
    );
    outbox::mark_upstream(&conn, &from_relay.id.to_string()).expect("mark");
    outbox::mark_upstream(&conn, &both.id.to_string()).expect("mark");
    let pending = outbox::pending_seqs(&conn, 0, 100).expect("pending");
    let ids: Vec<String> = read_after(&conn, 0, 100)
        .expect("read")
        .into_iter()
        .filter(|(seq, _)| pending.contains(seq))
        .map(|(_, op)| op.entity_id)
        .collect();
    assert_eq!(ids, ["a1", "a2"]);
    assert_eq!(outbox::pending_count(&conn, 0).expect("count").0, 2);
    assert_eq!(
        outbox::pending_count(&conn, pending[0]).expect("count").0,
        1
    );
}

/// A peer is served every op after its cursor but its own, and the cursor moves past its own;
/// a large log comes in answers of about the target size, at least one op each.
#[test]
fn a_peer_is_served_the_log_but_its_own_ops_in_bounded_answers() {
    let mut conn = db();
    let big = "x".repeat(200);
    let ops: Vec<Op> = (0..6)
        .map(|i| {
            let node = if i % 2 == 0 { "caller" } else { "other" };
            op(
                node,
                1_000 + i,
                "attendee.upsert",
                &format!("a{i}"),
                json!({"name": big}),
            )
        })
        .collect();
    apply_all(&mut conn, &ops);
    let all = peers::serve(&conn, "caller", 0, 1000, usize::MAX).expect("serve");
    let got: Vec<&str> = all.ops.iter().map(|o| o.entity_id.as_str()).collect();
    assert_eq!(got, ["a1", "a3", "a5"]);
    assert_eq!((all.cursor, all.head, all.has_more), (6, 6, false));
    let small = peers::serve(&conn, "caller", 0, 1000, 1).expect("serve");
    assert_eq!(small.ops.len(), 1, "one op fits always");
    assert!(small.has_more && small.cursor < 6, "{small:?}");
    let rest = peers::serve(&conn, "caller", small.cursor, 1000, usize::MAX).expect("serve");
    assert_eq!(rest.ops.len(), 2);
    let none = peers::serve(&conn, "caller", 6, 1000, usize::MAX).expect("serve");
    assert!(none.ops.is_empty() && !none.has_more && none.cursor == 6);
    peers::set_cursor(&conn, "other", 4, 1).expect("set");
    assert_eq!(peers::cursor(&conn, "other").expect("get"), 4);
    assert_eq!(peers::cursor(&conn, "never").expect("get"), 0);
}
