//! `oprelay`: the operator's command line.

mod dlq;
mod lookups;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use oprelay_bus::Bus;
use oprelay_events::LookupKind;
use oprelay_service::config::{self, Config};

#[derive(Parser)]
#[command(name = "oprelay", version, about = "Operate an oprelay pipeline")]
struct Cli {
    /// The oprelay config (for the NATS connection); defaults plus `OPRELAY_…` without it.
    #[arg(long, env = "OPRELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// NATS URL, overriding the config.
    #[arg(long, env = "OPRELAY_NATS_URL", global = true)]
    nats_url: Option<String>,
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
    /// Per account and feed: cursor age, last poll, last event, events in the last hour,
    /// failures; sink backlogs; open alarms.
    Status {
        /// Refresh every 2 seconds until Ctrl-C.
        #[arg(long)]
        watch: bool,
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
        /// Only this stage: normalize or forward.
        #[arg(long)]
        stage: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One dead letter with its headers and body.
    Show { seq: u64 },
    /// Send dead letters back through the pipeline after a fix, and remove them from the DLQ.
    Replay {
        /// Sequence numbers from `oprelay dlq list`.
        seqs: Vec<u64>,
        /// Every dead letter of the normalize stage.
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
        /// Keep them in the DLQ after replaying.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load and validate the config the way every service does.
    Check,
}

fn parse_kind(s: &str) -> Result<LookupKind, String> {
    LookupKind::ALL
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| format!("`{s}` is not item, vault, user or group"))
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = config::load(cli.config.as_deref())?;
    if let Some(url) = &cli.nats_url {
        cfg.nats.url = url.clone();
    }
    Ok(cfg)
}

async fn connect(cfg: &Config) -> anyhow::Result<Bus> {
    let settings = cfg.nats_settings("oprelay-ctl")?;
    let bus = Bus::connect(&settings).await?;
    bus.provision(&cfg.topology())
        .await
        .context("provisioning the NATS topology")?;
    Ok(bus)
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
    let cfg = load_config(&cli)?;
    match cli.command {
        Command::Config(ConfigCommand::Check) => {
            cfg.check_account_tokens()?;
            println!(
                "config OK: {} account(s), {} sink(s), NATS at {}",
                cfg.accounts.len(),
                cfg.sinks.len(),
                cfg.nats.url
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { watch } => {
            status::run(&connect(&cfg).await?, watch).await?;
            Ok(ExitCode::SUCCESS)
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
                Some(connect(&cfg).await?)
            };
            lookups::import(bus.as_ref(), &parsed).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lookups(LookupsCommand::List { kind }) => {
            lookups::list(&connect(&cfg).await?, kind).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Lookups(LookupsCommand::Get { uuid }) => {
            lookups::get(&connect(&cfg).await?, &uuid).await
        }
        Command::Dlq(DlqCommand::List { stage, limit }) => {
            dlq::list(&connect(&cfg).await?, stage.as_deref(), limit).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(DlqCommand::Show { seq }) => {
            dlq::show(&connect(&cfg).await?, seq).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq(DlqCommand::Replay { seqs, all, keep }) => {
            dlq::replay(&connect(&cfg).await?, &seqs, all, keep).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
