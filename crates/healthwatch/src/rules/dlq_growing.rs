//! DLQ growing: records were dead-lettered recently.

use time::OffsetDateTime;

use oprelay_events::AlarmState;

use super::{Observation, Progress};

pub const RUNBOOK: &str = "Records are being dead-lettered. Inspect them with `oprelay dlq list` / `show`, fix the cause, then `oprelay dlq replay`.";

/// The alarm resolves after this long without a new dead letter.
pub const QUIET: time::Duration = time::Duration::HOUR;

/// ALARM for [`QUIET`] after the DLQ's last sequence grew. The first look only notes where
/// the stream stands: dead letters from before healthwatch watched are not news.
pub fn judge(progress: &mut Progress, last_sequence: u64, now: OffsetDateTime) -> Observation {
    let grew = progress.marker.is_some_and(|p| last_sequence > p);
    if progress.marker.is_none() || grew {
        progress.marker = Some(last_sequence);
        if grew {
            progress.at = Some(now);
        }
    }
    if progress.at.is_some_and(|t| now - t < QUIET) {
        Observation::new(
            AlarmState::Alarm,
            format!("new dead letters (last sequence {last_sequence})"),
            None,
        )
    } else {
        Observation::new(AlarmState::Ok, "no new dead letters".into(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_time::t;

    #[test]
    fn new_dead_letters_alarm_for_an_hour() {
        let mut p = Progress::default();
        assert_eq!(
            judge(&mut p, 40, t(0)).state,
            AlarmState::Ok,
            "old letters are not news"
        );
        assert_eq!(judge(&mut p, 40, t(1)).state, AlarmState::Ok);
        assert_eq!(judge(&mut p, 41, t(2)).state, AlarmState::Alarm);
        assert_eq!(judge(&mut p, 41, t(61)).state, AlarmState::Alarm);
        assert_eq!(judge(&mut p, 41, t(62)).state, AlarmState::Ok);
    }
}
