//! `[[sinks]]`: the SIEM destinations. What every sink has (name, format, batching, TLS, the
//! accounts and feeds it takes) is here; the keys of each `type` are in that type's file, one
//! struct that rejects keys it does not know, and [`SinkSettings`] is the registry of types.
//!
//! Reading happens in two steps so that a bad key is named the way every other config problem
//! is (`sinks[1].index: does not apply to a syslog sink`): serde reads the shared keys and
//! keeps the rest as plain values, then the type's struct is read from them and any problem is
//! kept for [`Config::validate`] to report under the sink's index.

mod batch;
mod elasticsearch;
mod file;
mod http;
mod splunk_hec;
mod syslog;
mod tls;

pub use batch::BatchConfig;
pub use elasticsearch::ElasticsearchConfig;
pub use file::FileConfig;
pub use http::{Encoding, HttpConfig};
pub use splunk_hec::SplunkHecConfig;
pub use syslog::{SyslogConfig, Transport};
pub use tls::TlsConfig;

use std::path::{Path, PathBuf};

use figment::value::{Dict, Tag, Value};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use oprelay_bus::ConsumerSpec;
use oprelay_events::names;
use oprelay_events::{AccountName, Feed};
pub use oprelay_format::OutputFormat;

use super::{check_file, first_problem, Config, ConfigError};

/// The sink types, as `type` names them.
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

/// The keys of one sink's type, read into that type's struct: the registry of sink types.
/// Adding a type is a file beside this one, a variant here and one arm in each match below.
#[derive(Clone, Debug)]
pub enum SinkSettings {
    SplunkHec(SplunkHecConfig),
    Elasticsearch(ElasticsearchConfig),
    Syslog(SyslogConfig),
    Http(HttpConfig),
    File(FileConfig),
}

impl SinkSettings {
    /// Reads the keys a sink has beyond the shared ones as the struct of its `kind`.
    fn read(kind: SinkType, keys: Dict) -> Result<SinkSettings, ConfigError> {
        let keys = Value::Dict(Tag::Default, keys);
        Ok(match kind {
            SinkType::SplunkHec => SinkSettings::SplunkHec(read_as(kind, &keys)?),
            SinkType::Elasticsearch => SinkSettings::Elasticsearch(read_as(kind, &keys)?),
            SinkType::Syslog => SinkSettings::Syslog(read_as(kind, &keys)?),
            SinkType::Http => SinkSettings::Http(read_as(kind, &keys)?),
            SinkType::File => SinkSettings::File(read_as(kind, &keys)?),
        })
    }

    fn keys(&self) -> &dyn SinkKeys {
        match self {
            SinkSettings::SplunkHec(c) => c,
            SinkSettings::Elasticsearch(c) => c,
            SinkSettings::Syslog(c) => c,
            SinkSettings::Http(c) => c,
            SinkSettings::File(c) => c,
        }
    }
}

/// What the shared checks ask of every sink type's keys. Errors name keys relative to the
/// sink (`ack_timeout`); the caller puts `sinks[i].` in front.
trait SinkKeys {
    /// The checks of values that their types alone do not make.
    fn check(&self, format: OutputFormat) -> Result<(), ConfigError>;

    /// The files the sink reads, by key. Only the forwarder mounts them, so they are checked
    /// by [`Config::check_sink_files`], not at load.
    fn files(&self) -> Vec<(String, &Path)>;
}

/// Reads `keys` as `T`, naming the key a problem is with, and for a key the type does not
/// take, the type (figment's own message would say only "unknown field").
fn read_as<T: DeserializeOwned>(kind: SinkType, keys: &Value) -> Result<T, ConfigError> {
    use figment::error::Kind;
    keys.deserialize().map_err(|e: figment::Error| {
        let at = e.path.join(".");
        // figment puts an unknown key at the end of the path already, a missing one not.
        let under = |k: &str| match e.path.last() {
            Some(last) if last == k => at.clone(),
            Some(_) => format!("{at}.{k}"),
            None => k.to_owned(),
        };
        let kind = kind.as_str();
        match &e.kind {
            Kind::UnknownField(k, takes) => ConfigError::new(
                under(k),
                format!(
                    "does not apply to a {kind} sink (its keys: {})",
                    takes.join(", ")
                ),
            ),
            Kind::MissingField(k) => {
                ConfigError::new(under(k), format!("missing: a {kind} sink needs it"))
            }
            other => ConfigError::new(
                if at.is_empty() {
                    "type".to_owned()
                } else {
                    at.clone()
                },
                other.to_string(),
            ),
        }
    })
}

/// `username` and `password_file` (basic auth) come as a pair.
fn check_basic_auth(
    username: &Option<String>,
    password_file: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    if username.is_some() != password_file.is_some() {
        return Err(ConfigError::new(
            "username",
            "username and password_file go together",
        ));
    }
    Ok(())
}

/// A `[[sinks]]` entry as serde reads it: the shared keys, and the rest kept as values until
/// the type is known.
#[derive(Deserialize)]
struct RawSink {
    name: String,
    #[serde(rename = "type")]
    kind: SinkType,
    #[serde(default)]
    format: OutputFormat,
    #[serde(default)]
    batch: BatchConfig,
    #[serde(default)]
    tls: TlsConfig,
    accounts: Option<Vec<AccountName>>,
    feeds: Option<Vec<Feed>>,
    #[serde(flatten)]
    rest: Dict,
}

