//! `oprelay nats`: provisioning the topology, and nats-server's authorization block.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use oprelay_bus::{Action, Mode};
use oprelay_service::config::Config;

use crate::connect::connect_read_only;

#[derive(Subcommand)]
pub enum NatsCommand {
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

/// Runs one `oprelay nats …` command.
pub async fn command(cmd: NatsCommand, cfg: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        NatsCommand::Provision {
            dry_run,
            shrink_retention,
        } => {
            let mode = match (dry_run, shrink_retention) {
                (true, _) => Mode::DryRun,
                (false, true) => Mode::ApplyAndShrink,
                (false, false) => Mode::Apply,
            };
            provision(cfg, mode).await
        }
        NatsCommand::Authorization => {
            let sinks: Vec<String> = cfg.sinks.iter().map(|s| s.name.clone()).collect();
            print!("{}", oprelay_bus::access::authorization_config(&sinks));
            Ok(ExitCode::SUCCESS)
        }
    }
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
