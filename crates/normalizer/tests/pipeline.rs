//! The normalizer service on a real nats-server: OP_RAW → OP_EVENTS exactly once, dead
//! letters for the bad record and the bad page, live lookups, and a kill -9 mid-stream.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use oprelay_bus::{header_value, Bus, JsonKv, NatsSettings, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Feed, LookupKind, LookupRow, LookupSource};
use oprelay_service::{config, CancellationToken, Config};
use oprelay_testkit::{eventually, NatsServer};
use serde_json::{json, Value};

struct World {
    nats: NatsServer,
    bus: Bus,
    config: Config,
}

impl World {
    async fn start() -> World {
        Self::start_on(NatsServer::start()).await
    }

    async fn start_on(nats: NatsServer) -> World {
        let config = config::from_toml(&format!(
            "[nats]\nurl = \"{}\"\nack_wait = \"2s\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\n",
            nats.url()
        ))
        .unwrap();
        let bus = Bus::connect(&NatsSettings {
            url: nats.url(),
            ..Default::default()
        })
        .await
        .unwrap();
        bus.provision(&config.topology()).await.unwrap();
        World { nats, bus, config }
    }

    fn normalizer(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), oprelay_normalizer::NormalizerError>>,
    ) {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(oprelay_normalizer::run(
            self.config.clone(),
            shutdown.clone(),
        ));
        (shutdown, task)
    }

    async fn publish_raw(&self, feed: Feed, id: &str, body: Vec<u8>) {
        let acme = AccountName::new("acme").unwrap();
        self.bus
            .publish(
                Outgoing::new(names::raw_subject(&acme, feed), id, body)
                    .header(header::ACCOUNT, "acme")
                    .header(header::FEED, feed),
            )
            .await
            .unwrap();
    }

    /// (msg id, headers as map, body) of every message in a stream.
    async fn messages(&self, stream: &str) -> Vec<(String, HashMap<String, String>, Vec<u8>)> {
        let mut s = self.bus.jetstream().get_stream(stream).await.unwrap();
        let last = s.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                let h = Some(&m.headers);
                let mut map = HashMap::new();
                for name in [
                    header::STAGE,
                    header::ERROR,
                    header::ACCOUNT,
                    header::FEED,
                    header::COUNT,
                    header::MAX_EVENT_TIME,
                ] {
                    if let Some(v) = header_value(h, name) {
                        map.insert(name.to_owned(), v.to_owned());
                    }
                }
                out.push((
                    header_value(h, header::MSG_ID)
                        .unwrap_or_default()
                        .to_owned(),
                    map,
                    m.payload.to_vec(),
                ));
            }
        }
        out
    }

    async fn event_records(&self) -> Vec<Value> {
        self.messages(names::STREAM_EVENTS)
            .await
            .into_iter()
            .flat_map(|(_, _, body)| {
                body.split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_slice(l).unwrap())
                    .collect::<Vec<Value>>()
            })
            .collect()
    }
}

fn page(items: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"cursor": "c", "has_more": false, "items": items})).unwrap()
}

