//! SIEM receivers for tests and the demo, as strict about the protocol as the real servers:
//! a generic HTTP NDJSON endpoint (Panther's HTTP source shape), Elasticsearch `_bulk`, and
//! Splunk HEC with indexer acknowledgement. Failures can be injected to test retries.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

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
    /// Splunk: answer every ack poll with this status and body (a channel error, say).
    pub hec_ack_error: Option<(u16, Value)>,
    /// Splunk: behind a load balancer that keeps a client on one indexer only by its cookie:
    /// an ack poll without the cookie reaches another indexer, which knows no ack id.
    pub hec_sticky: bool,
    /// Splunk: indexing is never confirmed (every ack stays false).
    pub hec_ack_never: bool,
    /// Splunk: ack polls received, answered or not.
    pub hec_ack_polls: usize,
    /// When set, every record received (NDJSON line or Elasticsearch document) is appended
    /// here instead of kept in memory: the demo's receiver runs for as long as one likes.
    pub tee: Option<std::fs::File>,
    /// Records received, kept or teed.
    pub received: usize,
    /// Generic HTTP: answer every request with this 3xx status and `Location: /elsewhere`,
    /// as a misconfigured proxy or a moved endpoint does.
    pub redirect: Option<u16>,
    /// Generic HTTP: requests that arrived at `/elsewhere` (a client that followed a redirect).
    pub followed: usize,
    /// Generic HTTP and Elasticsearch: refuse every request with this status and body, as a
    /// proxy in the way or a read-only endpoint does.
    pub refuse: Option<(u16, String)>,
    /// Generic HTTP: answer a delivery with a body of this many bytes (a misbehaving
    /// endpoint, or a proxy's error page), to check that clients bound what they read.
    pub reply_padding: usize,
    /// Generic HTTP: a header every request must carry with this value, else 401.
    pub expect_header: Option<(String, String)>,
    /// Elasticsearch: `_id`s answered with a mapping error (400 `document_parsing_exception`)
    /// for as long as they are here, as a field type conflict is until the mapping is fixed.
    pub mapping_errors: std::collections::HashSet<String>,
    /// Elasticsearch: answer every `_bulk` item with this status and error object, as a
    /// read-only index (403 `cluster_block_exception`) or a missing one does.
    pub item_error: Option<(u16, Value)>,
    /// Elasticsearch: index templates by name (`PUT _index_template/{name}`); documents for a
    /// matching index are checked against the template's mappings.
    pub templates: HashMap<String, Value>,
    /// Elasticsearch: documents that were checked against a template's mappings and fit.
    pub template_checked: usize,
}

impl Recv {
    fn keep(&mut self, records: Vec<Value>) {
        self.received += records.len();
        if let Some(f) = &mut self.tee {
            for r in &records {
                let _ = writeln!(f, "{r}");
            }
        } else {
            self.lines.extend(records);
        }
    }
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
    if let Some((code, body)) = s.refuse.clone() {
        return Some((StatusCode::from_u16(code).unwrap(), body).into_response());
    }
    if let Some(code) = s.redirect {
        let mut r = StatusCode::from_u16(code)
            .unwrap_or(StatusCode::TEMPORARY_REDIRECT)
            .into_response();
        r.headers_mut()
            .insert("location", "/elsewhere".parse().unwrap());
        return Some(r);
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
                    if let Some(r) = injected(&state).or_else(|| refused(&state, &headers, token)) {
                        return r;
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
                    let ct = content_type(&headers).to_owned();
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
                    let mut s = state.lock().unwrap();
                    s.keep(lines);
                    let padding = s.reply_padding;
                    (StatusCode::OK, "x".repeat(padding)).into_response()
                },
            ),
        )
        // Where redirects point: it takes anything, so a client that follows one and counts
        // the 200 as delivered has lost the records.
        .route(
            "/elsewhere",
            axum::routing::any(|State(state): State<Shared>| async move {
                state.lock().unwrap().followed += 1;
                StatusCode::OK
            }),
        )
        .with_state(state)
}

