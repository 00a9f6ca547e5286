//! The normalizer service: `OP_RAW` → `OP_EVENTS`, with dead letters and live lookups.
//!
//! Per raw page: normalize, publish the batch as `events:{raw id}` and wait for the ack,
//! publish each rejected record (or the whole page) to `op.dlq.normalize.{account}.{feed}`,
//! then ack the raw message. A crash before the ack redelivers the page; its batch has the
//! same dedup id, so `OP_EVENTS` gets it once.
//!
//! With a backlog, the pages of a pull are normalized side by side (one per core, on blocking
//! threads) and published and acked one after another in the order they came, so each feed's
//! records still reach `OP_EVENTS` in page order (see `shared_index` for the users they learn).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use oprelay_bus::async_nats::jetstream;
use tokio::task::{JoinError, JoinHandle};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use oprelay_bus::{header_value, Bus, BusError, JsonKv, Need};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Feed};
use oprelay_service::memory::IdleTrim;
use oprelay_service::{CancellationToken, Clock, Config, Metrics, StartError};

use crate::live_lookups::{follow_lookups, learn};
use crate::metrics::NormalizerMetrics;
use crate::normalize::Source;
use crate::publish::publish;
use crate::shared_index::{Normalized, SharedIndex};

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
    let index = Arc::new(SharedIndex::default());
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
    tracing::info!(lookups = index.len(), "normalizer consuming OP_RAW");
    let worker = Worker {
        bus,
        lookups,
        index,
        sources,
        metrics: m,
        clock: options.clock,
        side_by_side: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
    index: Arc<SharedIndex>,
    /// Each configured account's `p_source_*` fields.
    sources: HashMap<String, Source>,
    metrics: NormalizerMetrics,
    clock: Clock,
    /// Pages normalized at once: one per core.
    side_by_side: usize,
}

/// A raw page pulled, and its normalization under way on a blocking thread.
struct InFlight {
    msg: jetstream::Message,
    started_at: Instant,
    /// `None` for a page on a subject it cannot be processed for (acked and skipped).
    work: Option<(RawPage, JoinHandle<Normalized>)>,
}

/// What the subject and headers of a raw page say.
struct RawPage {
    account: AccountName,
    feed: Feed,
    raw_id: String,
    /// A consumer span (messaging conventions) under the fetcher's publish of the page.
    span: tracing::Span,
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
        let mut idle = IdleTrim::default();
        while !shutdown.is_cancelled() {
            let pulled = consumer
                .batch()
                .max_messages(PULL_PAGES)
                .max_bytes(PULL_BYTES)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let batch = match pulled {
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
            if self.work_through(batch).await == 0 {
                idle.idle();
            } else {
                idle.busy();
            }
        }
        Ok(())
    }

    /// Works through one pull: up to `side_by_side` pages normalized at once as they arrive,
    /// each published and acked in the order it came. Reads the pull to its end even after
    /// SIGTERM: a page the server handed out and this loop left unread would be delivered
    /// again after the ack wait. Returns how many pages it had.
    async fn work_through(&self, mut batch: jetstream::consumer::pull::Batch) -> usize {
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut pulled = 0;
        let mut ended = false;
        loop {
            let can_pull = !ended && in_flight.len() < self.side_by_side;
            tokio::select! {
                // Start every page that is there before finishing one: the cores stay busy
                // while a page waits for its publish.
                biased;
                next = tokio::time::timeout(PULL_EXPIRES * 2, batch.next()), if can_pull => match next {
                    Ok(Some(Ok(msg))) => {
                        pulled += 1;
                        in_flight.push_back(self.start(msg));
                    }
                    Ok(Some(Err(e))) => tracing::debug!(error = %e, "pull ended"),
                    Ok(None) | Err(_) => ended = true,
                },
                normalized = front_normalized(&mut in_flight), if !in_flight.is_empty() => {
                    if let Some(page) = in_flight.pop_front() {
                        self.finish(page, normalized).await;
                    }
                }
                else => break,
            }
        }
        pulled
    }

    /// Reads what a raw page is and starts normalizing it on a blocking thread.
    fn start(&self, msg: jetstream::Message) -> InFlight {
        let started_at = Instant::now();
        let work = self.open(&msg).map(|raw| {
            let handle = self.normalize_in_background(&raw, msg.payload.clone());
            (raw, handle)
        });
        InFlight {
            msg,
            started_at,
            work,
        }
    }

    fn normalize_in_background(&self, raw: &RawPage, body: Bytes) -> JoinHandle<Normalized> {
        let index = Arc::clone(&self.index);
        let source = self
            .sources
            .get(raw.account.as_str())
            .cloned()
            .unwrap_or_else(|| Source::for_account(raw.account.as_str(), None, None));
        let (feed, now, span) = (raw.feed, self.clock.now(), raw.span.clone());
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| index.normalize(&body, feed, &source, now))
        })
    }

    /// The page's subject and headers, or `None` (logged) when it cannot be processed.
    fn open(&self, msg: &jetstream::Message) -> Option<RawPage> {
        let Some((account, feed)) = names::parse_feed_subject(&msg.subject, "raw") else {
            tracing::error!(subject = %msg.subject, "raw page on an unexpected subject; skipped");
            return None;
        };
        let Ok(account) = AccountName::new(account) else {
            tracing::error!(subject = %msg.subject, "raw page for an invalid account name; skipped");
            return None;
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
        Some(RawPage {
            account,
            feed,
            raw_id,
            span,
        })
    }

    /// Publishes a normalized page and acks it, or naks it for a retry when it could not be
    /// published.
    async fn finish(&self, page: InFlight, normalized: Option<Result<Normalized, JoinError>>) {
        let InFlight {
            msg,
            started_at,
            work,
        } = page;
        let outcome = match (work, normalized) {
            (Some((raw, _)), Some(Ok(normalized))) => self
                .publish_page(&msg, &raw, normalized)
                .instrument(raw.span.clone())
                .await
                .map_err(|e| e.to_string()),
            (Some(_), _) => Err("normalizing the page stopped unexpectedly".to_owned()),
            (None, _) => Ok(()),
        };
        match outcome {
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

    /// At the page's turn: normalized again if an earlier page taught a user meanwhile, its
    /// learned users applied, its records and dead letters published.
    async fn publish_page(
        &self,
        msg: &jetstream::Message,
        raw: &RawPage,
        normalized: Normalized,
    ) -> Result<(), BusError> {
        let mut page = if normalized.version == self.index.version() {
            normalized.page
        } else {
            self.metrics.renormalized.inc();
            match self.normalize_in_background(raw, msg.payload.clone()).await {
                Ok(again) => again.page,
                Err(_) => normalized.page,
            }
        };
        self.index.learn(&page.learned);
        let ndjson = Bytes::from(std::mem::take(&mut page.ndjson));
        publish(
            &self.bus,
            &self.metrics,
            &raw.account,
            raw.feed,
            &raw.raw_id,
            &page,
            &ndjson,
        )
        .await?;
        self.metrics.count_page(&raw.account, raw.feed, &page);
        learn(&self.lookups, &page.learned).await;
        Ok(())
    }
}

/// The normalization of the first page in flight, once it is done (`None` for a page that is
/// skipped, at once).
async fn front_normalized(
    in_flight: &mut VecDeque<InFlight>,
) -> Option<Result<Normalized, JoinError>> {
    match in_flight.front_mut().and_then(|f| f.work.as_mut()) {
        Some((_, handle)) => Some(handle.await),
        None => None,
    }
}
