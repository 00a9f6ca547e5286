//! SIGTERM under load loses no work and causes no redelivery: each service exits 0 within
//! 10 s, and after its restart JetStream has redelivered nothing it had handed out.

use std::time::Duration;

use oprelay_e2e::{Pipeline, Spec};
use oprelay_testkit::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_promptly_and_redelivers_nothing() {
    let mut p = Pipeline::start(Spec {
        backfill: 20_000,
        rate_limits: false,
        ..Spec::default()
    })
    .await;
    let total = p.expected_row_ids().len();
    // Each service in turn, while the backfill is flowing through it.
    for (service, progress) in [
        ("oprelay-normalizer", total / 6),
        ("oprelay-forwarder", total / 3),
        ("oprelay-fetcher", total / 2),
    ] {
        let what = format!("progress before stopping {service}");
        eventually(Duration::from_secs(120), &what, || async {
            (p.http.lock().unwrap().received >= progress).then_some(())
        })
        .await;
        let (status, took) = p.terminate(service).await;
        assert!(status.success(), "{service} exited with {status}");
        assert!(
            took < Duration::from_secs(10),
            "{service} took {took:?} to exit"
        );
        p.start_service(service).await;
    }
    eventually(
        Duration::from_secs(180),
        "every record at both sinks",
        || async {
            let es = p.es.lock().unwrap().docs.len();
            let http = p.http.lock().unwrap().received;
            (es >= total && http >= total).then_some(())
        },
    )
    .await;
    let redelivered_pages = p
        .metric(
            "oprelay-normalizer",
            "oprelay_normalizer_redelivered_pages_total",
        )
        .await;
    let redelivered_batches = p
        .metric(
            "oprelay-forwarder",
            "oprelay_forwarder_redelivered_messages_total",
        )
        .await;
    assert_eq!(redelivered_pages, 0.0, "pages JetStream handed out again");
    assert_eq!(
        redelivered_batches, 0.0,
        "record batches JetStream handed out again"
    );
    assert_eq!(p.es.lock().unwrap().docs.len(), total);
}
