//! The sync wire protocol: the op as it travels between appliances and the relay, and the bodies
//! of `POST /v1/ops`, `GET /v1/ops` and `GET /v1/keys` (`docs/protocol/sync.md`).
//!
//! The op's `body` is opaque JSON here; the daemon owns what each `kind` means. Fields this version
//! does not know (added by a newer appliance or relay) are kept in `extra` and written back out,
//! so an op survives a round trip through an older node unchanged.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hlc::Hlc;

/// The op schema version this build writes. Readers accept any version and keep unknown fields.
pub const OP_SCHEMA_VERSION: u32 = 1;
/// The protocol version this build speaks, sent in [`VERSION_HEADER`] both ways.
pub const PROTOCOL_VERSION: u32 = 1;
/// Request and response header carrying [`PROTOCOL_VERSION`].
pub const VERSION_HEADER: &str = "venue-sync-version";
/// Most ops in one push.
pub const MAX_BATCH_OPS: usize = 1000;
/// Largest push body, in bytes, both as sent (compressed) and once decompressed.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Largest op `body`, serialised.
pub const MAX_OP_BODY_BYTES: usize = 64 * 1024;
/// Most ops in one pull answer.
pub const MAX_PULL_LIMIT: u32 = 1000;
/// Longest long-poll a pull may ask for.
pub const MAX_WAIT_SECS: u64 = 30;

/// One durable change. See DESIGN §5 for the merge rule of each kind family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// UUIDv7, unique across all appliances; applying an op whose id is known is a no-op.
    pub id: Uuid,
    /// Schema version of the op envelope.
    #[serde(default = "default_version")]
    pub v: u32,
    /// Hybrid logical clock stamp given by the origin node.
    pub hlc: Hlc,
    /// The node id of the appliance (or relay) that created the op.
    pub origin: String,
    /// The event the op belongs to; the unit of tenant isolation on the relay.
    pub scope: String,
    /// What the op does, e.g. `attendee.upsert` or `checkin.record`.
    pub kind: String,
    /// The id of the entity the op changes.
    pub entity_id: String,
    /// Kind-specific payload.
    pub body: serde_json::Value,
    /// Fields from newer schema versions, preserved verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_version() -> u32 {
    OP_SCHEMA_VERSION
}

/// `POST /v1/ops` body.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PushRequest {
    /// Local ops in the appliance's order; at most [`MAX_BATCH_OPS`].
    pub ops: Vec<Op>,
    /// How the appliance is doing, for the relay's operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
}

/// An appliance's view of itself, sent with every push.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The appliance's release.
    pub version: String,
    /// The appliance image's release, when `venued` runs in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_version: Option<String>,
    /// The root slot the appliance booted (`A` or `B`), when it runs in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// The appliance's node id.
    #[serde(default)]
    pub node_id: String,
    /// Local ops not yet acknowledged (including this batch).
    pub backlog_ops: u64,
    /// Age of the oldest unacknowledged local op.
    #[serde(default)]
    pub oldest_unsent_age_secs: Option<u64>,
    /// Relay ops of its events the appliance has not pulled yet, as of its last pull.
    #[serde(default)]
    pub pull_lag_ops: u64,
    /// Ops the appliance parked (could not push or apply).
    #[serde(default)]
    pub parked_ops: u64,
    /// Conflicts resolved on the appliance since its previous report (at most 100).
    #[serde(default)]
    pub conflicts: Vec<ConflictReport>,
}

/// One conflict an appliance resolved, as its operators should see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictReport {
    /// The op that lost or was flagged.
    pub op_id: String,
    /// The op kind.
    pub kind: String,
    /// The entity both ops touched.
    pub entity_id: String,
    /// The op that won.
    pub winner_op_id: String,
    /// What happened, in words.
    pub detail: String,
    /// When the appliance recorded it (ms since the epoch).
    pub recorded_ms: u64,
}

/// `POST /v1/ops` answer: every op of the batch is in exactly one of the three lists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Ops stored for the first time.
    pub accepted: Vec<Uuid>,
    /// Ops the relay already had; nothing changed.
    pub duplicates: Vec<Uuid>,
    /// Ops refused, with why; the relay keeps them as parked ops for its operators.
    pub rejected: Vec<Rejection>,
    /// The relay's log position after this batch.
    pub cursor: u64,
}

/// One refused op.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// The op id.
    pub id: Uuid,
    /// Machine-readable reason, e.g. `invalid_kind`.
    pub code: String,
    /// What was wrong and how to fix it.
    pub reason: String,
}

