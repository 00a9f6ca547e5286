//! What the services record about each feed in KV, and the alarms healthwatch raises.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::feed::Feed;

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
    pub owner: String,
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
    /// `feed_not_permitted`, `rate_limited`, `server_error`, `transport`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Failed requests in a row (0 after a success).
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The token's `exp` claim, when it has one.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub token_expires_at: Option<OffsetDateTime>,
}

/// The conditions healthwatch watches.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// No event arrived for `dropoff_after`.
    Dropoff,
    TokenRejected,
    TokenExpiring,
    FetchFailing,
    SinkStalled,
    DlqGrowing,
}

impl AlarmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmKind::Dropoff => "dropoff",
            AlarmKind::TokenRejected => "token_rejected",
            AlarmKind::TokenExpiring => "token_expiring",
            AlarmKind::FetchFailing => "fetch_failing",
            AlarmKind::SinkStalled => "sink_stalled",
            AlarmKind::DlqGrowing => "dlq_growing",
        }
    }
}

impl fmt::Display for AlarmKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CloudWatch's three states, which Panther's drop-off alarm also reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

/// One alarm state change, published to `op.alarms.{account}.{feed}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Alarm", extend("$id" = "urn:oprelay:oprelay.alarm.v1"))]
pub struct Alarm {
    /// Stable for one episode: the same id on entering ALARM and on resolving.
    pub id: String,
    pub kind: AlarmKind,
    pub state: AlarmState,
    /// The account, or `pipeline.sink-{name}` / `pipeline.dlq` for the pipeline's own alarms.
    pub account: String,
    /// The feed; `null` for account-wide and pipeline alarms.
    pub feed: Option<Feed>,
    /// When the alarm entered this state.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub since: OffsetDateTime,
    /// The newest event seen on the feed, when there was one.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub last_event_at: Option<OffsetDateTime>,
    /// What happened, in words.
    pub message: String,
    /// What to check first.
    pub runbook: String,
}