/// What the HTTP receiver refuses unread: a body of unannounced length (as collectors that
/// refuse chunked bodies do), a missing expected header, a wrong bearer token.
fn refused(state: &Shared, headers: &HeaderMap, token: Option<&str>) -> Option<Response> {
    if !headers.contains_key("content-length") || headers.contains_key("transfer-encoding") {
        return Some((StatusCode::LENGTH_REQUIRED, "a Content-Length is required").into_response());
    }
    let wanted = state.lock().unwrap().expect_header.clone();
    if let Some((name, value)) = wanted {
        if headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str()) {
            return Some((StatusCode::UNAUTHORIZED, "missing API key").into_response());
        }
    }
    if let Some(t) = token {
        if headers.get("authorization").and_then(|v| v.to_str().ok())
            != Some(&format!("Bearer {t}"))
        {
            return Some((StatusCode::UNAUTHORIZED, "bad token").into_response());
        }
    }
    None
}

/// The request's `Content-Type`, empty when it has none.
fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Elasticsearch `_bulk`, as strict as the real one about framing, actions and ids.
/// Elasticsearch refuses a request without the credentials it requires.
fn es_auth(state: &Shared, headers: &HeaderMap) -> Option<Response> {
    let wanted = state.lock().unwrap().expect_auth.clone()?;
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    (given != Some(wanted.as_str()))
        .then(|| (StatusCode::UNAUTHORIZED, "security_exception").into_response())
}

pub fn es_receiver(state: Shared) -> Router {
    Router::new()
        .route("/", get(es_root))
        .route("/_index_template/{name}", put(es_put_template))
        .route("/_bulk", post(es_bulk))
        .with_state(state)
}

/// `GET /`: the cluster's banner, which clients read to learn the version.
async fn es_root(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = es_auth(&state, &headers) {
        return r;
    }
    Json(json!({"name": "es-test", "cluster_name": "oprelay-test", "version": {"number": "8.15.0"}, "tagline": "You Know, for Search"})).into_response()
}

/// `PUT /_index_template/{name}`: validated as Elasticsearch would, kept for the mapping
/// checks of later documents.
async fn es_put_template(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = es_auth(&state, &headers) {
        return r;
    }
    let ct = content_type(&headers);
    if !ct.starts_with("application/json") {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "Content-Type header is not supported",
        )
            .into_response();
    }
    let Ok(template) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "x_content_parse_exception").into_response();
    };
    if let Err(e) = crate::es_mapping::validate_template(&template) {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"type": "illegal_argument_exception", "reason": e}, "status": 400}))).into_response();
    }
    let mut s = state.lock().unwrap();
    // Two templates with the same priority may not claim the same pattern.
    let clash = s.templates.iter().find(|(other, t)| {
        *other != &name
            && t["priority"] == template["priority"]
            && t["index_patterns"] == template["index_patterns"]
    });
    if let Some((other, _)) = clash {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": {"type": "illegal_argument_exception", "reason": format!("index template [{name}] has index patterns matching patterns from existing template [{other}] with the same priority")}, "status": 400}))).into_response();
    }
    s.templates.insert(name, template);
    Json(json!({"acknowledged": true})).into_response()
}

/// `POST /_bulk`: `create` actions only, each item judged on its own.
async fn es_bulk(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = injected(&state) {
        return r;
    }
    if let Some(r) = es_auth(&state, &headers) {
        return r;
    }
    let ct = content_type(&headers);
    if ct != "application/x-ndjson" && ct != "application/json" {
        return (
            StatusCode::NOT_ACCEPTABLE,
            "Content-Type header [] is not supported",
        )
            .into_response();
    }
    let body = body_bytes(&headers, &body);
    if !body.ends_with(b"\n") {
        return (
            StatusCode::BAD_REQUEST,
            "The bulk request must be terminated by a newline [\\n]",
        )
            .into_response();
    }
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if !lines.len().is_multiple_of(2) {
        return (StatusCode::BAD_REQUEST, "action without a source").into_response();
    }
    let mut items = Vec::new();
    let mut errors = false;
    let mut s = state.lock().unwrap();
    for pair in lines.chunks(2) {
        match es_bulk_item(&mut s, pair[0], pair[1]) {
            Ok((item, failed)) => {
                errors |= failed;
                items.push(json!({"create": item}));
            }
            Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
        }
    }
    Json(json!({"took": 3, "errors": errors, "items": items})).into_response()
}

