//! Every stream, bucket, subject, key, consumer and header name of `docs/architecture.md`, in
//! one place, so a producer and its consumers cannot drift apart.

use crate::alarm::{AlarmKind, AlarmScope};
use crate::feed::{AccountName, Feed};

/// Raw API pages, as fetched: `op.raw.{account}.{feed}`.
pub const STREAM_RAW: &str = "OP_RAW";
/// Normalized records, and replays to one sink: `op.events.…`, `op.replay.…`.
pub const STREAM_EVENTS: &str = "OP_EVENTS";
/// What a stage could not process: `op.dlq.{stage}.…`.
pub const STREAM_DLQ: &str = "OP_DLQ";
/// Every alarm state change: `op.alarms.…`.
pub const STREAM_ALARMS: &str = "OP_ALARMS";

/// Each feed's API cursor, key `{account}.{feed}`.
pub const BUCKET_CURSORS: &str = "OP_CURSORS";
/// Feed leases, replica heartbeats, request budgets and healthwatch's lease.
pub const BUCKET_LEASES: &str = "OP_LEASES";
/// The fetcher's last poll per feed, key `fetch.{account}.{feed}`.
pub const BUCKET_STATUS: &str = "OP_STATUS";
/// UUID → name rows, key `{kind}.{uuid}`.
pub const BUCKET_LOOKUPS: &str = "OP_LOOKUPS";
/// healthwatch's alarm states, so a restart neither re-notifies nor forgets an open alarm.
pub const BUCKET_HEALTH: &str = "OP_HEALTH";

/// Subject filters each stream captures.
pub const SUBJECTS_RAW: &str = "op.raw.>";
/// What `OP_EVENTS` captures besides replays.
pub const SUBJECTS_EVENTS: &str = "op.events.>";
/// Records replayed from the DLQ to the one sink that refused them; kept in `OP_EVENTS` beside
/// the records themselves, outside `op.events.>` so subscribers and other sinks never see them.
pub const SUBJECTS_REPLAY: &str = "op.replay.>";
/// What `OP_DLQ` captures.
pub const SUBJECTS_DLQ: &str = "op.dlq.>";
/// What `OP_ALARMS` captures.
pub const SUBJECTS_ALARMS: &str = "op.alarms.>";

/// healthwatch's lease in `OP_LEASES`: which replica evaluates and notifies.
pub const LEASE_HEALTHWATCH: &str = "_healthwatch";

/// The normalizer's durable pull consumer on `OP_RAW`, shared by all its replicas.
pub const CONSUMER_NORMALIZER: &str = "normalizer";

/// The forwarder's durable consumer on `OP_EVENTS` for one sink.
pub fn sink_consumer(sink: &str) -> String {
    format!("sink-{sink}")
}

/// The sink a consumer name of [`sink_consumer`] belongs to; `None` for other consumers.
pub fn parse_sink_consumer(consumer: &str) -> Option<&str> {
    consumer.strip_prefix("sink-").filter(|s| !s.is_empty())
}

/// One API page (or part of one) of one account's feed, as fetched.
pub fn raw_subject(account: &AccountName, feed: Feed) -> String {
    format!("op.raw.{account}.{feed}")
}

/// The normalized records of one account's feed.
pub fn events_subject(account: &AccountName, feed: Feed) -> String {
    format!("op.events.{account}.{feed}")
}

/// A filter on `op.events.…`: one account or all (`None`), one feed or all.
pub fn events_filter(account: Option<&AccountName>, feed: Option<Feed>) -> String {
    let account = account.map_or("*", AccountName::as_str);
    let feed = feed.map_or("*", Feed::as_str);
    format!("op.events.{account}.{feed}")
}

/// A record replayed from the DLQ to sink `sink` only.
pub fn replay_subject(sink: &str, account: &AccountName, feed: Feed) -> String {
    format!("op.replay.{sink}.{account}.{feed}")
}

/// Every replay meant for `sink`: added to its consumer's filter.
pub fn replay_filter(sink: &str) -> String {
    format!("op.replay.{sink}.>")
}

