//! Elasticsearch / OpenSearch `_bulk` with `create` and `_id = p_row_id`: a redelivered record
//! meets its own document (409) and is counted as delivered, so there is never a duplicate.
//! Per-item statuses are read one by one — `_bulk` answers 200 even when items failed.

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::Value;

use oprelay_service::config::{SecretSource, SinkConfig};

use super::http::{client, post, Credentials};
use super::{Outcome, SinkError};
use crate::format::Record;

pub struct Elasticsearch {
    client: reqwest::Client,
    url: String,
    index: String,
    auth: Credentials,
    gzip: bool,
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
    pub fn new(config: &SinkConfig) -> Result<Elasticsearch, String> {
        let auth = match &config.api_key_file {
            Some(k) => Credentials::ApiKey(SecretSource::File(k.clone())),
            None => Credentials::basic(config).unwrap_or(Credentials::None),
        };
        Ok(Elasticsearch {
            client: client(config)?,
            url: format!(
                "{}/_bulk",
                config
                    .endpoint
                    .clone()
                    .ok_or("an elasticsearch sink needs `endpoint`")?
                    .trim_end_matches('/')
            ),
            index: config
                .index
                .clone()
                .unwrap_or_else(|| "oprelay-{log_type}-{yyyy.MM.dd}".into()),
            auth,
            gzip: config.gzip.unwrap_or(false),
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

    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.body.len() + 120).sum());
        for r in records {
            let action = serde_json::json!({"create": {"_index": index_name(&self.index, r), "_id": r.row_id}});
            body.extend_from_slice(action.to_string().as_bytes());
            body.push(b'\n');
            body.extend_from_slice(&r.body);
            body.push(b'\n');
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
