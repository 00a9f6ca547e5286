//! The HTTP plumbing every HTTP sink shares (generic HTTP, Splunk HEC, Elasticsearch): the
//! client with the sink's TLS settings, gzip, sending with a bounded reply, credentials read
//! afresh for each request, and what an HTTP status means for delivery.

use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, RETRY_AFTER};
use reqwest::StatusCode;

use oprelay_events::Secret;
use std::path::PathBuf;

use oprelay_service::config::{SecretSource, SinkConfig};
use oprelay_service::telemetry;

use super::request_body::Pieces;
use super::{SetupError, SinkError};

/// How long one delivery request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client with the sink's TLS settings: private CA, client certificate, verification (on
/// unless turned off in writing, which is logged).
pub fn client(config: &SinkConfig) -> Result<reqwest::Client, SetupError> {
    Ok(client_builder(config)?.build()?)
}

/// [`client`]'s settings, for a sink that adds its own (Splunk's cookie store).
pub fn client_builder(config: &SinkConfig) -> Result<reqwest::ClientBuilder, SetupError> {
    let mut b = reqwest::Client::builder()
        // A redirect is a configuration problem, never followed: reqwest would turn the POST
        // into a bodiless GET on 301/302 and count the 200 that follows as delivered.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("oprelay/", env!("CARGO_PKG_VERSION")));
    let tls = &config.tls;
    if let Some(ca) = &tls.ca_file {
        let bad_ca = |e: &dyn std::fmt::Display| {
            SetupError::invalid("tls.ca_file", format!("{}: {e}", ca.display()))
        };
        let pem = std::fs::read(ca).map_err(|e| bad_ca(&e))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad_ca(&e))? {
            b = b.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let read = |key: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| SetupError::invalid(key, format!("{}: {e}", path.display())))
        };
        let mut pem = read("tls.cert_file", cert)?;
        pem.extend(read("tls.key_file", key)?);
        b = b.identity(
            reqwest::Identity::from_pem(&pem)
                .map_err(|e| SetupError::invalid("tls.cert_file", e))?,
        );
    }
    if !tls.verify {
        tracing::warn!(sink = %config.name, "TLS certificate verification is OFF for this sink (tls.verify = false)");
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
}

/// The body gzipped, piece by piece: only the compressed body is ever one buffer.
pub fn gzip(body: &Pieces) -> Result<Vec<u8>, SinkError> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    body.write_to(&mut enc)
        .and_then(|_| enc.finish())
        .map_err(|e| SinkError::transient(format!("gzip: {e}")))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

/// What an HTTP status means for delivery.
///
/// Only a refusal that can be about the records in the request (400, 413, 422) is a
/// rejection, which the delivery answers by halving the request until the refused record
/// stands alone. Every other refusal is about the request as a whole — a wrong endpoint or
/// method, a proxy's 405/415, a redirect, credentials — and only an operator can fix it: the
/// records wait, however long that takes.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<(), SinkError> {
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(500)])
        .trim()
        .to_owned();
    let message = format!("HTTP {status}: {text}");
    let mut err = match status.as_u16() {
        408 | 429 | 500..=599 => SinkError::transient(message),
        300..=399 => {
            let to = headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(no Location)");
            SinkError::needs_operator(format!(
                "HTTP {status}: the endpoint redirects to {to}; oprelay follows no redirect, \
                 configure the final URL"
            ))
        }
        400 | 413 | 422 => SinkError::rejected(message),
        404 => SinkError::needs_operator(format!("{message} (is the endpoint right?)")),
        _ => SinkError::needs_operator(message),
    };
    err.retry_after = retry_after(headers);
    Err(err)
}

/// A request failed before an HTTP status: always worth retrying.
pub fn transport(e: reqwest::Error) -> SinkError {
    SinkError::transient(format!("request failed: {}", e.without_url()))
}

/// POSTs a body (gzipped when asked) and returns whatever came back; only transport failures
/// are errors here, so a caller can read a protocol's own error body before [`classify`].
pub async fn send(
    client: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: Pieces,
    compress: bool,
) -> Result<(StatusCode, HeaderMap, Bytes), SinkError> {
    let mut req = client.post(url).headers(headers);
    let body = if compress {
        req = req.header(CONTENT_ENCODING, "gzip");
        reqwest::Body::from(gzip(&body)?)
    } else {
        body.into_body()
    };
    let resp = telemetry::send_traced("POST", url, req.body(body))
        .await
        .map_err(transport)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = read_reply(resp, MAX_REPLY).await?;
    Ok((status, headers, body))
}

