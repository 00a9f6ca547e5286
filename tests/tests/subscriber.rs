//! The example subscriber (`examples/subscriber`), as a team writing its own consumer would run
//! it: the read-only `oprelay-subscriber` user over TLS, a durable consumer of its own on
//! OP_EVENTS. Stopped part-way and started again, it resumes: every record is counted exactly
//! once across the two runs, per log type.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use oprelay_bus::access::Role;
use oprelay_e2e::{text, Pipeline, Spec};
use oprelay_events::Feed;
use oprelay_testkit::{binary, eventually};
use serde_json::Value;

fn subscribe(p: &Pipeline, extra: &[&str]) -> Value {
    let access = p.access.as_ref().expect("a secured bus");
    let url = p.nats.urls_with(|n| access.url(n.port()));
    let ca = &access.pki.as_ref().expect("TLS").ca_cert;
    let out = Command::new(binary("subscribe"))
        .args([
            "--url",
            &url,
            "--user",
            "oprelay-subscriber",
            "--durable",
            "lake",
        ])
        .arg("--password-file")
        .arg(access.password_file(Role::Subscriber))
        .arg("--ca")
        .arg(ca)
        .args(extra)
        .output()
        .expect("the example subscriber runs");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(out.stdout.trim_ascii())
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_subscriber_reads_every_record_once_across_a_restart() {
    let p = Pipeline::start(Spec::default()).await;
    let expected = p.expected_row_ids().len() as u64;
    eventually(
        Duration::from_secs(60),
        "every record normalized",
        || async { (p.normalized_count().await >= expected).then_some(()) },
    )
    .await;
    let first = subscribe(&p, &["--max-records", "100", "--batch", "1"]);
    let first_count = first["records"].as_u64().unwrap();
    assert!((100..expected).contains(&first_count), "{first}");
    // Restarted: it resumes after what it acknowledged.
    let second = subscribe(&p, &["--idle-exit", "3"]);
    assert_eq!(
        first_count + second["records"].as_u64().unwrap(),
        expected,
        "{first} then {second}"
    );
    let mut per_type: BTreeMap<String, u64> = BTreeMap::new();
    for run in [&first, &second] {
        for (log_type, n) in run["by_log_type"].as_object().unwrap() {
            *per_type.entry(log_type.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    for feed in Feed::ALL {
        assert_eq!(
            per_type.get(feed.log_type().as_str()).copied(),
            Some(p.events(feed).len() as u64),
            "{feed}: {per_type:?}"
        );
    }
}
