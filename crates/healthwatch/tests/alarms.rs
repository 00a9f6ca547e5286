//! healthwatch on a real nats-server with a controllable clock: no real waiting for 15 minutes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Json;
use oprelay_bus::async_nats::jetstream::consumer::PullConsumer;
use oprelay_bus::{Bus, JsonKv, NatsSettings, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AlarmState, Feed, FeedStatus, FetchErrorKind};
use oprelay_healthwatch::alarm::AlarmRecord;
use oprelay_healthwatch::Options;
use oprelay_service::{config, CancellationToken, Clock, Config};
use oprelay_testkit::NatsServer;
use serde_json::Value;

#[derive(Default)]
struct Hook {
    received: Vec<Value>,
    fail: bool,
}

type Shared = Arc<Mutex<Hook>>;

async fn webhook(state: Shared) -> String {
    let app = axum::Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            let state = state.clone();
            async move {
                let mut s = state.lock().unwrap();
                if s.fail {
                    return StatusCode::BAD_GATEWAY;
                }
                s.received.push(v);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

struct World {
    nats: NatsServer,
    bus: Bus,
    dir: tempfile::TempDir,
    clock: Clock,
}

impl World {
    async fn start() -> World {
        let nats = NatsServer::start();
        let bus = Bus::connect(&NatsSettings {
            url: nats.url(),
            ..Default::default()
        })
        .await
        .unwrap();
        bus.provision(&Default::default()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "unused").unwrap();
        World {
            nats,
            bus,
            dir,
            clock: Clock::manual(time::OffsetDateTime::now_utc()),
        }
    }

    fn config(&self, hook: &str, extra: &str) -> Config {
        config::from_toml(&format!(
            "[nats]\nurl = \"{}\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\n\
             [healthwatch]\ndropoff_after = \"15m\"\ninterval = \"1s\"\nsink_stalled_after = \"15m\"\nnotify = [{{ type = \"webhook\", url = \"{hook}\" }}]\n\
             [[accounts]]\nname = \"acme\"\ntoken_file = \"{}\"\nfeeds = [\"item_usages\"]\n{extra}",
            self.nats.url(),
            self.dir.path().join("token").display()
        ))
        .unwrap()
    }

    fn healthwatch(
        &self,
        config: Config,
        replica: &str,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<(), oprelay_healthwatch::HealthwatchError>>,
    ) {
        let shutdown = CancellationToken::new();
        let options = Options {
            clock: self.clock.clone(),
            replica_id: Some(replica.into()),
        };
        let task = tokio::spawn(oprelay_healthwatch::run_with(
            config,
            options,
            shutdown.clone(),
        ));
        (shutdown, task)
    }

    async fn event(&self, feed: Feed, n: u32) {
        self.bus
            .publish(
                Outgoing::new(
                    format!("op.events.acme.{feed}"),
                    format!("events:{feed}:{n}"),
                    "{}\n",
                )
                .header(header::COUNT, 1),
            )
            .await
            .unwrap();
    }

    async fn record(&self, key: &str) -> Option<AlarmRecord> {
        let kv = JsonKv::open(&self.bus, names::BUCKET_HEALTH).await.ok()?;
        kv.get::<AlarmRecord>(key)
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
    }

    /// Moves the clock a second at a time until `done` holds; panics naming `what` after 60 s
    /// of real time. The bound is real time, not a number of steps, because a loaded machine
    /// runs fewer evaluation and notification rounds per step.
    async fn drive<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if done().await {
                return;
            }
            self.clock.advance(Duration::from_secs(1));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "gave up waiting for {what} after 60 s (clock at {})",
            self.clock.now()
        );
    }

    /// The lease's revision: every evaluation round renews the lease, so it counts rounds.
    async fn rounds(&self) -> u64 {
        let leases = JsonKv::open(&self.bus, names::BUCKET_LEASES).await.unwrap();
        let v = leases.get::<Value>("_healthwatch").await.unwrap();
        v.map_or(0, |v| v.revision)
    }

    /// The `siem` sink's durable consumer on `OP_EVENTS`.
    async fn sink_consumer(&self) -> PullConsumer {
        let topology = oprelay_bus::Topology {
            consumers: vec![oprelay_bus::ConsumerSpec {
                stream: names::STREAM_EVENTS.into(),
                durable: "sink-siem".into(),
                filters: Vec::new(),
            }],
            ack_wait: Duration::from_secs(30),
            ..Default::default()
        };
        self.bus.provision(&topology).await.unwrap();
        oprelay_bus::pull_consumer(self.bus.jetstream(), names::STREAM_EVENTS, "sink-siem")
            .await
            .unwrap()
    }

    async fn state(&self, key: &str) -> Option<AlarmState> {
        self.record(key).await.map(|r| r.alarm.state)
    }
}

