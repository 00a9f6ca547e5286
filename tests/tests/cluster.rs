//! The pipeline on a 3-node JetStream cluster (every stream, bucket and consumer with three
//! replicas, authorization and TLS on clients and routes) while nodes fail: the node leading
//! `OP_RAW` is killed with SIGKILL and restarted, then another node is stopped for good.
//! Every event reaches Elasticsearch exactly once and Splunk HEC at least once, the fetcher's
//! cursors and leases keep moving through the leader elections, and no service is restarted.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use oprelay_e2e::{Pipeline, Spec, SERVICES};
use oprelay_events::names;
use oprelay_testkit::{eventually, stream_leader};

/// Enough that the faults happen while the backfill still flows.
const PER_FEED: u64 = 30_000;

fn at_es(p: &Pipeline) -> usize {
    p.es.lock().unwrap().docs.len()
}

async fn progress(p: &Pipeline, more: usize, after: &str) {
    let started = std::time::Instant::now();
    let target = at_es(p) + more;
    eventually(
        Duration::from_secs(180),
        &format!("{more} more documents at Elasticsearch after {after}"),
        || async { (at_es(p) >= target).then_some(()) },
    )
    .await;
    eprintln!(
        "{more} more documents after {after} in {:?}",
        started.elapsed()
    );
}

/// The node (`n1`…) leading a stream's replicas, as JetStream reports it.
async fn leader_of(p: &Pipeline, stream: &str) -> String {
    let bus = p.bus().await;
    eventually(
        Duration::from_secs(60),
        &format!("a leader for {stream}"),
        || {
            let bus = bus.clone();
            async move { stream_leader(bus.jetstream(), stream).await }
        },
    )
    .await
}

/// The cursor revision of every feed: a compare-and-set write raises it.
async fn cursor_revisions(p: &Pipeline) -> HashMap<String, u64> {
    let bus = p.bus().await;
    let kv = bus
        .jetstream()
        .get_key_value(names::BUCKET_CURSORS)
        .await
        .unwrap();
    let mut out = HashMap::new();
    for feed in oprelay_events::Feed::ALL {
        let key = format!("acme.{feed}");
        if let Ok(Some(e)) = kv.entry(&key).await {
            out.insert(key, e.revision);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_nodes_of_a_cluster_loses_no_event_and_restarts_no_service() {
    let mut p = Pipeline::start(Spec {
        backfill: PER_FEED,
        rate: 5.0,
        nats_nodes: 3,
        hec: true,
        ..Default::default()
    })
    .await;
    let pids: Vec<Option<u32>> = SERVICES.iter().map(|s| p.pid(s)).collect();

    // Three replicas of everything, as configured.
    let bus = p.bus().await;
    for stream in [names::STREAM_RAW, names::STREAM_EVENTS, "KV_OP_CURSORS"] {
        let mut s = bus.jetstream().get_stream(stream).await.unwrap();
        assert_eq!(s.info().await.unwrap().config.num_replicas, 3, "{stream}");
    }
    drop(bus);
    progress(&p, 2_000, "start").await;

    let raw_leader = leader_of(&p, names::STREAM_RAW).await;
    let events_leader = leader_of(&p, names::STREAM_EVENTS).await;
    let cursors_leader = leader_of(&p, "KV_OP_CURSORS").await;
    eprintln!(
        "leaders: OP_RAW {raw_leader}, OP_EVENTS {events_leader}, OP_CURSORS {cursors_leader}"
    );
    let victim = p.nats.index_of(&raw_leader).expect("leader is a node");
    let before = cursor_revisions(&p).await;
    p.nats.kill(victim);
    progress(
        &p,
        2_000,
        &format!("SIGKILL of {raw_leader}, OP_RAW's leader"),
    )
    .await;
    let new_leader = leader_of(&p, names::STREAM_RAW).await;
    assert_ne!(new_leader, raw_leader, "a new leader was elected");
    // The cursors moved on through the election: compare-and-set against the new leader.
    eventually(
        Duration::from_secs(120),
        "cursors written after the failover",
        || async {
            let now = cursor_revisions(&p).await;
            now.iter()
                .any(|(k, r)| before.get(k).is_none_or(|b| r > b))
                .then_some(())
        },
    )
    .await;

    p.nats.restart(victim);
    progress(&p, 2_000, &format!("restart of {raw_leader}")).await;

    // Another node goes away for good: two of three keep quorum.
    let gone = (victim + 1) % p.nats.len();
    p.nats.kill(gone);
    // Live events (15 a second) or the rest of the backfill.
    progress(&p, 300, &format!("loss of {}", p.nats.name(gone))).await;

    let expected: HashSet<String> = p.expected_row_ids().into_iter().collect();
    assert!(expected.len() as u64 >= 3 * PER_FEED);
    eventually(
        Duration::from_secs(300),
        "every event at Elasticsearch",
        || async {
            let s = p.es.lock().unwrap();
            expected
                .iter()
                .all(|id| s.docs.contains_key(id))
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(180),
        "every event at Splunk HEC",
        || async {
            let s = p.hec.lock().unwrap();
            let seen: HashSet<&str> = s
                .hec_events
                .iter()
                .filter_map(|e| e["event"]["p_row_id"].as_str())
                .collect();
            expected
                .iter()
                .all(|id| seen.contains(id.as_str()))
                .then_some(())
        },
    )
    .await;
    // The documents first, then the account: live events keep coming.
    let docs = p.es.lock().unwrap().docs.clone();
    let now: HashSet<String> = p.expected_row_ids().into_iter().collect();
    let unknown: Vec<&String> = docs.keys().filter(|id| !now.contains(*id)).collect();
    assert!(unknown.is_empty(), "documents for no event: {unknown:?}");

    // Nobody restarted a service: the same processes, still running and ready.
    let after: Vec<Option<u32>> = SERVICES.iter().map(|s| p.pid(s)).collect();
    assert_eq!(pids, after);
    for service in SERVICES {
        assert!(p.is_running(service), "{service} exited");
    }
}
