//! The data every oprelay crate shares: the 1Password event types, the page envelope, the
//! normalized record, lookup rows, feed status and alarms, and the bus names.
//!
//! Pure data: serde and time, no I/O, so every service, the CLI and the simulator agree on one
//! definition of each shape.

#![warn(missing_docs)]

mod alarm;
mod feed;
mod field;
/// Every subject, stream, bucket, key and header name.
pub mod names;
mod onepassword;
mod open_enum;
mod record;
/// The JSON Schemas generated from these types, for `docs/schemas/`.
pub mod schemas;
mod secret;
mod status;
mod timestamp;
mod uuid_text;

pub use alarm::{Alarm, AlarmKind, AlarmScope, AlarmState, PIPELINE};
pub use feed::{AccountName, Feed, InvalidAccountName, LogType, UnknownFeed};
pub use field::Field;
pub use onepassword::{
    ApiError, AuditEvent, Client, CursorRequest, Details, Extra, Introspection, IntrospectionV1,
    ItemUsage, LegacyErrorBody, Location, Page, Session, SignInAttempt, User,
};
pub use open_enum::{
    AuditAction, AuditObjectType, ItemUsageAction, SignInCategory, SignInType, UserType,
};
pub use record::{
    Enrichment, EnrichmentRow, LookupKind, LookupRow, LookupSource, PantherFields, Record,
    ENRICHMENT_TABLE,
};
pub use secret::Secret;
pub use status::{CursorState, FeedStatus, FetchErrorKind, Lease};
pub use timestamp::{format_panther, format_rfc3339_nanos, Timestamp, TimestampError};
pub use uuid_text::uuid_text;
