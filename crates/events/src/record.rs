//! The normalized record (format `panther`) and the lookup rows that enrich it.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::feed::LogType;

/// The lookup table name rules read: `p_enrichment["1Password Translation"][selector]`.
pub const ENRICHMENT_TABLE: &str = "1Password Translation";

/// Panther's standard fields, added beside the original event's fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PantherFields {
    /// `OnePassword.SignInAttempt`, `OnePassword.ItemUsage` or `OnePassword.AuditEvent`.
    pub p_log_type: LogType,
    /// UTC, `YYYY-MM-DD HH:MM:SS.fffffffff`.
    pub p_event_time: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS.fffffffff`.
    pub p_parse_time: String,
    /// Lower-case hex, deterministic from log type and event uuid, so a replay keeps its id.
    pub p_row_id: String,
    /// A stable UUID per configured account.
    pub p_source_id: String,
    /// The account's label (its name unless configured).
    pub p_source_label: String,
    /// Every valid IP address in the event, de-duplicated and sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub p_any_ip_addresses: Vec<String>,
    /// Every valid email address in the event, de-duplicated and sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub p_any_emails: Vec<String>,
    /// The lookup rows that matched the event's UUIDs, when any did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_enrichment: Option<Enrichment>,
}

/// table name → selector path → matched row.
pub type Enrichment = BTreeMap<String, BTreeMap<String, EnrichmentRow>>;

/// A normalized record: the original event, every key kept, plus [`PantherFields`].
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// 1Password's event, every key as sent.
    pub event: Map<String, Value>,
    /// The fields oprelay adds.
    pub panther: PantherFields,
}

impl Record {
    /// Splits a normalized JSON object back into the event and its `p_*` fields. 1Password
    /// never sends keys starting with `p_`, so the prefix is an unambiguous boundary.
    pub fn from_object(mut object: Map<String, Value>) -> Result<Self, serde_json::Error> {
        let p_keys: Vec<String> = object
            .keys()
            .filter(|k| k.starts_with("p_"))
            .cloned()
            .collect();
        let mut panther = Map::new();
        for key in p_keys {
            if let Some(v) = object.remove(&key) {
                panther.insert(key, v);
            }
        }
        Ok(Record {
            event: object,
            panther: serde_json::from_value(Value::Object(panther))?,
        })
    }
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            #[serde(flatten)]
            event: &'a Map<String, Value>,
            #[serde(flatten)]
            panther: &'a PantherFields,
        }
        Flat {
            event: &self.event,
            panther: &self.panther,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = Map::deserialize(deserializer)?;
        Record::from_object(object).map_err(serde::de::Error::custom)
    }
}

/// What a lookup row names.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LookupKind {
    /// An item: its title.
    Item,
    /// A vault: its name.
    Vault,
    /// A user: name and email.
    User,
    /// A group: its name.
    Group,
}

impl LookupKind {
    /// Every kind.
    pub const ALL: [LookupKind; 4] = [
        LookupKind::Item,
        LookupKind::Vault,
        LookupKind::User,
        LookupKind::Group,
    ];

    /// The name in keys, files and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupKind::Item => "item",
            LookupKind::Vault => "vault",
            LookupKind::User => "user",
            LookupKind::Group => "group",
        }
    }
}

impl fmt::Display for LookupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a lookup row came from. An imported row always wins over an observed one.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LookupSource {
    /// Imported by an operator (`oprelay lookups import`).
    Imported,
    /// Learned from names and emails the event stream itself carries.
    Observed,
}

/// A row of `OP_LOOKUPS`, key `{kind}.{uuid}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Lookup row", extend("$id" = "urn:oprelay:oprelay.lookup-row.v1"))]
pub struct LookupRow {
    /// The 1Password UUID the row names.
    pub uuid: String,
    /// What the UUID names.
    pub kind: LookupKind,
    /// The display name whatever the kind: an item's title, a vault's, group's or user's name.
    pub title: String,
    /// A user's email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// When the named object last changed, if the source said; RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Imported by an operator, or learned from the stream.
    pub source: LookupSource,
}

impl LookupRow {
    /// Its key in `OP_LOOKUPS`: `{kind}.{uuid}`.
    pub fn key(&self) -> String {
        format!("{}.{}", self.kind, self.uuid)
    }
}

/// A lookup row as it appears in `p_enrichment`, with the value it matched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrichmentRow {
    /// The UUID the row names.
    pub uuid: String,
    /// What it names.
    pub kind: LookupKind,
    /// Its display name.
    pub title: String,
    /// When the named object last changed, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// A user's email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Imported or learned.
    pub source: LookupSource,
    /// The event's value that matched (Panther's convention).
    pub p_match: String,
}

impl EnrichmentRow {
    /// The row as it appears in an event whose `p_match` matched it.
    pub fn matched(row: &LookupRow, p_match: &str) -> Self {
        EnrichmentRow {
            uuid: row.uuid.clone(),
            kind: row.kind,
            title: row.title.clone(),
            updated_at: row.updated_at.clone(),
            email: row.email.clone(),
            source: row.source,
            p_match: p_match.to_owned(),
        }
    }
}
