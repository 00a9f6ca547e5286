//! `oprelay normalize`: files of 1Password events in, the pipeline's records out, through the
//! normalizer service's own code (`normalize_record`), so a migrated or re-processed event is
//! byte for byte what the live pipeline would have published.
//!
//! Three kinds of thread: one reads the inputs into chunks (`chunks`), workers normalize
//! chunks side by side (`work`), and this one writes them in input order (`commit`), which
//! is also where the lookup rows learned by a chunk become visible to the ones after it.

mod chunks;
mod commit;
mod rejects;
#[cfg(test)]
mod tests;
mod work;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use anyhow::Context;
use time::OffsetDateTime;

use oprelay_events::{Feed, LookupKind, LookupRow};
use oprelay_normalizer::lookup::{Layered, LookupIndex};
use oprelay_normalizer::normalize::{PageContext, Source};
use oprelay_service::config::{Config, OutputFormat};

use crate::args::{parse_feed, parse_format, parse_kind};
use crate::connect::connect_read_only;
use chunks::{Chunk, Chunker, CHUNK_BYTES};
use commit::{Committer, Counts, Shared};
use rejects::Rejects;
use work::{normalize_chunk, Normalized, Setup};

/// Exit code when every input was read but some records were rejected.
pub const EXIT_REJECTED: u8 = 3;

/// Output is written through a buffer of this size.
const FLUSH_AT: usize = 1 << 20;

/// Chunks in flight (being read, normalized or waiting for their turn) per worker: enough
/// that a worker never waits for the reader, few enough that memory stays a few MiB.
const IN_FLIGHT_PER_WORKER: usize = 4;

pub struct Options {
    pub files: Vec<PathBuf>,
    pub feed: Option<Feed>,
    pub source: Source,
    pub account: String,
    pub format: OutputFormat,
    pub rejects: Option<PathBuf>,
    /// `p_parse_time` of every record.
    pub parse_time: OffsetDateTime,
    /// Threads that normalize (at least one).
    pub workers: usize,
    /// About how much input each of them takes at a time.
    pub chunk_bytes: usize,
}

