//! Getting one batch into a SIEM, whatever it takes.
//!
//! Records go in requests of at most `max_events` / `max_bytes`. Transient failures are retried
//! with exponential backoff and full jitter (honouring `Retry-After`) for as long as it takes,
//! while the bus messages are kept in progress so JetStream does not hand them to another
//! replica. Records the SIEM refuses are isolated by halving the request until the refused
//! record stands alone, and only that record goes to the dead-letter queue. The bus messages
//! are acknowledged after every record in them was accepted or dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

use oprelay_bus::async_nats::jetstream::{self, AckKind};
use oprelay_bus::{Bus, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Feed};
use oprelay_service::{Backoff, CancellationToken};

use crate::metrics::{ForwarderMetrics, ReasonLabels, SinkLabels};
use crate::sinks::{AnySink, ErrorKind, Outcome};
use oprelay_format::Record;

/// Everything one sink's deliveries share.
pub struct SinkCtx {
    pub name: String,
    pub sink: AnySink,
    pub bus: Bus,
    pub max_events: usize,
    pub max_bytes: usize,
    pub metrics: ForwarderMetrics,
    pub labels: SinkLabels,
    /// Progress acks keep a message ours while we retry; sent well inside the ack wait.
    pub progress_every: Duration,
    /// Retry bounds for refusals only an operator can fix (see [`crate::Options`]).
    pub operator_retry: (Duration, Duration),
}

/// Bus messages and the records they hold (records that could not be rendered are carried as
/// dead letters from the start).
#[derive(Default)]
pub struct Batch {
    pub messages: Vec<jetstream::Message>,
    /// One `deliver` span per message, a child of the page's trace (from `traceparent`);
    /// each ends when the batch does.
    pub spans: Vec<tracing::Span>,
    pub records: Vec<Record>,
    pub unreadable: Vec<Unreadable>,
    pub bytes: usize,
}

/// A line of an event batch that is not a normalized record; it goes to the DLQ as it is.
pub struct Unreadable {
    pub body: Vec<u8>,
    pub id: String,
    pub account: String,
    pub feed: String,
    pub why: String,
}

#[derive(Debug)]
pub struct Stopped;

/// The wait before attempt `attempt + 1` (the first failure is attempt 1): full jitter under
/// an exponential bound, never under 50 ms.
fn backoff(attempt: u32, (base, cap): (Duration, Duration)) -> Duration {
    Backoff::full_jitter(base, cap)
        .at_least(Duration::from_millis(50))
        .wait(attempt)
}

/// Whether the refusals of one request's records say the SIEM refuses *requests*: every
/// record of a request of several was refused alone, none was delivered, and all for the same
/// reason. Then the reason is returned; dead-lettering would empty the backlog into the DLQ.
fn request_refused(
    records: usize,
    delivered: usize,
    refused: &[(usize, String)],
) -> Option<String> {
    let (_, first) = refused.first()?;
    let same = refused.iter().all(|(_, why)| why == first);
    (records >= 2 && delivered == 0 && refused.len() == records && same).then(|| first.clone())
}

