//! The whole pipeline as separate processes: opsim → fetcher → NATS → normalizer → forwarder
//! → an Elasticsearch receiver and a generic HTTP receiver, with healthwatch alongside. A
//! backfill of over 100 000 events plus a live stream; every service, and nats-server itself,
//! killed with SIGKILL while events flow and restarted: nothing lost, nothing doubled at the
//! idempotent sink, everything enriched from the imported lookup files.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use oprelay_e2e::{Pipeline, Spec, SERVICES};
use oprelay_events::{Feed, LookupKind};
use oprelay_testkit::eventually;

const PER_FEED: u64 = 34_000;

fn at_es(p: &Pipeline) -> usize {
    p.es.lock().unwrap().docs.len()
}

/// Waits until the Elasticsearch receiver has `more` documents beyond what it has now.
async fn progress(p: &Pipeline, more: usize, after: &str) {
    let target = at_es(p) + more;
    eventually(
        Duration::from_secs(180),
        &format!("{more} more documents at Elasticsearch after {after}"),
        || async { (at_es(p) >= target).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_and_live_reach_both_sinks_through_kill_9_of_everything() {
    let mut p = Pipeline::start(Spec {
        backfill: PER_FEED,
        rate: 5.0,
        ..Default::default()
    })
    .await;
    progress(&p, 5_000, "start").await;

    for service in SERVICES {
        p.kill9(service);
        p.start_service(service).await;
        progress(&p, 5_000, &format!("kill -9 of {service}")).await;
    }
    p.nats.restart(0);
    progress(&p, 5_000, "kill -9 of nats-server").await;

    // Everything the account held at this moment must arrive; live events keep coming.
    let expected: HashSet<String> = p.expected_row_ids().into_iter().collect();
    assert!(expected.len() as u64 > 3 * PER_FEED, "backfill plus live");
    let missing = |p: &Pipeline| {
        let s = p.es.lock().unwrap();
        expected
            .iter()
            .filter(|id| !s.docs.contains_key(*id))
            .count()
    };
    eventually(
        Duration::from_secs(300),
        "every event at Elasticsearch",
        || async { (missing(&p) == 0).then_some(()) },
    )
    .await;
    eventually(
        Duration::from_secs(120),
        "every event at the HTTP receiver",
        || async {
            let s = p.http.lock().unwrap();
            let seen: HashSet<&str> = s
                .lines
                .iter()
                .filter_map(|l| l["p_row_id"].as_str())
                .collect();
            expected
                .iter()
                .all(|id| seen.contains(id.as_str()))
                .then_some(())
        },
    )
    .await;

    // Nothing at Elasticsearch that the account does not hold (documents are keyed by
    // p_row_id, so a redelivered record met its own document: once each).
    // The documents first, then the account: every document must be an event it holds.
    let docs: HashMap<String, (String, serde_json::Value)> = p.es.lock().unwrap().docs.clone();
    let now: HashSet<String> = p.expected_row_ids().into_iter().collect();
    let unknown: Vec<&String> = docs.keys().filter(|id| !now.contains(*id)).collect();
    assert!(unknown.is_empty(), "documents for no event: {unknown:?}");

    // Enriched from the imported lookup files: every item usage names its item and vault.
    let mut checked: HashMap<&str, usize> = HashMap::new();
    for (_, doc) in docs.values() {
        if doc["p_log_type"] != "OnePassword.ItemUsage" {
            continue;
        }
        let enrichment = &doc["p_enrichment"]["1Password Translation"];
        for (selector, kind) in [
            ("item_uuid", LookupKind::Item),
            ("vault_uuid", LookupKind::Vault),
        ] {
            let uuid = doc[selector].as_str().unwrap_or_default();
            assert_eq!(
                enrichment[selector]["title"].as_str(),
                p.title_of(kind, uuid).as_deref(),
                "{selector} {uuid} in {doc}"
            );
            *checked.entry(selector).or_default() += 1;
        }
    }
    assert!(checked["item_uuid"] as u64 >= PER_FEED, "{checked:?}");
    let feeds: HashSet<&str> = docs
        .values()
        .filter_map(|(_, d)| d["p_log_type"].as_str())
        .collect();
    assert_eq!(feeds.len(), Feed::ALL.len());
}
