//! The normalizer's hot path: page bytes in → NDJSON bytes out, enriched from a 100 000-row
//! lookup table, against the floor of `serde_json` parsing the same page to `Value` and
//! writing it back. Also the memory the 100 000-row index takes, counted by the allocator.
//! Run with `just bench-normalizer` (or `cargo bench -p oprelay-normalizer --bench normalize`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use oprelay_events::{Feed, LookupKind, LookupRow, LookupSource};
use oprelay_normalizer::lookup::LookupIndex;
use oprelay_normalizer::normalize::{normalize_page, Source};

/// Counts live heap bytes so the index's footprint is measured, not estimated.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rate(label: &str, events_per_iter: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let start = Instant::now();
    let mut iters = 0usize;
    while start.elapsed() < Duration::from_secs(3) {
        f();
        iters += 1;
    }
    let per_sec = (iters * events_per_iter) as f64 / start.elapsed().as_secs_f64();
    println!("{label:<58} {per_sec:>12.0} events/s");
    per_sec
}

fn main() {
    let sim = opsim::Sim::new(opsim::SimConfig {
        backfill: 1_000,
        ..Default::default()
    });
    let dir = sim.directory();
    let items: Vec<serde_json::Value> =
        (0..1_000).map(|i| sim.event(Feed::ItemUsages, i)).collect();
    let page =
        serde_json::to_vec(&serde_json::json!({"cursor": "c", "has_more": true, "items": items}))
            .unwrap();

    let before = LIVE.load(Ordering::Relaxed);
    let mut index = LookupIndex::new();
    // 100 000 rows: the simulated account's real items, vaults and users (so events match),
    // padded with other items, as a large company's `op item list` would be.
    for it in &dir.items {
        index.upsert(LookupRow {
            uuid: it.uuid.clone(),
            kind: LookupKind::Item,
            title: it.title.clone(),
            email: None,
            updated_at: Some(it.updated_at.clone()),
            source: LookupSource::Imported,
        });
    }
    for v in &dir.vaults {
        index.upsert(LookupRow {
            uuid: v.uuid.clone(),
            kind: LookupKind::Vault,
            title: v.name.clone(),
            email: None,
            updated_at: None,
            source: LookupSource::Imported,
        });
    }
    for u in &dir.users {
        index.upsert(LookupRow {
            uuid: u.uuid.clone(),
            kind: LookupKind::User,
            title: u.name.clone(),
            email: Some(u.email.clone()),
            updated_at: None,
            source: LookupSource::Imported,
        });
    }
    let mut n = 0;
    while index.len() < 100_000 {
        index.upsert(LookupRow {
            uuid: format!("{n:026x}"),
            kind: LookupKind::Item,
            title: format!("Padding item #{n} in the Engineering vault"),
            email: None,
            updated_at: Some("2026-01-01T00:00:00Z".into()),
            source: LookupSource::Imported,
        });
        n += 1;
    }
    let index_bytes = LIVE.load(Ordering::Relaxed) - before;

    let source = Source::for_account("bench", None, Some("Bench 1Password"));
    let now = time::OffsetDateTime::now_utc();
    let events = 1_000;
    println!(
        "page: {events} item usages, {} bytes; lookup index: {} rows",
        page.len(),
        index.len()
    );
    let hot = rate(
        "oprelay normalize (parse, enrich, NDJSON out)",
        events,
        || {
            let out = normalize_page(black_box(&page), Feed::ItemUsages, &source, &mut index, now);
            assert_eq!(out.count, events);
            black_box(out.ndjson);
        },
    );
    let floor = rate(
        "floor: serde_json bytes → Value → bytes",
        events,
        || {
            let v: serde_json::Value = serde_json::from_slice(black_box(&page)).unwrap();
            black_box(serde_json::to_vec(&v).unwrap());
        },
    );
    println!(
        "ratio: oprelay takes {:.2}× the floor's time (target ≤ 2×); target ≥ 200 000 events/s",
        floor / hot
    );
    println!(
        "lookup index, 100 000 rows: {:.1} MiB (target < 50 MiB)",
        index_bytes as f64 / (1 << 20) as f64
    );
}
