//! The permissions of `access`, enforced by a real nats-server running exactly the rendered
//! authorization: each user can do its work and nothing outside it.

use std::time::Duration;

use futures::StreamExt;
use oprelay_bus::access::Role;
use oprelay_bus::async_nats::jetstream::consumer::PullConsumer;
use oprelay_bus::{Bus, JsonKv, NatsSettings, Outgoing, Topology};
use oprelay_events::{names, Secret};
use oprelay_testkit::SecureBus;

fn sinks() -> Vec<String> {
    vec!["siem".to_owned()]
}

fn topology() -> Topology {
    Topology {
        consumers: vec![
            oprelay_bus::ConsumerSpec::normalizer(),
            oprelay_bus::ConsumerSpec {
                stream: names::STREAM_EVENTS.into(),
                durable: names::sink_consumer("siem"),
                filters: vec!["op.events.>".into()],
            },
        ],
        ..Default::default()
    }
}

async fn connect(bus: &SecureBus, role: Role) -> Bus {
    let settings = NatsSettings {
        url: bus.url(),
        user: Some(role.user()),
        password: Some(Secret::new(bus.password(role))),
        tls_ca: bus.ca_cert(),
        ..Default::default()
    };
    Bus::connect(&settings)
        .await
        .unwrap_or_else(|e| panic!("{} connects: {e}", role.user()))
}

/// Pulls one message from a consumer and acknowledges it: both must be allowed.
async fn pull_and_ack(consumer: &PullConsumer) {
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let msg = batch.next().await.expect("a message").expect("pulled");
    msg.ack().await.expect("acknowledged");
}

/// Publishes and waits for the server to log the permissions violation: a refused publish
/// never gets a JetStream ack, so the server's word is the event to wait for.
async fn refused(secure: &SecureBus, bus: &Bus, subject: &str) -> bool {
    let msg = Outgoing::new(subject, format!("probe-{subject}"), "{}");
    let publish = tokio::spawn({
        let bus = bus.clone();
        async move { bus.publish(msg).await }
    });
    let user = bus.client().server_info().client_id;
    let violation = format!("cid:{user} - ");
    // 2.10 writes `Publish Violation - User "u", Subject "s"`, later releases leave the user
    // out; both name the connection and the subject.
    let subject_part = format!("Subject \"{subject}\"");
    oprelay_testkit::eventually(Duration::from_secs(10), &subject_part, || async {
        let log = secure.server.log();
        log.lines()
            .any(|l| {
                l.contains(&violation)
                    && l.contains("Publish Violation")
                    && l.contains(&subject_part)
            })
            .then_some(())
    })
    .await;
    publish.abort();
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_can_do_its_work_and_nothing_else() {
    let secure = SecureBus::start(&sinks(), true);
    let anonymous = NatsSettings {
        url: secure.url(),
        tls_ca: secure.ca_cert(),
        ..Default::default()
    };
    assert!(Bus::connect(&anonymous).await.is_err(), "anonymous refused");

    let operator = connect(&secure, Role::Operator).await;
    operator
        .provision(&topology())
        .await
        .expect("operator provisions");

    // The fetcher writes pages, cursors and leases; it cannot delete a stream.
    let fetcher = connect(&secure, Role::Fetcher).await;
    fetcher
        .publish(Outgoing::new(
            "op.raw.acme.item_usages",
            "p1",
            "{\"items\":[]}",
        ))
        .await
        .expect("fetcher publishes a page");
    let cursors = JsonKv::open(&fetcher, names::BUCKET_CURSORS).await.unwrap();
    cursors
        .put("acme.item_usages", &"c1")
        .await
        .expect("fetcher writes a cursor");
    let leases = JsonKv::open(&fetcher, names::BUCKET_LEASES).await.unwrap();
    leases
        .compare_and_set("acme.item_usages", &"r1", None)
        .await
        .expect("lease");
    assert!(leases.store().keys().await.is_ok(), "fetcher lists leases");
    assert!(
        fetcher
            .jetstream()
            .delete_stream(names::STREAM_RAW)
            .await
            .is_err(),
        "a service cannot delete a stream"
    );

    // The normalizer consumes OP_RAW and publishes records; it cannot publish raw pages.
    let normalizer = connect(&secure, Role::Normalizer).await;
    let consumer = oprelay_bus::pull_consumer(
        normalizer.jetstream(),
        names::STREAM_RAW,
        names::CONSUMER_NORMALIZER,
    )
    .await
    .expect("normalizer finds its consumer");
    pull_and_ack(&consumer).await;
    normalizer
        .publish(Outgoing::new("op.events.acme.item_usages", "e1", "{}\n"))
        .await
        .expect("normalizer publishes records");
    assert!(
        refused(&secure, &normalizer, "op.raw.acme.item_usages").await,
        "normalizer wrote a raw page"
    );
    let lookups = JsonKv::open(&normalizer, names::BUCKET_LOOKUPS)
        .await
        .unwrap();
    assert!(
        lookups.store().watch_with_history(">").await.is_ok(),
        "normalizer watches lookups"
    );

    // The forwarder consumes its sink's consumer; it cannot write cursors.
    let forwarder = connect(&secure, Role::Forwarder).await;
    let sink = oprelay_bus::pull_consumer(
        forwarder.jetstream(),
        names::STREAM_EVENTS,
        &names::sink_consumer("siem"),
    )
    .await
    .expect("forwarder finds its sink consumer");
    pull_and_ack(&sink).await;
    assert!(
        refused(&secure, &forwarder, "$KV.OP_CURSORS.acme.item_usages").await,
        "the forwarder wrote OP_CURSORS"
    );

    // The subscriber reads through its own consumer, and nothing else.
    let subscriber = connect(&secure, Role::Subscriber).await;
    let events = subscriber
        .jetstream()
        .get_stream(names::STREAM_EVENTS)
        .await
        .unwrap();
    let own = events
        .create_consumer(oprelay_bus::async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("lake".into()),
            filter_subject: "op.events.>".into(),
            ..Default::default()
        })
        .await
        .expect("the subscriber creates its own consumer");
    pull_and_ack(&own).await;
    assert!(
        refused(&secure, &subscriber, "op.events.acme.item_usages").await,
        "subscriber published"
    );
    assert!(
        events.delete_consumer("lake").await.is_err(),
        "the subscriber deleted a consumer"
    );
    let stolen = events
        .get_consumer::<oprelay_bus::async_nats::jetstream::consumer::pull::Config>(
            &names::sink_consumer("siem"),
        )
        .await;
    if let Ok(c) = stolen {
        let pulled = match c
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await
        {
            Ok(mut m) => matches!(m.next().await, Some(Ok(_))),
            Err(_) => false,
        };
        assert!(
            !pulled,
            "the subscriber took a message from a sink's consumer"
        );
    }
}
