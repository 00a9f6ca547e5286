//! The forwarder: `OP_EVENTS` → SIEMs, one durable consumer per sink, so every SIEM progresses
//! on its own and a dead one holds back nothing else.

pub mod delivery;
pub mod format;
pub mod metrics;
pub mod sinks;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use oprelay_bus::async_nats::jetstream;
use oprelay_bus::{header_value, BusError, Need};
use oprelay_events::names::{self, header};
use oprelay_events::Feed;
use oprelay_service::config::SinkConfig;
use oprelay_service::{CancellationToken, Config, Metrics, StartError};

use crate::delivery::{Batch, SinkCtx};
use crate::metrics::{ForwarderMetrics, SinkLabels};
use crate::sinks::{AnySink, BuildError};

pub const SERVICE: &str = "forwarder";

/// Messages (pages) per pull; the delivery splits them into requests of `max_events`.
const PULL_MESSAGES: usize = 16;
/// How long after a pull's `expires` we still wait for its messages (see `worker`). Long
/// enough for messages the server sent just before `expires` to arrive on a busy machine (one
/// cut off is redelivered only after the ack wait), short against async-nats's 5 s fallback.
const PULL_GRACE: Duration = Duration::from_millis(500);
/// After SIGTERM, how long deliveries under way may take before they are abandoned: well
/// inside the 10 s a service has to exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);
/// Where `/healthz`, `/readyz` and `/metrics` listen unless configured.
pub const DEFAULT_LISTEN: std::net::SocketAddr = oprelay_service::admin::default_listen(9463);

#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Sink(#[from] BuildError),
}

/// Whether a sink takes a feed of an account. Its consumer's filter already holds only
/// those; this guards a consumer whose filter an operator has not reconciled yet.
fn wanted(s: &SinkConfig, account: &str, feed: Feed) -> bool {
    s.accounts
        .as_ref()
        .is_none_or(|a| a.iter().any(|x| x.as_str() == account))
        && s.feeds.as_ref().is_none_or(|f| f.contains(&feed))
}

/// What tests and embedders may change; `run` uses the defaults.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bounds of the retry wait when the SIEM refuses for a reason only an operator can fix
    /// (credentials, endpoint, a redirect, a read-only index): full jitter under an exponential
    /// bound from the first to the second.
    pub operator_retry: (Duration, Duration),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            operator_retry: (Duration::from_secs(30), Duration::from_secs(300)),
        }
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ForwarderError> {
    run_with(config, Options::default(), shutdown).await
}

pub async fn run_with(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), ForwarderError> {
    let metrics = Metrics::new();
    let m = ForwarderMetrics::register(&metrics);
    // Build every sink before connecting: a bad sink config fails the start, not the night.
    config.check_sink_files().map_err(StartError::from)?;
    let mut sinks = Vec::new();
    for s in &config.sinks {
        sinks.push((s.clone(), AnySink::build(s)?));
    }
    let mut needs = vec![Need::Stream(names::STREAM_DLQ)];
    needs.extend(
        config
            .sinks
            .iter()
            .map(|s| Need::Consumer(names::sink_consumer(&s.name))),
    );
    let Some(started) =
        oprelay_service::start(&config, SERVICE, &needs, DEFAULT_LISTEN, metrics, &shutdown)
            .await?
    else {
        return Ok(());
    };
    if sinks.is_empty() {
        tracing::warn!("no [[sinks]] configured: nothing to deliver to");
    }
    let ack_wait = config.topology().ack_wait;
    let mut workers = JoinSet::new();
    for (sink_config, sink) in sinks {
        let durable = names::sink_consumer(&sink_config.name);
        let consumer =
            oprelay_bus::pull_consumer(started.bus.jetstream(), names::STREAM_EVENTS, &durable)
                .await?;
        let ctx = Arc::new(SinkCtx {
            name: sink_config.name.clone(),
            sink,
            bus: started.bus.clone(),
            max_events: sink_config.batch.max_events,
            max_bytes: sink_config.batch.max_bytes.0 as usize,
            metrics: m.clone(),
            labels: SinkLabels {
                sink: sink_config.name.clone(),
            },
            progress_every: (ack_wait / 3).max(Duration::from_millis(200)),
            operator_retry: options.operator_retry,
        });
        m.start_sink(&ctx.labels);
        tracing::info!(sink = %sink_config.name, kind = sink_config.kind.as_str(), "sink ready");
        workers.spawn(worker(ctx, sink_config, consumer, shutdown.clone()));
    }
    while let Some(r) = workers.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::error!(error = %e, "sink worker stopped");
        }
    }
    tracing::info!("forwarder stopped");
    Ok(())
}

