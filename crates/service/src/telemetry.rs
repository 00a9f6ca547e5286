//! Logs (JSON or pretty) and traces (OpenTelemetry, exported over OTLP when configured).
//!
//! The OpenTelemetry layer is installed even without an exporter: spans still get trace ids,
//! so `traceparent` headers on the bus link a page's journey whenever someone turns export on.
//! Export follows `telemetry.otlp_endpoint` or the standard `OTEL_EXPORTER_OTLP_*` variables;
//! `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` shape the resource. Spans follow the
//! OpenTelemetry semantic conventions: `messaging.*` on publish (producer) and page
//! processing (consumer) spans, `http.*` on a client span per Events API or SIEM request.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
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

/// The OpenTelemetry variables that turn trace export on without an oprelay setting.
const OTLP_ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Where traces go: `telemetry.otlp_endpoint` when set, else the standard variables (read by
/// the exporter itself), else nowhere. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
/// turn export off whatever else is set, as in every OpenTelemetry SDK.
#[derive(Debug, PartialEq, Eq)]
pub enum Export {
    Off,
    Configured(String),
    FromEnvironment,
}

/// The export decision from the config value and a variable lookup (pure, for tests).
pub fn export(configured: &str, var: impl Fn(&str) -> Option<String>) -> Export {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    if disabled {
        Export::Off
    } else if !configured.trim().is_empty() {
        Export::Configured(configured.trim().to_owned())
    } else if OTLP_ENDPOINT_VARS.iter().any(|v| set(v)) {
        Export::FromEnvironment
    } else {
        Export::Off
    }
}

/// `service.name` (the service's own unless `OTEL_SERVICE_NAME` names another),
/// `service.version`, and whatever `OTEL_RESOURCE_ATTRIBUTES` adds.
fn resource(service: &'static str) -> Resource {
    let mut builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        crate::build_info::VERSION,
    ));
    if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
        builder = builder.with_service_name(service);
    }
    builder.build()
}

/// Installs the global subscriber. A second call in the same process (tests starting several
/// services) keeps the first subscriber and still returns a working provider.
///
/// Logs and traces are filtered apart: `log_level` (or `RUST_LOG`) chooses the log lines, and
/// spans at INFO and above are always traced and exported, so quiet logs never turn the
/// traces off. Spans also pass the log filter (they print nothing by themselves) so every log
/// line carries its span's fields, `trace_id` among them.
pub fn init(config: &TelemetryConfig, service: &'static str) -> Result<Telemetry, TelemetryError> {
    let events = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => EnvFilter::try_new(&from_env),
        _ => EnvFilter::try_new(&config.log_level),
    }
    .map_err(|e| TelemetryError::Filter {
        level: config.log_level.clone(),
        reason: e.to_string(),
    })?;
    let spans = filter_fn(|m| m.is_span() && *m.level() <= Level::INFO);

    let mut builder = SdkTracerProvider::builder().with_resource(resource(service));
    let exporter = match export(&config.otlp_endpoint, |k| std::env::var(k).ok()) {
        Export::Off => None,
        Export::Configured(endpoint) => Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&endpoint)
                .build()
                .map_err(|e| TelemetryError::Otlp {
                    endpoint,
                    reason: e.to_string(),
                })?,
        ),
        Export::FromEnvironment => Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| TelemetryError::Otlp {
                    endpoint: "(OTEL_EXPORTER_OTLP_ENDPOINT)".into(),
                    reason: e.to_string(),
                })?,
        ),
    };
    if let Some(exporter) = exporter {
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_filter(LevelFilter::INFO);

    let fmt = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(events.or(spans));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { provider })
}

/// Records the OpenTelemetry trace id on `span` (declared with `trace_id =
/// tracing::field::Empty`), so the JSON log lines inside it carry the id a trace backend finds
/// the trace by. Call it after `set_parent`, which changes a consumer span's trace.
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(set: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            set.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_config_or_the_standard_variables_turn_export_on() {
        assert_eq!(export("", vars(&[])), Export::Off);
        assert_eq!(
            export("http://collector:4317", vars(&[])),
            Export::Configured("http://collector:4317".into())
        );
        assert_eq!(
            export(
                "",
                vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])
            ),
            Export::FromEnvironment
        );
        assert_eq!(
            export(
                "",
                vars(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")])
            ),
            Export::FromEnvironment
        );
        assert_eq!(
            export("", vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            Export::Off
        );
    }

    #[test]
    fn the_sdk_switches_turn_export_off_whatever_else_is_set() {
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                export(
                    "http://collector:4317",
                    vars(&[off, ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])
                ),
                Export::Off,
                "{off:?}"
            );
        }
    }
}

/// A URL as a client span records it: no user info and no query (either may hold a secret),
/// plus the host and port apart (`url.full`, `server.address`, `server.port`).
#[derive(Debug, PartialEq, Eq)]
pub struct TracedUrl {
    pub full: String,
    pub host: String,
    pub port: u16,
}

impl TracedUrl {
    pub fn parse(url: &str) -> TracedUrl {
        let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
                Ok(port) => (h, port),
                Err(_) => (authority, default_port),
            },
            _ => (authority, default_port),
        };
        TracedUrl {
            full: format!("{scheme}://{authority}{path}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
        }
    }
}

/// A client span for one HTTP request (OpenTelemetry's HTTP semantic conventions): exported
/// as `GET`/`POST`, with the method, the URL without secrets, and the server; the status is
/// recorded with [`record_http_status`] once the answer is in.
pub fn http_client_span(method: &'static str, url: &str) -> tracing::Span {
    let u = TracedUrl::parse(url);
    tracing::info_span!(
        "http request",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        url.full = %u.full,
        server.address = %u.host,
        server.port = u.port,
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// The response status on a client span; 4xx and 5xx mark it failed, as the conventions say.
pub fn record_http_status(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 400 {
        span.record("error.type", status.to_string());
        span.record("otel.status_code", "ERROR");
    }
}

/// A request that got no answer (connection refused, timeout) on a client span.
pub fn record_http_failure(span: &tracing::Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}

/// Sends `request` in a client span ([`http_client_span`]) that records the status, or the
/// failure when no status came back: every outgoing HTTP request of oprelay goes through here.
pub async fn send_traced(
    method: &'static str,
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    use tracing::Instrument;
    let span = http_client_span(method, url);
    match request.send().instrument(span.clone()).await {
        Ok(resp) => {
            record_http_status(&span, resp.status().as_u16());
            Ok(resp)
        }
        Err(e) => {
            record_http_failure(&span, "transport");
            Err(e)
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::TracedUrl;

    #[test]
    fn credentials_and_queries_never_reach_a_span() {
        let u = TracedUrl::parse("https://user:secret@siem.example.com:8443/ingest?token=abc#x");
        assert_eq!(u.full, "https://siem.example.com:8443/ingest");
        assert_eq!((u.host.as_str(), u.port), ("siem.example.com", 8443));
        let u = TracedUrl::parse("https://events.1password.com/api/v2/itemusages");
        assert_eq!((u.host.as_str(), u.port), ("events.1password.com", 443));
        let u = TracedUrl::parse("http://[::1]:9200/_bulk");
        assert_eq!((u.host.as_str(), u.port), ("::1", 9200));
        assert_eq!(u.full, "http://[::1]:9200/_bulk");
    }
}