/// One file sink, `siem`; its consumer is made by hand in the tests, as the forwarder would.
const SINK: &str = "[[sinks]]\nname = \"siem\"\ntype = \"file\"\npath = \"/tmp/unused\"\n";

/// Acknowledges what waits in the sink's consumer, as a forwarder whose SIEM accepted it;
/// returns how many messages that was.
async fn deliver(consumer: &PullConsumer) -> usize {
    use futures::StreamExt;
    let mut batch = consumer.fetch().max_messages(100).messages().await.unwrap();
    let mut n = 0;
    while let Some(Ok(m)) = batch.next().await {
        m.double_ack().await.unwrap();
        n += 1;
    }
    n
}

fn notifications(hook: &Shared, kind: &str) -> Vec<String> {
    hook.lock()
        .unwrap()
        .received
        .iter()
        .filter(|v| v["kind"] == kind)
        .map(|v| v["notification"].as_str().unwrap_or_default().to_owned())
        .collect()
}

const DROPOFF: &str = "dropoff.acme.item_usages";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_feed_alarms_once_resolves_once_and_a_restart_repeats_nothing() {
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let config = world.config(&url, "");
    world.event(Feed::ItemUsages, 1).await;
    let (stop, task) = world.healthwatch(config.clone(), "hw-1");
    world
        .drive("the feed to be OK", || async {
            world.state(DROPOFF).await == Some(AlarmState::Ok)
        })
        .await;

    // The feed goes quiet for longer than the window.
    world.clock.advance(Duration::from_secs(16 * 60));
    world
        .drive("one ALARM notification", || async {
            notifications(&hook, "dropoff") == ["ALARM"]
        })
        .await;
    let record = world.record(DROPOFF).await.unwrap();
    assert!(
        record.alarm.message.contains("no events for 16 min"),
        "{}",
        record.alarm.message
    );

    // Another 20 minutes of silence and a restart while in ALARM: nothing repeated.
    stop.cancel();
    task.await.unwrap().unwrap();
    let (stop, task) = world.healthwatch(config.clone(), "hw-1");
    for _ in 0..40 {
        world.clock.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        notifications(&hook, "dropoff"),
        ["ALARM"],
        "no duplicate notification"
    );
    assert_eq!(
        world.state(DROPOFF).await,
        Some(AlarmState::Alarm),
        "the open alarm survived the restart"
    );

    // Events resume.
    world.event(Feed::ItemUsages, 2).await;
    world
        .drive("one RESOLVED notification", || async {
            notifications(&hook, "dropoff") == ["ALARM", "RESOLVED"]
        })
        .await;
    let all = hook.lock().unwrap().received.clone();
    let dropoffs: Vec<&Value> = all.iter().filter(|v| v["kind"] == "dropoff").collect();
    assert_eq!(dropoffs[0]["id"], dropoffs[1]["id"], "one episode, one id");
    assert_eq!(dropoffs[1]["state"], "OK");
    for _ in 0..20 {
        world.clock.advance(Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(notifications(&hook, "dropoff"), ["ALARM", "RESOLVED"]);

    // Every state change is on the bus too.
    let mut alarms = world
        .bus
        .jetstream()
        .get_stream(names::STREAM_ALARMS)
        .await
        .unwrap();
    let n = alarms.info().await.unwrap().state.messages;
    assert!(n >= 2, "{n} alarm messages");
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_never_sent_is_insufficient_data_then_alarm() {
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let (stop, task) = world.healthwatch(world.config(&url, ""), "hw-1");
    world
        .drive("INSUFFICIENT_DATA", || async {
            world.state(DROPOFF).await == Some(AlarmState::InsufficientData)
        })
        .await;
    world.clock.advance(Duration::from_secs(10 * 60));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_ne!(
        world.state(DROPOFF).await,
        Some(AlarmState::Alarm),
        "not before the window has passed once"
    );
    world.clock.advance(Duration::from_secs(6 * 60));
    world
        .drive("ALARM after the window", || async {
            notifications(&hook, "dropoff") == ["ALARM"]
        })
        .await;
    assert!(world
        .record(DROPOFF)
        .await
        .unwrap()
        .alarm
        .message
        .contains("no events at all"));
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_gets_the_notification_once_it_recovers() {
    let world = World::start().await;
    let hook = Shared::default();
    hook.lock().unwrap().fail = true;
    let url = webhook(hook.clone()).await;
    let (stop, task) = world.healthwatch(world.config(&url, ""), "hw-1");
    world
        .drive("INSUFFICIENT_DATA", || async {
            world.state(DROPOFF).await.is_some()
        })
        .await;
    world.clock.advance(Duration::from_secs(16 * 60));
    world
        .drive("ALARM state", || async {
            world.state(DROPOFF).await == Some(AlarmState::Alarm)
        })
        .await;
    // The webhook keeps failing for a while; evaluation goes on meanwhile.
    for _ in 0..30 {
        world.clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(notifications(&hook, "dropoff").is_empty());
    hook.lock().unwrap().fail = false;
    world
        .drive("the notification after recovery", || async {
            !notifications(&hook, "dropoff").is_empty()
        })
        .await;
    for _ in 0..30 {
        world.clock.advance(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(notifications(&hook, "dropoff"), ["ALARM"], "exactly once");
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// Steady alarms are not rewritten every round, an idle sink's included. Rewriting them made
/// the notifier's compare-and-set lose to the evaluator, round after round, on a loaded
/// machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_alarms_are_not_rewritten_every_round() {
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let config = world.config(&url, SINK);
    // A sink that has delivered everything: no backlog.
    let consumer = world.sink_consumer().await;
    world.event(Feed::ItemUsages, 1).await;
    assert_eq!(deliver(&consumer).await, 1);
    let (stop, task) = world.healthwatch(config, "hw-1");
    let sink = "sink_stalled.pipeline.sink-siem";
    world
        .drive("the feed and the sink to be OK", || async {
            world.state(DROPOFF).await == Some(AlarmState::Ok)
                && world.state(sink).await == Some(AlarmState::Ok)
        })
        .await;
    let health = JsonKv::open(&world.bus, names::BUCKET_HEALTH)
        .await
        .unwrap();
    let revisions = || async {
        use futures::StreamExt;
        let keys: Vec<String> = health
            .store()
            .keys()
            .await
            .unwrap()
            .map(|k| k.unwrap())
            .collect()
            .await;
        let mut out = std::collections::BTreeMap::new();
        for key in keys {
            let v = health.get::<AlarmRecord>(&key).await.unwrap().unwrap();
            out.insert(key, v.revision);
        }
        out
    };
    let before = revisions().await;
    assert!(before.contains_key(sink) && before.contains_key(DROPOFF));
    let start = world.rounds().await;
    world
        .drive("ten more evaluation rounds", || async {
            world.rounds().await >= start + 10
        })
        .await;
    assert_eq!(
        revisions().await,
        before,
        "unchanged records were rewritten"
    );
    assert_eq!(world.state(sink).await, Some(AlarmState::Ok));
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// What the fetcher reports in `OP_STATUS` drives `token_expiring` and `fetch_failing`; the
/// status is written here as the fetcher writes it, so each rule's edges are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetcher_reports_drive_token_expiring_and_fetch_failing() {
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let status = JsonKv::open(&world.bus, names::BUCKET_STATUS)
        .await
        .unwrap();
    let now = world.clock.now();
    let report = |failures: u32, expires_in_days: i64| FeedStatus {
        last_poll_at: Some(now),
        last_success_at: Some(now),
        last_event_at: Some(now),
        last_error: (failures > 0).then(|| "HTTP 503 from the Events API".to_owned()),
        error_kind: (failures > 0).then_some(FetchErrorKind::ServerError),
        consecutive_failures: failures,
        token_expires_at: Some(now + time::Duration::days(expires_in_days)),
    };
    let key = "fetch.acme.item_usages";
    status.put(key, &report(0, 30)).await.unwrap();
    let (stop, task) = world.healthwatch(world.config(&url, ""), "hw-1");
    let expiring = "token_expiring.acme.item_usages";
    let failing = "fetch_failing.acme.item_usages";
    world
        .drive("both OK", || async {
            world.state(expiring).await == Some(AlarmState::Ok)
                && world.state(failing).await == Some(AlarmState::Ok)
        })
        .await;

    // Four failures are under the default threshold of five; the token has eight days.
    status.put(key, &report(4, 8)).await.unwrap();
    let start = world.rounds().await;
    world
        .drive("three evaluation rounds", || async {
            world.rounds().await >= start + 3
        })
        .await;
    assert_eq!(world.state(failing).await, Some(AlarmState::Ok));
    assert_eq!(world.state(expiring).await, Some(AlarmState::Ok));

    // The fifth failure, and a token inside the seven-day warning.
    status.put(key, &report(5, 6)).await.unwrap();
    world
        .drive("fetch_failing and token_expiring", || async {
            notifications(&hook, "fetch_failing") == ["ALARM"]
                && notifications(&hook, "token_expiring") == ["ALARM"]
        })
        .await;
    let record = world.record(failing).await.unwrap();
    assert!(
        record.alarm.message.contains("5 failed polls")
            && record.alarm.message.contains("HTTP 503"),
        "{}",
        record.alarm.message
    );

    // A successful poll and a renewed token resolve both.
    status.put(key, &report(0, 90)).await.unwrap();
    world
        .drive("both resolved", || async {
            notifications(&hook, "fetch_failing") == ["ALARM", "RESOLVED"]
                && notifications(&hook, "token_expiring") == ["ALARM", "RESOLVED"]
        })
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// A new dead letter raises `dlq_growing`; an hour without another resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_dead_letter_raises_dlq_growing_until_an_hour_passes() {
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let dead_letter = |n: u32| {
        Outgoing::new(
            "op.dlq.normalizer.acme.item_usages".to_owned(),
            format!("dlq:test:{n}"),
            "{}",
        )
    };
    // A dead letter from before healthwatch started is history, not growth.
    world.bus.publish(dead_letter(1)).await.unwrap();
    let (stop, task) = world.healthwatch(world.config(&url, ""), "hw-1");
    let key = "dlq_growing.pipeline.dlq";
    world
        .drive("dlq_growing OK", || async {
            world.state(key).await == Some(AlarmState::Ok)
        })
        .await;
    world.bus.publish(dead_letter(2)).await.unwrap();
    world
        .drive("dlq_growing ALARM", || async {
            notifications(&hook, "dlq_growing") == ["ALARM"]
        })
        .await;
    let record = world.record(key).await.unwrap();
    assert!(
        record.alarm.message.contains("last sequence 2"),
        "{}",
        record.alarm.message
    );
    // Fifty minutes later it still counts as recent.
    world.clock.advance(Duration::from_secs(50 * 60));
    let start = world.rounds().await;
    world
        .drive("three evaluation rounds", || async {
            world.rounds().await >= start + 3
        })
        .await;
    assert_eq!(world.state(key).await, Some(AlarmState::Alarm));
    world.clock.advance(Duration::from_secs(11 * 60));
    world
        .drive("dlq_growing resolved", || async {
            notifications(&hook, "dlq_growing") == ["ALARM", "RESOLVED"]
        })
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_send_one_notification() {
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let config = world.config(&url, "");
    let (s1, t1) = world.healthwatch(config.clone(), "hw-a");
    let (s2, t2) = world.healthwatch(config, "hw-b");
    world
        .drive("a state", || async { world.state(DROPOFF).await.is_some() })
        .await;
    world.clock.advance(Duration::from_secs(16 * 60));
    world
        .drive("the notification", || async {
            !notifications(&hook, "dropoff").is_empty()
        })
        .await;
    for _ in 0..30 {
        world.clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        notifications(&hook, "dropoff"),
        ["ALARM"],
        "one notification, not two"
    );
    s1.cancel();
    s2.cancel();
    t1.await.unwrap().unwrap();
    t2.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sink_is_stalled_and_resolves_when_it_delivers() {
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let config = world.config(&url, SINK);
    // The sink's consumer exists and has a backlog nobody delivers (its SIEM is down).
    let consumer = world.sink_consumer().await;
    for n in 0..3 {
        world.event(Feed::ItemUsages, n).await;
    }
    let (stop, task) = world.healthwatch(config, "hw-1");
    let key = "sink_stalled.pipeline.sink-siem";
    world
        .drive("the sink seen", || async {
            world.state(key).await == Some(AlarmState::Ok)
        })
        .await;
    world.clock.advance(Duration::from_secs(16 * 60));
    world
        .drive("sink_stalled", || async {
            notifications(&hook, "sink_stalled") == ["ALARM"]
        })
        .await;
    // The SIEM is back: the forwarder delivers and acks the backlog.
    assert_eq!(deliver(&consumer).await, 3);
    world
        .drive("resolved", || async {
            notifications(&hook, "sink_stalled") == ["ALARM", "RESOLVED"]
        })
        .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_fires_token_rejected_and_resolves_when_it_is_back() {
    use oprelay_testkit::opsim::{self, SimConfig, TokenSpec};
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let sim = opsim::spawn(SimConfig {
        backfill: 10,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let token = sim.sim.mint_token(&TokenSpec::default());
    std::fs::write(world.dir.path().join("token"), &token).unwrap();
    let config = world.config(
        &url,
        &format!(
            "base_url = \"{}\"\nstart_time = \"2000-01-01T00:00:00Z\"\npoll_interval = \"1s\"\n",
            sim.url()
        ),
    );
    // The real fetcher, retrying rejected tokens quickly, reports into OP_STATUS.
    let fetch_stop = CancellationToken::new();
    let fast = oprelay_fetcher::backoff::BackoffPolicy {
        transient_base: Duration::from_millis(10),
        transient_cap: Duration::from_millis(50),
        slow_base: Duration::from_millis(50),
        slow_cap: Duration::from_millis(100),
    };
    let fetcher = tokio::spawn(oprelay_fetcher::run_with(
        config.clone(),
        oprelay_fetcher::Options {
            backoff: fast,
            ..Default::default()
        },
        fetch_stop.clone(),
    ));
    let (stop, task) = world.healthwatch(config, "hw-1");
    let key = "token_rejected.acme.item_usages";
    world
        .drive("token accepted", || async {
            world.state(key).await == Some(AlarmState::Ok)
        })
        .await;

    assert!(sim.sim.revoke(&token));
    world
        .drive("token_rejected", || async {
            notifications(&hook, "token_rejected") == ["ALARM"]
        })
        .await;
    assert!(world
        .record(key)
        .await
        .unwrap()
        .alarm
        .message
        .contains("token rejected (401)"));
    assert!(sim.sim.restore(&token));
    world
        .drive("token_rejected resolved", || async {
            notifications(&hook, "token_rejected") == ["ALARM", "RESOLVED"]
        })
        .await;

    stop.cancel();
    fetch_stop.cancel();
    task.await.unwrap().unwrap();
    fetcher.await.unwrap().unwrap();
}

/// The token alarm follows the kind of the fetcher's error, not its wording: a token file that
/// cannot be read (a Secret not mounted) fires it as a rejected token does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_token_fires_token_rejected_by_its_error_kind() {
    let world = World::start().await;
    let hook = Shared::default();
    let url = webhook(hook.clone()).await;
    let status = JsonKv::open(&world.bus, names::BUCKET_STATUS)
        .await
        .unwrap();
    let now = world.clock.now();
    let unreadable = FeedStatus {
        last_poll_at: Some(now),
        last_error: Some(
            "cannot read the token: /etc/oprelay/tokens/acme: No such file or directory".into(),
        ),
        error_kind: Some(FetchErrorKind::TokenUnreadable),
        consecutive_failures: 1,
        ..FeedStatus::default()
    };
    status
        .put("fetch.acme.item_usages", &unreadable)
        .await
        .unwrap();
    let (stop, task) = world.healthwatch(world.config(&url, ""), "hw-1");
    world
        .drive("token_rejected", || async {
            notifications(&hook, "token_rejected") == ["ALARM"]
        })
        .await;
    let record = world
        .record("token_rejected.acme.item_usages")
        .await
        .unwrap();
    assert!(
        record.alarm.message.contains("cannot read the token"),
        "{}",
        record.alarm.message
    );
    stop.cancel();
    task.await.unwrap().unwrap();
}
