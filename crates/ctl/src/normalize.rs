//! `oprelay normalize`: files of 1Password events in, the pipeline's records out, through the
//! normalizer service's own code (`normalize_record`), so a migrated or re-processed event is
//! byte for byte what the live pipeline would have published.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use time::OffsetDateTime;

use oprelay_events::{Feed, LookupRow};
use oprelay_format as format;
use oprelay_normalizer::event_files::{self, FoundEvent};
use oprelay_normalizer::lookup::LookupIndex;
use oprelay_normalizer::normalize::{normalize_record, PageContext, RejectReason, Source};
use oprelay_service::config::OutputFormat;

use oprelay_events::LookupKind;
use oprelay_service::config::Config;

use crate::args::{parse_feed, parse_format, parse_kind};
use crate::connect::connect_read_only;

/// Exit code when every input was read but some records were rejected.
pub const EXIT_REJECTED: u8 = 3;

/// Rejects reported in full on stderr; after that they are only counted (and still written to
/// `--rejects`), so a file of a million bad lines does not bury the summary.
const STDERR_REJECT_LIMIT: usize = 1000;

/// Output is flushed in chunks of about this size.
const FLUSH_AT: usize = 1 << 20;

pub struct Options {
    pub files: Vec<PathBuf>,
    pub feed: Option<Feed>,
    pub source: Source,
    pub account: String,
    pub format: OutputFormat,
    pub rejects: Option<PathBuf>,
}

#[derive(Default)]
struct Counts {
    per_feed: [u64; 3],
    rejected: u64,
}

struct Rejects {
    file: Option<BufWriter<File>>,
    path: Option<PathBuf>,
    reported: usize,
}

impl Rejects {
    fn record(&mut self, input: &str, line: usize, reason: &str, text: &[u8]) -> io::Result<()> {
        if self.reported < STDERR_REJECT_LIMIT {
            eprintln!("{input}:{line}: rejected: {reason}");
        } else if self.reported == STDERR_REJECT_LIMIT {
            eprintln!(
                "oprelay: more rejects follow; only counted from here{}",
                self.path
                    .as_ref()
                    .map(|p| format!(" (all are in {})", p.display()))
                    .unwrap_or_default()
            );
        }
        self.reported += 1;
        if let Some(f) = &mut self.file {
            // One line per reject, so the file can be fixed and fed back in.
            let text: Vec<u8> = text
                .iter()
                .copied()
                .filter(|b| *b != b'\n' && *b != b'\r')
                .collect();
            f.write_all(&text)?;
            f.write_all(b"\n")?;
        }
        Ok(())
    }
}

fn feed_slot(feed: Feed) -> usize {
    match feed {
        Feed::SignInAttempts => 0,
        Feed::ItemUsages => 1,
        Feed::AuditEvents => 2,
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

pub fn run(opts: Options, mut index: LookupIndex) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let parse_time = OffsetDateTime::now_utc();
    let contexts = Feed::ALL.map(|f| PageContext::new(f, &opts.source, parse_time));
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(FLUSH_AT, stdout.lock());
    let mut rejects = Rejects {
        file: match &opts.rejects {
            Some(p) => Some(BufWriter::new(
                File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            )),
            None => None,
        },
        path: opts.rejects.clone(),
        reported: 0,
    };
    let mut counts = Counts::default();
    let mut job = Job {
        contexts: &contexts,
        index: &mut index,
        feed: opts.feed,
        format: opts.format,
        account: &opts.account,
        records: Vec::with_capacity(FLUSH_AT + 64 * 1024),
        learned: Vec::new(),
        matches: [0; 3],
    };

    let inputs: Vec<Option<&Path>> = if opts.files.is_empty() {
        vec![None]
    } else {
        opts.files.iter().map(|p| Some(p.as_path())).collect()
    };
    for input in inputs {
        let name = input.map_or("<stdin>".to_owned(), |p| p.display().to_string());
        let reader: Box<dyn BufRead> = match input {
            Some(p) => Box::new(BufReader::with_capacity(
                1 << 20,
                File::open(p).with_context(|| format!("cannot read {}", p.display()))?,
            )),
            None => Box::new(BufReader::with_capacity(1 << 20, io::stdin())),
        };
        event_files::for_each_value(reader, |value| {
            job.value(value, &name, &mut counts, &mut rejects, &mut out)
        })
        .with_context(|| format!("reading {name}"))?;
    }
    out.write_all(&job.records)
        .and_then(|()| out.flush())
        .context("writing to stdout")?;
    if let Some(f) = &mut rejects.file {
        f.flush().context("writing the rejects file")?;
    }

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

enum Failed {
    Normalize(RejectReason),
    Render(oprelay_format::RenderError),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Normalize(r) => r.fmt(f),
            Failed::Render(e) => write!(f, "cannot render the record: {e}"),
        }
    }
}

