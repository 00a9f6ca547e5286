//! Elasticsearch / OpenSearch `_bulk` with `create` and `_id = p_row_id`: a redelivered record
//! meets its own document (409) and is counted as delivered, so there is never a duplicate.
//! Per-item statuses are read one by one — `_bulk` answers 200 even when items failed.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BufMut;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{json, Value};

use oprelay_service::config::{ElasticsearchConfig, OutputFormat, SecretSource, SinkConfig};

use super::http_client::{classify, client, post, read_reply, transport, Credentials};
use super::request_body::Pieces;
use super::{ErrorKind, Outcome, SetupError, SinkError};
use oprelay_format::Record;

/// oprelay's index templates, one per record format; `deploy/siem/elasticsearch/` documents
/// them for those who install templates themselves.
const PANTHER_TEMPLATE: &str =
    include_str!("../../../../deploy/siem/elasticsearch/oprelay-panther.json");
const ECS_TEMPLATE: &str = include_str!("../../../../deploy/siem/elasticsearch/oprelay-ecs.json");

/// `oprelay-{log_type}-{yyyy.MM.dd}` → `oprelay-*`: the fixed start of the sink's index names.
/// `None` when the names start with a placeholder: a template for `*` would apply to every
/// index in the cluster.
pub fn index_pattern(index: &str) -> Option<String> {
    match index.find('{') {
        Some(0) => None,
        Some(i) => Some(format!("{}*", &index[..i])),
        None => Some(index.to_owned()),
    }
}

/// The index template a sink installs: oprelay's for its format, for its own index names.
pub fn index_template(format: OutputFormat, index: &str) -> Result<Value, String> {
    let text = match format {
        OutputFormat::Panther => PANTHER_TEMPLATE,
        OutputFormat::Ecs => ECS_TEMPLATE,
        OutputFormat::Raw => return Err("no index template for the raw format".into()),
    };
    let pattern = index_pattern(index).ok_or_else(|| {
        format!("manage_template needs an index that starts with a fixed prefix, not `{index}`")
    })?;
    let mut template: Value =
        serde_json::from_str(text).map_err(|e| format!("the built-in index template: {e}"))?;
    template["index_patterns"] = json!([pattern]);
    Ok(template)
}

pub struct Elasticsearch {
    client: reqwest::Client,
    /// The endpoint without a trailing `/`.
    root: String,
    url: String,
    index: String,
    auth: Credentials,
    gzip: bool,
    /// `manage_template`: the template's name and body, installed before the first batch.
    template: Option<(String, Value)>,
    template_installed: AtomicBool,
}

#[derive(Deserialize)]
struct BulkReply {
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// `oprelay-{log_type}-{yyyy.MM.dd}` → `oprelay-onepassword-itemusage-2026.03.01`.
pub fn index_name(template: &str, r: &Record) -> String {
    let t = r.event_time;
    let log_type = r.log_type.as_str().to_ascii_lowercase().replace('.', "-");
    template
        .replace("{log_type}", &log_type)
        .replace("{feed}", r.feed.as_str())
        .replace("{account}", &r.account)
        .replace(
            "{yyyy.MM.dd}",
            &format!("{:04}.{:02}.{:02}", t.year(), u8::from(t.month()), t.day()),
        )
        .replace(
            "{yyyy.MM}",
            &format!("{:04}.{:02}", t.year(), u8::from(t.month())),
        )
}

impl Elasticsearch {
    pub fn new(config: &SinkConfig, es: &ElasticsearchConfig) -> Result<Elasticsearch, SetupError> {
        let auth = match &es.api_key_file {
            Some(k) => Credentials::ApiKey(SecretSource::File(k.clone())),
            None => {
                Credentials::basic(&es.username, &es.password_file).unwrap_or(Credentials::None)
            }
        };
        let root = es.endpoint.trim_end_matches('/').to_owned();
        let index = es.index.clone();
        let template = match es.manage_template {
            true => Some((
                format!("oprelay-{}", config.name),
                index_template(config.format, &index)
                    .map_err(|problem| SetupError::invalid("manage_template", problem))?,
            )),
            false => None,
        };
        Ok(Elasticsearch {
            client: client(config)?,
            url: format!("{root}/_bulk"),
            root,
            index,
            auth,
            gzip: es.gzip,
            template,
            template_installed: AtomicBool::new(false),
        })
    }

