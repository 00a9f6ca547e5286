//! `oprelay normalize` and `oprelay ingest` against a live pipeline: the file front end makes
//! the very records the normalizer service publishes, and ingested events reach the sinks
//! once, however often they are ingested and however they overlap with live ones.

use std::collections::HashSet;
use std::time::Duration;

use oprelay_e2e::{text, Pipeline, Spec};
use oprelay_events::Feed;
use oprelay_testkit::eventually;

/// The normalized record with `p_parse_time` blanked: the one field that says when, not what.
fn mask_parse_time(line: &str) -> String {
    const KEY: &str = "\"p_parse_time\":\"";
    match line.find(KEY) {
        Some(i) => {
            let start = i + KEY.len();
            let end = line[start..].find('"').map_or(line.len(), |e| start + e);
            format!("{}{}", &line[..start], &line[end..])
        }
        None => line.to_owned(),
    }
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(mask_parse_time)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalize_makes_the_records_the_live_normalizer_publishes() {
    let p = Pipeline::start(Spec {
        backfill: 300,
        ..Default::default()
    })
    .await;
    eventually(
        Duration::from_secs(120),
        "900 records in OP_EVENTS",
        || async { (p.normalized_count().await >= 900).then_some(()) },
    )
    .await;

    // The pages exactly as the fetcher published them; their items one per line, and the
    // same items the way a Splunk export holds them.
    let mut ndjson = String::new();
    let mut splunk = String::new();
    for m in p.stream_messages("OP_RAW").await {
        let page: oprelay_events::Page<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&m.payload).expect("a raw page");
        for item in page.items {
            ndjson.push_str(item.get());
            ndjson.push('\n');
            let wrapped = serde_json::json!({"preview": false, "result": {"_raw": item.get(), "sourcetype": "1password"}});
            splunk.push_str(&wrapped.to_string());
            splunk.push('\n');
        }
    }
    let events_file = p.path("events.ndjson");
    std::fs::write(&events_file, &ndjson).unwrap();
    let splunk_file = p.path("splunk.json");
    std::fs::write(&splunk_file, &splunk).unwrap();

    let mut live: Vec<String> = p
        .stream_messages("OP_EVENTS")
        .await
        .iter()
        .flat_map(|m| lines(&m.payload))
        .collect();
    live.sort();
    assert_eq!(live.len(), 900);

    let lookups: Vec<String> = p
        .lookup_files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    for input in [&events_file, &splunk_file] {
        let mut args = vec![
            "normalize".to_owned(),
            input.display().to_string(),
            "--account".into(),
            "acme".into(),
            "--lookups".into(),
        ];
        args.extend(lookups.iter().cloned());
        let out = p.oprelay(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(out.status.success(), "{}", text(&out));
        let mut cli = lines(&out.stdout);
        cli.sort();
        assert_eq!(cli.len(), live.len(), "{}", text(&out));
        for (a, b) in cli.iter().zip(&live) {
            assert_eq!(a, b, "normalize output differs from the service's");
        }
        assert!(
            cli.iter().all(|l| l.contains("\"p_enrichment\"")),
            "every record enriched from the lookup files"
        );
    }

    // The same through the live OP_LOOKUPS instead of files.
    let out = p.oprelay(&[
        "normalize",
        &events_file.display().to_string(),
        "--account",
        "acme",
        "--nats",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut cli = lines(&out.stdout);
    cli.sort();
    assert_eq!(cli, live);
}

fn published_new(summary: &str) -> u64 {
    // "… published: N page(s) with M new event(s) published, …"
    summary
        .split(" new event(s)")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no new-event count in: {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_twice_publishes_nothing_new_and_overlap_lands_once() {
    let p = Pipeline::start(Spec {
        backfill: 500,
        ..Default::default()
    })
    .await;
    let live_ids: HashSet<String> = p.expected_row_ids().into_iter().collect();
    assert_eq!(live_ids.len(), 1500);
    eventually(
        Duration::from_secs(120),
        "the live backfill at Elasticsearch",
        || async { (p.es.lock().unwrap().docs.len() >= 1500).then_some(()) },
    )
    .await;

    // Item usages 250..800: half overlap the backfill, 300 the live pipeline never saw.
    let mut file = String::new();
    let mut file_ids = HashSet::new();
    for i in 250..800 {
        let e = p.sim.event(Feed::ItemUsages, i);
        file_ids.insert(oprelay_normalizer::normalize::row_id(
            Feed::ItemUsages.log_type(),
            e["uuid"].as_str().unwrap(),
        ));
        file.push_str(&e.to_string());
        file.push('\n');
    }
    let path = p.path("old-item-usages.ndjson");
    std::fs::write(&path, file).unwrap();
    let path = path.display().to_string();
    let args = [
        "ingest",
        &path,
        "--account",
        "acme",
        "--feed",
        "item_usages",
        "--page-size",
        "100",
    ];

    let first = p.oprelay(&args);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(published_new(&text(&first)), 550, "{}", text(&first));
    let raw_after_first = p.stream_messages("OP_RAW").await.len();
    let second = p.oprelay(&args);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(
        published_new(&text(&second)),
        0,
        "the second run publishes nothing new: {}",
        text(&second)
    );
    assert_eq!(p.stream_messages("OP_RAW").await.len(), raw_after_first);

    let all: HashSet<String> = live_ids.union(&file_ids).cloned().collect();
    assert_eq!(all.len(), 1800);
    eventually(
        Duration::from_secs(120),
        "the ingested events at Elasticsearch",
        || async {
            let s = p.es.lock().unwrap();
            (s.docs.len() >= 1800 && s.conflicts >= 250).then_some(())
        },
    )
    .await;
    let s = p.es.lock().unwrap();
    let at_es: HashSet<String> = s.docs.keys().cloned().collect();
    assert_eq!(
        at_es, all,
        "each event once: the overlap landed on the live documents"
    );
    let ingested_doc = &s.docs[file_ids.iter().find(|id| !live_ids.contains(*id)).unwrap()].1;
    assert_eq!(ingested_doc["p_source_label"], "ACME Corp");
    assert!(
        ingested_doc["p_enrichment"]["1Password Translation"]["item_uuid"]["title"].is_string(),
        "ingested events are enriched like live ones: {ingested_doc}"
    );
}