impl Options {
    /// One worker per core the process may use.
    pub fn workers_for_this_machine() -> usize {
        thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Builds the lookup index from imported rows, as the service's index holds them.
pub fn index_of(rows: impl IntoIterator<Item = LookupRow>) -> LookupIndex {
    let mut index = LookupIndex::new();
    for row in rows {
        index.upsert(row);
    }
    index
}

/// Normalizes every input to stdout and prints a summary to stderr.
pub fn run(opts: Options, imported: LookupIndex) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let stdout = io::stdout();
    let out = BufWriter::with_capacity(FLUSH_AT, stdout.lock());
    let counts = normalize(&opts, &imported, out)?;
    let total: u64 = counts.per_feed.iter().sum();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "oprelay normalize: {total} records ({} signin_attempts, {} item_usages, {} audit_events), {} rejected, in {secs:.2} s ({:.0} records/s)",
        counts.per_feed[0],
        counts.per_feed[1],
        counts.per_feed[2],
        counts.rejected,
        total as f64 / secs.max(1e-9),
    );
    Ok(if counts.rejected > 0 {
        ExitCode::from(EXIT_REJECTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Normalizes every input onto `out`, in input order, with `opts.workers` threads.
pub fn normalize(
    opts: &Options,
    imported: &LookupIndex,
    mut out: impl Write,
) -> anyhow::Result<Counts> {
    let setup = Setup {
        contexts: Feed::ALL.map(|f| PageContext::new(f, &opts.source, opts.parse_time)),
        feed: opts.feed,
        format: opts.format,
        account: opts.account.clone(),
    };
    let mut rejects = Rejects::create(opts.rejects.as_deref())?;
    let shared = Shared::default();
    let workers = opts.workers.max(1);
    let in_flight = workers * IN_FLIGHT_PER_WORKER;
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Chunk>(in_flight);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));
    let (done_tx, done_rx) = mpsc::channel::<Normalized>();
    let (slot_tx, slot_rx) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        slot_tx.send(()).context("starting the reader")?;
    }
    let (read, written, pending) = thread::scope(|s| {
        for _ in 0..workers {
            let (chunks, done) = (Arc::clone(&chunk_rx), done_tx.clone());
            let (setup, shared) = (&setup, &shared);
            s.spawn(move || work(setup, imported, shared, &chunks, &done));
        }
        drop((done_tx, chunk_rx));
        let reader = s.spawn(|| read_inputs(&opts.files, chunk_tx, slot_rx, opts.chunk_bytes));
        let mut committer = Committer::new(&setup, imported, &shared, &mut out, &mut rejects);
        let written = commit_all(&mut committer, done_rx, slot_tx);
        let pending = committer.pending();
        let counts = std::mem::take(&mut committer.counts);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the input reader stopped")));
        (read, written.map(|()| counts), pending)
    });
    read?;
    let counts = written.context("writing to stdout")?;
    anyhow::ensure!(
        pending == 0,
        "{pending} chunks of output were never written"
    );
    out.flush().context("writing to stdout")?;
    rejects.flush().context("writing the rejects file")?;
    Ok(counts)
}

/// A worker: chunks in, normalized chunks out, until the reader is done or the writer gone.
fn work(
    setup: &Setup<'_>,
    imported: &LookupIndex,
    shared: &Shared,
    chunks: &Mutex<Receiver<Chunk>>,
    done: &Sender<Normalized>,
) {
    loop {
        let next = chunks.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(chunk) = next else { return };
        let learned = shared.current();
        let below = [imported, &*learned.rows];
        let mut view = Layered::new(&below);
        if done
            .send(normalize_chunk(setup, chunk, learned.version, &mut view))
            .is_err()
        {
            return;
        }
    }
}

/// Writes normalized chunks as they come, giving the reader a slot back for each written.
fn commit_all<W: Write>(
    committer: &mut Committer<'_, '_, W>,
    done: Receiver<Normalized>,
    slots: SyncSender<()>,
) -> io::Result<()> {
    for normalized in done {
        for _ in 0..committer.take(normalized)? {
            // The reader may have finished; a slot nobody takes is fine.
            let _ = slots.send(());
        }
    }
    Ok(())
}

/// The reader: every input (stdin when none is named), in order, cut into chunks.
fn read_inputs(
    files: &[PathBuf],
    to_workers: SyncSender<Chunk>,
    slots: Receiver<()>,
    chunk_bytes: usize,
) -> anyhow::Result<()> {
    let mut chunker = Chunker {
        to_workers: &to_workers,
        slots: &slots,
        chunk_bytes,
        next_seq: 0,
    };
    if files.is_empty() {
        let stdin = BufReader::with_capacity(1 << 20, io::stdin());
        chunker
            .read("<stdin>".into(), stdin)
            .context("reading <stdin>")?;
        return Ok(());
    }
    for path in files {
        let name = path.display().to_string();
        let file = File::open(path).with_context(|| format!("cannot read {name}"))?;
        let reader = BufReader::with_capacity(1 << 20, file);
        if !chunker
            .read(name.as_str().into(), reader)
            .with_context(|| format!("reading {name}"))?
        {
            break;
        }
    }
    Ok(())
}

/// `oprelay normalize`: its arguments.
#[derive(clap::Args)]
pub struct NormalizeArgs {
    /// Input files; standard input when none.
    pub files: Vec<PathBuf>,
    /// The feed of every event; told from each event's fields when absent.
    #[arg(long, value_parser = parse_feed)]
    pub feed: Option<Feed>,
    /// The account the events belong to (sets p_source_id; its label and source_id come
    /// from the config's [[accounts]] when it is there).
    #[arg(long)]
    pub account: String,
    /// p_source_label, overriding the config.
    #[arg(long)]
    pub label: Option<String>,
    /// Lookup files to enrich from, in any format `oprelay lookups import` reads.
    #[arg(long, num_args = 1..)]
    pub lookups: Vec<PathBuf>,
    /// What the rows of CSV / JSON Lines lookup files name (default item).
    #[arg(long, value_parser = parse_kind)]
    pub lookups_kind: Option<LookupKind>,
    /// Also enrich from the live OP_LOOKUPS bucket.
    #[arg(long)]
    pub nats: bool,
    /// panther (the pipeline's record), raw (the original event) or ecs.
    #[arg(long, default_value = "panther", value_parser = parse_format)]
    pub format: OutputFormat,
    /// Write every rejected record (one per line) to this file.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
}

/// Runs `oprelay normalize`: builds the lookup index from the files (and the live bucket with
/// `--nats`), then normalizes on a blocking thread.
pub async fn command(args: NormalizeArgs, cfg: &Config) -> anyhow::Result<ExitCode> {
    let configured = cfg
        .accounts
        .iter()
        .find(|a| a.name.as_str() == args.account);
    let source = Source::for_account(
        &args.account,
        configured.and_then(|a| a.source_id.as_deref()),
        args.label.as_deref().or(configured.map(|a| a.label())),
    );
    let mut rows = Vec::new();
    for (_, parsed) in crate::lookups::parse_files(&args.lookups, args.lookups_kind)? {
        rows.extend(parsed.rows);
    }
    if args.nats {
        let bus = connect_read_only(cfg).await?;
        rows.extend(crate::lookups::all_rows(&bus).await?);
    }
    let index = index_of(rows);
    let opts = Options {
        files: args.files,
        feed: args.feed,
        source,
        account: args.account,
        format: args.format,
        rejects: args.rejects,
        parse_time: OffsetDateTime::now_utc(),
        workers: Options::workers_for_this_machine(),
        chunk_bytes: CHUNK_BYTES,
    };
    tokio::task::spawn_blocking(move || run(opts, index)).await?
}
