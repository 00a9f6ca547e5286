//! Forwarder test set-up: a real nats-server, normalized batches in OP_EVENTS, the forwarder
//! in-process, and SIEM receivers that check the protocol as strictly as the real servers.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
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
            "[nats]\nurl = \"{}\"\nack_wait = \"2s\"\n[telemetry]\nlisten = \"127.0.0.1:0\"\n{sinks}",
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

/// The receivers' shared state: what arrived, and failures to answer with next.
#[derive(Default)]
pub struct Recv {
    pub fail_next: VecDeque<(u16, String)>,
    pub down: bool,
    /// Generic HTTP: refuse bodies larger than this with 413, as a real endpoint's limit does.
    pub max_body: Option<usize>,
    /// Elasticsearch: the `Authorization` header it requires, when security is on.
    pub expect_auth: Option<String>,
    pub requests: usize,
    /// Generic HTTP: every NDJSON line received.
    pub lines: Vec<Value>,
    /// Elasticsearch: documents by `_id`, and how many `create`s met an existing one.
    pub docs: HashMap<String, (String, Value)>,
    pub conflicts: usize,
    /// Elasticsearch: `_id`s to answer 429 for, this many times.
    pub throttle: HashMap<String, usize>,
    /// Splunk: events received, and ack ids handed out / asked about.
    pub hec_events: Vec<Value>,
    pub next_ack: u64,
    pub acks_polled: HashMap<u64, usize>,
}

pub type Shared = Arc<Mutex<Recv>>;

pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn body_bytes(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    } else {
        body.to_vec()
    }
}

fn injected(state: &Shared) -> Option<Response> {
    let mut s = state.lock().unwrap();
    s.requests += 1;
    if s.down {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "down").into_response());
    }
    s.fail_next.pop_front().map(|(code, body)| {
        let mut r = (StatusCode::from_u16(code).unwrap(), body).into_response();
        if code == 429 {
            r.headers_mut().insert("retry-after", "1".parse().unwrap());
        }
        r
    })
}

/// A generic HTTP receiver: NDJSON or a JSON array, with an optional bearer token.
pub fn http_receiver(state: Shared, token: Option<&'static str>) -> Router {
    Router::new()
        .route(
            "/ingest",
            post(
                move |State(state): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                    if let Some(r) = injected(&state) {
                        return r;
                    }
                    if let Some(t) = token {
                        if headers.get("authorization").and_then(|v| v.to_str().ok())
                            != Some(&format!("Bearer {t}"))
                        {
                            return (StatusCode::UNAUTHORIZED, "bad token").into_response();
                        }
                    }
                    let body = body_bytes(&headers, &body);
                    if state
                        .lock()
                        .unwrap()
                        .max_body
                        .is_some_and(|m| body.len() > m)
                    {
                        return (StatusCode::PAYLOAD_TOO_LARGE, "request entity too large")
                            .into_response();
                    }
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let lines: Vec<Value> = if ct == "application/json" {
                        match serde_json::from_slice::<Vec<Value>>(&body) {
                            Ok(v) => v,
                            Err(_) => {
                                return (StatusCode::BAD_REQUEST, "not a JSON array")
                                    .into_response()
                            }
                        }
                    } else {
                        let mut v = Vec::new();
                        for l in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                            match serde_json::from_slice(l) {
                                Ok(x) => v.push(x),
                                Err(_) => {
                                    return (StatusCode::BAD_REQUEST, "a line is not JSON")
                                        .into_response()
                                }
                            }
                        }
                        v
                    };
                    state.lock().unwrap().lines.extend(lines);
                    StatusCode::OK.into_response()
                },
            ),
        )
        .with_state(state)
}

