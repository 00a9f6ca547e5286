//! End to end: opsim (rate limits off) → fetcher → normalizer → forwarder → a file sink, the
//! four release binaries as separate processes, ≥ 1 000 000 events over four accounts (one
//! token may fetch 600 pages a minute). Prints one table: events/s per stage (from each
//! service's own counters) and end to end, delivery latency p50/p99 (normalized → in the sink's
//! file, sampled), peak RSS and CPU per process. Run with `just bench-e2e` (part of `just bench`).

use std::time::{Duration, Instant};

use oprelay_e2e::{peak_rss_kib, Pipeline, Spec, SERVICES};
use oprelay_testkit::cpu_seconds;

/// Sums every sample of the metric whose name ends with `name` (labels aside).
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (metric, value) = l.rsplit_once(' ')?;
            let bare = metric.split('{').next()?;
            bare.ends_with(name).then(|| value.parse::<f64>().ok())?
        })
        // Not `sum()`: an empty f64 sum is -0, printed as "-0".
        .fold(0.0, |a, b| a + b)
}

/// Samples delivery latency: every tick, the records at the end of the sink's file (just
/// written) against their `p_parse_time`. Reading only the file's tail keeps this process's
/// CPU, which the table counts with opsim's, out of the pipeline's way.
#[derive(Default)]
struct Sampler {
    len: u64,
    latencies: Vec<f64>,
}

impl Sampler {
    const WINDOW: u64 = 64 * 1024;

    fn sample(&mut self, path: &std::path::Path) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(path) else {
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let from = self.len.max(len.saturating_sub(Self::WINDOW));
        self.len = len;
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(from)).is_err()
            || file.take(len - from).read_to_end(&mut buf).is_err()
        {
            return;
        }
        let now = time::OffsetDateTime::now_utc();
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]"
        );
        // Whole lines only: skip the (possibly cut) first one.
        for line in buf.split(|b| *b == b'\n').skip(1) {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            const KEY: &str = "\"p_parse_time\":\"";
            let Some(at) = line.rfind(KEY) else {
                continue;
            };
            let value = &line[at + KEY.len()..];
            let value = &value[..value.find('"').unwrap_or(0)];
            if let Ok(t) = time::PrimitiveDateTime::parse(value, &fmt) {
                self.latencies.push((now - t.assume_utc()).as_seconds_f64());
            }
        }
    }
}

/// Lines in the sink's file, and how many distinct records they hold: (`p_source_id`,
/// `p_row_id`) pairs, since the four accounts read one simulated stream and so share event
/// uuids, which real accounts never do.
fn rows_in(path: &std::path::Path) -> (usize, usize) {
    fn field<'l>(line: &'l str, name: &str) -> &'l str {
        let key = format!("\"{name}\":\"");
        let Some(at) = line.find(&key) else {
            return "";
        };
        let value = &line[at + key.len()..];
        &value[..value.find('"').unwrap_or(value.len())]
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return (0, 0);
    };
    let mut ids = std::collections::HashSet::new();
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        lines += 1;
        ids.insert((field(line, "p_source_id"), field(line, "p_row_id")));
    }
    (lines, ids.len())
}

/// A counter summed over every replica of a service.
async fn summed(p: &Pipeline, processes: &[(String, &str)], service: &str, metric: &str) -> f64 {
    let mut sum = 0.0;
    for (key, s) in processes {
        if *s == service {
            sum += counter(&metrics(p, key).await, metric);
        }
    }
    sum
}

