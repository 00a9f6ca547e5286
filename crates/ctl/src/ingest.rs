//! `oprelay ingest`: files of 1Password events into `OP_RAW`, as pages, so they flow through
//! the normalizer and the forwarder to every sink like live events.
//!
//! A page's dedup id is a hash of its content, and the pages are cut the same way every run,
//! so ingesting a file again is dropped by JetStream (within the stream's duplicate window),
//! and the deterministic `p_row_id` makes an event the live pipeline already delivered land on
//! the same Elasticsearch document rather than a second one.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use oprelay_bus::{Bus, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Feed};
use oprelay_normalizer::event_files::{self, FoundEvent};

use crate::normalize::EXIT_REJECTED;

use oprelay_bus::Need;
use oprelay_service::config::Config;

use crate::args::{account_name, parse_feed};
use crate::connect::connect_to_write;

/// The cursor ingested pages carry, so a page in `OP_RAW` or the DLQ says where it came from.
pub const INGEST_CURSOR: &str = "oprelay-ingest";

pub struct Options {
    pub files: Vec<PathBuf>,
    pub account: AccountName,
    pub feed: Feed,
    /// Events per page at most (the API's own pages hold up to 1000).
    pub page_size: usize,
}

/// One page ready to publish.
struct RawPage {
    body: Vec<u8>,
    events: usize,
}

/// Cuts events into pages: at most `page_size` events and `max_body` bytes each.
struct Pager {
    page_size: usize,
    max_body: usize,
    body: Vec<u8>,
    events: usize,
}

impl Pager {
    fn head() -> Vec<u8> {
        format!("{{\"cursor\":\"{INGEST_CURSOR}\",\"has_more\":false,\"items\":[").into_bytes()
    }
    const TAIL: &'static [u8] = b"]}";

    fn new(page_size: usize, max_body: usize) -> Pager {
        Pager {
            page_size,
            max_body,
            body: Self::head(),
            events: 0,
        }
    }

    /// Adds an event; returns the page that was full before it, if any.
    fn push(&mut self, raw: &str) -> Option<RawPage> {
        let full = self.events > 0
            && (self.events >= self.page_size
                || self.body.len() + raw.len() + 1 + Self::TAIL.len() > self.max_body);
        let done = if full { self.finish() } else { None };
        if self.events > 0 {
            self.body.push(b',');
        }
        self.body.extend_from_slice(raw.trim().as_bytes());
        self.events += 1;
        done
    }

    fn finish(&mut self) -> Option<RawPage> {
        if self.events == 0 {
            return None;
        }
        let mut body = std::mem::replace(&mut self.body, Self::head());
        body.extend_from_slice(Self::TAIL);
        Some(RawPage {
            body,
            events: std::mem::take(&mut self.events),
        })
    }
}

/// The dedup id: the account, the feed and a hash of the page, so the same page from the same
/// file is the same message however often it is ingested.
fn page_id(account: &AccountName, feed: Feed, body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("ingest:{account}:{feed}:{}", hex::encode(&digest[..16]))
}

#[derive(Default)]
struct Totals {
    events_read: u64,
    rejected: u64,
    pages_new: u64,
    events_new: u64,
    pages_duplicate: u64,
    events_duplicate: u64,
}

impl Totals {
    /// Counts a published page: new, or one JetStream already had.
    fn count(&mut self, duplicate: bool, events: u64) {
        if duplicate {
            self.pages_duplicate += 1;
            self.events_duplicate += events;
        } else {
            self.pages_new += 1;
            self.events_new += events;
        }
    }
}