/// Elasticsearch `_bulk`, as strict as the real one about framing, actions and ids.
pub fn es_receiver(state: Shared) -> Router {
    Router::new()
        .route(
            "/_bulk",
            post(|State(state): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                if let Some(r) = injected(&state) {
                    return r;
                }
let wanted = state.lock().unwrap().expect_auth.clone();
                if let Some(w) = wanted {
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(w.as_str()) {
                        return (StatusCode::UNAUTHORIZED, "security_exception").into_response();
                    }
                }
                                let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
                if ct != "application/x-ndjson" && ct != "application/json" {
                    return (StatusCode::NOT_ACCEPTABLE, "Content-Type header [] is not supported").into_response();
                }
                let body = body_bytes(&headers, &body);
                if !body.ends_with(b"\n") {
                    return (StatusCode::BAD_REQUEST, "The bulk request must be terminated by a newline [\\n]").into_response();
                }
                let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
                if !lines.len().is_multiple_of(2) {
                    return (StatusCode::BAD_REQUEST, "action without a source").into_response();
                }
                let mut items = Vec::new();
                let mut errors = false;
                let mut s = state.lock().unwrap();
                for pair in lines.chunks(2) {
                    let Ok(action) = serde_json::from_slice::<Value>(pair[0]) else {
                        return (StatusCode::BAD_REQUEST, "Malformed action/metadata line").into_response();
                    };
                    let Some(create) = action.get("create") else {
                        return (StatusCode::BAD_REQUEST, "expected a create action").into_response();
                    };
                    let (Some(index), Some(id)) = (create["_index"].as_str(), create["_id"].as_str()) else {
                        return (StatusCode::BAD_REQUEST, "create needs _index and _id").into_response();
                    };
                    if index.chars().any(|c| c.is_ascii_uppercase()) {
                        return (StatusCode::BAD_REQUEST, "invalid_index_name_exception: must be lowercase").into_response();
                    }
                    let Ok(doc) = serde_json::from_slice::<Value>(pair[1]) else {
                        return (StatusCode::BAD_REQUEST, "source is not JSON").into_response();
                    };
                    let (status, error) = if let Some(n) = s.throttle.get_mut(id).filter(|n| **n > 0) {
                        *n -= 1;
                        (429, Some(json!({"type": "es_rejected_execution_exception", "reason": "rejected execution: write queue full"})))
                    } else if doc.to_string().contains("MAPPING_BOOM") {
                        (400, Some(json!({"type": "document_parsing_exception", "reason": "failed to parse field [uuid] of type [long]"})))
                    } else if s.docs.contains_key(id) {
                        s.conflicts += 1;
                        (409, Some(json!({"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")})))
                    } else {
                        s.docs.insert(id.to_owned(), (index.to_owned(), doc));
                        (201, None)
                    };
                    errors |= error.is_some();
                    let mut item = json!({"_index": index, "_id": id, "status": status});
                    if let Some(e) = error {
                        item["error"] = e;
                    } else {
                        item["result"] = json!("created");
                    }
                    items.push(json!({"create": item}));
                }
                Json(json!({"took": 3, "errors": errors, "items": items})).into_response()
            }),
        )
        .with_state(state)
}

/// Splunk HEC: token auth, concatenated event envelopes with numeric `time`, indexer acks.
pub fn hec_receiver(state: Shared, token: &'static str, ack: bool) -> Router {
    Router::new()
        .route(
            "/services/collector/event",
            post(move |State(state): State<Shared>, headers: HeaderMap, body: Bytes| async move {
                if let Some(r) = injected(&state) {
                    return r;
                }
                match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                    None => return (StatusCode::UNAUTHORIZED, Json(json!({"text": "Token is required", "code": 2}))).into_response(),
                    Some(a) if !a.starts_with("Splunk ") => return (StatusCode::UNAUTHORIZED, Json(json!({"text": "Invalid authorization", "code": 3}))).into_response(),
                    Some(a) if a != format!("Splunk {token}") => return (StatusCode::FORBIDDEN, Json(json!({"text": "Invalid token", "code": 4}))).into_response(),
                    _ => {}
                }
                let channel = headers.get("x-splunk-request-channel").and_then(|v| v.to_str().ok()).map(str::to_owned);
                if ack && channel.is_none() {
                    return (StatusCode::BAD_REQUEST, Json(json!({"text": "Data channel is missing", "code": 10}))).into_response();
                }
                let body = body_bytes(&headers, &body);
                let mut events = Vec::new();
                for (i, v) in serde_json::Deserializer::from_slice(&body).into_iter::<Value>().enumerate() {
                    let ok = v.as_ref().ok().filter(|v| v["time"].is_number() && v.get("event").is_some_and(|e| !e.is_null()));
                    match ok {
                        Some(v) if !v["event"].to_string().contains("HEC_BOOM") => events.push(v.clone()),
                        _ => return (StatusCode::BAD_REQUEST, Json(json!({"text": "Invalid data format", "code": 6, "invalid-event-number": i}))).into_response(),
                    }
                }
                if events.is_empty() {
                    return (StatusCode::BAD_REQUEST, Json(json!({"text": "No data", "code": 5}))).into_response();
                }
                let mut s = state.lock().unwrap();
                s.hec_events.extend(events);
                if ack {
                    s.next_ack += 1;
                    let id = s.next_ack;
                    Json(json!({"text": "Success", "code": 0, "ackId": id})).into_response()
                } else {
                    Json(json!({"text": "Success", "code": 0})).into_response()
                }
            }),
        )
        .route(
            "/services/collector/ack",
            post(|State(state): State<Shared>, Json(req): Json<Value>| async move {
                let mut s = state.lock().unwrap();
                let mut acks = serde_json::Map::new();
                for id in req["acks"].as_array().into_iter().flatten().filter_map(Value::as_u64) {
                    // Not indexed on the first poll, indexed from the second on.
                    let polls = s.acks_polled.entry(id).or_insert(0);
                    *polls += 1;
                    acks.insert(id.to_string(), json!(*polls > 1 && id <= s.next_ack));
                }
                Json(json!({"acks": acks}))
            }),
        )
        .with_state(state)
}
