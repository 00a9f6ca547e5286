//! The pure decisions of provisioning: what differs between what the server has and what the
//! configuration wants, and which differences would delete data.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

/// The differences between a stream's stored limits and the wanted ones, split into what is
/// safe to apply and what would delete data. `target` is `have` with the safe changes (and,
/// if `shrink`, the others) applied.
pub(super) struct Diff {
    pub target: stream::Config,
    pub changes: Vec<String>,
    pub shrinks: Vec<String>,
}

/// `0` (age) and `-1` (bytes, messages) mean "no limit" to JetStream.
fn age_limit(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::MAX
    } else {
        d
    }
}

fn count_limit(n: i64) -> i64 {
    if n < 0 {
        i64::MAX
    } else {
        n
    }
}

/// Messages kept per subject (a KV bucket's history): `0` and `-1` both mean "no limit" to
/// JetStream, which stores a stream created with 0 as -1. Read alike, so provisioning an
/// existing stream again finds nothing to change.
fn per_subject_limit(n: i64) -> i64 {
    if n <= 0 {
        i64::MAX
    } else {
        n
    }
}

fn shown_bytes(n: i64) -> String {
    if n < 0 {
        "unlimited".to_owned()
    } else {
        n.to_string()
    }
}

pub(super) fn diff_limits(have: &stream::Config, want: &stream::Config, shrink: bool) -> Diff {
    let mut d = Diff {
        target: have.clone(),
        changes: Vec::new(),
        shrinks: Vec::new(),
    };
    if have.subjects != want.subjects {
        d.changes.push(format!(
            "subjects {} → {}",
            have.subjects.join(","),
            want.subjects.join(",")
        ));
        d.target.subjects = want.subjects.clone();
    }
    if have.num_replicas != want.num_replicas {
        d.changes.push(format!(
            "replicas {} → {}",
            have.num_replicas, want.num_replicas
        ));
        d.target.num_replicas = want.num_replicas;
    }
    if have.duplicate_window != want.duplicate_window {
        d.changes.push(format!(
            "duplicate_window {:?} → {:?}",
            have.duplicate_window, want.duplicate_window
        ));
        d.target.duplicate_window = want.duplicate_window;
    }
    let mut limit = |text: String, shrinks: bool, apply: &mut dyn FnMut(&mut stream::Config)| {
        if shrinks && !shrink {
            d.shrinks.push(text);
        } else {
            apply(&mut d.target);
            if shrinks {
                d.shrinks.push(text.clone());
            }
            d.changes.push(text);
        }
    };
    if have.max_age != want.max_age {
        let text = format!("max_age {:?} → {:?}", have.max_age, want.max_age);
        let shrinks = age_limit(want.max_age) < age_limit(have.max_age);
        limit(text, shrinks, &mut |t| t.max_age = want.max_age);
    }
    if have.max_bytes != want.max_bytes {
        let text = format!(
            "max_bytes {} → {}",
            shown_bytes(have.max_bytes),
            shown_bytes(want.max_bytes)
        );
        let shrinks = count_limit(want.max_bytes) < count_limit(have.max_bytes);
        limit(text, shrinks, &mut |t| t.max_bytes = want.max_bytes);
    }
    let (have_per_subject, want_per_subject) = (
        per_subject_limit(have.max_messages_per_subject),
        per_subject_limit(want.max_messages_per_subject),
    );
    if have_per_subject != want_per_subject {
        let text = format!(
            "history {} → {}",
            have.max_messages_per_subject, want.max_messages_per_subject
        );
        let shrinks = want_per_subject < have_per_subject;
        limit(text, shrinks, &mut |t| {
            t.max_messages_per_subject = want.max_messages_per_subject
        });
    }
    d
}

/// What differs between a consumer's stored config and the wanted one, in words.
pub(super) fn consumer_changes(
    have: &consumer::Config,
    want: &consumer::pull::Config,
) -> Vec<String> {
    let mut out = Vec::new();
    let shown = |one: &str, many: &[String]| {
        if !many.is_empty() {
            many.join(", ")
        } else if one.is_empty() {
            "(every subject)".to_owned()
        } else {
            one.to_owned()
        }
    };
    if have.filter_subject != want.filter_subject || have.filter_subjects != want.filter_subjects {
        out.push(format!(
            "filter {} → {}",
            shown(&have.filter_subject, &have.filter_subjects),
            shown(&want.filter_subject, &want.filter_subjects)
        ));
    }
    if have.ack_wait != want.ack_wait {
        out.push(format!(
            "ack_wait {:?} → {:?}",
            have.ack_wait, want.ack_wait
        ));
    }
    if have.max_deliver != want.max_deliver {
        out.push(format!(
            "max_deliver {} → {}",
            have.max_deliver, want.max_deliver
        ));
    }
    if have.max_ack_pending != want.max_ack_pending {
        out.push(format!(
            "max_ack_pending {} → {}",
            have.max_ack_pending, want.max_ack_pending
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(max_age_h: u64, max_bytes: i64, replicas: usize) -> stream::Config {
        stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            max_age: Duration::from_secs(max_age_h * 3600),
            max_bytes,
            num_replicas: replicas,
            ..Default::default()
        }
    }

    #[test]
    fn no_per_subject_limit_is_no_limit_however_it_is_spelled() {
        let mut have = stream(24, -1, 1);
        have.max_messages_per_subject = -1;
        let mut want = stream(24, -1, 1);
        want.max_messages_per_subject = 0;
        let d = diff_limits(&have, &want, false);
        assert!(
            d.changes.is_empty() && d.shrinks.is_empty(),
            "{:?} {:?}",
            d.changes,
            d.shrinks
        );
    }

    #[test]
    fn longer_retention_and_more_replicas_are_applied() {
        let d = diff_limits(&stream(24, -1, 1), &stream(48, -1, 3), false);
        assert_eq!(d.target.max_age, Duration::from_secs(48 * 3600));
        assert_eq!(d.target.num_replicas, 3);
        assert_eq!(d.changes.len(), 2, "{:?}", d.changes);
        assert!(d.shrinks.is_empty());
    }

    #[test]
    fn shorter_retention_is_held_back_unless_allowed() {
        let have = stream(48, -1, 1);
        let want = stream(24, 1 << 30, 1);
        let d = diff_limits(&have, &want, false);
        assert_eq!(d.target.max_age, have.max_age, "kept");
        assert_eq!(
            d.target.max_bytes, -1,
            "an unlimited stream gaining a limit shrinks"
        );
        assert_eq!(d.shrinks.len(), 2, "{:?}", d.shrinks);
        assert!(d.changes.is_empty());

        let d = diff_limits(&have, &want, true);
        assert_eq!(d.target.max_age, want.max_age);
        assert_eq!(d.target.max_bytes, 1 << 30);
        assert_eq!(d.changes.len(), 2);
    }

    #[test]
    fn unlimited_is_longer_than_any_limit() {
        let limited = stream(24, 100, 1);
        let unlimited = stream(0, -1, 1);
        assert!(diff_limits(&limited, &unlimited, false).shrinks.is_empty());
        assert_eq!(diff_limits(&unlimited, &limited, false).shrinks.len(), 2);
    }
}
