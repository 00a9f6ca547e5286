//! The small admin listener every service runs: `/healthz` (alive), `/readyz` (connected to
//! NATS and the topology provisioned) and `/metrics` (Prometheus text format).
//!
//! It is separate from any data path, like linkerd's admin server, so a probe or a scrape
//! never competes with the work.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use oprelay_bus::Bus;

use crate::process_metrics::ProcessCollector;

/// Readiness as the orchestrator sees it.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    provisioned: AtomicBool,
    bus: OnceLock<Bus>,
}

impl Health {
    /// Called once the bus is connected and the topology exists.
    pub fn set_ready(&self, bus: &Bus) {
        let _ = self.inner.bus.set(bus.clone());
        self.inner.provisioned.store(true, Ordering::Release);
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.inner.provisioned.load(Ordering::Acquire) {
            return Err("not ready: NATS topology not provisioned yet");
        }
        match self.inner.bus.get() {
            Some(bus) if bus.is_connected() => Ok(()),
            _ => Err("not ready: NATS disconnected"),
        }
    }
}

/// The Prometheus registries of one process: the `oprelay_*` metrics each service registers at
/// start-up, and the standard `process_*` figures beside them. The lock is held only to
/// register and to encode a scrape.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    process: Arc<Registry>,
    /// `oprelay_ready`: `/readyz` as a gauge, set at each scrape, so an alert can tell "running
    /// but not ready" (NATS lost, topology missing) from "not running".
    ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with `oprelay_build_info{version,revision} 1`, `oprelay_ready` and the
    /// process metrics in it.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("oprelay");
        registry.register(
            "build",
            "The running build: release version and source revision",
            prometheus_client::metrics::info::Info::new(vec![
                ("version", crate::build_info::VERSION),
                ("revision", crate::build_info::REVISION),
            ]),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when connected to NATS with the topology provisioned (what /readyz answers)",
            ready.clone(),
        );
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            process: Arc::new(process),
            ready,
        }
    }

    /// Adds a metric; `name` gets the `oprelay_` prefix.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut r) = self.registry.lock() {
            r.register(name, help, metric);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let _ = encode_registry(&mut out, &self.process);
        if let Ok(r) = self.registry.lock() {
            let _ = encode_registry(&mut out, &r);
        }
        let _ = encode_eof(&mut out);
        out
    }
}

#[derive(Clone)]
struct AdminState {
    health: Health,
    metrics: Metrics,
}

/// Where a service's admin endpoints listen unless `telemetry.listen` says otherwise: every
/// interface, on the service's own port (fetcher 9461, normalizer 9462, forwarder 9463,
/// healthwatch 9464), so the four can share a host.
pub const fn default_listen(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port)
}

pub fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AdminState { health, metrics })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    match s.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    s.metrics.ready.set(i64::from(s.health.readiness().is_ok()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for /healthz /readyz /metrics: {source} (set telemetry.listen or OPRELAY_TELEMETRY__LISTEN)")]
pub struct AdminError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds now (so a port clash fails the start), serves until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), AdminError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminError { addr, source })?;
    let app = router(health, metrics);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok((bound, task))
}
