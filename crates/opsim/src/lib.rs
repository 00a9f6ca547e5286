//! opsim: a faithful simulator of the 1Password Events API.
//!
//! It serves what the reference describes — v1 and v2 endpoints, both introspection shapes,
//! JWT-shaped bearer tokens, request validation, opaque cursors with the documented `has_more`
//! behaviour, rate limits — over a deterministic, realistic event stream, and it fails on demand
//! (429 with and without `Retry-After`, 5xx, slow, truncated and malformed responses, revoked
//! tokens). Tests, the demo and the benchmarks use it; no production path does.

mod control;
mod faults;
pub mod generate;
mod ratelimit;
mod server;
mod timeline;
pub mod token;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use oprelay_events::Feed;

pub use faults::{Fault, FaultKind};
pub use generate::Directory;
pub use ratelimit::RateLimits;
pub use timeline::Timeline;
pub use token::{decode_claims, Claims, TokenSpec};

/// The simulator's notion of now. Tests advance a manual clock to make live events arrive and
/// tokens expire without waiting.
#[derive(Clone, Debug)]
pub enum SimClock {
    System,
    Manual(Arc<Mutex<OffsetDateTime>>),
}

impl SimClock {
    pub fn manual(start: OffsetDateTime) -> Self {
        SimClock::Manual(Arc::new(Mutex::new(start)))
    }

    pub fn now(&self) -> OffsetDateTime {
        match self {
            SimClock::System => OffsetDateTime::now_utc(),
            SimClock::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Moves a manual clock forward; no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let SimClock::Manual(t) = self {
            let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
            *t += by;
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Events per feed that had already arrived when the simulator started.
    pub backfill: u64,
    /// How far back the backfill reaches.
    pub backfill_span: Duration,
    /// Live events per second per feed after start.
    pub rate: f64,
    /// `None` turns rate limiting off (benchmarks).
    pub rate_limits: Option<RateLimits>,
    /// Probability that a data request fails at random.
    pub chaos: f64,
    /// The host tokens name in `aud`. [`spawn`] sets it to the listen address when empty.
    pub audience: String,
    pub clock: SimClock,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            backfill: 1_000,
            backfill_span: Duration::hours(6),
            rate: 0.0,
            rate_limits: Some(RateLimits::default()),
            chaos: 0.0,
            audience: String::new(),
            clock: SimClock::System,
        }
    }
}

/// One request the simulator answered, for tests that check what a client did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub path: String,
    pub feed: Option<Feed>,
    pub status: u16,
    /// The request body, for data requests.
    pub body: Option<String>,
}

/// Most requests kept in the log; older ones are dropped first.
const MAX_LOGGED_REQUESTS: usize = 1_000_000;

struct Inner {
    config: SimConfig,
    directory: Arc<Directory>,
    timeline: Timeline,
    tokens: token::TokenRegistry,
    limiter: ratelimit::RateLimiter,
    faults: faults::FaultPlan,
    rng: StdRng,
    log: std::collections::VecDeque<RequestRecord>,
    /// The backfill's events already serialized (v2), per feed in `Feed::ALL` order, when
    /// [`Sim::prerender_backfill`] was called: pages are then assembled from bytes.
    rendered: Option<Arc<[Vec<Box<str>>; 3]>>,
}

