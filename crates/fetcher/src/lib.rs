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
pub mod token;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use oprelay_bus::{BusError, JsonKv, Need};
use oprelay_events::{names, Feed, FeedStatus, FetchErrorKind};
use oprelay_service::config::AccountConfig;
use oprelay_service::{CancellationToken, Clock, Config, Metrics, StartError};

use crate::api::EventsApi;
use crate::backoff::{Backoff, BackoffPolicy};
use crate::budget::Budget;
use crate::lease::Leases;
use crate::metrics::FetcherMetrics;
use crate::poller::{Account, Deps, LeaseView, Poller};

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
    let mut pending: Vec<PendingAccount> = config
        .accounts
        .iter()
        .map(|a| PendingAccount {
            config: a.clone(),
            backoff: Backoff::new(options.backoff),
            retry_at: None,
        })
        .collect();
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
    let mut leases = Leases::new(lease_store.clone(), &replica_id, ttl, options.clock.clone());
    tracing::info!(replica = %leases.replica_id(), feeds = feeds.len(), "fetcher running");
    let interval = options.lease_interval.unwrap_or(ttl / 3);
    // A poller stops publishing this long before its lease expires, so a publish that is under
    // way cannot outlive the lease.
    let margin = ttl / 4;
    let mut pollers = Pollers::default();
    let poll_shutdown = shutdown.child_token();

    loop {
        setup.retry(&mut pending, &mut feeds).await;
        let wanted: Vec<String> = feeds.keys().cloned().collect();
        match leases.tick(&wanted).await {
            Ok(round) => {
                // Hand a surplus feed over only once its poller has stopped.
                for key in &round.surplus {
                    pollers.stop(key).await;
                    if let Err(e) = leases.release(key).await {
                        tracing::warn!(feed = %key, error = %e, "could not give a lease back; it expires after the TTL");
                    }
                }
                let held: BTreeSet<String> = round
                    .held
                    .into_iter()
                    .filter(|k| !round.surplus.contains(k))
                    .collect();
                if let Some(until) = round.expires_at {
                    pollers.reconcile(&held, until, &feeds, &deps, margin, &poll_shutdown);
                }
            }
            // The pollers stop by themselves when their leases near expiry without a renewal.
            Err(e) => {
                tracing::warn!(error = %e, "lease round failed; pollers stop when their leases near expiry")
            }
        }
        fetcher_metrics.leases_held.set(pollers.len() as i64);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = options.clock.sleep(interval) => {}
        }
    }

    // Stop pollers first (in-flight requests are abandoned, no cursor is written for a page
    // that was not acknowledged), then hand the leases back so another replica resumes at once.
    poll_shutdown.cancel();
    pollers.stop_all().await;
    if let Err(e) = leases.release_all().await {
        tracing::warn!(error = %e, "could not release leases; they expire after the TTL");
    }
    tracing::info!("fetcher stopped");
    Ok(())
}

/// One running poller: how to tell it its lease was renewed, how to stop it, its task.
struct RunningPoller {
    lease: watch::Sender<OffsetDateTime>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The pollers of the feeds this replica holds, by feed key.
#[derive(Default)]
struct Pollers(BTreeMap<String, RunningPoller>);

impl Pollers {
    fn len(&self) -> usize {
        self.0.len()
    }

    /// Starts pollers for newly held feeds (and for held feeds whose poller ended), tells the
    /// others their lease's new expiry, and stops those whose lease was lost.
    fn reconcile(
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
    async fn stop(&mut self, key: &str) {
        if let Some(p) = self.0.remove(key) {
            p.stop.cancel();
            let _ = p.task.await;
        }
    }

    async fn stop_all(&mut self) {
        let keys: Vec<String> = self.0.keys().cloned().collect();
        for key in keys {
            self.stop(&key).await;
        }
    }
}

/// An account not set up yet, and when to try again.
struct PendingAccount {
    config: AccountConfig,
    backoff: Backoff,
    retry_at: Option<OffsetDateTime>,
}

/// Why an account could not be set up, with a kind for `FeedStatus::error_kind`.
struct SetupError {
    kind: FetchErrorKind,
    message: String,
}

impl SetupError {
    fn new(kind: FetchErrorKind, message: impl Into<String>) -> Self {
        SetupError {
            kind,
            message: message.into(),
        }
    }
}

/// What setting up an account needs.
struct SetupCtx<'a> {
    all: &'a Config,
    deps: &'a Deps,
    lease_store: &'a JsonKv,
    shutdown: &'a CancellationToken,
}

impl SetupCtx<'_> {
    /// Tries every pending account whose time has come; those set up join `feeds`, the others
    /// get their feeds' status rows with the error and wait longer.
    async fn retry(
        &self,
        pending: &mut Vec<PendingAccount>,
        feeds: &mut BTreeMap<String, (Arc<Account>, Feed)>,
    ) {
        let now = self.deps.clock.now();
        let mut still = Vec::new();
        for mut p in pending.drain(..) {
            if p.retry_at.is_some_and(|t| t > now) {
                still.push(p);
                continue;
            }
            match self.setup_account(&p.config).await {
                Ok((account, allowed)) => {
                    for feed in allowed {
                        feeds.insert(
                            names::feed_key(&account.name, feed),
                            (account.clone(), feed),
                        );
                    }
                }
                Err(e) => {
                    // One broken account must not stop the others.
                    let wait = p.backoff.next(crate::api::Recovery::Slow);
                    tracing::error!(account = %p.config.name, problem = %e.message, kind = %e.kind, retry_in = ?wait, "account not polled yet");
                    self.report(&p.config, &e, p.backoff.failures()).await;
                    p.retry_at = Some(now + wait);
                    still.push(p);
                }
            }
        }
        *pending = still;
    }