/// The most of a SIEM's reply that is read. Replies that matter are small (a `_bulk` answer
/// for 500 documents is a few hundred KiB); a misbehaving endpoint must not fill the memory.
pub const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Reads at most `limit` bytes of a reply and drops the rest (with the connection). A reply
/// cut short fails to parse where its content matters (`_bulk`), and is enough where only its
/// status does.
pub async fn read_reply(mut resp: reqwest::Response, limit: usize) -> Result<Bytes, SinkError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        let room = limit - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            tracing::debug!(limit, "reply longer than the limit; the rest is not read");
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// POSTs a body; returns the headers and body of a successful response.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: Pieces,
    compress: bool,
) -> Result<(HeaderMap, Bytes), SinkError> {
    let (status, headers, body) = send(client, url, headers, body, compress).await?;
    classify(status, &headers, &body)?;
    Ok((headers, body))
}

pub fn read_secret(source: &SecretSource, what: &str) -> Result<Secret, SinkError> {
    source
        .read()
        .map_err(|e| SinkError::needs_operator(format!("cannot read the {what}: {e}")))
}

/// How a sink proves who it is. The secret is read for every request, so a rotated Secret is
/// used at once, and the header is marked sensitive so it never shows in debug output.
pub enum Credentials {
    None,
    Bearer(SecretSource),
    Basic {
        user: String,
        password: SecretSource,
    },
    ApiKey(SecretSource),
    Splunk(SecretSource),
}

impl Credentials {
    /// `username` + `password_file` as basic auth, when both are set.
    pub fn basic(
        username: &Option<String>,
        password_file: &Option<PathBuf>,
    ) -> Option<Credentials> {
        match (username, password_file) {
            (Some(u), Some(p)) => Some(Credentials::Basic {
                user: u.clone(),
                password: SecretSource::File(p.clone()),
            }),
            _ => None,
        }
    }

    /// Adds the `Authorization` header, if any.
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<(), SinkError> {
        let value = match self {
            Credentials::None => return Ok(()),
            Credentials::Bearer(s) => {
                format!("Bearer {}", read_secret(s, "bearer token")?.expose())
            }
            Credentials::ApiKey(s) => format!("ApiKey {}", read_secret(s, "API key")?.expose()),
            Credentials::Splunk(s) => format!("Splunk {}", read_secret(s, "HEC token")?.expose()),
            Credentials::Basic { user, password } => {
                use base64::Engine;
                let pair = format!("{user}:{}", read_secret(password, "password")?.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| {
            SinkError::needs_operator("the credential has characters a header cannot carry")
        })?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oprelay_testkit::receivers::{http_receiver, serve, Recv};

    fn judged(status: u16, headers: &[(&str, &str)], body: &str) -> Result<(), SinkError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        classify(StatusCode::from_u16(status).unwrap(), &h, body.as_bytes())
    }

    #[test]
    fn statuses_are_sorted_by_who_can_fix_them() {
        use crate::sinks::ErrorKind;
        assert!(judged(200, &[], "").is_ok());
        assert!(judged(204, &[], "").is_ok());
        let busy = judged(
            429,
            &[("retry-after", "7")],
            r#"{"message":"Too Many Requests"}"#,
        )
        .unwrap_err();
        assert_eq!(busy.kind, ErrorKind::Transient);
        assert_eq!(busy.retry_after, Some(Duration::from_secs(7)));
        let down = judged(503, &[], "<html>Service Unavailable</html>").unwrap_err();
        assert_eq!(down.kind, ErrorKind::Transient);
        // Panther's HTTP source refusing a record it cannot parse.
        let refused = judged(400, &[], r#"{"error":"failed to parse JSON"}"#).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Rejected);
        assert!(refused.message.contains("failed to parse JSON"));
        assert_eq!(
            judged(413, &[], "Request Entity Too Large")
                .unwrap_err()
                .kind,
            ErrorKind::Rejected
        );
        let auth = judged(401, &[], r#"{"text":"Invalid token","code":4}"#).unwrap_err();
        assert_eq!(auth.kind, ErrorKind::NeedsOperator);
        let moved = judged(301, &[("location", "https://new.example/ingest")], "").unwrap_err();
        assert_eq!(moved.kind, ErrorKind::NeedsOperator);
        assert!(
            moved.message.contains("https://new.example/ingest"),
            "{}",
            moved.message
        );
        let wrong = judged(404, &[], "Not Found").unwrap_err();
        assert!(wrong.message.contains("is the endpoint right?"));
    }
    use reqwest::header::CONTENT_TYPE;

    #[tokio::test]
    async fn a_reply_is_read_up_to_the_limit_only() {
        let state = std::sync::Arc::new(std::sync::Mutex::new(Recv {
            reply_padding: 1_000_000,
            ..Recv::default()
        }));
        let addr = serve(http_receiver(state, None)).await;
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/ingest"))
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body("{\"a\":1}\n")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = read_reply(resp, 10_000).await.unwrap();
        assert_eq!(body.len(), 10_000);
    }
}
