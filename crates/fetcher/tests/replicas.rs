//! Three replicas share six feeds: two each, one owner per feed; kill one and the survivors
//! take its feeds over after the lease TTL; nothing is lost or duplicated.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{fast_backoff, Running, World};
use oprelay_bus::JsonKv;
use oprelay_events::{names, Feed, Lease};
use oprelay_fetcher::Options;
use oprelay_service::{config, Clock};
use oprelay_testkit::eventually;
use oprelay_testkit::opsim::SimConfig;

const PER_FEED: u64 = 2_000;

async fn owners(kv: &JsonKv, now: time::OffsetDateTime) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for account in ["acme", "beta"] {
        for feed in Feed::ALL {
            let key = format!("{account}.{feed}");
            if let Ok(Some(l)) = kv.get::<Lease>(&key).await {
                if l.value.expires_at > now {
                    out.insert(key, l.value.owner);
                }
            }
        }
    }
    out
}

fn per_owner(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut count = BTreeMap::new();
    for o in owners.values() {
        *count.entry(o.clone()).or_insert(0) += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_spread_and_fail_over() {
    let world = World::start(SimConfig {
        backfill: PER_FEED,
        ..SimConfig::default()
    })
    .await;
    let base = world.config("");
    let two_accounts = |replica: &str| {
        let text = format!(
            r#"
[nats]
url = "{nats}"
provision_at_start = true
[telemetry]
listen = "127.0.0.1:0"
[fetcher]
replica_id = "{replica}"
lease_ttl = "30s"
[[accounts]]
name = "acme"
base_url = "{sim}"
token_file = "{token}"
start_time = "2000-01-01T00:00:00Z"
poll_interval = "5s"
page_size = 250
[[accounts]]
name = "beta"
base_url = "{sim}"
token_file = "{token}"
start_time = "2000-01-01T00:00:00Z"
poll_interval = "5s"
page_size = 250
"#,
            nats = base.nats.url,
            sim = world.sim.url(),
            token = world.token_path().display(),
        );
        config::from_toml(&text).unwrap()
    };
    let clock = Clock::manual(time::OffsetDateTime::now_utc());
    let options = || Options {
        clock: clock.clone(),
        backoff: fast_backoff(),
        lease_interval: Some(Duration::from_secs(10)),
    };
    let a = Running::start_with(two_accounts("a"), options());
    let b = Running::start_with(two_accounts("b"), options());
    let c = Running::start_with(two_accounts("c"), options());
    // Let the replicas register, then drive lease rounds until the feeds are spread.
    let leases = eventually(Duration::from_secs(20), "the lease bucket", || async {
        JsonKv::open(&world.bus, names::BUCKET_LEASES).await.ok()
    })
    .await;
    eventually(Duration::from_secs(60), "two feeds per replica", || {
        let (leases, clock) = (leases.clone(), clock.clone());
        async move {
            clock.advance(Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(50)).await; // let the rounds run
            let o = owners(&leases, clock.now()).await;
            let counts = per_owner(&o);
            (o.len() == 6 && counts.len() == 3 && counts.values().all(|n| *n == 2)).then_some(())
        }
    })
    .await;

    // Both accounts share opsim's stream (same token), so each account's feeds hold the same
    // events; OP_RAW gets them once per account.
    eventually(
        Duration::from_secs(60),
        "both accounts' backfills",
        || async { (world.raw_count().await >= 6 * PER_FEED as usize).then_some(()) },
    )
    .await;

    // kill -9 replica c: its leases stay until they expire, then a and b take them.
    c.crash();
    eventually(
        Duration::from_secs(60),
        "c's feeds taken over by a and b",
        || {
            let (leases, clock) = (leases.clone(), clock.clone());
            async move {
                clock.advance(Duration::from_secs(10));
                tokio::time::sleep(Duration::from_millis(50)).await;
                let counts = per_owner(&owners(&leases, clock.now()).await);
                (counts.get("a") == Some(&3) && counts.get("b") == Some(&3)).then_some(())
            }
        },
    )
    .await;
    a.stop().await;
    b.stop().await;

    let got = world.raw_events().await;
    for feed in Feed::ALL {
        let have = got.get(&feed).cloned().unwrap_or_default();
        let want = world.expected(feed, PER_FEED);
        // Two accounts of the same stream: each event exactly twice, once per account subject.
        assert_eq!(have.len(), 2 * PER_FEED as usize, "{feed}");
        let mut sorted = have.clone();
        sorted.sort();
        let mut twice: Vec<String> = want.iter().chain(want.iter()).cloned().collect();
        twice.sort();
        assert_eq!(sorted, twice, "{feed}: no loss, no duplicate");
    }
}

/// Three replicas polling one account's three feeds share its request budget: together they
/// stay within what one replica may send, so the API never answers 429 for the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_accounts_request_budget() {
    const BUDGET: usize = 30;
    let world = World::start(SimConfig {
        // 40 pages of 100 per feed: far more than one minute's budget.
        backfill: 4_000,
        rate_limits: Some(oprelay_testkit::opsim::RateLimits {
            per_minute: BUDGET,
            per_hour: 30_000,
            retry_after_header: false,
        }),
        ..SimConfig::default()
    })
    .await;
    let replica = |id: &str| {
        world.config(&format!(
            "page_size = 100\n[fetcher]\nreplica_id = \"{id}\"\nrequests_per_minute = {BUDGET}"
        ))
    };
    let options = || Options {
        clock: Clock::System,
        backoff: fast_backoff(),
        lease_interval: Some(Duration::from_millis(200)),
    };
    let replicas: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|id| Running::start_with(replica(id), options()))
        .collect();
    // Wait until the shared budget is spent. (A request it counted may not have been sent: a
    // poller stopped at a lease hand-over right after taking its turn.)
    let leases = eventually(Duration::from_secs(20), "the lease bucket", || async {
        JsonKv::open(&world.bus, names::BUCKET_LEASES).await.ok()
    })
    .await;
    eventually(
        Duration::from_secs(30),
        "a minute's budget of requests",
        || async {
            let window = leases
                .get::<serde_json::Value>("_budget.acme")
                .await
                .ok()??;
            let spent: u64 = window.value["seconds"]
                .as_array()?
                .iter()
                .filter_map(|b| b[1].as_u64())
                .sum();
            (spent >= BUDGET as u64).then_some(())
        },
    )
    .await;
    // The budget is spent; for a while nothing more may be sent. (Without a shared budget each
    // replica sends its own 30 within a second or two.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let requests = world.sim.sim.requests();
    // Every request counts against the token's limit, introspection included.
    let refused = requests.iter().filter(|r| r.status == 429).count();
    assert_eq!(
        refused, 0,
        "opsim refused {refused} requests for the budget"
    );
    assert!(
        requests.len() <= BUDGET,
        "{} requests within the first minute, budget {BUDGET}",
        requests.len()
    );
    // SIGTERM while every replica waits for the budget: the wait is abandoned at once.
    for r in replicas {
        r.stop().await;
    }
}
