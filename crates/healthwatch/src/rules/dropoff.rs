//! Drop-off: a feed that should produce events has gone quiet.
//!
//! "Quiet" is measured by arrival, not event time: the newest batch on
//! `op.events.{account}.{feed}`, as healthwatch saw its stream sequence change. Item usages may
//! carry day-old timestamps and still be news, so event time would raise false alarms.

use time::OffsetDateTime;

use oprelay_events::AlarmState;

use super::{human, Newest, Observation, Progress};

pub const RUNBOOK: &str = "Check oprelay status for the feed: fetch errors point at the token or the API, a growing sink backlog at the SIEM. Item usages can arrive up to a day late; a quiet weekend may be real.";

/// Quiet for `window` → ALARM; never seen, and watched for less than `window` →
/// INSUFFICIENT_DATA. `progress` remembers the newest batch's sequence and when it arrived.
pub fn judge(
    progress: &mut Progress,
    newest: Option<Newest>,
    watching_since: OffsetDateTime,
    window: time::Duration,
    now: OffsetDateTime,
    what: &str,
) -> Observation {
    if let Some(newest) = newest {
        if progress.marker != Some(newest.sequence) {
            // A first sight after a restart takes the stored time; a new one is "now".
            let arrived = if progress.marker.is_none() {
                newest.stored_at.min(now)
            } else {
                now
            };
            progress.marker = Some(newest.sequence);
            progress.at = Some(arrived);
        }
    }
    match progress.at {
        Some(t) if now - t < window => {
            Observation::new(AlarmState::Ok, format!("{what}: events arriving"), Some(t))
        }
        Some(t) => Observation::new(
            AlarmState::Alarm,
            format!(
                "{what}: no events for {} (threshold {})",
                human(now - t),
                human(window)
            ),
            Some(t),
        ),
        None if now - watching_since < window => Observation::new(
            AlarmState::InsufficientData,
            format!("{what}: no events seen yet"),
            None,
        ),
        None => Observation::new(
            AlarmState::Alarm,
            format!(
                "{what}: no events at all since healthwatch started watching {} ago (threshold {})",
                human(now - watching_since),
                human(window)
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_time::t;

    const WINDOW: time::Duration = time::Duration::minutes(15);

    fn arrived_at(min: i64) -> Progress {
        Progress {
            marker: Some(1),
            at: Some(t(min)),
        }
    }

    fn state(progress: Progress, now: i64) -> AlarmState {
        judge(&mut progress.clone(), None, t(0), WINDOW, t(now), "f").state
    }

    #[test]
    fn quiet_for_the_window_is_an_alarm() {
        assert_eq!(state(arrived_at(0), 10), AlarmState::Ok);
        assert_eq!(state(arrived_at(0), 15), AlarmState::Alarm);
        assert_eq!(state(Progress::default(), 14), AlarmState::InsufficientData);
        assert_eq!(state(Progress::default(), 15), AlarmState::Alarm);
        let seen = judge(
            &mut arrived_at(0),
            None,
            t(0),
            WINDOW,
            t(200),
            "acme/item_usages",
        );
        assert!(
            seen.message.contains("no events for 3 h"),
            "{}",
            seen.message
        );
    }

    #[test]
    fn a_new_batch_counts_from_when_it_was_seen_and_the_first_from_when_it_was_stored() {
        let mut p = Progress::default();
        let stored_long_ago = Newest {
            sequence: 7,
            stored_at: t(-60),
        };
        // After a restart: the stored time says the feed has been quiet for an hour.
        let seen = judge(&mut p, Some(stored_long_ago), t(-90), WINDOW, t(0), "f");
        assert_eq!(seen.state, AlarmState::Alarm);
        assert_eq!(p.at, Some(t(-60)));
        // The next batch arrives: it counts from now, whatever its stored time.
        let next = Newest {
            sequence: 8,
            stored_at: t(-60),
        };
        assert_eq!(
            judge(&mut p, Some(next), t(-90), WINDOW, t(1), "f").state,
            AlarmState::Ok
        );
        assert_eq!(
            p,
            Progress {
                marker: Some(8),
                at: Some(t(1))
            }
        );
        // The same batch again changes nothing.
        judge(&mut p, Some(next), t(-90), WINDOW, t(5), "f");
        assert_eq!(p.at, Some(t(1)));
    }
}
