//! `opsim serve`: run the simulator and print a token to use against it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use oprelay_events::Feed;
use opsim::{RateLimits, SimConfig, TokenSpec};

#[derive(Parser)]
#[command(
    name = "opsim",
    version,
    about = "A faithful 1Password Events API simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Events API and print a bearer token for it.
    Serve(ServeArgs),
    /// Print the simulated account's objects as `op <kind> list --format json` would.
    Directory {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_enum)]
        kind: Kind,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Items,
    Vaults,
    Users,
    Groups,
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Same seed, same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Events per feed already there at start.
    #[arg(long, default_value_t = 1000)]
    backfill: u64,
    /// How far back the backfill reaches.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    backfill_span: std::time::Duration,
    /// Live events per second per feed.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Serve without the 600/min and 30 000/h limits (benchmarks).
    #[arg(long)]
    no_rate_limit: bool,
    /// Send `Retry-After` with 429s (the real API documents none).
    #[arg(long)]
    retry_after: bool,
    /// Probability that a data request fails at random (429, 5xx, slow, truncated, malformed).
    #[arg(long, default_value_t = 0.0)]
    chaos: f64,
    /// Host named in tokens' `aud`; defaults to the listen address.
    #[arg(long)]
    audience: Option<String>,
    /// Also write the token to this file (mode 0600), ready for `token_file`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Features of the printed token; all three when not given.
    #[arg(long, value_delimiter = ',')]
    features: Vec<Feed>,
    /// Give the printed token an `exp` this far ahead.
    #[arg(long, value_parser = humantime::parse_duration)]
    token_expires_in: Option<std::time::Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Directory { seed, kind } => {
            let dir = opsim::Directory::new(seed);
            let out = match kind {
                Kind::Items => dir.op_item_list(),
                Kind::Vaults => dir.op_vault_list(),
                Kind::Users => dir.op_user_list(),
                Kind::Groups => dir.op_group_list(),
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = SimConfig {
        seed: args.seed,
        backfill: args.backfill,
        backfill_span: time::Duration::try_from(args.backfill_span)
            .context("--backfill-span is too large")?,
        rate: args.rate,
        rate_limits: (!args.no_rate_limit).then_some(RateLimits {
            retry_after_header: args.retry_after,
            ..RateLimits::default()
        }),
        chaos: args.chaos,
        audience: args.audience.unwrap_or_default(),
        clock: opsim::SimClock::System,
    };
    let running = opsim::spawn_on(args.listen, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let token = running.sim.mint_token(&TokenSpec {
        features: args.features,
        expires_in_secs: args.token_expires_in.map(|d| d.as_secs() as i64),
    });
    if let Some(path) = &args.token_file {
        write_secret(path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "opsim: serving the 1Password Events API at {} (seed {}, {} backfilled events per feed, {} live/s)",
        running.url(),
        args.seed,
        args.backfill,
        args.rate
    );
    eprintln!("opsim: try  curl -s -H \"Authorization: Bearer $(cat TOKEN_FILE)\" -d '{{\"limit\":2}}' {}/api/v2/itemusages", running.url());
    println!("{token}");
    wait_for_stop().await
}

/// Ctrl-C or SIGTERM, so the demo script and process supervisors can stop it cleanly.
async fn wait_for_stop() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn write_secret(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    writeln!(f, "{token}")
}