    fn headers(&self) -> Result<HeaderMap, SinkError> {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        self.auth.apply(&mut h)?;
        Ok(h)
    }

    /// One request that is not `_bulk` (an index template, the cluster's root): its small
    /// reply, judged by HTTP status as every sink's requests are.
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<bytes::Bytes, SinkError> {
        let resp = request.send().await.map_err(transport)?;
        let status = resp.status();
        let reply_headers = resp.headers().clone();
        let reply = read_reply(resp, 64 * 1024).await?;
        classify(status, &reply_headers, &reply)?;
        Ok(reply)
    }

    /// `PUT _index_template/oprelay-{sink}` (create or replace: a new oprelay release brings
    /// its mappings along). New indices get the mappings; existing ones keep theirs until they
    /// roll over (the daily index names do that by themselves).
    async fn install_template(&self, name: &str, body: &Value) -> Result<(), SinkError> {
        let mut headers = self.headers()?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let request = self
            .client
            .put(format!("{}/_index_template/{name}", self.root))
            .headers(headers)
            .body(body.to_string());
        self.call(request).await.map_err(|e| match e.kind {
            // Not about any record: a refused template waits for an operator.
            ErrorKind::Rejected => SinkError::needs_operator(format!(
                "Elasticsearch refused the index template {name}: {}",
                e.message
            )),
            _ => e,
        })?;
        tracing::info!(template = name, "index template installed");
        Ok(())
    }

    /// `oprelay config check --online`: the cluster answers at the endpoint and accepts the
    /// credentials (`GET /`, which any role that may write can read).
    pub async fn healthcheck(&self) -> Result<String, SinkError> {
        let request = self
            .client
            .get(format!("{}/", self.root))
            .headers(self.headers()?);
        let reply = self.call(request).await?;
        let info: Value = serde_json::from_slice(&reply).unwrap_or_default();
        Ok(format!(
            "cluster {} answered, version {}",
            info["cluster_name"].as_str().unwrap_or("?"),
            info["version"]["number"].as_str().unwrap_or("?")
        ))
    }

    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        if let Some((name, body)) = &self.template {
            if !self.template_installed.load(Ordering::Acquire) {
                self.install_template(name, body).await?;
                self.template_installed.store(true, Ordering::Release);
            }
        }
        // Each record's action line, then the record's own bytes (shared with the batch).
        let mut body = Pieces::with_capacity(records.len() * 3);
        for r in records {
            let action = serde_json::json!({"create": {"_index": index_name(&self.index, r), "_id": r.row_id}});
            body.push_written(|line| {
                let _ = serde_json::to_writer(BufMut::writer(&mut *line), &action);
                line.put_u8(b'\n');
            });
            body.push(r.body.clone());
            body.push_static(b"\n");
        }
        let (_, reply) = post(&self.client, &self.url, self.headers()?, body, self.gzip).await?;
        let reply: BulkReply = serde_json::from_slice(&reply).map_err(|e| {
            SinkError::transient(format!("_bulk reply is not what Elasticsearch sends: {e}"))
        })?;
        if !reply.errors {
            return Ok(Outcome::Delivered);
        }
        if reply.items.len() != records.len() {
            return Err(SinkError::transient(format!(
                "_bulk answered {} items for {} actions",
                reply.items.len(),
                records.len()
            )));
        }
        let (mut retry, mut rejected) = (Vec::new(), Vec::new());
        for (i, item) in reply.items.iter().enumerate() {
            let Some(item) = item.values().next() else {
                continue;
            };
            let why = || {
                item.error
                    .as_ref()
                    .map(|e| {
                        format!(
                            "{} {}: {}",
                            item.status,
                            e["type"].as_str().unwrap_or("error"),
                            e["reason"].as_str().unwrap_or("")
                        )
                    })
                    .unwrap_or_else(|| item.status.to_string())
            };
            match item_verdict(item.status) {
                ItemVerdict::Stored => {}
                ItemVerdict::Retry => retry.push(i),
                ItemVerdict::Rejected => rejected.push((i, why())),
                // A read-only index (`cluster_block_exception`, FORBIDDEN/12), a missing index
                // with auto-create off, missing privileges: every item gets it, and none of
                // them is at fault. The whole request waits for an operator.
                ItemVerdict::RequestRefused => {
                    return Err(SinkError::needs_operator(format!(
                        "Elasticsearch refused the bulk request's items: {}",
                        why()
                    )))
                }
            }
        }
        if retry.is_empty() && rejected.is_empty() {
            return Ok(Outcome::Delivered);
        }
        Ok(Outcome::Partial { retry, rejected })
    }
}

