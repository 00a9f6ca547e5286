//! `type = "http"`: a generic HTTP endpoint (Panther's HTTP source, a webhook, a collector).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{check_basic_auth, OutputFormat, SinkKeys};
use crate::config::{check_url, ConfigError, SecretSource};

/// The keys of a generic HTTP sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The URL every batch is POSTed to.
    pub endpoint: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are secrets, each read from a file (a mounted Secret) before every
    /// request, as tokens are: `{ "X-API-Key" = "/etc/oprelay/sinks/panther-key" }`.
    #[serde(default)]
    pub headers_from_files: BTreeMap<String, PathBuf>,
    /// A bearer token.
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// Basic auth, when there is no token.
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub gzip: bool,
}

/// How an HTTP sink writes a batch: one JSON record per line, or one JSON array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Encoding {
    #[default]
    Ndjson,
    JsonArray,
}

impl TryFrom<String> for Encoding {
    type Error = String;

    fn try_from(s: String) -> Result<Encoding, String> {
        match s.as_str() {
            "ndjson" => Ok(Encoding::Ndjson),
            "json_array" => Ok(Encoding::JsonArray),
            other => Err(format!("`{other}` is not ndjson or json_array")),
        }
    }
}

impl HttpConfig {
    /// Where the bearer token comes from (`token_file`, else `token_env`), if there is one.
    pub fn token(&self) -> Option<SecretSource> {
        SecretSource::either(&self.token_file, &self.token_env)
    }
}

impl SinkKeys for HttpConfig {
    fn check(&self, _format: OutputFormat) -> Result<(), ConfigError> {
        check_url("endpoint", &self.endpoint)?;
        SecretSource::from_keys("token", &self.token_file, &self.token_env)?;
        check_basic_auth(&self.username, &self.password_file)
    }

    fn files(&self) -> Vec<(String, &Path)> {
        let mut files: Vec<(String, &Path)> = [
            ("token_file", &self.token_file),
            ("password_file", &self.password_file),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.as_deref().map(|p| (k.to_owned(), p)))
        .collect();
        for (name, p) in &self.headers_from_files {
            files.push((format!("headers_from_files.{name}"), p));
        }
        files
    }
}