async fn metrics(p: &Pipeline, service: &str) -> String {
    // One client for every scrape: `reqwest::get` builds a client (and loads the TLS roots)
    // per call, ten times a second per service, all of it counted as this process's CPU.
    static CLIENT: std::sync::LazyLock<reqwest::Client> =
        std::sync::LazyLock::new(reqwest::Client::new);
    let Some(admin) = p.admin(service) else {
        return String::new();
    };
    match CLIENT.get(format!("http://{admin}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::main]
async fn main() {
    let per_feed: u64 = std::env::var("BENCH_EVENTS_PER_FEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(84_000);
    // Four accounts: the Events API allows 600 pages a minute per token (10 000 events/s), so
    // a pipeline faster than that is one that serves several accounts.
    let accounts = 4;
    // `just bench-e2e 3`: a 3-node JetStream cluster with three replicas of everything.
    let nats_nodes: usize = std::env::var("BENCH_NATS_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    // `BENCH_REPLICAS=2`: two normalizers and two forwarders, as a scaled-out deployment runs
    // them (one shared durable consumer per stage).
    let replicas: usize = std::env::var("BENCH_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total = accounts as u64 * 3 * per_feed;
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = out_dir.path().join("events.ndjson");
    let mut p = Pipeline::start(Spec {
        backfill: per_feed,
        rate_limits: false,
        services: false,
        accounts,
        nats_nodes,
        sinks: Some(format!(
            "[[sinks]]\nname = \"file\"\ntype = \"file\"\npath = \"{}\"\nbatch = {{ max_events = 5000, max_bytes = \"8MiB\", timeout = \"200ms\" }}\n",
            out.display()
        )),
        extra_config: "[telemetry]\nlog_level = \"warn\"\n".into(),
        // The production ack wait, not the harness's 5 s (which lets the kill -9 tests recover
        // quickly): the benchmark measures what a deployment runs.
        env: vec![("OPRELAY_NATS__ACK_WAIT".into(), "60s".into())],
        ..Default::default()
    })
    .await;
    println!(
        "end to end: {total} events ({accounts} accounts × 3 feeds × {per_feed}), opsim without rate limits → file sink; \
         NATS: {nats_nodes} node(s), authorization and TLS on; {replicas} normalizer(s) and forwarder(s)"
    );
    // The simulator serves bytes rendered before the clock starts, so the figures below are
    // oprelay's and not opsim generating events; its CPU from here on is counted apart.
    p.sim.prerender_backfill();
    // The yardstick runs before the pipeline and again after it: this machine's speed drifts
    // by a third within minutes, and the mean of the two brackets the run.
    let (offline_file, offline_events) = offline_input(&p, per_feed);
    let offline_before = offline_normalize(&offline_file);
    let bench_cpu_at_start = cpu_seconds(std::process::id());
    // Consumers first, so the clock starts when the fetcher does.
    // Every process by the name the harness knows it by, and the service it runs.
    let mut processes: Vec<(String, &str)> = SERVICES.iter().map(|s| (s.to_string(), *s)).collect();
    for s in &SERVICES[1..] {
        p.start_service(s).await;
    }
    for n in 2..=replicas {
        for s in ["oprelay-normalizer", "oprelay-forwarder"] {
            processes.push((p.start_replica(s, n).await, s));
        }
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
    let mut peak = vec![0u64; processes.len()];
    let deadline = start + Duration::from_secs(600);
    // Latency: each record's p_parse_time to when this loop sees it in the file.
    let mut tail = Sampler::default();
    while done_at.iter().any(Option::is_none) {
        tail.sample(&out);
        assert!(Instant::now() < deadline, "not done within 600 s");
        for (i, (_, service, metric)) in stages.iter().enumerate() {
            if done_at[i].is_none() && summed(&p, &processes, service, metric).await >= total as f64
            {
                done_at[i] = Some(start.elapsed());
            }
        }
        for (i, (key, _)) in processes.iter().enumerate() {
            if let Some(kib) = p.pid(key).and_then(peak_rss_kib) {
                peak[i] = peak[i].max(kib);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every process's CPU as the last record lands: what follows (counting the file, the
    // last scrapes) is the benchmark's bookkeeping, not the pipeline's work.
    let cpu: Vec<f64> = processes
        .iter()
        .map(|(key, _)| p.pid(key).map(cpu_seconds).unwrap_or(0.0))
        .collect();
    let nats_cpu: f64 = p.nats.pids().into_iter().map(cpu_seconds).sum();
    let bench_cpu = cpu_seconds(std::process::id()) - bench_cpu_at_start;
    let offline_after = offline_normalize(&offline_file);
    let (written, distinct) = rows_in(&out);
    assert!(
        distinct as u64 >= total,
        "the file sink has {distinct} distinct records of {total}"
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
    // The file sink is at-least-once: a redelivered batch is written again. How often that
    // happens under a saturated machine is worth seeing on every run.
    println!(
        "{:<28} {:>14} {:>10}",
        "records in the file",
        written,
        format!(
            "{:.3}% again",
            (written - distinct) as f64 * 100.0 / distinct.max(1) as f64
        )
    );
    let again = [
        ("oprelay-normalizer", "normalizer_redelivered_pages_total"),
        ("oprelay-forwarder", "forwarder_redelivered_messages_total"),
    ];
    for (service, metric) in again {
        let n = summed(&p, &processes, service, metric).await;
        println!("{metric:<42} {n:>8.0}  (JetStream deliveries after the first)");
    }
    tail.latencies.sort_by(f64::total_cmp);
    for (label, q) in [("latency p50", 0.5), ("latency p99", 0.99)] {
        let i = ((tail.latencies.len() as f64 * q) as usize)
            .min(tail.latencies.len().saturating_sub(1));
        let v = tail.latencies.get(i).copied().unwrap_or(f64::NAN);
        println!("{label:<28} {v:>13.2}s  (normalized → in the sink's file, sampled every 100 ms)");
    }
    // Where the two cores went: CPU seconds per 100 000 events for each process (opsim
    // generating the events runs inside this benchmark's own process).
    println!(
        "{:<28} {:>14} {:>14}",
        "process", "peak RSS", "CPU s/100k ev"
    );
    let per_100k = |secs: f64| secs * 100_000.0 / total as f64;
    for (i, (key, _)) in processes.iter().enumerate() {
        println!(
            "{key:<28} {:>10.1} MiB {:>14.3}",
            peak[i] as f64 / 1024.0,
            per_100k(cpu[i])
        );
    }
    println!(
        "{:<28} {:>14} {:>14.3}",
        "nats-server",
        "",
        per_100k(nats_cpu)
    );
    let all_cpu = cpu.iter().sum::<f64>() + nats_cpu + bench_cpu;
    println!(
        "{:<28} {:>14} {:>14.3}  ({:.0} % of the CPU of the run)",
        "opsim (and this benchmark)",
        "",
        per_100k(bench_cpu),
        bench_cpu * 100.0 / all_cpu.max(1e-9)
    );
    // The yardsticks: the same events through `oprelay normalize`, in this run.
    // A service's CPU over all its replicas.
    let service_cpu = |name: &str| -> f64 {
        processes
            .iter()
            .zip(&cpu)
            .filter(|((_, s), _)| *s == name)
            .map(|(_, c)| c)
            .sum()
    };
    let yardstick = |(cpu, _): (f64, u64)| cpu * 100_000.0 / offline_events as f64;
    let offline_100k = (yardstick(offline_before) + yardstick(offline_after)) / 2.0;
    println!(
        "{:<28} {:>10.1} MiB {:>14.3}  ({offline_events} events, offline; {:.3} before the run, {:.3} after)",
        "oprelay normalize",
        offline_before.1.max(offline_after.1) as f64 / 1024.0,
        offline_100k,
        yardstick(offline_before),
        yardstick(offline_after),
    );
    let pipeline: f64 = SERVICES[..3].iter().map(|s| service_cpu(s)).sum::<f64>() + nats_cpu;
    println!(
        "normalizer service / offline:  {:.2}×;  fetcher + normalizer + forwarder + nats-server / offline:  {:.2}×",
        per_100k(service_cpu("oprelay-normalizer")) / offline_100k,
        per_100k(pipeline) / offline_100k
    );
}

/// The yardstick's input: one account's events (the same the pipeline fetches) in a file, and
/// how many there are.
fn offline_input(p: &Pipeline, per_feed: u64) -> (std::path::PathBuf, u64) {
    use std::io::Write;
    let file = p.path("offline.ndjson");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("offline input"));
    let mut events = 0u64;
    for feed in oprelay_events::Feed::ALL {
        for e in p.events(feed) {
            writeln!(out, "{e}").expect("write");
            events += 1;
        }
    }
    out.flush().expect("flush");
    drop(out);
    assert_eq!(events, 3 * per_feed);
    (file, events)
}

/// `oprelay normalize` on the offline input: CPU seconds and peak RSS in KiB, read from
/// `/proc` once its output is done and before it is reaped.
fn offline_normalize(file: &std::path::Path) -> (f64, u64) {
    use std::io::Read;
    let mut child = std::process::Command::new(oprelay_testkit::binary("oprelay"))
        .args(["normalize", "--account", "acme"])
        .arg(file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("oprelay normalize runs");
    let mut sink = [0u8; 1 << 16];
    let mut stdout = child.stdout.take().expect("stdout");
    let pid = child.id();
    let mut rss = 0;
    while stdout.read(&mut sink).map(|n| n > 0).unwrap_or(false) {
        rss = rss.max(peak_rss_kib(pid).unwrap_or(0));
    }
    // Output closed: wait for the exit, but read /proc while the process is a zombie.
    let stat = format!("/proc/{pid}/stat");
    while std::fs::read_to_string(&stat)
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu = cpu_seconds(pid);
    let _ = child.wait();
    (cpu, rss)
}
