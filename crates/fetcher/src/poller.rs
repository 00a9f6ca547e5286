//! The polling loop of one (account, feed): the heart of the delivery contract.
//!
//! Order per page: request → publish the page to `OP_RAW` and wait for the JetStream ack →
//! write the cursor with compare-and-set. A crash anywhere replays at most the request whose
//! cursor was not written; a replayed page with the same answer carries the same dedup id
//! (derived from the request and the answer), so JetStream drops it, and one whose answer grew
//! is published whole (its first events twice, which idempotent sinks absorb). The cursor
//! write is compare-and-set on the revision read,
//! so two replicas that both believe they own the feed cannot fork or rewind it.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::Instrument;

use oprelay_bus::{Bus, BusError, JsonKv, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{
    AccountName, CursorRequest, CursorState, Feed, FeedStatus, FetchErrorKind, Secret,
};
use oprelay_service::config::{AccountConfig, SecretSource};
use oprelay_service::{CancellationToken, Clock};

use crate::api::{ApiError, EventsApi, FetchedPage, Recovery};
use crate::backoff::{Backoff, BackoffPolicy};
use crate::budget::Budget;
use crate::metrics::{FeedLabels, FetcherMetrics, RequestLabels};

/// What every feed of one account shares.
pub struct Account {
    pub name: AccountName,
    pub config: AccountConfig,
    pub api: EventsApi,
    pub token: SecretSource,
    pub budget: Budget,
    pub token_expires_at: Option<OffsetDateTime>,
}

/// The stores and tools a poller works with.
#[derive(Clone)]
pub struct Deps {
    pub bus: Bus,
    pub cursors: JsonKv,
    pub status: JsonKv,
    pub clock: Clock,
    pub metrics: FetcherMetrics,
    pub backoff: BackoffPolicy,
}

pub struct Poller {
    account: Arc<Account>,
    feed: Feed,
    deps: Deps,
    key: String,
    labels: FeedLabels,
    backoff: Backoff,
    status: FeedStatus,
}

/// What a poller knows of its lease: until when it is surely held. The fetcher's lease rounds
/// push each renewal's expiry. A poller that finds its lease near expiry stops before it
/// publishes or writes a cursor, so a replica that was frozen (or lost the bus) past its TTL
/// cannot act for a feed another replica has taken over.
pub struct LeaseView {
    until: watch::Receiver<OffsetDateTime>,
    clock: Clock,
    margin: Duration,
}

impl LeaseView {
    pub fn new(until: watch::Receiver<OffsetDateTime>, clock: Clock, margin: Duration) -> Self {
        LeaseView {
            until,
            clock,
            margin,
        }
    }

    /// Whether the lease is held with at least the margin to spare.
    pub fn valid(&self) -> bool {
        self.clock.now() + self.margin < *self.until.borrow()
    }
}

/// Why a drain ended early.
enum Stop {
    Shutdown,
    LeaseLost,
}

/// The dedup ids of a page's bus parts. A page is identified by the request *and* the answer:
/// re-sending a request after a crash yields the same id when the answer is the same (JetStream
/// drops the replay), but a different one when the feed's tail grew in between, so the longer
/// page is published rather than dropped as a duplicate of the shorter. A page that fits one
/// bus message has the id alone; a bigger one `{id}:{part}`.
pub fn page_msg_ids(
    account: &AccountName,
    feed: Feed,
    request: &CursorRequest,
    body: &[u8],
    parts: usize,
) -> Vec<String> {
    let mut digest = Sha256::new();
    digest.update(serde_json::to_vec(request).unwrap_or_default());
    digest.update([0]);
    digest.update(body);
    let base = format!(
        "raw:{account}:{feed}:{}",
        hex::encode(&digest.finalize()[..16])
    );
    if parts == 1 {
        return vec![base];
    }
    (0..parts).map(|i| format!("{base}:{i}")).collect()
}

impl Poller {
    pub fn new(account: Arc<Account>, feed: Feed, deps: Deps) -> Self {
        let key = names::feed_key(&account.name, feed);
        let labels = FeedLabels {
            account: account.name.to_string(),
            feed: feed.to_string(),
        };
        Poller {
            backoff: Backoff::new(deps.backoff),
            status: FeedStatus {
                token_expires_at: account.token_expires_at,
                ..FeedStatus::default()
            },
            account,
            feed,
            deps,
            key,
            labels,
        }
    }

    /// Polls until `stop` fires or the lease nears its expiry.
    pub async fn run(mut self, lease: LeaseView, shutdown: CancellationToken) {
        let span = tracing::info_span!("feed", account = %self.account.name, feed = %self.feed);
        async move {
            // Keep what earlier runs recorded (last event, expiry) rather than blanking it.
            let key = names::fetch_status_key(&self.account.name, self.feed);
            if let Ok(Some(prev)) = self.deps.status.get::<FeedStatus>(&key).await {
                self.status = FeedStatus {
                    token_expires_at: self
                        .account
                        .token_expires_at
                        .or(prev.value.token_expires_at),
                    ..prev.value
                };
            }
            tracing::info!("polling");
            loop {
                match self.cycle(&lease, &shutdown).await {
                    Ok(()) => {}
                    Err(Stop::Shutdown) => break,
                    Err(Stop::LeaseLost) => {
                        tracing::info!("lease not renewed in time; stopping before acting on it");
                        break;
                    }
                }
                let interval = self.account.config.poll_interval.0;
                let jitter = rand::rng().random_range(0.9..1.1);
                let wait = interval.mul_f64(jitter);
                if self.wait(wait, &lease, &shutdown).await.is_err() {
                    break;
                }
            }
            tracing::info!("stopped polling");
        }
        .instrument(span)
        .await
    }

    /// Sleeps on the clock unless shutdown comes first. A lease that expires meanwhile is
    /// noticed before the next request.
    async fn wait(
        &self,
        d: Duration,
        lease: &LeaseView,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        if !lease.valid() {
            return Err(Stop::LeaseLost);
        }
        tokio::select! {
            _ = shutdown.cancelled() => Err(Stop::Shutdown),
            _ = self.deps.clock.sleep(d) => Ok(()),
        }
    }

    /// One poll: read the cursor, then drain while `has_more`.
    async fn cycle(&mut self, lease: &LeaseView, shutdown: &CancellationToken) -> Result<(), Stop> {
        loop {
            match self.drain(lease, shutdown).await {
                Ok(()) => return Ok(()),
                Err(DrainError::Stop(s)) => return Err(s),
                Err(DrainError::Retry(wait)) => self.wait(wait, lease, shutdown).await?,
            }
        }
    }

    async fn drain(
        &mut self,
        lease: &LeaseView,
        shutdown: &CancellationToken,
    ) -> Result<(), DrainError> {
        let (mut request, mut revision, mut state) = self.load_cursor().await?;
        loop {
            if shutdown.is_cancelled() {
                return Err(DrainError::Stop(Stop::Shutdown));
            }
            if !lease.valid() {
                return Err(DrainError::Stop(Stop::LeaseLost));
            }
            let token = match self.account.token.read() {
                Ok(t) => t,
                Err(e) => {
                    return Err(self
                        .failed(
                            format!("cannot read the token: {e}"),
                            FetchErrorKind::TokenUnreadable,
                            Recovery::Slow,
                        )
                        .await)
                }
            };
            if !self.account.budget.acquire(shutdown).await {
                return Err(DrainError::Stop(Stop::Shutdown));
            }
            // One trace per page: a root span here, carried on the bus in `traceparent` through
            // the normalizer to each sink's delivery.
            let page_span = tracing::info_span!(
                parent: None,
                "fetch page",
                account = %self.account.name,
                feed = %self.feed,
                events = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            oprelay_service::telemetry::record_trace_id(&page_span);
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => return Err(DrainError::Stop(Stop::Shutdown)),
                r = self.fetch(&request, &token).instrument(page_span.clone()) => r,
            };
            let page = match fetched {
                Ok(page) => page,
                Err(e) => {
                    // Logged inside the page's span: the log line carries the trace id of
                    // the failed request.
                    let kind = e.kind();
                    let recovery = e.recovery();
                    if matches!(e, ApiError::BadRequest { .. }) {
                        page_span.in_scope(
                            || tracing::error!(error = %e, "the Events API refused the request"),
                        );
                    }
                    let failed = self.failed(e.to_string(), kind, recovery);
                    return Err(failed.instrument(page_span).await);
                }
            };
            let fetched_at = self.deps.clock.now();
            page_span.record("events", page.count);
            if page.count > 0 {
                // A page bigger than one bus message goes as consecutive parts; the cursor
                // is written only after every part is acknowledged.
                let split = crate::api::split_page(&page.body, self.deps.bus.max_body());
                let ids = page_msg_ids(
                    &self.account.name,
                    self.feed,
                    &request,
                    &page.body,
                    split.parts.len(),
                );
                // (message, whether it is a part of the page rather than a dead letter)
                let dead_letters = split.oversized.iter().map(|(index, item)| {
                    (self.oversized_dead_letter(&ids[0], *index, item), false)
                });
                let raw_parts = split.parts.into_iter().zip(ids.iter()).map(|(part, id)| {
                    let msg = Outgoing::new(
                        names::raw_subject(&self.account.name, self.feed),
                        id.clone(),
                        part,
                    )
                    .header(header::ACCOUNT, &self.account.name)
                    .header(header::FEED, self.feed)
                    .header(header::SCHEMA, names::schema::RAW_PAGE)
                    .header(
                        header::FETCHED_AT,
                        fetched_at.format(&Rfc3339).unwrap_or_default(),
                    );
                    (msg, true)
                });
                let messages: Vec<(Outgoing, bool)> = dead_letters.chain(raw_parts).collect();
                for (msg, to_raw) in messages {
                    if !lease.valid() {
                        return Err(DrainError::Stop(Stop::LeaseLost));
                    }
                    let published = tokio::select! {
                        _ = shutdown.cancelled() => return Err(DrainError::Stop(Stop::Shutdown)),
                        r = self.deps.bus.publish(msg).instrument(page_span.clone()) => r,
                    };
                    match published {
                        Ok(ack) if ack.duplicate => {
                            tracing::info!(seq = ack.sequence, "page was already published (replay after a restart); not duplicated");
                        }
                        Ok(_) if to_raw => {
                            self.deps.metrics.pages.get_or_create(&self.labels).inc();
                        }
                        Ok(_) => {}
                        Err(e) => {
                            return Err(self
                                .failed(
                                    format!("publish to OP_RAW failed: {e}"),
                                    FetchErrorKind::Publish,
                                    Recovery::Backoff,
                                )
                                .await);
                        }
                    }
                }
                self.deps
                    .metrics
                    .events
                    .get_or_create(&self.labels)
                    .inc_by(page.count as u64);
                self.status.last_event_at = Some(fetched_at);
                if let Some(t) = page.max_event_time {
                    let lag = (fetched_at - t).as_seconds_f64().max(0.0);
                    self.deps
                        .metrics
                        .lag_seconds
                        .get_or_create(&self.labels)
                        .set(lag);
                    let newest = self
                        .deps
                        .metrics
                        .last_event_timestamp
                        .get_or_create(&self.labels);
                    // Pages of a feed come in time order, but never let the gauge step back.
                    newest.set(newest.get().max(unix_seconds(t)));
                }
            }
            // The page is acknowledged (or empty): now, and only now, advance the cursor — if
            // the lease still holds. (Should the lease lapse right after this check, the
            // compare-and-set still refuses a cursor another replica has moved.)
            let moved = state.cursor != page.cursor;
            if moved && !lease.valid() {
                return Err(DrainError::Stop(Stop::LeaseLost));
            }
            if moved {
                let next = CursorState {
                    cursor: page.cursor.clone(),
                    start_time: None,
                    updated_at: fetched_at,
                    pages: state.pages + u64::from(page.count > 0),
                    events: state.events + page.count as u64,
                };
                match self
                    .deps
                    .cursors
                    .compare_and_set(&self.key, &next, revision)
                    .await
                {
                    Ok(rev) => {
                        revision = Some(rev);
                        state = next;
                    }
                    Err(BusError::Conflict { .. }) => {
                        tracing::warn!("cursor changed under us (another replica?); re-reading it");
                        return Err(DrainError::Retry(Duration::from_millis(100)));
                    }
                    Err(e) => {
                        return Err(self
                            .failed(
                                format!("cursor write failed: {e}"),
                                FetchErrorKind::CursorWrite,
                                Recovery::Backoff,
                            )
                            .await)
                    }
                }
            }
            self.succeeded(fetched_at).await;
            if !page.has_more {
                return Ok(());
            }
            request = CursorRequest::Cursor {
                cursor: page.cursor,
            };
        }
    }

    /// A dead letter for an event bigger than any bus message: its first bytes (as many as a
    /// message holds) and the reason, on `op.dlq.fetch.{account}.{feed}`.
    fn oversized_dead_letter(&self, page_id: &str, index: usize, item: &[u8]) -> Outgoing {
        let limit = self.deps.bus.max_body();
        let reason = format!(
            "event {index} of the page is {} bytes, more than the bus's largest message \
             ({limit} bytes); this dead letter holds its first {limit} bytes",
            item.len()
        );
        tracing::error!(%reason, "event too big for the bus; dead-lettered");
        Outgoing::new(
            names::dlq_subject("fetch", &self.account.name, self.feed),
            format!("dlq:fetch:{page_id}:{index}"),
            item[..item.len().min(limit)].to_vec(),
        )
        .header(header::STAGE, "fetch")
        .header(header::ERROR, reason)
        .header(header::ACCOUNT, &self.account.name)
        .header(header::FEED, self.feed)
        .header(header::SCHEMA, names::schema::DEAD_LETTER)
    }

    async fn fetch(
        &self,
        request: &CursorRequest,
        token: &Secret,
    ) -> Result<FetchedPage, ApiError> {
        let result = self.account.api.fetch(self.feed, request, token).await;
        let status = match &result {
            Ok(_) => "200".to_owned(),
            Err(ApiError::RateLimited { .. }) => "429".to_owned(),
            Err(ApiError::TokenRejected { status, .. }) => status.to_string(),
            Err(ApiError::BadRequest { .. }) => "400".to_owned(),
            Err(ApiError::NotFound { .. }) => "404".to_owned(),
            Err(ApiError::Server { status, .. }) | Err(ApiError::Unexpected { status, .. }) => {
                status.to_string()
            }
            Err(e) => e.kind().to_string(),
        };
        self.deps
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                account: self.labels.account.clone(),
                feed: self.labels.feed.clone(),
                status,
            })
            .inc();
        result
    }

    /// The request to send: the stored cursor, or a reset from the stored start time. A feed
    /// seen for the first time gets its start time fixed in `OP_CURSORS` before the first
    /// request, so a restart re-sends the identical reset.
    async fn load_cursor(
        &mut self,
    ) -> Result<(CursorRequest, Option<u64>, CursorState), DrainError> {
        let current = match self.deps.cursors.get::<CursorState>(&self.key).await {
            Ok(c) => c,
            Err(e) => {
                return Err(self
                    .failed(
                        format!("cursor read failed: {e}"),
                        FetchErrorKind::CursorRead,
                        Recovery::Backoff,
                    )
                    .await)
            }
        };
        let limit = Some(self.account.config.page_size);
        match current {
            Some(v) if !v.value.cursor.is_empty() => Ok((
                CursorRequest::Cursor {
                    cursor: v.value.cursor.clone(),
                },
                Some(v.revision),
                v.value,
            )),
            Some(v) => Ok((
                CursorRequest::Reset {
                    limit,
                    start_time: v.value.start_time.clone(),
                    end_time: None,
                },
                Some(v.revision),
                v.value,
            )),
            None => {
                let now = self.deps.clock.now();
                let start = self
                    .account
                    .config
                    .start_time()
                    .unwrap_or(now - Duration::from_secs(3600));
                let state = CursorState {
                    cursor: String::new(),
                    start_time: Some(start.format(&Rfc3339).unwrap_or_default()),
                    updated_at: now,
                    pages: 0,
                    events: 0,
                };
                match self
                    .deps
                    .cursors
                    .compare_and_set(&self.key, &state, None)
                    .await
                {
                    Ok(rev) => Ok((
                        CursorRequest::Reset {
                            limit,
                            start_time: state.start_time.clone(),
                            end_time: None,
                        },
                        Some(rev),
                        state,
                    )),
                    Err(BusError::Conflict { .. }) => {
                        Err(DrainError::Retry(Duration::from_millis(100)))
                    }
                    Err(e) => Err(self
                        .failed(
                            format!("cursor write failed: {e}"),
                            FetchErrorKind::CursorWrite,
                            Recovery::Backoff,
                        )
                        .await),
                }
            }
        }
    }

    async fn failed(
        &mut self,
        error: String,
        kind: FetchErrorKind,
        recovery: Recovery,
    ) -> DrainError {
        let wait = self.backoff.next(recovery);
        let now = self.deps.clock.now();
        self.status.last_poll_at = Some(now);
        self.status.last_error = Some(error.clone());
        self.status.error_kind = Some(kind);
        self.status.consecutive_failures = self.backoff.failures();
        self.deps
            .metrics
            .consecutive_failures
            .get_or_create(&self.labels)
            .set(i64::from(self.backoff.failures()));
        self.deps
            .metrics
            .backoff_seconds
            .get_or_create(&self.labels)
            .set(wait.as_secs_f64());
        tracing::warn!(error = %error, %kind, retry_in = ?wait, failures = self.backoff.failures(), "poll failed");
        self.write_status().await;
        DrainError::Retry(wait)
    }

    async fn succeeded(&mut self, now: OffsetDateTime) {
        if self.backoff.failures() > 0 {
            tracing::info!(
                after_failures = self.backoff.failures(),
                "polling recovered"
            );
        }
        self.backoff.reset();
        self.status.last_poll_at = Some(now);
        self.status.last_success_at = Some(now);
        self.deps
            .metrics
            .last_success_timestamp
            .get_or_create(&self.labels)
            .set(unix_seconds(now));
        self.status.last_error = None;
        self.status.error_kind = None;
        self.status.consecutive_failures = 0;
        self.deps
            .metrics
            .consecutive_failures
            .get_or_create(&self.labels)
            .set(0);
        self.deps
            .metrics
            .backoff_seconds
            .get_or_create(&self.labels)
            .set(0.0);
        self.write_status().await;
    }

    async fn write_status(&self) {
        let key = names::fetch_status_key(&self.account.name, self.feed);
        if let Err(e) = self.deps.status.put(&key, &self.status).await {
            tracing::warn!(error = %e, "cannot record feed status");
        }
    }
}

enum DrainError {
    Stop(Stop),
    /// Wait this long, then start the poll over from the stored cursor.
    Retry(Duration),
}

/// A time as the fractional Unix seconds Prometheus timestamps use.
fn unix_seconds(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}
