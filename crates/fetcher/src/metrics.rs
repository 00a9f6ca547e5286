//! The fetcher's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use oprelay_service::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabels {
    pub account: String,
    pub feed: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub account: String,
    pub feed: String,
    /// HTTP status, or the failure kind when there was no status (`transport`, `malformed`).
    pub status: String,
}

#[derive(Clone, Default)]
pub struct FetcherMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub pages: Family<FeedLabels, Counter>,
    pub events: Family<FeedLabels, Counter>,
    pub lag_seconds: Family<FeedLabels, Gauge<f64, AtomicU64>>,
    pub consecutive_failures: Family<FeedLabels, Gauge>,
    pub backoff_seconds: Family<FeedLabels, Gauge<f64, AtomicU64>>,
    /// Unix time of the newest event fetched; with `lag_seconds` frozen during a silence,
    /// `time() - this` is what grows.
    pub last_event_timestamp: Family<FeedLabels, Gauge<f64, AtomicU64>>,
    /// Unix time of the last successful poll, empty or not: stops moving when polling fails.
    pub last_success_timestamp: Family<FeedLabels, Gauge<f64, AtomicU64>>,
    pub leases_held: Gauge,
}

impl FetcherMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = FetcherMetrics::default();
        metrics.register(
            "fetcher_api_requests",
            "Events API requests by account, feed and outcome",
            m.requests.clone(),
        );
        metrics.register(
            "fetcher_pages",
            "Non-empty pages published to OP_RAW",
            m.pages.clone(),
        );
        metrics.register(
            "fetcher_events",
            "Events published to OP_RAW",
            m.events.clone(),
        );
        metrics.register(
            "fetcher_lag_seconds",
            "Now minus the newest event time of the last non-empty page",
            m.lag_seconds.clone(),
        );
        metrics.register(
            "fetcher_consecutive_failures",
            "Failed requests in a row per feed",
            m.consecutive_failures.clone(),
        );
        metrics.register(
            "fetcher_backoff_seconds",
            "Current wait before the next attempt after a failure (0 when healthy)",
            m.backoff_seconds.clone(),
        );
        metrics.register(
            "fetcher_last_event_timestamp_seconds",
            "Unix time of the newest event fetched per feed (alert on time() minus it)",
            m.last_event_timestamp.clone(),
        );
        metrics.register(
            "fetcher_last_success_timestamp_seconds",
            "Unix time of the last successful poll per feed, empty pages included",
            m.last_success_timestamp.clone(),
        );
        metrics.register(
            "fetcher_leases_held",
            "Feeds this replica currently polls",
            m.leases_held.clone(),
        );
        m
    }
}
