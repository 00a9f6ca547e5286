//! What every oprelay service binary shares: configuration, telemetry, the admin listener
//! (`/healthz` `/readyz` `/metrics`), a controllable clock, and start-up and shutdown.

pub mod admin;
pub mod build_info;
pub mod clock;
pub mod config;
pub mod lease;
pub mod lifecycle;
pub mod memory;
pub mod process_metrics;
pub mod telemetry;
pub mod units;

pub use admin::{Health, Metrics};
pub use clock::Clock;
pub use config::{Config, ConfigError, SecretSource};
pub use lifecycle::{main, start, StartError, Started};
pub use oprelay_bus::backoff::{self, Backoff, Retries};
pub use oprelay_events::Secret;
pub use tokio_util::sync::CancellationToken;