/// Splits record indices into requests within the size limits.
fn chunks(records: &[Record], max_events: usize, max_bytes: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for (i, r) in records.iter().enumerate() {
        if !cur.is_empty() && (cur.len() >= max_events || bytes + r.body.len() > max_bytes) {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += r.body.len() + 1;
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Bounds of transient retries: quick at first, at most a minute apart.
const TRANSIENT: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));

impl SinkCtx {
    fn retry_bounds(&self, kind: ErrorKind) -> (Duration, Duration) {
        match kind {
            ErrorKind::NeedsOperator => self.operator_retry,
            _ => TRANSIENT,
        }
    }

    /// Counts a failed attempt under `reason`.
    fn count_failure(&self, reason: &str) {
        self.metrics
            .failures
            .get_or_create(&ReasonLabels {
                sink: self.name.clone(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Sleeps `d` unless shutdown comes first.
    async fn wait(&self, d: Duration, shutdown: &CancellationToken) -> Result<(), Stopped> {
        tokio::select! {
            _ = shutdown.cancelled() => Err(Stopped),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Publishes a refused record to `op.dlq.forward.{account}.{feed}`, naming the sink in
    /// `Oprelay-Sink` and the SIEM's answer in `Oprelay-Error`; retried until it is stored,
    /// because a dead letter is the record's last copy once acked. The body is the normalized
    /// record, so `oprelay dlq replay` can send it back through this sink's rendering.
    async fn dead_letter(
        &self,
        body: &[u8],
        id: &str,
        account: &str,
        feed: &str,
        why: &str,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        tracing::warn!(sink = %self.name, reason = %why, "record refused by the SIEM; dead-lettered");
        self.metrics.dead_letters.get_or_create(&self.labels).inc();
        let mut attempt = 0;
        loop {
            let subject = match AccountName::new(account)
                .ok()
                .zip(feed.parse::<Feed>().ok())
            {
                Some((a, f)) => names::dlq_subject("forward", &a, f),
                None => names::dlq_subject_unattributed("forward", &self.name),
            };
            let msg = Outgoing::new(
                subject,
                format!("dlq:forward:{}:{id}", self.name),
                body.to_vec(),
            )
            .header(header::STAGE, "forward")
            .header(header::ERROR, why.replace(['\r', '\n'], " "))
            .header(header::ACCOUNT, account)
            .header(header::FEED, feed)
            .header(header::SINK, &self.name)
            .header(header::SCHEMA, names::schema::DEAD_LETTER);
            match self.bus.publish(msg).await {
                Ok(_) => {
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(sink = %self.name, error = %e, "cannot store a dead letter yet");
                    attempt += 1;
                    self.wait(backoff(attempt, TRANSIENT), shutdown).await?;
                }
            }
        }
    }

    /// Delivers the batch, then acknowledges its messages. `Err(Stopped)` when `shutdown`
    /// (the end of the shutdown grace) comes first: the messages are given back (nak).
    /// Meanwhile the messages are kept "in progress", however long the SIEM takes, so
    /// JetStream does not redeliver them to another replica.
    pub async fn deliver(&self, batch: Batch, shutdown: &CancellationToken) -> Result<(), Stopped> {
        let work = self.deliver_records(&batch, shutdown);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(self.progress_every);
        tick.tick().await;
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => {
                    for m in &batch.messages {
                        let _ = m.ack_with(AckKind::Progress).await;
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                for m in &batch.messages {
                    if let Err(e) = m.ack().await {
                        tracing::warn!(sink = %self.name, error = %e, "ack failed; the batch may be redelivered");
                    }
                }
            }
            // Abandoned at shutdown: give the messages back now, so the next replica (or this
            // one after its restart) takes them at once instead of after the ack wait.
            Err(Stopped) => {
                tracing::info!(sink = %self.name, messages = batch.messages.len(), "shutting down: batch given back undelivered");
                for m in &batch.messages {
                    let _ = m.ack_with(AckKind::Nak(None)).await;
                }
            }
        }
        result
    }

    async fn deliver_records(
        &self,
        batch: &Batch,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let started = Instant::now();
        for u in &batch.unreadable {
            self.dead_letter(&u.body, &u.id, &u.account, &u.feed, &u.why, shutdown)
                .await?;
        }
        for chunk in chunks(&batch.records, self.max_events, self.max_bytes) {
            self.deliver_chunk(batch, chunk, shutdown).await?;
        }
        self.metrics
            .batch_seconds
            .get_or_create(&self.labels)
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Delivers one request's worth of records. Records refused one by one are dead-lettered
    /// only when the refusals are about them: when every record of the request was refused
    /// alone for the same reason, the SIEM is refusing requests, not records (a read-only
    /// index, a proxy in the way), and the records wait for an operator instead.
    async fn deliver_chunk(
        &self,
        batch: &Batch,
        chunk: Vec<usize>,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        let mut attempt = 0u32;
        loop {
            let (delivered, refused) = self.send_halving(batch, chunk.clone(), shutdown).await?;
            if let Some(why) = request_refused(chunk.len(), delivered, &refused) {
                self.count_failure("request_refused");
                attempt += 1;
                let wait = backoff(attempt, self.operator_retry);
                tracing::error!(
                    sink = %self.name,
                    reason = %why,
                    records = chunk.len(),
                    retry_in = ?wait,
                    "the SIEM refuses every record of the request for the same reason: a \
                     configuration problem, not bad records; keeping them and retrying"
                );
                self.wait(wait, shutdown).await?;
                continue;
            }
            if refused.is_empty() {
                return Ok(());
            }
            // Others were accepted, so these refusals look like theirs. Ask once more before
            // dead-lettering: a SIEM fixed half-way through the halving accepts them now.
            let again: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
            let (_, refused) = self.send_halving(batch, again, shutdown).await?;
            for (i, why) in refused {
                let r = &batch.records[i];
                self.dead_letter(
                    r.kept(),
                    &r.row_id,
                    &r.account,
                    r.feed.as_str(),
                    &why,
                    shutdown,
                )
                .await?;
            }
            return Ok(());
        }
    }

    /// Sends `seg`, halving it on a rejection until the refused records stand alone. Returns
    /// how many records were delivered and the records refused alone, with the SIEM's answer
    /// (not dead-lettered yet). Records the SIEM's reply names itself (a mapping error in a
    /// `_bulk` item, HEC's `invalid-event-number`) are dead-lettered at once.
    async fn send_halving(
        &self,
        batch: &Batch,
        seg: Vec<usize>,
        shutdown: &CancellationToken,
    ) -> Result<(usize, Vec<(usize, String)>), Stopped> {
        let mut stack = vec![seg];
        let mut delivered = 0usize;
        let mut refused = Vec::new();
        let mut attempt = 0u32;
        'segments: while let Some(mut seg) = stack.pop() {
            loop {
                if shutdown.is_cancelled() {
                    return Err(Stopped);
                }
                let refs: Vec<&Record> = seg.iter().map(|i| &batch.records[*i]).collect();
                // The SIEM request's client span hangs off the batch's first `deliver` span
                // (a request serves many messages; the first one's trace carries it).
                let parent = batch
                    .spans
                    .first()
                    .cloned()
                    .unwrap_or_else(tracing::Span::none);
                let result = tokio::select! {
                    _ = shutdown.cancelled() => return Err(Stopped),
                    r = self.sink.send(&refs).instrument(parent) => r,
                };
                match result {
                    Ok(Outcome::Delivered) => {
                        self.count_delivered(&refs);
                        delivered += refs.len();
                        attempt = 0;
                        continue 'segments;
                    }
                    Ok(Outcome::Partial { retry, rejected }) => {
                        let (done, left) = self
                            .settle_partial(batch, &seg, &retry, &rejected, shutdown)
                            .await?;
                        delivered += done;
                        if left.is_empty() {
                            continue 'segments;
                        }
                        seg = left;
                        tracing::debug!(sink = %self.name, retry = seg.len(), "partial delivery; retrying the rest");
                        self.count_failure("partial");
                        attempt += 1;
                        self.wait(backoff(attempt, TRANSIENT), shutdown).await?;
                    }
                    Err(e) if e.kind == ErrorKind::Rejected => {
                        self.count_failure(e.label());
                        if seg.len() == 1 {
                            refused.push((seg[0], e.message));
                            continue 'segments;
                        }
                        let second = seg.split_off(seg.len() / 2);
                        stack.push(second);
                        stack.push(seg);
                        continue 'segments;
                    }
                    Err(e) => {
                        self.count_failure(e.label());
                        attempt += 1;
                        let wait = e
                            .retry_after
                            .unwrap_or_else(|| backoff(attempt, self.retry_bounds(e.kind)));
                        tracing::warn!(sink = %self.name, error = %e, retry_in = ?wait, attempt, "delivery failed; will retry");
                        self.wait(wait, shutdown).await?;
                    }
                }
            }
        }
        Ok((delivered, refused))
    }

    /// After a partial success: dead-letters the records the SIEM refused by name, counts the
    /// delivered ones, and returns how many were delivered and the records (batch indexes) to
    /// send again.
    async fn settle_partial(
        &self,
        batch: &Batch,
        seg: &[usize],
        retry: &[usize],
        rejected: &[(usize, String)],
        shutdown: &CancellationToken,
    ) -> Result<(usize, Vec<usize>), Stopped> {
        for (j, why) in rejected {
            if let Some(r) = seg.get(*j).map(|i| &batch.records[*i]) {
                self.dead_letter(
                    r.kept(),
                    &r.row_id,
                    &r.account,
                    r.feed.as_str(),
                    why,
                    shutdown,
                )
                .await?;
            }
        }
        let done: Vec<&Record> = seg
            .iter()
            .enumerate()
            .filter(|(j, _)| !retry.contains(j) && !rejected.iter().any(|(r, _)| r == j))
            .map(|(_, i)| &batch.records[*i])
            .collect();
        self.count_delivered(&done);
        let left = retry.iter().filter_map(|j| seg.get(*j).copied()).collect();
        Ok((done.len(), left))
    }

    fn count_delivered(&self, records: &[&Record]) {
        self.metrics
            .records
            .get_or_create(&self.labels)
            .inc_by(records.len() as u64);
        self.metrics
            .bytes
            .get_or_create(&self.labels)
            .inc_by(records.iter().map(|r| r.body.len() as u64).sum());
        if let Some(newest) = records.iter().filter_map(|r| r.parse_time).max() {
            let lag = (time::OffsetDateTime::now_utc() - newest)
                .as_seconds_f64()
                .max(0.0);
            self.metrics
                .lag_seconds
                .get_or_create(&self.labels)
                .set(lag);
        }
    }
}

pub type Shared = Arc<SinkCtx>;

#[cfg(test)]
mod tests {
    use super::request_refused;

    fn refusals(whys: &[&str]) -> Vec<(usize, String)> {
        whys.iter()
            .enumerate()
            .map(|(i, w)| (i, (*w).to_owned()))
            .collect()
    }

    #[test]
    fn every_record_refused_alike_is_a_refused_request() {
        let all = refusals(&["HTTP 400: index is read-only"; 4]);
        assert_eq!(
            request_refused(4, 0, &all).as_deref(),
            Some("HTTP 400: index is read-only")
        );
    }

    #[test]
    fn refusals_that_differ_or_spare_a_record_are_about_records() {
        assert_eq!(
            request_refused(4, 0, &refusals(&["a", "a", "b", "a"])),
            None
        );
        assert_eq!(request_refused(4, 1, &refusals(&["a", "a", "a"])), None);
        assert_eq!(request_refused(4, 2, &refusals(&["a", "a"])), None);
        assert_eq!(request_refused(4, 4, &[]), None);
    }

    #[test]
    fn a_request_of_one_record_cannot_tell_and_dead_letters() {
        assert_eq!(request_refused(1, 0, &refusals(&["a"])), None);
    }
}
