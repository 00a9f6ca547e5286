//! `[nats]`: how to reach the bus, and the retention and replicas of what is provisioned there.

use std::path::PathBuf;

use serde::Deserialize;

use oprelay_bus::{ConsumerSpec, NatsSettings, Topology};

use super::{check_file, check_range, Config, ConfigError, SecretSource, SinkConfig};
use crate::units::{ByteSize, HumanDuration};

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

impl Config {
    /// The connection: URL, replicas, credentials and TLS files, then the retention.
    pub(super) fn validate_nats(&self) -> Result<(), ConfigError> {
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
        self.validate_nats_retention()
    }

    /// The retention, dedup window and ack wait of what is provisioned.
    fn validate_nats_retention(&self) -> Result<(), ConfigError> {
        let n = &self.nats;
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
