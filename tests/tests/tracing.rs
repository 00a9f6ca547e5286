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

use oprelay_e2e::{free_port, Pipeline, Spec};
use oprelay_testkit::eventually;

/// What the collector received: (service.name, span name, trace id, span id, parent span id).
type Spans = Arc<Mutex<Vec<(String, String, Vec<u8>, Vec<u8>, Vec<u8>)>>>;

struct Collector(Spans);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push((
                        service.clone(),
                        span.name,
                        span.trace_id,
                        span.span_id,
                        span.parent_span_id,
                    ));
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

    let p = Pipeline::start(Spec {
        backfill: 20,
        env: vec![(
            "OPRELAY_TELEMETRY__OTLP_ENDPOINT".into(),
            format!("http://{addr}"),
        )],
        ..Default::default()
    })
    .await;
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
            let mut by_trace: HashMap<Vec<u8>, Vec<_>> = HashMap::new();
            for s in spans {
                by_trace.entry(s.2.clone()).or_default().push(s);
            }
            let complete: Vec<_> = by_trace
                .into_values()
                .filter(|t| {
                    let names: HashSet<(&str, &str)> =
                        t.iter().map(|s| (s.0.as_str(), s.1.as_str())).collect();
                    names.contains(&("fetcher", "fetch page"))
                        && names.contains(&("normalizer", "normalize page"))
                        && t.iter()
                            .filter(|s| s.0 == "forwarder" && s.1 == "deliver")
                            .count()
                            >= 2
                })
                .collect();
            (complete.len() >= 3).then_some(complete)
        },
    )
    .await;

    for trace in &traces {
        let fetch = trace.iter().find(|s| s.1 == "fetch page").unwrap();
        assert!(fetch.4.is_empty(), "the fetch span is the trace's root");
        let normalize = trace.iter().find(|s| s.1 == "normalize page").unwrap();
        // The normalizer's span hangs off the fetcher's (through the publish of the page).
        let ids: HashSet<&Vec<u8>> = trace.iter().map(|s| &s.3).collect();
        assert!(
            ids.contains(&normalize.4),
            "normalize page has a parent in the trace"
        );
        for deliver in trace.iter().filter(|s| s.1 == "deliver") {
            assert!(
                ids.contains(&deliver.4),
                "deliver has a parent in the trace"
            );
        }
    }
    let distinct: HashSet<&Vec<u8>> = traces.iter().map(|t| &t[0].2).collect();
    assert_eq!(
        distinct.len(),
        traces.len(),
        "one trace per page, not one per feed"
    );
}
