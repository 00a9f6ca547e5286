//! The admin listener against a real NATS: not ready, then ready, then not ready when NATS dies.

use std::time::Duration;

use oprelay_service::{config, CancellationToken, Metrics};
use oprelay_testkit::{eventually, NatsServer};
use prometheus_client::metrics::counter::Counter;

#[tokio::test]
async fn probes_follow_the_bus_and_metrics_are_served() {
    let mut nats = NatsServer::start();
    let mut cfg = config::from_toml(&format!(
        "[nats]\nurl = \"{}\"\nprovision_at_start = true",
        nats.url()
    ))
    .unwrap();
    cfg.telemetry.listen = Some("127.0.0.1:0".parse().unwrap());
    let metrics = Metrics::new();
    let pages: Counter = Counter::default();
    metrics.register("test_pages", "Pages seen by the test", pages.clone());
    pages.inc_by(7);

    let shutdown = CancellationToken::new();
    let started = oprelay_service::start(
        &cfg,
        "test",
        &[],
        "127.0.0.1:0".parse().unwrap(),
        metrics,
        &shutdown,
    )
    .await
    .expect("start")
    .expect("not shut down");
    let base = format!("http://{}", started.admin_addr);
    let http = reqwest::Client::new();
    let get = |path: &'static str| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let r = http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("admin answers");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await, (200, "ready\n".into()));
    let (status, body) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("oprelay_test_pages_total 7"), "{body}");
    assert!(body.contains("\noprelay_ready 1\n"), "{body}");
    assert!(body.contains("\nprocess_resident_memory_bytes "), "{body}");
    assert!(body.contains("\nprocess_cpu_seconds_total "), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1, "{body}");

    nats.kill();
    eventually(
        Duration::from_secs(10),
        "/readyz to report NATS down",
        || async {
            let (status, body) = get("/readyz").await;
            (status == 503 && body.contains("disconnected")).then_some(())
        },
    )
    .await;
    let (_, body) = get("/metrics").await;
    assert!(body.contains("\noprelay_ready 0\n"), "{body}");
    nats.restart();
    eventually(
        Duration::from_secs(20),
        "/readyz to recover after NATS restarts",
        || async { (get("/readyz").await.0 == 200).then_some(()) },
    )
    .await;
    shutdown.cancel();
}

#[tokio::test]
async fn start_gives_up_quietly_on_shutdown_while_nats_is_missing() {
    let mut cfg = config::from_toml("[nats]\nurl = \"nats://127.0.0.1:1\"").unwrap();
    cfg.telemetry.listen = Some("127.0.0.1:0".parse().unwrap());
    let shutdown = CancellationToken::new();
    let cancel = shutdown.clone();
    let start = tokio::spawn(async move {
        oprelay_service::start(
            &cfg,
            "test",
            &[],
            "127.0.0.1:0".parse().unwrap(),
            Metrics::new(),
            &shutdown,
        )
        .await
    });
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(10), start)
        .await
        .expect("start returns after shutdown")
        .expect("no panic");
    assert!(matches!(result, Ok(None)));
}

/// Provisioning is the operator's step: a service finding its streams missing stops at once
/// and says what to run, instead of creating them from whatever config it was given.
#[tokio::test]
async fn a_service_on_an_unprovisioned_bus_says_to_run_provision() {
    let nats = NatsServer::start();
    let mut cfg = config::from_toml(&format!("[nats]\nurl = \"{}\"", nats.url())).unwrap();
    cfg.telemetry.listen = Some("127.0.0.1:0".parse().unwrap());
    let needs = [
        oprelay_bus::Need::Stream(oprelay_events::names::STREAM_RAW),
        oprelay_bus::Need::Consumer(oprelay_events::names::CONSUMER_NORMALIZER.into()),
    ];
    let shutdown = CancellationToken::new();
    let err = match oprelay_service::start(
        &cfg,
        "test",
        &needs,
        "127.0.0.1:0".parse().unwrap(),
        Metrics::new(),
        &shutdown,
    )
    .await
    {
        Ok(_) => panic!("a service must not start on an unprovisioned bus"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("oprelay nats provision"), "{err}");
    assert!(err.contains("stream OP_RAW does not exist"), "{err}");
    assert!(err.contains("consumer normalizer"), "{err}");
    // Nothing was created on the way.
    let bus = oprelay_bus::Bus::connect(&oprelay_bus::NatsSettings {
        url: nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(bus.jetstream().get_stream("OP_RAW").await.is_err());
}
