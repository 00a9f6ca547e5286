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
