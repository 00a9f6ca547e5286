//! Bus errors say what failed, where, and whether trying again can help — decided here, at the
//! source, so callers retry the transient and surface the rest.

use std::error::Error as StdError;

type Source = Box<dyn StdError + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: Source,
        retryable: bool,
    },

    #[error("bad NATS settings: {0}")]
    Settings(String),

    #[error("cannot provision {what}: {source}")]
    Provision { what: String, source: Source },

    #[error(
        "NATS is not provisioned for this configuration: {}. Run `oprelay nats provision` with this configuration",
        problems.join("; ")
    )]
    NotProvisioned { problems: Vec<String> },

    #[error("publish to `{subject}` failed: {source}")]
    Publish { subject: String, source: Source },

    #[error("key `{key}` in bucket {bucket} changed since it was read (compare-and-set lost)")]
    Conflict { bucket: String, key: String },

    #[error("key-value {op} of `{key}` in bucket {bucket} failed: {source}")]
    Kv {
        op: &'static str,
        bucket: String,
        key: String,
        source: Source,
    },

    #[error("value of `{key}` in bucket {bucket} is not valid JSON for this version: {source}")]
    Decode {
        bucket: String,
        key: String,
        source: serde_json::Error,
    },

    #[error("consumer {consumer} on stream {stream}: {source}")]
    Consume {
        stream: String,
        consumer: String,
        source: Source,
    },
}

impl BusError {
    /// Whether the same operation may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Connect { retryable, .. } => *retryable,
            BusError::Provision { .. }
            | BusError::Publish { .. }
            | BusError::Kv { .. }
            | BusError::Consume { .. } => true,
            // A lost compare-and-set needs a fresh read, not a blind retry.
            BusError::Conflict { .. } => false,
            // Someone has to run `oprelay nats provision`.
            BusError::Settings(_) | BusError::Decode { .. } | BusError::NotProvisioned { .. } => {
                false
            }
        }
    }
}
