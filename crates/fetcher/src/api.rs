//! The 1Password Events API client.
//!
//! Each failure is classified here, at the source, into what the poller should do about it:
//! wait as told (429), back off (5xx, timeouts, truncated or malformed bodies), or slow down and
//! tell a human (401/403 token rejected, 400 bad request).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

use oprelay_events::{
    CursorRequest, Feed, FetchErrorKind, Introspection, IntrospectionV1, Page, Secret, Timestamp,
};
use oprelay_service::config::ApiVersion;
use oprelay_service::telemetry;

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("rate limited by the Events API (429){}", .retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("token rejected ({status}): {message}; check that the token is valid, not revoked and scoped for this feed")]
    TokenRejected { status: u16, message: String },
    #[error("bad request (400): {message}")]
    BadRequest { message: String },
    #[error("not found (404) at {url}; is base_url the Events API host of this account's region?")]
    NotFound { url: String },
    #[error("Events API server error {status}{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    Server { status: u16, message: String },
    #[error("unexpected HTTP status {status}: {message}")]
    Unexpected { status: u16, message: String },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// What the poller does after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Wait this long (the server said so), then retry.
    WaitExactly(Duration),
    /// Exponential backoff with full jitter, from seconds up to minutes.
    Backoff,
    /// A human has to act; retry every few minutes, never hammer.
    Slow,
}

impl ApiError {
    pub fn recovery(&self) -> Recovery {
        match self {
            ApiError::RateLimited {
                retry_after: Some(d),
            } => Recovery::WaitExactly(*d),
            ApiError::RateLimited { retry_after: None }
            | ApiError::Server { .. }
            | ApiError::Transport(_)
            | ApiError::Malformed(_) => Recovery::Backoff,
            ApiError::TokenRejected { .. }
            | ApiError::BadRequest { .. }
            | ApiError::NotFound { .. }
            | ApiError::Unexpected { .. } => Recovery::Slow,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> FetchErrorKind {
        match self {
            ApiError::RateLimited { .. } => FetchErrorKind::RateLimited,
            ApiError::TokenRejected { .. } => FetchErrorKind::TokenRejected,
            ApiError::BadRequest { .. } => FetchErrorKind::BadRequest,
            ApiError::NotFound { .. } => FetchErrorKind::NotFound,
            ApiError::Server { .. } => FetchErrorKind::ServerError,
            ApiError::Unexpected { .. } => FetchErrorKind::UnexpectedStatus,
            ApiError::Transport(_) => FetchErrorKind::Transport,
            ApiError::Malformed(_) => FetchErrorKind::Malformed,
        }
    }
}

/// A page as received, and what the poller needs from it without building the events.
#[derive(Debug, Clone)]
pub struct FetchedPage {
    /// The body exactly as 1Password sent it; this is what goes to `OP_RAW`.
    pub body: Bytes,
    pub cursor: String,
    pub has_more: bool,
    pub count: usize,
    /// The newest `timestamp` among the items, for the lag metric.
    pub max_event_time: Option<OffsetDateTime>,
}

#[derive(Deserialize)]
struct ItemTime<'a> {
    #[serde(borrow, default)]
    timestamp: Option<Cow<'a, str>>,
}

impl FetchedPage {
    pub fn parse(body: Bytes) -> Result<FetchedPage, ApiError> {
        let page: Page<&RawValue> = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Malformed(format!("not a page envelope ({e})")))?;
        let max_event_time = page
            .items
            .iter()
            .filter_map(|raw| serde_json::from_str::<ItemTime>(raw.get()).ok())
            .filter_map(|it| it.timestamp.and_then(|t| Timestamp::parse(&t).ok()))
            .map(|t| t.instant())
            .max();
        let (cursor, has_more, count) = (page.cursor, page.has_more, page.items.len());
        Ok(FetchedPage {
            cursor,
            has_more,
            count,
            max_event_time,
            body,
        })
    }
}

/// A page cut into bus messages.
#[derive(Debug, Default)]
pub struct Split {
    /// Pages of the same envelope (`cursor`, `has_more`) holding consecutive items.
    pub parts: Vec<Bytes>,
    /// Items too big for any message, with their index in the page; the caller dead-letters
    /// them so the feed moves on instead of retrying a publish that can never succeed.
    pub oversized: Vec<(usize, Bytes)>,
}

