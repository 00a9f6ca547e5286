//! Shared set-up for the fetcher's tests: a real nats-server, opsim, and a fetcher in-process.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use oprelay_bus::{Bus, NatsSettings};
use oprelay_events::{names, Feed, Page};
use oprelay_fetcher::backoff::BackoffPolicy;
use oprelay_fetcher::Options;
use oprelay_service::{config, CancellationToken, Clock, Config};
use oprelay_testkit::opsim::{self, RunningSim, SimConfig, TokenSpec};
use oprelay_testkit::NatsServer;
use serde_json::value::RawValue;

pub struct World {
    pub nats: NatsServer,
    pub sim: RunningSim,
    pub dir: tempfile::TempDir,
    pub token: String,
    pub bus: Bus,
}

impl World {
    pub async fn start(sim: SimConfig) -> World {
        let nats = NatsServer::start();
        let sim = opsim::spawn(sim).await.expect("opsim");
        let dir = tempfile::tempdir().unwrap();
        let token = sim.sim.mint_token(&TokenSpec::default());
        std::fs::write(dir.path().join("acme.token"), format!("{token}\n")).unwrap();
        let bus = Bus::connect(&NatsSettings {
            url: nats.url(),
            ..Default::default()
        })
        .await
        .expect("test connects to NATS");
        World {
            nats,
            sim,
            dir,
            token,
            bus,
        }
    }

    pub fn token_path(&self) -> std::path::PathBuf {
        self.dir.path().join("acme.token")
    }

    /// A config for account `acme` against opsim; `extra` is appended to the TOML.
    pub fn config(&self, extra: &str) -> Config {
        let text = format!(
            r#"
[nats]
url = "{nats}"
provision_at_start = true
[telemetry]
listen = "127.0.0.1:0"
[[accounts]]
name = "acme"
base_url = "{sim}"
token_file = "{token}"
start_time = "2000-01-01T00:00:00Z"
poll_interval = "1s"
{extra}
"#,
            nats = self.nats.url(),
            sim = self.sim.url(),
            token = self.token_path().display(),
        );
        config::from_toml(&text).expect("test config is valid")
    }

    /// Every event in `OP_RAW`, per feed, in stream order: (uuid, Nats-Msg-Id).
    pub async fn raw_events(&self) -> HashMap<Feed, Vec<String>> {
        let mut out: HashMap<Feed, Vec<String>> = HashMap::new();
        let Ok(mut stream) = self.bus.jetstream().get_stream(names::STREAM_RAW).await else {
            return out;
        };
        let Ok(info) = stream.info().await else {
            return out;
        };
        let last = info.state.last_sequence;
        for seq in 1..=last {
            let Ok(msg) = stream.get_raw_message(seq).await else {
                continue;
            };
            let feed = names::parse_feed_subject(&msg.subject, "raw")
                .map(|(_, f)| f)
                .expect("raw subject");
            let page: Page<Box<RawValue>> =
                serde_json::from_slice(&msg.payload).expect("raw page is an envelope");
            for item in page.items {
                let v: serde_json::Value = serde_json::from_str(item.get()).unwrap();
                out.entry(feed)
                    .or_default()
                    .push(v["uuid"].as_str().unwrap().to_owned());
            }
        }
        out
    }

    pub async fn raw_count(&self) -> usize {
        self.raw_events().await.values().map(Vec::len).sum()
    }

    /// What opsim will have served for `feed`: the first `n` uuids in order.
    pub fn expected(&self, feed: Feed, n: u64) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.sim.sim.event(feed, i)["uuid"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// Asserts every feed in OP_RAW holds exactly opsim's first `n` events, once, in order.
    pub async fn assert_exactly_once(&self, feeds: &[Feed], n: u64) {
        let got = self.raw_events().await;
        for feed in feeds {
            let have = got.get(feed).cloned().unwrap_or_default();
            let want = self.expected(*feed, n);
            assert_eq!(
                have.len(),
                want.len(),
                "{feed}: {} events in OP_RAW, expected {}",
                have.len(),
                want.len()
            );
            assert!(have == want, "{feed}: events out of order or duplicated");
        }
    }
}

pub fn fast_backoff() -> BackoffPolicy {
    BackoffPolicy {
        transient_base: Duration::from_millis(10),
        transient_cap: Duration::from_millis(100),
        slow_base: Duration::from_millis(50),
        slow_cap: Duration::from_millis(200),
    }
}

/// A fetcher task; dropping the handle aborts it (a crash: no lease release, nothing flushed).
pub struct Running {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), oprelay_fetcher::FetcherError>>,
}

impl Running {
    pub fn start(config: Config, clock: Clock) -> Running {
        Running::start_with(
            config,
            Options {
                clock,
                backoff: fast_backoff(),
                lease_interval: None,
            },
        )
    }

    pub fn start_with(config: Config, options: Options) -> Running {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(oprelay_fetcher::run_with(config, options, shutdown.clone()));
        Running { shutdown, task }
    }

    /// SIGTERM-style stop; returns once the fetcher has exited.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("fetcher stops within 10 s")
            .expect("no panic")
            .expect("clean exit");
    }

    /// kill -9.
    pub fn crash(self) {
        self.task.abort();
    }
}

/// Waits for opsim's request log to have `n` data requests.
pub fn data_requests(sim: &RunningSim) -> usize {
    sim.sim
        .requests()
        .iter()
        .filter(|r| r.feed.is_some())
        .count()
}
