//! Token expiring: the token's `exp` claim is closer than the configured warning.

use time::OffsetDateTime;

use oprelay_events::{AlarmState, FeedStatus};

use super::Observation;

pub const RUNBOOK: &str = "The Events Reporting token expires soon. Issue a new token in 1Password and update the Secret before it does.";

/// ALARM when the token expires within `warning`; OK for tokens without an expiry.
pub fn judge(
    status: Option<&FeedStatus>,
    warning: time::Duration,
    now: OffsetDateTime,
    what: &str,
) -> Observation {
    match status.and_then(|s| s.token_expires_at) {
        Some(exp) if exp - now < warning => Observation::new(
            AlarmState::Alarm,
            format!("{what}: the token expires at {exp}"),
            None,
        ),
        _ => Observation::new(
            AlarmState::Ok,
            format!("{what}: the token is not about to expire"),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::test_time::t;

    fn expiring_at(min: i64) -> FeedStatus {
        FeedStatus {
            token_expires_at: Some(t(min)),
            ..FeedStatus::default()
        }
    }

    #[test]
    fn warns_inside_the_window_only() {
        let week = time::Duration::WEEK;
        let in_a_day = expiring_at(24 * 60);
        assert_eq!(
            judge(Some(&in_a_day), week, t(0), "f").state,
            AlarmState::Alarm
        );
        let in_a_month = expiring_at(30 * 24 * 60);
        assert_eq!(
            judge(Some(&in_a_month), week, t(0), "f").state,
            AlarmState::Ok
        );
        assert_eq!(
            judge(Some(&FeedStatus::default()), week, t(0), "f").state,
            AlarmState::Ok
        );
        assert_eq!(judge(None, week, t(0), "f").state, AlarmState::Ok);
    }
}
