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
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use oprelay_bus::{header_value, Bus, BusError, JsonKv, Need};
use oprelay_events::names::{self, header};
use oprelay_events::AccountName;
use oprelay_service::{CancellationToken, Clock, Config, Metrics, StartError};

use crate::live_lookups::{follow_lookups, learn};
use crate::lookup::LookupIndex;
use crate::metrics::NormalizerMetrics;
use crate::normalize::{normalize_page, Source};
use crate::publish::publish;

/// The service's name in logs, metrics and its NATS user.
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
/// Where `/healthz`, `/readyz` and `/metrics` listen unless configured.
pub const DEFAULT_LISTEN: std::net::SocketAddr = oprelay_service::admin::default_listen(9462);

/// Why the normalizer could not run.
#[derive(Debug, thiserror::Error)]
pub enum NormalizerError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What tests and embedders may change.
#[derive(Clone, Default)]
pub struct Options {
    pub clock: Clock,
}

/// Runs the normalizer until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), NormalizerError> {
    run_with(config, Options::default(), shutdown).await
}

/// [`run`] with a controllable clock.
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
    tracing::info!(
        lookups = index.lock().map(|i| i.len()).unwrap_or(0),
        "normalizer consuming OP_RAW"
    );
    let worker = Worker {
        bus,
        lookups,
        index,
        sources,
        metrics: m,
        clock: options.clock,
    };
    let result = worker.consume(&shutdown).await;
    // Acks are published without waiting; make sure they left before the process does.
    if let Err(e) = worker.bus.client().flush().await {
        tracing::warn!(error = %e, "could not flush the last acks; their pages will be redelivered and de-duplicated");
    }
    watcher.abort();
    tracing::info!("normalizer stopped");
    result
}

/// What processing a raw page needs.
struct Worker {
    bus: Bus,
    lookups: JsonKv,
    index: Arc<Mutex<LookupIndex>>,
    /// Each configured account's `p_source_*` fields.
    sources: HashMap<String, Source>,
    metrics: NormalizerMetrics,
    clock: Clock,
}

impl Worker {
    /// Pulls a bounded batch, finishes every page of it, then pulls again, until shutdown.
    /// Nothing waits client-side unacknowledged (it would be redelivered after the ack wait),
    /// memory is bounded in bytes as well as pages, and on SIGTERM the batch in hand is
    /// finished, not dropped.
    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), NormalizerError> {
        let consumer = oprelay_bus::pull_consumer(
            self.bus.jetstream(),
            names::STREAM_RAW,
            names::CONSUMER_NORMALIZER,
        )
        .await?;
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
                    let e = BusError::Consume {
                        stream: names::STREAM_RAW.into(),
                        consumer: names::CONSUMER_NORMALIZER.into(),
                        source: Box::new(e),
                    };
                    tracing::warn!(error = %e, "pull from OP_RAW failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            // Read the pull to its end even after SIGTERM: a page the server handed out and
            // this loop left unread would be delivered again after the ack wait.
            while let Ok(Some(next)) = tokio::time::timeout(PULL_EXPIRES * 2, batch.next()).await {
                match next {
                    Ok(msg) => self.process(&msg).await,
                    Err(e) => tracing::debug!(error = %e, "pull ended"),
                }
            }
        }
        Ok(())
    }

    /// Handles one raw page and acks it, or naks it for a retry when it could not be
    /// published.
    async fn process(&self, msg: &jetstream::Message) {
        let started_at = Instant::now();
        match self.handle(msg).await {
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
        self.metrics
            .latency
            .observe(started_at.elapsed().as_secs_f64());
    }

    /// Normalizes one raw page and publishes its records and dead letters, inside a consumer
    /// span under the fetcher's publish of the page.
    async fn handle(&self, msg: &jetstream::Message) -> Result<(), BusError> {
        let Some((account, feed)) = names::parse_feed_subject(&msg.subject, "raw") else {
            tracing::error!(subject = %msg.subject, "raw page on an unexpected subject; skipped");
            return Ok(());
        };
        let Ok(account) = AccountName::new(account) else {
            tracing::error!(subject = %msg.subject, "raw page for an invalid account name; skipped");
            return Ok(());
        };
        if msg.info().is_ok_and(|i| i.delivered > 1) {
            self.metrics.redelivered.inc();
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
            let source = match self.sources.get(account.as_str()) {
                Some(s) => s,
                None => {
                    derived = Source::for_account(account.as_str(), None, None);
                    &derived
                }
            };
            let page = {
                let mut idx = self.index.lock().unwrap_or_else(|p| p.into_inner());
                normalize_page(&msg.payload, feed, source, &mut idx, self.clock.now())
            };
            publish(&self.bus, &self.metrics, &account, feed, &raw_id, &page).await?;
            self.metrics.count_page(&account, feed, &page);
            learn(&self.lookups, &page.learned).await;
            Ok(())
        }
        .instrument(span)
        .await
    }
}
