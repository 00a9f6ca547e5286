//! The 1Password Events API objects, v1 and v2.
//!
//! Every struct keeps the keys it does not know in `extra`, at every level, so a field
//! 1Password adds tomorrow survives parse → serialize and still reaches the SIEM. Every field but
//! the envelope's is a [`Field`]: the API leaves many out, sends some as `null`, and sanitized
//! fixtures omit even `uuid`s.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::field::Field;
use crate::open_enum::{
    AuditAction, AuditObjectType, ItemUsageAction, SignInCategory, SignInType, UserType,
};
use crate::timestamp::Timestamp;

/// Unknown keys, kept in order of appearance is not promised; their values are kept exactly.
pub type Extra = Map<String, Value>;

/// `target_user`, `user`, `actor_details`, `object_details`, `aux_details`. The v2 endpoints add
/// `user_type` and `user_account_uuid` for MSP accounts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user's UUID.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    /// The name shown in 1Password.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub name: Field<String>,
    /// The email address the user signs in with.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub email: Field<String>,
    /// v2: `user` or `external_user` (a user of another account, MSP).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_type: Field<UserType>,
    /// v2: the account the user belongs to.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_account_uuid: Field<String>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The app that produced a sign-in or item usage. `app_version` is a string in the API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Client {
    /// The 1Password app, e.g. `1Password for Mac`, `1Password Browser Extension`.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub app_name: Field<String>,
    /// Its version, as a string.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub app_version: Field<String>,
    /// The browser or runtime the app ran in, when it says.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub platform_name: Field<String>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub platform_version: Field<String>,
    /// The operating system.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub os_name: Field<String>,
    /// Its version.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub os_version: Field<String>,
    /// The address the request came from.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub ip_address: Field<String>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Geolocation of the client IP. `country` is a code in some samples and a name in others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Country of the client address.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub country: Field<String>,
    /// Region or state.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub region: Field<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub city: Field<String>,
    /// Approximate latitude.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub latitude: Field<f64>,
    /// Approximate longitude.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub longitude: Field<f64>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The session an audit event happened in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The session's UUID.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    /// When the session began.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub login_time: Field<Timestamp>,
    /// The device the session runs on.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub device_uuid: Field<String>,
    /// The address the session came from.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub ip: Field<String>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `SignInAttempt.details`, e.g. the continent a firewall rule blocked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// The detail, e.g. the blocked country or continent.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub value: Field<String>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /api/v{1,2}/signinattempts` items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignInAttempt {
    /// The attempt's UUID: oprelay's `p_row_id` derives from it.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    /// The session the attempt opened or tried to open.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub session_uuid: Field<String>,
    /// When it happened (`p_event_time`).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub timestamp: Field<Timestamp>,
    /// How it ended: `success`, `credentials_failed`, `mfa_failed`, `firewall_failed`, …
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub category: Field<SignInCategory>,
    /// `type` on the wire: the detail of `category`, e.g. `password_secret_bad`.
    #[serde(default, skip_serializing_if = "Field::is_absent", rename = "type")]
    pub kind: Field<SignInType>,
    /// v1: the country of the client address.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub country: Field<String>,
    /// More about a firewall or policy outcome.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub details: Field<Details>,
    /// Who tried to sign in.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub target_user: Field<User>,
    /// The app that tried.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub client: Field<Client>,
    /// Where the attempt came from.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub location: Field<Location>,
    /// v2, MSP accounts only: the account where the sign-in happened.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub account_uuid: Field<String>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /api/v{1,2}/itemusages` items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemUsage {
    /// The usage's UUID: oprelay's `p_row_id` derives from it.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    /// When it happened (`p_event_time`).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub timestamp: Field<Timestamp>,
    /// The item version that was used.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub used_version: Field<i64>,
    /// The vault holding the item (enriched with the vault's name).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub vault_uuid: Field<String>,
    /// The item (enriched with its title).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub item_uuid: Field<String>,
    /// What was done: `fill`, `reveal`, `secure-copy`, `share`, …
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub action: Field<ItemUsageAction>,
    /// Who used it.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user: Field<User>,
    /// The app it was used in.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub client: Field<Client>,
    /// Where from.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub location: Field<Location>,
    /// v2, MSP accounts only.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub account_uuid: Field<String>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /api/v{1,2}/auditevents` items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The event's UUID: oprelay's `p_row_id` derives from it.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    /// When it happened (`p_event_time`).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub timestamp: Field<Timestamp>,
    /// Who acted.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub actor_uuid: Field<String>,
    /// The actor's name and email.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub actor_details: Field<User>,
    /// v2: `user` or `external_user` (MSP).
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub actor_type: Field<UserType>,
    /// v2: the account the actor belongs to.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub actor_account_uuid: Field<String>,
    /// v2: the account where the action was performed.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub account_uuid: Field<String>,
    /// What was done: `join`, `create`, `update`, `delete`, `grant`, …
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub action: Field<AuditAction>,
    /// What it was done to: `user`, `vault`, `group`, `item`, …
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub object_type: Field<AuditObjectType>,
    /// The object it was done to.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub object_uuid: Field<String>,
    /// The object's name and email, when it is a person.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub object_details: Field<User>,
    /// An auxiliary number whose meaning depends on the action.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aux_id: Field<i64>,
    /// An auxiliary object, e.g. the vault of a grant.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aux_uuid: Field<String>,
    /// The auxiliary object's name and email, when it is a person.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aux_details: Field<User>,
    /// Auxiliary text whose meaning depends on the action.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aux_info: Field<String>,
    /// The session the action was taken in.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub session: Field<Session>,
    /// Where from.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub location: Field<Location>,
    /// Keys this version does not know, kept as sent.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The response envelope of the three POST endpoints.
