//! The one TOML file every service reads, layered as `docs/architecture.md` says:
//! defaults → file (`--config` / `OPRELAY_CONFIG`) → `OPRELAY_…` environment (`__` nests).
//!
//! Everything is checked at start: an unknown key, a bad account name, a duration out of range
//! or a token file that is not there stops the service with a message naming the key, instead
//! of a failure at 3 a.m. on the first poll.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use time::OffsetDateTime;

use oprelay_bus::{ConsumerSpec, NatsSettings, Topology};
use oprelay_events::names;
use oprelay_events::{AccountName, Feed, Secret};

use crate::units::{ByteSize, HumanDuration};

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

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub url: String,
    pub creds_file: Option<PathBuf>,
    pub user: Option<String>,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (a mounted Secret).
    pub password_file: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Replicas of every stream and bucket: 1 for one server, 3 for a cluster.
    pub replicas: usize,
    /// How long raw pages stay in `OP_RAW` (replay window).
    pub raw_max_age: HumanDuration,
    pub events_max_age: HumanDuration,
    pub dlq_max_age: HumanDuration,
    /// How long JetStream remembers message ids for de-duplication.
    pub duplicate_window: HumanDuration,
    /// How long a message may stay unacknowledged before it is redelivered (after a crash).
    pub ack_wait: HumanDuration,
    /// Size limits of the streams (unset: only the age limit). A full stream drops its
    /// oldest messages, so leave room for the longest consumer backlog you want to survive.
    pub raw_max_bytes: Option<ByteSize>,
    pub events_max_bytes: Option<ByteSize>,
    pub dlq_max_bytes: Option<ByteSize>,
    pub alarms_max_bytes: Option<ByteSize>,
    /// Create and update the streams, buckets and consumers when the service starts, instead
    /// of only checking they exist. For the local demo and tests; in production provisioning
    /// is an operator's step (`oprelay nats provision`), and the services' NATS users have no
    /// right to change the topology.
    pub provision_at_start: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        let t = Topology::default();
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            creds_file: None,
            user: None,
            password_env: None,
            password_file: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            replicas: t.replicas,
            raw_max_age: HumanDuration(t.raw_max_age),
            events_max_age: HumanDuration(t.events_max_age),
            dlq_max_age: HumanDuration(t.dlq_max_age),
            duplicate_window: HumanDuration(t.duplicate_window),
            ack_wait: HumanDuration(t.ack_wait),
            raw_max_bytes: None,
            events_max_bytes: None,
            dlq_max_bytes: None,
            alarms_max_bytes: None,
            provision_at_start: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// `tracing` filter, e.g. `info` or `info,oprelay_fetcher=debug`; `RUST_LOG` wins.
    pub log_level: String,
    /// OTLP/gRPC endpoint for traces; empty: none exported.
    pub otlp_endpoint: String,
    /// `/healthz` `/readyz` `/metrics`; each service has its own default port.
    pub listen: Option<SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp_endpoint: String::new(),
            listen: None,
        }
    }
}

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

/// Where a secret comes from: a file (a mounted Kubernetes Secret) or an environment variable.
/// Never the config file itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("{0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the secret now, trimmed of surrounding whitespace. Called again after a rejection,
    /// so a rotated Secret is picked up without a restart.
    pub fn read(&self) -> Result<Secret, SecretError> {
        let (value, what) = match self {
            SecretSource::File(path) => (
                std::fs::read_to_string(path).map_err(|e| SecretError::File {
                    path: path.display().to_string(),
                    reason: e.kind().to_string(),
                })?,
                path.display().to_string(),
            ),
            SecretSource::Env(name) => (
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?,
                format!("environment variable {name}"),
            ),
        };
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(SecretError::Empty(what));
        }
        Ok(Secret::new(trimmed))
    }

    fn from_keys(
        key: &str,
        file: &Option<PathBuf>,
        env: &Option<String>,
    ) -> Result<Option<SecretSource>, ConfigError> {
        match (file, env) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                format!("{key}_file / {key}_env"),
                "set one of them, not both",
            )),
            (Some(f), None) => Ok(Some(SecretSource::File(f.clone()))),
            (None, Some(e)) => Ok(Some(SecretSource::Env(e.clone()))),
            (None, None) => Ok(None),
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
    fn validate(&self, i: usize) -> Result<(), ConfigError> {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    SplunkHec,
    Elasticsearch,
    Syslog,
    Http,
    File,
}

impl SinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkType::SplunkHec => "splunk_hec",
            SinkType::Elasticsearch => "elasticsearch",
            SinkType::Syslog => "syslog",
            SinkType::Http => "http",
            SinkType::File => "file",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    #[default]
    Panther,
    Raw,
    Ecs,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_batch_timeout")]
    pub timeout: HumanDuration,
    /// Batches being delivered at once; more hides SIEM latency, 1 keeps strict order.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
}

