//! `[telemetry]`: logs, traces, and where the admin endpoints listen.

use std::net::SocketAddr;

use serde::Deserialize;

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
