//! `[healthwatch]`: alarm thresholds and where notifications go.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use oprelay_events::{AccountName, Feed};

use super::{check_range, check_url, Config, ConfigError};
use crate::units::HumanDuration;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthwatchConfig {
    #[serde(default = "default_dropoff")]
    pub dropoff_after: HumanDuration,
    /// Per-feed windows, keyed `account.feed`: `{ "acme.item_usages" = "48h" }`.
    #[serde(default)]
    pub dropoff_overrides: BTreeMap<String, HumanDuration>,
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// `token_expiring` fires this long before the token's `exp`.
    #[serde(default = "default_token_warning")]
    pub token_expiry_warning: HumanDuration,
    /// `fetch_failing` fires after this many failed polls in a row…
    #[serde(default = "default_fetch_failures")]
    pub fetch_failures: u32,
    /// …or when no poll succeeded for this long.
    #[serde(default = "default_fetch_silence")]
    pub fetch_silence: HumanDuration,
    /// `sink_stalled` fires when a sink has messages waiting and delivered none for this long.
    #[serde(default = "default_sink_stall")]
    pub sink_stalled_after: HumanDuration,
    /// How often alarms are evaluated.
    #[serde(default = "default_eval_interval")]
    pub interval: HumanDuration,
}

fn default_token_warning() -> HumanDuration {
    HumanDuration::secs(7 * 86_400)
}
fn default_fetch_failures() -> u32 {
    5
}
fn default_fetch_silence() -> HumanDuration {
    HumanDuration::secs(30 * 60)
}
fn default_sink_stall() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}
fn default_eval_interval() -> HumanDuration {
    HumanDuration::secs(30)
}

impl HealthwatchConfig {
    /// The drop-off window of one feed: its override, or the default.
    pub fn dropoff_for(&self, account: &str, feed: Feed) -> std::time::Duration {
        self.dropoff_overrides
            .get(&format!("{account}.{feed}"))
            .unwrap_or(&self.dropoff_after)
            .0
    }
}

fn default_dropoff() -> HumanDuration {
    HumanDuration::secs(24 * 3600)
}

impl Default for HealthwatchConfig {
    fn default() -> Self {
        HealthwatchConfig {
            dropoff_after: default_dropoff(),
            dropoff_overrides: BTreeMap::new(),
            notify: Vec::new(),
            token_expiry_warning: default_token_warning(),
            fetch_failures: default_fetch_failures(),
            fetch_silence: default_fetch_silence(),
            sink_stalled_after: default_sink_stall(),
            interval: default_eval_interval(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyType {
    Webhook,
    Slack,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(rename = "type")]
    pub kind: NotifyType,
    /// The endpoint. Slack webhook URLs are secrets: prefer `url_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the endpoint (a mounted Secret), read when healthwatch starts.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
}

impl NotifyConfig {
    /// The endpoint: `url`, or the first line of `url_file`.
    pub fn endpoint(&self, key: &str) -> Result<String, ConfigError> {
        match (&self.url, &self.url_file) {
            (Some(u), None) => Ok(u.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        format!("{key}.url_file"),
                        format!("{} cannot be read: {}", path.display(), e.kind()),
                    )
                })?;
                let url = text.trim().to_owned();
                check_url(&format!("{key}.url_file"), &url)?;
                Ok(url)
            }
            _ => Err(ConfigError::new(key, "set exactly one of url and url_file")),
        }
    }
}

impl Config {
    pub(super) fn validate_healthwatch(&self) -> Result<(), ConfigError> {
        let hw = &self.healthwatch;
        let (min, max) = (
            HumanDuration::secs(15 * 60),
            HumanDuration::secs(30 * 86_400),
        );
        check_range("healthwatch.dropoff_after", hw.dropoff_after, min, max)?;
        for (feed_key, window) in &hw.dropoff_overrides {
            let key = format!("healthwatch.dropoff_overrides.\"{feed_key}\"");
            let valid = feed_key
                .split_once('.')
                .is_some_and(|(a, f)| AccountName::new(a).is_ok() && f.parse::<Feed>().is_ok());
            if !valid {
                return Err(ConfigError::new(
                    key,
                    "keys are `account.feed`, e.g. \"acme.item_usages\"",
                ));
            }
            check_range(&key, *window, min, max)?;
        }
        const MINUTE: u64 = 60;
        const DAY: u64 = 86_400;
        for (key, value, min, max) in [
            ("healthwatch.interval", hw.interval, 1, 3600),
            (
                "healthwatch.token_expiry_warning",
                hw.token_expiry_warning,
                3600,
                90 * DAY,
            ),
            (
                "healthwatch.fetch_silence",
                hw.fetch_silence,
                MINUTE,
                7 * DAY,
            ),
            (
                "healthwatch.sink_stalled_after",
                hw.sink_stalled_after,
                MINUTE,
                7 * DAY,
            ),
        ] {
            check_range(
                key,
                value,
                HumanDuration::secs(min),
                HumanDuration::secs(max),
            )?;
        }
        for (i, n) in hw.notify.iter().enumerate() {
            let key = format!("healthwatch.notify[{i}]");
            match (&n.url, &n.url_file) {
                (Some(url), None) => check_url(&format!("{key}.url"), url)?,
                (None, Some(_)) => {}
                _ => return Err(ConfigError::new(key, "set exactly one of url and url_file")),
            }
        }
        Ok(())
    }
}