fn default_in_flight() -> usize {
    2
}

fn default_max_events() -> usize {
    500
}
fn default_batch_bytes() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_batch_timeout() -> HumanDuration {
    HumanDuration::secs(1)
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: default_max_events(),
            max_bytes: default_batch_bytes(),
            timeout: default_batch_timeout(),
            in_flight: default_in_flight(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Certificate verification; turning it off must be written out and is logged.
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify: true,
        }
    }
}

/// One SIEM destination. Keys that do not apply to the sink's `type` are rejected by name.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkType,
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    pub accounts: Option<Vec<AccountName>>,
    pub feeds: Option<Vec<Feed>>,
    pub endpoint: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub index: Option<String>,
    pub sourcetype: Option<String>,
    pub ack: Option<bool>,
    /// Splunk HEC with `ack`: how long to wait for indexing to be confirmed before sending the
    /// batch again (120 s by default; 1 s to 10 min).
    pub ack_timeout: Option<HumanDuration>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub api_key_file: Option<PathBuf>,
    pub address: Option<String>,
    pub transport: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    /// Headers whose values are secrets, each read from a file (a mounted Secret) before every
    /// request, as tokens are: `{ "X-API-Key" = "/etc/oprelay/sinks/panther-key" }`.
    pub headers_from_files: Option<BTreeMap<String, PathBuf>>,
    pub encoding: Option<String>,
    pub gzip: Option<bool>,
    pub path: Option<PathBuf>,
    pub max_bytes: Option<ByteSize>,
    /// Elasticsearch: install oprelay's index template (field types for the `panther` or
    /// `ecs` format) before the first batch, so dates, IPs and ids are mapped as such.
    pub manage_template: Option<bool>,
}

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
        match self.problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
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

    fn validate_fetcher(&self) -> Result<(), ConfigError> {
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

    fn validate_healthwatch(&self) -> Result<(), ConfigError> {
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

    /// That every file a sink reads (tokens, passwords, TLS material, header files) is
    /// there. Only the forwarder (and `oprelay config check`) needs them: the other pods do not
    /// mount the SIEM credentials, so loading the config does not open them.
    pub fn check_sink_files(&self) -> Result<(), ConfigError> {
        match self.sink_file_problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every sink file that cannot be read, not only the first.
    pub fn sink_file_problems(&self) -> Vec<ConfigError> {
        let mut found = Vec::new();
        for (i, s) in self.sinks.iter().enumerate() {
            let key = |k: &str| format!("sinks[{i}].{k}");
            for (k, p) in [
                ("token_file", &s.token_file),
                ("password_file", &s.password_file),
                ("api_key_file", &s.api_key_file),
                ("tls.ca_file", &s.tls.ca_file),
                ("tls.cert_file", &s.tls.cert_file),
                ("tls.key_file", &s.tls.key_file),
            ] {
                if let Some(p) = p {
                    found.extend(check_file(&key(k), p).err());
                }
            }
            for (name, p) in s.headers_from_files.iter().flatten() {
                found.extend(check_file(&key(&format!("headers_from_files.{name}")), p).err());
            }
        }
        found
    }

    /// That every account's token can be found: the file exists, the variable is set. Only the
    /// fetcher (and `oprelay config check`) needs the tokens, so the other services, whose pods
    /// do not mount them, skip this.
    pub fn check_account_tokens(&self) -> Result<(), ConfigError> {
        match self.token_problems().into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
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

    fn validate_nats(&self) -> Result<(), ConfigError> {
        let n = &self.nats;
        let ok_scheme = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|s| n.url.starts_with(s))
            || !n.url.contains("://");
        if n.url.trim().is_empty() || !ok_scheme {
            return Err(ConfigError::new(
                "nats.url",
                format!("`{}` is not a NATS URL (nats://host:4222)", n.url),
            ));
        }
        if n.replicas == 0 || n.replicas > 5 {
            return Err(ConfigError::new(
                "nats.replicas",
                format!("{} is out of range (1 to 5)", n.replicas),
            ));
        }
        if n.password_env.is_some() && n.password_file.is_some() {
            return Err(ConfigError::new(
                "nats.password_env / nats.password_file",
                "set one of them, not both",
            ));
        }
        if n.user.is_some() != (n.password_env.is_some() || n.password_file.is_some()) {
            return Err(ConfigError::new(
                "nats.user",
                "user and a password (password_env or password_file) go together",
            ));
        }
        for (key, path) in [
            ("nats.creds_file", &n.creds_file),
            ("nats.password_file", &n.password_file),
            ("nats.tls_ca", &n.tls_ca),
            ("nats.tls_cert", &n.tls_cert),
            ("nats.tls_key", &n.tls_key),
        ] {
            if let Some(p) = path {
                check_file(key, p)?;
            }
        }
        if n.tls_cert.is_some() != n.tls_key.is_some() {
            return Err(ConfigError::new(
                "nats.tls_cert",
                "tls_cert and tls_key go together",
            ));
        }
        check_range(
            "nats.ack_wait",
            n.ack_wait,
            HumanDuration::secs(1),
            HumanDuration::secs(3600),
        )?;
        if n.duplicate_window.0 < std::time::Duration::from_secs(600) {
            return Err(ConfigError::new(
                "nats.duplicate_window",
                "must be at least 10m so a page re-fetched after a restart is still recognised",
            ));
        }
        // JetStream reads a max_age of 0 as "keep for ever"; a typo must not mean that.
        const YEAR: u64 = 365 * 86_400;
        for (key, age) in [
            ("nats.raw_max_age", n.raw_max_age),
            ("nats.events_max_age", n.events_max_age),
            ("nats.dlq_max_age", n.dlq_max_age),
        ] {
            check_range(
                key,
                age,
                HumanDuration::secs(3600),
                HumanDuration::secs(10 * YEAR),
            )?;
        }
        check_range(
            "nats.duplicate_window",
            n.duplicate_window,
            HumanDuration::secs(600),
            HumanDuration::secs(30 * 86_400),
        )?;
        for (key, size) in [
            ("nats.raw_max_bytes", n.raw_max_bytes),
            ("nats.events_max_bytes", n.events_max_bytes),
            ("nats.dlq_max_bytes", n.dlq_max_bytes),
            ("nats.alarms_max_bytes", n.alarms_max_bytes),
        ] {
            // Below a few pages a stream cannot hold one backlog; JetStream reads 0 as none.
            if let Some(size) = size {
                if size.0 < 16 * 1024 * 1024 {
                    return Err(ConfigError::new(
                        key,
                        format!("{size} is too small (at least 16MiB; leave it unset for no size limit)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// How to connect, with the password read now from its file or variable.
    pub fn nats_settings(&self, client_name: &str) -> Result<NatsSettings, ConfigError> {
        let n = &self.nats;
        let password =
            match SecretSource::from_keys("nats.password", &n.password_file, &n.password_env)? {
                Some(src) => Some(
                    src.read()
                        .map_err(|e| ConfigError::new("nats.password", e.to_string()))?,
                ),
                None => None,
            };
        Ok(NatsSettings {
            url: n.url.clone(),
            user: n.user.clone(),
            password,
            creds_file: n.creds_file.clone(),
            tls_ca: n.tls_ca.clone(),
            tls_cert: n.tls_cert.clone(),
            tls_key: n.tls_key.clone(),
            client_name: Some(client_name.to_owned()),
        })
    }

    pub fn topology(&self) -> Topology {
        let n = &self.nats;
        Topology {
            replicas: n.replicas,
            raw_max_age: n.raw_max_age.0,
            events_max_age: n.events_max_age.0,
            dlq_max_age: n.dlq_max_age.0,
            duplicate_window: n.duplicate_window.0,
            ack_wait: n.ack_wait.0,
            raw_max_bytes: n.raw_max_bytes.map(|b| b.0),
            events_max_bytes: n.events_max_bytes.map(|b| b.0),
            dlq_max_bytes: n.dlq_max_bytes.map(|b| b.0),
            alarms_max_bytes: n.alarms_max_bytes.map(|b| b.0),
            consumers: std::iter::once(ConsumerSpec::normalizer())
                .chain(self.sinks.iter().map(SinkConfig::consumer))
                .collect(),
            ..Topology::default()
        }
    }
}

impl SinkConfig {
    /// The forwarder's durable consumer for this sink on `OP_EVENTS`: exactly the accounts and
    /// feeds the sink takes (one filter per pair, `*` where it takes all), and the replays
    /// meant for it alone.
    pub fn consumer(&self) -> ConsumerSpec {
        let accounts: Vec<Option<&AccountName>> = match &self.accounts {
            Some(list) => list.iter().map(Some).collect(),
            None => vec![None],
        };
        let feeds: Vec<Option<Feed>> = match &self.feeds {
            Some(list) => list.iter().copied().map(Some).collect(),
            None => vec![None],
        };
        let mut filters = Vec::new();
        for account in &accounts {
            for feed in &feeds {
                let filter = names::events_filter(*account, *feed);
                // JetStream refuses overlapping filters; a name listed twice would be one.
                if !filters.contains(&filter) {
                    filters.push(filter);
                }
            }
        }
        filters.push(names::replay_filter(&self.name));
        ConsumerSpec {
            stream: names::STREAM_EVENTS.to_owned(),
            durable: names::sink_consumer(&self.name),
            filters,
        }
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 32
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(ConfigError::new(key("name"), format!("`{}` is not 1–32 characters of a-z, 0-9, `_` or `-` (it names a NATS consumer)", self.name)));
        }
        let given: Vec<(&str, bool)> = vec![
            ("endpoint", self.endpoint.is_some()),
            ("token_file", self.token_file.is_some()),
            ("token_env", self.token_env.is_some()),
            ("index", self.index.is_some()),
            ("sourcetype", self.sourcetype.is_some()),
            ("ack", self.ack.is_some()),
            ("ack_timeout", self.ack_timeout.is_some()),
            ("username", self.username.is_some()),
            ("password_file", self.password_file.is_some()),
            ("api_key_file", self.api_key_file.is_some()),
            ("address", self.address.is_some()),
            ("transport", self.transport.is_some()),
            ("headers", self.headers.is_some()),
            ("headers_from_files", self.headers_from_files.is_some()),
            ("encoding", self.encoding.is_some()),
            ("gzip", self.gzip.is_some()),
            ("path", self.path.is_some()),
            ("max_bytes", self.max_bytes.is_some()),
            ("manage_template", self.manage_template.is_some()),
        ];
        let (allowed, required): (&[&str], &[&str]) = match self.kind {
            SinkType::SplunkHec => (
                &[
                    "endpoint",
                    "token_file",
                    "token_env",
                    "index",
                    "sourcetype",
                    "ack",
                    "ack_timeout",
                    "gzip",
                ],
                &["endpoint"],
            ),
            SinkType::Elasticsearch => (
                &[
                    "endpoint",
                    "index",
                    "username",
                    "password_file",
                    "api_key_file",
                    "gzip",
                    "manage_template",
                ],
                &["endpoint"],
            ),
            SinkType::Syslog => (&["address", "transport"], &["address"]),
            SinkType::Http => (
                &[
                    "endpoint",
                    "headers",
                    "headers_from_files",
                    "token_file",
                    "token_env",
                    "username",
                    "password_file",
                    "encoding",
                    "gzip",
                ],
                &["endpoint"],
            ),
            SinkType::File => (&["path", "max_bytes"], &["path"]),
        };
        for (k, is_set) in &given {
            if *is_set && !allowed.contains(k) {
                return Err(ConfigError::new(
                    key(k),
                    format!("does not apply to a {} sink", self.kind.as_str()),
                ));
            }
        }
        for k in required {
            if !given.iter().any(|(g, set)| g == k && *set) {
                return Err(ConfigError::new(
                    key(k),
                    format!("missing: a {} sink needs it", self.kind.as_str()),
                ));
            }
        }
        if let Some(url) = &self.endpoint {
            check_url(&key("endpoint"), url)?;
        }
        if self.manage_template == Some(true) && self.format == OutputFormat::Raw {
            return Err(ConfigError::new(
                key("manage_template"),
                "oprelay has index templates for the panther and ecs formats; the raw format \
                 keeps 1Password's own fields, which Elasticsearch maps by itself",
            ));
        }
        SecretSource::from_keys(&key("token"), &self.token_file, &self.token_env)?;
        if self.kind == SinkType::SplunkHec && self.token_file.is_none() && self.token_env.is_none()
        {
            return Err(ConfigError::new(
                key("token_file"),
                "missing: a splunk_hec sink needs its HEC token (token_file or token_env)",
            ));
        }
        if self.username.is_some() != self.password_file.is_some() {
            return Err(ConfigError::new(
                key("username"),
                "username and password_file go together",
            ));
        }
        if let Some(t) = &self.transport {
            if !["tcp", "tls", "udp"].contains(&t.as_str()) {
                return Err(ConfigError::new(
                    key("transport"),
                    format!("`{t}` is not tcp, tls or udp"),
                ));
            }
        }
        if let Some(e) = &self.encoding {
            if !["ndjson", "json_array"].contains(&e.as_str()) {
                return Err(ConfigError::new(
                    key("encoding"),
                    format!("`{e}` is not ndjson or json_array"),
                ));
            }
        }
        if let Some(t) = self.ack_timeout {
            check_range(
                &key("ack_timeout"),
                t,
                HumanDuration::secs(1),
                HumanDuration::secs(600),
            )?;
        }
        check_range(
            &key("batch.timeout"),
            self.batch.timeout,
            HumanDuration(std::time::Duration::from_millis(10)),
            HumanDuration::secs(300),
        )?;
        if !(1..=64).contains(&self.batch.in_flight) {
            return Err(ConfigError::new(
                key("batch.in_flight"),
                "must be between 1 and 64",
            ));
        }
        if self.batch.max_events == 0 {
            return Err(ConfigError::new(
                key("batch.max_events"),
                "must be at least 1",
            ));
        }
        if self.batch.max_bytes.0 < 1024 {
            return Err(ConfigError::new(
                key("batch.max_bytes"),
                "must be at least 1KiB",
            ));
        }
        Ok(())
    }
}
