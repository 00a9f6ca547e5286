//! What the poller reports about its feed: the `OP_STATUS` row healthwatch and `oprelay
//! status` read, and the metrics of each page, failure and success.

use time::OffsetDateTime;

use oprelay_events::names;
use oprelay_events::FetchErrorKind;

use super::{DrainError, Poller};
use crate::api::{FetchedPage, Recovery};

impl Poller {
    /// The metrics and status of a published page: events, lag, the newest event time.
    pub(super) fn count_page(&mut self, page: &FetchedPage, fetched_at: OffsetDateTime) {
        let m = &self.deps.metrics;
        m.events
            .get_or_create(&self.labels)
            .inc_by(page.count as u64);
        self.status.last_event_at = Some(fetched_at);
        if let Some(t) = page.max_event_time {
            let lag = (fetched_at - t).as_seconds_f64().max(0.0);
            m.lag_seconds.get_or_create(&self.labels).set(lag);
            let newest = m.last_event_timestamp.get_or_create(&self.labels);
            // Pages of a feed come in time order, but never let the gauge step back.
            newest.set(newest.get().max(unix_seconds(t)));
        }
    }

    pub(super) async fn failed(
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

    pub(super) async fn succeeded(&mut self, now: OffsetDateTime) {
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

/// A time as the fractional Unix seconds Prometheus timestamps use.
fn unix_seconds(t: OffsetDateTime) -> f64 {
    t.unix_timestamp_nanos() as f64 / 1e9
}
