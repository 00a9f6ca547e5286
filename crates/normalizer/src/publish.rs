//! Publishing one normalized page: its records as one message (or consecutive parts when it
//! is bigger than a bus message) under dedup ids derived from the raw page's, then every record
//! it could not carry to `op.dlq.normalize.{account}.{feed}`.

use bytes::Bytes;
use time::format_description::well_known::Rfc3339;

use oprelay_bus::{Bus, BusError, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Feed};

use crate::metrics::NormalizerMetrics;
use crate::normalize::NormalizedPage;

/// Publishes the page's records (`ndjson`, the page's records taken out of it, so each message
/// is a slice of it rather than a copy) and dead letters, each awaited until JetStream stored it.
pub(crate) async fn publish(
    bus: &Bus,
    m: &NormalizerMetrics,
    account: &AccountName,
    feed: Feed,
    raw_id: &str,
    page: &NormalizedPage,
    ndjson: &Bytes,
) -> Result<(), BusError> {
    if page.count > 0 {
        let limit = bus.max_body();
        let cut = crate::parts::cut(page, limit);
        for part in cut.parts {
            let mut out = Outgoing::new(
                names::events_subject(account, feed),
                format!("events:{raw_id}{}", part.suffix),
                ndjson.slice(part.from..part.to),
            )
            .header(header::ACCOUNT, account)
            .header(header::FEED, feed)
            .header(header::SCHEMA, names::schema::record(feed.log_type()))
            .header(header::COUNT, part.records);
            let newest = page.event_times[part.first..part.first + part.records]
                .iter()
                .max();
            if let Some(t) = newest.and_then(|t| t.format(&Rfc3339).ok()) {
                out = out.header(header::MAX_EVENT_TIME, t);
            }
            bus.publish(out).await?;
        }
        for big in cut.oversized {
            let record = ndjson.slice(big.from..big.to);
            let reason = format!(
                "record {} of the page is {} bytes once normalized, more than the bus's largest \
                 message ({limit} bytes); this dead letter holds its first {limit} bytes, the \
                 raw page stays in OP_RAW",
                big.first,
                record.len()
            );
            tracing::warn!(%reason, "dead letter");
            m.dead_letter("too_large");
            let out = Outgoing::new(
                names::dlq_subject("normalize", account, feed),
                format!("dlq:normalize:{raw_id}:big:{}", big.first),
                record.slice(..record.len().min(limit)),
            )
            .header(header::STAGE, "normalize")
            .header(header::ERROR, reason)
            .header(header::ACCOUNT, account)
            .header(header::FEED, feed)
            .header(header::SCHEMA, names::schema::DEAD_LETTER);
            bus.publish(out).await?;
        }
    }
    for (i, reject) in page.rejects.iter().enumerate() {
        let reason = reject.reason.to_string();
        tracing::warn!(%reason, "dead letter");
        // Header values are one line; the reason is short and has no line breaks.
        let out = Outgoing::new(
            names::dlq_subject("normalize", account, feed),
            format!("dlq:normalize:{raw_id}:{i}"),
            reject.body.clone(),
        )
        .header(header::STAGE, "normalize")
        .header(header::ERROR, reason.replace(['\r', '\n'], " "))
        .header(header::ACCOUNT, account)
        .header(header::FEED, feed)
        .header(header::SCHEMA, names::schema::DEAD_LETTER);
        bus.publish(out).await?;
    }
    Ok(())
}
