//! Crashes at every point of the per-page sequence (request → publish → ack → cursor write)
//! leave no gap and no duplicate in OP_RAW.

mod common;

use std::time::Duration;

use common::{Running, World};
use oprelay_bus::{JsonKv, Outgoing};
use oprelay_events::{names, AccountName, CursorRequest, CursorState, Feed};
use oprelay_fetcher::api::EventsApi;
use oprelay_fetcher::poller::page_msg_ids;
use oprelay_service::config::ApiVersion;
use oprelay_service::Clock;
use oprelay_testkit::eventually;
use oprelay_testkit::opsim::SimConfig;

const PER_FEED: u64 = 3_000;

fn small_pages() -> &'static str {
    "page_size = 100\nfeeds = [\"item_usages\"]\n[fetcher]\nreplica_id = \"r1\""
}

/// Plays the fetcher's first step by hand, up to the answer: provision, fix the feed's start
/// time in `OP_CURSORS` (no cursor yet), send the reset request for `item_usages`.
async fn first_request_without_cursor(
    world: &World,
    config: &oprelay_service::Config,
    limit: u32,
) -> (
    AccountName,
    JsonKv,
    CursorRequest,
    oprelay_fetcher::api::FetchedPage,
) {
    world.bus.provision(&config.topology()).await.unwrap();
    let acme = AccountName::new("acme").unwrap();
    let cursors = JsonKv::open(&world.bus, names::BUCKET_CURSORS)
        .await
        .unwrap();
    let start = CursorState {
        cursor: String::new(),
        start_time: Some("2000-01-01T00:00:00Z".into()),
        updated_at: time::OffsetDateTime::now_utc(),
        pages: 0,
        events: 0,
    };
    cursors
        .compare_and_set(&names::feed_key(&acme, Feed::ItemUsages), &start, None)
        .await
        .unwrap();
    let request = CursorRequest::Reset {
        limit: Some(limit),
        start_time: start.start_time.clone(),
        end_time: None,
    };
    let api = EventsApi::new(&world.sim.url(), ApiVersion::V2).unwrap();
    let token = oprelay_events::Secret::new(world.token.clone());
    let page = api.fetch(Feed::ItemUsages, &request, &token).await.unwrap();
    (acme, cursors, request, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_publish_before_cursor_write_duplicates_nothing() {
    let world = World::start(SimConfig {
        backfill: PER_FEED,
        ..SimConfig::default()
    })
    .await;
    let config = world.config(small_pages());
    // Provision, then play the fetcher's first step by hand and "crash" before the cursor
    // write: the first page is in OP_RAW, the cursor store holds only the fixed start time.
    let (acme, _, request, page) = first_request_without_cursor(&world, &config, 100).await;
    let ack = world
        .bus
        .publish(Outgoing::new(
            names::raw_subject(&acme, Feed::ItemUsages),
            page_msg_ids(&acme, Feed::ItemUsages, &request, &page.body, 1).remove(0),
            page.body,
        ))
        .await
        .unwrap();
    assert!(!ack.duplicate);

    let fetcher = Running::start(config, Clock::System);
    eventually(
        Duration::from_secs(60),
        "the backfill in OP_RAW",
        || async { (world.raw_count().await >= PER_FEED as usize).then_some(()) },
    )
    .await;
    fetcher.stop().await;
    world
        .assert_exactly_once(&[Feed::ItemUsages], PER_FEED)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_publish_loses_nothing() {
    let world = World::start(SimConfig {
        backfill: PER_FEED,
        ..SimConfig::default()
    })
    .await;
    // The request was made and its answer thrown away (crash before publish): nothing stored.
    let api = EventsApi::new(&world.sim.url(), ApiVersion::V2).unwrap();
    let token = oprelay_events::Secret::new(world.token.clone());
    let request = CursorRequest::Reset {
        limit: Some(100),
        start_time: Some("2000-01-01T00:00:00Z".into()),
        end_time: None,
    };
    api.fetch(Feed::ItemUsages, &request, &token).await.unwrap();

    let fetcher = Running::start(world.config(small_pages()), Clock::System);
    eventually(
        Duration::from_secs(60),
        "the backfill in OP_RAW",
        || async { (world.raw_count().await >= PER_FEED as usize).then_some(()) },
    )
    .await;
    fetcher.stop().await;
    world
        .assert_exactly_once(&[Feed::ItemUsages], PER_FEED)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kill_9_mid_drain_neither_gaps_nor_duplicates() {
    let world = World::start(SimConfig {
        backfill: PER_FEED,
        ..SimConfig::default()
    })
    .await;
    let config = world.config(small_pages());
    // Crash after increasing amounts of progress: some crashes land after a cursor write,
    // some between publish and cursor write, some mid-request.
    for target in [300usize, 700, 1_200, 1_800, 2_500] {
        let fetcher = Running::start(config.clone(), Clock::System);
        eventually(
            Duration::from_secs(60),
            "progress before the crash",
            || async { (world.raw_count().await >= target).then_some(()) },
        )
        .await;
        fetcher.crash();
    }
    // The crashed replicas' leases have the same owner id (same config), so the restart
    // resumes at once.
    let fetcher = Running::start(config, Clock::System);
    eventually(
        Duration::from_secs(60),
        "the rest of the backfill",
        || async { (world.raw_count().await >= PER_FEED as usize).then_some(()) },
    )
    .await;
    fetcher.stop().await;
    world
        .assert_exactly_once(&[Feed::ItemUsages], PER_FEED)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_bigger_than_a_bus_message_go_as_parts_exactly_once() {
    // A server that takes at most 64 KiB per message: a 1 000-event page (~700 KB) must split.
    let nats = oprelay_testkit::NatsServer::start_with_config("max_payload: 65536");
    let mut world = World::start(SimConfig {
        backfill: PER_FEED,
        ..SimConfig::default()
    })
    .await;
    world.nats = nats;
    world.bus = oprelay_bus::Bus::connect(&oprelay_bus::NatsSettings {
        url: world.nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    let config =
        world.config("page_size = 1000\nfeeds = [\"item_usages\"]\n[fetcher]\nreplica_id = \"r1\"");
    let fetcher = Running::start(config, Clock::System);
    assert_eq!(world.bus.max_body(), 48 * 1024);
    eventually(
        Duration::from_secs(60),
        "the backfill in OP_RAW",
        || async { (world.raw_count().await >= PER_FEED as usize).then_some(()) },
    )
    .await;
    fetcher.stop().await;
    world
        .assert_exactly_once(&[Feed::ItemUsages], PER_FEED)
        .await;
    let mut raw = world
        .bus
        .jetstream()
        .get_stream(names::STREAM_RAW)
        .await
        .unwrap();
    let messages = raw.info().await.unwrap().state.messages;
    assert!(
        messages >= 30,
        "3 pages of ~700 KB in parts of at most 48 KB: {messages} messages"
    );
}

/// The tail of a feed grows between two sends of the same request. The first answer was
/// published but its cursor never written (a crash between the JetStream ack and the cursor
/// write); the fetcher then re-sends the request and gets a longer page. That page must reach
/// `OP_RAW`: dropping it as a duplicate of the first would move the cursor past events that
/// never reached the bus.
async fn a_grown_tail_page_is_published(
    world: World,
    config: oprelay_service::Config,
    backfill: u64,
    parts_before: usize,
    more: u64,
) {
    let (acme, cursors, request, page) = first_request_without_cursor(&world, &config, 1_000).await;
    // The backfill, plus the live event that arrives the instant opsim starts.
    let first = page.count as u64;
    assert_eq!(first, backfill + 1, "the first answer holds the backfill");
    let grown = first + more;
    // Publish it as the fetcher would have, part by part.
    let parts = oprelay_fetcher::api::split_page(&page.body, world.bus.max_body()).parts;
    assert_eq!(parts.len(), parts_before, "bus parts of the first answer");
    let ids = page_msg_ids(&acme, Feed::ItemUsages, &request, &page.body, parts.len());
    for (part, id) in parts.into_iter().zip(ids) {
        let ack = world
            .bus
            .publish(Outgoing::new(
                names::raw_subject(&acme, Feed::ItemUsages),
                id,
                part,
            ))
            .await
            .unwrap();
        assert!(!ack.duplicate);
    }
    // More events arrive at the tail before the request is sent again.
    world
        .sim
        .sim
        .clock()
        .advance(time::Duration::seconds(more as i64));

    let fetcher = Running::start(config, Clock::System);
    let want = world.expected(Feed::ItemUsages, grown);
    let cursors_for_wait = cursors.clone();
    eventually(
        Duration::from_secs(30),
        "every event of the grown page in OP_RAW",
        || async {
            let have = world.raw_events().await;
            let have = have.get(&Feed::ItemUsages).cloned().unwrap_or_default();
            want.iter().all(|u| have.contains(u)).then_some(())
        },
    )
    .await;
    fetcher.stop().await;
    let state = cursors_for_wait
        .get::<CursorState>(&names::feed_key(&acme, Feed::ItemUsages))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state.value.events, grown,
        "the cursor counts the grown page"
    );
}

fn tail_sim(backfill: u64) -> SimConfig {
    let start = time::OffsetDateTime::now_utc();
    SimConfig {
        backfill,
        rate: 1.0,
        clock: oprelay_testkit::opsim::SimClock::manual(start),
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_page_that_grew_is_published_not_dropped_as_a_duplicate() {
    let world = World::start(tail_sim(40)).await;
    let config =
        world.config("page_size = 1000\nfeeds = [\"item_usages\"]\n[fetcher]\nreplica_id = \"r1\"");
    a_grown_tail_page_is_published(world, config, 40, 1, 40).await;
}

/// A server that takes at most 64 KiB per message, and a world on it.
async fn small_message_world(backfill: u64) -> World {
    let nats = oprelay_testkit::NatsServer::start_with_config("max_payload: 65536");
    let mut world = World::start(tail_sim(backfill)).await;
    world.nats = nats;
    world.bus = oprelay_bus::Bus::connect(&oprelay_bus::NatsSettings {
        url: world.nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    world
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_page_that_grew_within_two_bus_parts_is_published() {
    // 71 item usages (~50 KB) and 111 (~78 KB) both take two 48 KiB parts: the grown page's
    // second part differs from the first answer's under the same part number.
    let world = small_message_world(70).await;
    let config =
        world.config("page_size = 1000\nfeeds = [\"item_usages\"]\n[fetcher]\nreplica_id = \"r1\"");
    a_grown_tail_page_is_published(world, config, 70, 2, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_page_that_grew_from_one_bus_part_to_two_is_published() {
    // 41 item usages (~30 KB) fit one 48 KiB part; 81 need two.
    let world = small_message_world(40).await;
    let config =
        world.config("page_size = 1000\nfeeds = [\"item_usages\"]\n[fetcher]\nreplica_id = \"r1\"");
    let page_bytes = serde_json::to_vec(&world.sim.sim.event(Feed::ItemUsages, 0))
        .unwrap()
        .len();
    assert!(
        page_bytes * 40 < 48 * 1024 && page_bytes * 80 > 48 * 1024,
        "the sizes make one part grow into two ({page_bytes} bytes per event)"
    );
    a_grown_tail_page_is_published(world, config, 40, 1, 40).await;
}

/// An event bigger than any bus message goes to the DLQ with the reason, and the feed moves on
/// instead of retrying a publish that can never succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_big_for_the_bus_is_dead_lettered_and_the_feed_moves_on() {
    use oprelay_testkit::opsim::{Fault, FaultKind};
    let nats = oprelay_testkit::NatsServer::start_with_config("max_payload: 65536");
    let mut world = World::start(SimConfig {
        backfill: 300,
        ..SimConfig::default()
    })
    .await;
    world.nats = nats;
    world.bus = oprelay_bus::Bus::connect(&oprelay_bus::NatsSettings {
        url: world.nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    world
        .sim
        .sim
        .inject(Fault::new(FaultKind::Oversized { bytes: 70_000 }).on(Feed::ItemUsages));
    let fetcher = Running::start(world.config(small_pages()), Clock::System);
    let want: Vec<String> = world.expected(Feed::ItemUsages, 300)[1..].to_vec();
    eventually(
        Duration::from_secs(30),
        "every other event in OP_RAW",
        || async {
            let have = world.raw_events().await;
            (have.get(&Feed::ItemUsages) == Some(&want)).then_some(())
        },
    )
    .await;
    fetcher.stop().await;
    let mut dlq = world
        .bus
        .jetstream()
        .get_stream(names::STREAM_DLQ)
        .await
        .unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1);
    let letter = dlq.get_raw_message(1).await.unwrap();
    assert_eq!(letter.subject.as_str(), "op.dlq.fetch.acme.item_usages");
    let error = oprelay_bus::header_value(Some(&letter.headers), names::header::ERROR)
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("more than the bus's largest message"),
        "{error}"
    );
    assert!(error.contains("event 0 of the page"), "{error}");
    // As much of the event as a message holds (its key order depends on serde_json's features).
    assert_eq!(letter.payload.len(), world.bus.max_body());
    assert!(
        letter.payload.starts_with(b"{\""),
        "the dead letter starts with the event"
    );
}
