//! Splunk HTTP Event Collector: `POST /services/collector/event`, events concatenated, and
//! optionally indexer acknowledgement — Splunk's "200" only means "looks valid"; with `ack`
//! the batch counts as delivered only when Splunk says it is indexed.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use serde_json::json;

use oprelay_events::Feed;
use oprelay_service::config::SinkConfig;

use super::http::{classify, client, post, send, Credentials};
use super::{Outcome, SinkError};
use crate::format::Record;

/// How often, and how long, to ask whether an acknowledged request was indexed.
const ACK_POLL: Duration = Duration::from_millis(500);
const ACK_GIVE_UP: Duration = Duration::from_secs(120);

pub struct SplunkHec {
    client: reqwest::Client,
    endpoint: String,
    auth: Credentials,
    index: Option<String>,
    sourcetype: Option<String>,
    host: String,
    channel: Option<String>,
    gzip: bool,
}

#[derive(Deserialize)]
struct HecReply {
    #[serde(default)]
    text: String,
    #[serde(default)]
    code: i64,
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(rename = "invalid-event-number")]
    invalid_event: Option<usize>,
}

#[derive(Deserialize)]
struct AckReply {
    acks: std::collections::HashMap<String, bool>,
}

fn random_channel() -> String {
    oprelay_events::uuid_text(rand::rng().random())
}

impl SplunkHec {
    pub fn new(config: &SinkConfig) -> Result<SplunkHec, String> {
        let token =
            Credentials::token(config).ok_or("a splunk_hec sink needs token_file or token_env")?;
        Ok(SplunkHec {
            client: client(config)?,
            endpoint: config
                .endpoint
                .clone()
                .ok_or("a splunk_hec sink needs `endpoint`")?
                .trim_end_matches('/')
                .to_owned(),
            auth: Credentials::Splunk(token),
            index: config.index.clone(),
            sourcetype: config.sourcetype.clone(),
            host: std::env::var("HOSTNAME").unwrap_or_else(|_| "oprelay".into()),
            // One channel per sink instance, as Splunk's indexer acknowledgement needs.
            channel: config.ack.unwrap_or(false).then(random_channel),
            gzip: config.gzip.unwrap_or(true),
        })
    }

    fn headers(&self) -> Result<HeaderMap, SinkError> {
        let mut h = HeaderMap::new();
        self.auth.apply(&mut h)?;
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(c) = &self.channel {
            if let Ok(v) = HeaderValue::from_str(c) {
                h.insert("X-Splunk-Request-Channel", v);
            }
        }
        Ok(h)
    }

    /// `,"host":…,"source":…,"sourcetype":…[,"index":…]` for one account and feed.
    fn metadata(&self, account: &str, feed: Feed) -> String {
        let sourcetype = self
            .sourcetype
            .clone()
            .unwrap_or_else(|| format!("1password:{feed}"));
        let mut meta = json!({"host": self.host, "source": format!("oprelay:{account}"), "sourcetype": sourcetype});
        if let Some(i) = &self.index {
            meta["index"] = json!(i);
        }
        let mut out = String::new();
        for (k, v) in meta.as_object().into_iter().flatten() {
            out.push_str(&format!(",\"{k}\":{v}"));
        }
        out
    }

    /// The event envelope: `time` is epoch seconds with the event time's fraction.
    fn envelope(r: &Record, metadata: &str, out: &mut Vec<u8>) {
        let nanos = r.event_time.unix_timestamp_nanos();
        let time = format!(
            "{}.{:06}",
            nanos.div_euclid(1_000_000_000),
            nanos.rem_euclid(1_000_000_000) / 1_000
        );
        out.extend_from_slice(b"{\"time\":");
        out.extend_from_slice(time.as_bytes());
        out.extend_from_slice(metadata.as_bytes());
        out.extend_from_slice(b",\"event\":");
        out.extend_from_slice(&r.body);
        out.extend_from_slice(b"}\n");
    }

    pub async fn send(&self, records: &[&Record]) -> Result<Outcome, SinkError> {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.body.len() + 160).sum());
        // A batch is nearly always one account and feed: render their metadata once.
        let mut metadata: HashMap<(&str, Feed), String> = HashMap::new();
        for r in records {
            let m = metadata
                .entry((r.account.as_str(), r.feed))
                .or_insert_with(|| self.metadata(&r.account, r.feed));
            Self::envelope(r, m, &mut body);
        }
        let url = format!("{}/services/collector/event", self.endpoint);
        let (status, headers, bytes) =
            send(&self.client, &url, self.headers()?, body, self.gzip).await?;
        let reply: Option<HecReply> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            if let Some(r) = &reply {
                let what = format!("Splunk HEC {status}, code {}: {}", r.code, r.text);
                match r.code {
                    // Invalid data format / event field problems: that event is refused. Whether
                    // HEC kept the events before it is not promised, so all the others are sent
                    // again: a possible duplicate at Splunk rather than a possible loss.
                    5 | 6 | 12 | 13 => {
                        if let Some(bad) = r.invalid_event.filter(|i| *i < records.len()) {
                            return Ok(Outcome::Partial {
                                retry: (0..records.len()).filter(|i| *i != bad).collect(),
                                rejected: vec![(bad, what)],
                            });
                        }
                        return Err(SinkError::rejected(what));
                    }
                    // Disabled or invalid token, missing channel, wrong index, ack disabled:
                    // the configuration is wrong, not the data.
                    1..=4 | 7 | 10 | 11 | 14 => return Err(SinkError::needs_operator(what)),
                    9 => return Err(SinkError::transient(what)),
                    _ => {}
                }
            }
            classify(status, &headers, &bytes)?;
        }
        let Some(reply) = reply else {
            return Err(SinkError::transient(
                "Splunk HEC answered 200 with a body that is not its JSON reply",
            ));
        };
        if let (Some(_), Some(ack_id)) = (&self.channel, reply.ack_id) {
            self.wait_indexed(ack_id).await?;
        } else if self.channel.is_some() {
            return Err(SinkError::needs_operator("ack = true but Splunk returned no ackId: enable indexer acknowledgement on the HEC token"));
        }
        Ok(Outcome::Delivered)
    }

    /// Polls `/services/collector/ack` until Splunk reports the request indexed.
    async fn wait_indexed(&self, ack_id: u64) -> Result<(), SinkError> {
        let url = format!("{}/services/collector/ack", self.endpoint);
        let deadline = tokio::time::Instant::now() + ACK_GIVE_UP;
        loop {
            let body = json!({"acks": [ack_id]}).to_string().into_bytes();
            let (_, bytes) = post(&self.client, &url, self.headers()?, body, false).await?;
            let reply: AckReply = serde_json::from_slice(&bytes)
                .map_err(|e| SinkError::transient(format!("Splunk ack reply: {e}")))?;
            if reply
                .acks
                .get(&ack_id.to_string())
                .copied()
                .unwrap_or(false)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                // "false" also means "lost": resend rather than assume.
                return Err(SinkError::transient(format!(
                    "Splunk did not confirm indexing of ack {ack_id} within {ACK_GIVE_UP:?}"
                )));
            }
            tokio::time::sleep(ACK_POLL).await;
        }
    }
}
