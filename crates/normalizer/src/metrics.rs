//! The normalizer's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use oprelay_events::{AccountName, Feed};
use oprelay_service::Metrics;

use crate::normalize::{NormalizedPage, RejectReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FeedLabels {
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
pub(crate) struct NormalizerMetrics {
    records: Family<FeedLabels, Counter>,
    matches: Family<SelectorLabels, Counter>,
    dead_letters: Family<ReasonLabels, Counter>,
    pub redelivered: Counter,
    pub renormalized: Counter,
    pub latency: Histogram,
}

impl NormalizerMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = NormalizerMetrics {
            records: Family::default(),
            matches: Family::default(),
            dead_letters: Family::default(),
            redelivered: Counter::default(),
            renormalized: Counter::default(),
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
            "normalizer_renormalized_pages",
            "Raw pages normalized a second time because a page before them, normalized \
             alongside, taught a user they name",
            m.renormalized.clone(),
        );
        metrics.register(
            "normalizer_page_seconds",
            "Time to normalize and publish one raw page",
            m.latency.clone(),
        );
        m
    }

    /// Counts what one page produced: records, enrichment matches, refused records.
    pub fn count_page(&self, account: &AccountName, feed: Feed, page: &NormalizedPage) {
        let labels = FeedLabels {
            account: account.to_string(),
            feed: feed.to_string(),
        };
        self.records
            .get_or_create(&labels)
            .inc_by(page.count as u64);
        for (selector, n) in &page.matches {
            self.matches
                .get_or_create(&SelectorLabels {
                    selector: (*selector).to_owned(),
                })
                .inc_by(*n as u64);
        }
        for r in &page.rejects {
            self.dead_letter(r.reason.label());
        }
    }

    /// Counts one dead letter.
    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}
