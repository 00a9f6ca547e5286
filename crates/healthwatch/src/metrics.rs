//! healthwatch's Prometheus metrics: each alarm's state, and how long a round takes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use oprelay_events::{AlarmKind, AlarmState};
use oprelay_service::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabels {
    kind: String,
    scope: String,
}

/// The handles the evaluator updates; registered once at start.
#[derive(Clone)]
pub(crate) struct HealthwatchMetrics {
    state: Family<AlarmLabels, Gauge>,
    pub evaluation: Histogram,
}

impl HealthwatchMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = HealthwatchMetrics {
            state: Family::default(),
            evaluation: Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        };
        metrics.register(
            "healthwatch_alarm_state",
            "Alarm state per kind and scope: 0 OK, 1 ALARM, 2 INSUFFICIENT_DATA",
            m.state.clone(),
        );
        metrics.register(
            "healthwatch_evaluation_seconds",
            "Time to evaluate every alarm once",
            m.evaluation.clone(),
        );
        m
    }

    /// Sets one alarm's gauge: 0 OK, 1 ALARM, 2 INSUFFICIENT_DATA.
    pub fn set_state(&self, kind: AlarmKind, scope: String, state: AlarmState) {
        let value = match state {
            AlarmState::Ok => 0,
            AlarmState::Alarm => 1,
            AlarmState::InsufficientData => 2,
        };
        self.state
            .get_or_create(&AlarmLabels {
                kind: kind.to_string(),
                scope,
            })
            .set(value);
    }
}
