//! The SIEM destinations. Each says, per request, whether the records were accepted, and when
//! not, whether trying again can help: the delivery loop retries the transient, slows down on
//! credentials and configuration problems a human must fix, and isolates refused records for
//! the dead-letter queue.

pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod http_client;
pub mod request_body;
pub mod splunk_hec;
pub mod syslog;

use std::time::Duration;

use oprelay_service::config::{SinkConfig, SinkSettings};

use oprelay_format::Record;

/// What a request achieved when it did not fail as a whole.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every record accepted (or already there).
    Delivered,
    /// Some records need another try, some were refused for good (index in the request, reason).
    Partial {
        retry: Vec<usize>,
        rejected: Vec<(usize, String)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connection errors, timeouts, 408, 429, 5xx: back off and retry.
    Transient,
    /// Credentials or sink configuration refused (401/403, wrong index): retry slowly until a
    /// human fixes it; never drop the data.
    NeedsOperator,
    /// The SIEM refused these records (400, 413): isolate the bad ones for the DLQ.
    Rejected,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// A more precise metrics label than the kind's (`ack_timeout`).
    pub reason: Option<&'static str>,
}

impl SinkError {
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
            reason: None,
        }
    }
    pub fn needs_operator(message: impl Into<String>) -> Self {
        SinkError {
            kind: ErrorKind::NeedsOperator,
            message: message.into(),
            retry_after: None,
            reason: None,
        }
    }
    pub fn rejected(message: impl Into<String>) -> Self {
        SinkError {
            kind: ErrorKind::Rejected,
            message: message.into(),
            retry_after: None,
            reason: None,
        }
    }
    /// With a more precise metrics label.
    pub fn because(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        if let Some(r) = self.reason {
            return r;
        }
        match self.kind {
            ErrorKind::Transient => "transient",
            ErrorKind::NeedsOperator => "needs_operator",
            ErrorKind::Rejected => "rejected",
        }
    }
}

/// Why a sink cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A key the sink needs is not set (the configuration's validation catches this first).
    #[error("a {kind} sink needs `{key}`")]
    Missing {
        /// The sink type.
        kind: &'static str,
        /// The key.
        key: &'static str,
    },
    /// A value the sink cannot use.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key, as the configuration names it.
        key: String,
        /// What is wrong with its value.
        problem: String,
    },
    /// The HTTP client refused its settings (TLS material).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl SetupError {
    /// A value of `key` the sink cannot use.
    pub fn invalid(key: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        SetupError::Invalid {
            key: key.into(),
            problem: problem.to_string(),
        }
    }
}

/// A sink that could not be built, by name.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: {source}")]
pub struct BuildError {
    /// The sink's name.
    pub sink: String,
    /// Why.
    pub source: SetupError,
}

pub enum AnySink {
    File(file::FileSink),
    Http(http::HttpSink),
    SplunkHec(splunk_hec::SplunkHec),
    Elasticsearch(elasticsearch::Elasticsearch),
    Syslog(syslog::Syslog),
}

impl AnySink {
    pub fn build(config: &SinkConfig) -> Result<AnySink, BuildError> {
        let fail = |source: SetupError| BuildError {
            sink: config.name.clone(),
            source,
        };
        let settings = config
            .settings()
            .map_err(|e| fail(SetupError::invalid(e.key, e.problem)))?;
        Ok(match settings {
            SinkSettings::File(c) => AnySink::File(file::FileSink::new(c).map_err(fail)?),
            SinkSettings::Http(c) => AnySink::Http(http::HttpSink::new(config, c).map_err(fail)?),
            SinkSettings::SplunkHec(c) => {
                AnySink::SplunkHec(splunk_hec::SplunkHec::new(config, c).map_err(fail)?)
            }
            SinkSettings::Elasticsearch(c) => {
                AnySink::Elasticsearch(elasticsearch::Elasticsearch::new(config, c).map_err(fail)?)
            }
            SinkSettings::Syslog(c) => {
                AnySink::Syslog(syslog::Syslog::new(config, c).map_err(fail)?)
            }
        })
    }

    /// Releases connections at shutdown.
    pub async fn close(&self) {
        if let AnySink::Syslog(s) = self {
            s.close().await;
        }
    }

    /// Reaches the SIEM without delivering anything and says what it found: `oprelay config
    /// check --online`, like Vector's sink healthchecks.
    pub async fn healthcheck(&self) -> Result<String, SinkError> {
        match self {
            AnySink::File(s) => s.healthcheck().await,
            AnySink::Http(s) => s.healthcheck().await,
            AnySink::SplunkHec(s) => s.healthcheck().await,
            AnySink::Elasticsearch(s) => s.healthcheck().await,
            AnySink::Syslog(s) => s.healthcheck().await,
        }
    }

    /// Sends the records in one request (or one write).
    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        match self {
            AnySink::File(s) => s.send(records).await,
            AnySink::Http(s) => s.send(records).await,
            AnySink::SplunkHec(s) => s.send(records).await,
            AnySink::Elasticsearch(s) => s.send(records).await,
            AnySink::Syslog(s) => s.send(records).await,
        }
    }
}
