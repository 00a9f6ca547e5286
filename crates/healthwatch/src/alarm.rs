//! Alarm states and their transitions: the part of healthwatch that decides, kept free of I/O
//! so every rule is tested with plain values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use oprelay_events::{Alarm, AlarmKind, AlarmState, Feed};

/// What one check saw this round.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub state: AlarmState,
    pub message: String,
    pub last_event_at: Option<OffsetDateTime>,
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
    /// Check-specific progress marker (a stream sequence) and when it last moved.
    #[serde(default)]
    pub progress: Option<u64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub progress_at: Option<OffsetDateTime>,
}

impl AlarmRecord {
    pub fn new(kind: AlarmKind, account: &str, feed: Option<Feed>, now: OffsetDateTime) -> Self {
        AlarmRecord {
            alarm: Alarm {
                id: String::new(),
                kind,
                state: AlarmState::InsufficientData,
                account: account.to_owned(),
                feed,
                since: now,
                last_event_at: None,
                message: String::new(),
                runbook: runbook(kind).to_owned(),
            },
            watching_since: now,
            notified: BTreeMap::new(),
            notified_episode: BTreeMap::new(),
            episode_open: false,
            claims: BTreeMap::new(),
            progress: None,
            progress_at: None,
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

    /// `{account}.{feed}`, or `{account}.{name}` for pipeline-wide alarms.
    pub fn scope(&self) -> String {
        match self.alarm.feed {
            Some(f) => format!("{}.{f}", self.alarm.account),
            None => self.alarm.account.clone(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}.{}", self.alarm.kind, self.scope())
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub owner: String,
    pub state: AlarmState,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

pub fn runbook(kind: AlarmKind) -> &'static str {
    match kind {
        AlarmKind::Dropoff => "Check oprelay status for the feed: fetch errors point at the token or the API, a growing sink backlog at the SIEM. Item usages can arrive up to a day late; a quiet weekend may be real.",
        AlarmKind::TokenRejected => "1Password refuses the token: it was revoked, expired or lacks the feed. Issue a new Events Reporting token and update the Secret; the fetcher re-reads the file.",
        AlarmKind::TokenExpiring => "The Events Reporting token expires soon. Issue a new token in 1Password and update the Secret before it does.",
        AlarmKind::FetchFailing => "The fetcher cannot poll this feed. See last_error in `oprelay status` and the fetcher's logs (network, 429s, 5xx from 1Password).",
        AlarmKind::SinkStalled => "A SIEM is not accepting records. Check the forwarder's logs and the SIEM's health; nothing is lost, the backlog waits in NATS.",
        AlarmKind::DlqGrowing => "Records are being dead-lettered. Inspect them with `oprelay dlq list` / `show`, fix the cause, then `oprelay dlq replay`.",
    }
}

/// The drop-off rule: quiet for the window → ALARM; never seen and watched for less than the
/// window → INSUFFICIENT_DATA.
pub fn dropoff(
    last_arrival: Option<OffsetDateTime>,
    watching_since: OffsetDateTime,
    window: std::time::Duration,
    now: OffsetDateTime,
    what: &str,
) -> Observation {
    let human = |d: time::Duration| {
        let m = d.whole_minutes();
        if m >= 120 {
            format!("{} h", m / 60)
        } else {
            format!("{m} min")
        }
    };
    let window_t = time::Duration::try_from(window).unwrap_or(time::Duration::DAY);
    match last_arrival {
        Some(t) if now - t < window_t => Observation {
            state: AlarmState::Ok,
            message: format!("{what}: events arriving"),
            last_event_at: Some(t),
        },
        Some(t) => Observation {
            state: AlarmState::Alarm,
            message: format!(
                "{what}: no events for {} (threshold {})",
                human(now - t),
                human(window_t)
            ),
            last_event_at: Some(t),
        },
        None if now - watching_since < window_t => Observation {
            state: AlarmState::InsufficientData,
            message: format!("{what}: no events seen yet"),
            last_event_at: None,
        },
        None => Observation {
            state: AlarmState::Alarm,
            message: format!(
                "{what}: no events at all since healthwatch started watching {} ago (threshold {})",
                human(now - watching_since),
                human(window_t)
            ),
            last_event_at: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `oprelay status` reads `OP_HEALTH` records as plain `Alarm`s, and records written
    /// before the alarm was a nested field must still load: the JSON stays flat.
    #[test]
    fn the_stored_record_is_a_flat_alarm() {
        let mut r = AlarmRecord::new(AlarmKind::Dropoff, "acme", Some(Feed::ItemUsages), t(0));
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
        let alarm: Alarm = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(alarm, r.alarm);
        let back: AlarmRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    fn t(min: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap() + time::Duration::minutes(min)
    }

    #[test]
    fn dropoff_states() {
        let w = Duration::from_secs(15 * 60);
        assert_eq!(
            dropoff(Some(t(0)), t(0), w, t(10), "f").state,
            AlarmState::Ok
        );
        assert_eq!(
            dropoff(Some(t(0)), t(0), w, t(15), "f").state,
            AlarmState::Alarm
        );
        assert_eq!(
            dropoff(None, t(0), w, t(14), "f").state,
            AlarmState::InsufficientData
        );
        assert_eq!(dropoff(None, t(0), w, t(15), "f").state, AlarmState::Alarm);
        assert!(dropoff(Some(t(0)), t(0), w, t(200), "acme/item_usages")
            .message
            .contains("no events for 3 h"));
    }

    #[test]
    fn one_notification_per_transition() {
        let mut r = AlarmRecord::new(AlarmKind::Dropoff, "acme", Some(Feed::ItemUsages), t(0));
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
        let mut r = AlarmRecord::new(AlarmKind::SinkStalled, "pipeline", None, t(0));
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
        let mut r = AlarmRecord::new(AlarmKind::Dropoff, "acme", Some(Feed::ItemUsages), t(0));
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
