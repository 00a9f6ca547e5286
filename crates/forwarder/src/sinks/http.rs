//! Generic HTTP delivery (Panther's HTTP log source, webhooks), and the HTTP plumbing the
//! Splunk and Elasticsearch sinks share: TLS options, gzip, and status classification.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};
use reqwest::StatusCode;

use oprelay_events::Secret;
use oprelay_service::config::{Encoding, SecretSource, SinkConfig};
use oprelay_service::telemetry;
use tracing::Instrument;

use super::{Outcome, SinkError};
use crate::format::Record;

/// How long one delivery request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client with the sink's TLS settings: private CA, client certificate, verification (on
/// unless turned off in writing, which is logged).
pub fn client(config: &SinkConfig) -> Result<reqwest::Client, String> {
    client_builder(config)?
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// [`client`]'s settings, for a sink that adds its own (Splunk's cookie store).
pub fn client_builder(config: &SinkConfig) -> Result<reqwest::ClientBuilder, String> {
    let mut b = reqwest::Client::builder()
        // A redirect is a configuration problem, never followed: reqwest would turn the POST
        // into a bodiless GET on 301/302 and count the 200 that follows as delivered.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("oprelay/", env!("CARGO_PKG_VERSION")));
    let tls = &config.tls;
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("tls.ca_file {}: {e}", ca.display()))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem =
            std::fs::read(cert).map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
        pem.extend(std::fs::read(key).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?);
        b = b.identity(
            reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("tls client certificate: {e}"))?,
        );
    }
    if !tls.verify {
        tracing::warn!(sink = %config.name, "TLS certificate verification is OFF for this sink (tls.verify = false)");
        b = b.danger_accept_invalid_certs(true);
    }
    Ok(b)
}

pub fn gzip(body: &[u8]) -> Result<Vec<u8>, SinkError> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    enc.write_all(body)
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
    body: Vec<u8>,
    compress: bool,
) -> Result<(StatusCode, HeaderMap, Bytes), SinkError> {
    let mut req = client.post(url).headers(headers);
    let body = if compress {
        req = req.header(CONTENT_ENCODING, "gzip");
        gzip(&body)?
    } else {
        body
    };
    let span = telemetry::http_client_span("POST", url);
    let resp = req
        .body(body)
        .send()
        .instrument(span.clone())
        .await
        .map_err(|e| {
            telemetry::record_http_failure(&span, "transport");
            transport(e)
        })?;
    let status = resp.status();
    telemetry::record_http_status(&span, status.as_u16());
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
    body: Vec<u8>,
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
    pub fn basic(config: &SinkConfig) -> Option<Credentials> {
        match (&config.username, &config.password_file) {
            (Some(u), Some(p)) => Some(Credentials::Basic {
                user: u.clone(),
                password: SecretSource::File(p.clone()),
            }),
            _ => None,
        }
    }

    /// `token_file` or `token_env`, when one is set.
    pub fn token(config: &SinkConfig) -> Option<SecretSource> {
        match (&config.token_file, &config.token_env) {
            (Some(f), _) => Some(SecretSource::File(f.clone())),
            (None, Some(e)) => Some(SecretSource::Env(e.clone())),
            (None, None) => None,
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

pub struct HttpSink {
    client: reqwest::Client,
    endpoint: String,
    headers: HeaderMap,
    /// Headers whose values are read from files before each request (secrets, rotatable).
    secret_headers: Vec<(HeaderName, SecretSource)>,
    auth: Credentials,
    json_array: bool,
    gzip: bool,
}

impl HttpSink {
    pub fn new(config: &SinkConfig) -> Result<HttpSink, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in config.headers.iter().flatten() {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers: `{k}` is not a header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("headers.{k}: not a valid header value"))?;
            headers.insert(name, value);
        }
        let mut secret_headers = Vec::new();
        for (k, path) in config.headers_from_files.iter().flatten() {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("headers_from_files: `{k}` is not a header name"))?;
            secret_headers.push((name, SecretSource::File(path.clone())));
        }
        let json_array = config.encoding()? == Encoding::JsonArray;
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if json_array {
                "application/json"
            } else {
                "application/x-ndjson"
            }),
        );
        let auth = Credentials::token(config)
            .map(Credentials::Bearer)
            .or_else(|| Credentials::basic(config))
            .unwrap_or(Credentials::None);
        Ok(HttpSink {
            client: client(config)?,
            endpoint: config
                .endpoint
                .clone()
                .ok_or("an http sink needs `endpoint`")?,
            headers,
            secret_headers,
            auth,
            json_array,
            gzip: config.gzip.unwrap_or(false),
        })
    }

    /// `oprelay config check --online`: an `OPTIONS` request, which delivers nothing. Any
    /// answer shows the endpoint is reachable; a 401/403 shows the credentials are refused.
    /// Other refusals say little (many endpoints allow only POST), so only those two count.
    pub async fn healthcheck(&self) -> Result<String, SinkError> {
        let mut headers = self.headers.clone();
        for (name, source) in &self.secret_headers {
            let value = read_secret(source, &format!("{name} header"))?;
            let mut v = HeaderValue::from_str(value.expose())
                .map_err(|_| SinkError::needs_operator(format!("{name}: not a header value")))?;
            v.set_sensitive(true);
            headers.insert(name.clone(), v);
        }
        self.auth.apply(&mut headers)?;
        let resp = self
            .client
            .request(reqwest::Method::OPTIONS, &self.endpoint)
            .headers(headers)
            .send()
            .await
            .map_err(transport)?;
        match resp.status().as_u16() {
            401 | 403 => Err(SinkError::needs_operator(format!(
                "the endpoint refused the credentials (HTTP {})",
                resp.status()
            ))),
            _ => Ok(format!(
                "reachable (HTTP {} to OPTIONS); records are checked with the first delivery",
                resp.status()
            )),
        }
    }

    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        let mut body =
            Vec::with_capacity(records.iter().map(|r| r.body.len() + 1).sum::<usize>() + 2);
        if self.json_array {
            body.push(b'[');
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(&r.body);
            }
            body.push(b']');
        } else {
            for r in records {
                body.extend_from_slice(&r.body);
                body.push(b'\n');
            }
        }
        let mut headers = self.headers.clone();
        for (name, source) in &self.secret_headers {
            let secret = read_secret(source, name.as_str())?;
            let mut v = HeaderValue::from_str(secret.expose()).map_err(|_| {
                SinkError::needs_operator(format!(
                    "headers_from_files.{name}: the file holds characters a header cannot carry"
                ))
            })?;
            v.set_sensitive(true);
            headers.insert(name.clone(), v);
        }
        self.auth.apply(&mut headers)?;
        post(&self.client, &self.endpoint, headers, body, self.gzip).await?;
        Ok(Outcome::Delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oprelay_testkit::receivers::{http_receiver, serve, Recv};

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