fn usage(uuid: &str, item: &str) -> Value {
    json!({"uuid": uuid, "timestamp": "2026-03-01T12:00:00.000Z", "item_uuid": item, "vault_uuid": "v1",
           "user": {"uuid": "U1", "name": "Ada", "email": "ada@example.com"}, "client": {"ip_address": "10.0.0.1"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_become_batches_exactly_once_with_dead_letters() {
    let world = World::start().await;
    world
        .publish_raw(
            Feed::ItemUsages,
            "raw:1",
            page(vec![usage("E1", "i1"), usage("E2", "i2")]),
        )
        .await;
    world
        .publish_raw(
            Feed::ItemUsages,
            "raw:2",
            page(vec![
                usage("E3", "i1"),
                json!({"uuid": "E4", "timestamp": "nope"}),
                usage("E5", "i2"),
            ]),
        )
        .await;
    world
        .publish_raw(
            Feed::AuditEvents,
            "raw:3",
            b"<html>502 Bad Gateway</html>".to_vec(),
        )
        .await;
    let (shutdown, task) = world.normalizer();

    eventually(
        Duration::from_secs(30),
        "two batches and two dead letters",
        || async {
            let events = world.messages(names::STREAM_EVENTS).await.len();
            let dlq = world.messages(names::STREAM_DLQ).await.len();
            (events == 2 && dlq == 2).then_some(())
        },
    )
    .await;
    let events = world.messages(names::STREAM_EVENTS).await;
    assert_eq!(events[0].0, "events:raw:1");
    assert_eq!(events[1].0, "events:raw:2");
    assert_eq!(
        events[1].1[header::COUNT],
        "2",
        "the bad record is left out, the rest goes on"
    );
    assert_eq!(events[1].1[header::MAX_EVENT_TIME], "2026-03-01T12:00:00Z");
    assert_eq!(events[1].1[header::ACCOUNT], "acme");
    let uuids: Vec<String> = world
        .event_records()
        .await
        .iter()
        .map(|r| r["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(uuids, ["E1", "E2", "E3", "E5"], "page order kept");

    let dlq = world.messages(names::STREAM_DLQ).await;
    let record = dlq
        .iter()
        .find(|d| d.1[header::FEED] == "item_usages")
        .expect("bad record");
    assert_eq!(record.1[header::STAGE], "normalize");
    assert!(
        record.1[header::ERROR].contains("timestamp `nope`"),
        "{:?}",
        record.1
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&record.2).unwrap()["uuid"],
        "E4"
    );
    let bad_page = dlq
        .iter()
        .find(|d| d.1[header::FEED] == "audit_events")
        .expect("bad page");
    assert!(bad_page.1[header::ERROR].contains("not valid JSON"));
    assert_eq!(bad_page.2, b"<html>502 Bad Gateway</html>");

    // Everything acknowledged: nothing pending on the raw consumer.
    let raw = world
        .bus
        .jetstream()
        .get_stream(names::STREAM_RAW)
        .await
        .unwrap();
    let info = raw.consumer_info(names::CONSUMER_NORMALIZER).await.unwrap();
    assert_eq!(info.num_pending + info.num_ack_pending as u64, 0);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_import_is_used_and_observed_users_never_overwrite_it() {
    let world = World::start().await;
    let (shutdown, task) = world.normalizer();
    let lookups = JsonKv::open(&world.bus, names::BUCKET_LOOKUPS)
        .await
        .unwrap();
    // An operator imports while the normalizer runs.
    for row in [
        LookupRow {
            uuid: "i1".into(),
            kind: LookupKind::Item,
            title: "AWS root".into(),
            email: None,
            updated_at: None,
            source: LookupSource::Imported,
        },
        LookupRow {
            uuid: "U1".into(),
            kind: LookupKind::User,
            title: "Ada Lovelace (HR)".into(),
            email: Some("ada@example.com".into()),
            updated_at: None,
            source: LookupSource::Imported,
        },
    ] {
        lookups.put(&row.key(), &row).await.unwrap();
    }
    // Wait for the running normalizer to pick it up: publish until a record comes out enriched.
    let mut n = 0;
    eventually(
        Duration::from_secs(30),
        "an enriched record from the live import",
        || {
            n += 1;
            let id = format!("raw:{n}");
            let world = &world;
            async move {
                world
                    .publish_raw(
                        Feed::ItemUsages,
                        &id,
                        page(vec![usage(&format!("E{id}"), "i1")]),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let records = world.event_records().await;
                records
                    .iter()
                    .any(|r| {
                        r["p_enrichment"]["1Password Translation"]["item_uuid"]["title"]
                            == "AWS root"
                    })
                    .then_some(())
            }
        },
    )
    .await;
    let records = world.event_records().await;
    let last = records.last().unwrap();
    assert_eq!(
        last["p_enrichment"]["1Password Translation"]["user.uuid"]["title"], "Ada Lovelace (HR)",
        "imported beats the name in the event"
    );
    // The stream said "Ada"; the imported row is unchanged in the bucket.
    let row = lookups
        .get::<LookupRow>("user.U1")
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(row.title, "Ada Lovelace (HR)");
    assert_eq!(row.source, LookupSource::Imported);

    // A user only the stream knows is learned as observed.
    world.publish_raw(Feed::SignInAttempts, "raw:signin", page(vec![json!({"uuid": "S1", "timestamp": "2026-03-01T00:00:00Z", "target_user": {"uuid": "U9", "name": "Grace", "email": "grace@example.com"}})])).await;
    let learned = eventually(
        Duration::from_secs(30),
        "the observed user in OP_LOOKUPS",
        || async { lookups.get::<LookupRow>("user.U9").await.ok().flatten() },
    )
    .await;
    assert_eq!(learned.value.source, LookupSource::Observed);
    assert_eq!(learned.value.email.as_deref(), Some("grace@example.com"));
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_duplicates_no_batch() {
    let world = World::start().await;
    let pages = 300;
    for p in 0..pages {
        let items = (0..20).map(|i| usage(&format!("E{p}-{i}"), "i1")).collect();
        world
            .publish_raw(Feed::ItemUsages, &format!("raw:{p}"), page(items))
            .await;
    }
    for target in [40usize, 120, 200] {
        let (_shutdown, task) = world.normalizer();
        eventually(
            Duration::from_secs(60),
            "progress before the crash",
            || async { (world.messages(names::STREAM_EVENTS).await.len() >= target).then_some(()) },
        )
        .await;
        task.abort();
        let _ = task.await;
    }
    let (shutdown, task) = world.normalizer();
    eventually(Duration::from_secs(60), "every page normalized", || async {
        (world.messages(names::STREAM_EVENTS).await.len() >= pages).then_some(())
    })
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let batches = world.messages(names::STREAM_EVENTS).await;
    assert_eq!(
        batches.len(),
        pages,
        "one batch per page, no duplicate batch"
    );
    let ids: HashSet<&str> = batches.iter().map(|b| b.0.as_str()).collect();
    assert_eq!(ids.len(), pages);
    let records = world.event_records().await;
    let uuids: HashSet<&str> = records
        .iter()
        .map(|r| r["uuid"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), pages * 20);
    assert_eq!(uuids.len(), pages * 20, "every event exactly once");
    drop(world.nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_normalizes_bigger_than_a_bus_message_goes_as_parts() {
    // At most 64 KiB per message: the raw page fits, its enriched records do not.
    let world = World::start_on(NatsServer::start_with_config("max_payload: 65536")).await;
    let items: Vec<Value> = (0..60).map(|i| usage(&format!("B{i}"), "i1")).collect();
    let raw = page(items);
    assert!(raw.len() < 48 * 1024);
    world.publish_raw(Feed::ItemUsages, "raw:big", raw).await;
    let lookups = JsonKv::open(&world.bus, names::BUCKET_LOOKUPS)
        .await
        .unwrap();
    let long = LookupRow {
        uuid: "i1".into(),
        kind: LookupKind::Item,
        title: "t".repeat(600),
        email: None,
        updated_at: None,
        source: LookupSource::Imported,
    };
    lookups.put(&long.key(), &long).await.unwrap();
    let (shutdown, task) = world.normalizer();
    eventually(
        Duration::from_secs(30),
        "60 records in OP_EVENTS",
        || async { (world.event_records().await.len() >= 60).then_some(()) },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let batches = world.messages(names::STREAM_EVENTS).await;
    assert!(batches.len() >= 2, "split into {} messages", batches.len());
    // The raw page is one part's worth; its enriched records outgrow it: halved as `0.n`.
    assert_eq!(batches[0].0, "events:raw:big:0.0");
    let counted: usize = batches
        .iter()
        .map(|b| b.1[header::COUNT].parse::<usize>().unwrap())
        .sum();
    assert_eq!(counted, 60);
    let uuids: Vec<String> = world
        .event_records()
        .await
        .iter()
        .map(|r| r["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        uuids,
        (0..60).map(|i| format!("B{i}")).collect::<Vec<_>>(),
        "page order across parts"
    );
}

/// A page that takes several bus messages is redelivered after its first part was published,
/// and meanwhile an import changed how big its records are once enriched. The second attempt
/// must cut the same parts under the same ids: `OP_EVENTS` then holds every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_multi_part_page_is_cut_the_same_whatever_the_lookups() {
    use oprelay_normalizer::lookup::LookupIndex;
    use oprelay_normalizer::normalize::{normalize_page, Source};

    let world = World::start_on(NatsServer::start_with_config("max_payload: 65536")).await;
    // Item usages of about 700 bytes, as the API's are: 60 of them take several parts.
    let items: Vec<Value> = (0..60)
        .map(|i| {
            let mut u = usage(&format!("R{i:02}"), "i1");
            u["padding"] = json!("p".repeat(450));
            u
        })
        .collect();
    let raw = page(items);
    let acme = AccountName::new("acme").unwrap();

    // First attempt, with no lookups: part 0 reaches OP_EVENTS, then the normalizer dies.
    let first = normalize_page(
        &raw,
        Feed::ItemUsages,
        &Source::for_account("acme", None, None),
        &mut LookupIndex::new(),
        time::OffsetDateTime::now_utc(),
    );
    let parts = oprelay_normalizer::parts::cut(&first, world.bus.max_body()).parts;
    assert!(parts.len() >= 2, "the page takes {} parts", parts.len());
    let part0 = &parts[0];
    world
        .bus
        .publish(
            Outgoing::new(
                names::events_subject(&acme, Feed::ItemUsages),
                format!("events:raw:multi{}", part0.suffix),
                first.ndjson[part0.from..part0.to].to_vec(),
            )
            .header(header::COUNT, part0.records),
        )
        .await
        .unwrap();

    // An import makes every record bigger; then the page is delivered again.
    let lookups = JsonKv::open(&world.bus, names::BUCKET_LOOKUPS)
        .await
        .unwrap();
    let row = LookupRow {
        uuid: "i1".into(),
        kind: LookupKind::Item,
        title: "t".repeat(300),
        email: None,
        updated_at: None,
        source: LookupSource::Imported,
    };
    lookups.put(&row.key(), &row).await.unwrap();
    world
        .publish_raw(Feed::ItemUsages, "raw:multi", raw.clone())
        .await;
    let (shutdown, task) = world.normalizer();
    let want: Vec<String> = (0..60).map(|i| format!("R{i:02}")).collect();
    eventually(
        Duration::from_secs(30),
        "every record in OP_EVENTS",
        || async {
            let have: HashSet<String> = world
                .event_records()
                .await
                .iter()
                .filter_map(|r| r["uuid"].as_str().map(str::to_owned))
                .collect();
            want.iter().all(|u| have.contains(u)).then_some(())
        },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let mut have: Vec<String> = world
        .event_records()
        .await
        .iter()
        .map(|r| r["uuid"].as_str().unwrap().to_owned())
        .collect();
    have.sort();
    assert_eq!(have, want, "every record exactly once");
}

/// A record that, enriched, is bigger than any bus message goes to the DLQ with the reason;
/// the rest of its page is published and the feed moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_big_for_any_message_is_dead_lettered_and_the_page_moves_on() {
    let world = World::start_on(NatsServer::start_with_config("max_payload: 65536")).await;
    let lookups = JsonKv::open(&world.bus, names::BUCKET_LOOKUPS)
        .await
        .unwrap();
    let long = LookupRow {
        uuid: "huge".into(),
        kind: LookupKind::Item,
        title: "t".repeat(20_000),
        email: None,
        updated_at: None,
        source: LookupSource::Imported,
    };
    lookups.put(&long.key(), &long).await.unwrap();
    let mut big = usage("BIG", "huge");
    big["padding"] = json!("p".repeat(46 * 1024));
    let raw = page(vec![usage("S1", "i1"), big, usage("S2", "i1")]);
    assert!(raw.len() < 48 * 1024, "the raw page fits one message");
    world.publish_raw(Feed::ItemUsages, "raw:huge", raw).await;
    world
        .publish_raw(Feed::ItemUsages, "raw:next", page(vec![usage("N1", "i1")]))
        .await;
    let (shutdown, task) = world.normalizer();
    eventually(
        Duration::from_secs(30),
        "the next page's record",
        || async {
            let uuids: Vec<String> = world
                .event_records()
                .await
                .iter()
                .filter_map(|r| r["uuid"].as_str().map(str::to_owned))
                .collect();
            uuids.contains(&"N1".to_owned()).then_some(())
        },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let uuids: Vec<String> = world
        .event_records()
        .await
        .iter()
        .map(|r| r["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(uuids, ["S1", "S2", "N1"]);
    let dlq = world.messages(names::STREAM_DLQ).await;
    assert_eq!(dlq.len(), 1, "one dead letter");
    let error = &dlq[0].1[header::ERROR];
    assert!(
        error.contains("more than the bus's largest message"),
        "{error}"
    );
    let kept = String::from_utf8_lossy(&dlq[0].2);
    assert!(
        kept.starts_with('{') && kept.contains("\"uuid\":\"BIG\""),
        "the record's start is kept"
    );
}

/// A backlog is normalized several pages at a time; a page read while the page before it was
/// still teaching a user's name is normalized again at its turn. So every audit event after
/// the sign-in that names Grace carries her name, and the batches are in page order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_normalized_side_by_side_publish_in_order_with_what_earlier_pages_taught() {
    let world = World::start().await;
    let signin = json!({"uuid": "S1", "timestamp": "2026-03-01T00:00:00Z", "category": "success",
                        "target_user": {"uuid": "U7", "name": "Grace", "email": "grace@example.com"}});
    world
        .publish_raw(Feed::SignInAttempts, "raw:0", page(vec![signin]))
        .await;
    let pages = 8;
    for n in 1..=pages {
        let audit = json!({"uuid": format!("A{n}"), "timestamp": "2026-03-01T00:00:01Z",
                           "actor_uuid": "U7", "action": "suspend", "object_type": "user", "object_uuid": "O1"});
        world
            .publish_raw(Feed::AuditEvents, &format!("raw:{n}"), page(vec![audit]))
            .await;
    }
    // Started after the backlog is there, so one pull hands it several pages at once.
    let (shutdown, task) = world.normalizer();
    let batches = eventually(Duration::from_secs(30), "every page published", || async {
        let batches = world.messages(names::STREAM_EVENTS).await;
        (batches.len() > pages).then_some(batches)
    })
    .await;
    let ids: Vec<String> = batches.iter().map(|(id, _, _)| id.clone()).collect();
    let expected: Vec<String> = (0..=pages).map(|n| format!("events:raw:{n}")).collect();
    assert_eq!(ids, expected, "batches in page order");
    let records = world.event_records().await;
    for r in records.iter().filter(|r| r["uuid"] != "S1") {
        assert_eq!(
            r["p_enrichment"]["1Password Translation"]["actor_uuid"]["title"], "Grace",
            "{} is enriched with what the sign-in taught",
            r["uuid"]
        );
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
