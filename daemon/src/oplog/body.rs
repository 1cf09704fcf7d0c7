//! Why an op's body (or envelope) does not fit its kind: the one error every kind's parser
//! returns, so a refused op names the field, what it must be and what was found.

use serde_json::Value;

use super::FieldError;

/// What is wrong with an op that [`apply`](super::apply) refuses as invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is not a JSON object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// A field is missing, of the wrong type, or out of range.
    #[error("`{field}` must be {expected}, found {found}")]
    Expected {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: String,
        /// What was found (`nothing` when absent).
        found: String,
    },
    /// A list field is longer than allowed.
    #[error("`{field}` lists more than {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// The most it may list.
        max: usize,
    },
    /// A last-writer-wins field does not fit its type.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The entity id is empty or too long.
    #[error("the entity id must be 1-128 bytes")]
    EntityId,
    /// The HLC wall time would not fit SQLite's signed integer (it would sort first).
    #[error("hlc.wall_ms {0} does not fit a signed 64-bit integer")]
    WallMs(u64),
    /// The scope is not an event id.
    #[error("scope `{0}` is not a valid event id")]
    Scope(String),
    /// A logged op's column does not parse: the file was edited by hand.
    #[error("logged op {seq} has a corrupt {column}")]
    Corrupt {
        /// The op's local seq.
        seq: i64,
        /// The column.
        column: &'static str,
    },
}

impl BodyError {
    /// `field` must be `expected`; `found` is what the body holds there.
    pub(super) fn expected(
        field: &'static str,
        expected: impl Into<String>,
        found: Option<&Value>,
    ) -> Self {
        Self::Expected {
            field,
            expected: expected.into(),
            found: found.map_or_else(|| "nothing".into(), Value::to_string),
        }
    }
}
