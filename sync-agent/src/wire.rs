//! The op: the unit of change that the ops log stores and the sync protocol carries.
//!
//! The op's `body` is opaque JSON here; the daemon owns what each `kind` means. Fields this version
//! does not know (added by a newer appliance or relay) are kept in `extra` and written back out,
//! so an op survives a round trip through an older node unchanged.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hlc::Hlc;

/// The op schema version this build writes. Readers accept any version and keep unknown fields.
pub const OP_SCHEMA_VERSION: u32 = 1;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
