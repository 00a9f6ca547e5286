//! The forwarder's Prometheus metrics, per sink.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use oprelay_service::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub sink: String,
    pub reason: String,
}

fn batch_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

#[derive(Clone)]
pub struct ForwarderMetrics {
    pub records: Family<SinkLabels, Counter>,
    pub bytes: Family<SinkLabels, Counter>,
    pub failures: Family<ReasonLabels, Counter>,
    pub dead_letters: Family<SinkLabels, Counter>,
    pub batch_seconds: Family<SinkLabels, Histogram, fn() -> Histogram>,
    pub lag_seconds: Family<SinkLabels, Gauge<f64, AtomicU64>>,
    pub pending: Family<SinkLabels, Gauge>,
    pub redelivered: Family<SinkLabels, Counter>,
}

impl ForwarderMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = ForwarderMetrics {
            records: Family::default(),
            bytes: Family::default(),
            failures: Family::default(),
            dead_letters: Family::default(),
            batch_seconds: Family::new_with_constructor(batch_histogram),
            lag_seconds: Family::default(),
            pending: Family::default(),
            redelivered: Family::default(),
        };
        metrics.register(
            "forwarder_records",
            "Records the SIEM accepted",
            m.records.clone(),
        );
        metrics.register(
            "forwarder_bytes",
            "Record bytes the SIEM accepted",
            m.bytes.clone(),
        );
        metrics.register(
            "forwarder_failures",
            "Failed delivery attempts by reason",
            m.failures.clone(),
        );
        metrics.register(
            "forwarder_dead_letters",
            "Records the SIEM refused, sent to OP_DLQ",
            m.dead_letters.clone(),
        );
        metrics.register(
            "forwarder_batch_seconds",
            "Time from a batch's first attempt to its acknowledgement",
            m.batch_seconds.clone(),
        );
        metrics.register(
            "forwarder_lag_seconds",
            "Now minus p_parse_time of the newest record delivered",
            m.lag_seconds.clone(),
        );
        metrics.register(
            "forwarder_pending_messages",
            "Messages waiting in the sink's consumer",
            m.pending.clone(),
        );
        metrics.register(
            "forwarder_redelivered_messages",
            "Messages JetStream delivered more than once (an ack wait passed, or a forwarder \
             stopped before acking); a non-idempotent sink may receive their records twice",
            m.redelivered.clone(),
        );
        m
    }

    /// Creates a sink's counters at 0 when the sink starts. A series that appears only with
    /// its first increment is invisible to `increase()`/`rate()` (they need two samples), so
    /// an alert on the first dead letter or redelivery would never fire.
    pub fn start_sink(&self, labels: &SinkLabels) {
        let _ = self.records.get_or_create(labels);
        let _ = self.bytes.get_or_create(labels);
        let _ = self.dead_letters.get_or_create(labels);
        let _ = self.redelivered.get_or_create(labels);
        let _ = self.pending.get_or_create(labels);
    }
}
