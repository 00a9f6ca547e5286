//! The fetcher: the only component that talks to 1Password.
//!
//! For every configured account it reads the token, learns the region and feeds from it,
//! confirms it with introspection, and polls each feed whose lease this replica holds: drain
//! while `has_more`, publish each non-empty page to `op.raw.{account}.{feed}`, wait for the
//! JetStream ack, then advance the cursor with compare-and-set.

pub mod api;
pub mod backoff;
pub mod budget;
pub mod lease;
pub mod metrics;
pub mod poller;
mod pollers;
mod setup;
pub mod token;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use oprelay_bus::{BusError, JsonKv, Need};
use oprelay_events::{names, Feed};
use oprelay_service::{CancellationToken, Clock, Config, Metrics, StartError};

use crate::backoff::BackoffPolicy;
use crate::lease::Leases;
use crate::metrics::FetcherMetrics;
use crate::poller::{Account, Deps};
use crate::pollers::Pollers;
use crate::setup::SetupCtx;

pub const SERVICE: &str = "fetcher";
/// What the fetcher writes to; checked at start.
const NEEDS: [Need; 5] = [
    Need::Stream(names::STREAM_RAW),
    Need::Stream(names::STREAM_DLQ),
    Need::Bucket(names::BUCKET_CURSORS),
    Need::Bucket(names::BUCKET_LEASES),
    Need::Bucket(names::BUCKET_STATUS),
];
/// Where `/healthz`, `/readyz` and `/metrics` listen unless configured.
pub const DEFAULT_LISTEN: std::net::SocketAddr = oprelay_service::admin::default_listen(9461);

#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Config(#[from] oprelay_service::ConfigError),
}

/// What tests and embedders may change; `run` uses the defaults.
#[derive(Clone)]
pub struct Options {
    pub clock: Clock,
    pub backoff: BackoffPolicy,
    /// How often leases are renewed and rebalanced; a third of the TTL by default.
    pub lease_interval: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Clock::System,
            backoff: BackoffPolicy::default(),
            lease_interval: None,
        }
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), FetcherError> {
    run_with(config, Options::default(), shutdown).await
}

pub async fn run_with(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), FetcherError> {
    let metrics = Metrics::new();
    let fetcher_metrics = FetcherMetrics::register(&metrics);
    let Some(started) =
        oprelay_service::start(&config, SERVICE, &NEEDS, DEFAULT_LISTEN, metrics, &shutdown)
            .await?
    else {
        return Ok(());
    };
    let bus = started.bus;
    let deps = Deps {
        cursors: JsonKv::open(&bus, names::BUCKET_CURSORS).await?,
        status: JsonKv::open(&bus, names::BUCKET_STATUS).await?,
        bus: bus.clone(),
        clock: options.clock.clone(),
        metrics: fetcher_metrics.clone(),
        backoff: options.backoff,
    };

    let lease_store = JsonKv::open(&bus, names::BUCKET_LEASES).await?;
    let mut feeds: BTreeMap<String, (Arc<Account>, Feed)> = BTreeMap::new();
    // Accounts whose set-up failed (a token that cannot be read or decoded): retried slowly,
    // so fixing the Secret is enough, no restart needed.
    let mut pending = setup::pending(&config, options.backoff);
    let setup = SetupCtx {
        all: &config,
        deps: &deps,
        lease_store: &lease_store,
        shutdown: &shutdown,
    };
    setup.retry(&mut pending, &mut feeds).await;
    if feeds.is_empty() && pending.is_empty() {
        tracing::warn!(
            "no feed to poll: configure [[accounts]] with a token that can read at least one feed"
        );
    }

    let replica_id =
        oprelay_service::lease::replica_id(config.fetcher.replica_id.as_deref(), SERVICE);
    let ttl = config.fetcher.lease_ttl.0;
    let mut round = LeaseRound {
        leases: Leases::new(lease_store.clone(), &replica_id, ttl, options.clock.clone()),
        pollers: Pollers::default(),
        // A poller stops publishing this long before its lease expires, so a publish that is
        // under way cannot outlive the lease.
        margin: ttl / 4,
        poll_shutdown: shutdown.child_token(),
    };
    tracing::info!(replica = %round.leases.replica_id(), feeds = feeds.len(), "fetcher running");
    let interval = options.lease_interval.unwrap_or(ttl / 3);
    loop {
        setup.retry(&mut pending, &mut feeds).await;
        round.run(&feeds, &deps).await;
        fetcher_metrics.leases_held.set(round.pollers.len() as i64);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = options.clock.sleep(interval) => {}
        }
    }

    // Stop pollers first (in-flight requests are abandoned, no cursor is written for a page
    // that was not acknowledged), then hand the leases back so another replica resumes at once.
    round.poll_shutdown.cancel();
    round.pollers.stop_all().await;
    if let Err(e) = round.leases.release_all().await {
        tracing::warn!(error = %e, "could not release leases; they expire after the TTL");
    }
    tracing::info!("fetcher stopped");
    Ok(())
}

/// The feeds' leases and the pollers they allow, kept in step once per lease interval.
struct LeaseRound {
    leases: Leases,
    pollers: Pollers,
    margin: Duration,
    poll_shutdown: CancellationToken,
}

impl LeaseRound {
    /// Renews and claims this replica's share of `feeds`, gives back the surplus once its
    /// pollers stopped, and starts or stops pollers to match what is held.
    async fn run(&mut self, feeds: &BTreeMap<String, (Arc<Account>, Feed)>, deps: &Deps) {
        let wanted: Vec<String> = feeds.keys().cloned().collect();
        let round = match self.leases.tick(&wanted).await {
            Ok(round) => round,
            // The pollers stop by themselves when their leases near expiry without a renewal.
            Err(e) => {
                tracing::warn!(error = %e, "lease round failed; pollers stop when their leases near expiry");
                return;
            }
        };
        // Hand a surplus feed over only once its poller has stopped.
        for key in &round.surplus {
            self.pollers.stop(key).await;
            if let Err(e) = self.leases.release(key).await {
                tracing::warn!(feed = %key, error = %e, "could not give a lease back; it expires after the TTL");
            }
        }
        let held: BTreeSet<String> = round
            .held
            .into_iter()
            .filter(|k| !round.surplus.contains(k))
            .collect();
        if let Some(until) = round.expires_at {
            self.pollers
                .reconcile(&held, until, feeds, deps, self.margin, &self.poll_shutdown);
        }
    }
}
