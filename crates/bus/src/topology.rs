//! The streams, buckets and consumers of `docs/architecture.md`, created idempotently.
//!
//! Whichever service starts first provisions everything; the others find it there. Creating a
//! stream or bucket that exists with the same settings is a no-op on the server, so two services
//! racing to provision is harmless. When an operator changes a retention setting, the stream is
//! updated in place rather than failing the service.

use std::time::Duration;

use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, consumer, kv, stream};
use oprelay_events::names;

use crate::error::BusError;

/// Retention and replication, from the `[nats]` config section.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Replicas of every stream and bucket: 1 for a single server, 3 for a cluster.
    pub replicas: usize,
    pub raw_max_age: Duration,
    pub events_max_age: Duration,
    pub dlq_max_age: Duration,
    pub alarms_max_age: Duration,
    /// How long JetStream remembers a `Nats-Msg-Id`. A page re-fetched after a crash is
    /// dropped as a duplicate if it arrives within this window; it must outlast a restart.
    pub duplicate_window: Duration,
    /// How long a consumer's message may stay unacknowledged before JetStream redelivers it,
    /// e.g. after the service processing it was killed.
    pub ack_wait: Duration,
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
        }
    }
}

impl Topology {
    fn streams(&self) -> Vec<stream::Config> {
        let stream =
            |name: &str, subjects: &[&str], max_age: Duration, description: &str| stream::Config {
                name: name.to_owned(),
                subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
                description: Some(description.to_owned()),
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                max_age,
                duplicate_window: self.duplicate_window.min(max_age),
                ..Default::default()
            };
        vec![
            stream(
                names::STREAM_RAW,
                &[names::SUBJECTS_RAW],
                self.raw_max_age,
                "oprelay: 1Password API pages exactly as received",
            ),
            stream(
                names::STREAM_EVENTS,
                &[names::SUBJECTS_EVENTS, names::SUBJECTS_REPLAY],
                self.events_max_age,
                "oprelay: normalized records, NDJSON per page",
            ),
            stream(
                names::STREAM_DLQ,
                &[names::SUBJECTS_DLQ],
                self.dlq_max_age,
                "oprelay: what a stage could not process, with the reason in headers",
            ),
            stream(
                names::STREAM_ALARMS,
                &[names::SUBJECTS_ALARMS],
                self.alarms_max_age,
                "oprelay: alarm state changes",
            ),
        ]
    }

    fn buckets(&self) -> Vec<kv::Config> {
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
}

fn provision_error(
    what: String,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> BusError {
    move |source| BusError::Provision { what, source }
}

/// Creates (or adopts, or updates) every stream and bucket, and the normalizer's consumer.
pub async fn provision(js: &jetstream::Context, topology: &Topology) -> Result<(), BusError> {
    for wanted in topology.streams() {
        ensure_stream(js, wanted).await?;
    }
    for bucket in topology.buckets() {
        let name = bucket.bucket.clone();
        if js.get_key_value(&name).await.is_ok() {
            continue;
        }
        if let Err(create_err) = js.create_key_value(bucket).await {
            // Another service may have created it between our look and our create.
            js.get_key_value(&name)
                .await
                .map_err(|_| provision_error(format!("KV bucket {name}"))(Box::new(create_err)))?;
        }
    }
    ensure_pull_consumer(
        js,
        names::STREAM_RAW,
        names::CONSUMER_NORMALIZER,
        &[],
        topology.ack_wait,
    )
    .await?;
    Ok(())
}

async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<(), BusError> {
    let name = wanted.name.clone();
    let mut existing = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| provision_error(format!("stream {name}"))(Box::new(e)))?;
    let info = existing
        .info()
        .await
        .map_err(|e| provision_error(format!("stream {name}"))(Box::new(e)))?;
    let have = &info.config;
    let differs = have.subjects != wanted.subjects
        || have.max_age != wanted.max_age
        || have.duplicate_window != wanted.duplicate_window;
    if differs {
        tracing::info!(stream = %name, "updating stream retention to match the configuration");
        let update = stream::Config {
            // Replica count cannot be changed this way on every server version; keep it.
            num_replicas: have.num_replicas,
            ..wanted
        };
        js.update_stream(update)
            .await
            .map_err(|e| provision_error(format!("update of stream {name}"))(Box::new(e)))?;
    }
    Ok(())
}

/// A durable pull consumer with explicit acks that never gives up on a message: undelivered
/// data must be retried or dead-lettered by the service, never dropped by the server.
///
/// An existing consumer is brought in line with the configuration (filter, ack wait, limits):
/// keeping it as it was would silently ignore, say, a sink's new `feeds`. What changed is
/// logged. A widened filter delivers what is published from now on; messages the consumer
/// had already passed over stay passed (JetStream keeps the consumer's position).
pub async fn ensure_pull_consumer(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    filters: &[String],
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, BusError> {
    let what = || format!("consumer {durable} on stream {stream}");
    let stream_handle = js
        .get_stream(stream)
        .await
        .map_err(|e| provision_error(what())(Box::new(e)))?;
    let wanted = consumer::pull::Config {
        durable_name: Some(durable.to_owned()),
        description: Some(format!("oprelay {durable}")),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending: 1_000,
        // One filter goes in `filter_subject`, several in `filter_subjects` (never both).
        filter_subject: match filters {
            [one] => one.clone(),
            _ => String::new(),
        },
        filter_subjects: match filters {
            [_] => Vec::new(),
            many => many.to_vec(),
        },
        ..Default::default()
    };
    let existing = match stream_handle.consumer_info(durable).await {
        Ok(info) => Some(info.config),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => None,
        Err(e) => return Err(provision_error(what())(Box::new(e))),
    };
    match existing {
        None => stream_handle
            .create_consumer(wanted)
            .await
            .map_err(|e| provision_error(what())(Box::new(e))),
        Some(have) => {
            let changes = consumer_changes(&have, &wanted);
            if changes.is_empty() {
                return stream_handle
                    .get_consumer(durable)
                    .await
                    .map_err(provision_error(what()));
            }
            tracing::warn!(
                consumer = durable,
                stream,
                changes = %changes.join("; "),
                "updating the consumer to match the configuration"
            );
            stream_handle
                .update_consumer(wanted)
                .await
                .map_err(|e| provision_error(format!("update of {}", what()))(Box::new(e)))
        }
    }
}

/// What differs between a consumer's stored config and the wanted one, in words for the log.
fn consumer_changes(have: &consumer::Config, want: &consumer::pull::Config) -> Vec<String> {
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