/// The index template that applies to `index`: the highest priority of those matching.
fn template_for<'a>(s: &'a Recv, index: &str) -> Option<&'a Value> {
    s.templates
        .values()
        .filter(|t| {
            t["index_patterns"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| crate::es_mapping::pattern_matches(p.as_str().unwrap_or_default(), index))
        })
        .max_by_key(|t| t["priority"].as_i64().unwrap_or(0))
}

/// One `create` of a bulk request: the item's reply and whether it failed, or why the whole
/// request is refused (a 400).
fn es_bulk_item(
    s: &mut Recv,
    action_line: &[u8],
    source_line: &[u8],
) -> Result<(Value, bool), &'static str> {
    let Ok(action) = serde_json::from_slice::<Value>(action_line) else {
        return Err("Malformed action/metadata line");
    };
    let Some(create) = action.get("create") else {
        return Err("expected a create action");
    };
    let (Some(index), Some(id)) = (create["_index"].as_str(), create["_id"].as_str()) else {
        return Err("create needs _index and _id");
    };
    if index.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("invalid_index_name_exception: must be lowercase");
    }
    let Ok(doc) = serde_json::from_slice::<Value>(source_line) else {
        return Err("source is not JSON");
    };
    let mapping = template_for(s, index)
        .map(|t| crate::es_mapping::check_document(&t["template"]["mappings"], &doc));
    let (status, error) = if let Some((status, error)) = s.item_error.clone() {
        (status, Some(error))
    } else if let Some(Err(reason)) = &mapping {
        (
            400,
            Some(json!({"type": "document_parsing_exception", "reason": reason})),
        )
    } else if let Some(n) = s.throttle.get_mut(id).filter(|n| **n > 0) {
        *n -= 1;
        (
            429,
            Some(
                json!({"type": "es_rejected_execution_exception", "reason": "rejected execution: write queue full"}),
            ),
        )
    } else if doc.to_string().contains("MAPPING_BOOM") || s.mapping_errors.contains(id) {
        (
            400,
            Some(
                json!({"type": "document_parsing_exception", "reason": "failed to parse field [uuid] of type [long]"}),
            ),
        )
    } else if s.docs.contains_key(id) {
        s.conflicts += 1;
        (
            409,
            Some(
                json!({"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")}),
            ),
        )
    } else {
        if let Some(f) = &mut s.tee {
            let _ = writeln!(f, "{doc}");
        }
        s.received += 1;
        s.template_checked += usize::from(mapping.is_some());
        s.docs.insert(id.to_owned(), (index.to_owned(), doc));
        (201, None)
    };
    let failed = error.is_some();
    let mut item = json!({"_index": index, "_id": id, "status": status});
    if let Some(e) = error {
        item["error"] = e;
    } else {
        item["result"] = json!("created");
    }
    Ok((item, failed))
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
                    let mut r = Json(json!({"text": "Success", "code": 0, "ackId": id})).into_response();
                    if s.hec_sticky {
                        r.headers_mut().insert("set-cookie", "hec-node=indexer-1; Path=/".parse().unwrap());
                    }
                    r
                } else {
                    Json(json!({"text": "Success", "code": 0})).into_response()
                }
            }),
        )
        .route(
            "/services/collector/ack",
            post(|State(state): State<Shared>, headers: HeaderMap, Json(req): Json<Value>| async move {
                let mut s = state.lock().unwrap();
                s.hec_ack_polls += 1;
                if let Some((code, body)) = s.hec_ack_error.clone() {
                    return (StatusCode::from_u16(code).unwrap(), Json(body)).into_response();
                }
                let same_indexer = !s.hec_sticky
                    || headers
                        .get("cookie")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|c| c.contains("hec-node=indexer-1"));
                let never = s.hec_ack_never;
                let mut acks = serde_json::Map::new();
                for id in req["acks"].as_array().into_iter().flatten().filter_map(Value::as_u64) {
                    // Not indexed on the first poll, indexed from the second on.
                    let polls = s.acks_polled.entry(id).or_insert(0);
                    *polls += 1;
                    let indexed = *polls > 1 && id <= s.next_ack && same_indexer && !never;
                    acks.insert(id.to_string(), json!(indexed));
                }
                Json(json!({"acks": acks})).into_response()
            }),
        )
        .with_state(state)
}
