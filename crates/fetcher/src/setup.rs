//! Setting up an account: read and decode its token, find its Events API host, confirm the
//! token and the feeds it may read by introspection. An account that cannot be set up is
//! retried slowly, its feeds' status rows saying why, so fixing the Secret is enough.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;

use oprelay_bus::JsonKv;
use oprelay_events::{names, Feed, FeedStatus, FetchErrorKind};
use oprelay_service::config::AccountConfig;
use oprelay_service::{CancellationToken, Config};

use crate::api::EventsApi;
use crate::backoff::{Backoff, BackoffPolicy};
use crate::budget::Budget;
use crate::poller::{Account, Deps};
use crate::token;

/// An account not set up yet, and when to try again.
pub(crate) struct PendingAccount {
    config: AccountConfig,
    backoff: Backoff,
    retry_at: Option<OffsetDateTime>,
}

/// Every configured account, none set up yet.
pub(crate) fn pending(config: &Config, backoff: BackoffPolicy) -> Vec<PendingAccount> {
    config
        .accounts
        .iter()
        .map(|a| PendingAccount {
            config: a.clone(),
            backoff: Backoff::new(backoff),
            retry_at: None,
        })
        .collect()
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
pub(crate) struct SetupCtx<'a> {
    pub all: &'a Config,
    pub deps: &'a Deps,
    pub lease_store: &'a JsonKv,
    pub shutdown: &'a CancellationToken,
}

impl SetupCtx<'_> {
    /// Tries every pending account whose time has come; those set up join `feeds`, the others
    /// get their feeds' status rows with the error and wait longer.
    pub async fn retry(
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
        let allowed = self
            .permitted_feeds(config, features.as_deref(), claims.expires_at)
            .await;
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

    /// The feeds to poll: those configured (or every feed the token may read), less those
    /// the token may not read, whose status rows say so (`feed_not_permitted`, which the token
    /// alarm watches).
    async fn permitted_feeds(
        &self,
        config: &AccountConfig,
        features: Option<&[Feed]>,
        token_expires_at: Option<OffsetDateTime>,
    ) -> Vec<Feed> {
        let deps = self.deps;
        let wanted = config
            .feeds
            .clone()
            .unwrap_or_else(|| features.map_or_else(|| Feed::ALL.to_vec(), <[Feed]>::to_vec));
        let mut allowed = Vec::new();
        for feed in wanted {
            if features.is_none_or(|f| f.contains(&feed)) {
                allowed.push(feed);
                continue;
            }
            let problem = format!(
                "the token is not allowed to read {feed} (its features: {}); issue a token with this feature or remove it from feeds",
                features.map(|f| f.iter().map(|x| x.api_name()).collect::<Vec<_>>().join(", ")).unwrap_or_default()
            );
            tracing::error!(account = %config.name, %feed, "{problem}");
            let status = FeedStatus {
                last_poll_at: Some(deps.clock.now()),
                last_error: Some(problem),
                error_kind: Some(FetchErrorKind::FeedNotPermitted),
                token_expires_at,
                ..FeedStatus::default()
            };
            let _ = deps
                .status
                .put(&names::fetch_status_key(&config.name, feed), &status)
                .await;
        }
        allowed
    }
}
