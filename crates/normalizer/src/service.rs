//! The normalizer service: `OP_RAW` → `OP_EVENTS`, with dead letters and live lookups.
//!
//! Per raw page: normalize, publish the batch as `events:{raw id}` and wait for the ack,
//! publish each rejected record (or the whole page) to `op.dlq.normalize.{account}.{feed}`,
//! then ack the raw message. A crash before the ack redelivers the page; its batch has the
//! same dedup id, so `OP_EVENTS` gets it once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use oprelay_bus::async_nats::jetstream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use time::format_description::well_known::Rfc3339;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use oprelay_bus::{header_value, Bus, BusError, JsonKv, Need, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Feed, LookupKind, LookupRow, LookupSource};
use oprelay_service::{CancellationToken, Clock, Config, Metrics, StartError};

use crate::lookup::LookupIndex;
use crate::normalize::{normalize_page, NormalizedPage, RejectReason, Source};

pub const SERVICE: &str = "normalizer";

/// What the normalizer reads and writes; checked at start.
fn needs() -> [Need; 4] {
    [
        Need::Consumer(names::CONSUMER_NORMALIZER.to_owned()),
        Need::Stream(names::STREAM_EVENTS),
        Need::Stream(names::STREAM_DLQ),
        Need::Bucket(names::BUCKET_LOOKUPS),
    ]
}

/// Most raw pages, and bytes, pulled at once; a page is at most one bus message (1 MiB).
const PULL_PAGES: usize = 16;
const PULL_BYTES: usize = 16 * 1024 * 1024;
/// How long one pull waits for pages.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
pub const DEFAULT_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9462);

#[derive(Debug, thiserror::Error)]
pub enum NormalizerError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeedLabels {
    account: String,
    feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SelectorLabels {
    selector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone)]
struct NormalizerMetrics {
    records: Family<FeedLabels, Counter>,
    matches: Family<SelectorLabels, Counter>,
    dead_letters: Family<ReasonLabels, Counter>,
    redelivered: Counter,
    latency: Histogram,
}

impl NormalizerMetrics {
    fn register(metrics: &Metrics) -> Self {
        let m = NormalizerMetrics {
            records: Family::default(),
            matches: Family::default(),
            dead_letters: Family::default(),
            redelivered: Counter::default(),
            latency: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
        };
        metrics.register(
            "normalizer_records",
            "Records normalized and published",
            m.records.clone(),
        );
        metrics.register(
            "normalizer_enrichment_matches",
            "Lookup matches by selector",
            m.matches.clone(),
        );
        // Every reason at 0 from the start: `increase()` sees the first dead letter only if
        // the series existed before it.
        for reason in RejectReason::LABELS {
            let _ = m.dead_letters.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            });
        }
        metrics.register(
            "normalizer_dead_letters",
            "Records or pages sent to OP_DLQ by reason",
            m.dead_letters.clone(),
        );
        metrics.register(
            "normalizer_redelivered_pages",
            "Raw pages JetStream delivered more than once; their records are published with \
             the same dedup ids, so OP_EVENTS keeps one copy",
            m.redelivered.clone(),
        );
        metrics.register(
            "normalizer_page_seconds",
            "Time to normalize and publish one raw page",
            m.latency.clone(),
        );
        m
    }
}

#[derive(Clone, Default)]
pub struct Options {
    pub clock: Clock,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), NormalizerError> {
    run_with(config, Options::default(), shutdown).await
}

