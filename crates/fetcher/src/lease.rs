//! Which replica polls which feed.
//!
//! Each feed has a lease in `OP_LEASES` (`{owner, expires_at}`), claimed and renewed with
//! compare-and-set, so two replicas can never both win it. Replicas also heartbeat under
//! `_replicas.{id}`; knowing how many are alive, each takes at most its fair share of the feeds
//! and gives back the excess when a new replica joins, so load spreads instead of the first
//! replica grabbing everything. A replica that dies stops renewing; its leases expire after the
//! TTL and the survivors take them over.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use oprelay_bus::{BusError, JsonKv};
use oprelay_events::Lease;
use oprelay_service::{lease, Clock};

const REPLICA_PREFIX: &str = "_replicas.";

/// The outcome of one lease round.
#[derive(Debug, Default)]
pub struct Round {
    /// Feeds this replica holds and may poll.
    pub held: BTreeSet<String>,
    /// Until when every held lease is surely ours (the round's start plus the TTL): a poller
    /// must not publish or write a cursor after it.
    pub expires_at: Option<time::OffsetDateTime>,
    /// Feeds over this replica's fair share. They are still held: the caller stops their
    /// pollers, waits until they have stopped, and only then gives them back with
    /// [`Leases::release`], so two replicas never poll one feed at the same time.
    pub surplus: Vec<String>,
}

pub struct Leases {
    kv: JsonKv,
    me: String,
    ttl: Duration,
    clock: Clock,
    /// Feed key → revision of our lease.
    held: BTreeMap<String, u64>,
}

impl Leases {
    pub fn new(kv: JsonKv, replica_id: &str, ttl: Duration, clock: Clock) -> Self {
        Leases {
            kv,
            me: replica_id.to_owned(),
            ttl,
            clock,
            held: BTreeMap::new(),
        }
    }

    pub fn replica_id(&self) -> &str {
        &self.me
    }

    pub fn held(&self) -> BTreeSet<String> {
        self.held.keys().cloned().collect()
    }

    /// One round: heartbeat, then renew or claim leases so this replica holds its fair share of
    /// `wanted`; what is over the share is named in [`Round::surplus`], not given back yet.
    pub async fn tick(&mut self, wanted: &[String]) -> Result<Round, BusError> {
        let now = self.clock.now();
        let expires_at = now + self.ttl;
        self.kv
            .put(
                &format!("{REPLICA_PREFIX}{}", self.me),
                &Lease {
                    owner: self.me.clone(),
                    expires_at,
                },
            )
            .await?;
        let live = self.live_replicas(now).await?.max(1);
        let fair = wanted.len().div_ceil(live);

        // Replicas prefer different feeds (rendezvous order), so claims rarely collide.
        let mut order: Vec<&String> = wanted.iter().collect();
        order.sort_by_key(|k| rank(k, &self.me));

        self.held.retain(|k, _| wanted.contains(k));
        for key in order {
            let standing = lease::look(&self.kv, key, &self.me, now).await?;
            let renew = standing.mine && (self.held.contains_key(key) || !standing.free);
            let claim = !renew && standing.free && self.held.len() < fair;
            if renew || claim {
                match lease::hold(&self.kv, key, &self.me, expires_at, standing.revision).await? {
                    Some(rev) => {
                        if claim {
                            tracing::info!(feed = %key, replica = %self.me, "lease claimed");
                        }
                        self.held.insert(key.clone(), rev);
                    }
                    None => {
                        self.held.remove(key);
                    }
                }
            } else if !standing.mine {
                self.held.remove(key);
            }
        }
        // A new replica joined: what is over the fair share goes back once its poller stopped.
        let surplus = self
            .held
            .keys()
            .rev()
            .take(self.held.len().saturating_sub(fair))
            .cloned()
            .collect();
        Ok(Round {
            held: self.held(),
            expires_at: Some(expires_at),
            surplus,
        })
    }

    async fn live_replicas(&self, now: time::OffsetDateTime) -> Result<usize, BusError> {
        let mut keys = self.kv.store().keys().await.map_err(|e| BusError::Kv {
            op: "list",
            bucket: "OP_LEASES".into(),
            key: REPLICA_PREFIX.into(),
            source: Box::new(e),
        })?;
        let mut replicas = Vec::new();
        while let Some(key) = keys.next().await {
            if let Ok(key) = key {
                if key.starts_with(REPLICA_PREFIX) {
                    replicas.push(key);
                }
            }
        }
        let mut live = 0;
        for key in replicas {
            if let Some(v) = self.kv.get::<Lease>(&key).await? {
                if v.value.expires_at > now {
                    live += 1;
                }
            }
        }
        Ok(live)
    }

    /// Gives a lease back so another replica can take it at once.
    pub async fn release(&mut self, key: &str) -> Result<(), BusError> {
        if let Some(rev) = self.held.remove(key) {
            lease::give_back(&self.kv, key, &self.me, self.clock.now(), rev).await?;
            tracing::info!(feed = %key, replica = %self.me, "lease released");
        }
        Ok(())
    }

    /// On shutdown: every lease back, and the heartbeat gone, so survivors rebalance at once.
    pub async fn release_all(&mut self) -> Result<(), BusError> {
        let keys: Vec<String> = self.held.keys().cloned().collect();
        for key in keys {
            self.release(&key).await?;
        }
        let _ = self
            .kv
            .store()
            .delete(format!("{REPLICA_PREFIX}{}", self.me))
            .await;
        Ok(())
    }
}

fn rank(key: &str, replica: &str) -> [u8; 8] {
    let digest = Sha256::digest(format!("{key}\u{0}{replica}").as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}