/// Splits a page too big for one bus message into pages of the same envelope (`cursor`,
/// `has_more`) holding consecutive items, each item's bytes untouched. A page that fits is
/// returned as it is: body exactly as received.
pub fn split_page(body: &Bytes, limit: usize) -> Split {
    let whole = || Split {
        parts: vec![body.clone()],
        oversized: Vec::new(),
    };
    if body.len() <= limit {
        return whole();
    }
    let Ok(page) = serde_json::from_slice::<Page<&RawValue>>(body) else {
        return whole();
    };
    let head = format!(
        "{{\"cursor\":{},\"has_more\":{},\"items\":[",
        serde_json::to_string(&page.cursor).unwrap_or_default(),
        page.has_more
    );
    let mut split = Split::default();
    let mut cur = head.clone().into_bytes();
    let mut n = 0;
    for (index, item) in page.items.into_iter().enumerate() {
        let raw = item.get().as_bytes();
        if head.len() + raw.len() + 2 > limit {
            split.oversized.push((index, Bytes::copy_from_slice(raw)));
            continue;
        }
        if n > 0 && cur.len() + raw.len() + 3 > limit {
            cur.extend_from_slice(b"]}");
            split.parts.push(Bytes::from(std::mem::replace(
                &mut cur,
                head.clone().into_bytes(),
            )));
            n = 0;
        }
        if n > 0 {
            cur.push(b',');
        }
        cur.extend_from_slice(raw);
        n += 1;
    }
    // Even a page of nothing but oversized items keeps one part: its cursor must be published.
    cur.extend_from_slice(b"]}");
    if n > 0 || split.parts.is_empty() {
        split.parts.push(Bytes::from(cur));
    }
    split
}

/// One account's view of the Events API.
#[derive(Clone)]
pub struct EventsApi {
    http: reqwest::Client,
    base_url: String,
    version: ApiVersion,
    max_body: usize,
}