/// One SIEM destination: the shared keys, and its type's.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "RawSink")]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkType,
    pub format: OutputFormat,
    pub batch: BatchConfig,
    pub tls: TlsConfig,
    /// Only these accounts; `None`: all.
    pub accounts: Option<Vec<AccountName>>,
    /// Only these feeds; `None`: all.
    pub feeds: Option<Vec<Feed>>,
    /// The type's keys, or the first problem with them (its key relative to the sink), which
    /// [`Config::validate`] reports.
    settings: Result<SinkSettings, ConfigError>,
}

impl From<RawSink> for SinkConfig {
    fn from(raw: RawSink) -> SinkConfig {
        SinkConfig {
            settings: SinkSettings::read(raw.kind, raw.rest),
            name: raw.name,
            kind: raw.kind,
            format: raw.format,
            batch: raw.batch,
            tls: raw.tls,
            accounts: raw.accounts,
            feeds: raw.feeds,
        }
    }
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
            for (k, p) in s.files() {
                found.extend(check_file(&format!("sinks[{i}].{k}"), p).err());
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
        let under_sink = |e: ConfigError| ConfigError::new(key(&e.key), e.problem);
        let settings = self.settings.as_ref().map_err(|e| under_sink(e.clone()))?;
        settings.keys().check(self.format).map_err(under_sink)?;
        self.batch.check(&key)
    }

    /// Every file the sink reads (TLS material, tokens, passwords, secret headers), by key.
    pub fn files(&self) -> Vec<(String, &Path)> {
        let own = self.settings.as_ref().map(|t| t.keys().files());
        let mut files = self.tls.files();
        files.extend(own.unwrap_or_default());
        files
    }

    /// The keys of the sink's type. An error only for a config that was never validated
    /// (every way of loading one validates it): the problem `validate` would report.
    pub fn settings(&self) -> Result<&SinkSettings, ConfigError> {
        self.settings.as_ref().map_err(Clone::clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_toml, SecretSource};

    fn sink(keys: &str) -> Result<SinkConfig, ConfigError> {
        let text = format!("[[sinks]]\nname = \"s\"\n{keys}\n");
        Ok(from_toml(&text)?.sinks.remove(0))
    }

    fn problem(keys: &str) -> ConfigError {
        sink(keys).expect_err(keys)
    }

    #[test]
    fn a_key_of_another_type_is_named_with_the_type_that_refuses_it() {
        let e = problem("type = \"syslog\"\naddress = \"h:514\"\nindex = \"main\"");
        assert_eq!(e.key, "sinks[0].index");
        assert!(e.problem.contains("does not apply to a syslog sink"), "{e}");
        assert!(
            e.problem.contains("address, transport"),
            "the keys it takes: {e}"
        );
        let typo = problem("type = \"file\"\npath = \"/x\"\nmax_byte = \"1GiB\"");
        assert_eq!(typo.key, "sinks[0].max_byte", "{typo}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let e = problem("type = \"http\"\nendpoint = \"https://x\"\ngzip = \"yes\"");
        assert_eq!(e.key, "sinks[0].gzip", "{e}");
        let e = problem("type = \"http\"\nendpoint = \"https://x\"\nencoding = \"xml\"");
        assert_eq!(e.key, "sinks[0].encoding", "{e}");
        assert!(e.problem.contains("not ndjson or json_array"), "{e}");
        let e = problem("type = \"syslog\"\naddress = \"siem.example.com\"");
        assert_eq!(e.key, "sinks[0].address", "{e}");
        let e = problem("type = \"http\"\nendpoint = \"https://x\"\nusername = \"u\"");
        assert_eq!(e.key, "sinks[0].username", "{e}");
        let e = problem("type = \"http\"\nendpoint = \"https://x\"\nheaders = { \"X-A\" = 1 }");
        assert_eq!(e.key, "sinks[0].headers.X-A", "{e}");
    }

    #[test]
    fn each_type_reads_into_its_own_struct_with_its_defaults() {
        let hec =
            sink("type = \"splunk_hec\"\nendpoint = \"https://x\"\ntoken_env = \"T\"").unwrap();
        match hec.settings() {
            Ok(SinkSettings::SplunkHec(h)) => {
                assert!(h.gzip && !h.ack, "gzip on, ack off unless set");
                assert_eq!(h.ack_timeout, crate::units::HumanDuration::secs(120));
                assert_eq!(h.token(), Some(SecretSource::Env("T".into())));
            }
            other => panic!("{other:?}"),
        }
        let syslog =
            sink("type = \"syslog\"\naddress = \"[::1]:6514\"\ntransport = \"tls\"").unwrap();
        assert!(matches!(
            syslog.settings(),
            Ok(SinkSettings::Syslog(SyslogConfig {
                transport: Transport::Tls,
                ..
            }))
        ));
        let es = sink("type = \"elasticsearch\"\nendpoint = \"https://x\"").unwrap();
        match es.settings() {
            Ok(SinkSettings::Elasticsearch(e)) => {
                assert_eq!(e.index, "oprelay-{log_type}-{yyyy.MM.dd}");
                assert!(!e.gzip && !e.manage_template);
            }
            other => panic!("{other:?}"),
        }
        let http = sink("type = \"http\"\nendpoint = \"https://x\"").unwrap();
        assert!(matches!(
            http.settings(),
            Ok(SinkSettings::Http(HttpConfig {
                encoding: Encoding::Ndjson,
                gzip: false,
                ..
            }))
        ));
    }

    #[test]
    fn the_files_a_sink_reads_are_listed_by_key() {
        let http = sink(
            "type = \"http\"\nendpoint = \"https://x\"\ntoken_file = \"/t\"\n\
             headers_from_files = { \"X-Key\" = \"/k\" }\ntls = { ca_file = \"/ca\" }",
        )
        .unwrap();
        let keys: Vec<String> = http.files().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["tls.ca_file", "token_file", "headers_from_files.X-Key"]
        );
    }
}
