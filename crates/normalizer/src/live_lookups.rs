//! The lookup index kept current: loaded from `OP_LOOKUPS` at start, followed as imports and
//! learned users arrive, and users the stream reveals written back (never over an imported
//! row).

use std::sync::Arc;

use futures::StreamExt;

use oprelay_bus::{BusError, JsonKv};
use oprelay_events::names;
use oprelay_events::{LookupKind, LookupRow, LookupSource};
use oprelay_service::CancellationToken;

use crate::shared_index::SharedIndex;

/// Loads every lookup row, then keeps the index current as imports and learned users arrive.
pub(crate) async fn follow_lookups(
    kv: JsonKv,
    index: Arc<SharedIndex>,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let kv_err = |e: Box<dyn std::error::Error + Send + Sync>| BusError::Kv {
        op: "watch",
        bucket: names::BUCKET_LOOKUPS.into(),
        key: ">".into(),
        source: e,
    };
    let status = kv.store().status().await.map_err(|e| kv_err(Box::new(e)))?;
    let pending = status.info.state.messages;
    let mut watch = kv
        .store()
        .watch_with_history(">")
        .await
        .map_err(|e| kv_err(Box::new(e)))?;
    let apply = |index: &SharedIndex, entry: &oprelay_bus::async_nats::jetstream::kv::Entry| {
        index.update(|idx| match entry.operation {
            oprelay_bus::async_nats::jetstream::kv::Operation::Put => {
                match serde_json::from_slice::<LookupRow>(&entry.value) {
                    Ok(row) => {
                        idx.upsert(row);
                    }
                    Err(e) => {
                        tracing::warn!(key = %entry.key, error = %e, "ignoring a lookup row that is not valid")
                    }
                }
            }
            _ => {
                if let Some((kind, uuid)) = entry.key.split_once('.') {
                    if let Some(kind) = LookupKind::ALL.iter().find(|k| k.as_str() == kind) {
                        idx.remove(*kind, uuid);
                    }
                }
            }
        })
    };
    // The initial snapshot first, so the first page is enriched with everything imported.
    if pending > 0 {
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| kv_err(Box::new(e)))?;
            apply(&index, &entry);
            if entry.delta == 0 {
                break;
            }
        }
    }
    Ok(tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                n = watch.next() => n,
            };
            match next {
                Some(Ok(entry)) => apply(&index, &entry),
                Some(Err(e)) => tracing::warn!(error = %e, "lookup watch error"),
                None => break,
            }
        }
    }))
}

/// Persists users the stream revealed, never over an imported row.
pub(crate) async fn learn(lookups: &JsonKv, rows: &[LookupRow]) {
    for row in rows {
        let key = row.key();
        let result = async {
            let current = lookups.get::<LookupRow>(&key).await?;
            if current
                .as_ref()
                .is_some_and(|c| c.value.source == LookupSource::Imported || c.value == *row)
            {
                return Ok(());
            }
            lookups
                .compare_and_set(&key, row, current.map(|c| c.revision))
                .await
                .map(|_| ())
        }
        .await;
        match result {
            Ok(()) | Err(BusError::Conflict { .. }) => {}
            Err(e) => tracing::warn!(%key, error = %e, "could not record an observed user"),
        }
    }
}
