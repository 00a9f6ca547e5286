//! The alarms healthwatch raises: what they watch, their states, what they are about, and the
//! record published on every state change.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::feed::{AccountName, Feed};

/// The conditions healthwatch watches.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// No event arrived on a feed for its `dropoff_after` window.
    Dropoff,
    /// 1Password refuses the feed's token, or the token cannot be read.
    TokenRejected,
    /// The token's expiry is closer than `token_expiry_warning`.
    TokenExpiring,
    /// The fetcher's polls of a feed keep failing, or have not succeeded for a while.
    FetchFailing,
    /// A sink has a backlog and has delivered nothing for `sink_stalled_after`.
    SinkStalled,
    /// Records were dead-lettered within the last hour.
    DlqGrowing,
}

impl AlarmKind {
    /// The name on the wire and in `OP_HEALTH` keys.
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
    /// The condition is not met.
    Ok,
    /// The condition is met; notifiers are told once per episode.
    Alarm,
    /// Not enough has been seen yet to say (a feed never heard from, a sink with no consumer).
    InsufficientData,
}

/// One alarm state change, published to the subject of its [`AlarmScope`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Alarm", extend("$id" = "urn:oprelay:oprelay.alarm.v1"))]
pub struct Alarm {
    /// Stable for one episode: the same id on entering ALARM and on resolving.
    pub id: String,
    /// Which condition.
    pub kind: AlarmKind,
    /// The state it entered.
    pub state: AlarmState,
    /// The account, or `pipeline.sink-{name}` / `pipeline.dlq` for the pipeline's own alarms
    /// (`pipeline` is not a valid account name, so the two cannot collide).
    pub account: String,
    /// The feed; `null` for pipeline alarms.
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

/// What an alarm is about: one account's feed, one sink, or the dead-letter queue. It renders
/// the alarm's subject and key (`names::alarm_subject`, `names::alarm_key`) and the
/// `account`/`feed` fields of the published [`Alarm`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlarmScope {
    /// One feed of one account: `{account}.{feed}`.
    Feed {
        /// The configured account.
        account: AccountName,
        /// The feed.
        feed: Feed,
    },
    /// One sink of the forwarder: `pipeline.sink-{name}`.
    Sink(String),
    /// The dead-letter queue: `pipeline.dlq`.
    DeadLetters,
}

/// The `account` field of pipeline alarms starts with this; [`AccountName`] refuses it, so a
/// pipeline alarm's subject never falls among an account's.
pub const PIPELINE: &str = "pipeline";

impl AlarmScope {
    /// The subject tokens after `op.alarms.` and after the kind in `OP_HEALTH` keys.
    pub fn tokens(&self) -> String {
        match self {
            AlarmScope::Feed { account, feed } => format!("{account}.{feed}"),
            AlarmScope::Sink(name) => format!("{PIPELINE}.sink-{name}"),
            AlarmScope::DeadLetters => format!("{PIPELINE}.dlq"),
        }
    }

    /// The `account` field of an [`Alarm`] with this scope.
    pub fn account_field(&self) -> String {
        match self {
            AlarmScope::Feed { account, .. } => account.to_string(),
            other => other.tokens(),
        }
    }

    /// The `feed` field of an [`Alarm`] with this scope.
    pub fn feed(&self) -> Option<Feed> {
        match self {
            AlarmScope::Feed { feed, .. } => Some(*feed),
            _ => None,
        }
    }

    /// Reads the scope back from an alarm's `account` and `feed` fields; `None` when they
    /// name none (a record written by something else).
    pub fn of(account: &str, feed: Option<Feed>) -> Option<AlarmScope> {
        match (
            account
                .strip_prefix(PIPELINE)
                .and_then(|r| r.strip_prefix('.')),
            feed,
        ) {
            (Some("dlq"), None) => Some(AlarmScope::DeadLetters),
            (Some(rest), None) => rest
                .strip_prefix("sink-")
                .filter(|name| !name.is_empty())
                .map(|name| AlarmScope::Sink(name.to_owned())),
            (None, Some(feed)) => Some(AlarmScope::Feed {
                account: AccountName::new(account).ok()?,
                feed,
            }),
            _ => None,
        }
    }

    /// How people read it: `acme / item_usages`, `sink splunk`, `the dead-letter queue`.
    pub fn describe(&self) -> String {
        match self {
            AlarmScope::Feed { account, feed } => format!("{account} / {feed}"),
            AlarmScope::Sink(name) => format!("sink {name}"),
            AlarmScope::DeadLetters => "the dead-letter queue".to_owned(),
        }
    }
}

impl fmt::Display for AlarmScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tokens())
    }
}

impl Alarm {
    /// What the alarm is about, read from its `account` and `feed` fields.
    pub fn scope(&self) -> Option<AlarmScope> {
        AlarmScope::of(&self.account, self.feed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_reads_back_from_the_fields_it_writes() {
        let scopes = [
            AlarmScope::Feed {
                account: AccountName::new("acme").unwrap(),
                feed: Feed::ItemUsages,
            },
            AlarmScope::Sink("splunk-main".into()),
            AlarmScope::DeadLetters,
        ];
        for scope in scopes {
            assert_eq!(
                AlarmScope::of(&scope.account_field(), scope.feed()),
                Some(scope.clone()),
                "{scope}"
            );
        }
    }

    #[test]
    fn pipeline_scopes_cannot_be_an_account() {
        assert!(AccountName::new(PIPELINE).is_err());
        assert_eq!(AlarmScope::of("pipeline.sink-", None), None);
        assert_eq!(AlarmScope::of("pipeline.dlq", Some(Feed::ItemUsages)), None);
        assert_eq!(
            AlarmScope::Sink("x".into()).tokens(),
            "pipeline.sink-x",
            "the subject stays what subscribers already match"
        );
    }
}
