//! `[[sinks]]`: the SIEM destinations, the keys each type takes, and the forwarder's consumer
//! for each.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use oprelay_bus::ConsumerSpec;
use oprelay_events::names;
use oprelay_events::{AccountName, Feed};

use super::{check_file, check_range, check_url, first_problem, Config, ConfigError, SecretSource};
use crate::units::{ByteSize, HumanDuration};

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

impl Config {
    /// That every file a sink reads (tokens, passwords, TLS material, header files) is
    /// there. Only the forwarder (and `oprelay config check`) needs them: the other pods do not
    /// mount the SIEM credentials, so loading the config does not open them.
    pub fn check_sink_files(&self) -> Result<(), ConfigError> {
        first_problem(self.sink_file_problems())
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

    /// The checks of `sinks[i]` alone (`at` is `sinks[i]`), in the order a reader fixes them:
    /// the name, which keys the type takes, then their values.
    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
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
        self.check_keys(&key)?;
        self.check_values(&key)?;
        self.batch.check(&key)
    }

    /// The type-specific keys that are set.
    fn given(&self) -> [(&'static str, bool); 19] {
        [
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
        ]
    }

    /// No key another type takes; every key this type needs.
    fn check_keys(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let (allowed, required) = self.kind.keys();
        let given = self.given();
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
        Ok(())
    }

    /// The values of the keys that are set.
    fn check_values(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
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
        self.transport()
            .map_err(|problem| ConfigError::new(key("transport"), problem))?;
        self.encoding()
            .map_err(|problem| ConfigError::new(key("encoding"), problem))?;
        if let Some(t) = self.ack_timeout {
            check_range(
                &key("ack_timeout"),
                t,
                HumanDuration::secs(1),
                HumanDuration::secs(600),
            )?;
        }
        Ok(())
    }

    /// A syslog sink's transport (`tcp` unless set).
    pub fn transport(&self) -> Result<Transport, String> {
        match self.transport.as_deref() {
            None | Some("tcp") => Ok(Transport::Tcp),
            Some("tls") => Ok(Transport::Tls),
            Some("udp") => Ok(Transport::Udp),
            Some(other) => Err(format!("`{other}` is not tcp, tls or udp")),
        }
    }

    /// An HTTP sink's body encoding (`ndjson` unless set).
    pub fn encoding(&self) -> Result<Encoding, String> {
        match self.encoding.as_deref() {
            None | Some("ndjson") => Ok(Encoding::Ndjson),
            Some("json_array") => Ok(Encoding::JsonArray),
            Some(other) => Err(format!("`{other}` is not ndjson or json_array")),
        }
    }
}

/// How a syslog sink reaches its server (RFC 6587 framing on TCP and TLS, RFC 5426 on UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Udp,
}

/// How an HTTP sink writes a batch: one JSON record per line, or one JSON array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Ndjson,
    JsonArray,
}

impl SinkType {
    /// The type-specific keys this type takes, and those it needs.
    fn keys(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
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
        }
    }
}

impl BatchConfig {
    fn check(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        check_range(
            &key("batch.timeout"),
            self.timeout,
            HumanDuration(std::time::Duration::from_millis(10)),
            HumanDuration::secs(300),
        )?;
        if !(1..=64).contains(&self.in_flight) {
            return Err(ConfigError::new(
                key("batch.in_flight"),
                "must be between 1 and 64",
            ));
        }
        if self.max_events == 0 {
            return Err(ConfigError::new(
                key("batch.max_events"),
                "must be at least 1",
            ));
        }
        if self.max_bytes.0 < 1024 {
            return Err(ConfigError::new(
                key("batch.max_bytes"),
                "must be at least 1KiB",
            ));
        }
        Ok(())
    }
}
