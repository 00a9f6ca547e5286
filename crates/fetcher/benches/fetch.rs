//! Backfill throughput of the real `oprelay-fetcher` binary.
//!
//! opsim (rate limits off) serves a backfill on three feeds; the fetcher runs as its own
//! process against a throw-away nats-server. Prints events/s and the fetcher's own CPU seconds
//! per 100 000 events, read from /proc, so neither opsim nor NATS is counted.
//! Run with `just bench-fetcher` (or `cargo bench -p oprelay-fetcher --bench fetch`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oprelay_bus::{Bus, JsonKv, NatsSettings};
use oprelay_events::{names, AccountName, CursorState, Feed};
use oprelay_testkit::opsim::{self, SimConfig, TokenSpec};
use oprelay_testkit::{binary, cpu_seconds, peak_rss_kib, rss_kib, NatsServer};

#[tokio::main]
async fn main() {
    let per_feed: u64 = std::env::var("BENCH_EVENTS_PER_FEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let nats = NatsServer::start();
    let sim = opsim::spawn(SimConfig {
        backfill: per_feed,
        rate_limits: None,
        ..SimConfig::default()
    })
    .await
    .expect("opsim");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, sim.sim.mint_token(&TokenSpec::default())).unwrap();
    let config = dir.path().join("oprelay.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\nlog_level = \"warn\"\n\
             [fetcher]\nrequests_per_minute = 600\nrequests_per_hour = 30000\n\
             [[accounts]]\nname = \"bench\"\nbase_url = \"{}\"\ntoken_file = \"{}\"\nstart_time = \"2000-01-01T00:00:00Z\"\n",
            nats.url(),
            sim.url(),
            token.display()
        ),
    )
    .unwrap();
    let bus = Bus::connect(&NatsSettings {
        url: nats.url(),
        ..Default::default()
    })
    .await
    .unwrap();

    let started = Instant::now();
    let mut child = Command::new(binary("oprelay-fetcher"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("fetcher");
    let account = AccountName::new("bench").unwrap();
    let total = 3 * per_feed;
    let cursors = loop {
        if let Ok(kv) = JsonKv::open(&bus, names::BUCKET_CURSORS).await {
            break kv;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        let mut done = 0;
        for feed in Feed::ALL {
            if let Ok(Some(c)) = cursors
                .get::<CursorState>(&names::feed_key(&account, feed))
                .await
            {
                done += c.value.events;
            }
        }
        if done >= total {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the fetcher exited ({status}) before the backfill was done");
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "bench did not finish in 10 min"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(child.id());
    let peak_mib = peak_rss_kib(child.id()).unwrap_or(0) as f64 / 1024.0;
    // What the fetcher keeps once caught up (it gives back what the backlog left when a drain
    // ends), read a few seconds later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_mib = rss_kib(child.id()).unwrap_or(0) as f64 / 1024.0;
    let _ = child.kill();
    let _ = child.wait();
    println!("fetcher backfill: {total} events in {wall:.2} s = {:.0} events/s (API ceiling: 10 000 events/s)", total as f64 / wall);
    println!(
        "fetcher CPU: {cpu:.2} s = {:.3} CPU s per 100 000 events; peak RSS {peak_mib:.1} MiB, {idle_mib:.1} MiB 5 s after",
        cpu * 100_000.0 / total as f64
    );
}
