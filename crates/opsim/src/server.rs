//! The HTTP surface: the Events API routes, and the `/_sim` control API (`control.rs`).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use oprelay_events::Feed;

use crate::control;
use crate::faults::FaultKind;
use crate::timeline::CursorState;
use crate::token::Rejection;
use crate::{generate, RequestRecord, Sim};

pub fn router(sim: Sim) -> Router {
    Router::new()
        .route("/api/{version}/{endpoint}", post(data))
        .route("/api/v2/auth/introspect", get(introspect_v2))
        .route("/api/auth/introspect", get(introspect_v1))
        .route("/_sim/tokens", post(control::mint))
        .route("/_sim/tokens/revoke", post(control::revoke))
        .route("/_sim/tokens/restore", post(control::restore))
        .route(
            "/_sim/faults",
            post(control::add_faults).delete(control::clear_faults),
        )
        .route("/_sim/requests", get(control::requests))
        .route("/_sim/directory", get(control::directory))
        .with_state(sim)
}

/// Which documented error body shape to answer with.
#[derive(Clone, Copy)]
enum ErrorShape {
    /// `{"Error":{"Message":…}}`: spec 1.2, what v1 endpoints were seen returning.
    Legacy,
    /// `{"status":…,"message":…}`: spec 1.4.1.
    Current,
}

/// What the locked part of a request decided; the async part then waits or streams.
enum Reply {
    Json {
        status: StatusCode,
        body: Vec<u8>,
        retry_after: Option<u64>,
    },
    Truncated(Vec<u8>),
    Malformed,
}

fn error(shape: ErrorShape, status: StatusCode, message: &str) -> Reply {
    let body = match shape {
        ErrorShape::Legacy => json!({"Error": {"Message": message}}),
        ErrorShape::Current => json!({"status": status.as_u16(), "message": message}),
    };
    Reply::Json {
        status,
        body: body.to_string().into_bytes(),
        retry_after: None,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Json {
                status,
                body,
                retry_after,
            } => {
                let mut resp =
                    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
                if let Some(secs) = retry_after {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                resp
            }
            Reply::Truncated(full) => {
                let half = Bytes::copy_from_slice(&full[..full.len() / 2]);
                // Send the first half, give it time to reach the client, then fail the body so
                // hyper drops the connection short of Content-Length.
                let chunks = futures::stream::unfold(0u8, move |stage| {
                    let half = half.clone();
                    async move {
                        match stage {
                            0 => Some((Ok(half), 1)),
                            1 => {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                let err =
                                    std::io::Error::other("opsim: connection dropped mid-body");
                                Some((Err::<Bytes, _>(err), 2))
                            }
                            _ => None,
                        }
                    }
                });
                let mut resp = Response::new(Body::from_stream(chunks));
                let headers = resp.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
                resp
            }
            Reply::Malformed => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            )
                .into_response(),
        }
    }
}

fn status_of(reply: &Reply) -> u16 {
    match reply {
        Reply::Json { status, .. } => status.as_u16(),
        Reply::Truncated(_) | Reply::Malformed => 200,
    }
}

/// A validated request body.
enum PageRequest {
    Cursor(String),
    Reset {
        limit: u32,
        start: OffsetDateTime,
        end: Option<OffsetDateTime>,
    },
}

fn parse_time(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<OffsetDateTime>, String> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339)
            .map(Some)
            .map_err(|_| format!("{key} must be an RFC 3339 date-time")),
        Some(_) => Err(format!("{key} must be an RFC 3339 date-time string")),
    }
}

fn parse_request(body: &[u8], now: OffsetDateTime) -> Result<PageRequest, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| "request body is not valid JSON".to_owned())?;
    let obj = value
        .as_object()
        .ok_or_else(|| "request body must be a JSON object".to_owned())?;
    let reset_keys: Vec<&str> = ["limit", "start_time", "end_time"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    if let Some(cursor) = obj.get("cursor") {
        if !reset_keys.is_empty() {
            return Err(format!(
                "a cursor request cannot also carry {}",
                reset_keys.join(", ")
            ));
        }
        return match cursor {
            Value::String(s) => Ok(PageRequest::Cursor(s.clone())),
            _ => Err("cursor must be a string".to_owned()),
        };
    }
    let limit = match obj.get("limit") {
        None => 100,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1000) => n as u32,
            _ => return Err("limit must be an integer between 1 and 1000".to_owned()),
        },
    };
    let end = parse_time(obj, "end_time")?;
    let start = parse_time(obj, "start_time")?.unwrap_or(end.unwrap_or(now) - Duration::HOUR);
    if end.is_some_and(|e| e < start) {
        return Err("end_time must not be before start_time".to_owned());
    }
    Ok(PageRequest::Reset { limit, start, end })
}

