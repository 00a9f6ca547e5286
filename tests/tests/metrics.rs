//! Metrics an on-call engineer alerts on keep moving during a silence: once the backfill is
//! through and the account is quiet, the fetcher's lag gauge freezes, but
//! `oprelay_fetcher_last_success_timestamp_seconds` advances with every poll and
//! `…_last_event_timestamp_seconds` stays at the newest event, so `time() - …` grows.

use std::time::Duration;

use oprelay_e2e::{Pipeline, Spec};
use oprelay_testkit::eventually;

async fn samples(p: &Pipeline, metric: &str) -> Vec<(String, f64)> {
    let text = p.scrape("oprelay-fetcher").await.expect("metrics answer");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_and_event_timestamps_move_while_the_feed_is_silent() {
    let p = Pipeline::start(Spec::default()).await;
    let expected = p.expected_row_ids().len();
    eventually(
        Duration::from_secs(60),
        "the backfill at Elasticsearch",
        || async { (p.es.lock().unwrap().docs.len() >= expected).then_some(()) },
    )
    .await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let events = samples(&p, "oprelay_fetcher_last_event_timestamp_seconds").await;
    assert_eq!(events.len(), 3, "one per feed: {events:?}");
    for (labels, t) in &events {
        assert!(*t > 0.0 && *t <= now(), "{labels} {t}");
    }
    let first = samples(&p, "oprelay_fetcher_last_success_timestamp_seconds").await;
    assert_eq!(first.len(), 3, "one per feed: {first:?}");
    // The account is silent now: the next polls still succeed, and say so.
    let moved = eventually(
        Duration::from_secs(30),
        "a later successful poll",
        || async {
            let later = samples(&p, "oprelay_fetcher_last_success_timestamp_seconds").await;
            later
                .iter()
                .all(|(l, t)| first.iter().any(|(fl, ft)| fl == l && t > ft))
                .then_some(later)
        },
    )
    .await;
    for (labels, t) in moved {
        assert!(now() - t < 30.0, "{labels}: {t}");
    }
    assert_eq!(
        samples(&p, "oprelay_fetcher_last_event_timestamp_seconds").await,
        events,
        "no new event, no new event time"
    );
}
