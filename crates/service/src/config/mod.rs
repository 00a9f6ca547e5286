//! The one TOML file every service reads, layered as `docs/architecture.md` says:
//! defaults → file (`--config` / `OPRELAY_CONFIG`) → `OPRELAY_…` environment (`__` nests).
//!
//! Everything is checked at start: an unknown key, a bad account name, a duration out of range
//! or a token file that is not there stops the service with a message naming the key, instead
//! of a failure at 3 a.m. on the first poll.

mod accounts;
mod healthwatch;
mod nats;
mod secret;
mod sinks;
mod telemetry;

pub use accounts::{AccountConfig, ApiVersion, FetcherConfig};
pub use healthwatch::{HealthwatchConfig, NotifyConfig, NotifyType};
pub use nats::NatsConfig;
pub use secret::{SecretError, SecretSource};
pub use sinks::{
    BatchConfig, ElasticsearchConfig, Encoding, FileConfig, HttpConfig, OutputFormat, SinkConfig,
    SinkSettings, SinkType, SplunkHecConfig, SyslogConfig, TlsConfig, Transport,
};
pub use telemetry::{LogFormat, TelemetryConfig};

use std::path::Path;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::units::HumanDuration;

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Top-level sections; environment variables outside them are not config (a token in
/// `OPRELAY_TOKEN_ACME` named by `token_env` must not be read as an unknown key).
const SECTIONS: &[&str] = &[
    "nats",
    "telemetry",
    "fetcher",
    "accounts",
    "sinks",
    "healthwatch",
];

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub nats: NatsConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub fetcher: FetcherConfig,
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    #[serde(default)]
    pub healthwatch: HealthwatchConfig,
}

/// Loads and validates the configuration. `path` is `--config`; `OPRELAY_CONFIG` is read by
/// the CLI layer (clap) into the same argument.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    load_all(path).map_err(|problems| {
        problems
            .into_iter()
            .next()
            .unwrap_or_else(|| ConfigError::new("(top level)", "invalid"))
    })
}

/// [`load`], reporting every problem instead of the first: figment's (each bad key or type)
/// when the file does not parse into the config, else every section's.
pub fn load_all(path: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let config = parse(path)?;
    let problems = config.problems();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// The file and the environment read into a [`Config`], not yet validated: every key and
/// type error figment finds.
pub fn parse(path: Option<&Path>) -> Result<Config, Vec<ConfigError>> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        if !path.is_file() {
            return Err(vec![ConfigError::new(
                "--config",
                format!("{} does not exist or is not a file", path.display()),
            )]);
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed("OPRELAY_").split("__").filter(|k| {
        // A section name, then the `__` separator (already turned into `.` here):
        // `OPRELAY_NATS__URL` is config, `OPRELAY_NATS_URL` (the CLI's) and
        // `OPRELAY_TOKEN_ACME` are not.
        let k = k.as_str().to_ascii_lowercase();
        SECTIONS.iter().any(|s| {
            k.strip_prefix(s)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
    }));
    figment
        .extract()
        .map_err(|e| e.into_iter().map(figment_error).collect())
}

/// Parses a TOML string the way [`load`] parses a file (no environment), and checks the
/// account tokens as the fetcher would: for tests and rendered manifests.
pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let config: Config = Figment::from(Toml::string(text))
        .extract()
        .map_err(figment_error)?;
    config.validate()?;
    config.check_account_tokens()?;
    Ok(config)
}

fn figment_error(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        "(top level)".to_owned()
    } else {
        e.path.join(".")
    };
    let source = e
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    ConfigError::new(key, format!("{}{source}", e.kind))
}

/// `Ok` when there is no problem, else the first.
fn first_problem(problems: Vec<ConfigError>) -> Result<(), ConfigError> {
    problems.into_iter().next().map_or(Ok(()), Err)
}

fn check_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::new(
            key,
            format!("{} is not a file", path.display()),
        )),
        Err(e) => Err(ConfigError::new(
            key,
            format!("{} cannot be read: {}", path.display(), e.kind()),
        )),
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("`{url}` is not an http(s) URL"),
        ))
    }
}

fn check_range(
    key: &str,
    value: HumanDuration,
    min: HumanDuration,
    max: HumanDuration,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(
            key,
            format!("{value} is out of range ({min} to {max})"),
        ));
    }
    Ok(())
}

impl Config {
    /// Every check that does not need the network; the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        first_problem(self.problems())
    }

    /// Every problem the offline checks find, one per section (NATS, fetcher, each account,
    /// each sink, healthwatch), so `oprelay config check` can list them all at once.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut found = Vec::new();
        let mut note = |r: Result<(), ConfigError>| found.extend(r.err());
        note(self.validate_nats());
        note(self.validate_fetcher());
        let mut names = std::collections::HashSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            if !names.insert(a.name.clone()) {
                note(Err(ConfigError::new(
                    format!("accounts[{i}].name"),
                    format!("`{}` is used by two accounts", a.name),
                )));
            }
            note(a.validate(i));
        }
        let mut sink_names = std::collections::HashSet::new();
        for (i, s) in self.sinks.iter().enumerate() {
            if !sink_names.insert(s.name.clone()) {
                note(Err(ConfigError::new(
                    format!("sinks[{i}].name"),
                    format!("`{}` is used by two sinks", s.name),
                )));
            }
            note(s.validate(&format!("sinks[{i}]")));
        }
        note(self.validate_healthwatch());
        found
    }
}