impl Sim {
    /// Authenticates, rate-limits and counts a request; the reply when it is refused.
    fn admit(
        &self,
        shape: ErrorShape,
        token: Option<&str>,
        feed: Option<Feed>,
        now: OffsetDateTime,
    ) -> Result<crate::token::Accepted, Reply> {
        let mut inner = self.lock();
        let accepted = inner
            .tokens
            .check(token, feed, now)
            .map_err(|r: Rejection| error(shape, StatusCode::UNAUTHORIZED, r.message()))?;
        if let Some(limits) = inner.config.rate_limits {
            if let Err(wait) = inner.limiter.admit(&limits, &accepted.jti, now) {
                let mut reply = error(shape, StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
                if limits.retry_after_header {
                    if let Reply::Json { retry_after, .. } = &mut reply {
                        *retry_after = Some(wait.whole_seconds().max(1) as u64);
                    }
                }
                return Err(reply);
            }
        }
        Ok(accepted)
    }

    fn page(
        &self,
        shape: ErrorShape,
        v2: bool,
        feed: Feed,
        token: Option<&str>,
        body: &[u8],
    ) -> (Reply, Option<Duration>) {
        let now = self.clock.now();
        if let Err(reply) = self.admit(shape, token, Some(feed), now) {
            return (reply, None);
        }
        let mut inner = self.lock();
        let fault = {
            let inner = &mut *inner;
            inner.faults.take(feed, &mut inner.rng)
        };
        let delay = match fault_reply(shape, fault.as_ref()) {
            Ok(delay) => delay,
            Err(reply) => return (reply, None),
        };
        let request = match parse_request(body, now) {
            Ok(r) => r,
            Err(msg) => return (error(shape, StatusCode::BAD_REQUEST, &msg), None),
        };
        let cursor = match self.cursor_of(request, feed, &inner.timeline) {
            Ok(c) => c,
            Err(msg) => return (error(shape, StatusCode::BAD_REQUEST, msg), None),
        };
        let available = inner
            .timeline
            .available(now)
            .min(cursor.end.unwrap_or(u64::MAX));
        let (timeline, directory) = (inner.timeline.clone(), inner.directory.clone());
        // Generate outside the lock so concurrent feeds are served in parallel.
        drop(inner);
        let from = cursor.position.min(available);
        let to = (from + u64::from(cursor.limit)).min(available);
        let next = CursorState {
            position: to,
            ..cursor.clone()
        };
        if let (true, None, Some(rendered)) = (v2, &fault, self.rendered(feed, from, to)) {
            // Pre-rendered (benchmarks): the same bytes, assembled instead of generated.
            let slot = Feed::ALL.iter().position(|f| *f == feed).unwrap_or(0);
            let items = &rendered[slot][from as usize..to as usize];
            return (prerendered_reply(items, &next, to < available), delay);
        }
        let items: Vec<Value> = (from..to)
            .map(|i| {
                let arrival = timeline.arrival(i);
                let mut ev = generate::event(&directory, self.seed, feed, i, arrival);
                if !v2 {
                    generate::strip_v2_fields(&mut ev);
                }
                ev
            })
            .collect();
        let mut items = items;
        if let (Some(FaultKind::Oversized { bytes }), Some(first)) = (&fault, items.first_mut()) {
            first["padding"] = Value::String("p".repeat(*bytes));
        }
        let body = json!({"cursor": next.encode(), "has_more": to < available, "items": items});
        let body = body.to_string().into_bytes();
        let reply = if matches!(fault, Some(FaultKind::Truncate)) {
            Reply::Truncated(body)
        } else {
            Reply::Json {
                status: StatusCode::OK,
                body,
                retry_after: None,
            }
        };
        (reply, delay)
    }

    /// Where a request starts: its cursor, or the first event at or after its start time.
    fn cursor_of(
        &self,
        request: PageRequest,
        feed: Feed,
        timeline: &crate::timeline::Timeline,
    ) -> Result<CursorState, &'static str> {
        match request {
            PageRequest::Cursor(c) => {
                CursorState::decode(&c, feed, self.seed).ok_or("invalid cursor")
            }
            PageRequest::Reset { limit, start, end } => Ok(CursorState {
                feed: feed.api_name().to_owned(),
                position: timeline.first_at_or_after(start),
                limit,
                end: end.map(|e| timeline.first_at_or_after(e)),
                seed: self.seed,
            }),
        }
    }
}

