//! `oprelay normalize` as a whole process: 1 000 000 item-usage events and a 100 000-row
//! lookup file in, enriched records out (to /dev/null), timed from start to exit: reading the
//! lookup file, building the index, parsing, normalizing, writing. Run with `just bench-cli`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use oprelay_events::Feed;
use oprelay_testkit::binary;

const EVENTS: u64 = 1_000_000;
const LOOKUP_ROWS: usize = 100_000;

fn main() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_path_buf();
    let sim = opsim::Sim::new(opsim::SimConfig {
        backfill: EVENTS,
        ..Default::default()
    });
    let events = dir.join("item_usages.ndjson");
    {
        let mut w = BufWriter::new(File::create(&events).expect("events file"));
        for i in 0..EVENTS {
            serde_json::to_writer(&mut w, &sim.event(Feed::ItemUsages, i)).expect("write");
            w.write_all(b"\n").expect("write");
        }
        w.flush().expect("write");
    }
    // The account's real items (so events match), padded with more as a large company's
    // `op item list` is, plus its users.
    let directory = sim.directory();
    let mut items = directory.op_item_list();
    if let Some(list) = items.as_array_mut() {
        let vault = list.first().and_then(|i| i.get("vault")).cloned();
        let mut n = 0;
        while list.len() < LOOKUP_ROWS {
            list.push(serde_json::json!({
                "id": format!("{n:026x}"),
                "title": format!("Padding item #{n} in the Engineering vault"),
                "vault": vault,
                "updated_at": "2026-01-01T00:00:00Z",
            }));
            n += 1;
        }
    }
    let items_path = dir.join("items.json");
    std::fs::write(&items_path, serde_json::to_vec(&items).expect("json")).expect("write");
    let users_path = dir.join("users.json");
    std::fs::write(
        &users_path,
        serde_json::to_vec(&directory.op_user_list()).expect("json"),
    )
    .expect("write");
    let size = std::fs::metadata(&events).map(|m| m.len()).unwrap_or(0);
    println!(
        "input: {EVENTS} item usages ({:.0} MiB NDJSON), lookup files with {LOOKUP_ROWS} items plus users",
        size as f64 / (1 << 20) as f64
    );

    // OPRELAY_BENCH_KEEP=1 keeps the input files, to profile the same run.
    if std::env::var_os("OPRELAY_BENCH_KEEP").is_some() {
        println!("input kept in {}", tmp.keep().display());
    }
    let bin = binary("oprelay");
    for (label, extra) in [
        (
            "oprelay normalize --feed item_usages",
            &["--feed", "item_usages"][..],
        ),
        ("oprelay normalize (feed told from each event)", &[][..]),
        (
            "oprelay normalize --feed item_usages --format ecs",
            &["--feed", "item_usages", "--format", "ecs"][..],
        ),
    ] {
        let start = Instant::now();
        let out = Command::new(&bin)
            .arg("normalize")
            .arg(&events)
            .args(["--account", "bench"])
            .args(extra)
            .arg("--lookups")
            .arg(&items_path)
            .arg(&users_path)
            .env_remove("OPRELAY_CONFIG")
            .stdout(File::create("/dev/null").expect("/dev/null"))
            .stderr(Stdio::piped())
            .output()
            .expect("oprelay runs");
        let secs = start.elapsed().as_secs_f64();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{label} failed: {stderr}");
        assert!(
            stderr.contains(&format!("{EVENTS} records")),
            "every event normalized: {stderr}"
        );
        println!(
            "{label:<52} {:>9.0} events/s  ({secs:.2} s for the whole process)",
            EVENTS as f64 / secs
        );
    }
}