/// Splits `op.replay.{sink}.{account}.{feed}` into its parts; `None` for anything else.
pub fn parse_replay_subject(subject: &str) -> Option<(&str, &str, Feed)> {
    let rest = subject.strip_prefix("op.replay.")?;
    let (sink, rest) = rest.split_once('.')?;
    let (account, feed) = rest.split_once('.')?;
    Some((sink, account, feed.parse().ok()?))
}

/// Where a stage sends what it could not process: `fetch`, `normalize` or `forward` (which
/// names the sink in the `Oprelay-Sink` header).
pub fn dlq_subject(stage: &str, account: &AccountName, feed: Feed) -> String {
    format!("op.dlq.{stage}.{account}.{feed}")
}

/// Every dead letter of one stage: what that stage may publish.
pub fn dlq_stage_filter(stage: &str) -> String {
    format!("op.dlq.{stage}.>")
}

/// A dead letter from a stage that cannot tell which account and feed it came from (a
/// record without them): `op.dlq.{stage}.{origin}`, still under the stage's permissions.
pub fn dlq_subject_unattributed(stage: &str, origin: &str) -> String {
    format!("op.dlq.{stage}.{origin}")
}

/// Every state change of one alarm: `op.alarms.{account}.{feed}`, `op.alarms.pipeline.sink-{name}`
/// or `op.alarms.pipeline.dlq`.
pub fn alarm_subject(scope: &AlarmScope) -> String {
    format!("op.alarms.{}", scope.tokens())
}

/// Key in `OP_HEALTH` of one alarm's record: `{kind}.{scope}`.
pub fn alarm_key(kind: AlarmKind, scope: &AlarmScope) -> String {
    format!("{kind}.{}", scope.tokens())
}

/// Key in `OP_CURSORS` and `OP_LEASES`.
pub fn feed_key(account: &AccountName, feed: Feed) -> String {
    format!("{account}.{feed}")
}

/// Splits a [`feed_key`] back into its parts; `None` for any other key.
pub fn parse_feed_key(key: &str) -> Option<(AccountName, Feed)> {
    let (account, feed) = key.split_once('.')?;
    Some((AccountName::new(account).ok()?, feed.parse().ok()?))
}

/// Key in `OP_STATUS` for the fetcher's view of a feed.
pub fn fetch_status_key(account: &AccountName, feed: Feed) -> String {
    format!("fetch.{account}.{feed}")
}

/// Splits a [`fetch_status_key`] back into its parts; `None` for any other key.
pub fn parse_fetch_status_key(key: &str) -> Option<(AccountName, Feed)> {
    parse_feed_key(key.strip_prefix("fetch.")?)
}

/// Splits `op.{kind}.{account}.{feed}` back into its parts; `None` for anything else.
pub fn parse_feed_subject<'a>(subject: &'a str, kind: &str) -> Option<(&'a str, Feed)> {
    let rest = subject
        .strip_prefix("op.")?
        .strip_prefix(kind)?
        .strip_prefix('.')?;
    let (account, feed) = rest.split_once('.')?;
    Some((account, feed.parse().ok()?))
}

/// The headers oprelay writes on its messages.
pub mod header {
    /// Every message: its dedup id, so JetStream stores a repeat once.
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// Every message about a feed: the account.
    pub const ACCOUNT: &str = "Oprelay-Account";
    /// Every message about a feed: the feed.
    pub const FEED: &str = "Oprelay-Feed";
    /// W3C trace context: the trace the message belongs to.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace context: vendor state, passed on.
    pub const TRACESTATE: &str = "tracestate";
    /// Raw pages: when the fetcher received the page (RFC 3339).
    pub const FETCHED_AT: &str = "Oprelay-Fetched-At";
    /// Event batches: number of records in the body.
    pub const COUNT: &str = "Oprelay-Count";
    /// Event batches: the newest event time in the body (RFC 3339).
    pub const MAX_EVENT_TIME: &str = "Oprelay-Max-Event-Time";
    /// Dead letters: `normalize` or `forward`.
    pub const STAGE: &str = "Oprelay-Stage";
    /// Dead letters: a readable reason.
    pub const ERROR: &str = "Oprelay-Error";
    /// Dead letters from the forwarder: the sink that rejected the record.
    pub const SINK: &str = "Oprelay-Sink";
    /// Every message: the JSON Schema its body follows, with its major version (a name of
    /// [`super::schema`]; the file is `docs/schemas/{name}.json`).
    pub const SCHEMA: &str = "Oprelay-Schema";
}

