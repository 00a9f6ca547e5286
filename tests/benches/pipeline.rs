//! End to end: opsim (rate limits off) → fetcher → normalizer → forwarder → a file sink, the
//! four release binaries as separate processes, ≥ 1 000 000 events. Prints one table: events/s
//! per stage (from each service's own counters) and end to end, delivery latency p50/p99 (the
//! forwarder's histogram: normalized → accepted by the sink), peak RSS per service.
//! Run with `just bench-e2e` (part of `just bench`).

use std::time::{Duration, Instant};

use oprelay_e2e::{peak_rss_kib, Pipeline, Spec, SERVICES};

/// Sums every sample of the metric whose name ends with `name` (labels aside).
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (metric, value) = l.rsplit_once(' ')?;
            let bare = metric.split('{').next()?;
            bare.ends_with(name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Follows the sink's file, turning each new record into a latency sample.
#[derive(Default)]
struct Tail {
    offset: usize,
    partial: Vec<u8>,
    latencies: Vec<f64>,
}

impl Tail {
    fn read(&mut self, path: &std::path::Path) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset as u64)).is_err() {
            return;
        }
        let Ok(n) = file.read_to_end(&mut self.partial) else {
            return;
        };
        self.offset += n;
        let now = time::OffsetDateTime::now_utc();
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"
        );
        let end = self
            .partial
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |e| e + 1);
        for line in self.partial[..end].split(|b| *b == b'\n') {
            const KEY: &[u8] = b"\"p_parse_time\":\"";
            let Some(at) = line.windows(KEY.len()).position(|w| w == KEY) else {
                continue;
            };
            let value = &line[at + KEY.len()..];
            let value = &value[..value.iter().position(|b| *b == b'"').unwrap_or(0)];
            if let Some(t) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| time::PrimitiveDateTime::parse(v, &fmt).ok())
            {
                self.latencies.push((now - t.assume_utc()).as_seconds_f64());
            }
        }
        self.partial.drain(..end);
    }
}

async fn metrics(p: &Pipeline, service: &str) -> String {
    let Some(admin) = p.admin(service) else {
        return String::new();
    };
    match reqwest::get(format!("http://{admin}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::main]
async fn main() {
    let per_feed: u64 = std::env::var("BENCH_EVENTS_PER_FEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(334_000);
    let total = 3 * per_feed;
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = out_dir.path().join("events.ndjson");
    let mut p = Pipeline::start(Spec {
        backfill: per_feed,
        rate_limits: false,
        services: false,
        sinks: Some(format!(
            "[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"{}\"\nbatch = {{ max_events = 5000, max_bytes = \"8MiB\", timeout = \"200ms\" }}\n",
            out.display()
        )),
        extra_config: "[telemetry]\nlog_level = \"warn\"\n".into(),
        ..Default::default()
    })
    .await;
    println!(
        "end to end: {total} events (3 feeds × {per_feed}), opsim without rate limits → file sink"
    );
    // Consumers first, so the clock starts when the fetcher does.
    for s in &SERVICES[1..] {
        p.start_service(s).await;
    }
    let start = Instant::now();
    p.start_service(SERVICES[0]).await;
    let stages = [
        ("fetcher", "oprelay-fetcher", "fetcher_events_total"),
        (
            "normalizer",
            "oprelay-normalizer",
            "normalizer_records_total",
        ),
        ("forwarder", "oprelay-forwarder", "forwarder_records_total"),
    ];
    let mut done_at: [Option<Duration>; 3] = [None; 3];
    let mut peak = [0u64; 4];
    let deadline = start + Duration::from_secs(600);
    // Latency: each record's p_parse_time to when this loop sees it in the file.
    let mut tail = Tail::default();
    while done_at.iter().any(Option::is_none) {
        tail.read(&out);
        assert!(Instant::now() < deadline, "not done within 600 s");
        for (i, (_, service, metric)) in stages.iter().enumerate() {
            if done_at[i].is_none() {
                let m = metrics(&p, service).await;
                if counter(&m, metric) >= total as f64 {
                    done_at[i] = Some(start.elapsed());
                }
            }
        }
        for (i, s) in SERVICES.iter().enumerate() {
            if let Some(kib) = p.pid(s).and_then(peak_rss_kib) {
                peak[i] = peak[i].max(kib);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tail.read(&out);
    let written = tail.latencies.len();
    assert!(
        written as u64 >= total,
        "the file sink has {written} records"
    );
    println!("{:<28} {:>14} {:>10}", "stage", "events/s", "done at");
    for (i, (label, _, _)) in stages.iter().enumerate() {
        let t = done_at[i].unwrap_or_default().as_secs_f64();
        println!("{label:<28} {:>14.0} {:>9.1}s", total as f64 / t, t);
    }
    let e2e = done_at[2].unwrap_or_default().as_secs_f64();
    println!(
        "{:<28} {:>14.0} {:>9.1}s",
        "end to end",
        total as f64 / e2e,
        e2e
    );
    tail.latencies.sort_by(f64::total_cmp);
    for (label, q) in [("latency p50", 0.5), ("latency p99", 0.99)] {
        let i = ((tail.latencies.len() as f64 * q) as usize)
            .min(tail.latencies.len().saturating_sub(1));
        let v = tail.latencies.get(i).copied().unwrap_or(f64::NAN);
        println!("{label:<28} {v:>13.2}s  (normalized → in the sink's file, seen every 100 ms)");
    }
    for (i, s) in SERVICES.iter().enumerate() {
        println!(
            "{:<28} {:>11.1} MiB",
            format!("peak RSS {s}"),
            peak[i] as f64 / 1024.0
        );
    }
}
