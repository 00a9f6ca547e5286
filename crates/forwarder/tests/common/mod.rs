//! Forwarder test set-up: a real nats-server, normalized batches in OP_EVENTS, the forwarder
//! in-process, and SIEM receivers that check the protocol as strictly as the real servers.

#![allow(dead_code)]

use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

use oprelay_bus::{Bus, NatsSettings, Outgoing};
use oprelay_events::names::{self, header};
use oprelay_events::{AccountName, Feed};
use oprelay_normalizer::lookup::LookupIndex;
use oprelay_normalizer::normalize::{normalize_page, Source};
use oprelay_service::{config, CancellationToken, Config};
use oprelay_testkit::NatsServer;
use serde_json::{json, Value};

pub struct World {
    pub nats: NatsServer,
    pub bus: Bus,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn start() -> World {
        let nats = NatsServer::start();
        let bus = Bus::connect(&NatsSettings {
            url: nats.url(),
            ..Default::default()
        })
        .await
        .unwrap();
        bus.provision(&oprelay_bus::Topology {
            ack_wait: std::time::Duration::from_secs(2),
            ..Default::default()
        })
        .await
        .unwrap();
        World {
            nats,
            bus,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A config with these `[[sinks]]` (TOML text).
    pub fn config(&self, sinks: &str) -> Config {
        config::from_toml(&format!(
            "[nats]\nurl = \"{}\"\nack_wait = \"2s\"\nprovision_at_start = true\n[telemetry]\nlisten = \"127.0.0.1:0\"\n{sinks}",
            self.nats.url()
        ))
        .expect("test config")
    }

    /// Publishes `pages` pages of `per_page` real normalized records of `feed` (opsim events
    /// through the normalizer); returns every record's p_row_id.
    pub async fn publish_events(&self, feed: Feed, pages: u64, per_page: u64) -> Vec<String> {
        let sim = opsim::Sim::new(opsim::SimConfig {
            backfill: pages * per_page,
            ..Default::default()
        });
        let source = Source::for_account("acme", None, Some("ACME"));
        let acme = AccountName::new("acme").unwrap();
        let mut index = LookupIndex::new();
        let mut ids = Vec::new();
        for p in 0..pages {
            let items: Vec<Value> = (p * per_page..(p + 1) * per_page)
                .map(|i| sim.event(feed, i))
                .collect();
            let raw = serde_json::to_vec(&json!({"cursor": "c", "has_more": true, "items": items}))
                .unwrap();
            let page = normalize_page(
                &raw,
                feed,
                &source,
                &mut index,
                time::OffsetDateTime::now_utc(),
            );
            for line in page.ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let v: Value = serde_json::from_slice(line).unwrap();
                ids.push(v["p_row_id"].as_str().unwrap().to_owned());
            }
            self.bus
                .publish(
                    Outgoing::new(
                        names::events_subject(&acme, feed),
                        format!("events:{feed}:{p}"),
                        page.ndjson,
                    )
                    .header(header::ACCOUNT, "acme")
                    .header(header::FEED, feed)
                    .header(header::COUNT, page.count),
                )
                .await
                .unwrap();
        }
        ids
    }

    /// Waits until sink `sink` has taken every message up to stream sequence `through` and
    /// acknowledged all it took.
    pub async fn wait_sink_done(&self, sink: &str, through: u64) {
        let what = format!("sink {sink} done through sequence {through}");
        oprelay_testkit::eventually(std::time::Duration::from_secs(30), &what, || async {
            let stream = self
                .bus
                .jetstream()
                .get_stream(names::STREAM_EVENTS)
                .await
                .ok()?;
            let info = stream
                .consumer_info(names::sink_consumer(sink))
                .await
                .ok()?;
            (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.delivered.stream_sequence >= through)
                .then_some(())
        })
        .await;
    }

    pub async fn dlq(&self) -> Vec<(String, Vec<u8>)> {
        let Ok(mut s) = self.bus.jetstream().get_stream(names::STREAM_DLQ).await else {
            return vec![];
        };
        let last = s.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(m) = s.get_raw_message(seq).await {
                let err = oprelay_bus::header_value(Some(&m.headers), header::ERROR)
                    .unwrap_or_default()
                    .to_owned();
                out.push((err, m.payload.to_vec()));
            }
        }
        out
    }
}

pub struct Forwarder {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), oprelay_forwarder::ForwarderError>>,
}

impl Forwarder {
    pub fn start(config: Config) -> Forwarder {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(oprelay_forwarder::run(config, shutdown.clone()));
        Forwarder { shutdown, task }
    }

    /// With refusals that need an operator retried within 50–200 ms instead of 30 s–5 min.
    pub fn start_quick_operator_retry(config: Config) -> Forwarder {
        let shutdown = CancellationToken::new();
        let options = oprelay_forwarder::Options {
            operator_retry: (
                std::time::Duration::from_millis(50),
                std::time::Duration::from_millis(200),
            ),
        };
        let task = tokio::spawn(oprelay_forwarder::run_with(
            config,
            options,
            shutdown.clone(),
        ));
        Forwarder { shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(10), self.task)
            .await
            .expect("stops within 10 s")
            .unwrap()
            .unwrap();
    }

    pub fn crash(self) {
        self.task.abort();
    }
}

/// Serves `app` over HTTPS with the test PKI's server certificate, requiring a client
/// certificate signed by the test CA (mutual TLS).
pub async fn serve_tls(app: Router, pki: &oprelay_testkit::TestPki) -> SocketAddr {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
    oprelay_bus::install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&pki.ca_cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

    struct TlsListener {
        tcp: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    }
    impl axum::serve::Listener for TlsListener {
        type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
        type Addr = SocketAddr;
        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let Ok((tcp, addr)) = self.tcp.accept().await else {
                    continue;
                };
                // A client that fails the handshake (no client certificate) is just dropped.
                if let Ok(tls) = self.acceptor.accept(tcp).await {
                    return (tls, addr);
                }
            }
        }
        fn local_addr(&self) -> std::io::Result<SocketAddr> {
            self.tcp.local_addr()
        }
    }
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(TlsListener { tcp, acceptor }, app).await });
    addr
}

#[allow(unused_imports)]
pub use oprelay_testkit::receivers::*;