pub async fn run_with(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), NormalizerError> {
    let metrics = Metrics::new();
    let m = NormalizerMetrics::register(&metrics);
    let Some(started) = oprelay_service::start(
        &config,
        SERVICE,
        &needs(),
        DEFAULT_LISTEN,
        metrics,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let bus = started.bus;
    let lookups = JsonKv::open(&bus, names::BUCKET_LOOKUPS).await?;
    let index = Arc::new(Mutex::new(LookupIndex::new()));
    let watcher = follow_lookups(lookups.clone(), index.clone(), shutdown.clone()).await?;
    let sources: HashMap<String, Source> = config
        .accounts
        .iter()
        .map(|a| {
            (
                a.name.to_string(),
                Source::for_account(a.name.as_str(), a.source_id.as_deref(), Some(a.label())),
            )
        })
        .collect();

    let consumer = oprelay_bus::pull_consumer(
        bus.jetstream(),
        names::STREAM_RAW,
        names::CONSUMER_NORMALIZER,
    )
    .await?;
    let consume_err = |e: Box<dyn std::error::Error + Send + Sync>| BusError::Consume {
        stream: names::STREAM_RAW.into(),
        consumer: names::CONSUMER_NORMALIZER.into(),
        source: e,
    };
    tracing::info!(
        lookups = index.lock().map(|i| i.len()).unwrap_or(0),
        "normalizer consuming OP_RAW"
    );
    // Pull a bounded batch, finish every page of it, then pull again. Nothing waits
    // client-side unacknowledged (it would be redelivered after the ack wait), memory is bounded
    // in bytes as well as pages, and on SIGTERM the batch in hand is finished, not dropped.
    while !shutdown.is_cancelled() {
        let pulled = consumer
            .batch()
            .max_messages(PULL_PAGES)
            .max_bytes(PULL_BYTES)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match pulled {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %consume_err(Box::new(e)), "pull from OP_RAW failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // Read the pull to its end even after SIGTERM: a page the server handed out and this
        // loop left unread would be delivered again after the ack wait.
        while let Ok(Some(next)) = tokio::time::timeout(PULL_EXPIRES * 2, batch.next()).await {
            let msg = match next {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::debug!(error = %e, "pull ended");
                    continue;
                }
            };
            let started_at = Instant::now();
            match handle(&bus, &lookups, &index, &sources, &m, &options.clock, &msg).await {
                Ok(()) => {
                    if let Err(e) = msg.ack().await {
                        tracing::warn!(error = %e, "ack of a raw page failed; it will be redelivered and de-duplicated");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "page not processed; it will be retried");
                    let _ = msg
                        .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(2))))
                        .await;
                }
            }
            m.latency.observe(started_at.elapsed().as_secs_f64());
        }
    }
    // Acks are published without waiting; make sure they left before the process does.
    if let Err(e) = bus.client().flush().await {
        tracing::warn!(error = %e, "could not flush the last acks; their pages will be redelivered and de-duplicated");
    }
    watcher.abort();
    tracing::info!("normalizer stopped");
    Ok(())
}

/// Loads every lookup row, then keeps the index current as imports and learned users arrive.
async fn follow_lookups(
    kv: JsonKv,
    index: Arc<Mutex<LookupIndex>>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let kv_err = |e: Box<dyn std::error::Error + Send + Sync>| BusError::Kv {
        op: "watch",
        bucket: names::BUCKET_LOOKUPS.into(),
        key: ">".into(),
        source: e,
    };
    let status = kv.store().status().await.map_err(|e| kv_err(Box::new(e)))?;
    let pending = status.info.state.messages;
    let mut watch = kv
        .store()
        .watch_with_history(">")
        .await
        .map_err(|e| kv_err(Box::new(e)))?;
    let apply = |index: &Mutex<LookupIndex>,
                 entry: &oprelay_bus::async_nats::jetstream::kv::Entry| {
        let Ok(mut idx) = index.lock() else { return };
        match entry.operation {
            oprelay_bus::async_nats::jetstream::kv::Operation::Put => {
                match serde_json::from_slice::<LookupRow>(&entry.value) {
                    Ok(row) => {
                        idx.upsert(row);
                    }
                    Err(e) => {
                        tracing::warn!(key = %entry.key, error = %e, "ignoring a lookup row that is not valid")
                    }
                }
            }
            _ => {
                if let Some((kind, uuid)) = entry.key.split_once('.') {
                    if let Some(kind) = LookupKind::ALL.iter().find(|k| k.as_str() == kind) {
                        idx.remove(*kind, uuid);
                    }
                }
            }
        }
    };
    // The initial snapshot first, so the first page is enriched with everything imported.
    if pending > 0 {
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| kv_err(Box::new(e)))?;
            apply(&index, &entry);
            if entry.delta == 0 {
                break;
            }
        }
    }
    Ok(tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                n = watch.next() => n,
            };
            match next {
                Some(Ok(entry)) => apply(&index, &entry),
                Some(Err(e)) => tracing::warn!(error = %e, "lookup watch error"),
                None => break,
            }
        }
    }))
}

