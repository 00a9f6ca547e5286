//! `oprelay cursor reset` on a running pipeline: the fetcher notices the moved cursor (its
//! compare-and-set fails on the new revision), fetches the feed again from the reset's start,
//! and the sinks still hold every event once (Elasticsearch by `_id`).

use std::time::Duration;

use oprelay_e2e::{text, Pipeline, Spec, ACCOUNT};
use oprelay_testkit::eventually;
use serde_json::Value;

fn cursor(p: &Pipeline) -> Value {
    // A start other than the configured one: the same request would bring the same pages,
    // which OP_RAW's deduplication drops as it should (the configured start is 2000-01-01).
    let out = p.oprelay(&[
        "cursor",
        "show",
        "--account",
        ACCOUNT,
        "--feed",
        "item_usages",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("cursor JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_cursor_is_fetched_again_and_delivered_once() {
    let p = Pipeline::start(Spec::default()).await;
    let expected = p.expected_row_ids().len();
    let item_usages = p.events(oprelay_events::Feed::ItemUsages).len() as u64;
    eventually(
        Duration::from_secs(60),
        "the backfill at Elasticsearch",
        || async { (p.es.lock().unwrap().docs.len() >= expected).then_some(()) },
    )
    .await;
    let before = cursor(&p);
    assert_eq!(before["cursor"]["events"], item_usages, "{before}");

    let out = p.oprelay(&[
        "cursor",
        "reset",
        "--account",
        ACCOUNT,
        "--feed",
        "item_usages",
        "--to",
        "2000-01-02T00:00:00Z",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    // The fetcher starts over: its counters restart at the reset and climb back to the
    // whole feed, under a new API cursor.
    let after = eventually(
        Duration::from_secs(60),
        "the fetcher to fetch the feed again from the reset",
        || async {
            let c = cursor(&p);
            let again = c["cursor"]["events"].as_u64() == Some(item_usages)
                && c["cursor"]["cursor"] != ""
                && c["revision"].as_u64() > before["revision"].as_u64();
            again.then_some(c)
        },
    )
    .await;
    assert_eq!(after["cursor"]["start_time"], Value::Null, "{after}");
    // Until the normalizer has worked through the re-fetched pages, and every forwarder
    // backlog is empty again: whatever was published twice has reached the sinks by then.
    let normalized = p
        .metric("oprelay-normalizer", "oprelay_normalizer_records_total")
        .await;
    assert!(normalized >= expected as f64, "{normalized}");
    eventually(
        Duration::from_secs(60),
        "the re-fetched records through the normalizer and the forwarder",
        || async {
            let n = p
                .metric("oprelay-normalizer", "oprelay_normalizer_records_total")
                .await;
            let backlog = p
                .metric("oprelay-forwarder", "oprelay_forwarder_pending_messages")
                .await;
            (n >= (expected as u64 + item_usages) as f64 && backlog == 0.0).then_some(())
        },
    )
    .await;
    let es = p.es.lock().unwrap();
    assert_eq!(es.docs.len(), expected, "every event once at Elasticsearch");
}
