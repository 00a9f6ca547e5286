//! `type = "elasticsearch"`: Elasticsearch or OpenSearch through `_bulk`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{check_basic_auth, OutputFormat, SinkKeys};
use crate::config::{check_url, ConfigError};

/// The keys of an Elasticsearch (or OpenSearch) sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// The cluster's root URL; `/_bulk` is added.
    pub endpoint: String,
    /// The index name, with `{log_type}`, `{feed}`, `{account}`, `{yyyy.MM.dd}` or `{yyyy.MM}`
    /// filled in per record.
    #[serde(default = "default_index")]
    pub index: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// An API key (the base64 `id:key` form); taken before `username`/`password_file`.
    pub api_key_file: Option<PathBuf>,
    #[serde(default)]
    pub gzip: bool,
    /// Install oprelay's index template (field types for the `panther` or `ecs` format) before
    /// the first batch, so dates, IPs and ids are mapped as such.
    #[serde(default)]
    pub manage_template: bool,
}

fn default_index() -> String {
    "oprelay-{log_type}-{yyyy.MM.dd}".to_owned()
}

impl SinkKeys for ElasticsearchConfig {
    fn check(&self, format: OutputFormat) -> Result<(), ConfigError> {
        check_url("endpoint", &self.endpoint)?;
        if self.manage_template && format == OutputFormat::Raw {
            return Err(ConfigError::new(
                "manage_template",
                "oprelay has index templates for the panther and ecs formats; the raw format \
                 keeps 1Password's own fields, which Elasticsearch maps by itself",
            ));
        }
        check_basic_auth(&self.username, &self.password_file)
    }

    fn files(&self) -> Vec<(String, &Path)> {
        [
            ("password_file", &self.password_file),
            ("api_key_file", &self.api_key_file),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.as_deref().map(|p| (k.to_owned(), p)))
        .collect()
    }
}
