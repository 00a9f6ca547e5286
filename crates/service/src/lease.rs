//! A lease in `OP_LEASES`: at most one holder at a time, claimed, renewed and given back with
//! compare-and-set, so two replicas can never both believe they won it. A holder that dies
//! stops renewing and the lease lapses after its TTL.
//!
//! Used as is by healthwatch (one lease for the evaluator) and, per feed, by the fetcher's
//! fair-share leases (`oprelay_fetcher::lease`). [`replica_id`] names the holder.

use oprelay_bus::{BusError, JsonKv};
use oprelay_events::Lease;
use time::OffsetDateTime;

/// How a lease stands for one replica at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    /// This replica is the recorded owner (perhaps of a lapsed lease).
    pub mine: bool,
    /// Nobody holds it: never claimed, or lapsed.
    pub free: bool,
    /// The stored revision, for the compare-and-set that claims or renews it.
    pub revision: Option<u64>,
}

impl Standing {
    /// Whether this replica may claim or renew it now.
    pub fn open_to_me(&self) -> bool {
        self.mine || self.free
    }
}

/// Reads how lease `key` stands for replica `me` at `now`.
pub async fn look(
    kv: &JsonKv,
    key: &str,
    me: &str,
    now: OffsetDateTime,
) -> Result<Standing, BusError> {
    let current = kv.get::<Lease>(key).await?;
    Ok(Standing {
        mine: current.as_ref().is_some_and(|c| c.value.owner == me),
        free: current.as_ref().is_none_or(|c| c.value.expires_at <= now),
        revision: current.map(|c| c.revision),
    })
}

/// Claims or renews lease `key` for `me` until `expires_at`, if it is still at `revision`.
/// `Ok(Some(revision))` when held, `Ok(None)` when another replica wrote it first.
pub async fn hold(
    kv: &JsonKv,
    key: &str,
    me: &str,
    expires_at: OffsetDateTime,
    revision: Option<u64>,
) -> Result<Option<u64>, BusError> {
    let lease = Lease {
        owner: me.to_owned(),
        expires_at,
    };
    match kv.compare_and_set(key, &lease, revision).await {
        Ok(revision) => Ok(Some(revision)),
        Err(BusError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives lease `key` back at `now` (it lapses at once), if it is still at `revision`; a lease
/// someone else took meanwhile is left alone.
pub async fn give_back(
    kv: &JsonKv,
    key: &str,
    me: &str,
    now: OffsetDateTime,
    revision: u64,
) -> Result<(), BusError> {
    hold(kv, key, me, now, Some(revision)).await.map(|_| ())
}

/// This replica's name in leases: the configured one, else the pod name (`HOSTNAME`), else
/// `{service}-{random}`; reduced to what KV keys allow (`[-_a-zA-Z0-9]`), since the fetcher
/// writes its heartbeat under `_replicas.{id}`.
pub fn replica_id(configured: Option<&str>, service: &str) -> String {
    let chosen = configured
        .map(str::to_owned)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("{service}-{:08x}", rand::random::<u32>()));
    key_safe(&chosen)
}

fn key_safe(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "replica".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_fit_in_a_kv_key() {
        assert_eq!(
            replica_id(Some("fetcher-7d9f-x2"), "fetcher"),
            "fetcher-7d9f-x2"
        );
        assert_eq!(replica_id(Some("a.b c/d"), "fetcher"), "a_b_c_d");
        assert_eq!(replica_id(Some(""), "fetcher"), "replica");
    }
}
