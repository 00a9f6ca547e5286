//! One alarm's stored record and its transitions: episodes, ids, and which notifications are
//! owed. Free of I/O, so the bookkeeping is tested with plain values; the rules that produce
//! observations live in `rules/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use oprelay_events::{Alarm, AlarmKind, AlarmScope, AlarmState};

/// What one rule saw this round.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub state: AlarmState,
    /// Why, in words; kept as the alarm's message when the state changes.
    pub message: String,
    /// The newest event the rule knows of, when it knows one.
    pub last_event_at: Option<OffsetDateTime>,
}

impl Observation {
    pub fn new(state: AlarmState, message: String, last_event_at: Option<OffsetDateTime>) -> Self {
        Observation {
            state,
            message,
            last_event_at,
        }
    }
}

/// A rule's memory between rounds: a progress marker (a stream sequence) and when it last
/// moved. Stored flat in the record as `progress` and `progress_at`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(default, rename = "progress")]
    pub marker: Option<u64>,
    #[serde(default, rename = "progress_at", with = "time::serde::rfc3339::option")]
    pub at: Option<OffsetDateTime>,
}

/// One alarm's persistent record in `OP_HEALTH`: the public alarm, flattened so the stored
/// JSON reads as an `Alarm` to anyone (`oprelay status`), plus healthwatch's own bookkeeping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// Its `id` is stable for an episode: set on entering ALARM, kept on resolving.
    #[serde(flatten)]
    pub alarm: Alarm,
    /// When healthwatch first looked at this: "never produced anything" is INSUFFICIENT_DATA
    /// until one window has passed since then.
    #[serde(with = "time::serde::rfc3339")]
    pub watching_since: OffsetDateTime,
    /// The last state each notifier confirmed delivering (`ALARM` or `OK` after an alarm).
    #[serde(default)]
    pub notified: BTreeMap<String, AlarmState>,
    /// The episode (alarm id) each entry of `notified` was for. Records written before this
    /// existed have none; their entries count for the current episode.
    #[serde(default)]
    pub notified_episode: BTreeMap<String, String>,
    /// Whether the current episode is open: it entered ALARM and has not resolved. An
    /// INSUFFICIENT_DATA blip (one failed look) leaves it open, so the ALARM after the blip
    /// is the same episode: same id, no second notification.
    #[serde(default)]
    pub episode_open: bool,
    /// A notifier delivery under way: which replica took it, and until when. Another replica
    /// takes over only after it expires, so two replicas never both send.
    #[serde(default)]
    pub claims: BTreeMap<String, Claim>,
    /// The rule's own progress marker.
    #[serde(flatten)]
    pub progress: Progress,
}

impl AlarmRecord {
    /// A record for an alarm healthwatch has not looked at before.
    pub fn new(kind: AlarmKind, scope: &AlarmScope, now: OffsetDateTime) -> Self {
        AlarmRecord {
            alarm: Alarm {
                id: String::new(),
                kind,
                state: AlarmState::InsufficientData,
                account: scope.account_field(),
                feed: scope.feed(),
                since: now,
                last_event_at: None,
                message: String::new(),
                runbook: crate::rules::runbook(kind).to_owned(),
            },
            watching_since: now,
            notified: BTreeMap::new(),
            notified_episode: BTreeMap::new(),
            episode_open: false,
            claims: BTreeMap::new(),
            progress: Progress::default(),
        }
    }

    /// Applies an observation; returns the public alarm when the state changed.
    pub fn apply(&mut self, seen: Observation, now: OffsetDateTime) -> Option<Alarm> {
        self.alarm.last_event_at = seen.last_event_at.or(self.alarm.last_event_at);
        if seen.state == self.alarm.state {
            // The message describes the state as it was entered; rewriting it every round
            // would only churn the bucket.
            return None;
        }
        match seen.state {
            AlarmState::Alarm if self.episode_open && !self.alarm.id.is_empty() => {}
            AlarmState::Alarm => {
                self.alarm.id = format!(
                    "{}-{}-{}",
                    self.alarm.kind,
                    self.scope().replace('.', "-"),
                    now.unix_timestamp()
                );
                self.episode_open = true;
            }
            AlarmState::Ok => self.episode_open = false,
            AlarmState::InsufficientData => {}
        }
        self.alarm.state = seen.state;
        self.alarm.since = now;
        self.alarm.message = seen.message;
        Some(self.alarm.clone())
    }

    /// `{account}.{feed}`, `pipeline.sink-{name}` or `pipeline.dlq`: the subject's tail, and
    /// the `scope` label of the state metric.
    pub fn scope(&self) -> String {
        match self.alarm.scope() {
            Some(scope) => scope.tokens(),
            // Not a scope this build writes; keep what the record says.
            None => match self.alarm.feed {
                Some(f) => format!("{}.{f}", self.alarm.account),
                None => self.alarm.account.clone(),
            },
        }
    }

    /// Records that notifier `name` delivered `what` for the current episode.
    pub fn mark_notified(&mut self, name: &str, what: AlarmState) {
        self.notified.insert(name.to_owned(), what);
        self.notified_episode
            .insert(name.to_owned(), self.alarm.id.clone());
    }

