//! `oprelay config check --online` against the pipeline's real parts: NATS, the simulated
//! Events API, Elasticsearch, the generic HTTP receiver and Splunk HEC. First all is well; then
//! four things break at once and every one of them is reported.

use oprelay_e2e::{text, Pipeline, Spec};

fn line_of<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|w| w.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("no line for {prefix}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_checks_reach_every_part_and_report_every_problem() {
    let p = Pipeline::start(Spec {
        services: false,
        hec: true,
        ..Spec::default()
    })
    .await;
    let out = p.oprelay(&["config", "check", "--online"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(line_of(&all, "nats").starts_with("ok"), "{all}");
    let account = line_of(&all, "accounts[0]");
    assert!(
        account.starts_with("ok") && account.contains("accepted by"),
        "{all}"
    );
    assert!(
        line_of(&all, "sinks[0]").contains("cluster oprelay-test answered"),
        "{all}"
    );
    assert!(line_of(&all, "sinks[1]").starts_with("ok"), "{all}");
    assert!(
        line_of(&all, "sinks[2]").contains("HEC accepted the token"),
        "{all}"
    );
    assert!(all.contains("config OK (online checks passed)"), "{all}");
    let (es_requests, hec_events) = {
        let (es, hec) = (p.es.lock().unwrap(), p.hec.lock().unwrap());
        (es.docs.len(), hec.hec_events.len())
    };
    assert_eq!(
        (es_requests, hec_events),
        (0, 0),
        "a check delivers nothing"
    );

    // A revoked HEC token, Elasticsearch security turned on, a token file replaced by
    // something that is no token, and NATS at the wrong port: four problems, one run.
    std::fs::write(p.path("hec-token"), "revoked").unwrap();
    p.es.lock().unwrap().expect_auth = Some("ApiKey secret".into());
    std::fs::write(p.path("token"), "not-a-jwt").unwrap();
    let out = p.oprelay(&[
        "--nats-url",
        "nats://127.0.0.1:1",
        "config",
        "check",
        "--online",
    ]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    for prefix in ["nats", "accounts[0]", "sinks[0]", "sinks[2]"] {
        assert!(
            line_of(&all, prefix).starts_with("PROBLEM"),
            "{prefix}: {all}"
        );
    }
    assert!(line_of(&all, "sinks[2]").contains("Invalid token"), "{all}");
    assert!(line_of(&all, "sinks[0]").contains("401"), "{all}");
    assert!(line_of(&all, "accounts[0]").contains("JWT"), "{all}");
    assert!(line_of(&all, "sinks[1]").starts_with("ok"), "{all}");
    assert!(all.contains("4 problem(s)"), "{all}");
    assert!(
        !all.contains("revoked") && !all.contains("ApiKey secret"),
        "no secret in the report: {all}"
    );
}
