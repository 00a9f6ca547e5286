//! The alarm rules, one file each. A rule is a pure function from what healthwatch observed
//! this round (and the progress it remembered from earlier rounds) to an [`Observation`]; it
//! does no I/O, so each is unit-tested beside its code. `crate::evaluate` reads the inputs once
//! per round and runs every rule.
//!
//! To add a rule: add its kind to `oprelay_events::AlarmKind`, write `rules/{kind}.rs` with a
//! `RUNBOOK` and a `judge` (copy the closest existing rule), list its runbook in [`runbook`],
//! and call it from `evaluate.rs` with the inputs it needs.

pub mod dlq_growing;
pub mod dropoff;
pub mod fetch_failing;
pub mod sink_stalled;
pub mod token_expiring;
pub mod token_rejected;

use time::OffsetDateTime;

use oprelay_events::AlarmKind;

pub use crate::alarm::{Observation, Progress};

/// The newest batch on a feed's `op.events.…` subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Newest {
    pub sequence: u64,
    /// When JetStream stored it: the arrival time healthwatch assumes after a restart.
    pub stored_at: OffsetDateTime,
}

/// What to check first when an alarm of `kind` fires; part of every published alarm.
pub fn runbook(kind: AlarmKind) -> &'static str {
    match kind {
        AlarmKind::Dropoff => dropoff::RUNBOOK,
        AlarmKind::TokenRejected => token_rejected::RUNBOOK,
        AlarmKind::TokenExpiring => token_expiring::RUNBOOK,
        AlarmKind::FetchFailing => fetch_failing::RUNBOOK,
        AlarmKind::SinkStalled => sink_stalled::RUNBOOK,
        AlarmKind::DlqGrowing => dlq_growing::RUNBOOK,
    }
}

/// A duration as people say it in an alarm: minutes, or hours from two hours on.
fn human(d: time::Duration) -> String {
    let m = d.whole_minutes();
    if m >= 120 {
        format!("{} h", m / 60)
    } else {
        format!("{m} min")
    }
}

#[cfg(test)]
pub(crate) mod test_time {
    use time::OffsetDateTime;

    /// A fixed instant plus `min` minutes.
    pub fn t(min: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap() + time::Duration::minutes(min)
    }
}
