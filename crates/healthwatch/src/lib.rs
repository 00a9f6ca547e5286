//! healthwatch: drop-off and pipeline alarms, one notification on entering ALARM and one on
//! resolving, whatever restarts in between.
//!
//! Each round the lease holder looks at what the pipeline itself records — the newest message
//! per `op.events.{account}.{feed}` subject, the fetcher's `OP_STATUS`, each sink consumer's
//! backlog and the DLQ — turns it into an OK / ALARM / INSUFFICIENT_DATA state per alarm
//! (`rules/`, one file per rule), keeps the states in `OP_HEALTH`, and publishes every change
//! to `op.alarms.…` (`evaluate.rs`). A separate task delivers the notifications the states
//! owe (`deliver.rs`, through `notify.rs`).

pub mod alarm;
mod deliver;
mod evaluate;
mod metrics;
pub mod notify;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use oprelay_bus::{BusError, JsonKv, Need};
use oprelay_events::names;
use oprelay_service::{lease, CancellationToken, Clock, Config, Metrics, StartError};

use crate::evaluate::Evaluator;
use crate::metrics::HealthwatchMetrics;
use crate::notify::Notifier;

/// The service's name in logs, metrics and its NATS user.
pub const SERVICE: &str = "healthwatch";
/// What healthwatch watches and writes to; checked at start.
const NEEDS: [Need; 6] = [
    Need::Stream(names::STREAM_EVENTS),
    Need::Stream(names::STREAM_DLQ),
    Need::Stream(names::STREAM_ALARMS),
    Need::Bucket(names::BUCKET_HEALTH),
    Need::Bucket(names::BUCKET_STATUS),
    Need::Bucket(names::BUCKET_LEASES),
];
/// Where `/healthz`, `/readyz` and `/metrics` listen unless configured.
pub const DEFAULT_LISTEN: std::net::SocketAddr = oprelay_service::admin::default_listen(9464);
/// The lease that makes one replica the evaluator and notifier.
const LEASE_KEY: &str = names::LEASE_HEALTHWATCH;

/// Why healthwatch could not run.
#[derive(Debug, thiserror::Error)]
pub enum HealthwatchError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("healthwatch.notify: {0}")]
    Notify(#[from] notify::NotifyError),
}

/// What tests and embedders may change.
#[derive(Clone, Default)]
pub struct Options {
    pub clock: Clock,
    /// This replica's name in the lease; `HOSTNAME` or random by default.
    pub replica_id: Option<String>,
}

/// Runs healthwatch until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), HealthwatchError> {
    run_with(config, Options::default(), shutdown).await
}

/// [`run`] with a controllable clock and replica name.
pub async fn run_with(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), HealthwatchError> {
    let notifiers: Vec<Notifier> = config
        .healthwatch
        .notify
        .iter()
        .enumerate()
        .map(|(i, n)| Notifier::new(i, n))
        .collect::<Result<_, _>>()?;
    let metrics = Metrics::new();
    let hw_metrics = HealthwatchMetrics::register(&metrics);
    let Some(started) =
        oprelay_service::start(&config, SERVICE, &NEEDS, DEFAULT_LISTEN, metrics, &shutdown)
            .await?
    else {
        return Ok(());
    };
    let bus = started.bus;
    let evaluator = Arc::new(Evaluator {
        health: JsonKv::open(&bus, names::BUCKET_HEALTH).await?,
        status: JsonKv::open(&bus, names::BUCKET_STATUS).await?,
        bus: bus.clone(),
        clock: options.clock.clone(),
        config,
        metrics: hw_metrics,
    });
    let leases = JsonKv::open(&bus, names::BUCKET_LEASES).await?;
    let me = lease::replica_id(options.replica_id.as_deref(), SERVICE);
    let interval = evaluator.config.healthwatch.interval.0;
    let notify_task = tokio::spawn(deliver::notify_loop(
        evaluator.clone(),
        notifiers,
        me.clone(),
        leases.clone(),
        shutdown.clone(),
    ));
    loop {
        if holds_lease(&leases, &me, &evaluator.clock, interval * 3).await {
            let t0 = std::time::Instant::now();
            if let Err(e) = evaluator.round().await {
                tracing::warn!(error = %e, "evaluation round failed");
            }
            evaluator
                .metrics
                .evaluation
                .observe(t0.elapsed().as_secs_f64());
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = evaluator.clock.sleep(interval) => {}
        }
    }
    let _ = notify_task.await;
    // Hand the lease over at once.
    if let Ok(standing) = lease::look(&leases, LEASE_KEY, &me, evaluator.clock.now()).await {
        if let (true, Some(revision)) = (standing.mine, standing.revision) {
            let _ =
                lease::give_back(&leases, LEASE_KEY, &me, evaluator.clock.now(), revision).await;
        }
    }
    tracing::info!("healthwatch stopped");
    Ok(())
}

/// Claims or renews the single evaluator lease.
async fn holds_lease(kv: &JsonKv, me: &str, clock: &Clock, ttl: Duration) -> bool {
    let now = clock.now();
    let held = match lease::look(kv, LEASE_KEY, me, now).await {
        Ok(standing) if standing.open_to_me() => {
            lease::hold(kv, LEASE_KEY, me, now + ttl, standing.revision).await
        }
        Ok(_) => Ok(None),
        Err(e) => Err(e),
    };
    match held {
        Ok(revision) => revision.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim or renew the healthwatch lease");
            false
        }
    }
}
