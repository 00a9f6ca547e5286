//! `[sinks.batch]`: how many records go to a SIEM in one request, and how many requests are
//! in flight. Every sink type takes it.

use serde::Deserialize;

use crate::config::{check_range, ConfigError};
use crate::units::{ByteSize, HumanDuration};

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

impl BatchConfig {
    pub(super) fn check(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
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
