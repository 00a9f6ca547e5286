//! The bus against a real nats-server: provisioning, dedup, compare-and-set, auth, TLS, tracing.

use std::time::Duration;

use futures::StreamExt;
use oprelay_bus::{Bus, BusError, JsonKv, NatsSettings, Outgoing, Topology};
use oprelay_events::{names, Secret};
use oprelay_testkit::{NatsServer, TestPki};

fn settings(url: String) -> NatsSettings {
    NatsSettings {
        url,
        ..Default::default()
    }
}

async fn bus(server: &NatsServer) -> Bus {
    Bus::connect(&settings(server.url()))
        .await
        .expect("connect")
}

/// Provisioning what is already there changes nothing and holds nothing back: `oprelay nats
/// provision` run twice must not ask for `--shrink-retention` (and exit 2) over a limit the
/// server only spells differently.
#[tokio::test]
async fn provisioning_again_finds_everything_up_to_date() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    let topology = Topology::default();
    bus.provision(&topology).await.expect("first");
    let steps = bus.provision(&topology).await.expect("second");
    for step in &steps {
        assert_eq!(step.action, oprelay_bus::Action::Unchanged, "{step}");
        assert!(step.held_back.is_empty(), "{step}");
    }
}

#[tokio::test]
async fn provisioning_is_idempotent_even_when_racing() {
    let server = NatsServer::start();
    let (a, b) = (bus(&server).await, bus(&server).await);
    let topology = Topology::default();
    let (ra, rb) = tokio::join!(a.provision(&topology), b.provision(&topology));
    ra.expect("first provisioner");
    rb.expect("second provisioner");
    a.provision(&topology).await.expect("again");

    let js = a.jetstream();
    for stream in [
        names::STREAM_RAW,
        names::STREAM_EVENTS,
        names::STREAM_DLQ,
        names::STREAM_ALARMS,
    ] {
        let mut s = js.get_stream(stream).await.expect(stream);
        let info = s.info().await.expect("info");
        assert!(
            info.config.duplicate_window >= Duration::from_secs(600),
            "{stream}"
        );
    }
    for bucket in [
        names::BUCKET_CURSORS,
        names::BUCKET_LEASES,
        names::BUCKET_STATUS,
        names::BUCKET_LOOKUPS,
    ] {
        js.get_key_value(bucket).await.expect(bucket);
    }
    let raw = js.get_stream(names::STREAM_RAW).await.unwrap();
    let consumer = raw
        .consumer_info(names::CONSUMER_NORMALIZER)
        .await
        .expect("normalizer consumer");
    assert_eq!(
        consumer.config.durable_name.as_deref(),
        Some(names::CONSUMER_NORMALIZER)
    );

    // A changed retention is applied to the existing stream, not an error.
    let longer = Topology {
        raw_max_age: Duration::from_secs(14 * 24 * 3600),
        ..Topology::default()
    };
    a.provision(&longer).await.expect("update");
    let mut raw = js.get_stream(names::STREAM_RAW).await.unwrap();
    assert_eq!(raw.info().await.unwrap().config.max_age, longer.raw_max_age);
}

#[tokio::test]
async fn a_duplicate_msg_id_is_dropped() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    bus.provision(&Topology::default()).await.unwrap();
    let msg = Outgoing::new(
        "op.raw.acme.item_usages",
        "acme:item_usages:cursor-1",
        "page",
    )
    .header(names::header::ACCOUNT, "acme");
    let first = bus.publish(msg.clone()).await.expect("first publish");
    let second = bus.publish(msg).await.expect("second publish");
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "JetStream recognised the repeated Nats-Msg-Id"
    );
    assert_eq!(second.sequence, first.sequence);
    let mut raw = bus.jetstream().get_stream(names::STREAM_RAW).await.unwrap();
    assert_eq!(raw.info().await.unwrap().state.messages, 1);

    let stored = raw
        .get_raw_message(first.sequence)
        .await
        .expect("stored message");
    let headers = Some(&stored.headers);
    assert_eq!(
        oprelay_bus::header_value(headers, names::header::ACCOUNT),
        Some("acme")
    );
    assert_eq!(
        oprelay_bus::header_value(headers, names::header::MSG_ID),
        Some("acme:item_usages:cursor-1")
    );
}

#[tokio::test]
async fn compare_and_set_with_a_stale_revision_fails() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    bus.provision(&Topology::default()).await.unwrap();
    let kv = JsonKv::open(&bus, names::BUCKET_CURSORS).await.unwrap();

    assert!(kv
        .get::<String>("acme.item_usages")
        .await
        .unwrap()
        .is_none());
    let r1 = kv
        .compare_and_set("acme.item_usages", &"c1", None)
        .await
        .expect("create");
    let err = kv
        .compare_and_set("acme.item_usages", &"c1-again", None)
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Conflict { .. }), "{err}");

    let r2 = kv
        .compare_and_set("acme.item_usages", &"c2", Some(r1))
        .await
        .expect("update");
    let stale = kv
        .compare_and_set("acme.item_usages", &"c2-fork", Some(r1))
        .await
        .unwrap_err();
    assert!(matches!(stale, BusError::Conflict { .. }), "{stale}");
    assert!(!stale.is_retryable(), "a lost CAS needs a fresh read");
    assert!(stale.to_string().contains("acme.item_usages"));

    let now = kv
        .get::<String>("acme.item_usages")
        .await
        .unwrap()
        .expect("value");
    assert_eq!(now.value, "c2");
    assert_eq!(now.revision, r2);
}

