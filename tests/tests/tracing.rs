//! One OpenTelemetry trace per page across processes: the fetcher's `fetch page` span, the
//! normalizer's `normalize page`, and one `deliver` span per sink share a trace id, linked
//! through the `traceparent` header on the bus. The services export over OTLP/gRPC to a small
//! collector in this test.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use oprelay_e2e::{free_port, Pipeline, Spec};
use oprelay_testkit::eventually;

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    kind: SpanKind,
    attributes: HashMap<String, String>,
    resource: HashMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect()
}

struct Collector(Spans);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let resource = attributes(rs.resource.as_ref().map_or(&[][..], |r| &r.attributes));
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push(Got {
                        service: resource.get("service.name").cloned().unwrap_or_default(),
                        kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                        attributes: attributes(&span.attributes),
                        resource: resource.clone(),
                        name: span.name,
                        trace: span.trace_id,
                        id: span.span_id,
                        parent: span.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_of_one_page_share_one_trace_across_services() {
    let spans: Spans = Arc::default();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let collector = TraceServiceServer::new(Collector(spans.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(collector)
            .serve(addr),
    );

    let mut p = Pipeline::start(Spec {
        backfill: 20,
        services: false,
        // The standard OpenTelemetry variables, as an operator sets them for every service
        // in a cluster; and logs at `warn`, which must not turn the traces off.
        env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://{addr}"),
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES".into(),
                "deployment.environment.name=e2e".into(),
            ),
            ("OPRELAY_TELEMETRY__LOG_LEVEL".into(), "warn".into()),
        ],
        ..Default::default()
    })
    .await;
    // One failed request first: its warning must carry the trace id of its span.
    p.sim.inject(opsim::Fault::new(opsim::FaultKind::Status {
        status: 503,
        retry_after: None,
    }));
    for s in oprelay_e2e::SERVICES {
        p.start_service(s).await;
    }
    eventually(
        Duration::from_secs(60),
        "the 60 events at Elasticsearch",
        || async { (p.es.lock().unwrap().docs.len() >= 60).then_some(()) },
    )
    .await;

    // Each feed's one page: a trace holding the fetch, the normalization, and a delivery to
    // each of the two sinks, each a descendant of the fetch.
    let traces = eventually(
        Duration::from_secs(60),
        "three traces from fetch to both sinks in the collector",
        || async {
            let spans = spans.lock().unwrap().clone();
            let mut by_trace: HashMap<Vec<u8>, Vec<Got>> = HashMap::new();
            for s in spans {
                by_trace.entry(s.trace.clone()).or_default().push(s);
            }
            let complete: Vec<_> = by_trace
                .into_values()
                .filter(|t| {
                    let names: HashSet<(&str, &str)> = t
                        .iter()
                        .map(|s| (s.service.as_str(), s.name.as_str()))
                        .collect();
                    names.contains(&("fetcher", "fetch page"))
                        && names.contains(&("normalizer", "normalize page"))
                        && t.iter()
                            .filter(|s| s.service == "forwarder" && s.name == "deliver")
                            .count()
                            >= 2
                })
                .collect();
            (complete.len() >= 3).then_some(complete)
        },
    )
    .await;

    for trace in &traces {
        let find = |service: &str, name: &str| {
            trace
                .iter()
                .find(|s| s.service == service && s.name == name)
                .unwrap_or_else(|| panic!("no {service} span {name}: {trace:#?}"))
        };
        let fetch = find("fetcher", "fetch page");
        assert!(
            fetch.parent.is_empty(),
            "the fetch span is the trace's root"
        );
        assert_eq!(
            fetch.resource["deployment.environment.name"], "e2e",
            "OTEL_RESOURCE_ATTRIBUTES"
        );
        assert!(fetch.resource.contains_key("service.version"));
        // The Events API request: a client span under the fetch, with HTTP's conventions.
        let api = find("fetcher", "POST");
        assert_eq!(api.kind, SpanKind::Client);
        assert_eq!(api.parent, fetch.id);
        assert_eq!(api.attributes["http.request.method"], "POST");
        assert_eq!(api.attributes["http.response.status_code"], "200");
        assert_eq!(api.attributes["server.address"], "127.0.0.1");
        assert!(api.attributes["url.full"].contains("/api/v2/"), "{api:?}");
        // The page's publish: a producer span under the fetch, parent of the normalization.
        let publish = trace
            .iter()
            .find(|s| s.service == "fetcher" && s.name.starts_with("publish op.raw."))
            .unwrap_or_else(|| panic!("no publish span: {trace:#?}"));
        assert_eq!(publish.kind, SpanKind::Producer);
        assert_eq!(publish.parent, fetch.id);
        assert_eq!(publish.attributes["messaging.system"], "nats");
        assert!(publish.attributes["messaging.destination.name"].starts_with("op.raw.acme."));
        let normalize = find("normalizer", "normalize page");
        assert_eq!(normalize.kind, SpanKind::Consumer);
        assert_eq!(
            normalize.parent, publish.id,
            "normalize page hangs off the publish"
        );
        assert_eq!(normalize.attributes["messaging.operation.type"], "process");
        // The records' publish, then each sink's delivery and its SIEM request.
        let ids: HashSet<&Vec<u8>> = trace.iter().map(|s| &s.id).collect();
        let delivers: Vec<&Got> = trace
            .iter()
            .filter(|s| s.service == "forwarder" && s.name == "deliver")
            .collect();
        for deliver in &delivers {
            assert_eq!(deliver.kind, SpanKind::Consumer);
            assert!(
                ids.contains(&deliver.parent),
                "deliver has a parent in the trace"
            );
        }
        let requests: Vec<&Got> = trace
            .iter()
            .filter(|s| s.service == "forwarder" && s.kind == SpanKind::Client)
            .collect();
        for r in &requests {
            assert!(delivers.iter().any(|d| d.id == r.parent), "{r:?}");
            assert_eq!(r.attributes["http.request.method"], "POST");
            assert!(
                r.attributes.contains_key("http.response.status_code"),
                "{r:?}"
            );
        }
    }
    // The failed request's warning names the trace its span was exported in.
    let failed_trace = p
        .log("oprelay-fetcher")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "poll failed")
        .and_then(|l| l["span"]["trace_id"].as_str().map(str::to_owned))
        .expect("a `poll failed` warning with the span's trace_id");
    let exported = spans.lock().unwrap().clone();
    let failed_request = exported
        .iter()
        .find(|s| s.kind == SpanKind::Client && hex(&s.trace) == failed_trace)
        .expect("the failed request's span, exported though logs are at warn");
    assert_eq!(
        failed_request.attributes["http.response.status_code"],
        "503"
    );
    assert_eq!(failed_request.attributes["error.type"], "503");
    let any_request = traces
        .iter()
        .flatten()
        .any(|s| s.service == "forwarder" && s.kind == SpanKind::Client);
    assert!(any_request, "the SIEM requests are client spans");
    let distinct: HashSet<&Vec<u8>> = traces.iter().map(|t| &t[0].trace).collect();
    assert_eq!(
        distinct.len(),
        traces.len(),
        "one trace per page, not one per feed"
    );
}
