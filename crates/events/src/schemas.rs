//! The JSON Schemas (draft 2020-12) generated from the types that are the wire format:
//! alarms, feed status rows, lookup rows and the raw page envelope. The record schemas
//! (`onepassword.*`) and the dead letter's headers are written by hand in `docs/schemas/`,
//! because records are 1Password's events as they came plus the `p_*` fields, not a Rust type.
//! A test compares these with the files in `docs/schemas/`; `just schemas` rewrites them.

use schemars::{schema_for, Schema};
use serde_json::{Map, Value};

use crate::names::schema;
use crate::{Alarm, FeedStatus, LookupRow, Page};

fn with_id(mut s: Schema, name: &str, title: &str, description: &str) -> Value {
    s.insert("$id".into(), format!("urn:oprelay:{name}").into());
    s.insert("title".into(), title.into());
    s.insert("description".into(), description.into());
    s.to_value()
}

/// `(schema name, schema)` for every generated schema.
pub fn generated() -> Vec<(&'static str, Value)> {
    vec![
        (
            schema::ALARM,
            with_id(
                schema_for!(Alarm),
                schema::ALARM,
                "Alarm",
                "One alarm state change, published to op.alarms.{account}.{feed} \
                 (op.alarms.pipeline.{sink-NAME|dlq} for the pipeline's own).",
            ),
        ),
        (
            schema::FEED_STATUS,
            with_id(
                schema_for!(FeedStatus),
                schema::FEED_STATUS,
                "Feed status",
                "The fetcher's last poll of a feed: OP_STATUS key fetch.{account}.{feed}.",
            ),
        ),
        (
            schema::LOOKUP_ROW,
            with_id(
                schema_for!(LookupRow),
                schema::LOOKUP_ROW,
                "Lookup row",
                "A UUID and the name it stands for: OP_LOOKUPS key {kind}.{uuid}.",
            ),
        ),
        (
            schema::RAW_PAGE,
            with_id(
                schema_for!(Page<Map<String, Value>>),
                schema::RAW_PAGE,
                "Raw page",
                "A page of the 1Password Events API exactly as received (op.raw.{account}.{feed}); \
                 a page too big for one message is cut into pages of the same envelope holding \
                 consecutive items.",
            ),
        ),
    ]
}
