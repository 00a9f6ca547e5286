//! 429 storms (with and without Retry-After), 5xx bursts, truncated and malformed bodies: the
//! fetcher backs off, loses nothing, duplicates nothing, and reports what happened.

mod common;

use std::time::Duration;

use common::{data_requests, Running, World};
use oprelay_bus::JsonKv;
use oprelay_events::{names, AccountName, Feed, FeedStatus, FetchErrorKind};
use oprelay_service::Clock;
use oprelay_testkit::eventually;
use oprelay_testkit::opsim::{Fault, FaultKind, SimConfig};

const PER_FEED: u64 = 2_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_and_bursts_lose_nothing() {
    let world = World::start(SimConfig {
        backfill: PER_FEED,
        ..SimConfig::default()
    })
    .await;
    let sim = &world.sim.sim;
    let status = |code: u16, retry_after: Option<u64>| FaultKind::Status {
        status: code,
        retry_after,
    };
    sim.inject(Fault::new(status(429, None)).times(6));
    sim.inject(Fault::new(status(429, Some(1))).times(2));
    sim.inject(Fault::new(status(500, None)).times(3));
    sim.inject(Fault::new(status(502, None)).times(2));
    sim.inject(Fault::new(status(503, None)).times(3));
    sim.inject(Fault::new(FaultKind::Truncate).times(3));
    sim.inject(Fault::new(FaultKind::Malformed).times(3));
    sim.inject(Fault::new(FaultKind::Slow { delay_ms: 200 }).times(2));
    let faults = 24;

    let fetcher = Running::start(world.config("page_size = 250"), Clock::System);
    eventually(
        Duration::from_secs(90),
        "the backfill through the faults",
        || async { (world.raw_count().await >= 3 * PER_FEED as usize).then_some(()) },
    )
    .await;
    assert_eq!(sim.pending_faults(), 0, "every injected fault was met");
    world.assert_exactly_once(&Feed::ALL, PER_FEED).await;

    let log = sim.requests();
    let failures = log.iter().filter(|r| r.status != 200).count();
    assert!(
        failures >= 16,
        "the status faults were answered: {failures}"
    );
    // 3 feeds × 10 pages + the retries of the faults + the first idle polls; nothing runaway.
    assert!(
        data_requests(&world.sim) <= 3 * 10 + faults + 3 * 3,
        "{} requests",
        data_requests(&world.sim)
    );
    // Within the per-account budget of 500 a minute, although the drain took seconds.
    assert!(data_requests(&world.sim) < 500);

    // Faults apply in order: the 7th and 8th 429s carried `Retry-After: 1`. The next request
    // of the same feed came no sooner than that.
    let rate_limited: Vec<usize> = (0..log.len()).filter(|i| log[*i].status == 429).collect();
    for &i in &rate_limited[6..8] {
        let next = log[i + 1..]
            .iter()
            .find(|r| r.feed == log[i].feed)
            .expect("the feed was retried");
        let waited = next.at - log[i].at;
        assert!(
            waited >= time::Duration::seconds(1),
            "retried after {waited}, told 1 s"
        );
    }
    fetcher.stop().await;

    let kv = JsonKv::open(&world.bus, names::BUCKET_STATUS)
        .await
        .unwrap();
    let acme = AccountName::new("acme").unwrap();
    for feed in Feed::ALL {
        let s = kv
            .get::<FeedStatus>(&names::fetch_status_key(&acme, feed))
            .await
            .unwrap()
            .expect("status")
            .value;
        assert_eq!(s.consecutive_failures, 0, "{feed} recovered");
        assert!(s.last_error.is_none());
        assert!(s.last_success_at.is_some() && s.last_event_at.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_reported_and_a_new_one_picked_up_from_the_file() {
    let world = World::start(SimConfig {
        backfill: 500,
        ..SimConfig::default()
    })
    .await;
    let sim = &world.sim.sim;
    assert!(sim.revoke(&world.token));
    let fetcher = Running::start(world.config("feeds = [\"audit_events\"]"), Clock::System);
    let kv = JsonKv::open(&world.bus, names::BUCKET_STATUS).await;
    let kv = match kv {
        Ok(kv) => kv,
        Err(_) => {
            eventually(Duration::from_secs(20), "status bucket", || async {
                JsonKv::open(&world.bus, names::BUCKET_STATUS).await.ok()
            })
            .await
        }
    };
    let key = names::fetch_status_key(&AccountName::new("acme").unwrap(), Feed::AuditEvents);
    let status = eventually(
        Duration::from_secs(30),
        "the rejection in OP_STATUS",
        || async {
            let s = kv.get::<FeedStatus>(&key).await.ok()??.value;
            (s.consecutive_failures >= 2).then_some(s)
        },
    )
    .await;
    let error = status.last_error.expect("last_error");
    assert!(error.contains("token rejected (401)"), "{error}");
    assert!(
        !error.contains(&world.token),
        "the token must not be in the status"
    );
    assert_eq!(world.raw_count().await, 0);

    // An operator rotates the Secret: a fresh token in the same file.
    let fresh = sim.mint_token(&Default::default());
    std::fs::write(world.token_path(), &fresh).unwrap();
    eventually(
        Duration::from_secs(30),
        "recovery with the new token",
        || async { (world.raw_count().await >= 500).then_some(()) },
    )
    .await;
    let s = kv.get::<FeedStatus>(&key).await.unwrap().unwrap().value;
    assert_eq!(s.consecutive_failures, 0);
    assert!(s.last_error.is_none());
    fetcher.stop().await;
    world.assert_exactly_once(&[Feed::AuditEvents], 500).await;
}

/// A token that cannot be read or decoded at start does not drop the account until the next
/// restart: its feeds get a status row with the error's kind (so the token alarm fires), the
/// account is retried slowly, and a fixed token file is picked up without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_token_at_start_is_reported_and_retried_until_fixed() {
    let world = World::start(SimConfig {
        backfill: 300,
        ..SimConfig::default()
    })
    .await;
    let config = world.config("page_size = 100");
    let token = std::fs::read_to_string(world.token_path()).unwrap();
    std::fs::write(world.token_path(), "not a token\n").unwrap();
    let fetcher = Running::start(config, Clock::System);
    let statuses = eventually(Duration::from_secs(20), "the status bucket", || async {
        JsonKv::open(&world.bus, names::BUCKET_STATUS).await.ok()
    })
    .await;
    let acme = AccountName::new("acme").unwrap();
    for feed in Feed::ALL {
        let key = names::fetch_status_key(&acme, feed);
        let status = eventually(Duration::from_secs(20), "a status row", || async {
            statuses
                .get::<FeedStatus>(&key)
                .await
                .ok()
                .flatten()
                .map(|v| v.value)
        })
        .await;
        assert_eq!(
            status.error_kind,
            Some(FetchErrorKind::TokenInvalid),
            "{feed}"
        );
        assert!(status.last_error.is_some());
    }
    // The operator fixes the Secret; the fetcher notices on its own.
    std::fs::write(world.token_path(), token).unwrap();
    eventually(Duration::from_secs(30), "the backfill", || async {
        (world.raw_count().await >= 900).then_some(())
    })
    .await;
    fetcher.stop().await;
    world.assert_exactly_once(&Feed::ALL, 300).await;
}

/// A response bigger than a page can be is refused, not read into memory whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_over_the_body_limit_is_refused() {
    use oprelay_fetcher::api::{ApiError, EventsApi};
    use oprelay_service::config::ApiVersion;
    let world = World::start(SimConfig {
        backfill: 100,
        ..SimConfig::default()
    })
    .await;
    let api = EventsApi::new(&world.sim.url(), ApiVersion::V2)
        .unwrap()
        .with_max_body(10_000);
    let request = oprelay_events::CursorRequest::Reset {
        limit: Some(100),
        start_time: Some("2000-01-01T00:00:00Z".into()),
        end_time: None,
    };
    let token = oprelay_events::Secret::new(world.token.clone());
    let err = api
        .fetch(Feed::ItemUsages, &request, &token)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Malformed(m) if m.contains("more than the 10000")),
        "{err}"
    );
    let page = EventsApi::new(&world.sim.url(), ApiVersion::V2)
        .unwrap()
        .fetch(Feed::ItemUsages, &request, &token)
        .await
        .expect("the default limit takes a whole page");
    assert_eq!(page.count, 100);
}
