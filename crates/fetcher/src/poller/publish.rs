//! Publishing a fetched page to `OP_RAW`: its dedup ids, its parts when it is bigger than a
//! bus message, and dead letters for events bigger than any message.

use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use oprelay_bus::Outgoing;
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, CursorRequest, Feed, FetchErrorKind};
use oprelay_service::CancellationToken;

use super::{DrainError, LeaseView, Poller, Stop};
use crate::api::{FetchedPage, Recovery};

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
    /// Publishes a page to `OP_RAW` and waits for every ack: as consecutive parts when it is
    /// bigger than one bus message, with any event too big for a message dead-lettered first.
    /// The cursor moves only after this returns.
    pub(super) async fn publish_page(
        &mut self,
        request: &CursorRequest,
        page: &FetchedPage,
        fetched_at: OffsetDateTime,
        lease: &LeaseView,
        shutdown: &CancellationToken,
    ) -> Result<(), DrainError> {
        let split = crate::api::split_page(&page.body, self.deps.bus.max_body());
        let ids = page_msg_ids(
            &self.account.name,
            self.feed,
            request,
            &page.body,
            split.parts.len(),
        );
        // (message, whether it is a part of the page rather than a dead letter)
        let dead_letters = split
            .oversized
            .iter()
            .map(|(index, item)| (self.oversized_dead_letter(&ids[0], *index, item), false));
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
                r = self.deps.bus.publish(msg) => r,
            };
            match published {
                Ok(ack) if ack.duplicate => {
                    tracing::info!(
                        seq = ack.sequence,
                        "page was already published (replay after a restart); not duplicated"
                    );
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
        Ok(())
    }

    /// A dead letter for an event bigger than any bus message: its first bytes (as many as a
    /// message holds) and the reason, on `op.dlq.fetch.{account}.{feed}`.
    pub(super) fn oversized_dead_letter(
        &self,
        page_id: &str,
        index: usize,
        item: &[u8],
    ) -> Outgoing {
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
}