async fn worker(
    ctx: Arc<SinkCtx>,
    config: SinkConfig,
    consumer: jetstream::consumer::PullConsumer,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let consume_err = |e: Box<dyn std::error::Error + Send + Sync>| BusError::Consume {
        stream: names::STREAM_EVENTS.into(),
        consumer: names::sink_consumer(&config.name),
        source: e,
    };
    let in_flight = Arc::new(Semaphore::new(config.batch.in_flight));
    let mut deliveries = JoinSet::new();
    let mut last_pending_check = tokio::time::Instant::now() - Duration::from_secs(60);
    // Pull only when a delivery slot is free: messages never wait client-side, unacknowledged
    // and unwatched, while the SIEM is slow (they would be redelivered, then sent twice).
    let expires = config.batch.timeout.0.max(Duration::from_millis(100));
    // On SIGTERM: pull no more, let the deliveries under way finish for up to SHUTDOWN_GRACE,
    // then abandon the rest (their messages are given back at once, not after the ack wait).
    let abandon = CancellationToken::new();
    let _abandon_after_grace = tokio::spawn({
        let (shutdown, abandon) = (shutdown.clone(), abandon.clone());
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            abandon.cancel();
        }
    });
    while !shutdown.is_cancelled() {
        if last_pending_check.elapsed() >= Duration::from_secs(5) {
            let mut c = consumer.clone();
            if let Ok(info) = c.info().await {
                ctx.metrics
                    .pending
                    .get_or_create(&ctx.labels)
                    .set(info.num_pending as i64 + info.num_ack_pending as i64);
            }
            last_pending_check = tokio::time::Instant::now();
        }
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let pull = consumer
            .batch()
            .max_messages(PULL_MESSAGES)
            .expires(expires)
            .messages()
            .await;
        let mut pulled = match pull {
            Ok(p) => p,
            Err(e) => {
                let e = consume_err(Box::new(e));
                tracing::warn!(sink = %config.name, error = %e, "pull from OP_EVENTS failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut batch = Batch::default();
        // The server should end a pull that got fewer than PULL_MESSAGES with a timeout
        // status at `expires`. On a saturated machine some pulls ended only at async-nats's own
        // fallback (`expires` + 5 s) instead, and meanwhile the messages already pulled sat
        // unacknowledged, long enough for a 5 s ack wait to redeliver them. So stop at our own
        // deadline and take what has arrived.
        // Read the pull to its end even after SIGTERM: what the server handed out is delivered
        // (or given back), never left to be redelivered after the ack wait.
        let deadline = tokio::time::Instant::now() + expires + PULL_GRACE;
        loop {
            let next = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    while let Some(Some(Ok(m))) = pulled.next().now_or_never() {
                        add(&mut batch, m, &ctx, &config);
                    }
                    break;
                }
                m = pulled.next() => m,
            };
            match next {
                Some(Ok(m)) => add(&mut batch, m, &ctx, &config),
                Some(Err(e)) => tracing::debug!(sink = %config.name, error = %e, "pull ended"),
                None => break,
            }
        }
        if batch.messages.is_empty() {
            continue;
        }
        let ctx = ctx.clone();
        let stop = abandon.clone();
        deliveries.spawn(async move {
            let _permit = permit;
            let _ = ctx.deliver(batch, &stop).await;
        });
        while deliveries.try_join_next().is_some() {}
    }
    while deliveries.join_next().await.is_some() {}
    ctx.sink.close().await;
    // Acks are published without waiting; make sure they left before the process does.
    if let Err(e) = ctx.bus.client().flush().await {
        tracing::warn!(sink = %config.name, error = %e, "could not flush the last acks; those batches will be redelivered");
    }
    Ok(())
}

/// Adds a bus message's records to a batch, rendered in the sink's format, and counts the
/// message when JetStream delivers it again.
fn add(batch: &mut Batch, msg: jetstream::Message, ctx: &SinkCtx, config: &SinkConfig) {
    if msg.info().is_ok_and(|i| i.delivered > 1) {
        ctx.metrics.redelivered.get_or_create(&ctx.labels).inc();
    }
    // Records, or records replayed from the DLQ to one sink (this one, or another: skipped).
    let parsed = match names::parse_replay_subject(&msg.subject) {
        Some((sink, account, feed)) => Some((account.to_owned(), feed, sink == config.name)),
        None => names::parse_feed_subject(&msg.subject, "events")
            .map(|(a, f)| (a.to_owned(), f, wanted(config, a, f))),
    };
    let Some((account, feed, for_us)) = parsed else {
        tracing::error!(subject = %msg.subject, "event batch on an unexpected subject; skipped");
        batch.messages.push(msg);
        return;
    };
    if for_us {
        let msg_id = header_value(msg.headers.as_ref(), header::MSG_ID)
            .unwrap_or("unknown")
            .to_owned();
        let mut start = 0;
        for (i, line) in msg.payload.split(|b| *b == b'\n').enumerate() {
            let range = start..start + line.len();
            start += line.len() + 1;
            if line.is_empty() {
                continue;
            }
            match format::render(line, config.format, &account, feed) {
                Ok(mut r) => {
                    // The normalized line as it arrived (no copy): what a dead letter keeps,
                    // so a replay can render it again for the sink.
                    r.source = msg.payload.slice(range);
                    batch.bytes += r.body.len();
                    batch.records.push(r);
                }
                Err(why) => batch.unreadable.push(delivery::Unreadable {
                    body: line.to_vec(),
                    id: format!("{msg_id}:{i}"),
                    account: account.clone(),
                    feed: feed.to_string(),
                    why: format!("record cannot be rendered for this sink: {why}"),
                }),
            }
        }
    }
    // A consumer span (messaging conventions) under the normalizer's publish; the SIEM
    // requests of the batch are client spans of their own.
    let span = tracing::info_span!(
        "deliver",
        sink = %config.name,
        subject = %msg.subject,
        trace_id = tracing::field::Empty,
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = %msg.subject,
        messaging.consumer.group.name = %names::sink_consumer(&config.name),
    );
    let _ = span.set_parent(oprelay_bus::trace::extract(msg.headers.as_ref()));
    oprelay_service::telemetry::record_trace_id(&span);
    batch.spans.push(span);
    batch.messages.push(msg);
}
