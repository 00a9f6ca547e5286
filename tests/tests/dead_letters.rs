//! A record one SIEM refuses is dead-lettered by the forwarder with the sink named; once the
//! SIEM is fixed, `oprelay dlq replay` sends it to that sink alone, and it arrives once.

use std::time::Duration;

use oprelay_e2e::{text, Pipeline, Spec, ACCOUNT};
use oprelay_events::names;
use oprelay_testkit::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_is_replayed_to_its_sink_only() {
    let mut p = Pipeline::start(Spec {
        backfill: 30,
        services: false,
        ..Spec::default()
    })
    .await;
    let ids = p.expected_row_ids();
    let bad = ids[7].clone();
    // Elasticsearch's mapping refuses one document (a field type conflict).
    p.es.lock().unwrap().mapping_errors.insert(bad.clone());
    for s in oprelay_e2e::SERVICES {
        p.start_service(s).await;
    }
    eventually(
        Duration::from_secs(60),
        "every other record at both sinks",
        || async {
            let es = p.es.lock().unwrap().docs.len();
            let http = p.http.lock().unwrap().lines.len();
            (es == ids.len() - 1 && http >= ids.len()).then_some(())
        },
    )
    .await;
    let letters = eventually(Duration::from_secs(30), "the dead letter", || async {
        let l = p.stream_messages(names::STREAM_DLQ).await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(letters.len(), 1);
    let header = |name| oprelay_bus::header_value(Some(&letters[0].headers), name).unwrap_or("");
    assert_eq!(header(names::header::STAGE), "forward");
    assert_eq!(header(names::header::SINK), "elastic");
    assert_eq!(header(names::header::ACCOUNT), ACCOUNT);
    assert!(header(names::header::ERROR).contains("document_parsing_exception"));
    let listed = p.oprelay(&["dlq", "list", "--stage", "forward", "--sink", "elastic"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        text(&listed).contains("1 dead letter(s)"),
        "{}",
        text(&listed)
    );
    let other = p.oprelay(&["dlq", "list", "--sink", "panther"]);
    assert!(
        text(&other).contains("0 dead letter(s)"),
        "{}",
        text(&other)
    );

    // The mapping is fixed; the letter goes back to Elasticsearch, and only there.
    p.es.lock().unwrap().mapping_errors.clear();
    let replayed = p.oprelay(&["dlq", "replay", "--all"]);
    assert!(replayed.status.success(), "{}", text(&replayed));
    assert!(
        text(&replayed).contains(&format!("op.replay.elastic.{ACCOUNT}.")),
        "{}",
        text(&replayed)
    );
    eventually(Duration::from_secs(30), "the replayed document", || async {
        p.es.lock().unwrap().docs.contains_key(&bad).then_some(())
    })
    .await;
    // The HTTP sink's consumer has nothing left to take: the replay was never meant for it.
    let bus = p.bus().await;
    eventually(Duration::from_secs(30), "the panther sink idle", || async {
        let stream = bus
            .jetstream()
            .get_stream(names::STREAM_EVENTS)
            .await
            .ok()?;
        let info = stream
            .consumer_info(names::sink_consumer("panther"))
            .await
            .ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    assert_eq!(
        p.http.lock().unwrap().lines.len(),
        ids.len(),
        "panther got no replay"
    );
    assert_eq!(p.es.lock().unwrap().docs.len(), ids.len());
    assert!(
        p.stream_messages(names::STREAM_DLQ).await.is_empty(),
        "the letter is gone"
    );
    // Subscribers of op.events.> never see replays.
    let replays = p
        .stream_messages(names::STREAM_EVENTS)
        .await
        .iter()
        .filter(|m| oprelay_bus::header_value(Some(&m.headers), names::header::SINK).is_some())
        .count();
    assert_eq!(
        replays, 1,
        "the replay is kept in OP_EVENTS under op.replay.elastic"
    );
}