/// A simulator: cheap to clone, shared by the HTTP server and the test that drives it.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Mutex<Inner>>,
    clock: SimClock,
    seed: u64,
}

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        let start = config.clock.now();
        let timeline = Timeline {
            start,
            backfill: config.backfill,
            backfill_span: config.backfill_span,
            rate: config.rate,
        };
        let mut faults = faults::FaultPlan::default();
        faults.chaos = config.chaos;
        Sim {
            clock: config.clock.clone(),
            seed: config.seed,
            inner: Arc::new(Mutex::new(Inner {
                directory: Arc::new(Directory::new(config.seed)),
                timeline,
                tokens: token::TokenRegistry::default(),
                limiter: ratelimit::RateLimiter::default(),
                faults,
                rng: StdRng::seed_from_u64(config.seed ^ 0x5EED),
                log: Default::default(),
                rendered: None,
                config,
            })),
        }
    }

    /// Serializes every backfill event of every feed now, so serving a page is copying bytes:
    /// a benchmark calls it before its clock starts and measures the pipeline, not the
    /// simulator generating events. Pages are byte for byte what they would be otherwise.
    pub fn prerender_backfill(&self) {
        let (timeline, directory, backfill) = {
            let inner = self.lock();
            (
                inner.timeline.clone(),
                inner.directory.clone(),
                inner.config.backfill,
            )
        };
        let rendered = Feed::ALL.map(|feed| {
            (0..backfill)
                .map(|i| {
                    generate::event(&directory, self.seed, feed, i, timeline.arrival(i))
                        .to_string()
                        .into_boxed_str()
                })
                .collect::<Vec<_>>()
        });
        self.lock().rendered = Some(Arc::new(rendered));
    }

    /// Pre-rendered events `from..to` of `feed`, when all of them are.
    fn rendered(&self, feed: Feed, from: u64, to: u64) -> Option<Arc<[Vec<Box<str>>; 3]>> {
        let rendered = self.lock().rendered.clone()?;
        let slot = Feed::ALL.iter().position(|f| *f == feed)?;
        (to as usize <= rendered[slot].len() && from <= to).then_some(rendered)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the state half-written in a way that
        // matters for a simulator; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Mints a token for this simulator's audience.
    pub fn mint_token(&self, spec: &TokenSpec) -> String {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Inner {
            config,
            directory,
            tokens,
            rng,
            ..
        } = &mut *inner;
        tokens.mint(spec, &config.audience, &directory.account_uuid, now, rng)
    }

    /// Revokes a token, as an admin would in 1Password.com. False if it was never minted.
    pub fn revoke(&self, token: &str) -> bool {
        self.lock().tokens.set_revoked(token, true)
    }

    /// Makes a revoked token valid again (a test convenience the real service lacks).
    pub fn restore(&self, token: &str) -> bool {
        self.lock().tokens.set_revoked(token, false)
    }

    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn pending_faults(&self) -> usize {
        self.lock().faults.pending()
    }

    pub fn set_rate_limits(&self, limits: Option<RateLimits>) {
        self.lock().config.rate_limits = limits;
    }

    pub fn directory(&self) -> Arc<Directory> {
        self.lock().directory.clone()
    }

    pub fn timeline(&self) -> Timeline {
        self.lock().timeline.clone()
    }

    /// Events of `feed` that have arrived by now.
    pub fn available(&self, _feed: Feed) -> u64 {
        let now = self.clock.now();
        self.lock().timeline.available(now)
    }

    /// The v2 rendering of event `index` of `feed`, exactly as the API serves it.
    pub fn event(&self, feed: Feed, index: u64) -> serde_json::Value {
        let inner = self.lock();
        let arrival = inner.timeline.arrival(index);
        generate::event(&inner.directory, self.seed, feed, index, arrival)
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.iter().cloned().collect()
    }

    fn record(&self, record: RequestRecord) {
        let mut inner = self.lock();
        if inner.log.len() >= MAX_LOGGED_REQUESTS {
            inner.log.pop_front();
        }
        inner.log.push_back(record);
    }

    /// Serves the API on `listener` until the task is aborted.
    pub fn serve(&self, listener: TcpListener) -> JoinHandle<std::io::Result<()>> {
        let app = server::router(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await })
    }
}

/// A simulator listening on a free loopback port; the server stops when this is dropped.
pub struct RunningSim {
    pub sim: Sim,
    pub addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningSim {
    /// `http://127.0.0.1:PORT`, the base URL a client uses.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a simulator on `127.0.0.1:0`.
pub async fn spawn(config: SimConfig) -> std::io::Result<RunningSim> {
    spawn_on(
        "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
        config,
    )
    .await
}

/// Starts a simulator on `addr`; `aud` in minted tokens defaults to the bound address.
pub async fn spawn_on(addr: SocketAddr, mut config: SimConfig) -> std::io::Result<RunningSim> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    if config.audience.is_empty() {
        config.audience = addr.to_string();
    }
    let sim = Sim::new(config);
    let task = sim.serve(listener);
    Ok(RunningSim { sim, addr, task })
}