/// `GET /v1/ops` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    /// Ops of the appliance's events from other appliances, in relay order.
    pub ops: Vec<Op>,
    /// Pass as `after` next time; moves past the appliance's own ops too.
    pub cursor: u64,
    /// More ops are waiting: pull again at once.
    pub has_more: bool,
    /// The relay's newest log position for the appliance's events.
    pub head: u64,
}

/// `GET /v1/keys` answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeysResponse {
    /// Attendee-token verification keys of the appliance's events.
    pub keys: Vec<TokenKey>,
}

/// A public key attendee tokens of one event are verified with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenKey {
    /// The event whose tokens it signs.
    pub event: String,
    /// The key id (`kid` in the token header).
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// The public key, PEM.
    pub public_pem: String,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// See [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable, e.g. `scope_forbidden`.
    pub code: String,
    /// What was wrong and how to fix it.
    pub message: String,
}

/// Checks what the relay can check of an op without knowing its kind: the envelope. The daemon
/// checks the body when it applies the op.
pub fn check_envelope(op: &Op) -> Result<(), Rejection> {
    let reject = |code: &str, reason: String| Rejection {
        id: op.id,
        code: code.into(),
        reason,
    };
    if op.id.get_version_num() != 7 {
        return Err(reject(
            "invalid_id",
            format!("op id {} is not a UUIDv7", op.id),
        ));
    }
    if !is_kind(&op.kind) {
        return Err(reject(
            "invalid_kind",
            format!(
                "kind `{}` is not `family.action` in lowercase letters, digits and `_`",
                op.kind.chars().take(64).collect::<String>()
            ),
        ));
    }
    if !is_id(&op.scope) {
        return Err(reject(
            "invalid_scope",
            "scope must be an event id of 1-64 letters, digits, `-`, `_` or `.`".into(),
        ));
    }
    if op.origin.is_empty() || op.origin.len() > 128 || op.hlc.node.len() > 128 {
        return Err(reject(
            "invalid_origin",
            "origin and hlc.node must be 1-128 bytes".into(),
        ));
    }
    if op.hlc.wall_ms > crate::hlc::MAX_WALL_MS {
        return Err(reject(
            "invalid_hlc",
            format!(
                "hlc.wall_ms {} does not fit a signed 64-bit integer",
                op.hlc.wall_ms
            ),
        ));
    }
    if op.entity_id.is_empty() || op.entity_id.len() > 128 {
        return Err(reject(
            "invalid_entity",
            "entity_id must be 1-128 bytes".into(),
        ));
    }
    let body = serde_json::to_vec(&op.body)
        .map(|b| b.len())
        .unwrap_or(usize::MAX);
    if body > MAX_OP_BODY_BYTES {
        return Err(reject(
            "body_too_large",
            format!("body is {body} bytes; the limit is {MAX_OP_BODY_BYTES}"),
        ));
    }
    Ok(())
}

/// Checks an op's stamp against the receiver's clock (`now_ms`): see [`crate::hlc::check_remote`].
/// The relay runs it on every pushed op, so one appliance with a wrong clock cannot move the
/// clocks of the others.
pub fn check_clock(op: &Op, now_ms: u64) -> Result<(), Rejection> {
    crate::hlc::check_remote(&op.hlc, now_ms).map_err(|e| Rejection {
        id: op.id,
        code: "clock_ahead".into(),
        reason: e.to_string(),
    })
}

/// Checks that an op names one node as both its `origin` and its `hlc.node`. An op whose origin
/// is not the pushing appliance's node is *carried*: another appliance of the event pulled it on
/// the venue LAN and brings it upstream (the relay records who carried it); whose it is stays
/// the origin's.
pub fn check_origin(op: &Op) -> Result<(), Rejection> {
    match op.origin == op.hlc.node {
        true => Ok(()),
        false => Err(Rejection {
            id: op.id,
            code: "origin_forbidden".into(),
            reason: format!(
                "op names origin `{}` but hlc.node `{}`; an op's stamp is its origin's",
                op.origin.chars().take(128).collect::<String>(),
                op.hlc.node.chars().take(128).collect::<String>()
            ),
        }),
    }
}

