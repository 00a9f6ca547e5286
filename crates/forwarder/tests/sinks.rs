//! Every sink against a receiver as strict as the real thing, with faults.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{es_receiver, hec_receiver, http_receiver, serve, Forwarder, Recv, Shared, World};
use oprelay_events::Feed;
use oprelay_service::config;
use oprelay_testkit::eventually;

fn shared() -> Shared {
    Shared::new(std::sync::Mutex::new(Recv::default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_appends_syncs_and_rotates() {
    let world = World::start().await;
    let path = world.dir.path().join("out/archive.ndjson");
    let ids = world.publish_events(Feed::ItemUsages, 10, 100).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"archive\"\ntype = \"file\"\npath = \"{}\"\nmax_bytes = \"200KiB\"\nbatch = {{ max_events = 250 }}\n",
        path.display()
    ));
    let fwd = Forwarder::start(config);
    let dir = path.parent().unwrap().to_owned();
    let read_all = || {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            lines.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("NDJSON")),
            );
        }
        lines
    };
    eventually(
        Duration::from_secs(30),
        "1 000 records in the files",
        || async { (read_all().len() >= 1000).then_some(()) },
    )
    .await;
    fwd.stop().await;
    let lines = read_all();
    let got: HashSet<&str> = lines
        .iter()
        .map(|l| l["p_row_id"].as_str().unwrap())
        .collect();
    assert_eq!(lines.len(), 1000, "each record once");
    assert_eq!(got, ids.iter().map(String::as_str).collect());
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert!(files >= 3, "rotated by size into {files} files");
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        assert!(
            entry.metadata().unwrap().len() <= 210 * 1024,
            "no file much over max_bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_survives_a_down_siem_and_random_5xx() {
    let world = World::start().await;
    let state = shared();
    state.lock().unwrap().down = true;
    let addr = serve(http_receiver(state.clone(), Some("s3cret"))).await;
    std::fs::write(world.dir.path().join("token"), "s3cret\n").unwrap();
    let ids = world.publish_events(Feed::SignInAttempts, 5, 200).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"panther\"\ntype = \"http\"\nendpoint = \"http://{addr}/ingest\"\ntoken_file = \"{}\"\ngzip = true\nbatch = {{ max_events = 300, timeout = \"200ms\" }}\n",
        world.dir.path().join("token").display()
    ));
    let fwd = Forwarder::start(config);
    eventually(
        Duration::from_secs(20),
        "attempts against the down receiver",
        || async { (state.lock().unwrap().requests >= 3).then_some(()) },
    )
    .await;
    {
        let mut s = state.lock().unwrap();
        s.down = false;
        for code in [500, 502, 503, 429, 408] {
            s.fail_next.push_back((code, "try later".into()));
        }
    }
    eventually(
        Duration::from_secs(60),
        "every record at the receiver",
        || async { (state.lock().unwrap().lines.len() >= 1000).then_some(()) },
    )
    .await;
    fwd.stop().await;
    let s = state.lock().unwrap();
    let got: Vec<&str> = s
        .lines
        .iter()
        .map(|l| l["p_row_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got.len(),
        1000,
        "nothing twice: a refused request was not accepted"
    );
    assert_eq!(
        got.iter().copied().collect::<HashSet<_>>(),
        ids.iter().map(String::as_str).collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_partial_failures_retry_alone_and_mapping_errors_dead_letter() {
    let world = World::start().await;
    let state = shared();
    let addr = serve(es_receiver(state.clone())).await;
    let ids = world.publish_events(Feed::AuditEvents, 4, 250).await;
    // Some documents are throttled twice, one is already there (an earlier delivery).
    {
        let mut s = state.lock().unwrap();
        for id in ids.iter().step_by(37) {
            s.throttle.insert(id.clone(), 2);
        }
        s.docs
            .insert(ids[5].clone(), ("old".into(), serde_json::json!({})));
    }
    // And one record the cluster refuses: a mapping error.
    let poison = poison_batch(&world).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"es\"\ntype = \"elasticsearch\"\nendpoint = \"http://{addr}\"\nformat = \"ecs\"\nbatch = {{ max_events = 200, timeout = \"200ms\" }}\n"
    ));
    let fwd = Forwarder::start(config);
    eventually(
        Duration::from_secs(60),
        "every document indexed",
        || async { (state.lock().unwrap().docs.len() > ids.len()).then_some(()) },
    )
    .await;
    let dlq = eventually(
        Duration::from_secs(30),
        "the mapping error in the DLQ",
        || async {
            let d = world.dlq().await;
            (!d.is_empty()).then_some(d)
        },
    )
    .await;
    fwd.stop().await;
    let s = state.lock().unwrap();
    for id in &ids {
        let (index, doc) = &s.docs[id];
        if id != &ids[5] {
            assert!(
                index.starts_with("oprelay-onepassword-auditevent-"),
                "{index}"
            );
            assert_eq!(
                doc["oprelay"]["row_id"],
                serde_json::json!(id),
                "ECS document keyed by p_row_id"
            );
            assert!(
                doc["@timestamp"].is_string()
                    && doc["event"]["dataset"] == "1password.audit_events"
            );
        }
    }
    assert_eq!(
        s.docs.len(),
        ids.len() + 1,
        "every record once, plus the poison batch's good record"
    );
    assert!(
        s.conflicts >= 1,
        "the existing document answered 409 and counted as delivered"
    );
    assert_eq!(dlq.len(), 1);
    assert!(
        dlq[0].0.contains("document_parsing_exception"),
        "{}",
        dlq[0].0
    );
    assert!(String::from_utf8_lossy(&dlq[0].1).contains(&poison));
}

