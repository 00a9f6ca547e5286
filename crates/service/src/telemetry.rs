//! Logs (JSON or pretty) and traces (OpenTelemetry, exported over OTLP when configured).
//!
//! The OpenTelemetry layer is installed even without an exporter: spans still get trace ids,
//! so `traceparent` headers on the bus link a page's journey whenever someone turns export on.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.log_level `{level}` is not a valid filter: {reason}")]
    Filter { level: String, reason: String },
    #[error("cannot set up the OTLP exporter for telemetry.otlp_endpoint `{endpoint}`: {reason}")]
    Otlp { endpoint: String, reason: String },
}

/// Keeps the trace pipeline alive; flushes buffered spans when dropped.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber. A second call in the same process (tests starting several
/// services) keeps the first subscriber and still returns a working provider.
pub fn init(config: &TelemetryConfig, service: &'static str) -> Result<Telemetry, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(&from_env),
        _ => EnvFilter::try_new(&config.log_level),
    }
    .map_err(|e| TelemetryError::Filter {
        level: config.log_level.clone(),
        reason: e.to_string(),
    })?;

    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build());
    let endpoint = config.otlp_endpoint.trim();
    if !endpoint.is_empty() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Otlp {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));

    let fmt = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { provider })
}