struct Job<'c, 's> {
    contexts: &'c [PageContext<'s>; 3],
    index: &'c mut LookupIndex,
    feed: Option<Feed>,
    format: OutputFormat,
    account: &'c str,
    /// Normalized records not yet written.
    records: Vec<u8>,
    learned: Vec<LookupRow>,
    matches: [usize; 3],
}

impl Job<'_, '_> {
    fn value(
        &mut self,
        value: event_files::InputValue<'_>,
        input: &str,
        counts: &mut Counts,
        rejects: &mut Rejects,
        out: &mut impl Write,
    ) -> io::Result<()> {
        let text = match value.text {
            Ok(t) => t,
            Err(e) => {
                counts.rejected += 1;
                return rejects.record(input, value.line, &e.to_string(), value.raw);
            }
        };
        // With --feed, a line that is the API item itself (the common case, and the one
        // worth being fast for) goes straight to the normalizer: one parse, not two. Anything
        // without a uuid at the top (a page, a Splunk or Elastic wrapper) is unwrapped below.
        if let Some(feed) = self.feed {
            let mark = self.records.len();
            match self.normalize(text, feed) {
                Ok(()) => {
                    counts.per_feed[feed_slot(feed)] += 1;
                    return self.flush_if_full(out);
                }
                Err(Failed::Normalize(RejectReason::NoUuid | RejectReason::NotAnObject)) => {
                    self.records.truncate(mark)
                }
                Err(reason) => {
                    self.records.truncate(mark);
                    counts.rejected += 1;
                    return rejects.record(input, value.line, &reason.to_string(), text.as_bytes());
                }
            }
        }
        let mut events: Vec<FoundEvent<'_>> = Vec::with_capacity(1);
        if let Err(e) = event_files::events_in(text, self.feed, &mut events) {
            counts.rejected += 1;
            return rejects.record(input, value.line, &e.to_string(), text.as_bytes());
        }
        for event in &events {
            let mark = self.records.len();
            match self.normalize(&event.raw, event.feed) {
                Ok(()) => counts.per_feed[feed_slot(event.feed)] += 1,
                Err(reason) => {
                    self.records.truncate(mark);
                    counts.rejected += 1;
                    rejects.record(input, value.line, &reason.to_string(), event.raw.as_bytes())?;
                }
            }
        }
        self.flush_if_full(out)
    }

    /// Normalizes one API item onto `records` (in the output format); on error `records` may
    /// hold part of it, which the caller truncates.
    fn normalize(&mut self, raw: &str, feed: Feed) -> Result<(), Failed> {
        let mark = self.records.len();
        normalize_record(
            raw,
            &self.contexts[feed_slot(feed)],
            self.index,
            &mut self.records,
            &mut self.learned,
            &mut self.matches,
        )
        .map_err(Failed::Normalize)?;
        // Learned users are in the index now; the service also persists them to OP_LOOKUPS,
        // a file run writes nothing to the bus.
        self.learned.clear();
        if self.format != OutputFormat::Panther {
            let mut line = self.records.split_off(mark);
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let rec = format::render(line.into(), self.format, self.account, feed)
                .map_err(Failed::Render)?;
            self.records.extend_from_slice(&rec.body);
            self.records.push(b'\n');
        }
        Ok(())
    }

    fn flush_if_full(&mut self, out: &mut impl Write) -> io::Result<()> {
        if self.records.len() >= FLUSH_AT {
            out.write_all(&self.records)?;
            self.records.clear();
        }
        Ok(())
    }
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
    };
    tokio::task::spawn_blocking(move || run(opts, index)).await?
}