/// Publishes a batch of two records, one of which the receivers refuse; returns its uuid.
async fn poison_batch(world: &World) -> String {
    use oprelay_bus::Outgoing;
    let good = r#"{"uuid":"GOOD1","timestamp":"2026-03-01T00:00:00Z","p_log_type":"OnePassword.AuditEvent","p_row_id":"good0000000000000000000000000001","p_event_time":"2026-03-01 00:00:00.000000000","p_parse_time":"2026-03-01 00:00:01.000000000","p_source_id":"s","p_source_label":"L"}"#;
    let bad = r#"{"uuid":"MAPPING_BOOM HEC_BOOM","timestamp":"2026-03-01T00:00:00Z","p_log_type":"OnePassword.AuditEvent","p_row_id":"bad00000000000000000000000000001","p_event_time":"2026-03-01 00:00:00.000000000","p_parse_time":"2026-03-01 00:00:01.000000000","p_source_id":"s","p_source_label":"L"}"#;
    world
        .bus
        .publish(Outgoing::new(
            "op.events.acme.audit_events",
            "events:poison",
            format!("{good}\n{bad}\n"),
        ))
        .await
        .unwrap();
    "MAPPING_BOOM".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_with_indexer_acknowledgement() {
    let world = World::start().await;
    let state = shared();
    let addr = serve(hec_receiver(state.clone(), "hec-token-1", true)).await;
    std::fs::write(world.dir.path().join("hec"), "hec-token-1").unwrap();
    let ids = world.publish_events(Feed::ItemUsages, 3, 100).await;
    poison_batch(&world).await;
    state
        .lock()
        .unwrap()
        .fail_next
        .push_back((503, r#"{"text":"Server is busy","code":9}"#.into()));
    let config = world.config(&format!(
        "[[sinks]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nendpoint = \"http://{addr}\"\ntoken_file = \"{}\"\nack = true\nindex = \"security\"\nbatch = {{ max_events = 100, timeout = \"200ms\" }}\n",
        world.dir.path().join("hec").display()
    ));
    let fwd = Forwarder::start(config);
    eventually(
        Duration::from_secs(60),
        "all events indexed and the dead letter",
        || async {
            let indexed = {
                let s = state.lock().unwrap();
                s.hec_events.len() > ids.len()
                    && s.acks_polled.len() as u64 == s.next_ack
                    && s.acks_polled.values().all(|n| *n >= 2)
            };
            (indexed && !world.dlq().await.is_empty()).then_some(())
        },
    )
    .await;
    fwd.stop().await;
    let dlq = world.dlq().await;
    let s = state.lock().unwrap();
    let got: Vec<&str> = s
        .hec_events
        .iter()
        .filter_map(|e| e["event"]["p_row_id"].as_str())
        .collect();
    assert_eq!(
        got.len(),
        ids.len() + 1,
        "each event once, plus the poison batch's good one"
    );
    assert!(ids.iter().all(|id| got.contains(&id.as_str())));
    let e = &s.hec_events[0];
    assert_eq!(e["sourcetype"], "1password:item_usages");
    assert_eq!(e["index"], "security");
    assert!(e["time"].as_f64().unwrap() > 1.0e9, "epoch seconds");
    assert!(
        s.acks_polled.values().all(|n| *n >= 2),
        "every request was confirmed indexed before the ack"
    );
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].0.contains("Invalid data format"), "{}", dlq[0].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sink_holds_back_nothing_else() {
    let world = World::start().await;
    let (dead, alive) = (shared(), shared());
    dead.lock().unwrap().down = true;
    let dead_addr = serve(http_receiver(dead.clone(), None)).await;
    let alive_addr = serve(http_receiver(alive.clone(), None)).await;
    world.publish_events(Feed::ItemUsages, 4, 100).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"dead\"\ntype = \"http\"\nendpoint = \"http://{dead_addr}/ingest\"\n\
         [[sinks]]\nname = \"alive\"\ntype = \"http\"\nendpoint = \"http://{alive_addr}/ingest\"\nencoding = \"json_array\"\nformat = \"raw\"\n"
    ));
    let fwd = Forwarder::start(config);
    eventually(
        Duration::from_secs(30),
        "the working sink to get everything",
        || async { (alive.lock().unwrap().lines.len() >= 400).then_some(()) },
    )
    .await;
    assert!(dead.lock().unwrap().lines.is_empty());
    let raw = alive.lock().unwrap().lines[0].clone();
    assert!(
        raw.get("p_row_id").is_none() && raw.get("uuid").is_some(),
        "raw format is the original event"
    );
    // The dead sink comes back: it catches up on its own.
    dead.lock().unwrap().down = false;
    eventually(
        Duration::from_secs(60),
        "the recovered sink to catch up",
        || async { (dead.lock().unwrap().lines.len() >= 400).then_some(()) },
    )
    .await;
    fwd.stop().await;
    assert_eq!(dead.lock().unwrap().lines.len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_no_loss_and_no_duplicate_at_elasticsearch() {
    let world = World::start().await;
    let state = shared();
    let addr = serve(es_receiver(state.clone())).await;
    let ids = world.publish_events(Feed::ItemUsages, 20, 100).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"es\"\ntype = \"elasticsearch\"\nendpoint = \"http://{addr}\"\nbatch = {{ max_events = 150, timeout = \"100ms\" }}\n"
    ));
    for target in [300usize, 900] {
        let fwd = Forwarder::start(config.clone());
        eventually(
            Duration::from_secs(30),
            "progress before the kill",
            || async { (state.lock().unwrap().docs.len() >= target).then_some(()) },
        )
        .await;
        fwd.crash();
    }
    let fwd = Forwarder::start(config);
    eventually(Duration::from_secs(60), "every document", || async {
        (state.lock().unwrap().docs.len() >= ids.len()).then_some(())
    })
    .await;
    fwd.stop().await;
    let s = state.lock().unwrap();
    assert_eq!(
        s.docs.len(),
        ids.len(),
        "one document per record: redeliveries met their own _id"
    );
    assert!(ids.iter().all(|id| s.docs.contains_key(id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_hec_refusing_the_token_waits_for_an_operator_and_drops_nothing() {
    let world = World::start().await;
    let state = shared();
    let addr = serve(hec_receiver(state.clone(), "the-right-token", false)).await;
    let token = world.dir.path().join("hec");
    std::fs::write(&token, "a-revoked-token").unwrap();
    let ids = world.publish_events(Feed::SignInAttempts, 2, 50).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nendpoint = \"http://{addr}\"\ntoken_file = \"{}\"\ngzip = false\n",
        token.display()
    ));
    let fwd = Forwarder::start(config);
    eventually(Duration::from_secs(20), "the 403 from HEC", || async {
        (state.lock().unwrap().requests >= 1).then_some(())
    })
    .await;
    assert!(state.lock().unwrap().hec_events.is_empty());
    assert!(
        world.dlq().await.is_empty(),
        "a refused token is not the records' fault: nothing dead-lettered"
    );
    // The operator rotates the Secret; the next (slow) retry reads it.
    std::fs::write(&token, "the-right-token\n").unwrap();
    eventually(
        Duration::from_secs(60),
        "delivery with the new token",
        || async { (state.lock().unwrap().hec_events.len() >= ids.len()).then_some(()) },
    )
    .await;
    fwd.stop().await;
    assert_eq!(state.lock().unwrap().hec_events.len(), ids.len());
    assert!(
        state.lock().unwrap().requests <= 6,
        "slow retries, no hammering: {}",
        state.lock().unwrap().requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca_and_a_client_certificate() {
    let world = World::start().await;
    let pki = oprelay_testkit::TestPki::generate(world.dir.path());
    let state = shared();
    let addr = common::serve_tls(http_receiver(state.clone(), None), &pki).await;
    let ids = world.publish_events(Feed::ItemUsages, 2, 50).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"panther\"\ntype = \"http\"\nendpoint = \"https://localhost:{}/ingest\"\n\
         tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}\n",
        addr.port(),
        pki.ca_cert.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    ));
    let fwd = Forwarder::start(config);
    eventually(
        Duration::from_secs(30),
        "records over mutual TLS",
        || async { (state.lock().unwrap().lines.len() >= ids.len()).then_some(()) },
    )
    .await;
    fwd.stop().await;
    assert_eq!(state.lock().unwrap().lines.len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_larger_than_the_siem_accepts_is_dead_lettered_alone() {
    use oprelay_bus::Outgoing;
    let world = World::start().await;
    let state = shared();
    state.lock().unwrap().max_body = Some(20_000);
    let addr = serve(http_receiver(state.clone(), None)).await;
    let record = |i: usize, pad: usize| {
        format!(
            r#"{{"uuid":"R{i}","pad":"{}","p_log_type":"OnePassword.ItemUsage","p_row_id":"{i:032x}","p_event_time":"2026-03-01 00:00:00.000000000","p_parse_time":"2026-03-01 00:00:01.000000000","p_source_id":"s","p_source_label":"L"}}"#,
            "x".repeat(pad)
        )
    };
    let mut body = String::new();
    for i in 0..10 {
        body.push_str(&record(i, if i == 6 { 50_000 } else { 100 }));
        body.push('\n');
    }
    world
        .bus
        .publish(Outgoing::new(
            "op.events.acme.item_usages",
            "events:big",
            body,
        ))
        .await
        .unwrap();
    let config = world.config(&format!(
        "[[sinks]]\nname = \"panther\"\ntype = \"http\"\nendpoint = \"http://{addr}/ingest\"\nformat = \"raw\"\n"
    ));
    let fwd = Forwarder::start(config);
    let dlq = eventually(
        Duration::from_secs(30),
        "the oversized record in the DLQ",
        || async {
            let d = world.dlq().await;
            let n = state.lock().unwrap().lines.len();
            (!d.is_empty() && n >= 9).then_some(d)
        },
    )
    .await;
    fwd.stop().await;
    let got: Vec<String> = state
        .lock()
        .unwrap()
        .lines
        .iter()
        .map(|l| l["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        got.len(),
        9,
        "the nine others delivered, once each: {got:?}"
    );
    assert!(!got.contains(&"R6".to_owned()));
    assert_eq!(dlq.len(), 1);
    assert!(dlq[0].0.contains("413"), "{}", dlq[0].0);
    assert!(String::from_utf8_lossy(&dlq[0].1).contains("\"uuid\":\"R6\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_with_an_api_key_and_with_basic_auth() {
    let world = World::start().await;
    let (keyed, basic) = (shared(), shared());
    keyed.lock().unwrap().expect_auth = Some("ApiKey a2V5LWlkOnNlY3JldA==".into());
    basic.lock().unwrap().expect_auth = Some("Basic b3ByZWxheTpwQHNz".into()); // oprelay:p@ss
    let keyed_addr = serve(es_receiver(keyed.clone())).await;
    let basic_addr = serve(es_receiver(basic.clone())).await;
    std::fs::write(world.dir.path().join("apikey"), "a2V5LWlkOnNlY3JldA==\n").unwrap();
    std::fs::write(world.dir.path().join("password"), "p@ss\n").unwrap();
    let ids = world.publish_events(Feed::SignInAttempts, 1, 50).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"keyed\"\ntype = \"elasticsearch\"\nendpoint = \"http://{keyed_addr}\"\napi_key_file = \"{}\"\n\
         [[sinks]]\nname = \"basic\"\ntype = \"elasticsearch\"\nendpoint = \"http://{basic_addr}\"\nusername = \"oprelay\"\npassword_file = \"{}\"\n",
        world.dir.path().join("apikey").display(),
        world.dir.path().join("password").display()
    ));
    let fwd = Forwarder::start(config);
    eventually(
        Duration::from_secs(30),
        "both clusters indexed everything",
        || async {
            (keyed.lock().unwrap().docs.len() >= ids.len()
                && basic.lock().unwrap().docs.len() >= ids.len())
            .then_some(())
        },
    )
    .await;
    fwd.stop().await;
    assert_eq!(keyed.lock().unwrap().docs.len(), ids.len());
    assert_eq!(basic.lock().unwrap().docs.len(), ids.len());
}

/// A message that a stopped forwarder pulled and never acknowledged comes back after the ack
/// wait. The next forwarder delivers it and counts it in `forwarder_redelivered_messages`,
/// the figure that says how often a sink without idempotency may have seen a record twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_unacknowledged_is_delivered_again_and_counted() {
    use futures::StreamExt;
    use oprelay_events::names;

    let world = World::start().await;
    let ids = world.publish_events(Feed::ItemUsages, 2, 10).await;
    let out = world.dir.path().join("out.ndjson");
    let mut config = world.config(&format!(
        "[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"{}\"\n",
        out.display()
    ));
    // The sink's own durable consumer hands the first message to "a forwarder" that stops
    // before acknowledging it.
    world.bus.provision(&config.topology()).await.unwrap();
    let consumer = oprelay_bus::pull_consumer(
        world.bus.jetstream(),
        names::STREAM_EVENTS,
        &names::sink_consumer("file"),
    )
    .await
    .unwrap();
    let mut pulled = consumer.fetch().max_messages(1).messages().await.unwrap();
    let first = pulled.next().await.unwrap().unwrap();
    assert_eq!(first.info().unwrap().delivered, 1);
    drop((first, pulled));

    let port = oprelay_testkit::free_port();
    config.telemetry.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let fwd = Forwarder::start(config);
    let read = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("NDJSON"))
            .map(|v| v["p_row_id"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(30),
        "every record in the file",
        || async { (read().len() >= ids.len()).then_some(()) },
    )
    .await;
    let counted = eventually(Duration::from_secs(10), "the metrics page", || async {
        let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("oprelay_forwarder_redelivered_messages_total{sink=\"file\"}"))
            .map(str::to_owned)
    })
    .await;
    fwd.stop().await;
    assert!(counted.ends_with(" 1"), "{counted}");
    let delivered = read();
    assert_eq!(delivered.len(), ids.len(), "each record once");
    assert_eq!(
        delivered.into_iter().collect::<HashSet<_>>(),
        ids.into_iter().collect::<HashSet<_>>()
    );
}

/// A redirect is never followed: reqwest would turn the POST into a bodiless GET (301/302) or
/// send the records somewhere nobody configured (307), and count the 200 as delivered. It is
/// a configuration problem: the records wait, nothing is dead-lettered, and once the endpoint
/// is fixed every record arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_the_records_wait_for_the_fix() {
    for code in [301u16, 302, 307] {
        let world = World::start().await;
        let state = shared();
        state.lock().unwrap().redirect = Some(code);
        let addr = serve(http_receiver(state.clone(), None)).await;
        let ids = world.publish_events(Feed::ItemUsages, 2, 50).await;
        let config = world.config(&format!(
            "[[sinks]]\nname = \"panther\"\ntype = \"http\"\nendpoint = \"http://{addr}/ingest\"\nbatch = {{ max_events = 100, timeout = \"100ms\" }}\n"
        ));
        let fwd = Forwarder::start_quick_operator_retry(config);
        eventually(
            Duration::from_secs(20),
            "several redirected attempts",
            || async { (state.lock().unwrap().requests >= 4).then_some(()) },
        )
        .await;
        {
            let s = state.lock().unwrap();
            assert_eq!(s.followed, 0, "{code}: a redirect was followed");
            assert!(s.lines.is_empty());
        }
        assert!(
            world.dlq().await.is_empty(),
            "{code}: records were dead-lettered"
        );
        // The operator fixes the endpoint.
        state.lock().unwrap().redirect = None;
        eventually(Duration::from_secs(20), "every record", || async {
            (state.lock().unwrap().lines.len() >= 100).then_some(())
        })
        .await;
        fwd.stop().await;
        let s = state.lock().unwrap();
        let got: HashSet<&str> = s
            .lines
            .iter()
            .map(|l| l["p_row_id"].as_str().unwrap())
            .collect();
        assert_eq!(s.lines.len(), 100, "{code}: each record once");
        assert_eq!(got, ids.iter().map(String::as_str).collect());
        assert_eq!(s.followed, 0);
    }
}

/// How a receiver refuses whole requests in one case of the test below.
enum Refusal {
    Http(u16, &'static str),
    EsItems(u16, &'static str, &'static str),
    Hec(u16, &'static str),
}

/// A refusal about the request, not its records — a proxy's 405/415, a 400 every record gets
/// alike, a read-only Elasticsearch index, a missing index with auto-create off — sends nothing
/// to the DLQ: the records wait, and arrive once the operator fixes the SIEM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_level_refusals_keep_the_records_until_fixed() {
    let cases = [
        Refusal::Http(404, "Not Found"),
        Refusal::Hec(400, r#"{"text":"Invalid data channel","code":11}"#),
        Refusal::Http(405, "Method Not Allowed"),
        Refusal::Http(415, "Unsupported Media Type"),
        Refusal::Http(400, "this endpoint is read-only"),
        Refusal::EsItems(
            403,
            "cluster_block_exception",
            "index [oprelay-x] blocked by: [FORBIDDEN/12/index read-only / allow delete (api)];",
        ),
        Refusal::EsItems(
            404,
            "index_not_found_exception",
            "no such index [oprelay-x]",
        ),
    ];
    for case in cases {
        let world = World::start().await;
        let state = shared();
        let (app, sink, label) = match &case {
            Refusal::Http(code, body) => {
                state.lock().unwrap().refuse = Some((*code, (*body).to_owned()));
                (
                    http_receiver(state.clone(), None),
                    "http",
                    format!("HTTP {code}"),
                )
            }
            Refusal::EsItems(code, kind, reason) => {
                state.lock().unwrap().item_error =
                    Some((*code, serde_json::json!({"type": kind, "reason": reason})));
                (
                    es_receiver(state.clone()),
                    "elasticsearch",
                    (*kind).to_owned(),
                )
            }
            Refusal::Hec(code, body) => {
                state.lock().unwrap().refuse = Some((*code, (*body).to_owned()));
                std::fs::write(world.dir.path().join("hec"), "hec-token-1").unwrap();
                (
                    hec_receiver(state.clone(), "hec-token-1", false),
                    "splunk_hec",
                    format!("HEC {body}"),
                )
            }
        };
        let addr = serve(app).await;
        let endpoint = match sink {
            "http" => format!("http://{addr}/ingest\""),
            "splunk_hec" => format!(
                "http://{addr}\"\ntoken_file = \"{}\"",
                world.dir.path().join("hec").display()
            ),
            _ => format!("http://{addr}\""),
        };
        let ids = world.publish_events(Feed::ItemUsages, 2, 40).await;
        let config = world.config(&format!(
            "[[sinks]]\nname = \"siem\"\ntype = \"{sink}\"\nendpoint = \"{endpoint}\nbatch = {{ max_events = 80, timeout = \"100ms\" }}\n"
        ));
        let fwd = Forwarder::start_quick_operator_retry(config);
        let what = format!("{label}: refused attempts");
        eventually(Duration::from_secs(20), &what, || async {
            (state.lock().unwrap().requests >= 12).then_some(())
        })
        .await;
        assert!(
            world.dlq().await.is_empty(),
            "{label}: records were dead-lettered"
        );
        {
            let mut s = state.lock().unwrap();
            s.refuse = None;
            s.item_error = None;
        }
        let delivered = || {
            let s = state.lock().unwrap();
            match sink {
                "http" => s
                    .lines
                    .iter()
                    .map(|l| l["p_row_id"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>(),
                "splunk_hec" => s
                    .hec_events
                    .iter()
                    .map(|e| e["event"]["p_row_id"].as_str().unwrap().to_owned())
                    .collect(),
                _ => s.docs.keys().cloned().collect(),
            }
        };
        let what = format!("{label}: every record once the SIEM is fixed");
        eventually(Duration::from_secs(20), &what, || async {
            (delivered().len() >= 80).then_some(())
        })
        .await;
        fwd.stop().await;
        let got = delivered();
        assert_eq!(got.len(), 80, "{label}: each record once");
        assert_eq!(
            got.iter().map(String::as_str).collect::<HashSet<_>>(),
            ids.iter().map(String::as_str).collect()
        );
        assert!(
            world.dlq().await.is_empty(),
            "{label}: nothing dead-lettered"
        );
    }
}

/// A sink's consumer follows its configuration: a restart with another `feeds` filter (or
/// `ack_wait`) updates the durable consumer instead of silently keeping the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_sink_filter_reaches_its_consumer() {
    let world = World::start().await;
    let state = shared();
    let addr = serve(http_receiver(state.clone(), None)).await;
    let sink = |feeds: &str, ack_wait: &str| {
        config::from_toml(&format!(
            "[nats]\nurl = \"{}\"\nack_wait = \"{ack_wait}\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\n\
             [[sinks]]\nname = \"panther\"\ntype = \"http\"\nendpoint = \"http://{addr}/ingest\"\nfeeds = {feeds}\n\
             batch = {{ max_events = 100, timeout = \"100ms\" }}\n",
            world.nats.url()
        ))
        .unwrap()
    };
    let usages = world.publish_events(Feed::ItemUsages, 1, 20).await;
    let fwd = Forwarder::start(sink("[\"item_usages\"]", "2s"));
    eventually(Duration::from_secs(20), "the item usages", || async {
        (state.lock().unwrap().lines.len() >= usages.len()).then_some(())
    })
    .await;
    fwd.stop().await;

    let fwd = Forwarder::start(sink("[\"item_usages\", \"audit_events\"]", "3s"));
    // Audit events published once the sink asks for them reach it.
    let audits = world.publish_events(Feed::AuditEvents, 1, 20).await;
    eventually(Duration::from_secs(20), "the audit events", || async {
        let s = state.lock().unwrap();
        let got: HashSet<&str> = s
            .lines
            .iter()
            .map(|l| l["p_row_id"].as_str().unwrap())
            .collect();
        audits
            .iter()
            .all(|a| got.contains(a.as_str()))
            .then_some(())
    })
    .await;
    fwd.stop().await;
    let info = world
        .bus
        .jetstream()
        .get_stream(oprelay_events::names::STREAM_EVENTS)
        .await
        .unwrap()
        .consumer_info(oprelay_events::names::sink_consumer("panther"))
        .await
        .unwrap();
    assert_eq!(
        info.config.ack_wait,
        Duration::from_secs(3),
        "ack_wait updated"
    );
}

/// A header whose value is a secret comes from a file (a mounted Secret), re-read before each
/// request, so rotating it needs no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_header_comes_from_its_file_and_follows_rotation() {
    let world = World::start().await;
    let state = shared();
    state.lock().unwrap().expect_header = Some(("x-api-key".into(), "key-1".into()));
    let addr = serve(http_receiver(state.clone(), None)).await;
    let key_file = world.dir.path().join("panther-key");
    std::fs::write(&key_file, "key-1\n").unwrap();
    let first = world.publish_events(Feed::ItemUsages, 1, 10).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"panther\"\ntype = \"http\"\nendpoint = \"http://{addr}/ingest\"\n\
         headers_from_files = {{ \"X-API-Key\" = \"{}\" }}\nbatch = {{ max_events = 10, timeout = \"100ms\" }}\n",
        key_file.display()
    ));
    let fwd = Forwarder::start_quick_operator_retry(config);
    eventually(Duration::from_secs(20), "the first records", || async {
        (state.lock().unwrap().lines.len() >= first.len()).then_some(())
    })
    .await;
    // The key is rotated at the receiver and in the Secret.
    state.lock().unwrap().expect_header = Some(("x-api-key".into(), "key-2".into()));
    std::fs::write(&key_file, "key-2\n").unwrap();
    let second = world.publish_events(Feed::AuditEvents, 1, 10).await;
    eventually(
        Duration::from_secs(20),
        "the records after the rotation",
        || async {
            (state.lock().unwrap().lines.len() >= first.len() + second.len()).then_some(())
        },
    )
    .await;
    fwd.stop().await;
    assert!(world.dlq().await.is_empty());
}

/// A HEC sink with indexer acknowledgement against `state`, for the ack tests below.
async fn hec_with_ack(world: &World, state: &Shared, extra: &str) -> oprelay_service::Config {
    let addr = serve(hec_receiver(state.clone(), "hec-token-1", true)).await;
    std::fs::write(world.dir.path().join("hec"), "hec-token-1").unwrap();
    world.config(&format!(
        "[[sinks]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nendpoint = \"http://{addr}\"\ntoken_file = \"{}\"\nack = true\n{extra}batch = {{ max_events = 50, timeout = \"100ms\" }}\n",
        world.dir.path().join("hec").display()
    ))
}

/// Row ids Splunk received, and how often each.
fn hec_counts(state: &Shared) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for e in &state.lock().unwrap().hec_events {
        *counts
            .entry(e["event"]["p_row_id"].as_str().unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    counts
}

/// Errors while polling `/services/collector/ack` (a channel error here) say nothing about
/// the records Splunk already accepted: they are neither split and sent again nor
/// dead-lettered; the poll goes on until Splunk answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_ack_poll_errors_neither_resend_nor_dead_letter() {
    let world = World::start().await;
    let state = shared();
    state.lock().unwrap().hec_ack_error = Some((
        400,
        serde_json::json!({"text": "Invalid data channel", "code": 11}),
    ));
    let config = hec_with_ack(&world, &state, "").await;
    let ids = world.publish_events(Feed::ItemUsages, 1, 50).await;
    let fwd = Forwarder::start_quick_operator_retry(config);
    eventually(Duration::from_secs(20), "the batch at Splunk", || async {
        (hec_counts(&state).len() >= ids.len()).then_some(())
    })
    .await;
    // Let the failing polls go on for a while: still one copy, no dead letter.
    eventually(Duration::from_secs(20), "failing ack polls", || async {
        (state.lock().unwrap().hec_ack_polls >= 4).then_some(())
    })
    .await;
    assert!(hec_counts(&state).values().all(|n| *n == 1));
    state.lock().unwrap().hec_ack_error = None;
    eventually(Duration::from_secs(30), "the ack confirmed", || async {
        let s = state.lock().unwrap();
        (s.acks_polled.values().any(|n| *n >= 2)).then_some(())
    })
    .await;
    world.wait_sink_done("splunk", 1).await;
    fwd.stop().await;
    let counts = hec_counts(&state);
    assert_eq!(counts.len(), ids.len());
    assert!(
        counts.values().all(|n| *n == 1),
        "records were sent again: {counts:?}"
    );
    assert!(
        world.dlq().await.is_empty(),
        "accepted records were dead-lettered"
    );
}

/// Behind a load balancer that is sticky by cookie, the ack polls carry the cookie the event
/// POST got, so they reach the indexer that took the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_ack_polls_keep_the_load_balancers_cookie() {
    let world = World::start().await;
    let state = shared();
    state.lock().unwrap().hec_sticky = true;
    let config = hec_with_ack(&world, &state, "").await;
    let ids = world.publish_events(Feed::ItemUsages, 2, 50).await;
    let fwd = Forwarder::start(config);
    world.wait_sink_done("splunk", 2).await;
    fwd.stop().await;
    let counts = hec_counts(&state);
    assert_eq!(counts.len(), ids.len());
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}

/// When Splunk never confirms indexing, the batch is sent again after each ack timeout, but
/// only a few times in a row; then it waits as for any problem an operator must fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_resends_after_ack_timeouts_are_bounded() {
    let world = World::start().await;
    let state = shared();
    state.lock().unwrap().hec_ack_never = true;
    let config = hec_with_ack(&world, &state, "ack_timeout = \"1s\"\n").await;
    let ids = world.publish_events(Feed::ItemUsages, 1, 10).await;
    let fwd = Forwarder::start(config);
    eventually(
        Duration::from_secs(30),
        "four sends of the batch",
        || async { (state.lock().unwrap().hec_events.len() >= 4 * ids.len()).then_some(()) },
    )
    .await;
    // Past the bound, the next attempt waits 30 s or more (the operator retry).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = state.lock().unwrap().hec_events.len();
    fwd.stop().await;
    assert_eq!(
        sent,
        4 * ids.len(),
        "the first send and three resends, no more"
    );
    assert!(world.dlq().await.is_empty());
}

/// An endpoint that answers with an enormous body is read only up to a bound, and the records
/// it accepted count as delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enormous_reply_is_not_read_whole_and_delivery_goes_on() {
    let world = World::start().await;
    let state = shared();
    state.lock().unwrap().reply_padding = 20 * 1024 * 1024;
    let addr = serve(http_receiver(state.clone(), None)).await;
    let ids = world.publish_events(Feed::ItemUsages, 2, 20).await;
    let config = world.config(&format!(
        "[[sinks]]\nname = \"panther\"\ntype = \"http\"\nendpoint = \"http://{addr}/ingest\"\nbatch = {{ max_events = 40, timeout = \"100ms\" }}\n"
    ));
    let fwd = Forwarder::start(config);
    world.wait_sink_done("panther", 2).await;
    fwd.stop().await;
    assert_eq!(
        state.lock().unwrap().lines.len(),
        ids.len(),
        "each record once"
    );
}
