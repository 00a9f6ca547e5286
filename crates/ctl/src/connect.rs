//! Loading the config and connecting to NATS, for commands that read and for those that write.

use oprelay_bus::{Bus, Need};
use oprelay_service::config::{self, Config};

use crate::Cli;

/// The config of `--config` (defaults and `OPRELAY_…` without it), `--nats-url` applied.
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = config::load(cli.config.as_deref())?;
    if let Some(url) = &cli.nats_url {
        cfg.nats.url = url.clone();
    }
    Ok(cfg)
}

/// Connects for a command that writes (import, ingest, replay), after checking that what it
/// writes into exists: a publish into a missing stream would only say "no responders".
pub async fn connect_to_write(cfg: &Config, needs: &[Need]) -> anyhow::Result<Bus> {
    let bus = connect_read_only(cfg).await?;
    bus.check(&cfg.topology(), needs).await?;
    Ok(bus)
}

/// Connects for a command that only reads (`status`, `dlq list/show`, `lookups list/get`,
/// `normalize --nats`). Provisioning would create or update streams from this config's
/// settings: run with a config that is not production's, it would reset production's
/// retention. A missing stream or bucket is reported by the command instead.
pub async fn connect_read_only(cfg: &Config) -> anyhow::Result<Bus> {
    let settings = cfg.nats_settings("oprelay-ctl")?;
    Ok(Bus::connect(&settings).await?)
}
