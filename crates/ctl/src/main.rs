//! `oprelay`: the operator's command line.

mod check;
mod cursor;
mod dlq;
mod ingest;
mod lookups;
mod normalize;
mod output;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use oprelay_bus::{Action, Bus, Mode, Need};
use oprelay_events::{names, AccountName, Feed, LookupKind};
use oprelay_normalizer::normalize::Source;
use oprelay_service::config::{self, Config, OutputFormat};

#[derive(Parser)]
#[command(name = "oprelay", version = oprelay_service::build_info::LONG_VERSION, about = "Operate an oprelay pipeline")]
struct Cli {
    /// The oprelay config (for the NATS connection); defaults plus `OPRELAY_…` without it.
    #[arg(long, env = "OPRELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// NATS URL, overriding the config.
    #[arg(long, env = "OPRELAY_NATS_URL", global = true)]
    nats_url: Option<String>,
    /// How read commands (status, dlq list/show, lookups list/get, cursor show) print:
    /// tables, or JSON for scripts.
    #[arg(long, short, value_enum, default_value_t, global = true)]
    output: output::Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// UUID → name lookup tables used for enrichment.
    #[command(subcommand)]
    Lookups(LookupsCommand),
    /// Records a stage could not process.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The NATS side: streams, buckets, consumers and who may use them.
    #[command(subcommand)]
    Nats(NatsCommand),
    /// Where a feed's next Events API request starts, and moving it.
    #[command(subcommand)]
    Cursor(CursorCommand),
    /// Print a shell completion script: `oprelay completions bash > /etc/bash_completion.d/oprelay`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Per account and feed: cursor age, last poll, last event, events in the last hour,
    /// failures; sink backlogs; open alarms.
    Status {
        /// Refresh every 2 seconds until Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// Normalize files of 1Password events (NDJSON events or API pages, a whole JSON
    /// document, eventsapibeat/Elastic `event.original`, Splunk `_raw`) with the normalizer's
    /// own code; records to stdout. Exit code 3 when some input was rejected.
    Normalize {
        /// Input files; standard input when none.
        files: Vec<PathBuf>,
        /// The feed of every event; told from each event's fields when absent.
        #[arg(long, value_parser = parse_feed)]
        feed: Option<Feed>,
        /// The account the events belong to (sets p_source_id; its label and source_id come
        /// from the config's [[accounts]] when it is there).
        #[arg(long)]
        account: String,
        /// p_source_label, overriding the config.
        #[arg(long)]
        label: Option<String>,
        /// Lookup files to enrich from, in any format `oprelay lookups import` reads.
        #[arg(long, num_args = 1..)]
        lookups: Vec<PathBuf>,
        /// What the rows of CSV / JSON Lines lookup files name (default item).
        #[arg(long, value_parser = parse_kind)]
        lookups_kind: Option<LookupKind>,
        /// Also enrich from the live OP_LOOKUPS bucket.
        #[arg(long)]
        nats: bool,
        /// panther (the pipeline's record), raw (the original event) or ecs.
        #[arg(long, default_value = "panther", value_parser = parse_format)]
        format: OutputFormat,
        /// Write every rejected record (one per line) to this file.
        #[arg(long)]
        rejects: Option<PathBuf>,
    },
    /// Publish files of 1Password events into OP_RAW as pages, to flow through the pipeline
    /// like live events. Ingesting the same file again publishes nothing new.
    Ingest {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        account: String,
        #[arg(long, value_parser = parse_feed)]
        feed: Feed,
        /// Events per page (the Events API's own pages hold up to 1000).
        #[arg(long, default_value_t = 1000)]
        page_size: usize,
    },
}

#[derive(Subcommand)]
enum LookupsCommand {
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

#[derive(Subcommand)]
enum DlqCommand {
    /// Dead letters, oldest first.
    List {
        /// Only this stage: fetch, normalize or forward.
        #[arg(long)]
        stage: Option<String>,
        /// Only letters this sink refused (forward stage).
        #[arg(long)]
        sink: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter with its headers and body.
    Show { seq: u64 },
    /// Send dead letters back after a fix, and remove them from the DLQ: a normalize-stage
    /// letter through the normalizer, a forward-stage letter to the one sink that refused it.
    Replay {
        /// Sequence numbers from `oprelay dlq list`.
        seqs: Vec<u64>,
        /// Every replayable dead letter (of `--stage` and `--sink`, when given).
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
        /// With --all: only this stage (normalize or forward).
        #[arg(long, requires = "all")]
        stage: Option<String>,
        /// With --all: only letters this sink refused.
        #[arg(long, requires = "all")]
        sink: Option<String>,
        /// Keep them in the DLQ after replaying.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum NatsCommand {
    /// Create and update every stream, bucket and consumer this config needs. Changes that
    /// would delete data (shorter retention, smaller size limits) are held back and listed.
    /// Exit code 2 when something was held back.
    Provision {
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also apply shorter retention and smaller limits (deletes what falls outside them).
        #[arg(long, conflicts_with = "dry_run")]
        shrink_retention: bool,
    },
    /// Print nats-server's `authorization` block: one user per service, an operator and a
    /// read-only subscriber, each with only the subjects it needs (for this config's sinks).
    /// Passwords are read by nats-server from the environment variables it names.
    Authorization,
}

#[derive(Subcommand)]
enum CursorCommand {
    /// The stored cursor (or pending reset), its counters and the replica polling the feed.
    Show {
        #[arg(long)]
        account: String,
        #[arg(long, value_parser = parse_feed)]
        feed: Feed,
    },
    /// Move the feed: the fetcher's next request starts from `--to TIME`, or, with
    /// `--to-start`, from its configured start_time as for a new feed. Events fetched again
    /// are deduplicated by NATS where the pages match; idempotent sinks absorb the rest.
    #[command(group(clap::ArgGroup::new("target").required(true)))]
    Reset {
        #[arg(long)]
        account: String,
        #[arg(long, value_parser = parse_feed)]
        feed: Feed,
        /// RFC 3339, e.g. 2026-12-01T00:00:00Z.
        #[arg(long, value_parser = cursor::parse_time, group = "target")]
        to: Option<time::OffsetDateTime>,
        /// Forget the cursor; the fetcher starts the feed as a new one.
        #[arg(long, group = "target")]
        to_start: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the config the way every service does, and look for every file it
    /// names; every problem is listed. Exit code 1 when there is one.
    Check {
        /// Also connect: NATS (and whether the topology is provisioned), each account's token
        /// (introspected at the Events API), each sink (reached without delivering anything).
        #[arg(long)]
        online: bool,
    },
}

fn parse_kind(s: &str) -> Result<LookupKind, String> {
    LookupKind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("`{s}` is not item, vault, user or group"))
}

fn parse_feed(s: &str) -> Result<Feed, String> {
    Feed::ALL
        .into_iter()
        .find(|f| f.as_str() == s)
        .ok_or_else(|| format!("`{s}` is not signin_attempts, item_usages or audit_events"))
}

fn parse_format(s: &str) -> Result<OutputFormat, String> {
    match s {
        "panther" => Ok(OutputFormat::Panther),
        "raw" => Ok(OutputFormat::Raw),
        "ecs" => Ok(OutputFormat::Ecs),
        _ => Err(format!("`{s}` is not panther, raw or ecs")),
    }
}

fn account_name(name: &str) -> anyhow::Result<AccountName> {
    AccountName::new(name).map_err(|e| anyhow::anyhow!("--account {name:?}: {e}"))
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = config::load(cli.config.as_deref())?;
    if let Some(url) = &cli.nats_url {
        cfg.nats.url = url.clone();
    }
    Ok(cfg)
}

/// Connects for a command that writes (import, ingest, replay), after checking that what it
/// writes into exists: a publish into a missing stream would only say "no responders".
async fn connect_to_write(cfg: &Config, needs: &[Need]) -> anyhow::Result<Bus> {
    let bus = connect_read_only(cfg).await?;
    bus.check(&cfg.topology(), needs).await?;
    Ok(bus)
}

/// `oprelay nats provision`: prints one line per stream, bucket and consumer.
async fn provision(cfg: &Config, mode: Mode) -> anyhow::Result<ExitCode> {
    let bus = connect_read_only(cfg).await?;
    let steps = oprelay_bus::provision(bus.jetstream(), &cfg.topology(), mode)
        .await
        .context("provisioning the NATS topology")?;
    let prefix = if mode == Mode::DryRun { "would " } else { "" };
    let mut held_back = false;
    for step in &steps {
        match step.action {
            Action::Unchanged => println!("{step}"),
            _ => println!("{prefix}{step}"),
        }
        held_back |= !step.held_back.is_empty();
    }
    Ok(if held_back {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Connects for a command that only reads (`status`, `dlq list/show`, `lookups list/get`,
/// `normalize --nats`). Provisioning would create or update streams from this config's
/// settings: run with a config that is not production's, it would reset production's
/// retention. A missing stream or bucket is reported by the command instead.
async fn connect_read_only(cfg: &Config) -> anyhow::Result<Bus> {
    let settings = cfg.nats_settings("oprelay-ctl")?;
    Ok(Bus::connect(&settings).await?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("oprelay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Completions need no config: a shell's start-up must not fail on one.
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "oprelay",
            &mut std::io::stdout(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    // `config check` reports a config that does not load, so it loads it itself.
    if let Command::Config(ConfigCommand::Check { online }) = cli.command {
        let (cfg, mut findings) = check::offline(cli.config.as_deref(), cli.nats_url.as_deref());
        if let (Some(cfg), true) = (&cfg, online) {
            findings.extend(check::online(cfg).await);
        }
        return Ok(check::report(cfg.as_ref(), &findings, online));
    }
    let cfg = load_config(&cli)?;
    match cli.command {
        Command::Config(ConfigCommand::Check { .. }) => {
            unreachable!("answered before the config is loaded")
        }
        Command::Nats(NatsCommand::Provision {
            dry_run,
            shrink_retention,
        }) => {
            let mode = match (dry_run, shrink_retention) {
                (true, _) => Mode::DryRun,
                (false, true) => Mode::ApplyAndShrink,
                (false, false) => Mode::Apply,
            };
            provision(&cfg, mode).await
        }
        Command::Nats(NatsCommand::Authorization) => {
            let sinks: Vec<String> = cfg.sinks.iter().map(|s| s.name.clone()).collect();
            print!("{}", oprelay_bus::access::authorization_config(&sinks));
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { watch } => {
            status::run(&connect_read_only(&cfg).await?, watch, cli.output).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { .. } => unreachable!("answered before the config is loaded"),
        Command::Cursor(CursorCommand::Show { account, feed }) => {
            let account = account_name(&account)?;
            cursor::show(&connect_read_only(&cfg).await?, &account, feed, cli.output).await
        }
        Command::Cursor(CursorCommand::Reset {
            account,
            feed,
            to,
            to_start,
        }) => {
            let account = account_name(&account)?;
            let to = match (to, to_start) {
                (Some(t), _) => cursor::ResetTo::Time(t),
                (None, _) => cursor::ResetTo::Start,
            };
            let bus = connect_to_write(&cfg, &[Need::Bucket(names::BUCKET_CURSORS)]).await?;
            cursor::reset(&bus, &account, feed, to).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Normalize {
            files,
            feed,
            account,
            label,
            lookups,
            lookups_kind,
            nats,
            format,
            rejects,
        } => {
            let configured = cfg.accounts.iter().find(|a| a.name.as_str() == account);
            let source = Source::for_account(
                &account,
                configured.and_then(|a| a.source_id.as_deref()),
                label.as_deref().or(configured.map(|a| a.label())),
            );
            let mut rows = Vec::new();
            for (_, parsed) in lookups::parse_files(&lookups, lookups_kind)? {
                rows.extend(parsed.rows);
            }
            if nats {
                let bus = connect_read_only(&cfg).await?;
                rows.extend(lookups::all_rows(&bus).await?);
            }
            let index = normalize::index_of(rows);
            let opts = normalize::Options {
                files,
                feed,
                source,
                account,
                format,
                rejects,
            };
            tokio::task::spawn_blocking(move || normalize::run(opts, index)).await?
        }
        Command::Ingest {
            files,
            account,
            feed,
            page_size,
        } => {
            let account = account_name(&account)?;
            let bus = connect_to_write(&cfg, &[Need::Stream(names::STREAM_RAW)]).await?;
            let opts = ingest::Options {
                files,
                account,
                feed,
                page_size,
            };
            ingest::run(&bus, opts).await
        }
        Command::Lookups(LookupsCommand::Import {
            files,
            kind,
            dry_run,
        }) => {
            let parsed = lookups::parse_files(&files, kind)?;
            let bus = if dry_run {
                None
            } else {
                Some(connect_to_write(&cfg, &[Need::Bucket(names::BUCKET_LOOKUPS)]).await?)
            };
            lookups::import(bus.as_ref(), &parsed).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lookups(LookupsCommand::List { kind }) => {
            lookups::list(&connect_read_only(&cfg).await?, kind, cli.output).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lookups(LookupsCommand::Get { uuid }) => {
            lookups::get(&connect_read_only(&cfg).await?, &uuid, cli.output).await
        }
        Command::Dlq(DlqCommand::List { stage, sink, limit }) => {
            let filter = dlq::Filter {
                stage: stage.as_deref(),
                sink: sink.as_deref(),
            };
            dlq::list(&connect_read_only(&cfg).await?, filter, limit, cli.output).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(DlqCommand::Show { seq }) => {
            dlq::show(&connect_read_only(&cfg).await?, seq, cli.output).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(DlqCommand::Replay {
            seqs,
            all,
            stage,
            sink,
            keep,
        }) => {
            let all = all.then_some(dlq::Filter {
                stage: stage.as_deref(),
                sink: sink.as_deref(),
            });
            let needs = [
                Need::Stream(names::STREAM_DLQ),
                Need::Stream(names::STREAM_RAW),
                Need::Stream(names::STREAM_EVENTS),
            ];
            dlq::replay(&connect_to_write(&cfg, &needs).await?, &seqs, all, keep).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
