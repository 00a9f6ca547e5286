//! W3C trace context in NATS headers, so one page is one trace from the fetcher's request to
//! each sink's delivery, across processes.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes `traceparent` (and `tracestate`) for `cx`. Without a valid span in `cx` (a process
/// that traces nothing, such as the CLI) a fresh, unsampled trace context is written instead:
/// every message on the bus carries `traceparent`, as the subscriber contract says, and the
/// consumers' spans of one message still share a trace.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let propagator = TraceContextPropagator::new();
    if cx.span().span_context().is_valid() {
        propagator.inject_context(cx, &mut HeaderInjector(headers));
    } else {
        let ids = RandomIdGenerator::default();
        let fresh = SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(fresh);
        propagator.inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// Writes the trace context of the current `tracing` span.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&tracing::Span::current().context(), headers);
}

/// The remote parent a consumer should attach its span to (`span.set_parent(..)`).
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(h) => TraceContextPropagator::new().extract(&HeaderExtractor(h)),
        None => Context::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    #[test]
    fn a_message_without_a_span_still_gets_a_trace_context() {
        let mut headers = HeaderMap::new();
        inject(&Context::new(), &mut headers);
        let tp = headers
            .get("traceparent")
            .expect("traceparent")
            .as_str()
            .to_owned();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len()),
            ("00", 32, 16),
            "{tp}"
        );
        let back = extract(Some(&headers));
        assert!(back.span().span_context().is_valid());
    }

    #[test]
    fn traceparent_round_trips_through_headers() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut headers = HeaderMap::new();
        inject(&cx, &mut headers);
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_str()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let back = extract(Some(&headers));
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(back.span().span_context().span_id(), sc.span_id());
    }

    #[test]
    fn a_message_without_headers_has_no_remote_parent() {
        assert!(!extract(None).span().span_context().is_valid());
    }
}
