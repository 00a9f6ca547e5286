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
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub name: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub email: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_type: Field<UserType>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user_account_uuid: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The app that produced a sign-in or item usage. `app_version` is a string in the API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Client {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub app_name: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub app_version: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub platform_name: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub platform_version: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub os_name: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub os_version: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub ip_address: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Geolocation of the client IP. `country` is a code in some samples and a name in others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub country: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub region: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub city: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub latitude: Field<f64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub longitude: Field<f64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The session an audit event happened in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub login_time: Field<Timestamp>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub device_uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub ip: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `SignInAttempt.details`, e.g. the continent a firewall rule blocked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub value: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /api/v{1,2}/signinattempts` items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SignInAttempt {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub session_uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub timestamp: Field<Timestamp>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub category: Field<SignInCategory>,
    #[serde(default, skip_serializing_if = "Field::is_absent", rename = "type")]
    pub kind: Field<SignInType>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub country: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub details: Field<Details>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub target_user: Field<User>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub client: Field<Client>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub location: Field<Location>,
    /// v2, MSP accounts only: the account where the sign-in happened.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub account_uuid: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /api/v{1,2}/itemusages` items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemUsage {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub timestamp: Field<Timestamp>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub used_version: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub vault_uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub item_uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub action: Field<ItemUsageAction>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub user: Field<User>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub client: Field<Client>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub location: Field<Location>,
    /// v2, MSP accounts only.
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub account_uuid: Field<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /api/v{1,2}/auditevents` items.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub timestamp: Field<Timestamp>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub actor_uuid: Field<String>,
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
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub action: Field<AuditAction>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub object_type: Field<AuditObjectType>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub object_uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub object_details: Field<User>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aux_id: Field<i64>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aux_uuid: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aux_details: Field<User>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub aux_info: Field<String>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub session: Field<Session>,
    #[serde(default, skip_serializing_if = "Field::is_absent")]
    pub location: Field<Location>,
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
    Cursor {
        cursor: String,
    },
    Reset {
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        start_time: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        end_time: Option<String>,
    },
}

/// `GET /api/v2/auth/introspect`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Introspection {
    pub uuid: String,
    pub issued_at: String,
    pub features: Vec<String>,
    /// Added in spec 1.4.1; older servers leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_uuid: Option<String>,
}

/// `GET /api/auth/introspect`, the deprecated v1 shape with capitalised keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntrospectionV1 {
    #[serde(rename = "UUID")]
    pub uuid: String,
    #[serde(rename = "IssuedAt")]
    pub issued_at: String,
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
        #[serde(rename = "Error")]
        error: LegacyErrorBody,
    },
    /// Spec 1.4.1: `{"status":401,"message":"…"}`.
    Current { status: u16, message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegacyErrorBody {
    #[serde(rename = "Message")]
    pub message: String,
}

impl ApiError {
    pub fn message(&self) -> &str {
        match self {
            ApiError::Legacy { error } => &error.message,
            ApiError::Current { message, .. } => message,
        }
    }
}