/// The names of the JSON Schemas in `docs/schemas/`, as the `Oprelay-Schema` header carries
/// them. The last part is the major version: a change a subscriber could trip over is a new
/// name, never an edit of a published one.
pub mod schema {
    use crate::LogType;

    /// `op.raw.…`: a page of the Events API as received (or a part of one).
    pub const RAW_PAGE: &str = "oprelay.raw-page.v1";
    /// `op.events.…signin_attempts`: normalized records, one per line (so are the other two).
    pub const SIGN_IN_ATTEMPT: &str = "onepassword.signinattempt.v1";
    /// `op.events.…item_usages`.
    pub const ITEM_USAGE: &str = "onepassword.itemusage.v1";
    /// `op.events.…audit_events`.
    pub const AUDIT_EVENT: &str = "onepassword.auditevent.v1";
    /// `op.dlq.…`: what a stage could not process, as it was; the headers say why.
    pub const DEAD_LETTER: &str = "oprelay.dead-letter.v1";
    /// `op.alarms.…`.
    pub const ALARM: &str = "oprelay.alarm.v1";
    /// `OP_STATUS` values.
    pub const FEED_STATUS: &str = "oprelay.feed-status.v1";
    /// `OP_LOOKUPS` values.
    pub const LOOKUP_ROW: &str = "oprelay.lookup-row.v1";

    /// The record schema of a log type.
    pub fn record(log_type: LogType) -> &'static str {
        match log_type {
            LogType::SignInAttempt => SIGN_IN_ATTEMPT,
            LogType::ItemUsage => ITEM_USAGE,
            LogType::AuditEvent => AUDIT_EVENT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_back() {
        let acme = AccountName::new("acme").unwrap();
        let s = events_subject(&acme, Feed::ItemUsages);
        assert_eq!(s, "op.events.acme.item_usages");
        assert_eq!(
            parse_feed_subject(&s, "events"),
            Some(("acme", Feed::ItemUsages))
        );
        assert_eq!(parse_feed_subject(&s, "raw"), None);
        assert_eq!(parse_feed_subject("op.events.acme.bogus", "events"), None);
        assert_eq!(
            raw_subject(&acme, Feed::AuditEvents),
            "op.raw.acme.audit_events"
        );
        assert_eq!(
            fetch_status_key(&acme, Feed::SignInAttempts),
            "fetch.acme.signin_attempts"
        );
        let r = replay_subject("es-main", &acme, Feed::AuditEvents);
        assert_eq!(r, "op.replay.es-main.acme.audit_events");
        assert_eq!(
            parse_replay_subject(&r),
            Some(("es-main", "acme", Feed::AuditEvents))
        );
        assert_eq!(parse_replay_subject(&s), None);
        assert_eq!(
            parse_fetch_status_key(&fetch_status_key(&acme, Feed::ItemUsages)),
            Some((acme.clone(), Feed::ItemUsages))
        );
        assert_eq!(parse_fetch_status_key("_budget.acme"), None);
        assert_eq!(parse_sink_consumer(&sink_consumer("es")), Some("es"));
        assert_eq!(parse_sink_consumer("normalizer"), None);
        assert_eq!(
            events_filter(None, Some(Feed::ItemUsages)),
            "op.events.*.item_usages"
        );
        assert_eq!(events_filter(Some(&acme), Some(Feed::ItemUsages)), s);
    }

    #[test]
    fn alarm_names_follow_the_scope() {
        let acme = AccountName::new("acme").unwrap();
        let feed = AlarmScope::Feed {
            account: acme,
            feed: Feed::ItemUsages,
        };
        assert_eq!(alarm_subject(&feed), "op.alarms.acme.item_usages");
        assert_eq!(
            alarm_key(AlarmKind::Dropoff, &feed),
            "dropoff.acme.item_usages"
        );
        assert_eq!(
            alarm_subject(&AlarmScope::Sink("es".into())),
            "op.alarms.pipeline.sink-es"
        );
        assert_eq!(
            alarm_key(AlarmKind::DlqGrowing, &AlarmScope::DeadLetters),
            "dlq_growing.pipeline.dlq"
        );
    }
}
