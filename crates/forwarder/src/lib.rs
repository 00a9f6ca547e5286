//! The forwarder: `OP_EVENTS` → SIEMs, one durable consumer per sink, so every SIEM progresses
//! on its own and a dead one holds back nothing else.

pub mod delivery;
pub mod metrics;
pub mod sinks;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use oprelay_bus::{BusError, Need};
use oprelay_events::names;
use oprelay_service::{CancellationToken, Config, Metrics, StartError};

use crate::delivery::SinkCtx;
use crate::metrics::{ForwarderMetrics, SinkLabels};
use crate::sinks::{AnySink, BuildError};

pub const SERVICE: &str = "forwarder";

/// Where `/healthz`, `/readyz` and `/metrics` listen unless configured.
pub const DEFAULT_LISTEN: std::net::SocketAddr = oprelay_service::admin::default_listen(9463);

#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Sink(#[from] BuildError),
}

/// What tests and embedders may change; `run` uses the defaults.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bounds of the retry wait when the SIEM refuses for a reason only an operator can fix
    /// (credentials, endpoint, a redirect, a read-only index): full jitter under an exponential
    /// bound from the first to the second.
    pub operator_retry: (Duration, Duration),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            operator_retry: (Duration::from_secs(30), Duration::from_secs(300)),
        }
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ForwarderError> {
    run_with(config, Options::default(), shutdown).await
}

pub async fn run_with(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), ForwarderError> {
    let metrics = Metrics::new();
    let m = ForwarderMetrics::register(&metrics);
    // Build every sink before connecting: a bad sink config fails the start, not the night.
    config.check_sink_files().map_err(StartError::from)?;
    let mut sinks = Vec::new();
    for s in &config.sinks {
        sinks.push((s.clone(), AnySink::build(s)?));
    }
    let mut needs = vec![Need::Stream(names::STREAM_DLQ)];
    needs.extend(
        config
            .sinks
            .iter()
            .map(|s| Need::Consumer(names::sink_consumer(&s.name))),
    );
    let Some(started) =
        oprelay_service::start(&config, SERVICE, &needs, DEFAULT_LISTEN, metrics, &shutdown)
            .await?
    else {
        return Ok(());
    };
    if sinks.is_empty() {
        tracing::warn!("no [[sinks]] configured: nothing to deliver to");
    }
    let ack_wait = config.topology().ack_wait;
    let mut workers = JoinSet::new();
    for (sink_config, sink) in sinks {
        let durable = names::sink_consumer(&sink_config.name);
        let consumer =
            oprelay_bus::pull_consumer(started.bus.jetstream(), names::STREAM_EVENTS, &durable)
                .await?;
        let ctx = Arc::new(SinkCtx {
            name: sink_config.name.clone(),
            sink,
            bus: started.bus.clone(),
            max_events: sink_config.batch.max_events,
            max_bytes: sink_config.batch.max_bytes.0 as usize,
            metrics: m.clone(),
            labels: SinkLabels {
                sink: sink_config.name.clone(),
            },
            progress_every: (ack_wait / 3).max(Duration::from_millis(200)),
            operator_retry: options.operator_retry,
        });
        m.start_sink(&ctx.labels);
        tracing::info!(sink = %sink_config.name, kind = sink_config.kind.as_str(), "sink ready");
        workers.spawn(worker::run(ctx, sink_config, consumer, shutdown.clone()));
    }
    while let Some(r) = workers.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::error!(error = %e, "sink worker stopped");
        }
    }
    tracing::info!("forwarder stopped");
    Ok(())
}
