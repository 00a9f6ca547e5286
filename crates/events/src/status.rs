//! What the services record about each feed in KV: its cursor, who polls it, and how its last
//! poll went.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `OP_CURSORS` value: where a feed's next request starts. Written with compare-and-set only
/// after the page that produced it was acknowledged by JetStream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CursorState {
    /// The API's opaque cursor; empty until the first page of a reset was published.
    pub cursor: String,
    /// While `cursor` is empty: the `start_time` of the reset request, fixed when the feed was
    /// first seen so a restart repeats the very same request (and JetStream drops the repeat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the cursor was last written.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Pages published since the cursor was first written.
    pub pages: u64,
    /// Events published since the cursor was first written.
    pub events: u64,
}

/// `OP_LEASES` value: which replica polls a feed, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The replica holding it.
    pub owner: String,
    /// When it lapses unless renewed; anyone may take it after that.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// `OP_STATUS` value under `fetch.{account}.{feed}`: the fetcher's last poll.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Feed status", extend("$id" = "urn:oprelay:oprelay.feed-status.v1"))]
pub struct FeedStatus {
    /// When the fetcher last asked the Events API for this feed.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub last_poll_at: Option<OffsetDateTime>,
    /// When a request for this feed last succeeded, empty pages included.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub last_success_at: Option<OffsetDateTime>,
    /// When the fetcher last received a non-empty page (arrival, not event time).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub last_event_at: Option<OffsetDateTime>,
    /// The last failure, in words; `null` once a request succeeds.
    #[serde(default)]
    pub last_error: Option<String>,
    /// What kind of error `last_error` is, for rules that act on it (healthwatch's token alarm)
    /// without reading its text: `token_rejected`, `token_unreadable`, `token_invalid`,
    /// `feed_not_permitted`, `rate_limited`, `server_error`, `transport`, … (an open set: a
    /// newer fetcher may add kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub error_kind: Option<FetchErrorKind>,
    /// Failed requests in a row (0 after a success).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The token's `exp` claim, when it has one.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub token_expires_at: Option<OffsetDateTime>,
}

/// Why the fetcher's last poll of a feed failed, as [`FeedStatus::error_kind`] records it.
/// On the wire it is a snake_case string; kinds this build does not know read as `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FetchErrorKind {
    /// 1Password answered 401/403 for the token.
    TokenRejected,
    /// The token file or variable could not be read.
    TokenUnreadable,
    /// The token was read but is not a usable Events API token.
    TokenInvalid,
    /// The token is valid but not allowed to read this feed.
    FeedNotPermitted,
    /// The account's configuration cannot be used.
    Config,
    /// The fetcher was stopping while the account was being set up.
    Shutdown,
    /// 429 from the Events API.
    RateLimited,
    /// 400 from the Events API: the request itself was refused.
    BadRequest,
    /// 404 from the Events API.
    NotFound,
    /// 5xx from the Events API.
    ServerError,
    /// Any other status the API should not send.
    UnexpectedStatus,
    /// No answer: DNS, TCP, TLS or a timeout.
    Transport,
    /// A 200 whose body is not a page.
    Malformed,
    /// The page could not be published to `OP_RAW`.
    Publish,
    /// The cursor could not be read from `OP_CURSORS`.
    CursorRead,
    /// The cursor could not be written to `OP_CURSORS`.
    CursorWrite,
    /// A kind this build does not know (written by a newer fetcher).
    Other,
}

impl FetchErrorKind {
    const ALL: [FetchErrorKind; 16] = [
        FetchErrorKind::TokenRejected,
        FetchErrorKind::TokenUnreadable,
        FetchErrorKind::TokenInvalid,
        FetchErrorKind::FeedNotPermitted,
        FetchErrorKind::Config,
        FetchErrorKind::Shutdown,
        FetchErrorKind::RateLimited,
        FetchErrorKind::BadRequest,
        FetchErrorKind::NotFound,
        FetchErrorKind::ServerError,
        FetchErrorKind::UnexpectedStatus,
        FetchErrorKind::Transport,
        FetchErrorKind::Malformed,
        FetchErrorKind::Publish,
        FetchErrorKind::CursorRead,
        FetchErrorKind::CursorWrite,
    ];

    /// The name on the wire, in logs and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchErrorKind::TokenRejected => "token_rejected",
            FetchErrorKind::TokenUnreadable => "token_unreadable",
            FetchErrorKind::TokenInvalid => "token_invalid",
            FetchErrorKind::FeedNotPermitted => "feed_not_permitted",
            FetchErrorKind::Config => "config",
            FetchErrorKind::Shutdown => "shutdown",
            FetchErrorKind::RateLimited => "rate_limited",
            FetchErrorKind::BadRequest => "bad_request",
            FetchErrorKind::NotFound => "not_found",
            FetchErrorKind::ServerError => "server_error",
            FetchErrorKind::UnexpectedStatus => "unexpected_status",
            FetchErrorKind::Transport => "transport",
            FetchErrorKind::Malformed => "malformed",
            FetchErrorKind::Publish => "publish",
            FetchErrorKind::CursorRead => "cursor_read",
            FetchErrorKind::CursorWrite => "cursor_write",
            FetchErrorKind::Other => "other",
        }
    }

    /// Whether fixing it takes a new or re-permissioned token: what the token alarm watches.
    pub fn is_token_problem(self) -> bool {
        matches!(
            self,
            FetchErrorKind::TokenRejected
                | FetchErrorKind::TokenUnreadable
                | FetchErrorKind::TokenInvalid
                | FetchErrorKind::FeedNotPermitted
        )
    }
}

impl fmt::Display for FetchErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FetchErrorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FetchErrorKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(FetchErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or(FetchErrorKind::Other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_round_trip_and_unknown_ones_stay_readable() {
        for kind in FetchErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<FetchErrorKind>(&json).unwrap(), kind);
        }
        let newer: FeedStatus =
            serde_json::from_str(r#"{"error_kind":"quantum_flux","consecutive_failures":2}"#)
                .unwrap();
        assert_eq!(newer.error_kind, Some(FetchErrorKind::Other));
        assert_eq!(newer.consecutive_failures, 2);
    }
}
