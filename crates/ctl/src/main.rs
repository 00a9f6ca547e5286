//! `oprelay`: the operator's command line.

mod args;
mod check;
mod connect;
mod cursor;
mod dlq;
mod ingest;
mod lookups;
mod nats;
mod normalize;
mod output;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "oprelay", version = oprelay_service::build_info::LONG_VERSION, about = "Operate an oprelay pipeline")]
pub struct Cli {
    /// The oprelay config (for the NATS connection); defaults plus `OPRELAY_…` without it.
    #[arg(long, env = "OPRELAY_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// NATS URL, overriding the config.
    #[arg(long, env = "OPRELAY_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// How read commands (status, dlq list/show, lookups list/get, cursor show) print:
    /// tables, or JSON for scripts.
    #[arg(long, short, value_enum, default_value_t, global = true)]
    pub output: output::Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// UUID → name lookup tables used for enrichment.
    #[command(subcommand)]
    Lookups(lookups::LookupsCommand),
    /// Records a stage could not process.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The NATS side: streams, buckets, consumers and who may use them.
    #[command(subcommand)]
    Nats(nats::NatsCommand),
    /// Where a feed's next Events API request starts, and moving it.
    #[command(subcommand)]
    Cursor(cursor::CursorCommand),
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
    Normalize(normalize::NormalizeArgs),
    /// Publish files of 1Password events into OP_RAW as pages, to flow through the pipeline
    /// like live events. Ingesting the same file again publishes nothing new.
    Ingest(ingest::IngestArgs),
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Load and validate the config the way every service does, and look for every file it
    /// names; every problem is listed. Exit code 1 when there is one.
    Check {
        /// Also connect: NATS (and whether the topology is provisioned), each account's token
        /// (introspected at the Events API), each sink (reached without delivering anything).
        #[arg(long)]
        online: bool,
    },
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
    let cfg = connect::load_config(&cli)?;
    let output = cli.output;
    match cli.command {
        Command::Config(_) | Command::Completions { .. } => {
            unreachable!("answered before the config is loaded")
        }
        Command::Status { watch } => {
            status::run(&connect::connect_read_only(&cfg).await?, watch, output).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Nats(cmd) => nats::command(cmd, &cfg).await,
        Command::Cursor(cmd) => cursor::command(cmd, &cfg, output).await,
        Command::Lookups(cmd) => lookups::command(cmd, &cfg, output).await,
        Command::Dlq(cmd) => dlq::command(cmd, &cfg, output).await,
        Command::Normalize(args) => normalize::command(args, &cfg).await,
        Command::Ingest(args) => ingest::command(args, &cfg).await,
    }
}