    /// Writes the set-up error into the status row of every feed the account would poll.
    async fn report(&self, config: &AccountConfig, e: &SetupError, failures: u32) {
        let feeds = config.feeds.clone().unwrap_or_else(|| Feed::ALL.to_vec());
        for feed in feeds {
            let key = names::fetch_status_key(&config.name, feed);
            let previous = self
                .deps
                .status
                .get::<FeedStatus>(&key)
                .await
                .ok()
                .flatten()
                .map(|v| v.value)
                .unwrap_or_default();
            let status = FeedStatus {
                last_poll_at: Some(self.deps.clock.now()),
                last_error: Some(e.message.clone()),
                error_kind: Some(e.kind),
                consecutive_failures: failures,
                ..previous
            };
            if let Err(err) = self.deps.status.put(&key, &status).await {
                tracing::warn!(error = %err, "cannot record feed status");
            }
        }
    }

    /// Reads the token, works out the base URL and the feeds, and confirms with introspection.
    async fn setup_account(
        &self,
        config: &AccountConfig,
    ) -> Result<(Arc<Account>, Vec<Feed>), SetupError> {
        let (all, deps) = (self.all, self.deps);
        let source = config.token();
        let token = source.read().map_err(|e| {
            SetupError::new(
                FetchErrorKind::TokenUnreadable,
                format!("cannot read the token: {e}"),
            )
        })?;
        let claims = token::decode(token.expose())
            .map_err(|e| SetupError::new(FetchErrorKind::TokenInvalid, e.to_string()))?;
        let base_url = config.base_url.clone().or(claims.base_url.clone()).ok_or_else(|| {
            SetupError::new(
                FetchErrorKind::TokenInvalid,
                "the token names no Events API host (legacy token?); set base_url, e.g. https://events.1password.com",
            )
        })?;
        let api = EventsApi::new(&base_url, config.api_version)
            .map_err(|e| SetupError::new(FetchErrorKind::Config, e.to_string()))?;
        let budget = Budget::new(
            &config.name,
            all.fetcher.requests_per_minute,
            all.fetcher.requests_per_hour,
            self.lease_store.clone(),
            deps.clock.clone(),
        );
        // Introspection counts against the token's rate limit like any other request.
        if !budget.acquire(self.shutdown).await {
            return Err(SetupError::new(FetchErrorKind::Shutdown, "shutting down"));
        }
        let features = match api.introspect(&token).await {
            Ok(i) => {
                tracing::info!(account = %config.name, features = ?i.features, "token confirmed by introspection");
                Some(
                    i.features
                        .iter()
                        .filter_map(|f| Feed::from_api_name(f))
                        .collect::<Vec<_>>(),
                )
            }
            Err(e) => {
                tracing::warn!(account = %config.name, error = %e, "introspection failed; using the token's own claims");
                claims.features.clone()
            }
        };
        let wanted = config
            .feeds
            .clone()
            .unwrap_or_else(|| features.clone().unwrap_or_else(|| Feed::ALL.to_vec()));
        let mut allowed = Vec::new();
        for feed in wanted {
            let permitted = features.as_ref().is_none_or(|f| f.contains(&feed));
            if permitted {
                allowed.push(feed);
            } else {
                let problem = format!(
                    "the token is not allowed to read {feed} (its features: {}); issue a token with this feature or remove it from feeds",
                    features.as_ref().map(|f| f.iter().map(|x| x.api_name()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
                );
                tracing::error!(account = %config.name, %feed, "{problem}");
                let status = FeedStatus {
                    last_poll_at: Some(deps.clock.now()),
                    last_error: Some(problem),
                    error_kind: Some(FetchErrorKind::FeedNotPermitted),
                    token_expires_at: claims.expires_at,
                    ..FeedStatus::default()
                };
                let _ = deps
                    .status
                    .put(&names::fetch_status_key(&config.name, feed), &status)
                    .await;
            }
        }
        let account = Arc::new(Account {
            name: config.name.clone(),
            config: config.clone(),
            api,
            token: source,
            budget,
            token_expires_at: claims.expires_at,
        });
        Ok((account, allowed))
    }
}
