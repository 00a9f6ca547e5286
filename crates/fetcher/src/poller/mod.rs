//! The polling loop of one (account, feed): the heart of the delivery contract.
//!
//! Order per page: request → publish the page to `OP_RAW` and wait for the JetStream ack →
//! write the cursor with compare-and-set. A crash anywhere replays at most the request whose
//! cursor was not written; a replayed page with the same answer carries the same dedup id
//! (derived from the request and the answer), so JetStream drops it, and one whose answer grew
//! is published whole (its first events twice, which idempotent sinks absorb). The cursor
//! write is compare-and-set on the revision read,
//! so two replicas that both believe they own the feed cannot fork or rewind it.

mod cursor;
mod publish;
mod report;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::Instrument;

use oprelay_bus::{Bus, JsonKv};
use oprelay_events::names;
use oprelay_events::{AccountName, CursorRequest, Feed, FeedStatus, FetchErrorKind, Secret};
use oprelay_service::config::{AccountConfig, SecretSource};
use oprelay_service::memory::IdleTrim;
use oprelay_service::{CancellationToken, Clock};

use crate::api::{ApiError, EventsApi, FetchedPage, Recovery};
use crate::backoff::{Backoff, BackoffPolicy};
use crate::budget::Budget;
use crate::metrics::{FeedLabels, FetcherMetrics, RequestLabels};
use cursor::StoredCursor;
pub use publish::page_msg_ids;

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
    /// A backlog drained (pages with more behind them) leaves memory to give back once the
    /// feed is caught up.
    idle: IdleTrim,
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
            idle: IdleTrim::default(),
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
                    Ok(()) => {
                        // Caught up: what a backlog left behind is given back.
                        self.idle.idle();
                    }
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

    /// Reads the cursor, then, while the API says there is more: fetch a page → publish it and
    /// wait for JetStream's ack → advance the cursor. A crash anywhere repeats at most the
    /// request whose cursor was not written.
    async fn drain(
        &mut self,
        lease: &LeaseView,
        shutdown: &CancellationToken,
    ) -> Result<(), DrainError> {
        let (mut request, revision, state) = self.load_cursor().await?;
        let mut cursor = StoredCursor { state, revision };
        loop {
            still_ours(lease, shutdown)?;
            let (page, page_span) = self.fetch_page(&request, shutdown).await?;
            let fetched_at = self.deps.clock.now();
            page_span.record("events", page.count);
            if page.count > 0 {
                self.publish_page(&request, &page, fetched_at, lease, shutdown)
                    .instrument(page_span)
                    .await?;
                self.count_page(&page, fetched_at);
            }
            self.advance_cursor(&mut cursor, &page, fetched_at, lease)
                .await?;
            self.succeeded(fetched_at).await;
            if !page.has_more {
                return Ok(());
            }
            self.idle.busy();
            request = CursorRequest::Cursor {
                cursor: page.cursor,
            };
        }
    }

    /// Reads the token, waits for the account's request budget, and asks the API for one
    /// page, under a new root span: one trace per page, carried on the bus in `traceparent`
    /// through the normalizer to each sink's delivery.
    async fn fetch_page(
        &mut self,
        request: &CursorRequest,
        shutdown: &CancellationToken,
    ) -> Result<(FetchedPage, tracing::Span), DrainError> {
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
            r = self.fetch(request, &token).instrument(page_span.clone()) => r,
        };
        match fetched {
            Ok(page) => Ok((page, page_span)),
            Err(e) => {
                // Logged inside the page's span: the log line carries the trace id of the
                // failed request.
                let kind = e.kind();
                let recovery = e.recovery();
                if matches!(e, ApiError::BadRequest { .. }) {
                    page_span.in_scope(
                        || tracing::error!(error = %e, "the Events API refused the request"),
                    );
                }
                let failed = self.failed(e.to_string(), kind, recovery);
                Err(failed.instrument(page_span).await)
            }
        }
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
}

/// Whether the poller may go on: no shutdown, and the feed's lease still held.
fn still_ours(lease: &LeaseView, shutdown: &CancellationToken) -> Result<(), DrainError> {
    if shutdown.is_cancelled() {
        return Err(DrainError::Stop(Stop::Shutdown));
    }
    if !lease.valid() {
        return Err(DrainError::Stop(Stop::LeaseLost));
    }
    Ok(())
}

enum DrainError {
    Stop(Stop),
    /// Wait this long, then start the poll over from the stored cursor.
    Retry(Duration),
}
