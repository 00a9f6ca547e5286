//! Token rejected: 1Password refuses the feed's token, or the fetcher cannot read or use it.

use oprelay_events::{AlarmState, FeedStatus};

use super::Observation;

pub const RUNBOOK: &str = "1Password refuses the token: it was revoked, expired or lacks the feed. Issue a new Events Reporting token and update the Secret; the fetcher re-reads the file.";

/// ALARM while the fetcher's last error is a token problem; the fetcher records the error's
/// kind, and rows written before kinds existed are judged by their text.
pub fn judge(status: Option<&FeedStatus>, what: &str) -> Observation {
    let Some(status) = status else {
        return Observation::new(
            AlarmState::InsufficientData,
            format!("{what}: the fetcher has not reported yet"),
            None,
        );
    };
    match &status.last_error {
        Some(e) if is_token_problem(status, e) => Observation::new(
            AlarmState::Alarm,
            format!("{what}: {e}"),
            status.last_event_at,
        ),
        _ => Observation::new(
            AlarmState::Ok,
            format!("{what}: token accepted"),
            status.last_event_at,
        ),
    }
}

fn is_token_problem(status: &FeedStatus, text: &str) -> bool {
    match status.error_kind {
        Some(kind) => kind.is_token_problem(),
        None => text.starts_with("token rejected") || text.contains("not allowed to read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oprelay_events::FetchErrorKind;

    fn failing(kind: Option<FetchErrorKind>, text: &str) -> FeedStatus {
        FeedStatus {
            last_error: Some(text.to_owned()),
            error_kind: kind,
            consecutive_failures: 1,
            ..FeedStatus::default()
        }
    }

    fn state(status: &FeedStatus) -> AlarmState {
        judge(Some(status), "acme/item_usages").state
    }

    #[test]
    fn the_kind_decides_and_the_text_only_for_old_rows() {
        let unreadable = failing(
            Some(FetchErrorKind::TokenUnreadable),
            "cannot read the token",
        );
        assert_eq!(state(&unreadable), AlarmState::Alarm);
        let not_permitted = failing(Some(FetchErrorKind::FeedNotPermitted), "whatever");
        assert_eq!(state(&not_permitted), AlarmState::Alarm);
        let server = failing(Some(FetchErrorKind::ServerError), "token rejected (401)");
        assert_eq!(state(&server), AlarmState::Ok);
        assert_eq!(
            state(&failing(None, "token rejected (401): invalid")),
            AlarmState::Alarm
        );
        assert_eq!(state(&failing(None, "HTTP 503")), AlarmState::Ok);
    }

    #[test]
    fn no_status_yet_is_insufficient_data_and_a_success_clears_it() {
        assert_eq!(judge(None, "f").state, AlarmState::InsufficientData);
        assert_eq!(state(&FeedStatus::default()), AlarmState::Ok);
    }
}