/// What one `_bulk` item's status says.
#[derive(Debug, PartialEq, Eq)]
enum ItemVerdict {
    /// Created, or already there (409: `create` met the same `_id`).
    Stored,
    Retry,
    /// Something about this document (a mapping or parsing error): dead-letter it.
    Rejected,
    /// Something about the index or the credentials: nothing a document can fix.
    RequestRefused,
}

fn item_verdict(status: u16) -> ItemVerdict {
    match status {
        200..=299 | 409 => ItemVerdict::Stored,
        429 | 500..=599 => ItemVerdict::Retry,
        400 => ItemVerdict::Rejected,
        _ => ItemVerdict::RequestRefused,
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    #[test]
    fn a_template_matches_the_sinks_own_index_names_only() {
        assert_eq!(
            index_pattern("oprelay-{log_type}-{yyyy.MM.dd}").as_deref(),
            Some("oprelay-*")
        );
        assert_eq!(index_pattern("1password").as_deref(), Some("1password"));
        assert_eq!(index_pattern("{account}-events"), None);
        let t = index_template(OutputFormat::Panther, "sec-1p-{yyyy.MM}").unwrap();
        assert_eq!(t["index_patterns"], json!(["sec-1p-*"]));
        let props = &t["template"]["mappings"]["properties"];
        assert_eq!(props["p_event_time"]["type"], "date_nanos");
        assert_eq!(
            props["p_event_time"]["format"],
            "yyyy-MM-dd HH:mm:ss.SSSSSSSSS"
        );
        assert_eq!(props["p_any_ip_addresses"]["type"], "ip");
        assert_eq!(props["p_row_id"]["type"], "keyword");
        let ecs = index_template(OutputFormat::Ecs, "oprelay-ecs-{yyyy.MM.dd}").unwrap();
        assert_eq!(
            ecs["template"]["mappings"]["properties"]["source"]["properties"]["ip"]["type"],
            "ip"
        );
        assert!(index_template(OutputFormat::Raw, "x").is_err());
        assert!(index_template(OutputFormat::Panther, "{feed}").is_err());
    }

    #[test]
    fn only_a_400_item_is_the_documents_fault() {
        assert_eq!(item_verdict(201), ItemVerdict::Stored);
        assert_eq!(item_verdict(409), ItemVerdict::Stored);
        assert_eq!(item_verdict(429), ItemVerdict::Retry);
        assert_eq!(item_verdict(400), ItemVerdict::Rejected);
        for status in [401, 403, 404] {
            assert_eq!(
                item_verdict(status),
                ItemVerdict::RequestRefused,
                "{status}"
            );
        }
    }
}