#[tokio::test]
async fn connects_with_user_and_password_only_when_they_are_right() {
    let server = NatsServer::start_with_config(
        "authorization {\n  user: oprelay\n  password: \"s3cret-pw\"\n}\n",
    );
    let good = NatsSettings {
        user: Some("oprelay".into()),
        password: Some(Secret::new("s3cret-pw")),
        ..settings(server.url())
    };
    let bus = Bus::connect(&good).await.expect("right password");
    bus.provision(&Topology::default())
        .await
        .expect("provision with auth");
    assert!(bus.is_connected());

    let bad = NatsSettings {
        password: Some(Secret::new("wrong-pw")),
        ..good.clone()
    };
    let err = match Bus::connect(&bad).await {
        Ok(_) => panic!("a wrong password must be refused"),
        Err(e) => e,
    };
    assert!(
        !err.is_retryable(),
        "retrying a wrong password cannot help: {err}"
    );
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-pw"), "the password leaked: {text}");
    assert!(
        text.contains(&server.url()),
        "the error names where: {text}"
    );

    let none = settings(server.url());
    assert!(
        Bus::connect(&none).await.is_err(),
        "no credentials, no entry"
    );
}

#[tokio::test]
async fn connects_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let server = NatsServer::start_with_config(&format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n}}\n",
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
        pki.ca_cert.display().to_string(),
    ));
    let url = format!("tls://localhost:{}", server.port());
    let tls = NatsSettings {
        tls_ca: Some(pki.ca_cert.clone()),
        tls_cert: Some(pki.client_cert.clone()),
        tls_key: Some(pki.client_key.clone()),
        ..settings(url.clone())
    };
    let bus = Bus::connect(&tls)
        .await
        .expect("TLS with the private CA and a client cert");
    bus.provision(&Topology::default())
        .await
        .expect("provision over TLS");

    let no_client_cert = NatsSettings {
        tls_cert: None,
        tls_key: None,
        ..tls.clone()
    };
    assert!(
        Bus::connect(&no_client_cert).await.is_err(),
        "server requires a client cert"
    );
    let system_roots = NatsSettings {
        tls_ca: None,
        ..tls.clone()
    };
    assert!(
        Bus::connect(&system_roots).await.is_err(),
        "the private CA is not trusted by default"
    );
    let half = NatsSettings {
        tls_key: None,
        ..tls
    };
    assert!(matches!(
        Bus::connect(&half).await,
        Err(BusError::Settings(_))
    ));
}

#[tokio::test]
async fn publish_carries_the_current_trace_context() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    let server = NatsServer::start();
    let bus = bus(&server).await;
    bus.provision(&Topology::default()).await.unwrap();

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let span = tracing::info_span!("fetch page");
    let trace_id = {
        use opentelemetry::trace::TraceContextExt;
        span.context().span().span_context().trace_id()
    };
    let mut sub = bus
        .client()
        .subscribe("op.events.acme.audit_events")
        .await
        .unwrap();
    {
        let _entered = span.enter();
        bus.publish(Outgoing::new(
            "op.events.acme.audit_events",
            "events:1",
            "{}",
        ))
        .await
        .expect("publish");
    }
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("message within 5 s")
        .expect("subscription open");
    let traceparent = msg
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .map(|v| v.as_str().to_owned())
        .expect("traceparent header");
    assert!(
        traceparent.contains(&trace_id.to_string()),
        "{traceparent} vs {trace_id}"
    );
    let parent = oprelay_bus::trace::extract(msg.headers.as_ref());
    use opentelemetry::trace::TraceContextExt;
    assert_eq!(parent.span().span_context().trace_id(), trace_id);
}

/// A shorter retention deletes data: provisioning reports it and leaves the stream alone
/// unless told to shrink (issue 13).
#[tokio::test]
async fn provisioning_never_shrinks_retention_silently() {
    let server = NatsServer::start();
    let bus = bus(&server).await;
    let week = Topology::default();
    bus.provision(&week).await.expect("first provision");
    let shorter = Topology {
        raw_max_age: Duration::from_secs(3600),
        ..Topology::default()
    };
    let _ = bus.provision(&shorter).await;
    let mut raw = bus.jetstream().get_stream(names::STREAM_RAW).await.unwrap();
    assert_eq!(
        raw.info().await.unwrap().config.max_age,
        week.raw_max_age,
        "a shorter max_age must not be applied without --shrink-retention"
    );
}

/// A cluster is configured as a comma-separated list of its nodes' URLs; a client must reach
/// the cluster through any of them, even when the first is down (issue 13).
#[tokio::test]
async fn connects_through_a_list_of_servers_whose_first_is_down() {
    let server = NatsServer::start();
    let down = format!("nats://127.0.0.1:{}", oprelay_testkit::free_port());
    let bus = Bus::connect(&settings(format!("{down},{}", server.url())))
        .await
        .expect("the second server of the list");
    bus.provision(&Topology::default())
        .await
        .expect("provision");
}
