//! What oprelay needs on the bus: the streams, buckets and consumers of
//! `docs/architecture.md`, with the retention and replication the `[nats]` config asks for.
//!
//! This file only says what is wanted; `provision.rs` compares it with what the server has and
//! applies (or refuses) the difference.

use std::time::Duration;

use async_nats::jetstream::{consumer, kv, stream};
use oprelay_events::names;

/// Retention and replication, from the `[nats]` config section.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Replicas of every stream and bucket: 1 for a single server, 3 for a cluster.
    pub replicas: usize,
    /// How long raw pages stay: the window in which they can be normalized again.
    pub raw_max_age: Duration,
    /// How long records stay: the longest a sink may be down without losing any.
    pub events_max_age: Duration,
    /// How long dead letters stay.
    pub dlq_max_age: Duration,
    /// How long alarm state changes stay.
    pub alarms_max_age: Duration,
    /// Size limits per stream (`None`: only the age limit). When a stream is full its oldest
    /// messages go first, so the limit must leave room for the slowest consumer's backlog.
    pub raw_max_bytes: Option<u64>,
    /// `OP_EVENTS`'s size limit.
    pub events_max_bytes: Option<u64>,
    /// `OP_DLQ`'s size limit.
    pub dlq_max_bytes: Option<u64>,
    /// `OP_ALARMS`'s size limit.
    pub alarms_max_bytes: Option<u64>,
    /// How long JetStream remembers a `Nats-Msg-Id`. A page re-fetched after a crash is
    /// dropped as a duplicate if it arrives within this window; it must outlast a restart.
    pub duplicate_window: Duration,
    /// How long a consumer's message may stay unacknowledged before JetStream redelivers it,
    /// e.g. after the service processing it was killed.
    pub ack_wait: Duration,
    /// The durable consumers: the normalizer's, and one per forwarder sink.
    pub consumers: Vec<ConsumerSpec>,
}

/// A durable pull consumer oprelay owns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// The stream it reads.
    pub stream: String,
    /// Its durable name.
    pub durable: String,
    /// Subjects it takes; empty: the whole stream.
    pub filters: Vec<String>,
}

impl ConsumerSpec {
    /// The normalizer's consumer: all of `OP_RAW`, shared by every replica.
    pub fn normalizer() -> ConsumerSpec {
        ConsumerSpec {
            stream: names::STREAM_RAW.to_owned(),
            durable: names::CONSUMER_NORMALIZER.to_owned(),
            filters: Vec::new(),
        }
    }
}

impl Default for Topology {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Topology {
            replicas: 1,
            raw_max_age: Duration::from_secs(7 * DAY),
            events_max_age: Duration::from_secs(7 * DAY),
            dlq_max_age: Duration::from_secs(30 * DAY),
            alarms_max_age: Duration::from_secs(90 * DAY),
            duplicate_window: Duration::from_secs(3600),
            ack_wait: Duration::from_secs(60),
            raw_max_bytes: None,
            events_max_bytes: None,
            dlq_max_bytes: None,
            alarms_max_bytes: None,
            consumers: vec![ConsumerSpec::normalizer()],
        }
    }
}

impl Topology {
    pub(crate) fn streams(&self) -> Vec<stream::Config> {
        let stream = |name: &str,
                      subjects: &[&str],
                      max_age: Duration,
                      max_bytes: Option<u64>,
                      description: &str| stream::Config {
            name: name.to_owned(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            description: Some(description.to_owned()),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            max_age,
            max_bytes: max_bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            duplicate_window: self.duplicate_window.min(max_age),
            ..Default::default()
        };
        vec![
            stream(
                names::STREAM_RAW,
                &[names::SUBJECTS_RAW],
                self.raw_max_age,
                self.raw_max_bytes,
                "oprelay: 1Password API pages exactly as received",
            ),
            stream(
                names::STREAM_EVENTS,
                &[names::SUBJECTS_EVENTS, names::SUBJECTS_REPLAY],
                self.events_max_age,
                self.events_max_bytes,
                "oprelay: normalized records, NDJSON per page",
            ),
            stream(
                names::STREAM_DLQ,
                &[names::SUBJECTS_DLQ],
                self.dlq_max_age,
                self.dlq_max_bytes,
                "oprelay: what a stage could not process, with the reason in headers",
            ),
            stream(
                names::STREAM_ALARMS,
                &[names::SUBJECTS_ALARMS],
                self.alarms_max_age,
                self.alarms_max_bytes,
                "oprelay: alarm state changes",
            ),
        ]
    }

    pub(crate) fn buckets(&self) -> Vec<kv::Config> {
        let bucket = |name: &str, history: i64, description: &str| kv::Config {
            bucket: name.to_owned(),
            description: description.to_owned(),
            history,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        };
        vec![
            // A few old cursors stay readable, so an operator can step back after a bad deploy.
            bucket(names::BUCKET_CURSORS, 10, "oprelay: API cursor per feed"),
            bucket(
                names::BUCKET_LEASES,
                1,
                "oprelay: which fetcher replica owns a feed",
            ),
            bucket(
                names::BUCKET_STATUS,
                1,
                "oprelay: last poll result per feed",
            ),
            bucket(
                names::BUCKET_LOOKUPS,
                1,
                "oprelay: UUID to name lookup rows",
            ),
            bucket(names::BUCKET_HEALTH, 1, "oprelay: healthwatch alarm states"),
        ]
    }

    /// The pull consumer config for `spec`: explicit acks, and never giving up on a message:
    /// undelivered data must be retried or dead-lettered by the service, never dropped by the
    /// server.
    pub(crate) fn consumer(&self, spec: &ConsumerSpec) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(spec.durable.clone()),
            description: Some(format!("oprelay {}", spec.durable)),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            max_ack_pending: 1_000,
            // One filter goes in `filter_subject`, several in `filter_subjects` (never both).
            filter_subject: match spec.filters.as_slice() {
                [one] => one.clone(),
                _ => String::new(),
            },
            filter_subjects: match spec.filters.as_slice() {
                [_] => Vec::new(),
                many => many.to_vec(),
            },
            ..Default::default()
        }
    }
}
