//! A backfill of ≥ 50 000 events across the three feeds reaches OP_RAW exactly once, in order,
//! and a caught-up fetcher makes one request per feed per poll interval, no more.

mod common;

use std::time::Duration;

use common::{data_requests, Running, World};
use oprelay_bus::JsonKv;
use oprelay_events::{names, AccountName, Feed, FeedStatus};
use oprelay_service::Clock;
use oprelay_testkit::eventually;
use oprelay_testkit::opsim::SimConfig;

const PER_FEED: u64 = 17_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_arrives_exactly_once_then_idles_politely() {
    let world = World::start(SimConfig {
        backfill: PER_FEED,
        ..SimConfig::default()
    })
    .await;
    let clock = Clock::manual(time::OffsetDateTime::now_utc());
    let fetcher = Running::start(world.config(""), clock.clone());

    let total = 3 * PER_FEED as usize;
    eventually(
        Duration::from_secs(120),
        "the whole backfill in OP_RAW",
        || async { (world.raw_count().await >= total).then_some(()) },
    )
    .await;
    world.assert_exactly_once(&Feed::ALL, PER_FEED).await;

    // Caught up and asleep on the (frozen) clock. Wait until every feed has recorded its last
    // poll, then one poll interval (plus jitter) later each feed asks exactly once more.
    let status = JsonKv::open(&world.bus, names::BUCKET_STATUS)
        .await
        .unwrap();
    let acme = AccountName::new("acme").unwrap();
    let polled_at = |at: time::OffsetDateTime| {
        let status = status.clone();
        let acme = acme.clone();
        async move {
            for feed in Feed::ALL {
                let s = status
                    .get::<FeedStatus>(&names::fetch_status_key(&acme, feed))
                    .await
                    .ok()??;
                if s.value.last_poll_at? < at || s.value.last_success_at != s.value.last_poll_at {
                    return None;
                }
            }
            Some(())
        }
    };
    eventually(Duration::from_secs(30), "every feed idle", || {
        polled_at(clock.now())
    })
    .await;
    let before = data_requests(&world.sim);
    clock.advance(Duration::from_millis(1_100));
    eventually(Duration::from_secs(30), "one idle poll per feed", || {
        polled_at(clock.now())
    })
    .await;
    assert_eq!(
        data_requests(&world.sim),
        before + 3,
        "exactly one request per feed per poll interval"
    );

    // The idle requests carried the stored cursor, not a reset.
    let last = world.sim.sim.requests();
    for r in &last[last.len() - 3..] {
        assert!(
            r.body.as_deref().unwrap_or_default().contains("\"cursor\""),
            "{r:?}"
        );
        assert!(!r.body.as_deref().unwrap_or_default().contains("start_time"));
    }
    fetcher.stop().await;
}
