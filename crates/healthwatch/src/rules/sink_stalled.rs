//! Sink stalled: a sink has records waiting and has delivered none of them for a while.

use time::OffsetDateTime;

use oprelay_events::AlarmState;

use super::{Observation, Progress};

pub const RUNBOOK: &str = "A SIEM is not accepting records. Check the forwarder's logs and the SIEM's health; nothing is lost, the backlog waits in NATS.";

/// A sink consumer's position on `OP_EVENTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    /// Messages waiting plus delivered and not yet acknowledged.
    pub waiting: u64,
    /// The stream sequence everything up to which the sink acknowledged.
    pub delivered: u64,
}

/// ALARM when something waits and the sink's ack floor has not moved for `limit`;
/// INSUFFICIENT_DATA while its consumer does not exist. `progress` remembers the ack floor and
/// when it last moved while something was waiting: none while nothing waits, so an idle
/// sink's record stays unchanged and a backlog after a quiet night is not mistaken for a
/// night-long stall.
pub fn judge(
    progress: &mut Progress,
    backlog: Option<Backlog>,
    limit: time::Duration,
    now: OffsetDateTime,
    sink: &str,
) -> Observation {
    let Some(Backlog { waiting, delivered }) = backlog else {
        return Observation::new(
            AlarmState::InsufficientData,
            format!("sink {sink}: no consumer yet (is the forwarder running?)"),
            None,
        );
    };
    if waiting == 0 {
        *progress = Progress {
            marker: Some(delivered),
            at: None,
        };
    } else if progress.marker != Some(delivered) || progress.at.is_none() {
        *progress = Progress {
            marker: Some(delivered),
            at: Some(now),
        };
    }
    let stalled_for = progress.at.map_or(time::Duration::ZERO, |t| now - t);
    if waiting > 0 && stalled_for >= limit {
        Observation::new(
            AlarmState::Alarm,
            format!(
                "sink {sink}: {waiting} messages waiting, nothing delivered for {} min",
                stalled_for.whole_minutes()
            ),
            None,
        )
    } else {
        Observation::new(
            AlarmState::Ok,
            format!("sink {sink}: delivering ({waiting} waiting)"),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_time::t;

    const LIMIT: time::Duration = time::Duration::minutes(15);

    fn at(waiting: u64, delivered: u64) -> Option<Backlog> {
        Some(Backlog { waiting, delivered })
    }

    #[test]
    fn a_backlog_that_does_not_move_for_the_limit_alarms() {
        let mut p = Progress::default();
        assert_eq!(
            judge(&mut p, at(10, 5), LIMIT, t(0), "s").state,
            AlarmState::Ok
        );
        assert_eq!(
            judge(&mut p, at(12, 5), LIMIT, t(14), "s").state,
            AlarmState::Ok
        );
        let seen = judge(&mut p, at(12, 5), LIMIT, t(15), "s");
        assert_eq!(seen.state, AlarmState::Alarm);
        assert!(
            seen.message.contains("12 messages waiting"),
            "{}",
            seen.message
        );
        // Any delivery restarts the clock.
        assert_eq!(
            judge(&mut p, at(12, 6), LIMIT, t(16), "s").state,
            AlarmState::Ok
        );
    }

    #[test]
    fn an_idle_night_is_not_a_stall() {
        let mut p = Progress::default();
        judge(&mut p, at(0, 5), LIMIT, t(0), "s");
        assert_eq!(p.at, None, "nothing waits, nothing to time");
        // Hours later a backlog appears; it has been waiting for no time at all.
        assert_eq!(
            judge(&mut p, at(3, 5), LIMIT, t(600), "s").state,
            AlarmState::Ok
        );
        assert_eq!(p.at, Some(t(600)));
    }

    #[test]
    fn no_consumer_is_insufficient_data() {
        let seen = judge(&mut Progress::default(), None, LIMIT, t(0), "s");
        assert_eq!(seen.state, AlarmState::InsufficientData);
    }
}