/// Publishes the files' events as pages, reading on a blocking thread ahead of the acks.
pub async fn run(bus: &Bus, opts: Options) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let bar = progress_bar(&opts.files)?;

    // Reading and paging is synchronous work: a blocking thread feeds pages to the publisher
    // here through a small channel, so reading runs ahead of the acks but not unboundedly.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RawPage>(4);
    let read_so_far = Arc::new(AtomicU64::new(0));
    let reader = {
        let read_so_far = read_so_far.clone();
        let files = opts.files.clone();
        let feed = opts.feed;
        let page_size = opts.page_size.max(1);
        let max_body = bus.max_body();
        let bar = bar.clone();
        tokio::task::spawn_blocking(move || {
            read_pages(files, feed, page_size, max_body, bar, tx, &read_so_far)
        })
    };

    let mut totals = Totals::default();
    let subject = names::raw_subject(&opts.account, opts.feed);
    while let Some(page) = rx.recv().await {
        let duplicate = publish_page(bus, &opts, &subject, page.body).await?;
        totals.count(duplicate, page.events as u64);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        let done = totals.events_new + totals.events_duplicate;
        bar.set_message(format!(
            "{} events read, {done} published ({} new), {:.0}/s",
            read_so_far.load(Ordering::Relaxed),
            totals.events_new,
            done as f64 / secs
        ));
    }
    let rejected = reader.await.context("the file reader stopped")??;
    totals.events_read = read_so_far.load(Ordering::Relaxed);
    totals.rejected = rejected;
    bar.finish_and_clear();

    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingested {} event(s) from {} file(s) into {subject} in {secs:.1} s: {} page(s) with {} new event(s) published, {} page(s) with {} event(s) already in OP_RAW (not published again), {} line(s) rejected",
        totals.events_read,
        opts.files.len(),
        totals.pages_new,
        totals.events_new,
        totals.pages_duplicate,
        totals.events_duplicate,
        totals.rejected,
    );
    Ok(if totals.rejected > 0 {
        ExitCode::from(EXIT_REJECTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// A progress bar over the bytes of every input file.
fn progress_bar(files: &[PathBuf]) -> anyhow::Result<ProgressBar> {
    let mut total_bytes = 0u64;
    for f in files {
        total_bytes += std::fs::metadata(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .len();
    }
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

/// Publishes one page to `OP_RAW` as the fetcher would; whether JetStream already had it.
async fn publish_page(
    bus: &Bus,
    opts: &Options,
    subject: &str,
    body: Vec<u8>,
) -> anyhow::Result<bool> {
    let id = page_id(&opts.account, opts.feed, &body);
    let msg = Outgoing::new(subject, id, body)
        .header(header::ACCOUNT, &opts.account)
        .header(header::FEED, opts.feed)
        .header(header::SCHEMA, names::schema::RAW_PAGE)
        .header(
            header::FETCHED_AT,
            OffsetDateTime::now_utc()
                .format(&Rfc3339)
                .unwrap_or_default(),
        );
    let ack = bus
        .publish(msg)
        .await
        .with_context(|| format!("publishing to {subject}"))?;
    Ok(ack.duplicate)
}

/// Reads every file in order and sends its pages, counting events into `read_so_far`;
/// returns how many values were rejected.
fn read_pages(
    files: Vec<PathBuf>,
    feed: Feed,
    page_size: usize,
    max_body: usize,
    bar: ProgressBar,
    tx: tokio::sync::mpsc::Sender<RawPage>,
    read_so_far: &AtomicU64,
) -> anyhow::Result<u64> {
    let mut pager = Pager::new(page_size, max_body);
    let mut rejected = 0u64;
    let send = |page: RawPage| {
        tx.blocking_send(page)
            .map_err(|_| std::io::Error::other("the publisher stopped"))
    };
    for path in &files {
        let name = path.display().to_string();
        let file = File::open(path).with_context(|| format!("cannot read {name}"))?;
        let input = BufReader::with_capacity(1 << 20, bar.wrap_read(file));
        event_files::for_each_value(input, |value| {
            let text = match value.text {
                Ok(t) => t,
                Err(e) => {
                    rejected += 1;
                    bar.suspend(|| eprintln!("{name}:{}: rejected: {e}", value.line));
                    return Ok(());
                }
            };
            let mut events: Vec<FoundEvent<'_>> = Vec::with_capacity(1);
            if let Err(e) = event_files::events_in(text, Some(feed), &mut events) {
                rejected += 1;
                bar.suspend(|| eprintln!("{name}:{}: rejected: {e}", value.line));
                return Ok(());
            }
            read_so_far.fetch_add(events.len() as u64, Ordering::Relaxed);
            for e in &events {
                if let Some(page) = pager.push(&e.raw) {
                    send(page)?;
                }
            }
            Ok(())
        })
        .with_context(|| format!("reading {name}"))?;
    }
    if let Some(page) = pager.finish() {
        send(page)?;
    }
    Ok(rejected)
}

/// `oprelay ingest`: its arguments.
#[derive(clap::Args)]
pub struct IngestArgs {
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long)]
    pub account: String,
    #[arg(long, value_parser = parse_feed)]
    pub feed: Feed,
    /// Events per page (the Events API's own pages hold up to 1000).
    #[arg(long, default_value_t = 1000)]
    pub page_size: usize,
}

/// Runs `oprelay ingest` once `OP_RAW` is known to exist.
pub async fn command(args: IngestArgs, cfg: &Config) -> anyhow::Result<ExitCode> {
    let account = account_name(&args.account)?;
    let bus = connect_to_write(cfg, &[Need::Stream(names::STREAM_RAW)]).await?;
    let opts = Options {
        files: args.files,
        account,
        feed: args.feed,
        page_size: args.page_size,
    };
    run(&bus, opts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(page: &RawPage) -> Vec<String> {
        let p: oprelay_events::Page<Box<serde_json::value::RawValue>> =
            serde_json::from_slice(&page.body).expect("a valid page");
        assert_eq!(p.cursor, INGEST_CURSOR);
        p.items.iter().map(|i| i.get().to_owned()).collect()
    }

    #[test]
    fn pages_hold_at_most_page_size_events_and_max_body_bytes() {
        let events: Vec<String> = (0..25)
            .map(|i| format!(r#"{{"uuid":"E{i}","pad":"{}"}}"#, "x".repeat(i * 10)))
            .collect();
        let mut pager = Pager::new(10, 700);
        let mut pages = Vec::new();
        for e in &events {
            pages.extend(pager.push(e));
        }
        pages.extend(pager.finish());
        let mut seen = Vec::new();
        for p in &pages {
            assert!(p.events <= 10);
            assert!(p.body.len() <= 700, "{} bytes", p.body.len());
            let got = items(p);
            assert_eq!(got.len(), p.events);
            seen.extend(got);
        }
        assert_eq!(seen, events, "every event once, in order, byte for byte");
        assert!(pages.len() > 3, "the byte limit cut pages too");
    }

    #[test]
    fn the_same_page_gets_the_same_id() {
        let a = AccountName::new("acme").unwrap();
        let id1 = page_id(&a, Feed::ItemUsages, b"{}");
        assert_eq!(id1, page_id(&a, Feed::ItemUsages, b"{}"));
        assert_ne!(id1, page_id(&a, Feed::AuditEvents, b"{}"));
        assert_ne!(id1, page_id(&a, Feed::ItemUsages, b"{ }"));
    }
}
