//! Start-up and shutdown shared by every service binary.
//!
//! `main` parses `--config`, loads and validates the config (exit 2 naming the bad key),
//! sets up telemetry, turns SIGTERM/SIGINT into a cancellation, and gives the service's
//! `run(config, shutdown)` a bounded time to drain before the process exits 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use tokio_util::sync::CancellationToken;

use oprelay_bus::{Backoff, Bus, BusError, Need, Retries};

use crate::admin::{self, Health, Metrics};
use crate::config::{self, Config, ConfigError};

/// After SIGTERM, how long `run` may take to finish what is in flight. Kubernetes waits 30 s by
/// default; `docs/architecture.md` promises exit within 10 s.
pub const DRAIN_GRACE: Duration = Duration::from_secs(9);

#[derive(Parser, Debug)]
#[command(version = crate::build_info::LONG_VERSION)]
struct ServiceArgs {
    /// The oprelay TOML config; without it the service runs on defaults plus `OPRELAY_…`.
    #[arg(long, env = "OPRELAY_CONFIG")]
    config: Option<PathBuf>,
}

/// A cancellation that fires on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        fire.cancel();
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The body of every service's `main.rs`.
pub fn main<F, Fut, E>(service: &'static str, run: F) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    // `--version` and `--help` name the binary; the name lives as long as the process.
    let name: &'static str = format!("oprelay-{service}").leak();
    let args = ServiceArgs::command().name(name).get_matches();
    let args = match ServiceArgs::from_arg_matches(&args) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    crate::memory::keep_memory_while_busy();
    oprelay_bus::install_crypto_provider();
    let config = match config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oprelay-{service}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oprelay-{service}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let _telemetry = match crate::telemetry::init(&config.telemetry, service) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("oprelay-{service}: {e}");
                return ExitCode::from(2);
            }
        };
        let shutdown = shutdown_on_signals();
        let task = tokio::spawn(run(config, shutdown.clone()));
        let drained = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_GRACE).await;
        };
        tokio::select! {
            result = task => match result {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "{service} stopped");
                    eprintln!("oprelay-{service}: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    tracing::error!(error = %e, "{service} crashed");
                    ExitCode::FAILURE
                }
            },
            _ = drained => {
                tracing::warn!("{service} did not finish draining within {DRAIN_GRACE:?}; exiting, unacknowledged work will be redelivered");
                ExitCode::SUCCESS
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
}

/// What a service has once it is up: the bus, and the admin listener's state.
pub struct Started {
    pub bus: Bus,
    pub health: Health,
    pub metrics: Metrics,
    pub admin_addr: SocketAddr,
}

/// Starts the admin listener (on `telemetry.listen` or the service's own port), connects to
/// NATS and checks that what the service `needs` is provisioned (or, with
/// `nats.provision_at_start`, provisions it), retrying transient failures with backoff until
/// shutdown. `Ok(None)` when shutdown came first.
pub async fn start(
    config: &Config,
    service: &str,
    needs: &[Need],
    default_listen: SocketAddr,
    metrics: Metrics,
    shutdown: &CancellationToken,
) -> Result<Option<Started>, StartError> {
    let health = Health::default();
    let listen = config.telemetry.listen.unwrap_or(default_listen);
    let (admin_addr, _task) =
        admin::serve(listen, health.clone(), metrics.clone(), shutdown.clone()).await?;
    tracing::info!(%admin_addr, "admin listener up: /healthz /readyz /metrics");
    let settings = config.nats_settings(&format!("oprelay-{service}"))?;
    let topology = config.topology();
    // 0.5 s doubling to 30 s, drawn in full: a fleet restarting with NATS spreads out.
    let mut retries = Retries::new(
        Backoff::full_jitter(Duration::from_millis(500), Duration::from_secs(30))
            .at_least(Duration::from_millis(100)),
    );
    let bus = loop {
        let attempt = async {
            let bus = Bus::connect(&settings).await?;
            if config.nats.provision_at_start {
                for step in bus.provision(&topology).await? {
                    if step.action != oprelay_bus::Action::Unchanged {
                        tracing::info!(%step, "provisioned");
                    }
                }
            }
            bus.check(&topology, needs).await?;
            Ok::<_, BusError>(bus)
        };
        match attempt.await {
            Ok(bus) => break bus,
            Err(e) if e.is_retryable() => {
                let pause = retries.failed();
                tracing::warn!(error = %e, retry_in = ?pause, "NATS not available yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    health.set_ready(&bus);
    tracing::info!(url = %oprelay_bus::redact_url(&settings.url), "connected to NATS; what this service uses is provisioned");
    Ok(Some(Started {
        bus,
        health,
        metrics,
        admin_addr,
    }))
}
