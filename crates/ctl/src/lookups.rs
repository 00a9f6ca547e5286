//! `oprelay lookups …`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use futures::StreamExt;

use oprelay_bus::{Bus, JsonKv};
use oprelay_events::{names, LookupKind, LookupRow};
use oprelay_normalizer::lookup_files::{self, ParsedFile};

use clap::Subcommand;
use oprelay_bus::Need;
use oprelay_service::config::Config;

use crate::args::parse_kind;
use crate::connect::{connect_read_only, connect_to_write};
use crate::output::{json, table, Output};

/// Parses every file first: one bad file stops the import before anything is written.
pub fn parse_files(
    files: &[PathBuf],
    kind: Option<LookupKind>,
) -> anyhow::Result<Vec<(PathBuf, ParsedFile)>> {
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let parsed = lookup_files::parse(&text, kind)
            .with_context(|| format!("{}: nothing imported", path.display()))?;
        out.push((path.clone(), parsed));
    }
    Ok(out)
}

fn summary(counts: &std::collections::BTreeMap<LookupKind, usize>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the rows (imported rows replace observed ones); `None` is a dry run.
pub async fn import(bus: Option<&Bus>, files: &[(PathBuf, ParsedFile)]) -> anyhow::Result<()> {
    let kv = match bus {
        Some(bus) => Some(JsonKv::open(bus, names::BUCKET_LOOKUPS).await?),
        None => None,
    };
    let mut total = std::collections::BTreeMap::new();
    for (path, parsed) in files {
        let counts = parsed.counts();
        println!(
            "{}: {} — {}",
            path.display(),
            parsed.format,
            summary(&counts)
        );
        for (k, n) in counts {
            *total.entry(k).or_insert(0) += n;
        }
        if let Some(kv) = &kv {
            for row in &parsed.rows {
                kv.put(&row.key(), row)
                    .await
                    .with_context(|| format!("writing {}", row.key()))?;
            }
        }
    }
    let verb = if kv.is_some() {
        "imported"
    } else {
        "valid (dry run, nothing written)"
    };
    println!("{verb}: {}", summary(&total));
    Ok(())
}

pub async fn all_rows(bus: &Bus) -> anyhow::Result<Vec<LookupRow>> {
    use oprelay_bus::async_nats::jetstream::kv::Operation;
    let kv = JsonKv::open(bus, names::BUCKET_LOOKUPS).await?;
    let status = kv.store().status().await.context("reading OP_LOOKUPS")?;
    let mut rows = Vec::new();
    if status.info.state.messages == 0 {
        return Ok(rows);
    }
    // One watch delivers the bucket's current values in a single stream (the last is marked
    // by delta 0), instead of one request per key: 100 000 rows in seconds, not minutes.
    let mut watch = kv
        .store()
        .watch_with_history(">")
        .await
        .context("reading OP_LOOKUPS")?;
    let mut latest = std::collections::HashMap::new();
    while let Some(entry) = watch.next().await {
        let entry = entry.context("reading OP_LOOKUPS")?;
        let last = entry.delta == 0;
        match entry.operation {
            // As the normalizer does: a row that is not valid is skipped, and said.
            Operation::Put => match serde_json::from_slice::<LookupRow>(&entry.value) {
                Ok(row) => {
                    latest.insert(entry.key, row);
                }
                Err(e) => eprintln!(
                    "oprelay: skipping OP_LOOKUPS {}: not a lookup row: {e}",
                    entry.key
                ),
            },
            _ => {
                latest.remove(&entry.key);
            }
        }
        if last {
            break;
        }
    }
    rows.extend(latest.into_values());
    rows.sort_by(|a, b| (a.kind, &a.title).cmp(&(b.kind, &b.title)));
    Ok(rows)
}

fn print_rows(rows: &[LookupRow], output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        print!("{}", json(&rows)?);
        return Ok(());
    }
    print!(
        "{}",
        table(
            ["KIND", "UUID", "SOURCE", "TITLE", "EMAIL"],
            rows.iter().map(|r| {
                let source = serde_json::to_value(r.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                [
                    r.kind.to_string(),
                    r.uuid.clone(),
                    source,
                    r.title.clone(),
                    r.email.clone().unwrap_or_else(|| "-".into()),
                ]
            }),
        )
    );
    Ok(())
}

pub async fn list(bus: &Bus, kind: Option<LookupKind>, output: Output) -> anyhow::Result<()> {
    let rows: Vec<LookupRow> = all_rows(bus)
        .await?
        .into_iter()
        .filter(|r| kind.is_none_or(|k| r.kind == k))
        .collect();
    print_rows(&rows, output)?;
    if output == Output::Text {
        println!("{} row(s)", rows.len());
    }
    Ok(())
}

/// Exit code 1 when no row names the UUID (an empty array with `--output json`).
pub async fn get(bus: &Bus, uuid: &str, output: Output) -> anyhow::Result<ExitCode> {
    let kv = JsonKv::open(bus, names::BUCKET_LOOKUPS).await?;
    let mut rows = Vec::new();
    for kind in LookupKind::ALL {
        if let Some(v) = kv.get::<LookupRow>(&format!("{kind}.{uuid}")).await? {
            rows.push(v.value);
        }
    }
    if rows.is_empty() {
        eprintln!("no lookup row for {uuid}");
        if output == Output::Json {
            print!("{}", json(&rows)?);
        }
        return Ok(ExitCode::from(1));
    }
    print_rows(&rows, output)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum LookupsCommand {
    /// Import `op item|vault|user|group list --format json` output, or Panther-style CSV / JSON
    /// Lines (`uuid,title[,updatedAt]`). Every file is validated before anything is written.
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// What the rows name, when the format cannot tell (CSV and JSON Lines default to item).
        #[arg(long, value_parser = parse_kind)]
        kind: Option<LookupKind>,
        /// Validate and report, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every row, or those of one kind.
    List {
        #[arg(long, value_parser = parse_kind)]
        kind: Option<LookupKind>,
    },
    /// The rows for one UUID.
    Get { uuid: String },
}

/// Runs one `oprelay lookups …` command.
pub async fn command(
    cmd: LookupsCommand,
    cfg: &Config,
    output: Output,
) -> anyhow::Result<ExitCode> {
    match cmd {
        LookupsCommand::Import {
            files,
            kind,
            dry_run,
        } => {
            let parsed = parse_files(&files, kind)?;
            let bus = if dry_run {
                None
            } else {
                Some(connect_to_write(cfg, &[Need::Bucket(names::BUCKET_LOOKUPS)]).await?)
            };
            import(bus.as_ref(), &parsed).await?;
            Ok(ExitCode::SUCCESS)
        }
        LookupsCommand::List { kind } => {
            list(&connect_read_only(cfg).await?, kind, output).await?;
            Ok(ExitCode::SUCCESS)
        }
        LookupsCommand::Get { uuid } => get(&connect_read_only(cfg).await?, &uuid, output).await,
    }
}