///
/// Generic over the item type so the fetcher can read `cursor` and `has_more` with
/// `Page<&RawValue>` without building the events, and publish the body it received untouched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct Page<T> {
    /// Where the next request continues.
    pub cursor: String,
    /// Whether more events are waiting after this page.
    pub has_more: bool,
    /// The events, each exactly as the API sent it.
    #[serde(default)]
    pub items: Vec<T>,
}

/// A request body: either continue from a cursor or start (over) from a time. The API's
/// `oneOf` makes the two exclusive; the enum makes mixing them unrepresentable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CursorRequest {
    /// Continue where the last page ended.
    Cursor {
        /// The `cursor` of the last page.
        cursor: String,
    },
    /// Start (over) from a time, with a page size.
    Reset {
        /// Events per page, 1 to 1000.
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        /// RFC 3339; the API's default is an hour ago.
        #[serde(skip_serializing_if = "Option::is_none")]
        start_time: Option<String>,
        /// RFC 3339; open-ended when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        end_time: Option<String>,
    },
}

/// `GET /api/v2/auth/introspect`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Introspection {
    /// The token's UUID.
    pub uuid: String,
    /// When the token was issued.
    pub issued_at: String,
    /// The feeds the token may read: `signinattempts`, `itemusages`, `auditevents`.
    pub features: Vec<String>,
    /// Added in spec 1.4.1; older servers leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_uuid: Option<String>,
}

/// `GET /api/auth/introspect`, the deprecated v1 shape with capitalised keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntrospectionV1 {
    /// The token's UUID.
    #[serde(rename = "UUID")]
    pub uuid: String,
    /// When the token was issued.
    #[serde(rename = "IssuedAt")]
    pub issued_at: String,
    /// The feeds the token may read.
    #[serde(rename = "Features")]
    pub features: Vec<String>,
}

impl From<IntrospectionV1> for Introspection {
    fn from(v1: IntrospectionV1) -> Self {
        Introspection {
            uuid: v1.uuid,
            issued_at: v1.issued_at,
            features: v1.features,
            account_uuid: None,
        }
    }
}

/// Both error body shapes the API is documented to send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApiError {
    /// Spec 1.2 and what servers were seen sending: `{"Error":{"Message":"Bad Request"}}`.
    Legacy {
        /// `Error` on the wire.
        #[serde(rename = "Error")]
        error: LegacyErrorBody,
    },
    /// Spec 1.4.1: `{"status":401,"message":"…"}`.
    Current {
        /// The HTTP status, repeated.
        status: u16,
        /// The reason, in words.
        message: String,
    },
}

/// The inside of the legacy error body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegacyErrorBody {
    /// The reason, in words.
    #[serde(rename = "Message")]
    pub message: String,
}

impl ApiError {
    /// The reason, whichever shape carried it.
    pub fn message(&self) -> &str {
        match self {
            ApiError::Legacy { error } => &error.message,
            ApiError::Current { message, .. } => message,
        }
    }
}