/// `family.action[.more]`: lowercase ASCII letters, digits and `_`, at most 64 bytes.
fn is_kind(kind: &str) -> bool {
    kind.len() <= 64
        && kind.contains('.')
        && kind.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// The id rule of events (and the daemon's other ids): 1-64 of `[A-Za-z0-9._-]`, not starting
/// with `.` and without `..`. Ids end up in file names, topics and URLs, so nothing path-like
/// (`.`, `..`, a hidden name) is an id.
pub fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !is_path_like(id)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `.`, `..`, anything with `..` in it, or a name starting with `.`.
pub fn is_path_like(id: &str) -> bool {
    id.starts_with('.') || id.contains("..")
}

#[cfg(test)]
mod tests {
    #[test]
    fn regression_path_like_strings_are_not_ids() {
        for bad in [".", "..", "../etc", "a..b", ".hidden", "a/b", ""] {
            assert!(!is_id(bad), "`{bad}` was accepted as an id");
        }
        for good in ["event-2026", "hall_a", "v1.2", "a.b.c", "-x"] {
            assert!(is_id(good), "`{good}` was refused");
        }
    }

    use super::*;

    fn op(kind: &str) -> Op {
        Op {
            id: Uuid::now_v7(),
            v: OP_SCHEMA_VERSION,
            hlc: Hlc {
                wall_ms: 1,
                counter: 0,
                node: "n1".into(),
            },
            origin: "n1".into(),
            scope: "ev".into(),
            kind: kind.into(),
            entity_id: "a1".into(),
            body: serde_json::json!({"name": "Ada"}),
            extra: serde_json::Map::new(),
        }
    }

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let json = r#"{"id":"01890a5d-ac96-774b-bcce-b302099a8057","v":2,
            "hlc":{"wall_ms":5,"counter":0,"node":"n1"},"origin":"n1","scope":"ev",
            "kind":"attendee.upsert","entity_id":"a1","body":{"name":"Ada"},
            "signature":"abc","future":{"x":1}}"#;
        let op: Op = serde_json::from_str(json).expect("valid op");
        assert_eq!(op.v, 2);
        let back: serde_json::Value = serde_json::to_value(&op).expect("serialises");
        assert_eq!(back["signature"], "abc");
        assert_eq!(back["future"]["x"], 1);
    }

    /// Found by the `sync_batch` fuzz target: a number too large for an integer is read as a
    /// float, and without exact float parsing the value read back from its own output was one
    /// unit in the last place off, so a relay could change an op it only carries.
    #[test]
    fn a_float_in_an_op_survives_a_round_trip_exactly() {
        // The fuzzer's number: a 1 and 104 fives.
        let big = format!("1{}", "5".repeat(104));
        for number in [
            big.as_str(),
            "0.1",
            "2.2250738585072014e-308",
            "1e308",
            "-7.0e-5",
        ] {
            let json = format!(
                r#"{{"id":"01890a5d-ac96-774b-bcce-b302099a8057","v":1,
                "hlc":{{"wall_ms":5,"counter":0,"node":"n1"}},"origin":"n1","scope":"ev",
                "kind":"attendee.upsert","entity_id":"a1","body":{{"n":{number}}},
                "future":{{"x":{number}}}}}"#
            );
            let op: Op = serde_json::from_str(&json).expect("valid op");
            let text = serde_json::to_string(&op).expect("serialises");
            let back: Op = serde_json::from_str(&text).expect("decodes again");
            assert_eq!(back, op, "{number} changed on a round trip");
        }
    }

    #[test]
    fn an_unknown_kind_with_a_good_envelope_passes_the_relay() {
        assert!(check_envelope(&op("vote.cast")).is_ok());
        assert!(check_envelope(&op("attendee.upsert")).is_ok());
    }

    #[test]
    fn envelopes_are_refused_with_a_named_reason() {
        for (kind, code) in [
            ("Attendee.Upsert", "invalid_kind"),
            ("noperiod", "invalid_kind"),
            ("a..b", "invalid_kind"),
            ("", "invalid_kind"),
        ] {
            assert_eq!(
                check_envelope(&op(kind)).map_err(|r| r.code),
                Err(code.into())
            );
        }
        let mut bad = op("attendee.upsert");
        bad.id = Uuid::new_v4();
        assert_eq!(
            check_envelope(&bad).map_err(|r| r.code),
            Err("invalid_id".into())
        );
        let mut bad = op("attendee.upsert");
        bad.scope = "ev/../other".into();
        assert_eq!(
            check_envelope(&bad).map_err(|r| r.code),
            Err("invalid_scope".into())
        );
        let mut bad = op("attendee.upsert");
        bad.body = serde_json::json!({"x": "y".repeat(MAX_OP_BODY_BYTES)});
        assert_eq!(
            check_envelope(&bad).map_err(|r| r.code),
            Err("body_too_large".into())
        );
    }

    #[test]
    fn a_push_without_a_report_parses() {
        let push: PushRequest = serde_json::from_str(r#"{"ops":[]}"#).expect("parses");
        assert!(push.report.is_none());
    }
}
