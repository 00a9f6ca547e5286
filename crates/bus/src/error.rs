//! Bus errors say what failed, where, and whether trying again can help — decided here, at the
//! source, so callers retry the transient and surface the rest.

use std::error::Error as StdError;

type Source = Box<dyn StdError + Send + Sync>;

/// What went wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No connection (after the first attempt; later ones reconnect on their own).
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The URL, without credentials.
        url: String,
        /// Why.
        source: Source,
        /// Whether it can fix itself (a server not up yet) rather than needing a change
        /// (refused credentials, a bad certificate).
        retryable: bool,
    },

    /// The settings cannot work (a missing file, a bad URL).
    #[error("bad NATS settings: {0}")]
    Settings(String),

    /// A stream, bucket or consumer could not be created or updated.
    #[error("cannot provision {what}: {source}")]
    Provision {
        /// Which one.
        what: String,
        /// Why.
        source: Source,
    },

    /// What a service needs is missing or differs from the configuration.
    #[error(
        "NATS is not provisioned for this configuration: {}. Run `oprelay nats provision` with this configuration",
        problems.join("; ")
    )]
    NotProvisioned {
        /// Each missing or mismatched stream, bucket or consumer.
        problems: Vec<String>,
    },

    /// A publish was not acknowledged by JetStream.
    #[error("publish to `{subject}` failed: {source}")]
    Publish {
        /// Where to.
        subject: String,
        /// Why.
        source: Source,
    },

    /// A compare-and-set lost: someone wrote the key since it was read.
    #[error("key `{key}` in bucket {bucket} changed since it was read (compare-and-set lost)")]
    Conflict {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },

    /// A key-value operation failed.
    #[error("key-value {op} of `{key}` in bucket {bucket} failed: {source}")]
    Kv {
        /// `read`, `write`, `watch`, …
        op: &'static str,
        /// The bucket (or stream).
        bucket: String,
        /// The key, when there is one.
        key: String,
        /// Why.
        source: Source,
    },

    /// A stored value is not what this version reads.
    #[error("value of `{key}` in bucket {bucket} is not valid JSON for this version: {source}")]
    Decode {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// Why.
        source: serde_json::Error,
    },

    /// Pulling from a consumer failed.
    #[error("consumer {consumer} on stream {stream}: {source}")]
    Consume {
        /// The stream.
        stream: String,
        /// The durable consumer.
        consumer: String,
        /// Why.
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