    /// What notifier `name` still owes: the alarm, or its resolution. One of each per episode,
    /// and a resolution only for an episode whose alarm it delivered.
    pub fn owed(&self, name: &str) -> Option<AlarmState> {
        let this_episode = self
            .notified_episode
            .get(name)
            .is_none_or(|id| *id == self.alarm.id);
        let told_alarm = this_episode && self.notified.get(name) == Some(&AlarmState::Alarm);
        match self.alarm.state {
            AlarmState::Alarm if !told_alarm => Some(AlarmState::Alarm),
            AlarmState::Ok if told_alarm => Some(AlarmState::Ok),
            _ => None,
        }
    }
}

/// A notification being delivered by one replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The replica sending it.
    pub owner: String,
    /// What it is sending: the alarm or its resolution.
    pub state: AlarmState,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_time::t;
    use oprelay_events::{AccountName, Feed};

    fn acme_item_usages() -> AlarmScope {
        AlarmScope::Feed {
            account: AccountName::new("acme").unwrap(),
            feed: Feed::ItemUsages,
        }
    }

    /// `oprelay status` reads `OP_HEALTH` records as plain `Alarm`s, and records written
    /// before the alarm was a nested field must still load: the JSON stays flat.
    #[test]
    fn the_stored_record_is_a_flat_alarm() {
        let mut r = AlarmRecord::new(AlarmKind::Dropoff, &acme_item_usages(), t(0));
        r.apply(
            Observation {
                state: AlarmState::Alarm,
                message: "quiet".into(),
                last_event_at: Some(t(-30)),
            },
            t(1),
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "ALARM");
        assert_eq!(v["feed"], "item_usages");
        assert!(v.get("alarm").is_none(), "{v}");
        assert!(v.get("watching_since").is_some());
        assert!(
            v.get("progress").is_some(),
            "progress stays a top-level field: {v}"
        );
        let alarm: Alarm = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(alarm, r.alarm);
        let back: AlarmRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn one_notification_per_transition() {
        let mut r = AlarmRecord::new(AlarmKind::Dropoff, &acme_item_usages(), t(0));
        let alarm = Observation {
            state: AlarmState::Alarm,
            message: "quiet".into(),
            last_event_at: None,
        };
        let ok = Observation {
            state: AlarmState::Ok,
            message: "fine".into(),
            last_event_at: None,
        };
        assert!(r.apply(alarm.clone(), t(1)).is_some());
        assert_eq!(r.owed("webhook"), Some(AlarmState::Alarm));
        r.mark_notified("webhook", AlarmState::Alarm);
        assert!(r.apply(alarm, t(2)).is_none(), "no change, no event");
        assert_eq!(r.owed("webhook"), None, "never a repeat while in ALARM");
        let id = r.alarm.id.clone();
        let change = r.apply(ok, t(3)).expect("resolved");
        assert_eq!(change.id, id, "the resolution carries the episode's id");
        assert_eq!(r.owed("webhook"), Some(AlarmState::Ok));
        r.mark_notified("webhook", AlarmState::Ok);
        assert_eq!(r.owed("webhook"), None);
        assert_eq!(
            r.owed("slack"),
            None,
            "a notifier that never heard of the alarm owes no resolution"
        );
    }

    fn seen(state: AlarmState) -> Observation {
        Observation {
            state,
            message: format!("{state:?}"),
            last_event_at: None,
        }
    }

    #[test]
    fn an_insufficient_data_blip_keeps_the_episode_and_sends_nothing_again() {
        let mut r = AlarmRecord::new(AlarmKind::SinkStalled, &AlarmScope::Sink("es".into()), t(0));
        r.apply(seen(AlarmState::Alarm), t(1));
        let id = r.alarm.id.clone();
        r.mark_notified("webhook", AlarmState::Alarm);
        // One failed `consumer_info`: no data for a round, then the alarm again.
        r.apply(seen(AlarmState::InsufficientData), t(2));
        r.apply(seen(AlarmState::Alarm), t(3));
        assert_eq!(r.alarm.id, id, "the same episode");
        assert_eq!(r.owed("webhook"), None, "its ALARM was sent already");
        r.apply(seen(AlarmState::Ok), t(4));
        assert_eq!(r.owed("webhook"), Some(AlarmState::Ok));
        // After a resolution, a new alarm is a new episode.
        r.mark_notified("webhook", AlarmState::Ok);
        r.apply(seen(AlarmState::Alarm), t(5));
        assert_ne!(r.alarm.id, id);
        assert_eq!(r.owed("webhook"), Some(AlarmState::Alarm));
    }

    #[test]
    fn a_resolution_is_owed_only_for_an_episode_whose_alarm_was_sent() {
        let mut r = AlarmRecord::new(AlarmKind::Dropoff, &acme_item_usages(), t(0));
        r.apply(seen(AlarmState::Alarm), t(1));
        r.mark_notified("webhook", AlarmState::Alarm);
        // Resolved, but the RESOLVED notice could not be delivered before a new episode began.
        r.apply(seen(AlarmState::Ok), t(2));
        r.apply(seen(AlarmState::Alarm), t(3));
        assert_eq!(
            r.owed("webhook"),
            Some(AlarmState::Alarm),
            "the new episode's ALARM is owed"
        );
        // That ALARM is not delivered either, and the episode resolves: nothing to resolve.
        r.apply(seen(AlarmState::Ok), t(4));
        assert_eq!(r.owed("webhook"), None);
    }
}
