//! `type = "splunk_hec"`: Splunk's HTTP Event Collector.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{OutputFormat, SinkKeys};
use crate::config::{check_range, check_url, ConfigError, SecretSource};
use crate::units::HumanDuration;

/// The keys of a Splunk HEC sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecConfig {
    /// `https://splunk.example.com:8088`; `/services/collector/event` is added.
    pub endpoint: String,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// Unset: the token's default index.
    pub index: Option<String>,
    /// Unset: `1password:{feed}`.
    pub sourcetype: Option<String>,
    /// Indexer acknowledgement: a batch counts as delivered only once Splunk says it is indexed.
    #[serde(default)]
    pub ack: bool,
    /// With `ack`: how long to wait for indexing to be confirmed before sending the batch
    /// again.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: HumanDuration,
    /// On by default: HEC takes gzip everywhere, and it cuts the bytes sent about tenfold.
    #[serde(default = "yes")]
    pub gzip: bool,
}

fn default_ack_timeout() -> HumanDuration {
    HumanDuration::secs(120)
}

fn yes() -> bool {
    true
}

impl SplunkHecConfig {
    /// Where the HEC token comes from (`token_file`, else `token_env`).
    pub fn token(&self) -> Option<SecretSource> {
        SecretSource::either(&self.token_file, &self.token_env)
    }
}

impl SinkKeys for SplunkHecConfig {
    fn check(&self, _format: OutputFormat) -> Result<(), ConfigError> {
        check_url("endpoint", &self.endpoint)?;
        if SecretSource::from_keys("token", &self.token_file, &self.token_env)?.is_none() {
            return Err(ConfigError::new(
                "token_file",
                "missing: a splunk_hec sink needs its HEC token (token_file or token_env)",
            ));
        }
        check_range(
            "ack_timeout",
            self.ack_timeout,
            HumanDuration::secs(1),
            HumanDuration::secs(600),
        )
    }

    fn files(&self) -> Vec<(String, &Path)> {
        self.token_file
            .iter()
            .map(|p| ("token_file".to_owned(), p.as_path()))
            .collect()
    }
}
