//! One sink's worker: pulls from its durable consumer on `OP_EVENTS` when a delivery slot is
//! free, renders the records in the sink's format, and hands each batch to the delivery
//! (`delivery.rs`), several at once up to `batch.in_flight`.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use oprelay_bus::async_nats::jetstream;
use oprelay_bus::{header_value, BusError};
use oprelay_events::names::{self, header};
use oprelay_events::Feed;
use oprelay_service::config::SinkConfig;
use oprelay_service::memory::IdleTrim;
use oprelay_service::CancellationToken;

use crate::delivery::{self, Batch, SinkCtx};
use oprelay_format as format;

/// Messages (pages) per pull; the delivery splits them into requests of `max_events`.
const PULL_MESSAGES: usize = 16;
/// How long after a pull's `expires` we still wait for its messages (see `pull_batch`). Long
/// enough for messages the server sent just before `expires` to arrive on a busy machine (one
/// cut off is redelivered only after the ack wait), short against async-nats's 5 s fallback.
const PULL_GRACE: Duration = Duration::from_millis(500);
/// After SIGTERM, how long deliveries under way may take before they are abandoned: well
/// inside the 10 s a service has to exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);

/// One sink's loop: pull only when a delivery slot is free, batch what arrived, deliver it in
/// the background; on SIGTERM, finish (or after a grace, abandon) what is under way.
pub(crate) async fn run(
    ctx: Arc<SinkCtx>,
    config: SinkConfig,
    consumer: jetstream::consumer::PullConsumer,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let in_flight = Arc::new(Semaphore::new(config.batch.in_flight));
    let mut deliveries = JoinSet::new();
    let mut last_pending_check = tokio::time::Instant::now() - Duration::from_secs(60);
    // Pull only when a delivery slot is free: messages never wait client-side, unacknowledged
    // and unwatched, while the SIEM is slow (they would be redelivered, then sent twice).
    let expires = config.batch.timeout.0.max(Duration::from_millis(100));
    let abandon = abandon_after_grace(&shutdown);
    let mut idle = IdleTrim::default();
    while !shutdown.is_cancelled() {
        if last_pending_check.elapsed() >= Duration::from_secs(5) {
            record_backlog(&ctx, &consumer).await;
            last_pending_check = tokio::time::Instant::now();
        }
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let batch = match pull_batch(&consumer, expires, &ctx, &config).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(sink = %config.name, error = %e, "pull from OP_EVENTS failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if batch.messages.is_empty() {
            // Nothing came: once the last delivery of a burst is done, give its memory back.
            while deliveries.try_join_next().is_some() {}
            if deliveries.is_empty() {
                idle.idle();
            }
            continue;
        }
        idle.busy();
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

/// On SIGTERM: pull no more, let the deliveries under way finish for up to SHUTDOWN_GRACE,
/// then abandon the rest (their messages are given back at once, not after the ack wait).
fn abandon_after_grace(shutdown: &CancellationToken) -> CancellationToken {
    let abandon = CancellationToken::new();
    tokio::spawn({
        let (shutdown, abandon) = (shutdown.clone(), abandon.clone());
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            abandon.cancel();
        }
    });
    abandon
}

/// The sink's backlog (waiting plus unacknowledged), for `forwarder_pending`.
async fn record_backlog(ctx: &SinkCtx, consumer: &jetstream::consumer::PullConsumer) {
    let mut c = consumer.clone();
    if let Ok(info) = c.info().await {
        ctx.metrics
            .pending
            .get_or_create(&ctx.labels)
            .set(info.num_pending as i64 + info.num_ack_pending as i64);
    }
}

/// Pulls up to PULL_MESSAGES messages and renders their records into a batch.
async fn pull_batch(
    consumer: &jetstream::consumer::PullConsumer,
    expires: Duration,
    ctx: &SinkCtx,
    config: &SinkConfig,
) -> Result<Batch, BusError> {
    let mut pulled = consumer
        .batch()
        .max_messages(PULL_MESSAGES)
        .expires(expires)
        .messages()
        .await
        .map_err(|e| BusError::Consume {
            stream: names::STREAM_EVENTS.into(),
            consumer: names::sink_consumer(&config.name),
            source: Box::new(e),
        })?;
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
                    add(&mut batch, m, ctx, config);
                }
                break;
            }
            m = pulled.next() => m,
        };
        match next {
            Some(Ok(m)) => add(&mut batch, m, ctx, config),
            Some(Err(e)) => tracing::debug!(sink = %config.name, error = %e, "pull ended"),
            None => break,
        }
    }
    Ok(batch)
}

/// Whether a sink takes a feed of an account. Its consumer's filter already holds only
/// those; this guards a consumer whose filter an operator has not reconciled yet.
fn wanted(s: &SinkConfig, account: &str, feed: Feed) -> bool {
    s.accounts
        .as_ref()
        .is_none_or(|a| a.iter().any(|x| x.as_str() == account))
        && s.feeds.as_ref().is_none_or(|f| f.contains(&feed))
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
            // The normalized line as it arrived, shared with the message rather than copied.
            match format::render(msg.payload.slice(range), config.format, &account, feed) {
                Ok(r) => {
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
