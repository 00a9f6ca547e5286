//! Delivering the notifications the alarm states owe, apart from evaluation, so a dead
//! webhook never delays a round. Only the lease holder notifies, and each delivery is claimed
//! in the record first (compare-and-set), so two replicas never send one notification twice;
//! what was delivered is recorded, so a restart neither repeats nor forgets one.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use oprelay_bus::{BusError, JsonKv};
use oprelay_events::{AlarmState, Lease};
use oprelay_service::{CancellationToken, Retries};

use crate::alarm::{self, AlarmRecord};
use crate::evaluate::Evaluator;
use crate::notify::Notifier;
use crate::LEASE_KEY;

/// Records a delivered notification, re-reading on a lost compare-and-set (evaluation may
/// have written the record meanwhile). `None` when it could not be recorded.
async fn mark_notified(
    kv: &JsonKv,
    key: &str,
    notifier: &str,
    id: &str,
    what: AlarmState,
) -> Option<(AlarmRecord, u64)> {
    for _ in 0..5 {
        let v = kv.get::<AlarmRecord>(key).await.ok().flatten()?;
        let mut record = v.value;
        if record.alarm.id != id {
            return None;
        }
        record.mark_notified(notifier, what);
        record.claims.remove(notifier);
        match kv.compare_and_set(key, &record, Some(v.revision)).await {
            Ok(rev) => return Some((record, rev)),
            Err(BusError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not record a delivered notification");
                return None;
            }
        }
    }
    tracing::warn!(%key, "could not record a delivered notification after 5 attempts");
    None
}

/// Delivers what the alarm states owe each notifier, retrying failures with backoff, apart
/// from evaluation. Only the lease holder notifies, so two replicas send one notification.
pub(crate) async fn notify_loop(
    ctx: Arc<Evaluator>,
    notifiers: Vec<Notifier>,
    me: String,
    leases: JsonKv,
    shutdown: CancellationToken,
) {
    if notifiers.is_empty() {
        return;
    }
    let mut backoff = vec![Backoff::default(); notifiers.len()];
    let tick = Duration::from_secs(1).min(ctx.config.healthwatch.interval.0);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ctx.clock.sleep(tick) => {}
        }
        let owner = leases.get::<Lease>(LEASE_KEY).await.ok().flatten();
        if owner.is_none_or(|l| l.value.owner != me) {
            continue;
        }
        let keys: Vec<String> = match ctx.health.store().keys().await {
            Ok(k) => {
                use futures::StreamExt;
                k.filter_map(|k| async move { k.ok() }).collect().await
            }
            Err(_) => continue,
        };
        for key in keys {
            // A lost compare-and-set means the evaluator wrote the record meanwhile: read it
            // again at once rather than a tick later, a few times.
            for _ in 0..3 {
                if notify_record(&ctx, &notifiers, &me, &key, &mut backoff).await != Pass::Conflict
                {
                    break;
                }
            }
        }
    }
}

/// One notifier's failures in a row, and when it may try again.
#[derive(Clone)]
struct Backoff {
    retries: Retries,
    next_try: OffsetDateTime,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            // From 2 s up to about 4 min, in full: a webhook down for an hour is tried a few
            // times a minute at most, and one back up is noticed within minutes.
            retries: Retries::new(
                oprelay_service::Backoff::full_jitter(
                    Duration::from_secs(2),
                    Duration::from_secs(256),
                )
                .at_least(Duration::from_secs(1)),
            ),
            next_try: OffsetDateTime::UNIX_EPOCH,
        }
    }
}

impl Backoff {
    /// Records a failure at `now`; returns the wait before the next try.
    fn failed(&mut self, now: OffsetDateTime) -> Duration {
        let wait = self.retries.failed();
        self.next_try = now + wait;
        wait
    }

    /// A delivery went through: the next failure starts from the shortest wait.
    fn succeeded(&mut self) {
        self.retries.reset();
    }
}

#[derive(PartialEq)]
enum Pass {
    Done,
    /// The record changed under us; reading it again may find work.
    Conflict,
}

/// Sends what one alarm record owes each notifier: claim, send, record the delivery.
async fn notify_record(
    ctx: &Evaluator,
    notifiers: &[Notifier],
    me: &str,
    key: &str,
    backoff: &mut [Backoff],
) -> Pass {
    let Ok(Some(v)) = ctx.health.get::<AlarmRecord>(key).await else {
        return Pass::Done;
    };
    let (mut record, mut revision) = (v.value, v.revision);
    for (i, n) in notifiers.iter().enumerate() {
        let Some(what) = record.owed(&n.name) else {
            continue;
        };
        let now = ctx.clock.now();
        if now < backoff[i].next_try {
            continue;
        }
        // Claim the delivery first (compare-and-set), so a second replica that also believes
        // it leads cannot send it too.
        let taken = record
            .claims
            .get(&n.name)
            .is_some_and(|c| c.owner != me && c.until > now && c.state == what);
        if taken {
            continue;
        }
        record.claims.insert(
            n.name.clone(),
            alarm::Claim {
                owner: me.to_owned(),
                state: what,
                until: now + Duration::from_secs(60),
            },
        );
        match ctx
            .health
            .compare_and_set(key, &record, Some(revision))
            .await
        {
            Ok(r) => revision = r,
            Err(BusError::Conflict { .. }) => return Pass::Conflict,
            Err(_) => return Pass::Done,
        }
        match n.send(&record, what, now).await {
            Ok(()) => {
                backoff[i].succeeded();
                tracing::info!(notifier = %n.name, alarm = %record.alarm.id, state = ?what, "notification delivered");
                match mark_notified(&ctx.health, key, &n.name, &record.alarm.id, what).await {
                    Some((r, rev)) => (record, revision) = (r, rev),
                    None => return Pass::Done,
                }
            }
            Err(e) => {
                let wait = backoff[i].failed(now);
                tracing::warn!(error = %e, retry_in = ?wait, "notification failed; will retry");
            }
        }
    }
    Pass::Done
}