async fn handle(
    bus: &Bus,
    lookups: &JsonKv,
    index: &Mutex<LookupIndex>,
    sources: &HashMap<String, Source>,
    m: &NormalizerMetrics,
    clock: &Clock,
    msg: &jetstream::Message,
) -> Result<(), BusError> {
    let Some((account, feed)) = names::parse_feed_subject(&msg.subject, "raw") else {
        tracing::error!(subject = %msg.subject, "raw page on an unexpected subject; skipped");
        return Ok(());
    };
    let Ok(account) = AccountName::new(account) else {
        tracing::error!(subject = %msg.subject, "raw page for an invalid account name; skipped");
        return Ok(());
    };
    if msg.info().is_ok_and(|i| i.delivered > 1) {
        m.redelivered.inc();
    }
    let raw_id = header_value(msg.headers.as_ref(), header::MSG_ID)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            msg.info()
                .map(|i| format!("seq-{}", i.stream_sequence))
                .unwrap_or_default()
        });
    // A consumer span (messaging conventions) under the fetcher's publish of the page.
    let span = tracing::info_span!(
        "normalize page",
        %account,
        %feed,
        raw_id = %raw_id,
        trace_id = tracing::field::Empty,
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %msg.subject,
        messaging.consumer.group.name = names::CONSUMER_NORMALIZER,
        messaging.message.id = %raw_id,
    );
    let _ = span.set_parent(oprelay_bus::trace::extract(msg.headers.as_ref()));
    oprelay_service::telemetry::record_trace_id(&span);
    async {
        let derived;
        let source = match sources.get(account.as_str()) {
            Some(s) => s,
            None => {
                derived = Source::for_account(account.as_str(), None, None);
                &derived
            }
        };
        let page = {
            let mut idx = index.lock().unwrap_or_else(|p| p.into_inner());
            normalize_page(&msg.payload, feed, source, &mut idx, clock.now())
        };
        publish(bus, m, &account, feed, &raw_id, &page).await?;
        let labels = FeedLabels {
            account: account.to_string(),
            feed: feed.to_string(),
        };
        m.records.get_or_create(&labels).inc_by(page.count as u64);
        for (selector, n) in &page.matches {
            m.matches
                .get_or_create(&SelectorLabels {
                    selector: (*selector).to_owned(),
                })
                .inc_by(*n as u64);
        }
        for r in &page.rejects {
            m.dead_letters
                .get_or_create(&ReasonLabels {
                    reason: r.reason.label().to_owned(),
                })
                .inc();
        }
        learn(lookups, &page.learned).await;
        Ok(())
    }
    .instrument(span)
    .await
}

async fn publish(
    bus: &Bus,
    m: &NormalizerMetrics,
    account: &AccountName,
    feed: Feed,
    raw_id: &str,
    page: &NormalizedPage,
) -> Result<(), BusError> {
    if page.count > 0 {
        let limit = bus.max_body();
        let cut = crate::parts::cut(page, limit);
        for part in cut.parts {
            let mut out = Outgoing::new(
                names::events_subject(account, feed),
                format!("events:{raw_id}{}", part.suffix),
                page.ndjson[part.from..part.to].to_vec(),
            )
            .header(header::ACCOUNT, account)
            .header(header::FEED, feed)
            .header(header::SCHEMA, names::schema::record(feed.log_type()))
            .header(header::COUNT, part.records);
            let newest = page.event_times[part.first..part.first + part.records]
                .iter()
                .max();
            if let Some(t) = newest.and_then(|t| t.format(&Rfc3339).ok()) {
                out = out.header(header::MAX_EVENT_TIME, t);
            }
            bus.publish(out).await?;
        }
        for big in cut.oversized {
            let record = &page.ndjson[big.from..big.to];
            let reason = format!(
                "record {} of the page is {} bytes once normalized, more than the bus's largest \
                 message ({limit} bytes); this dead letter holds its first {limit} bytes, the \
                 raw page stays in OP_RAW",
                big.first,
                record.len()
            );
            tracing::warn!(%reason, "dead letter");
            m.dead_letters
                .get_or_create(&ReasonLabels {
                    reason: "too_large".to_owned(),
                })
                .inc();
            let out = Outgoing::new(
                names::dlq_subject("normalize", account, feed),
                format!("dlq:normalize:{raw_id}:big:{}", big.first),
                record[..record.len().min(limit)].to_vec(),
            )
            .header(header::STAGE, "normalize")
            .header(header::ERROR, reason)
            .header(header::ACCOUNT, account)
            .header(header::FEED, feed)
            .header(header::SCHEMA, names::schema::DEAD_LETTER);
            bus.publish(out).await?;
        }
    }
    for (i, reject) in page.rejects.iter().enumerate() {
        let reason = reject.reason.to_string();
        tracing::warn!(%reason, "dead letter");
        // Header values are one line; the reason is short and has no line breaks.
        let out = Outgoing::new(
            names::dlq_subject("normalize", account, feed),
            format!("dlq:normalize:{raw_id}:{i}"),
            reject.body.clone(),
        )
        .header(header::STAGE, "normalize")
        .header(header::ERROR, reason.replace(['\r', '\n'], " "))
        .header(header::ACCOUNT, account)
        .header(header::FEED, feed)
        .header(header::SCHEMA, names::schema::DEAD_LETTER);
        bus.publish(out).await?;
    }
    Ok(())
}

/// Persists users the stream revealed, never over an imported row.
async fn learn(lookups: &JsonKv, rows: &[LookupRow]) {
    for row in rows {
        let key = row.key();
        let result = async {
            let current = lookups.get::<LookupRow>(&key).await?;
            if current
                .as_ref()
                .is_some_and(|c| c.value.source == LookupSource::Imported || c.value == *row)
            {
                return Ok(());
            }
            lookups
                .compare_and_set(&key, row, current.map(|c| c.revision))
                .await
                .map(|_| ())
        }
        .await;
        match result {
            Ok(()) | Err(BusError::Conflict { .. }) => {}
            Err(e) => tracing::warn!(%key, error = %e, "could not record an observed user"),
        }
    }
}
