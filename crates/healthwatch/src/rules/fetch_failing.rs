//! Fetch failing: the fetcher's polls of a feed keep failing, or have not succeeded for long.

use time::OffsetDateTime;

use oprelay_events::{AlarmState, FeedStatus};

use super::Observation;

pub const RUNBOOK: &str = "The fetcher cannot poll this feed. See last_error in `oprelay status` and the fetcher's logs (network, 429s, 5xx from 1Password).";

/// How many failures in a row, or how long without a success, make an alarm.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub failures: u32,
    pub silence: time::Duration,
}

/// ALARM after `limits.failures` failed polls in a row, or `limits.silence` since the last
/// success. A fetcher that never succeeded is judged by its failure count alone: its first
/// failed poll is not yet a silence.
pub fn judge(
    status: Option<&FeedStatus>,
    limits: Limits,
    now: OffsetDateTime,
    what: &str,
) -> Observation {
    let Some(s) = status else {
        return Observation::new(
            AlarmState::InsufficientData,
            format!("{what}: the fetcher has not reported yet"),
            None,
        );
    };
    let stale = s.last_success_at.is_some_and(|t| now - t > limits.silence);
    if s.consecutive_failures >= limits.failures || stale {
        Observation::new(
            AlarmState::Alarm,
            format!(
                "{what}: {} failed polls in a row; last error: {}",
                s.consecutive_failures,
                s.last_error.as_deref().unwrap_or("none")
            ),
            s.last_event_at,
        )
    } else {
        Observation::new(AlarmState::Ok, format!("{what}: polling"), s.last_event_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_time::t;

    const LIMITS: Limits = Limits {
        failures: 3,
        silence: time::Duration::HOUR,
    };

    fn status(failures: u32, last_success: Option<i64>) -> FeedStatus {
        FeedStatus {
            consecutive_failures: failures,
            last_success_at: last_success.map(t),
            last_error: (failures > 0).then(|| "HTTP 503".to_owned()),
            ..FeedStatus::default()
        }
    }

    fn state(s: FeedStatus) -> AlarmState {
        judge(Some(&s), LIMITS, t(0), "f").state
    }

    #[test]
    fn failures_in_a_row_or_a_long_silence_alarm() {
        assert_eq!(state(status(2, Some(-5))), AlarmState::Ok);
        assert_eq!(state(status(3, Some(-5))), AlarmState::Alarm);
        assert_eq!(state(status(1, Some(-61))), AlarmState::Alarm);
        assert_eq!(
            state(status(1, None)),
            AlarmState::Ok,
            "never succeeded, one failure"
        );
        assert_eq!(
            judge(None, LIMITS, t(0), "f").state,
            AlarmState::InsufficientData
        );
        let seen = judge(Some(&status(4, None)), LIMITS, t(0), "f");
        assert!(
            seen.message.contains("last error: HTTP 503"),
            "{}",
            seen.message
        );
    }
}
