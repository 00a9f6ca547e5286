//! The pollers this replica runs: one task per feed whose lease it holds, started, told of
//! each renewal, and stopped (and awaited) when the lease goes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use oprelay_events::Feed;
use oprelay_service::CancellationToken;

use crate::poller::{Account, Deps, LeaseView, Poller};

/// One running poller: how to tell it its lease was renewed, how to stop it, its task.
struct RunningPoller {
    lease: watch::Sender<OffsetDateTime>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The pollers of the feeds this replica holds, by feed key.
#[derive(Default)]
pub(crate) struct Pollers(BTreeMap<String, RunningPoller>);

impl Pollers {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Starts pollers for newly held feeds (and for held feeds whose poller ended), tells the
    /// others their lease's new expiry, and stops those whose lease was lost.
    pub fn reconcile(
        &mut self,
        held: &BTreeSet<String>,
        until: OffsetDateTime,
        feeds: &BTreeMap<String, (Arc<Account>, Feed)>,
        deps: &Deps,
        margin: Duration,
        shutdown: &CancellationToken,
    ) {
        self.0.retain(|key, p| {
            let keep = held.contains(key) && !p.task.is_finished();
            if keep {
                let _ = p.lease.send(until);
            } else {
                p.stop.cancel();
            }
            keep
        });
        for key in held {
            if self.0.contains_key(key) {
                continue;
            }
            if let Some((account, feed)) = feeds.get(key) {
                let (tx, rx) = watch::channel(until);
                let stop = shutdown.child_token();
                let poller = Poller::new(account.clone(), *feed, deps.clone());
                let lease = LeaseView::new(rx, deps.clock.clone(), margin);
                let task = tokio::spawn(poller.run(lease, stop.clone()));
                self.0.insert(
                    key.clone(),
                    RunningPoller {
                        lease: tx,
                        stop,
                        task,
                    },
                );
            }
        }
    }

    /// Stops one poller and waits until it has.
    pub async fn stop(&mut self, key: &str) {
        if let Some(p) = self.0.remove(key) {
            p.stop.cancel();
            let _ = p.task.await;
        }
    }

    /// Stops every poller and waits until all have.
    pub async fn stop_all(&mut self) {
        let keys: Vec<String> = self.0.keys().cloned().collect();
        for key in keys {
            self.stop(&key).await;
        }
    }
}
