//! Generic HTTP delivery: Panther's HTTP log source, webhooks, anything that takes NDJSON or
//! a JSON array over HTTP(S).

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

use oprelay_service::config::{Encoding, HttpConfig, SecretSource, SinkConfig};

use super::http_client::{client, post, read_secret, transport, Credentials};
use super::request_body::Pieces;
use super::{Outcome, SetupError, SinkError};
use oprelay_format::Record;

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
    pub fn new(config: &SinkConfig, http: &HttpConfig) -> Result<HttpSink, SetupError> {
        let mut headers = HeaderMap::new();
        for (k, v) in &http.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                SetupError::invalid("headers", format!("`{k}` is not a header name"))
            })?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                SetupError::invalid(format!("headers.{k}"), "not a valid header value")
            })?;
            headers.insert(name, value);
        }
        let mut secret_headers = Vec::new();
        for (k, path) in &http.headers_from_files {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                SetupError::invalid("headers_from_files", format!("`{k}` is not a header name"))
            })?;
            secret_headers.push((name, SecretSource::File(path.clone())));
        }
        let json_array = http.encoding == Encoding::JsonArray;
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(if json_array {
                "application/json"
            } else {
                "application/x-ndjson"
            }),
        );
        let auth = http
            .token()
            .map(Credentials::Bearer)
            .or_else(|| Credentials::basic(&http.username, &http.password_file))
            .unwrap_or(Credentials::None);
        Ok(HttpSink {
            client: client(config)?,
            endpoint: http.endpoint.clone(),
            headers,
            secret_headers,
            auth,
            json_array,
            gzip: http.gzip,
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
        // The records' own bytes, shared with the batch, between separators.
        let mut body = Pieces::with_capacity(records.len() * 2 + 2);
        if self.json_array {
            body.push_static(b"[");
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    body.push_static(b",");
                }
                body.push(r.body.clone());
            }
            body.push_static(b"]");
        } else {
            for r in records {
                body.push(r.body.clone());
                body.push_static(b"\n");
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
