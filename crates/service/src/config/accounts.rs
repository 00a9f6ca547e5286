//! `[fetcher]` and `[[accounts]]`: which 1Password accounts are polled, and how.

use std::path::PathBuf;

use serde::Deserialize;
use time::OffsetDateTime;

use oprelay_events::{AccountName, Feed};

use super::{check_file, check_range, check_url, first_problem, Config, ConfigError, SecretSource};
use crate::units::HumanDuration;

/// How fetcher replicas share the feeds and the API budget.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FetcherConfig {
    /// A feed whose owner stopped renewing is taken over after this long.
    pub lease_ttl: HumanDuration,
    /// This replica's name in `OP_LEASES`; the pod name (`HOSTNAME`) or a random id when absent.
    pub replica_id: Option<String>,
    /// Requests per minute per account, all feeds together (the API allows 600).
    pub requests_per_minute: u32,
    /// Requests per hour per account (the API allows 30 000).
    pub requests_per_hour: u32,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            lease_ttl: HumanDuration::secs(30),
            replica_id: None,
            requests_per_minute: 500,
            requests_per_hour: 25_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum ApiVersion {
    V1,
    V2,
}

impl TryFrom<u8> for ApiVersion {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(ApiVersion::V1),
            2 => Ok(ApiVersion::V2),
            other => Err(format!("api_version {other} does not exist (1 or 2)")),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub name: AccountName,
    /// Shown as `p_source_label`; the name when absent.
    pub label: Option<String>,
    /// `https://events.1password.com` etc.; taken from the token's `aud` when absent.
    pub base_url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// Feeds to poll; every feed the token may read when absent.
    pub feeds: Option<Vec<Feed>>,
    /// Where a feed with no cursor starts (RFC 3339); one hour back when absent.
    pub start_time: Option<String>,
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_api_version")]
    pub api_version: ApiVersion,
    /// `p_source_id`; a UUID derived from the account name when absent, stable across restarts.
    pub source_id: Option<String>,
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_page_size() -> u32 {
    1000
}
fn default_api_version() -> ApiVersion {
    ApiVersion::V2
}

impl AccountConfig {
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(self.name.as_str())
    }

    pub fn token(&self) -> SecretSource {
        // validate() guarantees exactly one is set.
        match (&self.token_file, &self.token_env) {
            (Some(f), _) => SecretSource::File(f.clone()),
            (None, Some(e)) => SecretSource::Env(e.clone()),
            (None, None) => SecretSource::Env(String::new()),
        }
    }

    /// The checks of `accounts[i]` alone.
    pub(super) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let a = self;
        let key = |k: &str| format!("accounts[{i}].{k}");
        if SecretSource::from_keys(&key("token"), &a.token_file, &a.token_env)?.is_none() {
            return Err(ConfigError::new(
                key("token_file"),
                "missing: set token_file (a mounted Secret) or token_env",
            ));
        }
        if let Some(url) = &a.base_url {
            check_url(&key("base_url"), url)?;
        }
        if let Some(start) = &a.start_time {
            if a.start_time().is_none() {
                return Err(ConfigError::new(
                    key("start_time"),
                    format!("`{start}` is not an RFC 3339 time such as 2026-01-01T00:00:00Z"),
                ));
            }
        }
        if !(1..=1000).contains(&a.page_size) {
            return Err(ConfigError::new(
                key("page_size"),
                format!(
                    "{} is out of range (1 to 1000, the API's limit)",
                    a.page_size
                ),
            ));
        }
        check_range(
            &key("poll_interval"),
            a.poll_interval,
            HumanDuration::secs(1),
            HumanDuration::secs(3600),
        )?;
        if a.feeds.as_ref().is_some_and(|f| f.is_empty()) {
            return Err(ConfigError::new(
                key("feeds"),
                "empty: leave it out to poll every feed the token allows",
            ));
        }
        Ok(())
    }

    pub fn start_time(&self) -> Option<OffsetDateTime> {
        self.start_time.as_deref().and_then(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        })
    }
}

impl Config {
    pub(super) fn validate_fetcher(&self) -> Result<(), ConfigError> {
        let f = &self.fetcher;
        check_range(
            "fetcher.lease_ttl",
            f.lease_ttl,
            HumanDuration::secs(3),
            HumanDuration::secs(600),
        )?;
        if !(1..=600).contains(&f.requests_per_minute) {
            return Err(ConfigError::new(
                "fetcher.requests_per_minute",
                format!(
                    "{} is out of range (1 to 600, the API's limit)",
                    f.requests_per_minute
                ),
            ));
        }
        if !(1..=30_000).contains(&f.requests_per_hour) {
            return Err(ConfigError::new(
                "fetcher.requests_per_hour",
                format!(
                    "{} is out of range (1 to 30000, the API's limit)",
                    f.requests_per_hour
                ),
            ));
        }
        Ok(())
    }

    /// That every account's token can be found: the file exists, the variable is set. Only the
    /// fetcher (and `oprelay config check`) needs the tokens, so the other services, whose pods
    /// do not mount them, skip this.
    pub fn check_account_tokens(&self) -> Result<(), ConfigError> {
        first_problem(self.token_problems())
    }

    /// Every account token that cannot be found, not only the first.
    pub fn token_problems(&self) -> Vec<ConfigError> {
        let mut found = Vec::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let key = |k: &str| format!("accounts[{i}].{k}");
            match a.token() {
                SecretSource::File(p) => found.extend(check_file(&key("token_file"), &p).err()),
                SecretSource::Env(e) => {
                    if std::env::var_os(&e).is_none() {
                        found.push(ConfigError::new(
                            key("token_env"),
                            format!("environment variable {e} is not set"),
                        ));
                    }
                }
            }
        }
        found
    }
}
