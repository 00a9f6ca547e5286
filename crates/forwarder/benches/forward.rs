//! Forwarder throughput: OP_EVENTS → a file sink, → a local HTTP receiver, and → a local
//! Splunk HEC receiver.
//!
//! Normalized records are published first; then the real `oprelay-forwarder` binary runs as
//! its own process until the sink has them all. Prints records/s, the forwarder's CPU
//! seconds per 100 000 records and its peak RSS (from /proc). Run with `just bench-forwarder`.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use oprelay_bus::{Bus, NatsSettings, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Feed};
use oprelay_normalizer::lookup::LookupIndex;
use oprelay_normalizer::normalize::{normalize_page, Source};
use oprelay_testkit::{binary, cpu_seconds, peak_rss_kib, rss_kib, NatsServer};

async fn publish(bus: &Bus, pages: u64) -> usize {
    let sim = opsim::Sim::new(opsim::SimConfig {
        backfill: 400,
        ..Default::default()
    });
    let items: Vec<serde_json::Value> = (0..400).map(|i| sim.event(Feed::ItemUsages, i)).collect();
    let raw =
        serde_json::to_vec(&serde_json::json!({"cursor": "c", "has_more": true, "items": items}))
            .unwrap();
    let page = normalize_page(
        &raw,
        Feed::ItemUsages,
        &Source::for_account("bench", None, None),
        &mut LookupIndex::new(),
        time::OffsetDateTime::now_utc(),
    );
    let acme = AccountName::new("bench").unwrap();
    for p in 0..pages {
        bus.publish(
            Outgoing::new(
                names::events_subject(&acme, Feed::ItemUsages),
                format!("events:{p}"),
                page.ndjson.clone(),
            )
            .header(header::COUNT, page.count),
        )
        .await
        .unwrap();
    }
    page.count * pages as usize
}

/// How long the forwarder idles before its resident size is read again.
const IDLE_AFTER: Duration = Duration::from_secs(5);

/// Whether the sink's consumer has acknowledged every message (the forwarder acks a batch
/// only after the sink accepted it).
async fn drained(bus: &Bus, sink: &str, messages: u64) -> bool {
    let Ok(stream) = bus.jetstream().get_stream(names::STREAM_EVENTS).await else {
        return false;
    };
    match stream.consumer_info(format!("sink-{sink}")).await {
        Ok(info) => info.ack_floor.stream_sequence >= messages && info.num_ack_pending == 0,
        Err(_) => false,
    }
}

/// Where a run happens: the server, a client, a scratch directory.
struct Env<'a> {
    nats: &'a NatsServer,
    bus: &'a Bus,
    dir: &'a std::path::Path,
}

async fn run(
    env: &Env<'_>,
    label: &str,
    sink: &str,
    total: usize,
    messages: u64,
    delivered: impl Fn() -> usize,
) {
    let (nats, bus, dir) = (env.nats, env.bus, env.dir);
    let config = dir.join(format!("{label}.toml"));
    std::fs::write(&config, format!("[nats]\nurl = \"{}\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n{sink}", nats.url())).unwrap();
    let started = Instant::now();
    let mut child = Command::new(binary("oprelay-forwarder"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let name = label.split_whitespace().next().unwrap_or(label);
    while !drained(bus, name, messages).await {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{label}: not done in 10 min"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(delivered(), total, "{label}: every record delivered");
    let cpu = cpu_seconds(child.id());
    let peak_mib = peak_rss_kib(child.id()).unwrap_or(0) as f64 / 1024.0;
    // What the forwarder keeps once the burst is over: a few empty pulls later.
    tokio::time::sleep(IDLE_AFTER).await;
    let idle_mib = rss_kib(child.id()).unwrap_or(0) as f64 / 1024.0;
    let _ = child.kill();
    let _ = child.wait();
    println!("{label:<14} {total} records in {wall:.2} s = {:>9.0} records/s; forwarder CPU {:.3} s per 100 000 records, peak RSS {peak_mib:.1} MiB, {idle_mib:.1} MiB {} s after", total as f64 / wall, cpu * 100_000.0 / total as f64, IDLE_AFTER.as_secs());
}

#[tokio::main]
async fn main() {
    let pages: u64 = std::env::var("BENCH_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(750);
    let nats = NatsServer::start();
    let bus = Bus::connect(&NatsSettings {
        url: nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    bus.provision(&Default::default()).await.unwrap();
    let total = publish(&bus, pages).await;
    let dir = tempfile::tempdir().unwrap();

    let out = dir.path().join("out.ndjson");
    let counted = out.clone();
    let lines = move || {
        std::fs::read(&counted)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0)
    };
    let messages = pages;
    let env = Env {
        nats: &nats,
        bus: &bus,
        dir: dir.path(),
    };
    run(&env, "file sink", &format!("[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"{}\"\nbatch = {{ max_events = 5000, max_bytes = \"8MiB\" }}\n", out.display()), total, messages, lines).await;

    let (addr, got) = counting_receiver("/ingest", "ok").await;
    run(&env, "http sink", &format!("[[sinks]]\nname = \"http\"\ntype = \"http\"\nendpoint = \"http://{addr}/ingest\"\nbatch = {{ max_events = 5000, max_bytes = \"8MiB\", in_flight = 4 }}\n"), total, messages, move || got.load(Ordering::Relaxed)).await;

    // Splunk HEC without gzip, so the figure is the envelopes and not the compression.
    let (addr, got) = counting_receiver(
        "/services/collector/event",
        r#"{"text":"Success","code":0}"#,
    )
    .await;
    let token = dir.path().join("hec-token");
    std::fs::write(&token, "00000000-0000-0000-0000-000000000000").unwrap();
    run(&env, "hec sink", &format!("[[sinks]]\nname = \"hec\"\ntype = \"splunk_hec\"\nendpoint = \"http://{addr}\"\ntoken_file = \"{}\"\ngzip = false\nbatch = {{ max_events = 5000, max_bytes = \"8MiB\", in_flight = 4 }}\n", token.display()), total, messages, move || got.load(Ordering::Relaxed)).await;
}

/// A receiver on a free port that counts the lines of every body posted to `path` and
/// answers `reply`; it takes bodies of any size, as a SIEM's bulk endpoint does (axum's
/// default limit is 2 MB).
async fn counting_receiver(
    path: &str,
    reply: &'static str,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    let app = axum::Router::new().route(
        path,
        post(move |body: Bytes| {
            let count = count.clone();
            async move {
                count.fetch_add(
                    body.iter().filter(|c| **c == b'\n').count(),
                    Ordering::Relaxed,
                );
                reply
            }
        }),
    );
    let app = app.layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}