/// The reply a fault calls for instead of a page (`Err`), or how long to delay the page.
fn fault_reply(shape: ErrorShape, fault: Option<&FaultKind>) -> Result<Option<Duration>, Reply> {
    match fault {
        Some(FaultKind::Status {
            status,
            retry_after,
        }) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut reply = error(shape, status, status.canonical_reason().unwrap_or("Error"));
            if let Reply::Json {
                retry_after: ra, ..
            } = &mut reply
            {
                *ra = *retry_after;
            }
            Err(reply)
        }
        Some(FaultKind::Malformed) => Err(Reply::Malformed),
        Some(FaultKind::Slow { delay_ms }) => Ok(Some(Duration::milliseconds(*delay_ms as i64))),
        Some(FaultKind::Truncate) | Some(FaultKind::Oversized { .. }) | None => Ok(None),
    }
}

/// A page assembled from pre-rendered items: the same bytes the generator would serve.
fn prerendered_reply(items: &[Box<str>], next: &CursorState, has_more: bool) -> Reply {
    let mut body = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 200);
    body.push_str("{\"cursor\":");
    body.push_str(&Value::String(next.encode()).to_string());
    body.push_str(if has_more {
        ",\"has_more\":true,\"items\":["
    } else {
        ",\"has_more\":false,\"items\":["
    });
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    Reply::Json {
        status: StatusCode::OK,
        body: body.into_bytes(),
        retry_after: None,
    }
}

async fn data(
    State(sim): State<Sim>,
    Path((version, endpoint)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (shape, v2) = match version.as_str() {
        "v1" => (ErrorShape::Legacy, false),
        "v2" => (ErrorShape::Current, true),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let Some(feed) = Feed::from_api_name(&endpoint) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let at = sim.clock.now();
    let (reply, delay) = sim.page(shape, v2, feed, bearer(&headers), &body);
    sim.record(RequestRecord {
        at,
        path: format!("/api/{version}/{endpoint}"),
        feed: Some(feed),
        status: status_of(&reply),
        body: Some(String::from_utf8_lossy(&body).into_owned()),
    });
    if let Some(d) = delay {
        tokio::time::sleep(d.unsigned_abs()).await;
    }
    reply.into_response()
}

async fn introspect(sim: Sim, headers: HeaderMap, v2: bool) -> Response {
    let now = sim.clock.now();
    let shape = if v2 {
        ErrorShape::Current
    } else {
        ErrorShape::Legacy
    };
    let path = if v2 {
        "/api/v2/auth/introspect"
    } else {
        "/api/auth/introspect"
    };
    let reply = match sim.admit(shape, bearer(&headers), None, now) {
        Err(reply) => reply,
        Ok(accepted) => {
            let issued_at = accepted.issued_at.format(&Rfc3339).unwrap_or_default();
            let body = if v2 {
                json!({"uuid": accepted.claims.sub, "issued_at": issued_at,
                       "features": accepted.claims.features, "account_uuid": accepted.claims.account_uuid})
            } else {
                json!({"UUID": accepted.claims.sub, "IssuedAt": issued_at, "Features": accepted.claims.features})
            };
            Reply::Json {
                status: StatusCode::OK,
                body: body.to_string().into_bytes(),
                retry_after: None,
            }
        }
    };
    sim.record(RequestRecord {
        at: now,
        path: path.to_owned(),
        feed: None,
        status: status_of(&reply),
        body: None,
    });
    reply.into_response()
}

async fn introspect_v2(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    introspect(sim, headers, true).await
}

async fn introspect_v1(State(sim): State<Sim>, headers: HeaderMap) -> Response {
    introspect(sim, headers, false).await
}