impl EventsApi {
    pub fn new(base_url: &str, version: ApiVersion) -> Result<EventsApi, ApiError> {
        // No redirects: the token would follow the request to wherever a 3xx points, and a
        // POST would become a GET. A 3xx shows as an unexpected status instead.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("oprelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Transport(format!("cannot build the HTTP client: {e}")))?;
        Ok(EventsApi {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            version,
            max_body: MAX_RESPONSE_BODY,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET /api/v2/auth/introspect`, falling back to the deprecated v1 path on 404.
    pub async fn introspect(&self, token: &Secret) -> Result<Introspection, ApiError> {
        let url = format!("{}/api/v2/auth/introspect", self.base_url);
        match self.get_json::<Introspection>(&url, token).await {
            Err(ApiError::NotFound { .. }) => {
                let url = format!("{}/api/auth/introspect", self.base_url);
                Ok(self.get_json::<IntrospectionV1>(&url, token).await?.into())
            }
            other => other,
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        token: &Secret,
    ) -> Result<T, ApiError> {
        let request = self.http.get(url).header(AUTHORIZATION, bearer(token)?);
        let resp = telemetry::send_traced("GET", url, request)
            .await
            .map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_body(resp, self.max_body).await?;
        check_status(status.as_u16(), &headers, &body, url)?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::Malformed(format!("introspection: {e}")))
    }

    /// One page of `feed`.
    pub async fn fetch(
        &self,
        feed: Feed,
        request: &CursorRequest,
        token: &Secret,
    ) -> Result<FetchedPage, ApiError> {
        let version = match self.version {
            ApiVersion::V1 => "v1",
            ApiVersion::V2 => "v2",
        };
        let url = format!("{}/api/{version}/{}", self.base_url, feed.api_name());
        let body = serde_json::to_vec(request).map_err(|e| ApiError::Malformed(e.to_string()))?;
        let request = self
            .http
            .post(&url)
            .header(AUTHORIZATION, bearer(token)?)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let resp = telemetry::send_traced("POST", &url, request)
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = read_body(resp, self.max_body).await?;
        check_status(status, &headers, &body, &url)?;
        FetchedPage::parse(body)
    }

    /// The largest response body read; see [`MAX_RESPONSE_BODY`].
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

/// The most of a response body the fetcher reads. A page of 1 000 events is 1–3 MB; anything
/// far beyond is not a page, and reading it whole could exhaust the pod's memory.
pub const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// Reads a response body up to `limit` bytes; more is an error, not an allocation.
async fn read_body(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, ApiError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ApiError::Malformed(format!(
            "the response announces {} bytes, more than the {limit} a page can be",
            resp.content_length().unwrap_or_default()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ApiError::Malformed(format!(
                "the response is more than the {limit} bytes a page can be"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// The `Authorization` header, marked sensitive so no debug output of the request shows it.
fn bearer(token: &Secret) -> Result<HeaderValue, ApiError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        ApiError::Malformed("the token has characters a header cannot carry".into())
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn transport(e: reqwest::Error) -> ApiError {
    // reqwest's messages name the URL, never headers, so the token cannot leak through them.
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body cut short"
    } else {
        "request failed"
    };
    ApiError::Transport(format!("{what}: {}", e.without_url()))
}

fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<oprelay_events::ApiError>(body) {
        Ok(e) => e.message().to_owned(),
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned(),
    }
}

fn check_status(status: u16, headers: &HeaderMap, body: &[u8], url: &str) -> Result<(), ApiError> {
    match status {
        200..=299 => Ok(()),
        429 => Err(ApiError::RateLimited {
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
        }),
        401 | 403 => Err(ApiError::TokenRejected {
            status,
            message: error_message(body),
        }),
        400 => Err(ApiError::BadRequest {
            message: error_message(body),
        }),
        404 => Err(ApiError::NotFound {
            url: url.to_owned(),
        }),
        500..=599 => Err(ApiError::Server {
            status,
            message: error_message(body),
        }),
        _ => Err(ApiError::Unexpected {
            status,
            message: error_message(body),
        }),
    }
}

/// `Retry-After` is seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(3600)));
    }
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &fmt)
        .ok()?
        .assume_utc();
    let left = at - OffsetDateTime::now_utc();
    Some(
        left.try_into()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_without_building_events() {
        let body = Bytes::from_static(br#"{"cursor":"c2","has_more":true,"items":[{"uuid":"a","timestamp":"2026-01-01T00:00:01Z"},{"uuid":"b","timestamp":"2026-01-01T00:00:03.5Z"},7,{"uuid":"c"}]}"#);
        let page = FetchedPage::parse(body.clone()).unwrap();
        assert_eq!(page.cursor, "c2");
        assert!(page.has_more);
        assert_eq!(
            page.count, 4,
            "odd items are counted; the normalizer dead-letters them"
        );
        assert_eq!(
            page.max_event_time.map(|t| t.unix_timestamp()),
            Some(1_767_225_603)
        );
        assert_eq!(page.body, body, "the body is kept exactly");
        for bad in [
            &b"<html>"[..],
            br#"{"has_more":false,"items":[]}"#,
            br#"{"cursor":"x","has_more":"no","items":[]}"#,
        ] {
            assert!(matches!(
                FetchedPage::parse(Bytes::copy_from_slice(bad)),
                Err(ApiError::Malformed(_))
            ));
        }
    }

    #[test]
    fn big_pages_split_into_envelopes_that_keep_every_item_verbatim() {
        let items: Vec<String> = (0..50)
            .map(|i| format!(r#"{{"uuid":"E{i}","pad":"{}"}}"#, "x".repeat(100)))
            .collect();
        let body = Bytes::from(format!(
            r#"{{"cursor":"c\"9","has_more":true,"items":[{}]}}"#,
            items.join(",")
        ));
        assert_eq!(
            split_page(&body, body.len()).parts,
            vec![body.clone()],
            "a page that fits is untouched"
        );
        let split = split_page(&body, 1_000);
        assert!(split.oversized.is_empty());
        let parts = split.parts;
        assert!(parts.len() > 5);
        let mut seen = Vec::new();
        for p in &parts {
            assert!(p.len() <= 1_000);
            let page = FetchedPage::parse(p.clone()).unwrap();
            assert_eq!(page.cursor, "c\"9");
            assert!(page.has_more);
            let v: Page<Box<RawValue>> = serde_json::from_slice(p).unwrap();
            seen.extend(v.items.iter().map(|r| r.get().to_owned()));
        }
        assert_eq!(seen, items, "every item once, in order, byte for byte");
    }

    #[test]
    fn an_item_too_big_for_any_message_is_handed_back_and_the_rest_goes_on() {
        let body = Bytes::from(format!(
            r#"{{"cursor":"c","has_more":false,"items":[{{"uuid":"A"}},{{"uuid":"B","pad":"{}"}},{{"uuid":"C"}}]}}"#,
            "x".repeat(2_000)
        ));
        let split = split_page(&body, 1_000);
        assert_eq!(split.oversized.len(), 1);
        assert_eq!(split.oversized[0].0, 1);
        assert!(split.oversized[0].1.starts_with(br#"{"uuid":"B""#));
        assert_eq!(split.parts.len(), 1);
        let page = FetchedPage::parse(split.parts[0].clone()).unwrap();
        assert_eq!((page.count, page.cursor.as_str()), (2, "c"));
        let only_big = Bytes::from(format!(
            r#"{{"cursor":"d","has_more":false,"items":[{{"uuid":"B","pad":"{}"}}]}}"#,
            "x".repeat(2_000)
        ));
        let split = split_page(&only_big, 1_000);
        assert_eq!(split.oversized.len(), 1);
        let page = FetchedPage::parse(split.parts[0].clone()).unwrap();
        assert_eq!(
            (page.count, page.cursor.as_str()),
            (0, "d"),
            "the cursor still goes"
        );
    }

    #[test]
    fn the_authorization_header_is_sensitive() {
        let v = bearer(&Secret::new("eyJ.secret.part".to_owned())).unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("secret"), "{v:?}");
    }

    #[test]
    fn failures_say_how_to_recover() {
        let none = HeaderMap::new();
        let mut with = HeaderMap::new();
        with.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            check_status(429, &with, b"", "u").unwrap_err().recovery(),
            Recovery::WaitExactly(Duration::from_secs(7))
        );
        assert_eq!(
            check_status(429, &none, b"", "u").unwrap_err().recovery(),
            Recovery::Backoff
        );
        assert_eq!(
            check_status(503, &none, b"", "u").unwrap_err().recovery(),
            Recovery::Backoff
        );
        let e =
            check_status(401, &none, br#"{"Error":{"Message":"Unauthorized"}}"#, "u").unwrap_err();
        assert_eq!(e.recovery(), Recovery::Slow);
        assert!(e.to_string().contains("Unauthorized"));
        let e = check_status(
            400,
            &none,
            br#"{"status":400,"message":"limit must be an integer"}"#,
            "u",
        )
        .unwrap_err();
        assert!(e.to_string().contains("limit must be an integer"));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
